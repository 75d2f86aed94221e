"""One-call frame parse (Ethernet II + IPv4 + TCP/UDP) and segment emit.

Facade: re-exports the Cython implementation when the fast path is active
(:mod:`pystack._accel`), else the pure twin :mod:`pystack.wire._headers_py`.
Both have the same API, results and exception types (see the pure twin for
the definitions and for what exactly they share).
"""

from pystack import _accel
from pystack.wire import _headers_py

_impl = _accel.select("headers", _headers_py)
IMPLEMENTATION = "c" if _impl is not _headers_py else "py"

FIELDS = _impl.FIELDS
Frame = _impl.Frame
parse_frame = _impl.parse_frame
emit_tcp = _impl.emit_tcp
emit_udp = _impl.emit_udp

__all__ = ["FIELDS", "IMPLEMENTATION", "Frame", "emit_tcp", "emit_udp", "parse_frame"]
