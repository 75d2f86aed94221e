"""Blocking, thread-safe sockets over the sans-I/O stack: what ``pystack.socket`` is made of.

Owns the application's end of every TCP and UDP socket of a
:class:`~pystack.runtime.stack.Stack`: the :class:`Socket` class that
application threads call (the stdlib ``socket.socket`` API for AF_INET,
SOCK_STREAM and SOCK_DGRAM), the loop-side state of each socket
(:class:`_Core`), the registry that keeps every socket's readiness
descriptor up to date (:class:`SocketHub`, one per Stack, run by the loop as
a service), the module's default timeout, and ``create_connection`` /
``create_server``.  Protocol behaviour lives below, in
:class:`~pystack.transport.tcp.socket.TcpSocket` and
:class:`~pystack.transport.udp.UdpSocket`; this module adds threads,
waiting, timeouts and the Linux socket-call rules those do not carry.

Theory of operation
-------------------
*One owner.*  A TcpSocket, UdpSocket or TCB is only ever touched by the
Stack's loop thread.  Every call of an application thread is a *hand-off*:
the thread queues a small operation with ``Loop.call_soon`` (which wakes the
loop through its eventfd) and sleeps on a lock made for that call until the
loop ran the operation and stored its result or exception (``Stack._call``;
a call given up -- interrupted by a signal handler's exception -- either
never runs or has the sockets it made closed).  An operation never waits:
it returns a result, raises the errno Linux gives, or returns ``_AGAIN``
("would block").

*Readiness descriptor (decision).*  Each socket owns a
``socketpair(AF_UNIX, SOCK_STREAM)``: the application's end *A* is what
:meth:`Socket.fileno` returns, the loop keeps the other end *B*.  The loop
makes A

* readable by writing one byte into B, and unreadable by reading it back from A;
* unwritable by writing 2048 bytes from A (A's SO_SNDBUF is set to the
  minimum, 4608 bytes, and an AF_UNIX stream socket polls writable only
  while its unread bytes take at most a quarter of it: net/unix/af_unix.c
  ``unix_writable``), and writable again by draining B.

So every transition is one non-blocking syscall, A can be readable and
writable in all four combinations (an eventfd cannot be unwritable without
being readable, a pipe has two descriptors), and ``select``, ``poll``,
``selectors`` and asyncio's ``add_reader``/``add_writer`` see exactly what
Linux's ``tcp_poll``/``datagram_poll`` would report, mapped onto select's
sets: readable = POLLIN|POLLHUP|POLLERR, writable = POLLOUT|POLLERR.  The
sans-I/O sockets define it (``readable``/``writable`` of
:class:`~pystack.transport.tcp.socket.TcpSocket` and
:class:`~pystack.transport.udp.UdpSocket`); A only mirrors it:

====================  ============================  =================================
socket                readable                      writable
====================  ============================  =================================
TCP listening         accept queue not empty        never
TCP unconnected,      always (POLLHUP: recv fails   always (send fails at once:
closed or failed      at once: ENOTCONN / error)    EPIPE / error)
TCP SYN-SENT          no                            no
TCP connected         data, FIN received, SHUT_RD   free send buffer >= 1/3 of it
                                                    (``sk_stream_is_writeable``),
                                                    SHUT_WR, or the peer is gone
UDP                   a datagram or an ICMP error   queued sends < SO_SNDBUF
====================  ============================  =================================

*Only what changed is recomputed.*  The sans-I/O layers call hooks
(``_note_readable``/``_note_writable`` on TCP and UDP, ``_note_state`` on
TCP) which the hub replaces with methods that put the socket concerned in
a dirty set; the hub, a loop service, recomputes exactly those sockets once
per iteration (before the flush), and its ``poll_at`` asks the loop for
another iteration at once when timers run in the flush made a socket dirty.
An operation recomputes its own socket before its result is handed back,
so a thread that, say, read everything and then polls the descriptor sees it
unreadable.  The per-iteration cost does not depend on how many sockets sit
idle.

*Blocking calls* never spin: a blocking ``recv`` hands off, and on
``_AGAIN`` waits with ``poll(2)`` on A for the remaining timeout (in steps
poll's int of milliseconds can hold), then hands off again.  Timeouts
follow the stdlib exactly: None blocks, 0.0 raises BlockingIOError (EAGAIN;
EINPROGRESS for connect), a positive value raises ``TimeoutError("timed
out")`` -- per call, except ``sendall``, whose deadline covers the whole
call (as CPython's); a timeout too large for CPython's clock raises its
OverflowError at ``settimeout``.  A blocking TCP ``send`` (no timeout, no
MSG_DONTWAIT) returns only once all of its data is in the send buffer, as
Linux's ``tcp_sendmsg`` waits in ``sk_stream_wait_memory``; an error after
some progress returns the count and leaves the error for the next call.
With a timeout it sends what fits, as CPython's timeout sockets (non-blocking
descriptors underneath) do.

*Closing* (``close``, ``Stack.close``, or a socket collected unclosed): the
loop closes the sans-I/O socket (FIN, or RST as ``close`` would), closes B
-- which leaves A readable and writable (POLLHUP), so every thread blocked
on it wakes, hands off and gets EBADF -- and A itself is closed once no
thread waits on it and the loop no longer uses it (so a descriptor number
is never reused under a waiting thread).  SO_LINGER ``(1, t)`` makes
``close`` wait up to ``t`` seconds until the FIN is acknowledged, and
``(1, 0)`` sends a RST, as Linux's ``tcp_close`` (socket(7)).

*Linux rules kept here* (the sans-I/O sockets follow the RFCs where Linux
is stricter): ``send`` on a socket still in SYN-SENT waits for the
handshake (``sk_stream_wait_connect``) instead of queueing (RFC 9293
§3.10.2 allows both); ``getpeername`` is ENOTCONN in SYN-SENT and once
closed (``inet_getname``); a connect with a timeout leaves the socket
"connecting" as CPython's non-blocking connect + SO_ERROR does; SO_RCVBUF /
SO_SNDBUF are doubled, floored and capped as socket(7) says, and for TCP
the data buffer is half the reported value (Linux's default
``tcp_adv_win_scale``).

Deviations from Linux, deliberate: ``close`` (or ``Stack.close``) wakes a
thread blocked on the same socket with EBADF, where Linux would leave it
blocked until the connection itself ends; addresses are dotted quads only,
never resolved (a name raises ``gaierror`` EAI_NONAME without any query:
pystack has no resolver); the default SO_RCVBUF / SO_SNDBUF of a TCP socket
report twice the stack's buffers (256 KiB each by default), not Linux's
autotuned 131072 / 16384; SO_REUSEADDR has no effect on UDP ports (one
socket per port); SO_BROADCAST is accepted and not needed to send a
broadcast; options not listed in :meth:`Socket.setsockopt` raise
ENOPROTOOPT; recv flags other than MSG_PEEK and MSG_DONTWAIT raise
EOPNOTSUPP; there is no loopback (connecting to the Stack's own address is
ENETUNREACH).
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import math
import os
import select
import socket as _std
import struct
import threading
import time
import warnings

from pystack.transport.tcp.connection import _CAN_SEND, State
from pystack.transport.udp import _parse_addr, ip_to_str

log = logging.getLogger("pystack.runtime")

AF_INET = _std.AddressFamily.AF_INET
SOCK_STREAM = _std.SocketKind.SOCK_STREAM
SOCK_DGRAM = _std.SocketKind.SOCK_DGRAM
_TYPE_FLAGS = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_MSG_PEEK = _std.MSG_PEEK
_MSG_DONTWAIT = getattr(_std, "MSG_DONTWAIT", 0x40)

#: What an operation returns when it would block.
_AGAIN = object()
#: Bytes written from A to make it unwritable (see the module docstring).
_FILL = bytes(2048)

# Linux limits (socket(7); include/net/sock.h SOCK_MIN_RCVBUF / SOCK_MIN_SNDBUF on x86-64).
_MIN_RCVBUF = 2304
_MIN_SNDBUF = 4608
_LINGER = struct.Struct("ii")  # struct linger {int l_onoff; int l_linger;} (socket(7))
# tcp(7): TCP_KEEPIDLE / TCP_KEEPINTVL at most MAX_TCP_KEEPIDLE/INTVL, TCP_KEEPCNT at most MAX_TCP_KEEPCNT.
_MAX_KEEPIDLE = 32767
_MAX_KEEPCNT = 127
_US = 1_000_000
_LINGER_STATES = frozenset({State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK})
_SYN_STATES = (State.SYN_SENT, State.SYN_RECEIVED)
_SO_ACCEPTCONN = getattr(_std, "SO_ACCEPTCONN", 30)
_SO_PROTOCOL = getattr(_std, "SO_PROTOCOL", 38)
_SO_DOMAIN = getattr(_std, "SO_DOMAIN", 39)

#: CPython's socket timeouts are 64-bit counts of nanoseconds (``_PyTime_t``).
_NS_LIMIT = 1 << 63
#: poll(2) takes its timeout as an int of milliseconds: longer waits are made of such steps.
_POLL_MAX_MS = (1 << 31) - 1
_SEQ_MASK = 0xFFFFFFFF  # sequence number arithmetic (RFC 9293 §3.4)

_sysctl_cache: dict[str, int] = {}


def _sysctl_max(name: str) -> int:
    """net.core.rmem_max / wmem_max, which cap SO_RCVBUF / SO_SNDBUF (socket(7)); read once,
    Linux's default 212992 when unreadable."""
    value = _sysctl_cache.get(name)
    if value is None:
        try:
            with open(f"/proc/sys/net/core/{name}") as f:
                value = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            value = 212992
        _sysctl_cache[name] = value
    return value


