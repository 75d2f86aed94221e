"""asyncio streams on pystack sockets: :func:`open_connection` and :func:`start_server`.

Owns the glue between :mod:`pystack.socket` and asyncio's selector event loop,
and nothing else: no transport, no reader, no writer of its own.

Design (decision)
-----------------
A pystack socket is duck-type compatible with a kernel socket as far as
asyncio's selector event loop is concerned: ``fileno()`` is a real descriptor
that is readable exactly when ``recv``/``accept`` would not block and writable
exactly when ``send`` would not block (a connect that finished, an error
pending, room in the send buffer), and every method raises the OSError a
Linux socket raises.  So the strongest implementation is asyncio's own, used
whole:

* connecting: ``loop.sock_connect`` -- connect(2) on a non-blocking socket
  raises EINPROGRESS, the loop waits for the descriptor to be writable and
  reads the outcome with ``getsockopt(SOL_SOCKET, SO_ERROR)`` (connect(2),
  "EINPROGRESS"; socket(7), SO_ERROR);
* streaming: ``asyncio.open_connection(sock=...)`` / ``asyncio.start_server(
  sock=...)`` wrap the socket in asyncio's ``_SelectorSocketTransport`` and
  return asyncio's own ``StreamReader``/``StreamWriter`` and ``Server``.  The
  transport reads with ``recv`` when the descriptor is readable, writes with
  ``send`` and keeps what the socket did not take in its own buffer; above
  the high-water mark it pauses the protocol and ``drain()`` waits until the
  buffer is back under the low-water mark.  Flow control is therefore real
  end to end: pystack's ``send`` takes only what fits in the TCP send buffer,
  which empties only as the peer acknowledges (RFC 9293 §3.8.6, the window).

A transport of our own would duplicate asyncio's (and its bugs); this way
pystack streams behave as kernel streams do by construction, and the
conformance suite (``tests/apps/test_streams_conformance.py``) checks the two
side by side.

What asyncio asks of the socket (the duck-typing contract pystack.socket
keeps): ``family``/``type``/``proto``, ``setblocking(False)``,
``gettimeout()``, ``fileno()`` (readiness, never read or written by asyncio),
``connect`` raising BlockingIOError, ``getsockopt(SO_ERROR)`` returning and
clearing the pending error, ``recv``/``send`` raising BlockingIOError when
they would block, ``shutdown(SHUT_WR)`` for ``write_eof``,
``sendmsg`` (Python 3.12+ flushes the transport's buffer with it),
``getsockname``/``getpeername``, ``close``, ``setsockopt(TCP_NODELAY)``;
for servers ``listen`` (asyncio calls it when the server starts serving --
again, on a socket that already listens, which must then only update the
backlog, as listen(2) does on Linux) and ``accept`` (an accepted socket
inherits its listener's ``proto``).

Sockets are made as asyncio's own ``open_connection(host, port)`` and
``start_server(cb, host, port)`` make theirs (decision): with ``proto``
IPPROTO_TCP, as getaddrinfo answers, so asyncio turns Nagle off on every
stream (``_set_nodelay``: TCP_NODELAY, tcp(7)) -- with ``proto`` 0 it would
not, and small request/response exchanges would wait on Nagle and the
peer's delayed ACK (RFC 9293 §3.7.4); a server socket gets SO_REUSEADDR
(asyncio's ``reuse_address`` default on POSIX, socket(7)) and is bound at
once but listens only when the server starts serving.

Limits (decisions):

* **Selector loops only.**  uvloop's and the proactor's transports make their
  own system calls on the descriptor, which for a pystack socket is only a
  readiness signal: no byte ever passes through it.  Any other loop is
  refused with RuntimeError before a socket is made.
* **No resolver.**  pystack has none, and the host's would reach the network
  (the kernel's DNS): ``host`` must be an IPv4 address in dotted-quad form.
  This is checked here, before ``loop.sock_connect`` -- which would hand any
  string that is not an address to ``loop.getaddrinfo``, the kernel's
  resolver -- and a name raises ``socket.gaierror`` (EAI_NONAME), as
  pystack.socket's ``connect`` does.
"""

from __future__ import annotations

import asyncio
import operator
import socket as _stdsocket
from asyncio import selector_events

#: asyncio's default StreamReader limit (``asyncio.streams._DEFAULT_LIMIT``).
DEFAULT_LIMIT = 2**16


