"""TCP receive reassembly buffer: in-order and out-of-order data, SACK and D-SACK.

Facade: re-exports the Cython implementation when the fast path is active
(:mod:`pystack._accel`), else the pure twin :mod:`pystack.storage._assembler_py`.
Both have the same API; see the pure twin for the model and the rules.
"""

from pystack import _accel
from pystack.storage import _assembler_py

_impl = _accel.select("assembler", _assembler_py)
IMPLEMENTATION = "c" if _impl is not _assembler_py else "py"

Assembler = _impl.Assembler
MAX_CAPACITY = _impl.MAX_CAPACITY

__all__ = ["IMPLEMENTATION", "MAX_CAPACITY", "Assembler"]
