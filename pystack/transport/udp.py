"""UDP sockets, sans-I/O (RFC 768; RFC 1122 §4.1).

Owns the UDP port table and every socket's queues: :class:`UdpLayer` is the
interface's handler for IP protocol 17 and :class:`UdpSocket` the
application's end.  The application side never needs ``now``: ``sendto``
queues a datagram, ``recvfrom`` takes one that arrived; the interface moves
them in ``poll(now)`` and ``receive(frame, now)``.  Nothing here reads a
clock or touches a file descriptor, and nothing imports ``iface/``: the
interface hands itself to the handler calls (``iface.send_udp``,
``iface.send_icmp_error``) and a route check at construction.

Theory of operation
-------------------
*Ports.*  One socket per local port, whatever its local address: binding
``10.77.0.2:5000`` while ``0.0.0.0:5000`` is taken is EADDRINUSE, as on
Linux without SO_REUSEADDR.  Port 0 (``bind`` to port 0, or the implicit
bind of the first ``sendto``/``connect``) picks an unused ephemeral port in
49152-65535 (RFC 6335 §6), searching upward from where the last search
stopped.  Deviation: RFC 6056 §3.3 recommends randomised ephemeral ports
against blind spoofing; this stack is a lab instrument and prefers
reproducible runs (the same calls give the same ports).

*Receive* (:meth:`UdpLayer.handle`).  The interface has already checked the
IP header and, on the fast path, the UDP length and checksum; a reassembled
datagram is parsed here, and a bad one raises MalformedPacket for the
interface to count (``udp.bad_checksum``...).  A checksum field of 0 means
the sender computed none and is accepted (RFC 768; RFC 1122 §4.1.3.4).  The
datagram goes to the socket bound to its destination port if that socket's
local address is the datagram's destination or the wildcard (a broadcast
reaches only a wildcard socket, RFC 1122 §4.1.3.5), and, for a connected
socket, only if it comes from the connected peer.  With no such socket the
datagram is dropped (``udp.no_port``) and ICMP Port Unreachable goes back
(RFC 1122 §4.1.3.1), except for a broadcast (RFC 1122 §3.2.2; the
interface's ``send_icmp_error`` enforces every "never" rule and the rate
limit).  A socket's receive queue is bounded in payload bytes (``rcvbuf``);
a datagram that does not fit is dropped (``udp.rcvbuf_full``), except that
an empty queue always takes one, so a small ``rcvbuf`` cannot make a socket
deaf to large datagrams.

*Send.*  ``sendto`` checks what Linux checks at the call (closed socket,
address, size, route) and raises there; the datagram then waits in one FIFO
shared by all sockets, drained by :meth:`UdpLayer.poll` through
``iface.send_udp`` (fragmented by the interface when it exceeds the MTU).
A socket's queued bytes are bounded by ``sndbuf``; past it ``sendto`` raises
BlockingIOError (EAGAIN), as a non-blocking Linux socket does.  Closing a
socket does not recall what it already queued, as closing a Linux socket
does not recall what is in the qdisc.  Deviation: sending to a broadcast
address needs no SO_BROADCAST (there are no socket options yet).

*ICMP errors* (:meth:`UdpLayer.handle_icmp_error`, RFC 1122 §4.1.3.3: UDP
MUST pass ICMP errors up).  The quoted datagram names our port and the
peer; a *connected* socket whose peer it is records the error, and its next
``send``/``sendto``/``recv``/``recvfrom`` raises it once: Port Unreachable
as ConnectionRefusedError (ECONNREFUSED), Host Unreachable (also the local
report when ARP resolution fails) as EHOSTUNREACH, and so on (the errno of
Linux's ``icmp_err_convert``).  An unconnected socket could not tell which
``sendto`` failed, so, as on Linux without IP_RECVERR, it is not told
(``udp.icmp_errors_ignored``).  Deviation from Linux: Linux reports only the
"hard" codes to a connected socket; we report every Destination Unreachable
(but fragmentation needed, which is path-MTU information), Time Exceeded and
Parameter Problem, as RFC 1122 §4.1.3.3 asks.

*Readiness hooks.*  :meth:`UdpLayer._note_readable` is called when a
socket's receive queue gains a datagram or an error, and
:meth:`UdpLayer._note_writable` when its share of the send queue drained;
both do nothing here, and a runtime wraps them to wake the socket's waiters
(see :mod:`pystack.runtime.sockets`).  ``rcvbuf``/``sndbuf`` are per socket
(SO_RCVBUF/SO_SNDBUF), starting at the layer's.
"""

