"""Internet checksum (RFC 1071), pseudo-header sum, incremental update (RFC 1624).

Facade: re-exports the Cython implementation when the fast path is active
(:mod:`pystack._accel`), else the pure twin :mod:`pystack.wire._checksum_py`.
Both have the same API; see the pure twin for the definitions.
"""

from pystack import _accel
from pystack.wire import _checksum_py

_impl = _accel.select("checksum", _checksum_py)
IMPLEMENTATION = "c" if _impl is not _checksum_py else "py"

ones_sum = _impl.ones_sum
checksum = _impl.checksum
pseudo_header_sum = _impl.pseudo_header_sum
update16 = _impl.update16
update32 = _impl.update32

__all__ = ["IMPLEMENTATION", "checksum", "ones_sum", "pseudo_header_sum", "update16", "update32"]
