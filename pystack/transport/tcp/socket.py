"""TCP sockets, the application's end: Python socket semantics, Linux errno, no ``now``.

Owns what the application sees of a connection or a listener: binding,
listening, the accept queue, connect, send/recv, shutdown/close/abort, and
the options (``nodelay``, ``keepalive`` + ``keepidle``/``keepintvl``/
``keepcnt``, ``user_timeout``, ``rcvbuf``, ``sndbuf``, ``linger``).  It is
non-blocking like a Linux socket with O_NONBLOCK: a call that would wait
raises BlockingIOError (EAGAIN); ``connect`` starts the handshake and
returns, and completion shows in :attr:`TcpSocket.state` and
:attr:`TcpSocket.error` (SO_ERROR).  The application never passes ``now``:
it queues and dequeues, and the layer's ``poll(now)`` moves the bytes; calls
that change a connection's state are stamped with the layer's last ``now``.

Errors follow Linux: a pending error (ECONNREFUSED, ECONNRESET, ETIMEDOUT,
or a soft ICMP error that caused a timeout) is raised once by the next
``send``/``recv`` and cleared, as ``sock_error()`` does; afterwards ``recv``
returns b"" and ``send`` raises BrokenPipeError (EPIPE).

``connect`` keeps Linux's socket-level state (``__inet_stream_connect``,
net/ipv4/af_inet.c): a socket whose connect started is *connecting* until
a later ``connect`` call sees the outcome -- EALREADY while the handshake
runs, 0 once it is established (the socket is then *connected*: EISCONN
from then on), or the attempt's error (ECONNABORTED when SO_ERROR already
took it), after which the socket is unconnected again and may connect anew.
``shutdown`` of a listener with SHUT_RD stops listening and of a socket in
SYN-SENT abandons the attempt, both without error, as Linux's
``inet_shutdown`` does.  ``reuseaddr`` is SO_REUSEADDR (socket(7)); the
layer applies Linux's bind rule (see :mod:`pystack.transport.tcp.layer`).
A port given to ``bind`` stays the socket's through connection attempts,
failed ones included; a port picked by ``connect`` (or by ``bind`` to port 0)
is released when the attempt fails or is abandoned, as is the source
address unless bound (Linux's SOCK_BINDPORT_LOCK / SOCK_BINDADDR_LOCK,
``tcp_set_state``, ``tcp_disconnect``).  Deviation: ``local`` then shows
port 0, where Linux's getsockname still shows the released number (its
``inet_sport`` is not cleared).

:attr:`TcpSocket.readable` and :attr:`TcpSocket.writable` are what Linux's
``tcp_poll`` reports, mapped onto select's sets (readable: POLLIN, POLLHUP
or POLLERR; writable: POLLOUT or POLLERR); the runtime's readiness
descriptors show exactly these.
"""

from __future__ import annotations

import errno
import os
from collections import deque

from pystack.transport.tcp.connection import _CAN_SEND, State, TcpConnection
from pystack.transport.udp import _parse_addr, ip_to_str

SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2


def _oserror(code: int, detail: str = "") -> OSError:
    message = os.strerror(code)
    return OSError(code, f"{message} ({detail})" if detail else message)


def _as_data(data):
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


