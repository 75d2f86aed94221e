"""``pystack.socket``: Python's ``socket`` module for AF_INET, on a pystack instead of the kernel.

Use it as the stdlib's: ``from pystack import socket`` and ``socket.socket()``,
``socket.create_connection(...)``, ``socket.create_server(...)``; every
socket lives on a :class:`pystack.Stack` (``stack=``, or
:meth:`pystack.Stack.default`, the most recently created one still open).
The names, constants, exceptions and semantics are the stdlib's on Linux
(the constants are the stdlib's own values; ``error is OSError``,
``timeout is TimeoutError``); :mod:`pystack.runtime.sockets` has the
machinery, the readiness descriptor behind ``fileno()`` and the list of
deliberate deviations.  Host names are never resolved: an address is a
dotted quad, and a name raises ``gaierror`` (EAI_NONAME) without any query.
Any other upper-case integer constant of the stdlib module (``SO_REUSEPORT``,
``MSG_WAITALL``...) is forwarded with its value; functions are not (they
would reach the kernel): ``getaddrinfo`` here is numeric-only.

Importing this module opens nothing and starts no thread.
"""

from __future__ import annotations

import socket as _std
from socket import (  # noqa: F401 -- re-exported: the stdlib's own values and pure helpers
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    AI_NUMERICHOST,
    AI_PASSIVE,
    INADDR_ANY,
    INADDR_BROADCAST,
    INADDR_LOOPBACK,
    INADDR_NONE,
    IPPROTO_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MSG_DONTWAIT,
    MSG_PEEK,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SO_BROADCAST,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_LINGER,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SO_TYPE,
    SOCK_CLOEXEC,
    SOCK_DGRAM,
    SOCK_NONBLOCK,
    SOCK_STREAM,
    SOL_SOCKET,
    SOMAXCONN,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_NODELAY,
    TCP_USER_TIMEOUT,
    AddressFamily,
    SocketIO,
    SocketKind,
    gaierror,
    herror,
    htonl,
    htons,
    inet_aton,
    inet_ntoa,
    inet_ntop,
    inet_pton,
    ntohl,
    ntohs,
)

from pystack.runtime import sockets as _impl
from pystack.runtime.sockets import getdefaulttimeout, setdefaulttimeout  # noqa: F401

SO_ACCEPTCONN = getattr(_std, "SO_ACCEPTCONN", 30)
EAI_NONAME = _std.EAI_NONAME
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT

error = OSError
timeout = TimeoutError
has_ipv6 = False  # pystack speaks IPv4 only


class socket(_impl.Socket):
    """``socket.socket`` on a pystack: ``socket(family=AF_INET, type=SOCK_STREAM, proto=0,
    fileno=None, *, stack=None)`` (see :class:`pystack.runtime.sockets.Socket`)."""

    __slots__ = ()


SocketType = socket


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *, all_errors=False,
                      stack=None) -> socket:
    """As ``socket.create_connection`` for a dotted-quad address (see the module docstring)."""
    return _impl.create_connection(address, timeout, source_address, all_errors=all_errors, stack=stack,
                                   socket_class=socket)


def create_server(address, *, family=AF_INET, backlog=None, reuse_port=False, dualstack_ipv6=False,
                  stack=None) -> socket:
    """As ``socket.create_server``: bound to ``address`` with SO_REUSEADDR, listening."""
    return _impl.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port,
                               dualstack_ipv6=dualstack_ipv6, stack=stack, socket_class=socket)


def has_dualstack_ipv6() -> bool:
    return False


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    """As ``socket.getaddrinfo`` for numeric IPv4 only: pystack never resolves a name.

    A name (anything but a dotted quad, or None/"" for the wildcard with
    AI_PASSIVE) raises ``gaierror`` EAI_NONAME without sending any query.
    """
    from pystack.wire.ipv4 import ip_from_str

    if family not in (0, AF_INET, AF_UNSPEC):
        raise gaierror(_std.EAI_FAMILY, "ai_family not supported")
    if host is None or host == "":
        host = "0.0.0.0" if flags & AI_PASSIVE else None
        if host is None:
            raise gaierror(EAI_NONAME, "Name or service not known (pystack has no loopback)")
    if isinstance(host, bytes):
        host = host.decode("ascii")
    try:
        ip_from_str(host)
    except ValueError:
        raise gaierror(EAI_NONAME, f"Name or service not known ({host!r}: pystack takes dotted quads "
                                   "only)") from None
    if port is None:
        port = 0
    elif isinstance(port, (str, bytes)):
        try:
            port = int(port)
        except ValueError:
            raise gaierror(_std.EAI_SERVICE, "Servname not supported for ai_socktype") from None
    kinds = [type] if type else [SOCK_STREAM, SOCK_DGRAM]
    out = []
    for kind in kinds:
        p = proto or (IPPROTO_TCP if kind == SOCK_STREAM else IPPROTO_UDP)
        out.append((AF_INET, SocketKind(kind), p, "", (host, port)))
    return out


def __getattr__(name: str):
    # Every other constant of the stdlib module (SO_REUSEPORT, IP_TOS, MSG_WAITALL, EAI_*...), with
    # the stdlib's value, so code written for ``socket`` finds its names; functions are not
    # forwarded (they would reach the kernel, not pystack).
    if name.isupper() and not name.startswith("_"):
        try:
            value = getattr(_std, name)
        except AttributeError:
            pass
        else:
            if isinstance(value, int):
                return value
    raise AttributeError(f"module 'pystack.socket' has no attribute {name!r}")


def gethostname() -> str:
    """This machine's host name (no network involved)."""
    return _std.gethostname()


__all__ = [
    "AF_INET", "AF_INET6", "AF_UNSPEC", "AI_NUMERICHOST", "AI_PASSIVE", "AddressFamily", "EAI_NONAME",
    "INADDR_ANY", "INADDR_BROADCAST", "INADDR_LOOPBACK", "INADDR_NONE", "IPPROTO_IP", "IPPROTO_TCP",
    "IPPROTO_UDP", "MSG_DONTWAIT", "MSG_PEEK", "SHUT_RD", "SHUT_RDWR", "SHUT_WR", "SOCK_CLOEXEC",
    "SOCK_DGRAM", "SOCK_NONBLOCK", "SOCK_STREAM", "SOL_SOCKET", "SOMAXCONN", "SO_ACCEPTCONN", "SO_BROADCAST",
    "SO_ERROR", "SO_KEEPALIVE", "SO_LINGER", "SO_RCVBUF", "SO_REUSEADDR", "SO_SNDBUF", "SO_TYPE", "SocketIO",
    "SocketKind", "SocketType", "TCP_KEEPCNT", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_NODELAY",
    "TCP_USER_TIMEOUT", "create_connection", "create_server", "error", "gaierror", "getaddrinfo",
    "getdefaulttimeout", "gethostname", "has_dualstack_ipv6", "has_ipv6", "herror", "htonl", "htons",
    "inet_aton", "inet_ntoa", "inet_ntop", "inet_pton", "ntohl", "ntohs", "setdefaulttimeout", "socket",
    "timeout",
]
