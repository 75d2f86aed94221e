"""Batch frame I/O on a TAP fd: :class:`FrameBatch` and :func:`write_batch`.

Facade: re-exports the Cython implementation when the fast path is active
(:mod:`pystack._accel`), else the pure twin :mod:`pystack.phy._tapio_py`.
Both have the same API; the pure twin's docstrings hold the rules (batch
end, drain contract, truncation, errors).
"""

from pystack import _accel
from pystack.phy import _tapio_py

_impl = _accel.select("tapio", _tapio_py)
IMPLEMENTATION = "c" if _impl is not _tapio_py else "py"

FrameBatch = _impl.FrameBatch
write_batch = _impl.write_batch

__all__ = ["IMPLEMENTATION", "FrameBatch", "write_batch"]