def _err(code: int, detail: str = "") -> OSError:
    """OSError(code) -- Python picks the subclass -- with the C library's message."""
    message = os.strerror(code)
    return OSError(code, f"{message} ({detail})" if detail else message)


# -- the module's default timeout (socket.getdefaulttimeout's twin) -----------------------------

_default_timeout: float | None = None


def getdefaulttimeout() -> float | None:
    """The timeout new pystack sockets start with (None: blocking)."""
    return _default_timeout


def setdefaulttimeout(timeout) -> None:
    """Set the timeout new pystack sockets start with (the stdlib's own is not touched)."""
    global _default_timeout
    _default_timeout = _check_timeout(timeout)


def _check_timeout(value) -> float | None:
    """A timeout as CPython's ``socket_parse_timeout`` takes it: it must fit its clock, a 64-bit
    count of nanoseconds (OverflowError, with CPython's messages), and not be negative."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not -_NS_LIMIT <= value * 1_000_000_000 < _NS_LIMIT:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
    elif not isinstance(value, float):
        try:
            value = float(value.__float__())
        except AttributeError:
            raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer") from None
    value = float(value)
    if math.isnan(value):
        raise ValueError("Invalid value NaN (not a number)")
    if not -_NS_LIMIT <= value * 1e9 < _NS_LIMIT:
        raise OverflowError("timestamp out of range for platform time_t")
    if value < 0:
        raise ValueError("Timeout value out of range")
    return value


# -- loop side ---------------------------------------------------------------------------------


def _readiness_pair() -> tuple[int, int]:
    """A new readiness descriptor pair (A, B) (see the module docstring); OSError (EMFILE...)."""
    a, b = _std.socketpair(_std.AF_UNIX, _std.SOCK_STREAM | _TYPE_FLAGS)
    try:
        a.setsockopt(_std.SOL_SOCKET, _std.SO_SNDBUF, 1)  # the minimum: see the module docstring
    except BaseException:
        a.close()
        b.close()
        raise
    return a.detach(), b.detach()


class _Core:
    """One socket as the loop sees it.  Every field is the loop thread's, except ``a_fd``,
    ``waiters`` and ``app_done``, which application threads touch under ``lock`` (re-entrant: a
    signal handler may close a socket while its thread holds the lock)."""

    __slots__ = ("hub", "sock", "tcp", "a_fd", "b_fd", "r", "w", "closed", "lock", "waiters", "app_done",
                 "conn", "user_timeout_set", "rcvbuf_opt", "sndbuf_opt", "broadcast",
                 "reuse_udp", "linger_udp", "__weakref__")

    def __init__(self, hub: "SocketHub", sock, tcp: bool, fds: tuple[int, int]) -> None:
        self.hub = hub
        self.sock = sock
        self.tcp = tcp
        self.a_fd, self.b_fd = fds
        self.r = False  # what A shows now
        self.w = True
        self.closed = False  # B closed; the loop no longer touches A
        self.lock = threading.RLock()
        self.waiters = 0
        self.app_done = False  # the application is done with A: close it when nobody waits
        self.conn = None  # the TcpConnection registered in hub._by_conn
        self.user_timeout_set = 0  # TCP_USER_TIMEOUT as set (ms), 0: the default
        self.rcvbuf_opt = self.sndbuf_opt = None  # SO_RCVBUF / SO_SNDBUF as getsockopt reports them
        self.broadcast = False
        self.reuse_udp = False
        self.linger_udp = (False, 0)

    # -- readiness ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Make A show the socket's readiness (the module docstring's table; loop thread)."""
        if self.closed:
            return
        sock = self.sock
        r = sock.readable
        w = sock.writable
        try:
            if r != self.r:
                if r:
                    os.write(self.b_fd, b"\x01")
                else:
                    os.read(self.a_fd, 1)
                self.r = r
            if w != self.w:
                if w:
                    os.read(self.b_fd, 65536)
                else:
                    os.write(self.a_fd, _FILL)
                self.w = w
        except OSError:  # pragma: no cover - a full or broken pair would be a bug here
            log.exception("readiness update failed for %r", self.sock)

    def shut(self) -> None:
        """Close B (loop thread): A turns readable and writable for good, waking every waiter."""
        if not self.closed:
            self.closed = True
            os.close(self.b_fd)
            self.b_fd = -1

    # -- the application's end (any thread) -------------------------------------------------------

    def release_a(self) -> None:
        """Close A if the application is done with it, nobody waits on it and the loop let it go."""
        with self.lock:
            if self.app_done and self.closed and self.waiters == 0 and self.a_fd >= 0:
                fd, self.a_fd = self.a_fd, -1
                os.close(fd)


