"""The TCP layer: the interface's handler for IP protocol 6.

Owns the demultiplexing table (4-tuple -> :class:`TcpConnection`), the
listening sockets and their SYN and accept queues, the port table and
ephemeral ports, the per-stack ISN secret, the challenge-ACK rate limit, the
``tcp.*`` counters, and the frames TCP has built but not yet handed to IP.

Theory of operation
-------------------
*Input.*  :meth:`TcpLayer.handle` gets one segment whose checksum the fast
path has verified and whose every field and option it has parsed
(``ip.frame``); a reassembled datagram (no frame) is parsed here with
:class:`pystack.wire.tcp.TcpSegment`.  The segment goes to the connection of
its 4-tuple, else to the listener of its port (RFC 9293 §3.10.7.2), else it
reached nothing and is answered with a RST (§3.10.7.1) -- never a RST for a
RST.  Connections never transmit from inside ``handle``: they mark
themselves dirty, and :meth:`poll` runs ``output`` once for each dirty
connection.  The interface calls ``poll`` after each read batch, so a batch
of segments of one connection costs one state-machine pass each but one ACK
in all (:meth:`handle_batch` is the batch entry point).

*Output.*  A connection hands finished header values to :meth:`_emit_raw`,
which writes Ethernet+IPv4+TCP with both checksums in one call of the fast
path (:func:`pystack.wire.headers.emit_tcp`, destination MAC left zero) into
a fresh buffer queued here; :meth:`poll` passes the queue to
``iface.send_frames``, which patches the next hop's MAC or parks the frame
behind ARP.

*Timers.*  A connection keeps its deadlines as values (``rtx_at``,
``delack_at``, ``keep_at``, ``tw_at``; :meth:`TcpConnection.poll_at` is
their minimum).  The layer keeps a heap of ``(deadline, n, conn)`` with
lazy invalidation, so :meth:`poll` and :meth:`poll_at` cost O(log n) per
timer that is due or was moved, never O(connections): a thousand idle
connections cost nothing per loop iteration.  Invariant: every connection
whose ``poll_at()`` is not None has a heap entry at or before it, and
``conn._sched`` is the earliest such entry's deadline (None: no entry
needed).  :meth:`_schedule` restores it after anything that may arm a
timer earlier; it runs for every connection :meth:`poll` hands to
``output`` (every segment, timer and application call that changes a
connection marks it dirty) and from the few calls that arm a timer
without marking (``rearm_keepalive``).  A deadline moved later or
cancelled leaves a stale entry, which is dropped (and the real deadline
pushed) when it reaches the top.

*Ports.*  Linux's bind rule (socket(7) SO_REUSEADDR; net/ipv4/
inet_connection_sock.c ``inet_bind_conflict``): a port held by a listener,
by a bound socket or by a connection (any state, TIME-WAIT included; an
accepted connection holds its listener's port) refuses ``bind`` with
EADDRINUSE, unless both the new socket and every holder set SO_REUSEADDR
and no holder listens -- so a restarted server that sets it binds while
its old connections sit in TIME-WAIT.  A connection keeps the
SO_REUSEADDR of the socket that made it (``_strict`` counts, per port,
the connections made without it).  A second listener on a port is
EADDRINUSE at ``listen``.  Ephemeral ports (49152-65535, RFC 6335 §6) are chosen
sequentially among ports nothing uses -- reproducible runs over RFC 6056's
randomisation, as UDP does.

*ICMP* (RFC 1122 §4.2.3.9, RFC 5461): errors go to the connection of the
quoted 4-tuple; see :meth:`TcpConnection.icmp_error` for what it does.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, fields
from heapq import heappop, heappush

from pystack.transport.tcp.congestion import ALGORITHMS
from pystack.transport.tcp.connection import ACK, RST, SYN, FIN, State, TcpConnection
from pystack.transport.tcp.isn import IsnGenerator
from pystack.stats import Stats
from pystack.wire import _headers_py
from pystack.wire.headers import emit_tcp
from pystack.wire.icmpv4 import (DEST_UNREACHABLE, PARAMETER_PROBLEM, TIME_EXCEEDED, UNREACH_FRAG_NEEDED,
                                 UNREACH_HOST)
from pystack.wire.ipv4 import ip_to_str
from pystack.wire.tcp import (MssOption, SackOption, SackPermittedOption, TcpSegment, TimestampsOption,
                              WindowScaleOption)

PROTO_TCP = 6
EPHEMERAL_FIRST = 49152
EPHEMERAL_LAST = 65535
_ZERO_MAC = bytes(6)
_HEADERS = 14 + 20 + 20  # Ethernet + IPv4 + TCP without options
_US = 1_000_000

COUNTERS = (
    "tcp.rx",  # segments handed to TCP by IP
    "tcp.tx",  # segments built
    "tcp.active_opens", "tcp.passive_opens",
    "tcp.established",  # connections that reached ESTABLISHED
    "tcp.closed",  # connections that reached CLOSED
    "tcp.resets_sent",  # RSTs sent (answers to nothing, aborts, bad ACKs)
    "tcp.resets_received",
    "tcp.retransmits",  # segments sent again (RTO, fast retransmit, partial ACK, probes)
    "tcp.rto",  # retransmission timer expiries (RFC 6298 §5.4)
    "tcp.fast_retransmits",  # third duplicate ACK (RFC 5681 §3.2)
    "tcp.dupacks",
    "tcp.acks_coalesced",  # pure ACKs superseded by a later one of the same read batch
    "tcp.out_of_order",  # data segments beyond RCV.NXT (stored, SACKed)
    "tcp.duplicate_data",  # data received twice (D-SACKed)
    "tcp.challenge_acks", "tcp.challenge_acks_rst", "tcp.challenge_acks_syn", "tcp.challenge_acks_ack",
    "tcp.challenge_acks_rate_limited",  # RFC 5961 §7
    "tcp.persist_probes", "tcp.sws_override", "tcp.window_shrunk", "tcp.zero_window_drop",
    "tcp.keepalive_probes", "tcp.keepalive_timeout", "tcp.user_timeout", "tcp.syn_timeout",
    "tcp.time_wait_expired", "tcp.fin_wait2_timeout", "tcp.simultaneous_open",
    "tcp.time_wait_reopened",  # a new SYN ended TIME-WAIT early (RFC 6191 §2)
    "tcp.close_unread_rst", "tcp.linger_abort", "tcp.data_after_close",
    "tcp.urgent_received", "tcp.wscale_clamped",
    "tcp.icmp_soft_errors", "tcp.icmp_aborts", "tcp.icmp_out_of_window", "tcp.icmp_unmatched",
    "tcp.pmtu_reduced",
    # drops, by reason
    "tcp.drop.bad_port",  # source or destination port 0
    "tcp.drop.no_socket",  # nothing listening or connected: RST sent (RFC 9293 §3.10.7.1)
    "tcp.drop.no_socket_rst",  # a RST that reached nothing: never answered
    "tcp.drop.listen_rst", "tcp.drop.listen_no_syn",
    "tcp.drop.syn_queue_full", "tcp.drop.accept_queue_full",
    "tcp.drop.out_of_window",  # failed the acceptability test (ACK sent)
    "tcp.drop.rst_out_of_window",  # RFC 5961 §3.2: silently
    "tcp.drop.paws",  # RFC 7323 §5.3
    "tcp.drop.no_timestamp",  # RFC 7323 §3.2
    "tcp.drop.no_ack", "tcp.drop.bad_ack", "tcp.drop.ack_unsent", "tcp.drop.ack_too_old",
    "tcp.drop.no_syn", "tcp.drop.rst_no_ack", "tcp.drop.text_after_fin",
    "tcp.send_errors",  # frames IP could not route
)


def _positive(name: str, value, lo: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")


@dataclass(frozen=True)
class TcpConfig:
    """Per-stack TCP parameters; times in µs, sizes in bytes.  Defaults and why:

    * ``rcvbuf``/``sndbuf`` 256 KiB: a window of 256 KiB keeps a 1 Gb/s path
      with 2 ms RTT full (Linux autotunes; we do not).
    * ``min_rto`` 200 ms (Linux's TCP_RTO_MIN; RFC 6298 §2.4 says 1 s, a
      deliberate deviation as every major stack makes), ``max_rto`` 120 s
      (Linux's TCP_RTO_MAX; RFC 6298 §2.5 allows a maximum >= 60 s),
      ``initial_rto`` 1 s (RFC 6298 §2.1).
    * ``msl`` 30 s, so TIME-WAIT (2*MSL, RFC 9293 §3.6.1) lasts 60 s as on
      Linux (TCP_TIMEWAIT_LEN); RFC 9293 §3.4.2 takes MSL = 2 minutes as an
      engineering choice, which the later RFC 7323 §5.8 discussion shows
      modern stacks shorten.
    * ``delayed_ack`` 40 ms: Linux's TCP_DELACK_MIN; RFC 9293 §3.8.6.3
      (MUST-40) requires under 0.5 s.
    * ``user_timeout`` 300 s: RFC 793's / RFC 5482 §1's default USER
      TIMEOUT of 5 minutes (also above RFC 1122 §4.2.3.5's R2 >= 100 s and
      the 3 minutes for a SYN).
    * ``syn_retries`` 6 / ``synack_retries`` 5: Linux's tcp_syn_retries /
      tcp_synack_retries.
    * keep-alive (off per connection by default, RFC 9293 §3.8.4 / MUST-24):
      idle 2 h (RFC 1122 §4.2.3.6: MUST default to no less than two hours),
      75 s interval and 9 probes (Linux's defaults).
    * ``challenge_ack_limit`` 1000 per second (RFC 5961 §7; Linux's old
      tcp_challenge_ack_limit).
    * ``fin_wait2_timeout`` 60 s for orphaned connections (Linux tcp_fin_timeout).
    """

    rcvbuf: int = 256 * 1024
    sndbuf: int = 256 * 1024
    min_rto: int = 200_000
    max_rto: int = 120_000_000
    initial_rto: int = 1_000_000
    msl: int = 30_000_000
    delayed_ack: int = 40_000
    user_timeout: int = 300_000_000
    syn_retries: int = 6
    synack_retries: int = 5
    keepalive_idle: int = 7200 * _US
    keepalive_interval: int = 75 * _US
    keepalive_count: int = 9
    challenge_ack_limit: int = 1000
    fin_wait2_timeout: int = 60 * _US
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    dsack: bool = True
    max_ooo_ranges: int = 32
    congestion: str = "reno"
    ttl: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool" or isinstance(v, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"{f.name} must be a bool, got {v!r}")
            elif f.name == "congestion":
                if v not in ALGORITHMS:
                    raise ValueError(f"congestion must be one of {sorted(ALGORITHMS)}, got {v!r}")
            else:
                _positive(f.name, v, 0 if f.name in ("challenge_ack_limit",) else 1)
        if self.min_rto > self.max_rto:
            raise ValueError(f"min_rto {self.min_rto} > max_rto {self.max_rto}")
        if self.rcvbuf > (0xFFFF << 14):
            raise ValueError(f"rcvbuf {self.rcvbuf} exceeds the largest window, 65535 << 14 (RFC 7323 §2.3)")
        if self.delayed_ack >= 500_000:
            raise ValueError("delayed_ack must be under 0.5 s (RFC 9293 §3.8.6.3, MUST-40)")


def _oserror(code: int, detail: str = "") -> OSError:
    import os
    message = os.strerror(code)
    return OSError(code, f"{message} ({detail})" if detail else message)


class _SlowFrame(_headers_py.Frame):
    """The Frame of a segment parsed off the fast path (a reassembled datagram)."""


def _frame_from_segment(seg: TcpSegment) -> _headers_py.Frame:
    f = _SlowFrame()
    f.sport, f.dport, f.seq, f.ack = seg.sport, seg.dport, seg.seq, seg.ack
    f.tcp_flags, f.window, f.urgent = seg.flags & 0xFF, seg.window, seg.urgent
    for o in seg.options:  # the last of a kind wins, as on the fast path
        t = type(o)
        if t is MssOption:
            f.mss = o.mss
        elif t is WindowScaleOption:
            f.wscale = o.shift
        elif t is SackPermittedOption:
            f.sack_permitted = True
        elif t is TimestampsOption:
            f.ts_val, f.ts_ecr = o.tsval, o.tsecr
        elif t is SackOption:
            f.sack = o.blocks
    f.layers = 3
    return f


class TcpLayer:
    """The proto-6 handler (see the module docstring).  The interface builds one as ``iface.tcp``."""

    def __init__(self, local_ip: int, mac: bytes, stats: Stats | None = None, *,
                 config: TcpConfig | None = None, mtu: int = 1500, secret: bytes | None = None,
                 check_route=None) -> None:
        self.local_ip = local_ip
        self.mac = bytes(mac)
        self.config = config if config is not None else TcpConfig()
        self.stats = stats if stats is not None else Stats()
        for name in COUNTERS:
            self.stats.incr(name, 0)
        #: MMS_R - 20 = what we announce as our MSS (RFC 9293 §3.7.1, RFC 1122 §4.2.2.6).
        self.mss_local = mtu - 40
        self.isn = IsnGenerator(secret)
        self._check_route_fn = check_route
        self._conns: dict[tuple[int, int, int], TcpConnection] = {}
        self._listeners: dict[int, object] = {}  # port -> listening TcpSocket
        self._bound: dict[int, list] = {}  # port -> bound (not yet listening/connected) TcpSockets
        self._port_refs: dict[int, int] = {}  # port -> connections using it
        self._strict: dict[int, int] = {}  # port -> connections using it made without SO_REUSEADDR
        self._strict_conns: set[TcpConnection] = set()  # those connections
        self._next_ephemeral = EPHEMERAL_FIRST
        self._dirty: dict[TcpConnection, None] = {}
        self._txq: list[tuple[int, bytearray]] = []
        # Timer heap (see "Timers" in the module docstring): (deadline, tie-breaker, conn).
        self._timers: list[tuple[int, int, TcpConnection]] = []
        self._timer_seq = 0
        self._now = 0
        self._ip_id = 0
        self._challenge_window = -1
        self._challenge_count = 0

    # -- helpers used by connections ------------------------------------------------------------

    @staticmethod
    def ip_str(ip: int) -> str:
        return ip_to_str(ip)

    @property
    def now(self) -> int:
        """The last ``now`` the layer was given (app-side calls are stamped with it)."""
        return self._now

    def _mark(self, conn: TcpConnection) -> None:
        self._dirty[conn] = None

    def _note_readable(self, conn: TcpConnection) -> None:
        """Hook: data or EOF became readable (a runtime may wrap it to wake readers)."""

    def _note_writable(self, conn: TcpConnection) -> None:
        """Hook: send-buffer room appeared (a runtime may wrap it to wake writers)."""

    def _note_state(self, conn: TcpConnection, old: State, new: State) -> None:
        """Hook: ``conn`` changed state (connected, failed, closed, or joined its listener's
        accept queue: ``conn.listener`` is then set); a runtime may wrap it to wake waiters."""

    def _challenge_allowed(self, now: int) -> bool:
        """RFC 5961 §7: at most ``challenge_ack_limit`` challenge ACKs per second, stack-wide."""
        limit = self.config.challenge_ack_limit
        if limit == 0:
            return True
        window = now // _US
        if window != self._challenge_window:
            self._challenge_window = window
            self._challenge_count = 0
        if self._challenge_count >= limit:
            return False
        self._challenge_count += 1
        return True

    def _emit_raw(self, conn: TcpConnection, seq: int, ack: int, flags: int, window: int, opts: bytes,
                  payload, n: int) -> None:
        self._build(conn.remote_ip, conn.local_port, conn.remote_port, seq, ack, flags, window, opts, payload, n)

    def _build(self, rip: int, lport: int, rport: int, seq: int, ack: int, flags: int, window: int,
               opts: bytes, payload, n: int) -> None:
        buf = bytearray(_HEADERS + ((len(opts) + 3) & ~3) + n)
        ip_id = self._ip_id
        self._ip_id = (ip_id + 1) & 0xFFFF
        emit_tcp(buf, 0, _ZERO_MAC, self.mac, self.local_ip, rip, lport, rport, seq, ack, flags, window,
                 opts, payload, n, ip_id, self.config.ttl)
        self._txq.append((rip, buf))
        self.stats.incr("tcp.tx")
        if flags & RST:
            self.stats.incr("tcp.resets_sent")

    def _emit_rst(self, conn: TcpConnection, seq: int) -> None:
        """<SEQ=seq><ACK=RCV.NXT><CTL=RST,ACK> for an abort (RFC 9293 §3.10.5; the ACK as Linux sends it)."""
        self._build(conn.remote_ip, conn.local_port, conn.remote_port, seq, conn.rcv_nxt, RST | ACK, 0,
                    b"", None, 0)

    def _emit_rst_for(self, conn: TcpConnection, seg_ack: int) -> None:
        """<SEQ=SEG.ACK><CTL=RST> for an unacceptable ACK (RFC 9293 §3.10.7.3, §3.10.7.4)."""
        self._build(conn.remote_ip, conn.local_port, conn.remote_port, seg_ack, 0, RST, 0, b"", None, 0)

    def _state_changed(self, conn: TcpConnection, old: State, new: State, now: int) -> None:
        stats = self.stats
        if new == State.ESTABLISHED:
            stats.incr("tcp.established")
            lst = conn.listener
            if lst is not None and old == State.SYN_RECEIVED:
                lst._syn_q.discard(conn)
                lst._accept_q.append(conn)
        elif new == State.CLOSED:
            stats.incr("tcp.closed")
            key = (conn.local_port, conn.remote_ip, conn.remote_port)
            if self._conns.get(key) is conn:
                del self._conns[key]
                self._release_port(conn.local_port)
            if conn in self._strict_conns:
                self._strict_conns.discard(conn)
                self._release_port(conn.local_port, self._strict)
            lst = conn.listener
            if lst is not None:
                lst._syn_q.discard(conn)
                try:
                    lst._accept_q.remove(conn)
                except ValueError:
                    pass
            self._dirty.pop(conn, None)
        self._note_state(conn, old, new)

    # -- ports -------------------------------------------------------------------------------------

    def _port_in_use(self, port: int) -> bool:
        return port in self._listeners or port in self._bound or port in self._port_refs

    def _ephemeral(self) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        start = self._next_ephemeral
        for i in range(span):
            port = EPHEMERAL_FIRST + (start - EPHEMERAL_FIRST + i) % span
            if not self._port_in_use(port):
                self._next_ephemeral = EPHEMERAL_FIRST + (port - EPHEMERAL_FIRST + 1) % span
                return port
        raise _oserror(errno.EADDRNOTAVAIL, "every ephemeral port (RFC 6335 §6) is in use")

    def _bind(self, sock, port: int) -> int:
        """Give ``sock`` ``port`` (0: an ephemeral one) under Linux's rule (module docstring)."""
        if port == 0:
            port = self._ephemeral()
        else:
            reuse = getattr(sock, "reuseaddr", False)
            if port in self._listeners:
                raise _oserror(errno.EADDRINUSE, f"port {port} has a listener")
            if any(not (reuse and other.reuseaddr) for other in self._bound.get(port, ())):
                raise _oserror(errno.EADDRINUSE, f"port {port} is bound (SO_REUSEADDR on both lets it be shared)")
            if port in self._port_refs and (not reuse or port in self._strict):
                raise _oserror(errno.EADDRINUSE, f"port {port} is used by a connection (SO_REUSEADDR on both "
                                                 "lets a new socket bind it)")
        self._bound.setdefault(port, []).append(sock)
        return port

    def _bind_listener_port(self, sock, port: int) -> None:
        """A listener that stopped listening (shutdown SHUT_RD) keeps its port, bound (Linux)."""
        self._bound.setdefault(port, []).append(sock)

    def _drop_bound(self, sock, port: int) -> None:
        socks = self._bound.get(port)
        if socks is not None and sock in socks:
            socks.remove(sock)
            if not socks:
                del self._bound[port]

    def _unbind(self, sock, port: int) -> None:
        self._drop_bound(sock, port)
        if self._listeners.get(port) is sock:
            del self._listeners[port]

    def _take_port(self, port: int, refs: dict | None = None) -> None:
        refs = self._port_refs if refs is None else refs
        refs[port] = refs.get(port, 0) + 1

    def _release_port(self, port: int, refs: dict | None = None) -> None:
        refs = self._port_refs if refs is None else refs
        n = refs.get(port, 0) - 1
        if n > 0:
            refs[port] = n
        else:
            refs.pop(port, None)

    def _check_route(self, ip: int) -> None:
        if self._check_route_fn is not None:
            self._check_route_fn(ip)

    # -- application side (used by TcpSocket) ---------------------------------------------------

    def socket(self):
        """A new, unbound TCP socket."""
        from pystack.transport.tcp.socket import TcpSocket
        return TcpSocket(self)

    def _listen(self, sock, port: int) -> None:
        if self._listeners.get(port, sock) is not sock:
            # Two SO_REUSEADDR sockets may share a bound port; only one may listen (Linux).
            raise _oserror(errno.EADDRINUSE, f"port {port} has a listener")
        self._drop_bound(sock, port)
        self._listeners[port] = sock

    def _new_connection(self, lport: int, rip: int, rport: int, sock) -> TcpConnection:
        cfg = self.config
        cc = ALGORITHMS[getattr(sock, "congestion", None) or cfg.congestion](536)
        conn = TcpConnection(self, self.local_ip, lport, rip, rport, cc,
                             rcvbuf=sock.rcvbuf, sndbuf=sock.sndbuf)
        conn.nodelay = sock.nodelay
        conn.keepalive = sock.keepalive
        conn.keepidle, conn.keepintvl, conn.keepcnt = sock.keepidle, sock.keepintvl, sock.keepcnt
        conn.user_timeout = sock.user_timeout
        conn.linger = sock.linger
        self._conns[(lport, rip, rport)] = conn
        self._take_port(lport)
        if not getattr(sock, "reuseaddr", False):
            self._strict_conns.add(conn)
            self._take_port(lport, self._strict)
        return conn

    def _connect(self, sock, lport: int, rip: int, rport: int) -> TcpConnection:
        if (lport, rip, rport) in self._conns:
            raise _oserror(errno.EADDRNOTAVAIL, "that 4-tuple is in use")
        self._drop_bound(sock, lport)
        conn = self._new_connection(lport, rip, rport, sock)
        self.stats.incr("tcp.active_opens")
        conn.active_open(self._now)
        return conn

    # -- handler protocol ------------------------------------------------------------------------

    def handle(self, iface, now: int, ip, payload) -> None:
        """One segment from IP (``payload`` from the TCP header on; a view valid during the call)."""
        self._now = now
        self.stats.incr("tcp.rx")
        self._handle(iface, now, ip, payload)

    def _handle(self, iface, now: int, ip, payload) -> None:
        stats = self.stats
        f = ip.frame
        if f is None:
            seg = TcpSegment.parse(payload, src=ip.src, dst=ip.dst)  # raises tcp.* reasons
            f = _frame_from_segment(seg)
            data = seg.payload
        else:
            start = f.payload_offset - f.l4_offset
            data = payload[start:start + f.payload_len]
        sport = f.sport
        dport = f.dport
        if sport == 0 or dport == 0:
            stats.incr("tcp.drop.bad_port")
            return
        src = ip.src
        conn = self._conns.get((dport, src, sport))
        if conn is not None:
            conn.segment(now, f, data)
            self._dirty[conn] = None
            return
        lst = self._listeners.get(dport)
        if lst is not None:
            self._in_listen(now, lst, src, f, data)
            return
        self._in_closed(src, f, len(data))

    def handle_batch(self, iface, now: int, items) -> None:
        """Every TCP segment of one read batch: ``items`` is a list of ``(ip, payload)``.

        The state machine runs per segment (in-order data of an ESTABLISHED
        connection takes its header-prediction lane, see
        :meth:`TcpConnection.segment`); output (so the ACK) comes once, at
        the next :meth:`poll`, for all of them: one ACK covers the batch,
        which satisfies "at least every second full-sized segment" (RFC 9293
        §3.8.6.3, RFC 5681 §4.2) per batch.  Pure ACKs superseded by a later
        one in the batch are skipped (see below).
        """
        # Consecutive segments of one connection (the common case: a bulk
        # transfer's batch) skip the demultiplexing lookup after the first.
        self._now = now
        self.stats.incr("tcp.rx", len(items))
        conns = self._conns
        dirty = self._dirty
        last_key = last_conn = None
        n = len(items)
        for i in range(n):
            ip, payload = items[i]
            f = ip.frame
            if f is None:  # a reassembled datagram: the general path parses it
                last_key = None
                self._handle(iface, now, ip, payload)
                continue
            key = (f.dport, ip.src, f.sport)
            if f.tcp_flags == ACK and not f.payload_len and i + 1 < n and not f.sack:
                # ACK coalescing: a pure cumulative ACK followed in the batch by
                # a pure ACK of the same connection that acknowledges more, with
                # the same SEG.SEQ and window and a TSval no older, says nothing
                # the later one does not: only the later is processed (a stretch
                # ACK, which congestion.Reno.on_ack counts in bytes, RFC 3465
                # §2.1 / RFC 5681 §4.2's "ACK every second segment" seen from the
                # sender).  Duplicate ACKs are never merged: the sender counts
                # them (RFC 5681 §3.2).
                nip = items[i + 1][0]
                g = nip.frame
                if g is not None and g.tcp_flags == ACK and not g.payload_len and g.seq == f.seq \
                        and g.window == f.window and nip.src == ip.src and g.sport == f.sport \
                        and g.dport == f.dport and 0 < ((g.ack - f.ack) & 0xFFFFFFFF) < 0x80000000 \
                        and ((g.ts_val - f.ts_val) & 0xFFFFFFFF) < 0x80000000 and (g.ts_val < 0) == (f.ts_val < 0):
                    self.stats.incr("tcp.acks_coalesced")
                    continue
            if key == last_key and last_conn.state is not State.CLOSED:
                start = f.payload_offset - f.l4_offset
                last_conn.segment(now, f, payload[start:start + f.payload_len])
                continue
            conn = conns.get(key)
            if conn is not None and f.sport and f.dport:
                last_key, last_conn = key, conn
                start = f.payload_offset - f.l4_offset
                conn.segment(now, f, payload[start:start + f.payload_len])
                dirty[conn] = None
            else:
                last_key = None
                self._handle(iface, now, ip, payload)

    def _reopen_time_wait(self, conn: TcpConnection, now: int, f, data) -> bool:
        """A SYN that RFC 6191 §2 lets reopen ``conn`` (TIME-WAIT): close it, answer from the listener.

        Only when a listener owns the port (otherwise there is nothing to
        open, and the TIME-WAIT TCB answers as usual); returns whether the
        SYN was taken.  The new ISS exceeds the old incarnation's highest
        sequence number (RFC 1122 §4.2.2.13 (1)).  Deviation: RFC 1122's
        "(2) returns to TIME-WAIT state if the SYN turns out to be an old
        duplicate" is not done -- the old TCB is gone; PAWS and the
        greater-sequence rule make an old duplicate SYN very unlikely.
        """
        lst = self._listeners.get(conn.local_port)
        if lst is None:
            return False
        self.stats.incr("tcp.time_wait_reopened")
        above = conn.snd_max
        conn._set_state(State.CLOSED, now)
        self._in_listen(now, lst, conn.remote_ip, f, data, above)
        return True

    def _in_listen(self, now: int, lst, src: int, f, data, above: int | None = None) -> None:
        """RFC 9293 §3.10.7.2 LISTEN STATE."""
        flags = f.tcp_flags
        stats = self.stats
        if flags & RST:
            stats.incr("tcp.drop.listen_rst")  # first: "An incoming RST should be ignored"
            return
        if flags & ACK:
            # second: any ACK is bad: <SEQ=SEG.ACK><CTL=RST>.
            stats.incr("tcp.drop.no_socket")
            self._build(src, f.dport, f.sport, f.ack, 0, RST, 0, b"", None, 0)
            return
        if not flags & SYN:
            stats.incr("tcp.drop.listen_no_syn")  # fourth: "drop the segment and return"
            return
        if len(lst._syn_q) >= lst.backlog:
            stats.incr("tcp.drop.syn_queue_full")
            return
        if len(lst._accept_q) >= lst.backlog:
            stats.incr("tcp.drop.accept_queue_full")  # as Linux: no SYN-ACK while it is full
            return
        conn = self._new_connection(f.dport, src, f.sport, lst)
        stats.incr("tcp.passive_opens")
        conn.passive_open(now, f, lst, above)
        lst._syn_q.add(conn)
        # Data or FIN in the SYN is not kept (the peer retransmits it after
        # the handshake); RFC 9293 §3.10.7.2 allows queueing, MAY not MUST.
        self._dirty[conn] = None

    def _in_closed(self, src: int, f, dlen: int) -> None:
        """RFC 9293 §3.10.7.1: a segment for no connection and no listener gets a RST."""
        flags = f.tcp_flags
        if flags & RST:
            self.stats.incr("tcp.drop.no_socket_rst")  # "An incoming segment containing a RST is discarded"
            return
        self.stats.incr("tcp.drop.no_socket")
        if flags & ACK:
            self._build(src, f.dport, f.sport, f.ack, 0, RST, 0, b"", None, 0)  # <SEQ=SEG.ACK><CTL=RST>
        else:
            seg_len = dlen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
            self._build(src, f.dport, f.sport, 0, (f.seq + seg_len) & 0xFFFFFFFF, RST | ACK, 0, b"", None, 0)

    def handle_icmp_error(self, iface, now: int, type: int, code: int, quoted, mtu: int) -> None:
        """An ICMP error quoting a segment we sent (RFC 1122 §4.2.3.9; RFC 5461)."""
        head = bytes(quoted.payload[:8])
        if len(head) < 8:
            self.stats.incr("tcp.icmp_unmatched")
            return
        sport = int.from_bytes(head[0:2], "big")
        dport = int.from_bytes(head[2:4], "big")
        seq = int.from_bytes(head[4:8], "big")
        conn = self._conns.get((sport, quoted.dst, dport))
        if conn is None:
            self.stats.incr("tcp.icmp_unmatched")
            return
        self._now = now
        from pystack.transport.udp import _error_errno
        if type == DEST_UNREACHABLE and code == UNREACH_FRAG_NEEDED:
            conn.icmp_error(now, 0, False, seq, mtu or 576)
        elif type in (DEST_UNREACHABLE, TIME_EXCEEDED, PARAMETER_PROBLEM):
            code_errno = _error_errno(type, code) or errno.EHOSTUNREACH
            # Hard errors (RFC 1122 §4.2.3.9): protocol and port unreachable.
            hard = type == DEST_UNREACHABLE and code in (2, 3)
            if not hard and type == DEST_UNREACHABLE and code == UNREACH_HOST and conn.state is State.SYN_SENT \
                    and self._link_failed(iface, quoted.dst, now):
                # Our own ARP resolution for the SYN failed (the interface reports it as a local
                # Host Unreachable): Linux aborts the connect with EHOSTUNREACH (ipv4_link_failure
                # -> tcp_v4_err in SYN-SENT), and so do we.  ICMP from the wire stays soft.
                hard = True
            conn.icmp_error(now, code_errno, hard, seq, 0)
        self._dirty[conn] = None

    # -- timers (see "Timers" in the module docstring) -----------------------------------------

    def _schedule(self, conn: TcpConnection) -> None:
        """Give ``conn``'s next deadline a heap entry unless one at or before it exists."""
        t = conn.poll_at()
        if t is not None:
            s = conn._sched
            if s is None or t < s:
                conn._sched = t
                self._timer_seq += 1
                heappush(self._timers, (t, self._timer_seq, conn))

    def _due(self, now: int) -> None:
        """Pop the heap entries due at ``now``: run the timers that really are, mark those dirty."""
        heap = self._timers
        dirty = self._dirty
        closed = State.CLOSED
        while heap and heap[0][0] <= now:
            t, _, conn = heappop(heap)
            if conn._sched != t:
                continue  # superseded: an earlier entry was pushed for it (and ran), or none is needed
            conn._sched = None
            if conn.state is closed:
                continue
            real = conn.poll_at()
            if real is None:
                continue  # cancelled
            if real <= now:
                conn.on_timer(now)
                if conn.state is not closed:
                    dirty[conn] = None  # output() runs and _schedule() follows it
            else:
                self._schedule(conn)  # moved later: the real deadline goes in

    @staticmethod
    def _link_failed(iface, dst: int, now: int) -> bool:
        """Whether ``dst``'s next hop has no link-layer address (its resolution just failed)."""
        route = getattr(iface, "_route", None)
        neighbors = getattr(iface, "neighbors", None)
        if route is None or neighbors is None:
            return False
        try:
            hop, mac = route(dst)
        except OSError:
            return False
        return mac is None and neighbors.lookup(hop, now) is None

    def poll(self, iface, now: int) -> None:
        """Run due timers, let every dirty connection send, hand the frames to IP."""
        self._now = now
        dirty = self._dirty
        if self._timers and self._timers[0][0] <= now:
            self._due(now)
        schedule = self._schedule
        closed = State.CLOSED
        while dirty:
            conns = list(dirty)
            dirty.clear()
            for conn in conns:
                if conn.state is not closed:
                    conn.output(now)
                    schedule(conn)
        txq = self._txq
        if txq:
            self._txq = []
            # One send_frames (one route and neighbour lookup) per run of
            # frames to the same address: a bulk sender's window goes in one call.
            send = iface.send_frames
            i, n = 0, len(txq)
            while i < n:
                rip = txq[i][0]
                j = i + 1
                while j < n and txq[j][0] == rip:
                    j += 1
                try:
                    send(now, rip, PROTO_TCP, [fr for _, fr in txq[i:j]] if j - i > 1 else [txq[i][1]])
                except OSError:
                    self.stats.incr("tcp.send_errors", j - i)
                i = j

    def poll_at(self) -> int | None:
        """The earliest deadline of any connection (the last ``now`` when output waits).

        Exact, not merely early: stale entries on top of the heap are
        dropped here (their connection's real deadline pushed instead), so
        the loop never wakes for a timer that was cancelled or moved.
        """
        if self._dirty or self._txq:
            return self._now
        heap = self._timers
        closed = State.CLOSED
        while heap:
            t, _, conn = heap[0]
            if conn._sched == t and conn.state is not closed:
                real = conn.poll_at()
                if real == t:
                    return t
            else:
                real = None
            heappop(heap)
            if conn._sched == t:
                conn._sched = None
                if real is not None and conn.state is not closed:
                    self._schedule(conn)
        return None

    # -- status ----------------------------------------------------------------------------------

    def connections_info(self) -> list[dict]:
        """One dict per listener and connection, like ``ss -ti`` rows (see TcpConnection.info)."""
        rows = []
        for port in sorted(self._listeners):
            lst = self._listeners[port]
            rows.append({"proto": "tcp", "state": "LISTEN", "local": f"{ip_to_str(lst._local_ip)}:{port}",
                         "remote": "*:*", "recv_q": len(lst._accept_q), "send_q": lst.backlog,
                         "syn_q": len(lst._syn_q)})
        for key in sorted(self._conns):
            rows.append(self._conns[key].info())
        return rows

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def connections(self) -> list[TcpConnection]:
        return list(self._conns.values())
