"""Congestion control behind a small plug-in interface: RFC 5681 with NewReno recovery.

Owns the congestion window (``cwnd``) and slow-start threshold (``ssthresh``)
of one connection, in bytes.  The connection owns the loss *detection* (RTO,
duplicate ACKs, the recovery point of RFC 6582) and tells the controller what
happened through five calls; the controller only moves the two numbers.
Another algorithm (CUBIC, SACK-based recovery: a later issue) subclasses
:class:`CongestionControl` and is chosen per connection by name
(:data:`ALGORITHMS`, ``TcpConfig.congestion``).

The interface::

    on_ack(acked, now, rtt)     new data acknowledged outside recovery
    on_dupack()                 a duplicate ACK during fast recovery
    on_loss(flight)             third duplicate ACK: fast retransmit, enter recovery
    on_partial_ack(acked)       an ACK inside recovery that leaves data outstanding
    on_recovery_end(flight)     the ACK that covers the recovery point
    on_rto(flight)              the retransmission timer expired
    cwnd, ssthresh, in_recovery
"""

from __future__ import annotations

#: RFC 5681 §3.1: IW = min(4*SMSS, max(2*SMSS, 4380)) bytes (as RFC 3390).
def initial_window(mss: int) -> int:
    return min(4 * mss, max(2 * mss, 4380))


class CongestionControl:
    """The plug-in interface (see the module docstring); the base does no control at all."""

    name = "none"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = 1 << 30
        self.ssthresh = 1 << 30
        self.in_recovery = False

    def set_mss(self, mss: int) -> None:
        self.mss = mss

    def on_ack(self, acked: int, now: int, rtt: int | None) -> None:
        pass

    def on_dupack(self) -> None:
        pass

    def on_loss(self, flight: int) -> None:
        self.in_recovery = True

    def on_partial_ack(self, acked: int) -> None:
        pass

    def on_recovery_end(self, flight: int) -> None:
        self.in_recovery = False

    def on_rto(self, flight: int) -> None:
        self.in_recovery = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh}{' recovery' if self.in_recovery else ''}>"


class Reno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance, RFC 6582 (NewReno) fast recovery."""

    name = "reno"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.cwnd = initial_window(mss)
        # RFC 5681 §3.1: the initial ssthresh SHOULD be arbitrarily high.
        self.ssthresh = 1 << 30
        self._ca_acc = 0  # bytes acknowledged toward the next cwnd increase in avoidance

    def set_mss(self, mss: int) -> None:
        if self.cwnd == initial_window(self.mss):
            self.cwnd = initial_window(mss)
        self.mss = mss

    def on_ack(self, acked: int, now: int, rtt: int | None) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            # Slow start (RFC 5681 §3.1): cwnd grows by the bytes acknowledged.
            # Deviation: RFC 5681 says min(N, SMSS) per ACK (RFC 3465's L = 1
            # SMSS); pystack ACKs once per read batch, so its ACKs are stretch
            # ACKs by design and the cap would make slow start linear.  Like
            # Linux's tcp_slow_start, the increase is not capped, but never
            # beyond ssthresh in one step.
            grown = self.cwnd + acked
            self.cwnd = grown if grown < self.ssthresh else max(self.ssthresh, self.cwnd + mss)
        else:
            # RFC 5681 §3.1 (3): congestion avoidance, one SMSS per RTT,
            # counted in bytes acknowledged (RFC 3465 §2.1).
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += mss

    def _halve(self, flight: int) -> None:
        # RFC 5681 §3.1 (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        self.ssthresh = max(flight // 2, 2 * self.mss)

    def on_loss(self, flight: int) -> None:
        # RFC 5681 §3.2 steps 2-3; RFC 6582 §3.2 step 2.
        self._halve(flight)
        self.cwnd = self.ssthresh + 3 * self.mss
        self.in_recovery = True

    def on_dupack(self) -> None:
        # RFC 5681 §3.2 step 4: inflate by SMSS per further duplicate ACK.
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        # RFC 6582 §3.2 step 5: deflate by the amount acknowledged, add back
        # SMSS if that was at least SMSS.
        self.cwnd = max(self.cwnd - acked, self.mss)
        if acked >= self.mss:
            self.cwnd += self.mss

    def on_recovery_end(self, flight: int) -> None:
        # RFC 6582 §3.2 step 3, option (1): cwnd = min(ssthresh, FlightSize + SMSS).
        self.cwnd = min(self.ssthresh, max(flight, 0) + self.mss)
        self.in_recovery = False
        self._ca_acc = 0

    def on_rto(self, flight: int) -> None:
        # RFC 5681 §3.1 (4) and (5): ssthresh halves, cwnd = LW = 1 SMSS.
        # (RFC 6582 §4: an RTO ends fast recovery.)
        self._halve(flight)
        self.cwnd = self.mss
        self.in_recovery = False
        self._ca_acc = 0


#: Congestion-control algorithms by name (``TcpConfig.congestion``).
ALGORITHMS: dict[str, type[CongestionControl]] = {"reno": Reno, "newreno": Reno, "none": CongestionControl}
