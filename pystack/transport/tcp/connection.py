"""One TCP connection, sans-I/O: the TCB and RFC 9293 §3.10 event processing.

Owns everything one connection knows: the send and receive sequence
variables of RFC 9293 §3.3.1, the send buffer and the receive reassembly
buffer (:class:`pystack.storage.assembler.Assembler`), the negotiated options,
the RTT estimator and the timers, and the congestion controller it was
given.  It reads no clock and touches no device: ``now`` (integer µs) comes
in with every call, and segments go out through ``layer._emit`` only while
the layer drives it (:meth:`TcpConnection.output`, :meth:`on_timer`).

Theory of operation
-------------------
*States.*  The eleven states of RFC 9293 §3.3.2 (:class:`State`).  Every
change goes through :meth:`TcpConnection._set_state`, which checks the table
of legal transitions :data:`TRANSITIONS` (RFC 9293 Figure 5, plus "any
state -> CLOSED" for abort, reset and timeouts), logs ``old -> new`` and
tells the layer (accept queue, demux table).

*Input* (:meth:`segment`).  The fast path has already checked the checksum
and parsed every field and option into a ``Frame``; this method runs the
checks of RFC 9293 §3.10.7 in the RFC's order: SYN-SENT has its own
(§3.10.7.3); otherwise PAWS (RFC 7323 §5.3), then first the sequence number
(§3.10.7.4, with the RFC 5961 refinements), second RST, third security
(nothing: no IP security options), fourth SYN, fifth ACK, sixth URG,
seventh the text, eighth FIN.  A segment never produces output directly: it
sets ``_ack_now`` or arms the delayed-ACK timer, and the layer calls
:meth:`output` once per read batch, so a batch of in-order data gets one ACK
(the coalescing issue 4 item 12 asks for).

*Output* (:meth:`output`).  Sends whatever the state, the windows and the
algorithms allow: SYN / SYN-ACK, data segmented to the effective send MSS
(RFC 9293 §3.7.1, MUST-16) within min(SND.WND, cwnd), Nagle's algorithm
(§3.7.4) unless ``nodelay``, sender silly-window avoidance (§3.8.6.2.1), the
FIN after the last byte, and a pure ACK if one is owed and nothing else
carried it.  Sent data stays in the send buffer until acknowledged; the
buffer starts at sequence number ``_buf_seq`` (SND.UNA, or ISS+1 before the
SYN is acknowledged).  ``snd_max`` is the highest sequence number ever sent;
after an RTO ``snd_nxt`` goes back to SND.UNA and the window is resent
(go-back-N in slow start, as RFC 5681 §3.1 describes the loss window).

*Timers are values* (ints in µs, or None): ``rtx_at`` (retransmission, or
the persist / SWS-override timer when ``_persist``), ``delack_at``,
``keep_at`` (keep-alive), ``tw_at`` (TIME-WAIT 2*MSL, or the FIN-WAIT-2
timeout of an orphan).  :meth:`poll_at` is their minimum; :meth:`on_timer`
runs the due ones.  The user timeout (RFC 9293 §3.8.3, RFC 5482) is checked
when the retransmission timer fires: ``_stall_since`` is when the oldest
unacknowledged data started waiting.  The layer keeps the connections'
deadlines in a heap (see :mod:`pystack.transport.tcp.layer`): a timer armed
from outside a segment, a timer or a call that marks the connection dirty
must call ``layer._schedule(self)`` (as :meth:`rearm_keepalive` does).

*Invariants*:  SND.UNA <= SND.NXT <= snd_max (mod 2**32);
``_buf_seq + len(_sndbuf)`` is the end of the data the application gave;
the FIN, when queued, has sequence number ``_buf_seq + len(_sndbuf)``;
``rcv_nxt`` is ``asm.rcv_nxt`` plus one once the peer's FIN is in;
``rcv_adv`` (the right edge we advertised) never moves left (SHLD-14).
"""

from __future__ import annotations

import errno
import logging
import struct
from enum import IntEnum

from pystack.transport.tcp.congestion import CongestionControl
from pystack.storage.assembler import Assembler
from pystack.wire.headers import emit_tcp
from pystack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG  # control bits, RFC 9293 §3.1 (layer.py imports them from here)

log = logging.getLogger("pystack.tcp")

_MASK = 0xFFFFFFFF
_HALF = 1 << 31


#: RFC 9293 §3.7.1 / MUST-15: the send MSS when the peer sends no MSS option.
DEFAULT_MSS = 536
#: RFC 7323 §2.3: a shift above 14 is used as 14.
MAX_WSCALE = 14
#: Timestamps tick every millisecond (RFC 7323 §5.4 allows 1 ms to 1 s per tick).
TS_TICK_US = 1000
#: RFC 7323 §5.5: a ts_recent idle for more than 24 days is invalid.
PAWS_IDLE_US = 24 * 86400 * 1_000_000

_TS_OPT = struct.Struct("!BBBBII")  # NOP NOP kind 8 len 10 TSval TSecr (RFC 7323 §3.2, Appendix A layout)
_SACK_HEAD = struct.Struct("!BBBB")  # NOP NOP kind 5 len
_U32X2 = struct.Struct("!II")
_MSS_OPT = struct.Struct("!BBH")
_NOP_WS = struct.Struct("!BBBB")
_SACKPERM_NOPS = b"\x01\x01\x04\x02"
_ZERO_MAC = bytes(6)  # the layer's frames leave with the next hop's MAC patched in by IP


def _d(a: int, b: int) -> int:
    """Signed distance a - b mod 2**32 (RFC 9293 §3.4), inlined by hand on the hottest lines."""
    return ((a - b + _HALF) & _MASK) - _HALF