class TcpSocket:
    """One TCP endpoint; create it with :meth:`TcpLayer.socket` (see the module docstring)."""

    def __init__(self, layer, conn: TcpConnection | None = None) -> None:
        self._layer = layer
        self._conn = conn
        cfg = layer.config
        self._local_ip = 0
        self._local_port = conn.local_port if conn is not None else 0
        self._listening = False
        self._connecting = False  # Linux's SS_CONNECTING (see the module docstring)
        self._port_locked = False  # bind() named the port: Linux's SOCK_BINDPORT_LOCK
        self.reuseaddr = False  # SO_REUSEADDR; accepted sockets inherit it (Linux's sk_clone)
        self.backlog = 0
        self._syn_q: set[TcpConnection] = set()
        self._accept_q: deque[TcpConnection] = deque()
        self.closed = False
        # Options (inherited by accepted sockets, as Linux does).
        self._nodelay = False
        self._keepalive = False
        self._keepidle = cfg.keepalive_idle
        self._keepintvl = cfg.keepalive_interval
        self._keepcnt = cfg.keepalive_count
        self._user_timeout = cfg.user_timeout
        self.rcvbuf = cfg.rcvbuf
        self.sndbuf = cfg.sndbuf
        self.linger: tuple[bool, int] = (False, 0)
        self.congestion = cfg.congestion
        if conn is not None:
            self._nodelay, self._keepalive = conn.nodelay, conn.keepalive
            self._keepidle, self._keepintvl, self._keepcnt = conn.keepidle, conn.keepintvl, conn.keepcnt
            self._user_timeout = conn.user_timeout
            self.rcvbuf, self.sndbuf, self.linger = conn.rcvbuf, conn.sndbuf_limit, conn.linger

    # -- addresses ---------------------------------------------------------------------------

    def bind(self, addr: tuple[str, int]) -> None:
        """Bind to ``(host, port)``: host "" / "0.0.0.0" or our address; port 0 picks an ephemeral one."""
        self._check_open()
        ip, port = _parse_addr(addr, "bind", wildcard_ok=True)
        if self._local_port or self._conn is not None:
            raise _oserror(errno.EINVAL, "socket already bound")
        if ip not in (0, self._layer.local_ip):
            raise _oserror(errno.EADDRNOTAVAIL, f"{ip_to_str(ip)} is not this interface's address")
        self._local_port = self._layer._bind(self, port)
        self._local_ip = ip
        self._port_locked = port != 0

    def listen(self, backlog: int = 128) -> None:
        """Accept connections; ``backlog`` bounds the SYN queue and the accept queue each."""
        self._check_open()
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError("backlog must be an int")
        if self._conn is not None:
            raise _oserror(errno.EINVAL, "socket is connected")
        if not self._local_port:
            self._local_port = self._layer._bind(self, 0)  # Linux binds an ephemeral port
        if not self._listening:
            self._layer._listen(self, self._local_port)  # EADDRINUSE: another listener (socket(7))
        self.backlog = max(1, min(backlog, 65535))
        self._listening = True

    def _accept_room(self) -> bool:
        return self._listening and len(self._accept_q) < self.backlog

    def accept(self) -> tuple[TcpSocket, tuple[str, int]]:
        """The oldest established connection, as a new socket and the peer's address."""
        self._check_open()
        if not self._listening:
            raise _oserror(errno.EINVAL, "socket is not listening")
        if not self._accept_q:
            raise _oserror(errno.EAGAIN)
        conn = self._accept_q.popleft()
        conn.listener = None
        sock = TcpSocket(self._layer, conn)
        sock._local_ip = self._layer.local_ip
        sock.congestion = self.congestion
        sock.reuseaddr = self.reuseaddr
        return sock, (ip_to_str(conn.remote_ip), conn.remote_port)

    def connect(self, addr: tuple[str, int]) -> None:
        """Start the handshake (SYN goes out at the layer's next poll) and return.

        Completion: :attr:`state` becomes ``ESTABLISHED``, or :attr:`error`
        holds ECONNREFUSED / ETIMEDOUT / EHOSTUNREACH...
        """
        code = self._connect(addr)
        if code not in (0, errno.EINPROGRESS):
            raise _oserror(code)

    def connect_ex(self, addr: tuple[str, int]) -> int:
        """As :meth:`connect`, returning an errno (EINPROGRESS when the handshake started)."""
        try:
            return self._connect(addr)
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno

    def _connect(self, addr) -> int:
        self._check_open()
        ip, port = _parse_addr(addr, "connect", wildcard_ok=False)
        if self._listening:
            raise _oserror(errno.EISCONN, "socket is listening")
        conn = self._conn
        if conn is not None:
            if not self._connecting:
                raise _oserror(errno.EISCONN)
            # Linux __inet_stream_connect, SS_CONNECTING (see the module docstring).
            st = conn.state
            if st == State.SYN_SENT or st == State.SYN_RECEIVED:
                return errno.EALREADY
            self._connecting = False
            if st != State.CLOSED:
                return 0  # connected
            code, conn.error = conn.error, 0
            self._unconnect()  # a further connect() starts a new attempt
            return code or errno.ECONNABORTED
        if port == 0:
            raise _oserror(errno.ECONNREFUSED, "port 0")
        layer = self._layer
        layer._check_route(ip)
        lport = self._local_port or layer._ephemeral()
        self._conn = layer._connect(self, lport, ip, port)
        if self._port_locked:
            layer._bind_listener_port(self, lport)  # a bound port stays bound (SOCK_BINDPORT_LOCK)
        self._local_port = lport
        self._connecting = True
        return errno.EINPROGRESS

    def _unconnect(self) -> None:
        """The connection attempt ended (failed, or abandoned by shutdown): the socket is
        unconnected again.  A port picked by connect goes back (Linux ``tcp_set_state``
        puts the port of a socket without SOCK_BINDPORT_LOCK); a bound one stays."""
        self._conn = None
        self._connecting = False
        if not self._port_locked:
            self._local_port = 0

    @property
    def local(self) -> tuple[str, int]:
        """``getsockname()``: our address once connected, else the bound one."""
        ip = self._layer.local_ip if self._conn is not None else self._local_ip
        return ip_to_str(ip), self._local_port

    @property
    def remote(self) -> tuple[str, int]:
        """``getpeername()``; ENOTCONN when there is no peer."""
        conn = self._conn
        if conn is None:
            raise _oserror(errno.ENOTCONN)
        return ip_to_str(conn.remote_ip), conn.remote_port

    # -- data ------------------------------------------------------------------------------------

    def send(self, data) -> int:
        """Copy as much of ``data`` as fits into the send buffer; returns the count.

        RFC 9293 §3.10.2: in SYN-SENT and SYN-RECEIVED the data is queued
        for after the handshake.  BlockingIOError when the buffer is full,
        BrokenPipeError after shutdown(SHUT_WR), close of the peer's window
        for good (a reset), or when never connected.
        """
        self._check_open()
        data = _as_data(data)
        conn = self._conn
        if conn is None:
            raise _oserror(errno.EPIPE, "not connected")
        self._raise_pending()
        if conn.wr_shut or conn.state not in _CAN_SEND:
            raise _oserror(errno.EPIPE)
        if not len(data):
            return 0
        n = conn.app_send(data)
        if n == 0:
            raise _oserror(errno.EAGAIN, f"send buffer full ({conn.sndbuf_limit} bytes)")
        return n

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; b"" at end of stream; BlockingIOError when nothing is there yet."""
        self._check_open()
        if isinstance(bufsize, bool) or not isinstance(bufsize, int):
            raise TypeError(f"'{type(bufsize).__name__}' object cannot be interpreted as an integer")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        conn = self._recv_conn()
        data = conn.app_recv(bufsize) if bufsize else b""
        if data or bufsize == 0:
            return data
        self._recv_empty(conn)
        return b""

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        """As :meth:`recv`, into ``buffer`` (up to ``nbytes``, 0 meaning its length)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        conn = self._recv_conn()
        n = conn.app_recv_into(view) if len(view) else 0
        if n or not len(view):
            return n
        self._recv_empty(conn)
        return 0

    def _recv_conn(self) -> TcpConnection:
        conn = self._conn
        if conn is None or self._listening:
            raise _oserror(errno.ENOTCONN)
        if conn.readable_bytes == 0:
            self._raise_pending()
        return conn

    def _recv_empty(self, conn: TcpConnection) -> None:
        """Nothing to read: return (EOF) or raise BlockingIOError."""
        if conn.eof or conn.rd_shut or conn.state == State.CLOSED:
            return
        raise _oserror(errno.EAGAIN)

    # -- closing ---------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """SHUT_RD: recv returns b"" instead of waiting; SHUT_WR: a FIN after the queued data (half-close).

        As Linux's ``inet_shutdown``: a listener given SHUT_RD (or SHUT_RDWR)
        stops listening -- its queued connections are reset and it keeps its
        port, bound -- and ignores SHUT_WR; a socket in SYN-SENT abandons the
        attempt; an unconnected or closed one raises ENOTCONN.
        """
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _oserror(errno.EINVAL, f"how must be 0, 1 or 2, not {how!r}")
        if self._listening:
            if how != SHUT_WR:
                self._stop_listening()
                self._layer._bind_listener_port(self, self._local_port)
            return
        conn = self._conn
        if conn is not None and conn.state == State.SYN_SENT:
            conn.abort(self._layer.now)  # no RST in SYN-SENT (RFC 9293 §3.10.5)
            self._unconnect()
            return
        if conn is None or conn.state == State.CLOSED:
            raise _oserror(errno.ENOTCONN)
        now = self._layer.now
        if how in (SHUT_RD, SHUT_RDWR):
            # As Linux (RCV_SHUTDOWN): data queued and data arriving later are still read;
            # only a recv that finds nothing returns b"" at once instead of waiting.
            conn.rd_shut = True
            self._layer._note_readable(conn)
        if how in (SHUT_WR, SHUT_RDWR):
            conn.shutdown_write(now)

    def close(self) -> None:
        """Release the socket: an orderly close (FIN after the queued data), or RST when
        received data was left unread (RFC 1122 §4.2.2.13) or linger is (True, 0).

        The connection finishes its close on its own (FIN-WAIT, TIME-WAIT).
        A listener resets the connections in its queues, as Linux does.
        Idempotent.
        """
        if self.closed:
            return
        self.closed = True
        layer = self._layer
        if self._listening:
            self._stop_listening()
            return
        layer._unbind(self, self._local_port)
        conn = self._conn
        if conn is not None and conn.state != State.CLOSED:
            conn.app_close(layer.now)
            layer._mark(conn)

    def _stop_listening(self) -> None:
        """Leave LISTEN: give up the port and reset the connections in the queues, as Linux does."""
        layer = self._layer
        now = layer.now
        self._listening = False
        layer._unbind(self, self._local_port)
        for conn in list(self._syn_q) + list(self._accept_q):
            conn.abort(now)
            layer._mark(conn)
        self._syn_q.clear()
        self._accept_q.clear()

    def abort(self) -> None:
        """RFC 9293 §3.10.5 ABORT: RST to the peer, everything dropped; the socket is closed."""
        conn = self._conn
        if conn is not None and conn.state != State.CLOSED:
            conn.orphan = True
            conn.abort(self._layer.now)
        self.close()

    def __enter__(self) -> TcpSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The RFC 9293 state name ("ESTABLISHED", "SYN-SENT"...); "LISTEN" or "CLOSED" otherwise."""
        if self._listening:
            return "LISTEN"
        conn = self._conn
        return conn.state.label if conn is not None else "CLOSED"

    @property
    def error(self) -> int:
        """The pending error (SO_ERROR) without clearing it; 0 for none."""
        conn = self._conn
        return conn.error if conn is not None else 0

    def take_error(self) -> int:
        """``getsockopt(SO_ERROR)``: the pending error, cleared."""
        conn = self._conn
        if conn is None:
            return 0
        code, conn.error = conn.error, 0
        return code

    def _poll_settled(self) -> bool | None:
        """What readable and writable share (Linux ``tcp_poll``): True with no connection, a
        closed one or an error (the call fails at once); False during the handshake; None
        when the connection's buffers decide."""
        conn = self._conn
        if conn is None:
            return True
        st = conn.state
        if st is State.CLOSED or conn.error:
            return True
        if st is State.SYN_SENT or st is State.SYN_RECEIVED:
            return False
        return None

    @property
    def readable(self) -> bool:
        """Linux ``tcp_poll``'s POLLIN|POLLHUP|POLLERR: a queued connection (listener); data, EOF,
        SHUT_RD or an error; or no connection at all (recv fails at once).  Never in SYN-SENT."""
        if self._listening:
            return bool(self._accept_q)
        settled = self._poll_settled()
        if settled is not None:
            return settled
        conn = self._conn
        return conn.readable_bytes > 0 or conn.eof or conn.rd_shut

    @property
    def writable(self) -> bool:
        """Linux ``tcp_poll``'s POLLOUT|POLLERR: at least a third of the send buffer free
        (``sk_stream_is_writeable``), or a send that fails at once (an error, SHUT_WR, no
        connection).  Never for a listener, nor before the handshake completes."""
        if self._listening:
            return False
        settled = self._poll_settled()
        if settled is not None:
            return settled
        conn = self._conn
        st = conn.state
        return conn.wr_shut or st not in _CAN_SEND or 3 * conn.unsent_or_unacked <= 2 * conn.sndbuf_limit

    @property
    def connection(self) -> TcpConnection | None:
        """The TCB (for tests and status; not for applications)."""
        return self._conn

    # -- options ---------------------------------------------------------------------------------

    def _set_conn(self, name: str, value) -> None:
        if self._conn is not None:
            setattr(self._conn, name, value)

    @property
    def nodelay(self) -> bool:
        """TCP_NODELAY: no Nagle (RFC 9293 §3.7.4)."""
        return self._nodelay

    @nodelay.setter
    def nodelay(self, value: bool) -> None:
        self._nodelay = bool(value)
        self._set_conn("nodelay", self._nodelay)
        if self._conn is not None:
            self._layer._mark(self._conn)

    @property
    def keepalive(self) -> bool:
        """SO_KEEPALIVE (RFC 9293 §3.8.4; off by default, MUST-24)."""
        return self._keepalive

    @keepalive.setter
    def keepalive(self, value: bool) -> None:
        self._keepalive = bool(value)
        conn = self._conn
        if conn is not None:
            conn.keepalive = self._keepalive
            conn.rearm_keepalive(self._layer.now)

    def _timing(name: str, doc: str):  # noqa: N805 -- a property factory used in the class body
        attr = "_" + name

        def get(self):
            return getattr(self, attr)

        def set_(self, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
            setattr(self, attr, value)
            self._set_conn(name, value)
            if name != "user_timeout" and self._conn is not None:
                self._conn.rearm_keepalive(self._layer.now)

        return property(get, set_, doc=doc)

    keepidle = _timing("keepidle", "TCP_KEEPIDLE in µs (default 2 h, RFC 1122 §4.2.3.6).")
    keepintvl = _timing("keepintvl", "TCP_KEEPINTVL in µs.")
    keepcnt = _timing("keepcnt", "TCP_KEEPCNT: unanswered probes before the connection is dropped.")
    user_timeout = _timing("user_timeout", "TCP_USER_TIMEOUT in µs (RFC 5482; default 5 minutes).")
    del _timing

    def setsockopt(self, name: str, value) -> None:
        """``setsockopt`` by name: nodelay, keepalive, keepidle, keepintvl, keepcnt, user_timeout,
        rcvbuf, sndbuf (before connect/listen), linger ((on, seconds)), reuseaddr."""
        if name == "reuseaddr":
            self.reuseaddr = bool(value)
        elif name in ("nodelay", "keepalive", "keepidle", "keepintvl", "keepcnt", "user_timeout"):
            setattr(self, name, value)
        elif name in ("rcvbuf", "sndbuf"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1")
            if name == "rcvbuf" and value > (0xFFFF << 14):
                raise ValueError("rcvbuf exceeds the largest TCP window (RFC 7323 §2.3)")
            setattr(self, name, value)
            if name == "sndbuf" and self._conn is not None:
                self._conn.sndbuf_limit = value
        elif name == "linger":
            on, secs = value
            self.linger = (bool(on), int(secs))
            self._set_conn("linger", self.linger)
        else:
            raise _oserror(errno.ENOPROTOOPT, f"unknown option {name!r}")

    def getsockopt(self, name: str):
        if name == "error":
            return self.take_error()
        if name in ("nodelay", "keepalive", "keepidle", "keepintvl", "keepcnt", "user_timeout",
                    "rcvbuf", "sndbuf", "linger", "reuseaddr"):
            return getattr(self, name)
        raise _oserror(errno.ENOPROTOOPT, f"unknown option {name!r}")

    # -- misc --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise _oserror(errno.EBADF, "socket is closed")

    def _raise_pending(self) -> None:
        conn = self._conn
        if conn is not None and conn.error:
            code, conn.error = conn.error, 0
            raise _oserror(code)

    def info(self) -> dict:
        """The ``ss -ti`` row of this socket."""
        if self._conn is not None:
            return self._conn.info()
        return {"proto": "tcp", "state": self.state, "local": "%s:%d" % self.local, "remote": "*:*"}

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        row = self.info()
        return f"<TcpSocket {row['local']} -> {row['remote']} {row['state']}{' closed' if self.closed else ''}>"


__all__ = ["SHUT_RD", "SHUT_RDWR", "SHUT_WR", "TcpSocket"]