from __future__ import annotations

import errno
import functools
import os
import socket as _stdsocket
import struct
from collections import deque

from pystack.stats import Stats
from pystack.wire.icmpv4 import (DEST_UNREACHABLE, PARAMETER_PROBLEM, TIME_EXCEEDED, UNREACH_FRAG_NEEDED,
                                 UNREACH_HOST, UNREACH_NET, UNREACH_PORT, UNREACH_PROTOCOL)
from pystack.wire.ipv4 import ip_from_str
from pystack.wire.ipv4 import ip_to_str as _ip_to_str
from pystack.wire.udp import UdpDatagram

# Address text <-> int on every sendto/recvfrom: the ipaddress module is slow
# enough to show in a profile, and a socket talks to few peers.
_ip_from_str = functools.lru_cache(maxsize=1024)(ip_from_str)
ip_to_str = functools.lru_cache(maxsize=1024)(_ip_to_str)

#: IPv4 + UDP headers take 28 of the 65535 bytes an IPv4 datagram may hold.
MAX_PAYLOAD = 0xFFFF - 20 - 8

#: The ephemeral port range (RFC 6335 §6, the IANA Dynamic Ports).
EPHEMERAL_FIRST = 49152
EPHEMERAL_LAST = 65535

#: Default queue bounds in payload bytes (Linux's net.core.rmem_default / wmem_default).
DEFAULT_RCVBUF = 212992
DEFAULT_SNDBUF = 212992

_INADDR_ANY = 0
_INADDR_BROADCAST = 0xFFFFFFFF
_PORTS = struct.Struct("!HH")

COUNTERS = (
    "udp.rx",  # datagrams handed to UDP by IP
    "udp.delivered",  # datagrams queued on a socket
    "udp.no_port",  # no socket for the destination (Port Unreachable unless broadcast)
    "udp.rcvbuf_full",  # dropped: the socket's receive queue was full
    "udp.tx",  # datagrams handed to IP
    "udp.sndbuf_full",  # sendto refused with EAGAIN: the socket's send queue was full
    "udp.send_errors",  # queued datagrams IP refused when the queue drained
    "udp.icmp_errors",  # ICMP errors recorded on a connected socket
    "udp.icmp_errors_ignored",  # ICMP errors for no connected socket, or not reported (RFC 1122 §4.1.3.3)
)

# ICMP error -> errno, after Linux's icmp_err_convert (net/ipv4/icmp.c) for
# Destination Unreachable codes 0-15.
_UNREACH_ERRNO = {
    UNREACH_NET: errno.ENETUNREACH,
    UNREACH_HOST: errno.EHOSTUNREACH,
    UNREACH_PROTOCOL: errno.ENOPROTOOPT,
    UNREACH_PORT: errno.ECONNREFUSED,
    5: errno.EOPNOTSUPP,  # source route failed
    6: errno.ENETUNREACH,  # destination network unknown
    7: errno.EHOSTDOWN,  # destination host unknown
    8: errno.ENONET,  # source host isolated
    9: errno.ENETUNREACH,  # network administratively prohibited
    10: errno.EHOSTUNREACH,  # host administratively prohibited
    11: errno.ENETUNREACH,  # network unreachable for TOS
    12: errno.EHOSTUNREACH,  # host unreachable for TOS
    13: errno.EHOSTUNREACH,  # communication administratively prohibited (RFC 1812 §5.2.7.1)
    14: errno.EHOSTUNREACH,  # host precedence violation
    15: errno.EHOSTUNREACH,  # precedence cutoff in effect
}