def cores_in(value) -> tuple:
    """The sockets in a hand-off's result: ``socket()`` returns a core, ``accept()`` a pair."""
    if isinstance(value, _Core):
        return (value,)
    if isinstance(value, tuple) and value and isinstance(value[0], _Core):
        return (value[0],)
    return ()


class SocketHub:
    """Every socket of one Stack, from the loop's side; a loop service (see the module docstring).

    Replaces the readiness hooks of ``iface.tcp`` and ``iface.udp`` with its
    own, which mark sockets dirty; :meth:`poll` brings their descriptors up
    to date and closes sockets whose application object was collected.
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.cores: set[_Core] = set()
        self._by_conn: dict = {}  # TcpConnection -> _Core
        self._by_sock: dict = {}  # listening TcpSocket / UdpSocket -> _Core
        self._dirty: dict[_Core, None] = {}
        self._lingering: dict = {}  # TcpConnection -> threading.Event (SO_LINGER close)
        self._draining: set = set()  # connections Stack.close waits for (close_all)
        self._drained: threading.Event | None = None
        self.orphans: list[_Core] = []  # appended from any thread (list.append is atomic)
        tcp, udp = iface.tcp, iface.udp
        tcp._note_readable = self._note_conn
        tcp._note_writable = self._note_conn
        tcp._note_state = self._note_state
        udp._note_readable = self._note_sock
        udp._note_writable = self._note_sock

    # -- hooks (loop thread, from inside the stack) ------------------------------------------------

    def _note_conn(self, conn) -> None:
        core = self._by_conn.get(conn)
        if core is not None:
            self._dirty[core] = None

    def _note_sock(self, sock) -> None:
        core = self._by_sock.get(sock)
        if core is not None:
            self._dirty[core] = None

    def _note_state(self, conn, old, new) -> None:
        core = self._by_conn.get(conn)
        if core is not None:
            self._dirty[core] = None
        lst = conn.listener  # a connection joining or leaving its listener's accept queue
        if lst is not None:
            core = self._by_sock.get(lst)
            if core is not None:
                self._dirty[core] = None
        if new not in _LINGER_STATES:
            if self._lingering:
                event = self._lingering.pop(conn, None)
                if event is not None:
                    event.set()
            draining = self._draining
            if draining and conn in draining:
                draining.discard(conn)
                if not draining:
                    self._drained.set()

    # -- service protocol (Loop) ---------------------------------------------------------------------

    def poll(self) -> None:
        orphans = self.orphans
        while orphans:
            core = orphans.pop()
            try:
                self.close_core(core)
            except Exception:  # pragma: no cover - closing never raises by design
                log.exception("closing a collected socket failed")
            core.release_a()
        dirty = self._dirty
        while dirty:
            cores = list(dirty)
            dirty.clear()
            for core in cores:
                core.sync()

    def poll_at(self) -> int | None:
        # Sockets made dirty during the flush (timers) are published at the next iteration, at once.
        return 0 if (self._dirty or self.orphans) else None

    # -- registry (loop thread) -----------------------------------------------------------------------

    def new_core(self, tcp: bool) -> _Core:
        fds = _readiness_pair()
        sock = self.iface.tcp.socket() if tcp else self.iface.udp.socket()
        core = _Core(self, sock, tcp, fds)
        self.cores.add(core)
        if not tcp:
            self._by_sock[sock] = core
        core.sync()
        return core

    def adopt(self, sock, fds: tuple[int, int]) -> _Core:
        """A core for ``sock``, a connection accept() returned, with its readiness pair ``fds``."""
        core = _Core(self, sock, True, fds)
        self.cores.add(core)
        self.track_conn(core)
        core.sync()
        return core

    def dispose(self, value) -> None:
        """Close the sockets in a hand-off's result that nobody will read (its caller gave up)."""
        for core in cores_in(value):
            core.app_done = True
            self.close_core(core)
            core.release_a()

    def track_conn(self, core: _Core) -> None:
        """Keep ``_by_conn`` in step with the core's TcpSocket (after connect, accept, shutdown)."""
        conn = core.sock._conn
        if conn is not core.conn:
            if core.conn is not None and self._by_conn.get(core.conn) is core:
                del self._by_conn[core.conn]
            core.conn = conn
            if conn is not None:
                self._by_conn[conn] = core

    def track_listener(self, core: _Core) -> None:
        if core.sock._listening:
            self._by_sock[core.sock] = core
        else:
            self._by_sock.pop(core.sock, None)

    def close_core(self, core: _Core, linger: bool = False):
        """Close ``core``'s socket as ``close()`` does; returns (event, seconds) when SO_LINGER
        asks the caller to wait for the FIN's acknowledgement, else None."""
        if core.closed:
            return None
        sock = core.sock
        wait = None
        try:
            sock.close()
        finally:
            conn = core.conn if core.tcp else None
            if core.tcp:
                on, secs = sock.linger
                if linger and on and secs > 0 and conn is not None and conn.state in _LINGER_STATES:
                    event = threading.Event()
                    self._lingering[conn] = event
                    wait = (event, secs)
                if conn is not None and self._by_conn.get(conn) is core:
                    del self._by_conn[conn]
                core.conn = None
            self._by_sock.pop(sock, None)
            self._dirty.pop(core, None)
            self.cores.discard(core)
            core.shut()
        return wait

    def close_all(self) -> threading.Event | None:
        """Close every socket (Stack.close), as each one's close() would, without lingering.

        The application's ends (A) stay open, readable and writable, until the
        application closes its socket objects (or they are collected): a
        selector or an asyncio loop waiting on A must see the event, and its
        next call gets EBADF -- closing A under it would leave it waiting.
        Returns an event set once every connection still delivering its data
        or FIN (those closed now and earlier) is done, or None if none is.
        """
        for core in list(self.cores):
            try:
                self.close_core(core)
            except Exception:
                log.exception("closing %r failed", core.sock)
        for event in self._lingering.values():
            event.set()
        self._lingering.clear()
        self._draining = {conn for conn in self.iface.tcp.connections() if conn.state in _LINGER_STATES}
        if not self._draining:
            return None
        self._drained = threading.Event()
        return self._drained

    def reset_undrained(self) -> None:
        """Reset every connection still holding unsent data or waiting for its FIN's ACK (the end
        of Stack.close's drain): the peer learns the connection is gone (stack module docstring).

        The RST carries the sequence number Linux's ``tcp_acceptable_seq`` picks (SND.NXT, or
        the right edge of the peer's window if SND.NXT is past it, as after a zero-window
        probe), so that a peer applying RFC 5961 §3.2 takes it.  Deviation: RFC 9293 §3.10.5
        ABORT sends no RST in CLOSING or LAST-ACK; here it does, since a peer whose FIN we
        acknowledged may still wait for our data or FIN forever.
        """
        tcp = self.iface.tcp
        now = tcp.now
        resets = 0
        for conn in tcp.connections():
            if conn.state in _LINGER_STATES:
                edge = (conn.snd_una + conn.snd_wnd) & _SEQ_MASK
                past = 0 < ((conn.snd_nxt - edge) & _SEQ_MASK) < 1 << 31
                tcp._emit_rst(conn, edge if past else conn.snd_nxt)
                conn._set_state(State.CLOSED, now)  # abort() without its own RST (seq SND.MAX)
                resets += 1
        self._draining.clear()
        if resets:
            log.info("reset %d connection(s) still delivering data or FIN at close", resets)

    def abandon(self) -> None:
        """The loop is gone: wake every waiter (their calls fail), touch no stack state."""
        for core in list(self.cores):
            core.shut()
        for event in self._lingering.values():
            event.set()
        if self._drained is not None:
            self._drained.set()
        self.release_orphans()

    def release_orphans(self) -> None:
        """Close the application's end of every collected socket (after the loop's end; any thread)."""
        orphans = self.orphans
        while True:
            try:
                core = orphans.pop()
            except IndexError:
                return
            core.release_a()


