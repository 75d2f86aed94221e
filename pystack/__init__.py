"""pystack: a userspace TCP/IP stack in Python with a Cython fast path.

Importing pystack opens nothing and starts no thread.  ``pystack.IMPLEMENTATION``
is ``"c"`` when the Cython fast path is active and ``"py"`` when the pure-Python
twins are (see :mod:`pystack._accel`).
"""

from pystack._accel import IMPLEMENTATION
from pystack.errors import BadChecksum, BadField, MalformedPacket, Truncated

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "BadChecksum",
    "BadField",
    "MalformedPacket",
    "Truncated",
    "__version__",
]
