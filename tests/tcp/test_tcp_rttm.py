"""RTT measurement: RTTM with timestamps (RFC 7323 §4, Appendix G), Karn's algorithm without (RFC 6298).

Sans-I/O: the scripted peer acknowledges at chosen times with chosen TSecr
values, and SRTT / RTTVAR / RTO are checked against the RFC formulas
computed here independently (exact fractions, compared to the stack's
integer microseconds within rounding).  Then two stacks at 10% loss: SRTT
stays sane (it used to reach seconds when echoes of transmissions older
than a retransmission timeout were sampled: see TcpConnection._rttm).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from tcp_harness import ACK, MS, SEC, Faults, Peer, Sim, open_passive, options

from pystack.transport.tcp.connection import TcpConnection
from pystack.transport.tcp.layer import TcpConfig

MIN_RTO = 1_000  # µs: low enough that RTO = SRTT + 4*RTTVAR shows unclamped


class Rfc6298:
    """The reference estimator: RFC 6298 §2 with RFC 7323 Appendix G's alpha', beta'."""

    def __init__(self, srtt, rttvar):
        self.srtt = Fraction(srtt)
        self.rttvar = Fraction(rttvar)

    def sample(self, r, expected=1):
        a = Fraction(1, 8) / expected
        b = Fraction(1, 4) / expected
        self.rttvar = (1 - b) * self.rttvar + b * abs(self.srtt - r)  # with the old SRTT (§2.3)
        self.srtt = (1 - a) * self.srtt + a * r

    def rto(self, lo=MIN_RTO):
        return max(lo, self.srtt + max(1, 4 * self.rttvar))


def check(conn, ref, slack=4):
    assert abs(conn.srtt - ref.srtt) <= slack, (conn.srtt, float(ref.srtt))
    assert abs(conn.rttvar - ref.rttvar) <= slack, (conn.rttvar, float(ref.rttvar))
    assert abs(conn.rto - ref.rto()) <= 5 * slack, (conn.rto, float(ref.rto()))


def opened(ts: bool):
    p = Peer(tcp_config=TcpConfig(min_rto=MIN_RTO))
    syn_opts = options(mss=1012, ts=(100, 0)) if ts else options(mss=1000)
    c = open_passive(p, syn_opts=syn_opts, nodelay=True)
    conn = c.sock.connection
    assert conn.ts_ok == ts and conn.mss == 1000
    # The handshake's ACK came at once: the first sample, R = 0 (RFC 6298 §2.2).
    assert (conn.srtt, conn.rttvar) == (0, 0)
    return c, conn


def ack(c, acked, ecr, tsval=300):
    c.send(ACK, ack=acked, opts=options(ts=(tsval, ecr)))


def test_timestamps_sample_every_ack_that_advances_snd_una_weighted_per_appendix_g():
    c, conn = opened(ts=True)
    c.sock.send(bytes(4000))
    segs = c.recv(4)  # IW = 4 * 1000 (RFC 5681 §3.1)
    base, tsval = segs[0].seq, segs[0].ts_val
    assert {s.ts_val for s in segs} == {tsval}
    ref = Rfc6298(0, 0)

    c.p.advance(10 * MS)
    ack(c, base + 1000, tsval)
    # This ACK covers the Karn-timed first segment: its µs timing is the
    # sample; FlightSize was 4000, ExpectedSamples = ceil(4000 / 2000) = 2.
    ref.sample(10 * MS, 2)
    check(conn, ref)

    c.p.advance(2 * MS)
    ack(c, base + 2000, tsval)  # TSecr: 12 ticks of 1 ms; FlightSize 3000 -> 2 samples
    ref.sample(12 * MS, 2)
    check(conn, ref)

    before = (conn.srtt, conn.rttvar, conn.rto)
    for _ in range(2):
        c.p.advance(1 * MS)
        ack(c, base + 2000, tsval)  # duplicate ACKs: no sample (RFC 7323 §4.1)
    assert (conn.srtt, conn.rttvar, conn.rto) == before
    assert c.p.tcp.stats["tcp.dupacks"] == 2

    c.p.advance(1 * MS)
    ack(c, base + 4000, tsval)  # 15 ms; FlightSize 2000 -> 1 sample (the plain RFC 6298 weights)
    ref.sample(15 * MS, 1)
    check(conn, ref)
    assert conn.rtx_at is None  # everything acknowledged (RFC 6298 §5.2)


def test_without_timestamps_karn_times_one_segment_per_rtt():
    c, conn = opened(ts=False)
    c.sock.send(bytes(4000))
    segs = c.recv(4)
    base = segs[0].seq
    ref = Rfc6298(0, 0)
    c.p.advance(10 * MS)
    c.send(ACK, ack=base + 1000)  # covers the timed segment
    ref.sample(10 * MS)  # RFC 6298 §2.3, alpha 1/8, beta 1/4
    check(conn, ref)
    after_first = (conn.srtt, conn.rttvar)
    c.p.advance(5 * MS)
    c.send(ACK, ack=base + 2000)  # the new segments sent meanwhile start a new timing only
    assert (conn.srtt, conn.rttvar) == after_first


def test_no_sample_from_an_echo_older_than_the_last_rto():
    c, conn = opened(ts=True)
    c.sock.send(b"data")
    first = c.recv()
    c.p.at(c.p.iface.poll_at())  # RTO: the segment goes again, with a later TSval
    again = c.recv()
    assert again.seq == first.seq and again.ts_val > first.ts_val
    srtt = conn.srtt
    c.p.advance(1 * MS)
    # The peer had the original (its ACK was lost): the echo is the original's
    # TSval, and R' would be the backed-off timer itself (Karn, RFC 6298 §3).
    ack(c, first.seq + 4, first.ts_val)
    assert conn.srtt == srtt and conn.rtx_at is None
    # The next exchange samples again.
    c.sock.send(b"more")
    seg = c.recv()
    c.p.advance(3 * MS)
    ack(c, seg.seq + 4, seg.ts_val)
    assert conn.srtt != srtt


def test_rttm_sample_is_the_tsecr_age_in_ticks():
    c, conn = opened(ts=True)
    c.sock.send(bytes(3000))
    segs = c.recv(3)
    c.p.advance(7 * MS)
    ack(c, segs[0].seq + 1000, segs[0].ts_val)  # Karn sample 7 ms
    c.p.advance(30 * MS)
    ref = Rfc6298(conn.srtt, conn.rttvar)
    ack(c, segs[0].seq + 3000, segs[0].ts_val - 5)  # an echo 5 ticks older: R' = 42 ms
    ref.sample(42 * MS, 1)
    check(conn, ref)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_srtt_stays_sane_at_10_percent_loss(seed, monkeypatch):
    worst = [0]
    orig = TcpConnection._rtt_sample

    def watch(self, r, samples=1):
        orig(self, r, samples)
        worst[0] = max(worst[0], self.srtt)

    monkeypatch.setattr(TcpConnection, "_rtt_sample", watch)
    sim = Sim(seed=seed, faults=Faults(loss=0.1, reorder=0.05, duplicate=0.05, corrupt=0.05))
    sim.transfer(1 << 20, 1 << 20, seed=seed, limit=3600 * SEC)
    # The path's RTT is 2 ms (1 ms each way); recovery stretches honest
    # samples (RFC 7323 §4.3's conservative echo after a hole) to the order
    # of a minimum RTO, never to seconds (seed 1 reached 1.2 s when echoes
    # from before an RTO were sampled).
    assert 0 < worst[0] < 300 * MS, worst[0]