# -- application side --------------------------------------------------------------------------


def _resolve_stack(stack):
    if stack is not None:
        return stack
    from pystack.runtime.stack import Stack

    return Stack.default()


def _buffer(data, writable: bool = False, what: str = "") -> memoryview:
    """The caller's buffer as one flat byte view, for a ``with`` block: released when the call
    ends, also when it raises -- the exception (kept by asyncio's ``except`` blocks) must not
    keep a bytearray exported, or the caller could no longer resize it (CPython's socket
    releases its Py_buffer before raising, too).  Pieces of it are cut only in the loop thread,
    whose frames ``Stack._call`` clears before it raises."""
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if writable and view.readonly:
        view.release()
        raise TypeError(f"{what}() argument 'buffer' must be read-write bytes-like object, not "
                        f"{type(data).__name__}")
    if view.format != "B" or view.ndim != 1:
        with view:  # the cast holds the buffer itself, not this view
            return view.cast("B")
    return view


def _int_value(value, optlen) -> tuple[int | None, bytes | None]:
    """setsockopt's value: (int, None) or (None, raw bytes), with the stdlib's TypeErrors."""
    if optlen is not None:
        if value is not None:
            raise TypeError("setsockopt() takes a value or (None, optlen), not both")
        return None, bytes(optlen)
    if isinstance(value, int):
        if not -(1 << 31) <= value < (1 << 31):
            raise OverflowError("signed integer is greater than maximum" if value > 0
                                else "signed integer is less than minimum")
        return int(value), None
    if isinstance(value, str) or value is None:
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'")
    try:
        return None, bytes(memoryview(value))
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'") from None


def _as_int_opt(ival, raw) -> int:
    if ival is not None:
        return ival
    if len(raw) < 4:
        raise _err(errno.EINVAL)  # optlen < sizeof(int)
    return int.from_bytes(raw[:4], "little", signed=True)


