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
    "Stack",
    "Truncated",
    "__version__",
    "make_server",
    "open_connection",
    "start_server",
]


def __getattr__(name: str):
    # Lazy (PEP 562): ``pystack.Stack`` imports the runtime only when first used, so
    # ``import pystack`` still opens nothing and starts no thread.
    if name == "Stack":
        from pystack.runtime.stack import Stack

        return Stack
    if name in ("open_connection", "start_server"):  # asyncio streams (pystack.asyncio), equally lazy
        from pystack.runtime import streams

        return getattr(streams, name)
    if name == "make_server":  # socketserver / http.server classes on pystack sockets
        from pystack.runtime.stdlib_servers import make_server

        return make_server
    raise AttributeError(f"module 'pystack' has no attribute {name!r}")