def _error_errno(type_: int, code: int) -> int | None:
    """The errno a connected socket reports for an ICMP error, or None (not reported)."""
    if type_ == DEST_UNREACHABLE:
        if code == UNREACH_FRAG_NEEDED:
            return None  # path-MTU information, not a failure (RFC 1191); no PMTU cache yet
        return _UNREACH_ERRNO.get(code, errno.EHOSTUNREACH)
    if type_ == TIME_EXCEEDED:
        return errno.EHOSTUNREACH  # as Linux's __udp4_lib_err
    if type_ == PARAMETER_PROBLEM:
        return errno.EPROTO
    return None  # source quench (RFC 6633), redirect: nothing to report


def _oserror(code: int, detail: str = "") -> OSError:
    """OSError(code) -- Python picks the subclass (ConnectionRefusedError...) -- with a detail."""
    message = os.strerror(code)
    return OSError(code, f"{message} ({detail})" if detail else message)


def _parse_addr(addr, what: str, *, wildcard_ok: bool) -> tuple[int, int]:
    """``(host, port)`` -> ``(ip int, port)``, with the errors Python's socket module raises."""
    if not isinstance(addr, tuple):
        raise TypeError(f"{what}(): AF_INET address must be tuple, not {type(addr).__name__}")
    if len(addr) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = addr
    if not isinstance(host, str):
        raise TypeError(f"str expected for the host, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{what}(): port must be 0-65535.")
    if host == "" and wildcard_ok:
        return _INADDR_ANY, port
    if host == "<broadcast>":
        return _INADDR_BROADCAST, port
    try:
        ip = _ip_from_str(host)
    except ValueError:
        # pystack has no resolver: a name is as unknown as an unresolvable one.
        raise _stdsocket.gaierror(_stdsocket.EAI_NONAME,
                                  f"Name or service not known ({host!r}: pystack takes dotted quads only)") from None
    return ip, port