def check_selector_loop(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """``loop`` if it is a selector event loop; RuntimeError otherwise (see the module docstring)."""
    if not isinstance(loop, selector_events.BaseSelectorEventLoop):
        raise RuntimeError(
            f"pystack streams need asyncio's selector event loop (the default on Linux); "
            f"{type(loop).__module__}.{type(loop).__qualname__} is not one: its transports would read and "
            f"write the socket's descriptor, which for a pystack socket only signals readiness"
        )
    return loop


def selector_loop() -> asyncio.AbstractEventLoop:
    """The running event loop, checked by :func:`check_selector_loop`."""
    return check_selector_loop(asyncio.get_running_loop())


def _stack(stack):
    if stack is not None:
        return stack
    from pystack.runtime.stack import Stack

    return Stack.default()


def _remote_address(host, port) -> tuple[str, int]:
    """``(host, port)`` checked so that asyncio never consults a resolver (see the module docstring)."""
    if not isinstance(host, str):
        raise TypeError(f"host must be an IPv4 address as a str, not {type(host).__name__}")
    try:
        _stdsocket.inet_pton(_stdsocket.AF_INET, host)
    except OSError:
        # What the stdlib raises for a name that does not resolve; no resolver is asked (no DNS).
        raise _stdsocket.gaierror(_stdsocket.EAI_NONAME, "Name or service not known") from None
    port = operator.index(port)  # TypeError for "80" or None, as socket.connect raises
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("connect(): port must be 0-65535.")
    return host, port


def _tcp_socket(stack):
    # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on the stream (see the module docstring).
    return _stack(stack).socket(_stdsocket.AF_INET, _stdsocket.SOCK_STREAM, _stdsocket.IPPROTO_TCP)


async def open_connection(host, port, *, stack=None, limit: int = DEFAULT_LIMIT, local_addr=None):
    """Connect to ``(host, port)`` over ``stack`` (default: ``pystack.Stack.default()``).

    Returns ``(reader, writer)``: asyncio's ``StreamReader`` and
    ``StreamWriter`` over a pystack TCP socket with TCP_NODELAY set (as
    ``asyncio.open_connection`` sets it).  ``local_addr`` binds the socket
    first (``(ip, port)``; port 0 picks one).  Errors are those of connect(2)
    on Linux: ConnectionRefusedError, TimeoutError (the stack's SYN
    retransmissions ran out), OSError EHOSTUNREACH, ...
    """
    loop = selector_loop()
    address = _remote_address(host, port)
    sock = _tcp_socket(stack)
    try:
        sock.setblocking(False)
        if local_addr is not None:
            sock.bind(local_addr)
        await loop.sock_connect(sock, address)
        return await asyncio.open_connection(sock=sock, limit=limit)
    except BaseException:
        sock.close()  # idempotent: a transport that was made has closed it already
        raise


async def start_server(client_connected_cb, host=None, port=0, *, stack=None, limit: int = DEFAULT_LIMIT,
                       backlog: int = 100, start_serving: bool = True):
    """Serve ``(host, port)`` of ``stack``: ``client_connected_cb(reader, writer)`` runs per connection.

    As ``asyncio.start_server(client_connected_cb, host, port)``: the socket
    has SO_REUSEADDR (asyncio's ``reuse_address`` default on POSIX), is bound
    at once and listens (``listen(backlog)``) only when the server starts
    serving -- at once, or at ``start_serving()``/``serve_forever()`` when
    ``start_serving=False`` (until then a SYN is answered with RST, RFC 9293
    §3.10.7.1, as for a kernel socket that is bound but not listening).
    ``host`` None or ``""`` is every address of the stack (INADDR_ANY);
    ``port`` 0 (or None) picks a free one -- ``server.sockets[0].getsockname()``
    tells which.  Returns asyncio's ``Server`` (``close``, ``wait_closed``,
    ``sockets``, ``serve_forever``, ``start_serving``, ``is_serving``, ``async
    with``); every accepted stream has TCP_NODELAY set.  The callback may be a
    plain function or a coroutine function.
    """
    selector_loop()
    address = ("" if host is None else host, 0 if port is None else port)
    sock = _tcp_socket(stack)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
        return await asyncio.start_server(client_connected_cb, sock=sock, limit=limit, backlog=backlog,
                                          start_serving=start_serving)
    except BaseException:
        sock.close()
        raise