class State(IntEnum):
    """RFC 9293 §3.3.2."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")


S = State
#: Legal transitions (RFC 9293 Figure 5).  Any state may also go to CLOSED
#: (ABORT, RST, timeouts: §3.10.5, §3.10.7.4, §3.8.3).
TRANSITIONS: dict[State, frozenset[State]] = {
    S.CLOSED: frozenset({S.LISTEN, S.SYN_SENT}),
    S.LISTEN: frozenset({S.SYN_RECEIVED, S.SYN_SENT}),
    S.SYN_SENT: frozenset({S.SYN_RECEIVED, S.ESTABLISHED}),  # SYN,ACK / simultaneous open (MUST-10)
    S.SYN_RECEIVED: frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSE_WAIT}),
    S.ESTABLISHED: frozenset({S.FIN_WAIT_1, S.CLOSE_WAIT}),
    S.FIN_WAIT_1: frozenset({S.FIN_WAIT_2, S.CLOSING, S.TIME_WAIT}),
    S.FIN_WAIT_2: frozenset({S.TIME_WAIT}),
    S.CLOSE_WAIT: frozenset({S.LAST_ACK}),
    S.CLOSING: frozenset({S.TIME_WAIT}),  # simultaneous close (MUST-10)
    S.LAST_ACK: frozenset(),
    S.TIME_WAIT: frozenset(),
}

#: States in which the connection is synchronized (RFC 9293 §3.5.2 / Glossary).
SYNCHRONIZED = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING,
                          S.LAST_ACK, S.TIME_WAIT})
#: States in which the application may still queue data (RFC 9293 §3.10.2).
_CAN_SEND = frozenset({S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT})
#: States that emit data and FINs (the FIN of FIN-WAIT-1/CLOSING/LAST-ACK may need resending).
_SENDING = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
#: States whose incoming text is delivered (RFC 9293 §3.10.7.4, seventh).
_TEXT_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


class TcpConnection:
    """The TCB of one connection (see the module docstring).  Built by :class:`TcpLayer`."""

    __slots__ = (
        "layer", "cfg", "local_ip", "local_port", "remote_ip", "remote_port", "state", "listener",
        # send sequence space (RFC 9293 §3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd",
        "_sndbuf", "_buf_seq", "sndbuf_limit", "_fin_queued",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "asm", "rcvbuf", "_peer_fin", "_fin_rcvd", "rcv_up",
        # options
        "peer_mss", "_mss_total", "mss", "snd_wscale", "rcv_wscale", "ws_ok", "ts_ok", "ts_recent",
        "ts_recent_at", "ts_offset", "sack_ok", "_rcv_mss", "last_ack_sent",
        # retransmission (RFC 6298) and congestion
        "srtt", "rttvar", "rto", "_backoff", "_rtt_seq", "_rtt_time", "_retransmitted", "_rto_tsval", "dupacks",
        "recover", "cc", "_syn_retries", "_stall_since", "_persist",
        # timers; _sched: the deadline of this connection's entry in the layer's timer heap
        "rtx_at", "delack_at", "keep_at", "tw_at", "_sched",
        # ACK state
        "_ack_now", "_rcv_unacked", "_dsack",
        # application side
        "error", "soft_error", "was_reset", "orphan", "rd_shut", "wr_shut", "nodelay", "keepalive",
        "keepidle", "keepintvl", "keepcnt", "_keep_probes", "user_timeout", "linger",
        # counters for info()
        "retrans", "retrans_total", "bytes_sent", "bytes_acked", "bytes_received", "segs_in", "segs_out",
        "last_rx",
    )

    def __init__(self, layer, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                 cc: CongestionControl, *, rcvbuf: int, sndbuf: int) -> None:
        self.layer = layer
        cfg = self.cfg = layer.config
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.state = S.CLOSED
        self.listener = None  # the listening socket while not accepted (passive open)
        self.iss = self.snd_una = self.snd_nxt = self.snd_max = 0
        self.snd_wnd = self.snd_wl1 = self.snd_wl2 = self.max_snd_wnd = 0
        self._sndbuf = bytearray()
        self._buf_seq = 0
        self.sndbuf_limit = sndbuf
        self._fin_queued = False
        self.irs = self.rcv_nxt = self.rcv_adv = 0
        self.asm: Assembler | None = None
        self.rcvbuf = rcvbuf
        self._peer_fin: int | None = None
        self._fin_rcvd = False
        self.rcv_up: int | None = None
        self.peer_mss = DEFAULT_MSS
        self._mss_total = min(DEFAULT_MSS, layer.mss_local)
        self.mss = self._mss_total
        self.snd_wscale = 0
        ws = 0
        while ws < MAX_WSCALE and (rcvbuf >> ws) > 0xFFFF:
            ws += 1
        self.rcv_wscale = ws if cfg.window_scaling else 0  # what we offer; 0 if not agreed
        self.ws_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_at: int | None = None
        self.ts_offset = layer.isn.ts_offset(local_ip, local_port, remote_ip, remote_port)
        self.sack_ok = False
        self._rcv_mss = min(DEFAULT_MSS, layer.mss_local)
        self.last_ack_sent = 0
        self.srtt: int | None = None
        self.rttvar = 0
        self.rto = cfg.initial_rto  # RFC 6298 §2.1: 1 s before any sample
        self._backoff = 0
        self._rtt_seq: int | None = None
        self._rtt_time = 0
        self._retransmitted = False
        self._rto_tsval: int | None = None  # our TSval when the last RTO fired (see _rttm)
        self.dupacks = 0
        self.recover = 0
        self.cc = cc
        self._syn_retries = 0
        self._stall_since: int | None = None
        self._persist = False
        self.rtx_at: int | None = None
        self.delack_at: int | None = None
        self.keep_at: int | None = None
        self.tw_at: int | None = None
        self._sched: int | None = None  # owned by the layer (TcpLayer._schedule)
        self._ack_now = False
        self._rcv_unacked = 0
        self._dsack: tuple[int, int] | None = None
        self.error = 0
        self.soft_error = 0
        self.was_reset = False
        self.orphan = False
        self.rd_shut = False
        self.wr_shut = False
        self.nodelay = False
        self.keepalive = False
        self.keepidle = cfg.keepalive_idle
        self.keepintvl = cfg.keepalive_interval
        self.keepcnt = cfg.keepalive_count
        self._keep_probes = 0
        self.user_timeout = cfg.user_timeout
        self.linger: tuple[bool, int] = (False, 0)
        self.retrans = self.retrans_total = 0
        self.bytes_sent = self.bytes_acked = self.bytes_received = 0
        self.segs_in = self.segs_out = 0
        self.last_rx = 0

    # -- state ---------------------------------------------------------------------------------------

    def _set_state(self, new: State, now: int) -> None:
        """The one place the state changes: check :data:`TRANSITIONS`, log, tell the layer."""
        old = self.state
        if new == old:
            return
        if new != S.CLOSED and new not in TRANSITIONS[old]:
            raise AssertionError(f"illegal TCP transition {old.label} -> {new.label} on {self!r}")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d <-> %s:%d %s -> %s", self.layer.ip_str(self.local_ip), self.local_port,
                      self.layer.ip_str(self.remote_ip), self.remote_port, old.label, new.label)
        self.state = new
        if new == S.CLOSED:
            self.rtx_at = self.delack_at = self.keep_at = self.tw_at = None
            self._ack_now = False
        elif new == S.TIME_WAIT:
            # RFC 9293 §3.6.1: 2*MSL; nothing else remains to time.
            self.rtx_at = self.delack_at = self.keep_at = None
            self.tw_at = now + 2 * self.cfg.msl
        self.layer._state_changed(self, old, new, now)

    @property
    def readable_bytes(self) -> int:
        return self.asm.readable if self.asm is not None else 0

    @property
    def unsent_or_unacked(self) -> int:
        return len(self._sndbuf)

    @property
    def eof(self) -> bool:
        """The peer's FIN has been received and every byte before it read."""
        return self._fin_rcvd and (self.asm is None or self.asm.readable == 0)

    # -- opening -------------------------------------------------------------------------------------

    def active_open(self, now: int) -> None:
        """RFC 9293 §3.10.1 OPEN (active): choose the ISS, enter SYN-SENT; the SYN goes out in output()."""
        self.iss = self.layer.isn.isn(now, self.local_ip, self.local_port, self.remote_ip, self.remote_port)
        self.snd_una = self.recover = self.iss  # RFC 6582 §3.2 step 1: recover = ISS
        self.snd_nxt = self.snd_max = self.iss  # the SYN is sent by output()
        self._buf_seq = (self.iss + 1) & _MASK
        self._set_state(S.SYN_SENT, now)
        self.layer._mark(self)

    def passive_open(self, now: int, f, listener, above: int | None = None) -> None:
        """RFC 9293 §3.10.7.2 LISTEN, third check: a SYN for a listening socket.

        Set RCV.NXT = SEG.SEQ+1, IRS = SEG.SEQ, select the ISS, queue
        <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and enter SYN-RECEIVED.
        ``above``: the previous incarnation's highest sequence number when
        this SYN reopens a TIME-WAIT connection; the ISS must exceed it
        (RFC 1122 §4.2.2.13 (1)).
        """
        self.listener = listener
        self.state = S.LISTEN  # the child starts as a copy of its listener
        self._take_syn(now, f)
        self.iss = self.layer.isn.isn(now, self.local_ip, self.local_port, self.remote_ip, self.remote_port)
        if above is not None and _d(self.iss, above) <= 0:
            # Past the old incarnation's sequence space and any window it
            # offered unscaled, as Linux does (tw_snd_nxt + 65535 + 2).
            self.iss = (above + 0xFFFF + 2) & _MASK
        self.snd_una = self.snd_nxt = self.snd_max = self.recover = self.iss
        self._buf_seq = (self.iss + 1) & _MASK
        self.snd_wnd = f.window  # RFC 7323 §2.2: the window of a SYN is never scaled
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = f.seq
        self.snd_wl2 = self.iss
        self._set_state(S.SYN_RECEIVED, now)
        self._ack_now = True  # output() sends the SYN-ACK
        self.layer._mark(self)

    def _take_syn(self, now: int, f) -> None:
        """Record the peer's SYN: IRS, RCV.NXT, the receive buffer, and its options (RFC 9293 §3.10.7.2-3)."""
        cfg = self.cfg
        self.irs = f.seq
        self.rcv_nxt = (f.seq + 1) & _MASK
        self.asm = Assembler(self.rcvbuf, self.rcv_nxt, cfg.max_ooo_ranges)
        # MSS (RFC 9293 §3.7.1, MUST-14..16): 536 when absent (MUST-15).
        peer_mss = f.mss if f.mss > 0 else DEFAULT_MSS
        self.peer_mss = max(peer_mss, 64)
        # Window scale (RFC 7323 §2.2): both SYNs must carry it; shifts above 14 are 14 (§2.3).
        self.ws_ok = f.wscale >= 0 and cfg.window_scaling
        if self.ws_ok:
            self.snd_wscale = min(f.wscale, MAX_WSCALE)
            if f.wscale > MAX_WSCALE:
                self.layer.stats.incr("tcp.wscale_clamped")
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        # Timestamps (RFC 7323 §3.2): used when both SYNs carry the option.
        if f.ts_val >= 0 and cfg.timestamps:
            self.ts_ok = True
            self.ts_recent = f.ts_val
            self.ts_recent_at = now
        else:
            self.ts_ok = False
        # SACK (RFC 2018 §2): both SYNs must carry SACK-permitted.
        self.sack_ok = bool(f.sack_permitted) and cfg.sack
        self._set_mss()
        # The right edge our SYN or SYN-ACK offers (unscaled, RFC 7323 §2.2).
        self.rcv_adv = (self.rcv_nxt + min(self.rcvbuf, 0xFFFF)) & _MASK

    def _set_mss(self) -> None:
        """Effective send MSS, RFC 9293 §3.7.1 (MUST-16): min(SendMSS, MMS_S - 20) - option bytes."""
        self._mss_total = min(self.peer_mss, self.layer.mss_local)
        self.mss = max(self._mss_total - (12 if self.ts_ok else 0), 1)
        self._rcv_mss = min(self.layer.mss_local - (12 if self.ts_ok else 0), DEFAULT_MSS)
        self.cc.set_mss(self.mss)

    # -- application calls (the socket) -------------------------------------------------------------

    def app_send(self, data) -> int:
        """Take as much of ``data`` as the send buffer holds; returns the count (0: full)."""
        room = self.sndbuf_limit - len(self._sndbuf)
        if room <= 0:
            return 0
        n = len(data)
        if n > room:
            n = room
            self._sndbuf += memoryview(data)[:n]
        else:
            self._sndbuf += data
        if self.state in _SENDING or self.state == S.SYN_SENT or self.state == S.SYN_RECEIVED:
            self.layer._mark(self)
        return n

    def app_recv_into(self, buf) -> int:
        asm = self.asm
        if asm is None:
            return 0
        before = asm.window
        n = asm.read_into(buf)
        if n:
            self._after_read(before)
        return n

    def app_recv(self, n: int) -> bytes:
        asm = self.asm
        if asm is None:
            return b""
        before = asm.window
        data = asm.read(n)
        if data:
            self._after_read(before)
        return data

    def _after_read(self, before: int) -> None:
        """A window update when reading opened the window enough (RFC 9293 §3.8.6.2.2, SHLD-13).

        The right edge moves only by at least min(RCV.BUFF/2, Eff.snd.MSS);
        an update is sent only when the window currently offered is under
        half the buffer, so a bulk reader does not answer every read with
        an ACK, but a drained full buffer always opens the window at once.
        """
        if self.state not in _TEXT_STATES or self._fin_rcvd:
            return
        cap = min(self.rcvbuf, 0xFFFF << self.rcv_wscale)  # the most we can advertise
        cur = _d(self.rcv_adv, self.rcv_nxt)
        if cur < 0:
            cur = 0
        avail = min(self.asm.window, cap)
        if cur < cap // 2 and avail - cur >= min(cap // 2, self._rcv_mss):
            self._ack_now = True
            self.layer._mark(self)

    def shutdown_write(self, now: int) -> None:
        """RFC 9293 §3.10.4 CLOSE for the sending half: queue a FIN after the data."""
        st = self.state
        self.wr_shut = True
        if st in (S.CLOSED, S.LISTEN, S.SYN_SENT):
            # §3.10.4: LISTEN / SYN-SENT: delete the TCB.
            self.error = self.error or 0
            self._set_state(S.CLOSED, now)
            return
        if self._fin_queued:
            return
        if st in (S.SYN_RECEIVED, S.ESTABLISHED):
            self._fin_queued = True
            self._set_state(S.FIN_WAIT_1, now)
        elif st == S.CLOSE_WAIT:
            self._fin_queued = True
            self._set_state(S.LAST_ACK, now)
        self.layer._mark(self)

    def app_close(self, now: int) -> None:
        """The socket's close(): FIN (orderly), or RST when data was left unread or linger is (on, 0)."""
        self.orphan = True
        if self.state in (S.CLOSED, S.LISTEN, S.SYN_SENT):
            self._set_state(S.CLOSED, now)
            return
        unread = self.asm is not None and self.asm.readable > 0
        if unread or self.linger == (True, 0):
            # RFC 1122 §4.2.2.13 (RFC 9293 §3.6 "data lost"): CLOSE with
            # received data pending SHOULD send a RST; SO_LINGER 0 aborts (Linux).
            self.layer.stats.incr("tcp.close_unread_rst" if unread else "tcp.linger_abort")
            self.abort(now)
            return
        self.shutdown_write(now)
        if self.state == S.FIN_WAIT_2:
            self.tw_at = now + self.cfg.fin_wait2_timeout

    def abort(self, now: int, code: int = 0) -> None:
        """RFC 9293 §3.10.5 ABORT: a RST in the synchronized states (and SYN-RECEIVED), then CLOSED."""
        if self.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            self.layer._emit_rst(self, self.snd_max)
        if code:
            self.error = code
        self._set_state(S.CLOSED, now)

    # -- timers ---------------------------------------------------------------------------------------

    def poll_at(self) -> int | None:
        best = self.rtx_at
        for t in (self.delack_at, self.keep_at, self.tw_at):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_timer(self, now: int) -> None:
        """Run every timer due at ``now`` (the layer calls output() afterwards)."""
        if self.tw_at is not None and self.tw_at <= now:
            self.tw_at = None
            if self.state == S.TIME_WAIT:
                self.layer.stats.incr("tcp.time_wait_expired")
            else:
                self.layer.stats.incr("tcp.fin_wait2_timeout")  # Linux tcp_fin_timeout for orphans
            self._set_state(S.CLOSED, now)
            return
        if self.rtx_at is not None and self.rtx_at <= now:
            self.rtx_at = None
            self._on_rtx_timer(now)
            if self.state == S.CLOSED:
                return
        if self.delack_at is not None and self.delack_at <= now:
            self.delack_at = None
            self._ack_now = True
        if self.keep_at is not None and self.keep_at <= now:
            self.keep_at = None
            self._on_keepalive(now)

    def _rto_now(self) -> int:
        t = self.rto << self._backoff
        mx = self.cfg.max_rto
        return t if t < mx else mx

    def _arm_rtx(self, now: int) -> None:
        self.rtx_at = now + self._rto_now()

    def _on_rtx_timer(self, now: int) -> None:
        st = self.state
        stats = self.layer.stats
        if self._persist:
            self._on_persist(now)
            return
        flight = _d(self.snd_max, self.snd_una)
        if flight <= 0:
            return
        # User timeout (RFC 9293 §3.8.3 R2, MUST-20; RFC 5482): abort when the
        # oldest unacknowledged data has waited longer than user_timeout.
        if self._stall_since is not None and now - self._stall_since >= self.user_timeout:
            stats.incr("tcp.user_timeout")
            self._timeout(now)
            return
        if st == S.SYN_SENT or st == S.SYN_RECEIVED:
            # RFC 9293 §3.8.1 / RFC 1122 §4.2.3.5: SYN and SYN-ACK retransmitted,
            # at most syn_retries / synack_retries times (Linux's counts).
            limit = self.cfg.syn_retries if st == S.SYN_SENT else self.cfg.synack_retries
            if self._syn_retries >= limit:
                stats.incr("tcp.syn_timeout")
                self._timeout(now)
                return
            self._syn_retries += 1
            self._retransmitted = True
            self._rtt_seq = None  # Karn
            self._backoff += 1
            self._count_retrans()
            if st == S.SYN_SENT:
                self._send_syn(now, False)
            else:
                self._send_syn(now, True)
            self._arm_rtx(now)
            return
        if self.snd_wnd == 0 and _d(self.snd_nxt, self.snd_una) <= 1 and len(self._sndbuf):
            # A zero-window probe went unanswered: probe again with backoff, no
            # congestion response and no user timeout while the peer answers
            # (MUST-35..37; see _on_persist).
            self._backoff += 1
            self._count_retrans()
            self._send_data(now, self.snd_una, 1, retrans=True)
            self._arm_rtx(now)
            return
        # RFC 6298 §5.4-5.6: retransmit the earliest unacknowledged segment,
        # back off, restart the timer.  RFC 5681 §3.1: cwnd to one segment,
        # and (go-back-N) everything after SND.UNA is resent as cwnd allows.
        stats.incr("tcp.rto")
        self.cc.on_rto(flight)
        self.recover = self.snd_max  # RFC 6582 §3.2 step 4 after a timeout
        self.dupacks = 0
        self._backoff += 1
        self._retransmitted = True
        self._rtt_seq = None  # Karn's algorithm (RFC 6298 §3)
        if self.ts_ok:
            self._rto_tsval = (now // TS_TICK_US + self.ts_offset) & _MASK  # Karn for echoes (_rttm)
        self.snd_nxt = self.snd_una
        off = _d(self.snd_una, self._buf_seq)
        n = len(self._sndbuf) - off
        self._send_new(now, n if n < self.mss else self.mss)
        self._arm_rtx(now)

    def _timeout(self, now: int) -> None:
        # The application gets ETIMEDOUT, or the soft error that explains it
        # (RFC 1122 §4.2.3.9; Linux reports sk_err_soft this way).
        self.error = self.soft_error or errno.ETIMEDOUT
        if self.state == S.SYN_RECEIVED and self.listener is not None:
            self._set_state(S.CLOSED, now)  # a half-open passive connection just goes (as Linux)
            return
        self.abort(now)

    def _count_retrans(self) -> None:
        self.retrans += 1
        self.retrans_total += 1
        self.layer.stats.incr("tcp.retransmits")

    def _send_from_una(self, now: int) -> None:
        """Retransmit one segment at SND.UNA (data, or the FIN alone)."""
        off = _d(self.snd_una, self._buf_seq)
        n = len(self._sndbuf) - off
        if n > self.mss:
            n = self.mss
        sent = _d(self.snd_max, self.snd_una)  # never beyond what was sent (snd_max)
        if n > sent:
            n = sent
        self._count_retrans()
        self._send_data(now, self.snd_una, n, retrans=True)

    def _on_persist(self, now: int) -> None:
        """The persist timer (RFC 9293 §3.8.6.1) or the SWS override timer (§3.8.6.2.1).

        With a zero window, send one octet of new data as a probe and back
        off; a window that stays zero never aborts the connection (MUST-36,
        MUST-37: the peer's ACKs to the probes keep ``_stall_since`` fresh).
        With a small non-zero window the override sends what fits.
        """
        self._persist = False
        off = _d(self.snd_nxt, self._buf_seq)
        unsent = len(self._sndbuf) - off
        if unsent <= 0 or self.state not in _SENDING:
            return
        self.layer.stats.incr("tcp.persist_probes" if self.snd_wnd == 0 else "tcp.sws_override")
        room = _d((self.snd_una + self.snd_wnd) & _MASK, self.snd_nxt)
        n = min(unsent, self.mss, room if room > 0 else 1)
        if self.snd_wnd == 0:
            self._backoff += 1
        self._send_new(now, n)

    def _on_keepalive(self, now: int) -> None:
        """RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: <SEQ=SND.NXT-1> with no data; abort after keepcnt."""
        if not self.keepalive or self.state not in SYNCHRONIZED or self.state == S.TIME_WAIT:
            return
        if self._keep_probes >= self.keepcnt:
            self.layer.stats.incr("tcp.keepalive_timeout")
            self._timeout(now)
            return
        self._keep_probes += 1
        self.layer.stats.incr("tcp.keepalive_probes")
        self._emit(now, (self.snd_max - 1) & _MASK, ACK, None, 0)
        self.keep_at = now + self.keepintvl

    def rearm_keepalive(self, now: int) -> None:
        if self.keepalive and self.state in SYNCHRONIZED and self.state != S.TIME_WAIT:
            self.keep_at = now + self.keepidle
            # The socket's setsockopt calls this without marking the
            # connection dirty: tell the layer's timer heap directly.
            self.layer._schedule(self)
        else:
            self.keep_at = None

    # -- input: RFC 9293 §3.10.7 -------------------------------------------------------------------

    def segment(self, now: int, f, data) -> None:
        """Process one arriving segment (``f``: the fast-path Frame; ``data``: its payload view)."""
        self.segs_in += 1
        self.last_rx = now
        st = self.state
        # Header prediction (RFC 1323's Appendix A / Van Jacobson's fast path,
        # kept in RFC 7323 Appendix D): the next in-order data segment of an
        # ESTABLISHED connection that changes nothing on the sending side --
        # plain ACK (PSH allowed), SEG.SEQ = RCV.NXT, SEG.ACK = SND.UNA, the
        # same window, no holes, a TSval that passes PAWS, in the window.  For
        # it every check of §3.10.7.4 is known to pass, and the steps that
        # remain are exactly these: ts_recent (RFC 7323 §4.3), SND.WL1/WL2
        # (fifth step), the text (seventh step).  Anything else takes the
        # full path below.
        if st is S.ESTABLISHED and (f.tcp_flags | PSH) == (ACK | PSH) and f.seq == self.rcv_nxt \
                and f.ack == self.snd_una and not self.orphan and not self.keepalive and self._peer_fin is None:
            dlen = len(data)
            seq = f.seq
            if dlen and (f.window << self.snd_wscale) == self.snd_wnd and self.snd_wnd \
                    and dlen <= ((self.rcv_adv - seq) & _MASK) < _HALF and not self.asm.range_count:
                if self.ts_ok:
                    tsval = f.ts_val
                    if tsval < 0 or ((tsval - self.ts_recent) & _MASK) >= _HALF:
                        return self._segment(now, f, data, st)
                    if seq == self.last_ack_sent or ((seq - self.last_ack_sent) & _MASK) >= _HALF:
                        self.ts_recent = tsval
                        self.ts_recent_at = now
                self.snd_wl1 = seq
                self.snd_wl2 = f.ack
                self._receive_text(now, seq, data, dlen)
                return
        self._segment(now, f, data, st)

    def _segment(self, now: int, f, data, st: State) -> None:
        """The full RFC 9293 §3.10.7 processing of one segment (see :meth:`segment`)."""
        if st == S.SYN_SENT:
            self._in_syn_sent(now, f, data)
            return
        if st == S.CLOSED or st == S.LISTEN:
            return
        flags = f.tcp_flags
        if st == S.TIME_WAIT and flags & (SYN | ACK | RST) == SYN and self.time_wait_may_reopen(f):
            # Before PAWS and the sequence check, which would reject it: a
            # new incarnation (RFC 6191 §2; RFC 9293 §3.10.7.4 / RFC 1122
            # §4.2.2.13).  The layer closes this TCB and hands the SYN to
            # the listener, if there is one.
            if self.layer._reopen_time_wait(self, now, f, data):
                return
        seq = f.seq
        dlen = len(data)
        stats = self.layer.stats
        if self.keepalive:
            self._keep_probes = 0
            self.keep_at = now + self.keepidle

        # PAWS, RFC 7323 §5.3 (before the sequence check, R1-R3).
        if self.ts_ok:
            tsval = f.ts_val
            if tsval < 0:
                if not flags & RST:
                    # RFC 7323 §3.2: once negotiated, a non-RST segment without
                    # TSopt SHOULD be silently dropped.
                    stats.incr("tcp.drop.no_timestamp")
                    return
            elif not flags & RST and ((tsval - self.ts_recent) & _MASK) >= _HALF:
                if self.ts_recent_at is not None and now - self.ts_recent_at > PAWS_IDLE_US:
                    self.ts_recent = tsval  # §5.5: ts_recent too old to judge by
                else:
                    stats.incr("tcp.drop.paws")
                    self._ack_now = True  # §5.3 R1: send an ACK, drop
                    return

        # first: the sequence number (RFC 9293 §3.10.7.4, the acceptability table).
        rcv_nxt = self.rcv_nxt
        wnd = ((self.rcv_adv - rcv_nxt + _HALF) & _MASK) - _HALF
        if wnd < 0:
            wnd = 0
        seg_len = dlen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        off = (seq - rcv_nxt) & _MASK  # offset of SEG.SEQ in the window, unsigned
        if seg_len == 0:
            ok = off == 0 if wnd == 0 else off < wnd
        elif wnd == 0:
            ok = False
        else:
            ok = off < wnd or ((seq + seg_len - 1 - rcv_nxt) & _MASK) < wnd
        if not ok:
            if wnd == 0 and off == 0:
                # "Special allowance ... to accept valid ACKs, URGs, and RSTs"
                # with a zero window (§3.10.7.4): the text and FIN are dropped
                # (a zero-window probe), the rest is processed, an ACK follows.
                stats.incr("tcp.zero_window_drop")
                data = data[:0]
                dlen = 0
                flags &= ~FIN
                self._ack_now = True
            else:
                if flags & RST:
                    stats.incr("tcp.drop.rst_out_of_window")  # RFC 5961 §3.2: silently drop
                    return
                stats.incr("tcp.drop.out_of_window")
                # §3.10.7.4: send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and drop.
                # A duplicate of received data: D-SACK it (RFC 2883 §4).
                if dlen and self.sack_ok and self.cfg.dsack and _d((seq + dlen) & _MASK, rcv_nxt) <= 0:
                    self._dsack = (seq, (seq + dlen) & _MASK)
                if st == S.TIME_WAIT and flags & FIN:
                    # A retransmitted FIN: re-ACK it and restart 2*MSL (§3.10.7.4 eighth, TIME-WAIT).
                    self.tw_at = now + 2 * self.cfg.msl
                self._ack_now = True
                return

        # RFC 7323 §4.3 (3): remember TSval if the segment covers Last.ACK.sent.
        if self.ts_ok and f.ts_val >= 0 and _d(seq, self.last_ack_sent) <= 0:
            self.ts_recent = f.ts_val
            self.ts_recent_at = now

        # second: RST (RFC 9293 §3.10.7.4; RFC 5961 §3.2).
        if flags & RST:
            if seq != rcv_nxt:
                # In the window but not exact: challenge ACK (RFC 5961 §3.2).
                self._challenge_ack(now, "rst")
                return
            stats.incr("tcp.resets_received")
            if st == S.SYN_RECEIVED and self.listener is not None:
                # Passive open: the half-made connection just goes (RFC 9293:
                # "return this connection to LISTEN"; the listener stays).
                self._set_state(S.CLOSED, now)
                return
            if st in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
                # "any outstanding RECEIVEs and SEND should receive reset responses"
                self.error = errno.ECONNREFUSED if st == S.SYN_RECEIVED else errno.ECONNRESET
                self.was_reset = True
            self._set_state(S.CLOSED, now)
            return

        # third: security and compartment -- pystack sends and honours no IP
        # security option (RFC 9293 §3.10.7.4 third; RFC 1122 §4.2.2.23 option).

        # fourth: SYN (RFC 9293 §3.10.7.4 fourth; RFC 5961 §4.2).
        if flags & SYN:
            if st == S.SYN_RECEIVED and self.listener is not None and seq == self.irs:
                # A retransmitted SYN: answer with the SYN-ACK again.
                self._ack_now = True
                return
            self._challenge_ack(now, "syn")
            return

        # fifth: ACK.
        if not flags & ACK:
            stats.incr("tcp.drop.no_ack")  # "if the ACK bit is off, drop the segment"
            return
        ack = f.ack
        if st == S.SYN_RECEIVED:
            # If SND.UNA < SEG.ACK =< SND.NXT, enter ESTABLISHED; else RST <SEQ=SEG.ACK>.
            if not (_d(ack, self.snd_una) > 0 and _d(ack, self.snd_max) <= 0):
                self.layer._emit_rst_for(self, ack)
                stats.incr("tcp.drop.bad_ack")
                return
            if self.listener is not None and not self.listener._accept_room():
                # Accept queue full: drop the ACK and stay in SYN-RECEIVED;
                # the SYN-ACK retransmission tries again (Linux's behaviour).
                stats.incr("tcp.drop.accept_queue_full")
                return
            self.snd_wnd = f.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._established(now)
        if not self._process_ack(now, f, seq, ack, dlen, flags):
            return
        st = self.state
        if st == S.CLOSED:
            return

        # sixth: URG (RFC 9293 §3.8.5, §3.10.7.4 sixth).  The urgent pointer
        # is recorded (``rcv_up``) and the data stays in line (RFC 6093 §5).
        if flags & URG and st in _TEXT_STATES:
            up = (seq + f.urgent) & _MASK
            if self.rcv_up is None or _d(up, self.rcv_up) > 0:
                self.rcv_up = up
                stats.incr("tcp.urgent_received")

        # seventh: the segment text.
        if dlen:
            if st in _TEXT_STATES:
                if self.orphan:
                    # RFC 1122 §4.2.2.13: data after CLOSE -> RST (data is lost).
                    stats.incr("tcp.data_after_close")
                    self.abort(now)
                    return
                self._receive_text(now, seq, data, dlen)
            else:
                stats.incr("tcp.drop.text_after_fin")  # CLOSE-WAIT ... TIME-WAIT: ignore

        # eighth: FIN.
        if flags & FIN:
            self._peer_fin = (seq + dlen) & _MASK
        if self._peer_fin is not None and not self._fin_rcvd and self.asm.rcv_nxt == self._peer_fin:
            self._on_fin(now)
        elif flags & FIN:
            self._ack_now = True  # an out-of-order FIN: ACK what we have

    def time_wait_may_reopen(self, f) -> bool:
        """Whether a SYN (no ACK, no RST) may end this TIME-WAIT and open a new incarnation.

        RFC 6191 §2, with "the last timestamp / sequence number seen on the
        previous incarnation" being TS.Recent and RCV.NXT:

        * the new incarnation would use timestamps (the SYN has TSopt and we
          enable them) and the old one did: SEG.TSval > TS.Recent, or equal
          and SEG.SEQ > RCV.NXT;
        * the new one would not use timestamps but the old one did: honour;
        * the old one did not: SEG.SEQ > RCV.NXT (RFC 1122 §4.2.2.13, which
          RFC 6191 keeps for this case; Linux applies it also when only the
          new SYN carries timestamps, and so do we).

        Otherwise the SYN gets what a SYN in a synchronized state gets: PAWS,
        the sequence check, and the RFC 5961 §4.2 challenge ACK (RFC 6191
        says "silently drop"; RFC 9293 §3.10.7.4's fourth step, which cites
        RFC 5961, takes precedence here as it did before; the challenge ACK
        also lets a peer whose SYN is legitimate reset the TIME-WAIT TCB
        with the RST its SYN-SENT state answers it with).
        """
        seq_newer = 0 < ((f.seq - self.rcv_nxt) & _MASK) < _HALF
        new_ts = f.ts_val >= 0 and self.cfg.timestamps
        if self.ts_ok:
            if not new_ts:
                return True
            d = (f.ts_val - self.ts_recent) & _MASK
            return 0 < d < _HALF or (d == 0 and seq_newer)
        return seq_newer

    def _established(self, now: int) -> None:
        if self._retransmitted and self.srtt is None:
            self.rto = max(self.rto, 3_000_000)  # RFC 6298 §5.7
        self._backoff = 0
        self._syn_retries = 0
        self._set_state(S.ESTABLISHED, now)
        self.rearm_keepalive(now)

    def _in_syn_sent(self, now: int, f, data) -> None:
        """RFC 9293 §3.10.7.3 SYN-SENT STATE."""
        flags = f.tcp_flags
        stats = self.layer.stats
        ack = f.ack
        # first: the ACK bit.
        if flags & ACK:
            if _d(ack, self.iss) <= 0 or _d(ack, self.snd_max) > 0:
                # Unacceptable: <SEQ=SEG.ACK><CTL=RST> unless RST is set.
                stats.incr("tcp.drop.bad_ack")
                if not flags & RST:
                    self.layer._emit_rst_for(self, ack)
                return
        # second: RST -- acceptable only with an acceptable ACK (RFC 5961 §3.2).
        if flags & RST:
            if flags & ACK:
                stats.incr("tcp.resets_received")
                self.error = errno.ECONNREFUSED
                self.was_reset = True
                self._set_state(S.CLOSED, now)
            else:
                stats.incr("tcp.drop.rst_no_ack")
            return
        # third: security (nothing to check, see segment()).
        # fourth: SYN.
        if not flags & SYN:
            stats.incr("tcp.drop.no_syn")
            return
        self._take_syn(now, f)
        self.snd_wnd = f.window  # unscaled in a SYN (RFC 7323 §2.2)
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = f.seq
        self.snd_wl2 = ack
        if flags & ACK:
            self.snd_una = ack
            self.snd_nxt = ack if _d(ack, self.snd_nxt) > 0 else self.snd_nxt
            if self._rtt_seq is not None and not self._retransmitted:
                self._rtt_sample(now - self._rtt_time)
            self._rtt_seq = None
        if _d(self.snd_una, self.iss) > 0:
            self.rtx_at = None
            self._stall_since = None
            self._established(now)
            self._ack_now = True
            if len(data):
                self._receive_text(now, (f.seq + 1) & _MASK, data, len(data))
            if f.tcp_flags & FIN:
                self._peer_fin = (f.seq + 1 + len(data)) & _MASK
                if self.asm.rcv_nxt == self._peer_fin:
                    self._on_fin(now)
        else:
            # Simultaneous open (MUST-10): SYN-RECEIVED, send SYN,ACK <SEQ=ISS>.
            stats.incr("tcp.simultaneous_open")
            self._set_state(S.SYN_RECEIVED, now)
            self._ack_now = True

    def _challenge_ack(self, now: int, why: str) -> None:
        """RFC 5961 §3.2, §4.2, §5.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, rate limited (§7)."""
        stats = self.layer.stats
        if self.layer._challenge_allowed(now):
            stats.incr("tcp.challenge_acks")
            stats.incr(f"tcp.challenge_acks_{why}")
            if self.state in SYNCHRONIZED:
                self._emit(now, self.snd_max, ACK, None, 0)  # one per offending segment
            else:
                self._ack_now = True
        else:
            stats.incr("tcp.challenge_acks_rate_limited")

    def _process_ack(self, now: int, f, seq: int, ack: int, dlen: int, flags: int) -> bool:
        """RFC 9293 §3.10.7.4 fifth, ESTABLISHED and after; False when the segment is dropped."""
        una = self.snd_una
        d_una = ((ack - una + _HALF) & _MASK) - _HALF
        d_max = ((ack - self.snd_max + _HALF) & _MASK) - _HALF
        stats = self.layer.stats
        if d_max > 0:
            # "If the ACK acks something not yet sent (SEG.ACK > SND.NXT), send an
            # ACK, drop the segment" (RFC 5961 §5.2 makes it a challenge ACK).
            stats.incr("tcp.drop.ack_unsent")
            self._challenge_ack(now, "ack")
            return False
        if d_una < -self.max_snd_wnd:
            # RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND: challenge ACK, drop.
            stats.incr("tcp.drop.ack_too_old")
            self._challenge_ack(now, "ack")
            return False
        st = self.state
        wnd = f.window << self.snd_wscale
        if d_una > 0:
            self._ack_advance(now, f, ack, d_una)
        elif d_una == 0 and dlen == 0 and not flags & (SYN | FIN) and wnd == self.snd_wnd \
                and self.snd_max != una and wnd:  # answers to zero-window probes are no loss signal
            self._dupack(now)
        # Window update (§3.10.7.4 fifth): if SND.WL1 < SEG.SEQ or (SND.WL1 =
        # SEG.SEQ and SND.WL2 =< SEG.ACK).  A shrinking window (MUST-34) is
        # accepted: data beyond it just waits; nothing is taken back.
        dw = ((seq - self.snd_wl1 + _HALF) & _MASK) - _HALF
        if d_una >= 0 and (dw > 0 or (dw == 0 and _d(ack, self.snd_wl2) >= 0)):
            if wnd != self.snd_wnd:
                if wnd > self.snd_wnd:
                    self.layer._mark(self)
                    if self._persist:
                        self.rtx_at = None
                        self._persist = False
                        self._backoff = 0
                elif wnd < self.snd_wnd and _d((ack + wnd) & _MASK, (self.snd_wl2 + self.snd_wnd) & _MASK) < 0:
                    stats.incr("tcp.window_shrunk")
                self.snd_wnd = wnd
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        if self.snd_wnd == 0 and len(self._sndbuf):
            # The peer answers while its window stays closed: alive (MUST-37).
            self._stall_since = now if self._stall_since is not None else None
        # State-specific parts of the fifth step.
        if self._fin_queued and st in (S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK):
            fin_acked = self._fin_sent() and self.snd_una == ((self._buf_seq + len(self._sndbuf) + 1) & _MASK)
            if fin_acked:
                if st == S.FIN_WAIT_1:
                    self._set_state(S.FIN_WAIT_2, now)
                    if self.orphan:
                        self.tw_at = now + self.cfg.fin_wait2_timeout
                elif st == S.CLOSING:
                    self._set_state(S.TIME_WAIT, now)
                    return False
                else:  # LAST-ACK: "delete the TCB, enter CLOSED"
                    self._set_state(S.CLOSED, now)
                    return False
        if st == S.TIME_WAIT:
            # "The only thing that can arrive in this state is a retransmission of
            # the remote FIN" -- handled by the sequence check; ACK what comes.
            if flags & FIN:
                self._ack_now = True
                self.tw_at = now + 2 * self.cfg.msl
            return False
        return True

    def _fin_sent(self) -> bool:
        return self._fin_queued and _d(self.snd_max, (self._buf_seq + len(self._sndbuf)) & _MASK) > 0

    def _ack_advance(self, now: int, f, ack: int, acked: int) -> None:
        """SND.UNA < SEG.ACK =< snd_max: new data acknowledged (RFC 9293 §3.10.7.4; RFC 6298; RFC 5681)."""
        buf_off = ((ack - self._buf_seq + _HALF) & _MASK) - _HALF
        buffered = len(self._sndbuf)
        if buf_off > 0:
            n = buf_off if buf_off < buffered else buffered
            del self._sndbuf[:n]
            self._buf_seq = (self._buf_seq + n) & _MASK
            self.bytes_acked += n
            if self.state in _SENDING or self.state == S.SYN_RECEIVED:
                self.layer._note_writable(self)
        self.snd_una = ack
        if ((self.snd_nxt - ack + _HALF) & _MASK) - _HALF < 0:
            self.snd_nxt = ack  # data the go-back-N resend had not reached yet
        # RTT measurement.  With timestamps, RTTM (RFC 7323 §4): a sample
        # from every ACK that advances SND.UNA (§4.1), weighted per
        # Appendix G; without them, Karn's algorithm (RFC 6298 §3): one timed
        # segment at a time, never a retransmitted one.
        if self.ts_ok:
            self._rttm(now, f, ack, acked)
        elif self._rtt_seq is not None and _d(ack, self._rtt_seq) >= 0:
            self._rtt_sample(now - self._rtt_time)
            self._rtt_seq = None
        self._backoff = 0
        self._retransmitted = False
        self.retrans = 0
        # Congestion control: NewReno recovery (RFC 6582 §3.2 steps 3 and 5), else RFC 5681.
        cc = self.cc
        flight = ((self.snd_max - ack) & _MASK)
        if una_was_iss := (((ack - acked) & _MASK) == self.iss):
            acked -= 1  # the SYN's sequence number is not data
        if cc.in_recovery:
            if _d(ack, self.recover) >= 0:
                cc.on_recovery_end(flight)
                self.dupacks = 0
            else:
                # Partial ACK: retransmit the first unacknowledged segment.
                cc.on_partial_ack(acked)
                self._send_from_una(now)
        else:
            self.dupacks = 0
            if acked > 0 or not una_was_iss:
                cc.on_ack(acked, now, self.srtt)
        # RFC 6298 §5.2 / §5.3: stop the timer when all is acknowledged, else restart.
        if flight == 0:
            self.rtx_at = None
            self._stall_since = None
            self._persist = False
        else:
            self._arm_rtx(now)
            self._stall_since = now
        self.layer._mark(self)

    def _dupack(self, now: int) -> None:
        """A duplicate ACK (RFC 5681 §2 definition): fast retransmit on the third (RFC 5681 §3.2)."""
        cc = self.cc
        self.layer.stats.incr("tcp.dupacks")
        if cc.in_recovery:
            cc.on_dupack()  # RFC 5681 §3.2 step 4
            self.layer._mark(self)
            return
        self.dupacks += 1
        if self.dupacks == 3:
            # RFC 6582 §3.2 step 2: only if the ACK covers more than ``recover``
            # (no new recovery for losses of one window already recovered).
            if _d(self.snd_una, self.recover) > 0:
                self.layer.stats.incr("tcp.fast_retransmits")
                self.recover = self.snd_max
                cc.on_loss(_d(self.snd_max, self.snd_una))
                self._rtt_seq = None
                self._send_from_una(now)
                self._arm_rtx(now)
        self.layer._mark(self)

    def _rttm(self, now: int, f, ack: int, acked: int) -> None:
        """One RTT sample per ACK that advances SND.UNA (RFC 7323 §4.1), timestamps negotiated.

        Called only from :meth:`_ack_advance`, so never for a duplicate ACK
        (RFC 7323 §4.1: "only if it acknowledges some new data, i.e., only
        if it advances the left edge of the send window").  The sample is the
        µs timing of the Karn-timed segment when this ACK covers it (the
        finer clock, as Linux prefers), else the age of the echoed TSecr in
        timestamp ticks (RFC 7323 §3.2: TSecr is valid since ACK is set).

        Why SRTT once inflated to tens of seconds under 10% loss (and what
        is done about it).  The receiver's echo rules make some samples
        conservative on purpose (RFC 7323 §4.3: TS.Recent is taken only
        from a segment with SEG.SEQ =< Last.ACK.sent, and §5.3 R2 rejects
        an old duplicate before R3 could record its TSval): the echo is the
        TSval of the last segment that advanced the peer's RCV.NXT.  After
        a hole (§4.3 case C) the sample spans the recovery, an RFC-intended
        overestimate that Appendix G's weighting dilutes among the window's
        samples.  After a retransmission timeout whose cause was a lost ACK
        (the peer had the data), the ACK to the retransmitted duplicate
        echoes the *original* transmission's TSval (RFC 3522 §2's spurious
        retransmission), so the sample is RTO + RTT: the backed-off timer
        itself.  Fed into SRTT (the old code did so at full weight, one
        sample per ACK) it raises RTO, which makes the next such sample
        larger -- the feedback that reached tens of seconds.  That is the
        ambiguity Karn's algorithm exists for (RFC 6298 §3: a backed-off RTO
        must not become a sample), so the same rule is applied to echoes:
        a TSecr older than our TSval at the last RTO is not sampled
        (``_rto_tsval``), until an echo of a later transmission arrives.
        Samples are never taken from duplicate ACKs (RFC 7323 §4.1), and the
        receiving side updates TS.Recent only per §4.3 (never from an
        out-of-order or out-of-window segment), as :meth:`segment` does.
        """
        if self._rtt_seq is not None and _d(ack, self._rtt_seq) >= 0:
            r = now - self._rtt_time
            self._rtt_seq = None
        elif f.ts_val >= 0:
            ecr = f.ts_ecr
            ticks = (now // TS_TICK_US + self.ts_offset - ecr) & _MASK
            if ticks >= _HALF:
                return  # an echo from the future: not a TSval we sent
            mark = self._rto_tsval
            if mark is not None:
                if ((ecr - mark) & _MASK) >= _HALF:
                    return  # echoes a transmission from before our last RTO: see above
                self._rto_tsval = None
            r = ticks * TS_TICK_US
        else:
            return  # PAWS let a segment without TSopt through (a RST): no sample
        # RFC 7323 Appendix G: ExpectedSamples = ceil(FlightSize / (2*SMSS)),
        # FlightSize being what was outstanding when this ACK arrived.
        flight = (self.snd_max - ack + acked) & _MASK
        per = 2 * self.mss
        self._rtt_sample(r, (flight + per - 1) // per)

    def _rtt_sample(self, r: int, samples: int = 1) -> None:
        """RFC 6298 §2.2-2.4, RTO clamped to [min_rto, max_rto]; in µs.

        ``samples`` is RFC 7323 Appendix G's ExpectedSamples: alpha' =
        alpha/ExpectedSamples and beta' = beta/ExpectedSamples (alpha 1/8,
        beta 1/4), so the ~FlightSize/(2*SMSS) samples of one window move
        SRTT and RTTVAR about as much as RFC 6298's one sample per RTT.
        With ``samples`` 1 (Karn's one timed segment per RTT) these are
        RFC 6298 §2.3's formulas.  RTTVAR is updated first, with the old
        SRTT (RFC 6298 §2.3).  Integer µs, rounded to nearest.
        """
        if r < 0:
            return
        srtt = self.srtt
        if srtt is None:
            self.srtt = srtt = r  # RFC 6298 §2.2: the first sample
            self.rttvar = r // 2
        else:
            if samples < 1:
                samples = 1
            delta = srtt - r
            if delta < 0:
                delta = -delta
            # RTTVAR <- (1 - beta') * RTTVAR + beta' * |SRTT - R'|
            d = 4 * samples
            self.rttvar += ((delta - self.rttvar) * 2 + d) // (2 * d)
            # SRTT <- (1 - alpha') * SRTT + alpha' * R'
            d = 8 * samples
            self.srtt = srtt = srtt + ((r - srtt) * 2 + d) // (2 * d)
        rto = srtt + max(1, 4 * self.rttvar)  # G: the clock is in µs
        cfg = self.cfg
        self.rto = cfg.min_rto if rto < cfg.min_rto else (cfg.max_rto if rto > cfg.max_rto else rto)

    def _receive_text(self, now: int, seq: int, data, dlen: int) -> None:
        """Seventh step: into the assembler; ACK now or later (RFC 9293 §3.8.6.3, RFC 5681 §4.2)."""
        asm = self.asm
        had_holes = asm.range_count
        advanced = asm.insert(seq, data)
        if dlen > self._rcv_mss:
            self._rcv_mss = dlen
        if self.sack_ok and self.cfg.dsack:
            d = asm.dsack
            if d is not None:
                self._dsack = d
        if advanced:
            self.rcv_nxt = asm.rcv_nxt
            self.bytes_received += advanced
            self.layer._note_readable(self)
            if had_holes or asm.range_count:
                # A hole filled (or still open): ACK at once (RFC 5681 §4.2 / §3.2).
                self._ack_now = True
                return
            self._rcv_unacked += advanced
            if self._rcv_unacked >= 2 * self._rcv_mss:
                # At least every second full-sized segment (RFC 5681 §4.2, RFC 9293 §3.8.6.3 SHLD-19).
                self._ack_now = True
            elif self.delack_at is None:
                # The delay: 40 ms, Linux's TCP_DELACK_MIN, far inside RFC 9293
                # §3.8.6.3's bound (MUST-40: under 0.5 s).
                self.delack_at = now + self.cfg.delayed_ack
        else:
            # Out of order or duplicate: an immediate (duplicate) ACK with SACK
            # blocks (RFC 5681 §4.2, RFC 2018 §4) -- one per segment, not
            # coalesced with the batch, since the sender counts them (§3.2).
            self.layer.stats.incr("tcp.out_of_order" if self._dsack is None else "tcp.duplicate_data")
            self._emit(now, self.snd_max, ACK, None, 0)

    def _on_fin(self, now: int) -> None:
        """Eighth step: the peer's FIN is in order (RFC 9293 §3.10.7.4 eighth)."""
        self._fin_rcvd = True
        self.rcv_nxt = (self.asm.rcv_nxt + 1) & _MASK
        self._ack_now = True
        self.layer._note_readable(self)
        st = self.state
        if st in (S.SYN_RECEIVED, S.ESTABLISHED):
            self._set_state(S.CLOSE_WAIT, now)
        elif st == S.FIN_WAIT_1:
            # Our FIN acknowledged by this segment went FIN-WAIT-2 above; else CLOSING.
            self._set_state(S.CLOSING, now)
        elif st == S.FIN_WAIT_2:
            self._set_state(S.TIME_WAIT, now)
        elif st == S.TIME_WAIT:
            self.tw_at = now + 2 * self.cfg.msl

    # -- output ---------------------------------------------------------------------------------------

    def output(self, now: int) -> None:
        """Send what the state, windows and algorithms allow (see the module docstring)."""
        st = self.state
        if st == S.CLOSED or st == S.LISTEN:
            return
        if st == S.SYN_SENT:
            if self.snd_max == self.iss:
                self._send_syn(now, False)
                self._rtt_seq = (self.iss + 1) & _MASK
                self._rtt_time = now
                self._stall_since = now
                self._arm_rtx(now)
            return
        if st == S.SYN_RECEIVED:
            if self._ack_now or self.snd_max == self.iss:
                first = self.snd_max == self.iss
                self._send_syn(now, True)
                if first:
                    self._rtt_seq = (self.iss + 1) & _MASK
                    self._rtt_time = now
                    self._stall_since = now
                if self.rtx_at is None:
                    self._arm_rtx(now)
            return
        if st in _SENDING:
            self._send_loop(now)
        if self._ack_now:
            # A pure ACK carries SEQ = snd_max, the RFC's SND.NXT: after an RTO
            # rewound our snd_nxt, an older SEQ would fail the peer's
            # acceptability test and the ACK would be lost.
            self._emit(now, self.snd_max, ACK, None, 0)

    def _send_loop(self, now: int) -> None:
        mss = self.mss
        buf = self._sndbuf
        while True:
            nxt = self.snd_nxt
            off = ((nxt - self._buf_seq + _HALF) & _MASK) - _HALF
            total = len(buf)
            unsent = total - off
            fin_due = self._fin_queued and unsent <= 0 and not self._fin_sent_at(nxt)
            if unsent <= 0 and not fin_due:
                return
            if unsent <= 0:
                # Only the FIN is left (it needs no window: RFC 9293 §3.10.4).
                if self.snd_una == self.iss:
                    return  # SYN not yet acknowledged (closing from SYN-RECEIVED)
                self._send_new(now, 0)
                return
            limit = self.snd_wnd
            cwnd = self.cc.cwnd
            if self.dupacks and not self.cc.in_recovery:
                # Limited transmit (RFC 3042 §2): a new segment for each of the
                # first two duplicate ACKs, so a small window still makes three.
                cwnd += self.dupacks * mss
            if cwnd < limit:
                limit = cwnd
            room = limit - (((nxt - self.snd_una) & _MASK))
            n = unsent
            if n > mss:
                n = mss
            if n > room:
                n = room
            if n <= 0:
                self._maybe_persist(now)
                return
            if n < mss:
                if n < unsent:
                    # Window-limited: sender SWS avoidance (RFC 9293 §3.8.6.2.1):
                    # send only if at least half the largest window seen.
                    if n < self.max_snd_wnd // 2:
                        self._maybe_persist(now)
                        return
                elif not self.nodelay and nxt != self.snd_una and not self._fin_queued:
                    # Nagle (RFC 9293 §3.7.4, SHLD-7): a short segment waits
                    # while data is unacknowledged, unless TCP_NODELAY.
                    return
            elif n < unsent and nxt == self.snd_max and self._dsack is None \
                    and not (self.sack_ok and self.asm.range_count) and self.rtx_at is not None \
                    and not self._persist and self._stall_since is not None:
                # New full-sized segments that are not the last of the buffer:
                # the bulk lane (issue 4 item 12).
                if self._send_bulk(now, (room if room < unsent else unsent) // mss):
                    continue
            self._send_new(now, n)

    def _send_bulk(self, now: int, count: int) -> int:
        """Send ``count`` new full-sized segments from SND.NXT = snd_max; returns how many went.

        The same segments :meth:`_send_new` would send one by one (ACK, no
        PSH or FIN since more data follows, the same options and window),
        built straight into fresh frames on the layer's queue: the options
        and the window field are computed once for the run, the per-segment
        work is one :func:`emit_tcp` call.  Called only while the
        retransmission timer runs and data is outstanding, so no timer or
        stall bookkeeping changes; RTT timing (RFC 6298 §3) starts on the
        first of them if no segment is being timed.
        """
        opts = self._options(now)
        mss = self.mss
        if count <= 0 or len(opts) + mss > self._mss_total:
            return 0
        layer = self.layer
        win = self._window_field()
        ack = self.rcv_nxt
        self.last_ack_sent = ack
        self._ack_now = False
        self.delack_at = None
        self._rcv_unacked = 0
        hlen = 54 + ((len(opts) + 3) & ~3)
        seq = self.snd_nxt
        off = ((seq - self._buf_seq + _HALF) & _MASK) - _HALF
        lip, rip, lport, rport = self.local_ip, self.remote_ip, self.local_port, self.remote_port
        mac, ttl = layer.mac, self.cfg.ttl
        txq_append = layer._txq.append
        ip_id = layer._ip_id
        mv = memoryview(self._sndbuf)
        try:
            for _ in range(count):
                frame = bytearray(hlen + mss)
                emit_tcp(frame, 0, _ZERO_MAC, mac, lip, rip, lport, rport, seq, ack, ACK, win, opts,
                         mv[off:off + mss], mss, ip_id, ttl)
                txq_append((rip, frame))
                ip_id = (ip_id + 1) & 0xFFFF
                seq = (seq + mss) & _MASK
                off += mss
        finally:
            mv.release()
        layer._ip_id = ip_id
        layer.stats.incr("tcp.tx", count)
        self._dsack = None
        n = count * mss
        self.bytes_sent += n
        self.segs_out += count
        self.snd_nxt = self.snd_max = seq
        if self._rtt_seq is None:
            self._rtt_seq = (self._buf_seq + off - n + mss) & _MASK  # time the first, as _send_new would
            self._rtt_time = now
        return count

    def _fin_sent_at(self, nxt: int) -> bool:
        """Whether SND.NXT = ``nxt`` is already past the FIN (it was sent, and not rewound by an RTO)."""
        fin_seq = (self._buf_seq + len(self._sndbuf)) & _MASK
        return _d(nxt, fin_seq) > 0

    def _maybe_persist(self, now: int) -> None:
        # Nothing in flight and nothing can be sent: the persist timer
        # (zero window, RFC 9293 §3.8.6.1) or the SWS override (§3.8.6.2.1).
        if self.rtx_at is None and self.snd_nxt == self.snd_una:
            self._persist = True
            self.rtx_at = now + self._rto_now()

    def _send_new(self, now: int, n: int) -> None:
        """Send ``n`` bytes at SND.NXT (+ the FIN when they are the last and it is queued)."""
        nxt = self.snd_nxt
        retrans = ((nxt - self.snd_max + _HALF) & _MASK) - _HALF < 0
        sent = self._send_data(now, nxt, n, retrans)
        end = (nxt + sent) & _MASK
        self.snd_nxt = end
        if ((end - self.snd_max + _HALF) & _MASK) - _HALF > 0:
            self.snd_max = end
        if retrans:
            self._count_retrans()
        elif self._rtt_seq is None and n:
            self._rtt_seq = end
            self._rtt_time = now
        if self.rtx_at is None or self._persist:
            self._persist = False
            self._arm_rtx(now)
        if self._stall_since is None:
            self._stall_since = now

    def _send_data(self, now: int, seq: int, n: int, retrans: bool) -> int:
        """Emit one segment of ``n`` buffered bytes at ``seq`` (+FIN if last); returns its SEG.LEN."""
        off = ((seq - self._buf_seq + _HALF) & _MASK) - _HALF
        total = len(self._sndbuf)
        if off + n > total:
            n = total - off
        if n < 0:
            n = 0
        opts = self._options(now)
        room = self._mss_total - len(opts)  # SACK blocks take room from the data (MUST-16)
        if n > room:
            n = room
        flags = ACK
        if off + n == total:
            if n:
                flags |= PSH
            # The FIN follows the last byte; a retransmission carries it only
            # if it was sent before (a retransmission never passes snd_max).
            if self._fin_queued and self.snd_una != self.iss and (not retrans or self._fin_sent()):
                flags |= FIN
        self._emit(now, seq, flags, self._sndbuf, n, off, opts)
        if n and not retrans:
            self.bytes_sent += n
        return n + (1 if flags & FIN else 0)

    def _send_syn(self, now: int, with_ack: bool) -> None:
        """SYN (<SEQ=ISS><CTL=SYN>) or SYN-ACK, with our options.

        A SYN offers every option the config enables; a SYN-ACK carries only
        those the peer's SYN offered (RFC 7323 §2.2, §3.2; RFC 2018 §2).  MSS
        always: our MMS_R - 20 (RFC 9293 §3.7.1, MUST-14 is a SHOULD to send it).
        """
        cfg = self.cfg
        opts = _MSS_OPT.pack(2, 4, self.layer.mss_local)
        if cfg.sack and (not with_ack or self.sack_ok):
            opts += _SACKPERM_NOPS
        if cfg.timestamps and (not with_ack or self.ts_ok):
            opts += _TS_OPT.pack(1, 1, 8, 10, (now // TS_TICK_US + self.ts_offset) & _MASK,
                                 self.ts_recent if with_ack else 0)
        if cfg.window_scaling and (not with_ack or self.ws_ok):
            opts += _NOP_WS.pack(1, 3, 3, self.rcv_wscale)
        flags = SYN | ACK if with_ack else SYN
        win = self.rcvbuf if self.rcvbuf < 0xFFFF else 0xFFFF  # a SYN's window is not scaled
        ack = self.rcv_nxt if with_ack else 0
        self.layer._emit_raw(self, self.iss, ack, flags, win, opts, None, 0)
        self.segs_out += 1
        if with_ack:
            self.last_ack_sent = ack
            self._ack_now = False
        self.snd_nxt = (self.iss + 1) & _MASK
        if self.snd_max == self.iss:
            self.snd_max = self.snd_nxt

    def _window_field(self) -> int:
        """The window to advertise, scaled; the right edge never moves left (SHLD-14).

        Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the edge advances only
        when it can move by at least min(RCV.BUFF/2, Eff.snd.MSS).
        """
        asm = self.asm
        nxt = self.rcv_nxt
        cur = ((self.rcv_adv - nxt + _HALF) & _MASK) - _HALF
        if cur < 0:
            cur = 0
        ws = self.rcv_wscale
        cap = min(self.rcvbuf, 0xFFFF << ws)  # the most we can advertise
        avail = min(asm.window, cap) if not self._fin_rcvd else 0
        half = cap >> 1
        win = avail if avail - cur >= (half if half < self._rcv_mss else self._rcv_mss) else cur
        field = win >> ws
        if (field << ws) < cur:
            field += 1  # round up rather than shrink
        if field > 0xFFFF:
            field = 0xFFFF
        edge = (nxt + (field << ws)) & _MASK
        if ((edge - self.rcv_adv + _HALF) & _MASK) - _HALF > 0:
            self.rcv_adv = edge
        return field

    def _options(self, now: int) -> bytes:
        """Timestamps (RFC 7323 §3.2) and SACK / D-SACK blocks (RFC 2018 §4, RFC 2883 §4)."""
        if self.ts_ok:
            opts = _TS_OPT.pack(1, 1, 8, 10, (now // TS_TICK_US + self.ts_offset) & _MASK, self.ts_recent)
        else:
            opts = b""
        if self.sack_ok:
            most = 3 if self.ts_ok else 4  # what fits in 40 octets (RFC 2018 §3)
            asm = self.asm
            d = self._dsack
            if d is not None:
                blocks = [d] + [b for b in asm.sack_blocks(most) if b != d][:most - 1]
            elif asm.range_count:
                blocks = asm.sack_blocks(most)
            else:
                return opts
            opts += _SACK_HEAD.pack(1, 1, 5, 2 + 8 * len(blocks)) + b"".join(
                [_U32X2.pack(lft, rgt) for lft, rgt in blocks])
        return opts

    def _emit(self, now: int, seq: int, flags: int, buf, n: int, off: int = 0, opts: bytes | None = None) -> None:
        """Fill in ACK, window and options of a synchronized-state segment and hand it to the layer."""
        if opts is None:
            opts = self._options(now)
        self._dsack = None
        ack = self.rcv_nxt
        if flags & ACK:
            self.last_ack_sent = ack
            self._ack_now = False
            self.delack_at = None
            self._rcv_unacked = 0
        win = self._window_field()
        if n:
            with memoryview(buf) as mv:
                self.layer._emit_raw(self, seq, ack, flags, win, opts, mv[off:off + n], n)
        else:
            self.layer._emit_raw(self, seq, ack, flags, win, opts, None, 0)
        self.segs_out += 1

    # -- ICMP (RFC 1122 §4.2.3.9, RFC 5461) ---------------------------------------------------------

    def icmp_error(self, now: int, code_errno: int, hard: bool, seq: int, mtu: int) -> None:
        """An ICMP error about a segment we sent (the layer has matched the 4-tuple).

        RFC 5927 §4.1: ignore it unless the quoted sequence number is one we
        have sent and not had acknowledged.  Soft errors are only recorded
        (reported if the connection later times out); in SYN-SENT a hard
        error (port or protocol unreachable) aborts with its errno, as Linux
        does (RFC 5461 §4 recommends not aborting in the synchronized states).
        """
        stats = self.layer.stats
        if not (_d(seq, self.snd_una) >= 0 and _d(seq, self.snd_max) <= 0):
            stats.incr("tcp.icmp_out_of_window")
            return
        if mtu:
            # RFC 1191: fragmentation needed -- lower the MSS and resend at once.
            new_total = max(mtu - 40, 68)
            if new_total < self._mss_total:
                stats.incr("tcp.pmtu_reduced")
                self._mss_total = new_total
                self.mss = max(new_total - (12 if self.ts_ok else 0), 1)
                self.cc.set_mss(self.mss)
                self.snd_nxt = self.snd_una
                self.layer._mark(self)
            return
        if self.state == S.SYN_SENT and hard:
            stats.incr("tcp.icmp_aborts")
            self.error = code_errno
            self._set_state(S.CLOSED, now)
            return
        stats.incr("tcp.icmp_soft_errors")
        self.soft_error = code_errno

    # -- status ----------------------------------------------------------------------------------------

    def info(self) -> dict:
        """The ``ss -ti`` row: state, queues, RTT estimator, congestion state, options, counters."""
        ipstr = self.layer.ip_str
        return {
            "proto": "tcp",
            "state": self.state.label,
            "local": f"{ipstr(self.local_ip)}:{self.local_port}",
            "remote": f"{ipstr(self.remote_ip)}:{self.remote_port}",
            "recv_q": self.asm.readable if self.asm is not None else 0,
            "send_q": len(self._sndbuf),
            "srtt_us": self.srtt,
            "rttvar_us": self.rttvar,
            "rto_us": self._rto_now(),
            "cwnd": self.cc.cwnd,
            "ssthresh": self.cc.ssthresh if self.cc.ssthresh < (1 << 30) else None,
            "congestion": self.cc.name,
            "mss": self.mss,
            "rcv_mss": self._rcv_mss,
            "wscale": f"{self.snd_wscale},{self.rcv_wscale}",
            "timestamps": self.ts_ok,
            "sack": self.sack_ok,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": max(0, _d(self.rcv_adv, self.rcv_nxt)),
            "retrans": self.retrans,
            "retrans_total": self.retrans_total,
            "bytes_sent": self.bytes_sent,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "segs_in": self.segs_in,
            "segs_out": self.segs_out,
            "orphan": self.orphan,
        }

    def __repr__(self) -> str:
        ipstr = self.layer.ip_str
        return (f"<TcpConnection {ipstr(self.local_ip)}:{self.local_port} -> "
                f"{ipstr(self.remote_ip)}:{self.remote_port} {self.state.label}>")
