"""pystack.asyncio: asyncio streams over pystack, in the shape of asyncio's.

::

    import asyncio, pystack, pystack.asyncio

    async def main():
        reader, writer = await pystack.asyncio.open_connection("10.77.0.1", 80)
        writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
        await writer.drain()
        print(await reader.read())
        writer.close()
        await writer.wait_closed()

    with pystack.Stack(ip="10.77.0.2/24", tap="pst0"):
        asyncio.run(main())

``open_connection`` and ``start_server`` return asyncio's own
``StreamReader``, ``StreamWriter`` and ``Server`` over pystack sockets, so
everything asyncio documents for them holds (``drain()`` with real flow
control, ``write_eof``, ``wait_closed``, ``get_extra_info('peername' |
'sockname' | 'socket')``...).  They need asyncio's default (selector) event
loop; ``stack=None`` means ``pystack.Stack.default()``.  Hosts are IPv4
addresses: pystack has no resolver.  The implementation and its design are in
:mod:`pystack.runtime.streams`.

This module is named after the stdlib's; inside pystack, ``import asyncio``
still means the stdlib's (imports are absolute).  Importing it opens nothing
and starts no thread.
"""

from asyncio import IncompleteReadError, LimitOverrunError, Server, StreamReader, StreamWriter

from pystack.runtime.streams import DEFAULT_LIMIT, open_connection, start_server

__all__ = [
    "DEFAULT_LIMIT",
    "IncompleteReadError",
    "LimitOverrunError",
    "Server",
    "StreamReader",
    "StreamWriter",
    "open_connection",
    "start_server",
]