class Socket:
    """A pystack socket with the stdlib ``socket.socket`` API (see the module docstring).

    ``stack=None`` means :meth:`pystack.Stack.default`.  Family AF_INET;
    type SOCK_STREAM (TCP) or SOCK_DGRAM (UDP), optionally or-ed with
    SOCK_NONBLOCK / SOCK_CLOEXEC as on Linux; ``proto`` 0 or the type's own.
    """

    __slots__ = ("_stack", "_core", "_family", "_type", "_proto", "_timeout", "_closed", "_io_refs", "__weakref__")

    def __init__(self, family=AF_INET, type=SOCK_STREAM, proto=0, fileno=None, *, stack=None) -> None:
        self._core = None
        self._closed = True
        if fileno is not None:
            raise ValueError("pystack sockets cannot wrap a file descriptor (fileno= must be None)")
        if family == -1:
            family = AF_INET
        if isinstance(family, bool) or not isinstance(family, int):
            raise TypeError(f"'{builtins.type(family).__name__}' object cannot be interpreted as an integer")
        if family != AF_INET:
            raise _err(errno.EAFNOSUPPORT, "pystack speaks IPv4 only")
        if type == -1:
            type = SOCK_STREAM
        if isinstance(type, bool) or not isinstance(type, int):
            raise TypeError(f"'{builtins.type(type).__name__}' object cannot be interpreted as an integer")
        nonblock = bool(type & getattr(_std, "SOCK_NONBLOCK", 0))
        kind = type & ~_TYPE_FLAGS
        if kind not in (SOCK_STREAM, SOCK_DGRAM):
            raise _err(errno.ESOCKTNOSUPPORT, "pystack has SOCK_STREAM and SOCK_DGRAM")
        if proto == -1:
            proto = 0
        own = _std.IPPROTO_TCP if kind == SOCK_STREAM else _std.IPPROTO_UDP
        if proto not in (0, own):
            raise _err(errno.EPROTONOSUPPORT)
        stack = _resolve_stack(stack)
        core = stack._call(stack._hub.new_core, kind == SOCK_STREAM)
        self._init(stack, core, _std.SocketKind(kind), proto, 0.0 if nonblock else _default_timeout)

    def _init(self, stack, core, kind, proto, timeout) -> None:
        self._stack = stack
        self._core = core
        self._family = AF_INET
        self._type = kind
        self._proto = proto
        self._timeout = timeout
        self._closed = False
        self._io_refs = 0

    @classmethod
    def _wrap(cls, stack, core, kind, proto) -> "Socket":
        obj = cls.__new__(cls)
        obj._init(stack, core, kind, proto, _default_timeout)
        return obj

    # -- attributes ----------------------------------------------------------------------------

    @property
    def family(self):
        return self._family

    @property
    def type(self):
        return self._type

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def stack(self):
        """The :class:`~pystack.runtime.stack.Stack` this socket lives on."""
        return self._stack

    def fileno(self) -> int:
        """The readiness descriptor (see the module docstring); -1 once closed.

        After :meth:`Stack.close` it stays valid (readable and writable, every
        call failing with EBADF) until this socket is closed, so a selector
        waiting on it wakes up.
        """
        core = self._core
        return core.a_fd if core is not None and not core.app_done else -1

    def __repr__(self) -> str:
        closed = self._closed
        text = (f"<{type(self).__module__}.{type(self).__qualname__}{' [closed]' if closed else ''} "
                f"fd={self.fileno()}, family={int(self._family)}, type={int(self._type)}, proto={self._proto}")
        if not closed:
            try:
                laddr = self.getsockname()
                if laddr:
                    text += f", laddr={laddr}"
            except OSError:
                pass
            try:
                raddr = self.getpeername()
                if raddr:
                    text += f", raddr={raddr}"
            except OSError:
                pass
        return text + ">"

    def __getstate__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    # -- the mechanism: hand-offs and waits ------------------------------------------------------

    def _live(self) -> _Core:
        core = self._core
        if core is None or core.app_done:
            raise _err(errno.EBADF)
        return core

    def _call(self, fn, *args):
        return self._stack._call(_invoke, fn, *args)

    def _run(self, fn, args, events: int, timeout, what: str = "", deadline=None):
        """Hand ``fn(core, *args)`` off until it stops returning _AGAIN, waiting on A between tries."""
        core = self._live()
        if deadline is None and timeout:
            deadline = time.monotonic() + timeout
        call = self._stack._call
        while True:
            result = call(_invoke, fn, core, *args)
            if result is not _AGAIN:
                return result
            if timeout == 0.0:
                if what == "connect":
                    raise _err(errno.EINPROGRESS)
                raise _err(errno.EAGAIN)
            if not self._wait(core, events, deadline):
                raise TimeoutError("timed out")

    def _wait(self, core: _Core, events: int, deadline) -> bool:
        """Poll A for ``events`` until ``deadline`` (None: forever); False when it passed."""
        if self._stack._in_loop_thread():
            raise RuntimeError("a blocking pystack socket call in the stack's own loop thread would wait forever")
        with core.lock:
            core.waiters += 1  # A stays open while we wait on it
        try:
            fd = core.a_fd
            if fd < 0:
                raise _err(errno.EBADF)
            p = select.poll()
            p.register(fd, events)
            if deadline is None:
                return bool(p.poll())
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return bool(p.poll(0))
                ms = math.ceil(left * 1000)
                if p.poll(min(ms, _POLL_MAX_MS)):
                    return True
                if ms <= _POLL_MAX_MS:
                    return False
        finally:
            with core.lock:
                core.waiters -= 1
            core.release_a()

    def _flags_timeout(self, flags: int, allowed: int):
        if isinstance(flags, bool) or not isinstance(flags, int):
            raise TypeError(f"'{type(flags).__name__}' object cannot be interpreted as an integer")
        if flags & ~allowed:
            raise _err(errno.EOPNOTSUPP, f"pystack does not support flags {flags:#x}")
        return 0.0 if flags & _MSG_DONTWAIT else self._timeout

    # -- timeouts ------------------------------------------------------------------------------

    def settimeout(self, value) -> None:
        value = _check_timeout(value)
        self._live()
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._live()
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # -- addresses and connections -------------------------------------------------------------

    def bind(self, address) -> None:
        self._call(_op_bind, self._live(), address)

    def listen(self, backlog: int | None = None) -> None:
        if backlog is None:
            backlog = min(_std.SOMAXCONN, 128)  # CPython's default
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"'{type(backlog).__name__}' object cannot be interpreted as an integer")
        self._call(_op_listen, self._live(), max(backlog, 0))

    def accept(self):
        """A new socket for the oldest queued connection and the peer's address."""
        core, addr = self._run(_op_accept, (), _POLLIN, self._timeout)
        return type(self)._wrap(self._stack, core, self._type, self._proto), addr

    def _accept(self):  # asyncio and socketserver call accept(); _accept is the stdlib's low-level name
        return self.accept()

    def connect(self, address) -> None:
        code = self._connect(address)
        if code:
            raise _err(code)

    def connect_ex(self, address) -> int:
        """As :meth:`connect`, returning the errno instead of raising it (0 on success)."""
        try:
            return self._connect(address)
        except TimeoutError:
            return errno.EAGAIN  # CPython: SOCK_TIMEOUT_ERR (EWOULDBLOCK) for a timed-out connect
        except _std.gaierror:
            raise
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno

    def _connect(self, address) -> int:
        core = self._live()
        code = self._call(_op_connect, core, address)
        if code != errno.EINPROGRESS or not core.tcp:
            return code
        if self._timeout == 0.0:
            return errno.EINPROGRESS
        # Wait until writable (connected or failed).  As CPython on Linux: a blocking socket's
        # connect(2) completes in the kernel, which then counts the socket connected -- here the
        # second connect() of __inet_stream_connect reports the outcome; with a timeout, CPython
        # connects without blocking and reads SO_ERROR, so the socket stays "connecting" (a later
        # connect() returns 0, and only the one after raises EISCONN).
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        op = _op_connect if self._timeout is None else _op_connect_error
        while True:
            if not self._wait(core, _POLLOUT, deadline):
                raise TimeoutError("timed out")
            code = self._call(op, core, address)
            if code != errno.EALREADY:
                return code

    def getsockname(self):
        return self._call(_op_getsockname, self._live())

    def getpeername(self):
        return self._call(_op_getpeername, self._live())

    # -- data --------------------------------------------------------------------------------------

    def send(self, data, flags: int = 0) -> int:
        with _buffer(data) as view:
            return self._send(view, self._flags_timeout(flags, _MSG_DONTWAIT))

    def _send(self, view: memoryview, timeout) -> int:
        if timeout is None and self._type == SOCK_STREAM:
            # Blocking TCP: all of it, as Linux's tcp_sendmsg (see the module docstring).
            return self._send_from(view, None, None, partial=True)
        return self._run(_op_send, (view, 0, False), _POLLOUT, timeout)

    def _send_from(self, view: memoryview, timeout, deadline, partial: bool) -> int:
        """Send all of ``view``, waiting for room.  ``partial``: an error after some progress
        returns the count sent (the error waits for the next call), else it is raised."""
        total = len(view)
        sent = self._run(_op_send, (view, 0, False), _POLLOUT, timeout, deadline=deadline)
        while sent < total:
            n = self._run(_op_send, (view, sent, partial), _POLLOUT, timeout, deadline=deadline)
            if not n:
                break
            sent += n
        return sent

    def sendall(self, data, flags: int = 0) -> None:
        with _buffer(data) as view:
            timeout = self._flags_timeout(flags, _MSG_DONTWAIT)
            deadline = time.monotonic() + timeout if timeout else None
            self._send_from(view, timeout, deadline, partial=False)

    def sendto(self, data, flags_or_address, address=None) -> int:
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = flags_or_address
        with _buffer(data) as view:
            timeout = self._flags_timeout(flags, _MSG_DONTWAIT)
            if self._type == SOCK_STREAM:
                _parse_addr(address, "sendto", wildcard_ok=False)  # checked, then ignored (Linux TCP)
                return self._send(view, timeout)
            return self._run(_op_sendto, (view, address), _POLLOUT, timeout)

    def sendmsg(self, buffers, ancdata=(), flags: int = 0, address=None) -> int:
        """The buffers as one message (no ancillary data: pystack has none to carry)."""
        if ancdata:
            raise _err(errno.EOPNOTSUPP, "pystack sockets carry no ancillary data")
        parts = list(buffers)
        try:
            data = b"".join(parts)
        except TypeError:
            for part in parts:
                _buffer(part).release()  # the stdlib's TypeError for the first one that is not bytes-like
            raise
        if address is not None:
            return self.sendto(data, flags, address)
        return self.send(data, flags)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        """Send a binary file's bytes with :meth:`sendall` (as the stdlib does where it cannot
        sendfile(2)), with the stdlib's checks: a non-blocking socket is a ValueError."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if self._type != SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self._timeout == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(min(65536, count - total) if count is not None else 65536)
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        if total and hasattr(file, "seek"):
            file.seek(offset + total)
        return total

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        timeout = self._flags_timeout(flags, _MSG_DONTWAIT | _MSG_PEEK)
        _check_bufsize(bufsize, "recv")
        return self._run(_op_recv, (bufsize, flags & _MSG_PEEK), _POLLIN, timeout)[0]

    def recvfrom(self, bufsize: int, flags: int = 0):
        timeout = self._flags_timeout(flags, _MSG_DONTWAIT | _MSG_PEEK)
        _check_bufsize(bufsize, "recvfrom")
        return self._run(_op_recv, (bufsize, flags & _MSG_PEEK), _POLLIN, timeout)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self._recv_into(buffer, nbytes, flags, "recv_into")[0]

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0):
        return self._recv_into(buffer, nbytes, flags, "recvfrom_into")

    def _recv_into(self, buffer, nbytes, flags, what):
        timeout = self._flags_timeout(flags, _MSG_DONTWAIT | _MSG_PEEK)
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"'{type(nbytes).__name__}' object cannot be interpreted as an integer")
        with _buffer(buffer, True, what) as view:
            if nbytes < 0:
                raise ValueError(f"negative buffersize in {what}")
            if nbytes > len(view):
                raise ValueError("buffer too small for requested bytes" if what == "recv_into"
                                 else "nbytes is greater than the length of the buffer")
            return self._run(_op_recv_into, (view, nbytes, flags & _MSG_PEEK), _POLLIN, timeout)

    # -- closing -------------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        if isinstance(how, bool) or not isinstance(how, int):
            raise TypeError(f"'{type(how).__name__}' object cannot be interpreted as an integer")
        self._call(_op_shutdown, self._live(), how)

    def close(self) -> None:
        """Close the socket (deferred while makefile() objects are open, as the stdlib does)."""
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        core = self._core
        if core is None or core.app_done:
            return
        try:
            wait = self._stack._call(_op_close, core)
        except BaseException as exc:
            # Interrupted, or the stack is closing or gone: the loop closes the socket (if it
            # has not already) and then A -- at once when the loop has ended.
            core.app_done = True
            self._stack._orphan(core)
            if isinstance(exc, OSError):
                return
            raise
        core.app_done = True
        core.release_a()
        if wait is not None and not self._stack._in_loop_thread():
            # SO_LINGER (1, t): wait up to t seconds for the FIN's acknowledgement (socket(7)).
            event, secs = wait
            event.wait(secs)

    def detach(self):
        """Unsupported: a pystack socket has no kernel descriptor to hand over."""
        raise io.UnsupportedOperation("pystack sockets have no kernel file descriptor to detach")

    def dup(self):
        raise io.UnsupportedOperation("pystack sockets cannot be duplicated")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None or core.app_done:
            return
        try:
            warnings.warn(f"unclosed pystack socket fd={core.a_fd}", ResourceWarning, source=self)
        except Exception:
            pass
        core.app_done = True
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack._orphan(core)  # closed by the loop (never a hand-off from a finalizer)

    # -- makefile (the stdlib's semantics over socket.SocketIO) ------------------------------------

    def makefile(self, mode: str = "r", buffering=None, *, encoding=None, errors=None, newline=None):
        """A file object over the socket; the socket stays open until it and every file is closed."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = _std.SocketIO(self, ("r" if reading else "") + ("w" if writing else ""))
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        binary = "b" in mode
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline)
        text.mode = mode
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    # -- options -------------------------------------------------------------------------------------

    def setsockopt(self, level: int, optname: int, value, optlen: int | None = None) -> None:
        """Set an option, with Linux's values, ranges and errno (socket(7), tcp(7)).

        SOL_SOCKET: SO_REUSEADDR, SO_KEEPALIVE, SO_BROADCAST, SO_RCVBUF,
        SO_SNDBUF, SO_LINGER (a ``struct linger``: 8 bytes; an int is
        EINVAL); IPPROTO_TCP on TCP sockets: TCP_NODELAY, TCP_KEEPIDLE and
        TCP_KEEPINTVL (1..32767 s), TCP_KEEPCNT (1..127), TCP_USER_TIMEOUT
        (ms, 0 for the default).  :meth:`getsockopt` also reads SO_ERROR
        (clearing it), SO_TYPE, SO_ACCEPTCONN, SO_PROTOCOL and SO_DOMAIN.
        Anything else: ENOPROTOOPT.
        """
        ival, raw = _int_value(value, optlen)
        self._call(_op_setsockopt, self._live(), level, optname, ival, raw)

    def getsockopt(self, level: int, optname: int, buflen: int = 0):
        if isinstance(buflen, bool) or not isinstance(buflen, int):
            raise TypeError(f"'{type(buflen).__name__}' object cannot be interpreted as an integer")
        if buflen < 0 or buflen > 1024:
            raise _err(errno.EINVAL, "getsockopt buflen out of range")
        raw = self._call(_op_getsockopt, self._live(), level, optname)
        if buflen == 0:
            return int.from_bytes(raw[:4], "little", signed=True)
        return raw[:buflen]


