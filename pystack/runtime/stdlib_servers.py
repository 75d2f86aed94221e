"""The standard library's own servers (``socketserver``, ``http.server``) on pystack sockets.

This module owns one function, :func:`make_server`: it hands an unmodified
``socketserver.TCPServer`` (or any subclass: ``ThreadingTCPServer``,
``UDPServer``, ``ThreadingUDPServer``, ``http.server.HTTPServer``,
``ThreadingHTTPServer``, your own) a :class:`pystack.socket.socket` instead of
the kernel socket it would make, and returns the server object itself.
Everything after that -- ``serve_forever``, ``handle_request``,
``shutdown``, ``server_close``, the request handlers, ``with server:`` -- is
the standard library's code, untouched.

Design decisions
----------------
* **The constructor's own hook, no patching.**  ``TCPServer.__init__``
  makes its socket with the stdlib ``socket.socket(...)``; the supported way
  to change what happens next is its documented ``bind_and_activate=False``
  argument.  We construct the server that way, close the kernel socket it
  made (never bound, never connected: it has not touched any network), put a
  pystack socket of the same ``address_family``/``socket_type`` in
  ``server.socket``, and then call the server's own ``server_bind()`` and
  ``server_activate()``, exactly as ``TCPServer.__init__`` would.  So a
  subclass's overrides run as usual (``HTTPServer.server_bind`` records
  ``server_name``/``server_port``; ``UDPServer.server_activate`` skips
  ``listen``), ``allow_reuse_address`` still sets SO_REUSEADDR, and
  ``request_queue_size`` is still the backlog.  No module global of
  ``socket``, ``socketserver`` or ``http.server`` is replaced: a kernel
  server made next to a pystack one is unaffected.
* **pystack.socket is the whole contract.**  The servers reach the socket
  only through the methods ``socket.socket`` has (``bind``, ``listen``,
  ``accept``, ``recvfrom``, ``sendto``, ``makefile``, ``sendall``,
  ``shutdown(SHUT_WR)``, ``close``, ``settimeout``/``gettimeout``,
  ``setsockopt``, ``getsockname``) and ``fileno()`` for
  ``serve_forever``'s ``selectors`` poll.  Where a stdlib server trips on a
  pystack socket, that is a pystack.socket bug to fix there, never a
  work-around here.
* **Only AF_INET.**  pystack speaks IPv4 (see :mod:`pystack.socket`): a
  server class whose ``address_family`` is anything else fails with the
  OSError pystack.socket raises for it (EAFNOSUPPORT, socket(2)), after the
  half-made server has been closed.

One thing to know about ``http.server.HTTPServer``: its ``server_bind``
calls ``socket.getfqdn(host)`` on the bound address, which asks the *host's*
resolver (``/etc/hosts``, then DNS) for a name.  The host knows nothing of
the stack's addresses (pystack has no resolver of its own), so binding an
HTTPServer to a specific pystack address sends a reverse (PTR) query
through the host's resolver.  Binding to ``""`` (all addresses, as
``python -m http.server`` does) makes ``getfqdn`` look up the host's own
name instead, which ``/etc/hosts`` normally answers.  That is the standard
library's behaviour, kept as it is.
"""

from __future__ import annotations

import socketserver
from typing import Any, TypeVar

__all__ = ["make_server"]

_Server = TypeVar("_Server", bound=socketserver.TCPServer)


def make_server(server_class: type[_Server], server_address: Any, handler_class: Any, *,
                stack: Any = None, bind_and_activate: bool = True, **kwargs: Any) -> _Server:
    """Make ``server_class(server_address, handler_class, **kwargs)`` serve on a pystack socket.

    ``server_class`` is ``socketserver.TCPServer`` or a subclass whose
    constructor keeps TCPServer's ``bind_and_activate`` keyword (every
    server class in the standard library does).  ``stack`` is the
    :class:`pystack.Stack` to serve on; None means ``Stack.default()``, as
    for :class:`pystack.socket.socket`.  With ``bind_and_activate=False``
    the server is returned unbound, like the stdlib constructor's, for the
    caller to set options on ``server.socket`` and then call
    ``server.server_bind()`` and ``server.server_activate()``.

    Returns the server object itself, with ``server.socket`` a
    :class:`pystack.socket.socket`.  Errors from binding (EADDRINUSE,
    EADDRNOTAVAIL, ...) propagate as the stdlib constructor's do, after the
    server has been closed.
    """
    if not (isinstance(server_class, type) and issubclass(server_class, socketserver.TCPServer)):
        raise TypeError(f"make_server needs socketserver.TCPServer or a subclass, not {server_class!r}")
    # Imported here so that importing this module (and pystack) opens nothing and starts no thread.
    from pystack import socket as psocket

    server = server_class(server_address, handler_class, bind_and_activate=False, **kwargs)
    try:
        # The kernel socket TCPServer.__init__ made: unbound, so closing it is all there is to undo.
        server.socket.close()
        server.socket = psocket.socket(server.address_family, server.socket_type, stack=stack)
        if bind_and_activate:
            # What TCPServer.__init__ does with bind_and_activate=True, on the pystack socket.
            server.server_bind()
            server.server_activate()
    except BaseException:
        server.server_close()
        raise
    return server