def _as_data(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


class UdpSocket:
    """One UDP endpoint; create it with :meth:`UdpLayer.socket`.

    Non-blocking like a Linux socket with O_NONBLOCK: an empty receive queue
    raises BlockingIOError.  Errors are OSError with the Linux errno.
    """

    def __init__(self, layer: UdpLayer) -> None:
        self._layer = layer
        self._local_ip = _INADDR_ANY
        self._local_port = 0  # 0: not bound yet
        self._remote: tuple[int, int] | None = None
        # (payload, source ip, source port), oldest first; _rx_bytes sums the payloads.
        self._rxq: deque[tuple[bytes, int, int]] = deque()
        self._rx_bytes = 0
        self._tx_bytes = 0  # payload bytes of this socket still in the layer's send queue
        self._error = 0  # a pending errno from an ICMP error (connected sockets), 0 for none
        self.rcvbuf = layer.rcvbuf  # queue bounds in payload bytes (SO_RCVBUF / SO_SNDBUF)
        self.sndbuf = layer.sndbuf
        self.closed = False
        self.rd_shut = self.wr_shut = False  # shutdown() (Linux's sk_shutdown)
        self.drops = 0  # datagrams dropped for this socket (rcvbuf_full)

    # -- addresses ---------------------------------------------------------------

    def bind(self, addr: tuple[str, int]) -> None:
        """Bind to ``(host, port)``: host "" or "0.0.0.0" (any) or our address; port 0 = ephemeral."""
        self._check_open()
        ip, port = _parse_addr(addr, "bind", wildcard_ok=True)
        if self._local_port:
            raise _oserror(errno.EINVAL, "socket already bound")
        if ip not in (_INADDR_ANY, self._layer.local_ip):
            raise _oserror(errno.EADDRNOTAVAIL, f"{ip_to_str(ip)} is not this interface's address")
        self._layer._bind(self, ip, port)

    def connect(self, addr: tuple[str, int]) -> None:
        """Fix the peer: ``send`` goes there and only its datagrams are received.

        Binds an ephemeral port first if needed; the local address becomes
        ours (as Linux picks the source address at connect).  Connecting
        again replaces the peer and forgets an error the old one caused.
        """
        self._check_open()
        ip, port = _parse_addr(addr, "connect", wildcard_ok=False)
        if port == 0:
            raise _oserror(errno.EINVAL, "cannot connect to port 0")
        self._layer._check_route(ip)
        if not self._local_port:
            self._layer._bind(self, _INADDR_ANY, 0)
        self._remote = (ip, port)
        self._error = 0

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        return ip_to_str(self._source_ip()), self._local_port

    def _source_ip(self) -> int:
        # A connected socket shows the source address connect chose (Linux).
        ip = self._local_ip
        if ip == _INADDR_ANY and self._remote is not None:
            ip = self._layer.local_ip
        return ip

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        if self._remote is None:
            raise _oserror(errno.ENOTCONN)
        return ip_to_str(self._remote[0]), self._remote[1]

    # -- sending -------------------------------------------------------------------

    def sendto(self, data, addr: tuple[str, int]) -> int:
        """Queue one datagram for ``addr``; returns its length.  Sent in the interface's next poll."""
        self._check_open()
        data = _as_data(data)
        self._check_wr_shut()
        ip, port = _parse_addr(addr, "sendto", wildcard_ok=False)
        return self._send(data, ip, port)

    def send(self, data) -> int:
        """Queue one datagram for the connected peer (EDESTADDRREQ when not connected)."""
        self._check_open()
        data = _as_data(data)
        self._check_wr_shut()
        if self._remote is None:
            raise _oserror(errno.EDESTADDRREQ)
        return self._send(data, *self._remote)

    def _send(self, data: bytes, ip: int, port: int) -> int:
        self._raise_pending()
        if port == 0:
            raise _oserror(errno.EINVAL, "cannot send to port 0")
        if len(data) > MAX_PAYLOAD:
            raise _oserror(errno.EMSGSIZE, f"{len(data)} bytes > {MAX_PAYLOAD}, the most a UDP datagram holds")
        layer = self._layer
        layer._check_route(ip)
        if self._tx_bytes and self._tx_bytes + len(data) > self.sndbuf:
            layer.stats.incr("udp.sndbuf_full")
            raise _oserror(errno.EAGAIN, f"{self._tx_bytes} bytes already queued, sndbuf {self.sndbuf}")
        if not self._local_port:
            layer._bind(self, _INADDR_ANY, 0)
        layer._queue(self, ip, port, data)
        return len(data)

    # -- receiving -----------------------------------------------------------------

    def recvfrom(self, bufsize: int = 65535) -> tuple[bytes, tuple[str, int] | None]:
        """The oldest datagram and its sender; beyond ``bufsize`` bytes it is cut (the rest is lost).
        After SHUT_RD with nothing queued: ``(b"", None)`` (no sender, as Linux returns no name)."""
        data, ip, port = self._take(bufsize, "recvfrom")
        return data, (None if ip is None else (ip_to_str(ip), port))

    def recv(self, bufsize: int) -> bytes:
        """The oldest datagram, cut to ``bufsize`` bytes."""
        return self._take(bufsize, "recv")[0]

    def _take(self, bufsize, what: str) -> tuple[bytes, int, int]:
        self._check_open()
        if isinstance(bufsize, bool) or not isinstance(bufsize, int):
            raise TypeError(f"'{type(bufsize).__name__}' object cannot be interpreted as an integer")
        if bufsize < 0:
            raise ValueError(f"negative buffersize in {what}")
        if self.rd_shut and not self._rxq:
            return b"", None, 0
        self._raise_pending()
        if not self._rxq:
            raise _oserror(errno.EAGAIN)
        data, ip, port = self._rxq.popleft()
        self._rx_bytes -= len(data)
        return data[:bufsize], ip, port

    @property
    def readable(self) -> bool:
        """Whether a receive call would not raise BlockingIOError (a datagram or an error waits,
        or SHUT_RD); Linux ``datagram_poll``'s POLLIN|POLLERR."""
        return bool(self._rxq) or bool(self._error) or self.rd_shut

    @property
    def writable(self) -> bool:
        """Whether a datagram may be queued (less than ``sndbuf`` bytes wait), or a send fails at
        once (an error waits, SHUT_WR); Linux ``datagram_poll``'s POLLOUT|POLLERR."""
        return self._tx_bytes < self.sndbuf or bool(self._error) or self.wr_shut

    # -- life ----------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """SHUT_RD (0): receive calls return b"" once the queue is empty instead of raising
        EAGAIN; SHUT_WR (1): sends raise EPIPE; SHUT_RDWR (2): both.  EINVAL for another
        ``how``, ENOTCONN on an unconnected socket (Linux ``inet_shutdown``)."""
        self._check_open()
        if how not in (0, 1, 2):
            raise _oserror(errno.EINVAL)
        if self._remote is None:
            raise _oserror(errno.ENOTCONN)
        if how != 1:
            self.rd_shut = True
            self._layer._note_readable(self)
        if how != 0:
            self.wr_shut = True
            self._layer._note_writable(self)

    def _check_wr_shut(self) -> None:
        if self.wr_shut:
            raise _oserror(errno.EPIPE)

    def close(self) -> None:
        """Release the port and drop what was received; queued sends still go out.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._layer._unbind(self)
        self._rxq.clear()
        self._rx_bytes = 0

    def __enter__(self) -> UdpSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise _oserror(errno.EBADF, "socket is closed")

    def _raise_pending(self) -> None:
        code = self._error
        if code:
            self._error = 0  # reported once, as Linux's sock_error() clears sk_err
            raise _oserror(code, "reported by ICMP")

    def info(self) -> dict:
        """This socket's row of :meth:`UdpLayer.sockets_info` (addresses as ``getsockname`` shows them)."""
        local = f"{ip_to_str(self._source_ip())}:{self._local_port}" if self._local_port else "*:*"
        remote = f"{ip_to_str(self._remote[0])}:{self._remote[1]}" if self._remote else "*:*"
        return {"proto": "udp", "local": local, "remote": remote, "rx_queue": self._rx_bytes,
                "tx_queue": self._tx_bytes, "drops": self.drops}

    def __repr__(self) -> str:
        row = self.info()
        state = " closed" if self.closed else ""
        return f"<UdpSocket {row['local']} -> {row['remote']} rx={row['rx_queue']} tx={row['tx_queue']}{state}>"


class UdpLayer:
    """The proto-17 handler: the port table, the shared send queue, delivery and ICMP errors.

    ``local_ip`` is the interface's address; ``check_route(ip)`` raises the
    OSError a send to ``ip`` would meet (ENETUNREACH...), so ``sendto`` can
    raise it at the call as Linux does.  The interface builds one of these as
    ``iface.udp``.
    """

    def __init__(self, local_ip: int, stats: Stats | None = None, *, check_route=None,
                 rcvbuf: int = DEFAULT_RCVBUF, sndbuf: int = DEFAULT_SNDBUF) -> None:
        if not isinstance(local_ip, int) or not 0 <= local_ip <= 0xFFFFFFFF:
            raise ValueError(f"local_ip must be an IPv4 address as an int, got {local_ip!r}")
        for name, value in (("rcvbuf", rcvbuf), ("sndbuf", sndbuf)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (bytes), got {value!r}")
        self.local_ip = local_ip
        self.stats = stats if stats is not None else Stats()
        for name in COUNTERS:
            self.stats.incr(name, 0)
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self._check_route_fn = check_route
        self._ports: dict[int, UdpSocket] = {}
        self._next_ephemeral = EPHEMERAL_FIRST
        # (socket, source port, destination ip, destination port, payload), oldest first.
        self._txq: deque[tuple[UdpSocket, int, int, int, bytes]] = deque()
        self._last_now = 0

    # -- application side --------------------------------------------------------------

    def socket(self) -> UdpSocket:
        """A new, unbound socket."""
        return UdpSocket(self)

    def sockets_info(self) -> list[dict]:
        """One dict per open socket, by local port: proto, local, remote, rx_queue, tx_queue, drops."""
        return [self._ports[port].info() for port in sorted(self._ports)]

    # -- port table ----------------------------------------------------------------------

    def _bind(self, sock: UdpSocket, ip: int, port: int) -> None:
        if port == 0:
            port = self._ephemeral()
        elif port in self._ports:
            raise _oserror(errno.EADDRINUSE, f"port {port} is taken")
        self._ports[port] = sock
        sock._local_ip = ip
        sock._local_port = port

    def _ephemeral(self) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        start = self._next_ephemeral
        for i in range(span):
            port = EPHEMERAL_FIRST + (start - EPHEMERAL_FIRST + i) % span
            if port not in self._ports:
                self._next_ephemeral = EPHEMERAL_FIRST + (port - EPHEMERAL_FIRST + 1) % span
                return port
        raise _oserror(errno.EADDRINUSE, "every ephemeral port (RFC 6335 §6) is in use")

    def _unbind(self, sock: UdpSocket) -> None:
        port = sock._local_port
        if port and self._ports.get(port) is sock:
            del self._ports[port]

    def _check_route(self, ip: int) -> None:
        if self._check_route_fn is not None:
            self._check_route_fn(ip)

    def _note_readable(self, sock: UdpSocket) -> None:
        """Hook: ``sock`` got a datagram or an error (see "Readiness hooks" in the module docstring)."""

    def _note_writable(self, sock: UdpSocket) -> None:
        """Hook: ``sock``'s queued datagrams all went to IP."""

    def _queue(self, sock: UdpSocket, ip: int, port: int, data: bytes) -> None:
        sock._tx_bytes += len(data)
        self._txq.append((sock, sock._local_port, ip, port, data))

    # -- handler protocol (called by the interface) -----------------------------------------

    def handle(self, iface, now: int, ip, payload) -> None:
        """One UDP datagram from IP; ``payload`` (a view valid during the call) starts at the UDP header.

        ``ip.frame`` is the fast path's parse when it already read and
        checked the UDP header; otherwise (a reassembled datagram) it is
        parsed here, and a bad one raises MalformedPacket for the interface
        to count.
        """
        stats = self.stats
        stats.incr("udp.rx")
        f = ip.frame
        if f is not None:
            sport, dport = f.sport, f.dport
            start = f.payload_offset - f.l4_offset
            data = payload[start:start + f.payload_len]
        else:
            d = UdpDatagram.parse(payload, src=ip.src, dst=ip.dst)
            sport, dport, data = d.sport, d.dport, d.payload
        sock = self._ports.get(dport)
        if sock is not None:
            local = sock._local_ip
            remote = sock._remote
            if (local != _INADDR_ANY and (ip.broadcast or local != ip.dst)) or \
                    (remote is not None and (remote[0] != ip.src or remote[1] != sport)):
                sock = None
        if sock is None:
            stats.incr("udp.no_port")
            if not ip.broadcast:  # RFC 1122 §4.1.3.1; never for a broadcast (§3.2.2)
                iface.send_icmp_error(now, DEST_UNREACHABLE, UNREACH_PORT, ip.datagram)
            return
        n = len(data)
        if sock._rxq and sock._rx_bytes + n > sock.rcvbuf:
            stats.incr("udp.rcvbuf_full")
            sock.drops += 1
            return
        sock._rxq.append((bytes(data), ip.src, sport))
        sock._rx_bytes += n
        stats.incr("udp.delivered")
        self._note_readable(sock)

    def handle_icmp_error(self, iface, now: int, type: int, code: int, quoted, mtu: int) -> None:
        """An ICMP error about a datagram we sent: tell the connected socket it concerns."""
        head = quoted.payload[:4]
        if len(head) < 4:
            self.stats.incr("udp.icmp_errors_ignored")  # cannot name the ports
            return
        sport, dport = _PORTS.unpack(head)
        sock = self._ports.get(sport)
        code_errno = _error_errno(type, code)
        if sock is None or sock._remote != (quoted.dst, dport) or code_errno is None:
            self.stats.incr("udp.icmp_errors_ignored")
            return
        sock._error = code_errno
        self.stats.incr("udp.icmp_errors")
        self._note_readable(sock)

    def poll(self, iface, now: int) -> None:
        """Hand every queued datagram to IP, oldest first."""
        self._last_now = now
        txq = self._txq
        stats = self.stats
        while txq:
            sock, sport, ip, port, data = txq.popleft()
            sock._tx_bytes -= len(data)
            if not sock._tx_bytes:
                self._note_writable(sock)
            try:
                iface.send_udp(now, ip, sport, port, data)
            except OSError:
                stats.incr("udp.send_errors")
                continue
            stats.incr("udp.tx")

    def poll_at(self) -> int | None:
        """Now-or-earlier while datagrams wait to be sent, else None (UDP keeps no timers)."""
        return self._last_now if self._txq else None