def _check_bufsize(bufsize, what: str) -> None:
    if isinstance(bufsize, bool) or not isinstance(bufsize, int):
        raise TypeError(f"'{type(bufsize).__name__}' object cannot be interpreted as an integer")
    if bufsize < 0:
        raise ValueError(f"negative buffersize in {what}")


# -- operations: run in the loop thread, never wait ------------------------------------------------


def _invoke(fn, core: _Core, *args):
    """Run operation ``fn`` and publish the socket's readiness before the caller sees the
    outcome, whatever it is (an error may have been taken, data read, a state changed)."""
    try:
        return fn(core, *args)
    finally:
        core.sync()


def _op_close(core: _Core):
    return core.hub.close_core(core, True)


def _check(core: _Core) -> None:
    if core.closed:
        raise _err(errno.EBADF)


def _op_bind(core: _Core, address) -> None:
    _check(core)
    core.sock.bind(address)


def _op_listen(core: _Core, backlog: int) -> None:
    _check(core)
    if not core.tcp:
        raise _err(errno.EOPNOTSUPP)
    core.sock.listen(backlog)
    core.hub.track_listener(core)
    return None


def _op_accept(core: _Core):
    _check(core)
    sock = core.sock
    if not core.tcp:
        raise _err(errno.EOPNOTSUPP)
    if not sock._listening:
        raise _err(errno.EINVAL)
    if not sock._accept_q:
        return _AGAIN
    # The descriptors first, as Linux's accept4 takes the fd before the connection: under
    # EMFILE the call fails and the connection stays queued.
    fds = _readiness_pair()
    try:
        child, addr = sock.accept()
    except BaseException:  # pragma: no cover - checked above
        os.close(fds[0])
        os.close(fds[1])
        raise
    return core.hub.adopt(child, fds), addr


def _op_connect(core: _Core, address) -> int:
    _check(core)
    sock = core.sock
    if not core.tcp:
        sock.connect(address)
        return 0
    try:
        code = sock._connect(address)
    finally:
        core.hub.track_conn(core)
    return code


def _op_connect_error(core: _Core, address) -> int:
    """After a connect with a timeout: EALREADY while the handshake runs, else SO_ERROR."""
    _check(core)
    conn = core.sock._conn
    if conn is not None and conn.state in _SYN_STATES:
        return errno.EALREADY
    return core.sock.take_error()


def _op_getsockname(core: _Core):
    _check(core)
    return core.sock.local if core.tcp else core.sock.getsockname()


def _op_getpeername(core: _Core):
    _check(core)
    sock = core.sock
    if core.tcp:
        conn = sock._conn
        if sock._listening or conn is None or conn.state is State.CLOSED or conn.state is State.SYN_SENT:
            raise _err(errno.ENOTCONN)  # Linux inet_getname: no peer in CLOSE or SYN-SENT
        return sock.remote
    return sock.getpeername()


def _op_send(core: _Core, view, start: int, partial: bool):
    """Send ``view[start:]``.  ``partial`` (a blocking send already sent some): 0 where it would
    raise, so the error stays for the next call (Linux tcp_sendmsg returns what it copied)."""
    _check(core)
    sock = core.sock
    if core.tcp:
        conn = sock._conn
        if conn is not None and conn.state in _SYN_STATES and not conn.error and not conn.wr_shut:
            return _AGAIN  # Linux waits for the handshake (sk_stream_wait_connect)
        if sock._listening:
            raise _err(errno.EPIPE)
        if partial and (conn is None or conn.error or conn.wr_shut or conn.state not in _CAN_SEND):
            return 0
    try:
        return sock.send(view[start:] if start else view)
    except BlockingIOError:
        return _AGAIN


def _op_sendto(core: _Core, view, address):
    _check(core)
    try:
        n = core.sock.sendto(view, address)
    except BlockingIOError:
        return _AGAIN
    return n


def _op_recv(core: _Core, bufsize: int, peek: int):
    """(data, address): address None for TCP, as Linux gives no address for a stream."""
    _check(core)
    sock = core.sock
    if core.tcp:
        if sock._listening:
            raise _err(errno.ENOTCONN)
        conn = sock._conn
        if peek and conn is not None and conn.readable_bytes and bufsize:
            return bytes(conn.asm.peek()[:bufsize]), None
        try:
            data = sock.recv(bufsize)
        except BlockingIOError:
            return _AGAIN
        return (data, None)
    if peek and sock._rxq and not sock._error:
        data, ip, port = sock._rxq[0]
        return data[:bufsize], (ip_to_str(ip), port)
    try:
        data, addr = sock.recvfrom(bufsize)
    except BlockingIOError:
        return _AGAIN
    return (data, addr)


def _op_recv_into(core: _Core, view, nbytes: int, peek: int):
    _check(core)
    sock = core.sock
    if nbytes:
        view = view[:nbytes]
    if core.tcp:
        if peek:
            result = _op_recv(core, len(view), peek)
            if result is _AGAIN:
                return result
            data = result[0]
            view[:len(data)] = data
            return len(data), None
        if sock._listening:
            raise _err(errno.ENOTCONN)
        try:
            n = sock.recv_into(view)
        except BlockingIOError:
            return _AGAIN
        return (n, None)
    result = _op_recv(core, 65535, peek)
    if result is _AGAIN:
        return result
    data, addr = result
    n = min(len(data), len(view))
    view[:n] = data[:n]
    return n, addr


def _op_shutdown(core: _Core, how: int) -> None:
    _check(core)
    try:
        core.sock.shutdown(how)
    finally:
        if core.tcp:
            core.hub.track_conn(core)
            core.hub.track_listener(core)


def _bool(v: int) -> int:
    return 1 if v else 0


def _op_setsockopt(core: _Core, level: int, name: int, ival, raw) -> None:
    _check(core)
    sock = core.sock
    if level == _std.SOL_SOCKET:
        if name == _std.SO_LINGER:
            if raw is None or len(raw) < _LINGER.size:
                raise _err(errno.EINVAL, "SO_LINGER takes a struct linger (8 bytes)")
            on, secs = _LINGER.unpack_from(raw)
            old = sock.linger if core.tcp else core.linger_udp
            # sock_setsockopt: l_onoff 0 turns lingering off and keeps the stored time.
            value = (True, max(secs, 0)) if on else (False, old[1])
            if core.tcp:
                sock.setsockopt("linger", value)
            else:
                core.linger_udp = value  # kept for getsockopt only
            return None
        v = _as_int_opt(ival, raw)
        if name == _std.SO_REUSEADDR:
            if core.tcp:
                sock.reuseaddr = bool(v)
            else:
                core.reuse_udp = bool(v)
        elif name == _std.SO_KEEPALIVE:
            if core.tcp:
                sock.keepalive = bool(v)
        elif name == _std.SO_BROADCAST:
            core.broadcast = bool(v)
        elif name in (_std.SO_RCVBUF, _std.SO_SNDBUF):
            # socket(7): the kernel doubles the value (room for bookkeeping), capped by
            # net.core.rmem_max / wmem_max, with a floor; getsockopt returns the doubled value.
            rcv = name == _std.SO_RCVBUF
            cap = _sysctl_max("rmem_max" if rcv else "wmem_max")
            v = min(v & 0xFFFFFFFF, cap)
            reported = max(v * 2, _MIN_RCVBUF if rcv else _MIN_SNDBUF)
            if core.tcp:
                # TCP's data buffer is half of it, as Linux's default tcp_adv_win_scale makes it.
                sock.setsockopt("rcvbuf" if rcv else "sndbuf", reported // 2)
            elif rcv:
                sock.rcvbuf = reported
            else:
                sock.sndbuf = reported
            if rcv:
                core.rcvbuf_opt = reported
            else:
                core.sndbuf_opt = reported
        else:
            raise _err(errno.ENOPROTOOPT)
        return None
    if level == _std.IPPROTO_TCP and core.tcp:
        v = _as_int_opt(ival, raw)
        if name == _std.TCP_NODELAY:
            sock.nodelay = bool(v)
        elif name in (_std.TCP_KEEPIDLE, _std.TCP_KEEPINTVL):
            if not 1 <= v <= _MAX_KEEPIDLE:
                raise _err(errno.EINVAL)
            sock.setsockopt("keepidle" if name == _std.TCP_KEEPIDLE else "keepintvl", v * _US)
        elif name == _std.TCP_KEEPCNT:
            if not 1 <= v <= _MAX_KEEPCNT:
                raise _err(errno.EINVAL)
            sock.keepcnt = v
        elif name == getattr(_std, "TCP_USER_TIMEOUT", 18):
            if v < 0:
                raise _err(errno.EINVAL)
            # tcp(7): milliseconds; 0 restores the system default.
            sock.user_timeout = v * 1000 if v else sock._layer.config.user_timeout
            core.user_timeout_set = v
        else:
            raise _err(errno.ENOPROTOOPT)
        return None
    raise _err(errno.ENOPROTOOPT)


def _op_getsockopt(core: _Core, level: int, name: int) -> bytes:
    _check(core)
    sock = core.sock
    tcp = core.tcp
    v = None
    if level == _std.SOL_SOCKET:
        if name == _std.SO_LINGER:
            on, secs = sock.linger if tcp else core.linger_udp
            return _LINGER.pack(_bool(on), secs)
        if name == _std.SO_REUSEADDR:
            v = _bool(sock.reuseaddr if tcp else core.reuse_udp)
        elif name == _std.SO_KEEPALIVE:
            v = _bool(sock.keepalive) if tcp else 0
        elif name == _std.SO_BROADCAST:
            v = _bool(core.broadcast)
        elif name == _std.SO_RCVBUF:
            v = core.rcvbuf_opt if core.rcvbuf_opt is not None else (2 * sock.rcvbuf if tcp else sock.rcvbuf)
        elif name == _std.SO_SNDBUF:
            v = core.sndbuf_opt if core.sndbuf_opt is not None else (2 * sock.sndbuf if tcp else sock.sndbuf)
        elif name == _std.SO_ERROR:
            if tcp:
                v = sock.take_error()
            else:
                v, sock._error = sock._error, 0
        elif name == _std.SO_TYPE:
            v = int(SOCK_STREAM if tcp else SOCK_DGRAM)
        elif name == _SO_ACCEPTCONN:
            v = _bool(tcp and sock._listening)
        elif name == _SO_PROTOCOL:
            v = _std.IPPROTO_TCP if tcp else _std.IPPROTO_UDP
        elif name == _SO_DOMAIN:
            v = int(AF_INET)
        if v is None:
            raise _err(errno.ENOPROTOOPT)
        return (v & 0xFFFFFFFF).to_bytes(4, "little")
    if level == _std.IPPROTO_TCP:
        if not tcp:
            raise _err(errno.EOPNOTSUPP)  # what Linux answers for a TCP option of a UDP socket
        if name == _std.TCP_NODELAY:
            v = _bool(sock.nodelay)
        elif name == _std.TCP_KEEPIDLE:
            v = sock.keepidle // _US
        elif name == _std.TCP_KEEPINTVL:
            v = sock.keepintvl // _US
        elif name == _std.TCP_KEEPCNT:
            v = sock.keepcnt
        elif name == getattr(_std, "TCP_USER_TIMEOUT", 18):
            v = core.user_timeout_set
        if v is None:
            raise _err(errno.ENOPROTOOPT)
        return (v & 0xFFFFFFFF).to_bytes(4, "little")
    raise _err(errno.ENOPROTOOPT)


# -- module functions ----------------------------------------------------------------------------


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *, all_errors=False,
                      stack=None, socket_class=Socket):
    """Connect a TCP socket to ``address`` (a dotted quad and a port) and return it.

    As ``socket.create_connection``: ``timeout`` (default: the module's
    default timeout) is set before connecting; ``source_address`` is bound
    first.  There is one address to try (no resolver), so ``all_errors``
    changes nothing.
    """
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("address must be a (host, port) pair")
    sock = socket_class(AF_INET, SOCK_STREAM, stack=stack)
    try:
        if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(address)
        return sock
    except BaseException:
        sock.close()
        raise


def create_server(address, *, family=AF_INET, backlog=None, reuse_port=False, dualstack_ipv6=False,
                  stack=None, socket_class=Socket):
    """A listening TCP socket bound to ``address``, with SO_REUSEADDR as ``socket.create_server`` sets."""
    if reuse_port:
        raise ValueError("SO_REUSEPORT not supported on this platform (pystack)")
    if dualstack_ipv6:
        raise ValueError("dualstack_ipv6 not supported on this platform (pystack has no IPv6)")
    sock = socket_class(family, SOCK_STREAM, stack=stack)
    try:
        sock.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno is None:
                raise
            raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                     f"{exc.strerror}") from None
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
        return sock
    except BaseException:
        sock.close()
        raise
