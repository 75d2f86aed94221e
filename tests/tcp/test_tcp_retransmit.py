"""Timers: RTO (RFC 6298), fast retransmit (RFC 5681), persist (MUST-35..37), user timeout, keep-alive."""

from __future__ import annotations

import errno

import pytest
from tcp_harness import ACK, MS, SEC, Peer, open_passive, options

from pystack.transport.tcp.congestion import Reno, initial_window


@pytest.fixture
def c():
    return open_passive(Peer(), syn_opts=options(mss=1000))


def test_rto_retransmits_with_backoff(c):
    c.sock.send(b"data")
    first = c.recv()
    t0 = c.p.now
    rto = c.sock.connection.rto
    assert rto == 200_000  # the handshake sample was ~0: min_rto (Linux's 200 ms)
    gaps = []
    for _ in range(3):
        c.p.at(c.p.iface.poll_at())
        seg = c.recv()
        assert seg.seq == first.seq and seg.data == b"data"
        gaps.append(c.p.now - t0)
    assert gaps == [rto, 3 * rto, 7 * rto]  # RFC 6298 §5.5: doubled each time
    c.send(ACK, ack=first.seq + 4)
    assert c.sock.connection.retrans == 0 and c.sock.connection.rtx_at is None
    assert c.sock.connection.cc.cwnd == 1000 + 4  # RFC 5681 §3.1: LW = 1 SMSS, then slow start


def test_fast_retransmit_on_third_duplicate_ack(c):
    c.sock.nodelay = True
    c.sock.send(bytes(4000))
    segs = c.recv(4)
    base = segs[0].seq
    for i in range(2):
        c.send(ACK, ack=base)  # duplicates of SND.UNA (RFC 5681 §2)
    c.recv_nothing()
    c.send(ACK, ack=base)
    rtx = c.recv()
    assert rtx.seq == base and len(rtx.data) == 1000
    conn = c.sock.connection
    assert conn.cc.in_recovery and conn.cc.ssthresh == 2000  # max(FlightSize/2, 2*SMSS)
    c.send(ACK, ack=base + 4000)  # full ACK ends recovery (RFC 6582)
    assert not conn.cc.in_recovery


def test_limited_transmit_sends_new_data_on_the_first_duplicate_acks(c):
    c.sock.nodelay = True
    c.sock.send(bytes(6000))
    segs = c.recv(4)  # IW 4000
    c.send(ACK, ack=segs[0].seq)
    assert len(c.recv().data) == 1000  # RFC 3042


def test_zero_window_probing_never_gives_up(c):
    c.sock.nodelay = True
    c.send(ACK, window=0)
    c.sock.send(b"abc")
    c.recv_nothing()
    probes = []
    for _ in range(12):
        c.p.at(c.p.iface.poll_at())
        seg = c.recv()
        probes.append(c.p.now)
        c.send(ACK, window=0)  # the peer answers, its window still zero
        c.recv_nothing()
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))  # backoff (MUST-35..36)
    assert c.sock.state == "ESTABLISHED"  # MUST-37: never aborted for a zero window
    assert c.p.now - probes[0] > 300 * SEC  # past the user timeout
    c.send(ACK, window=1000)  # window opens: the data flows
    seg = c.recv()
    assert seg.data in (b"abc", b"bc")


def test_user_timeout_aborts_with_etimedout(c):
    c.sock.user_timeout = 5 * SEC
    c.sock.send(b"lost")
    while c.sock.state != "CLOSED":
        c.p.at(c.p.iface.poll_at())
        c.p.recv_all()
    assert c.sock.error == errno.ETIMEDOUT
    with pytest.raises(TimeoutError):
        c.sock.send(b"x")
    assert c.p.tcp.stats["tcp.user_timeout"] == 1


def test_keepalive_off_by_default_then_probes_and_aborts(c):
    c.p.recv_nothing()
    assert not c.sock.keepalive and c.p.iface.poll_at() is None
    c.sock.keepalive = True
    c.sock.keepidle = 10 * SEC
    c.sock.keepintvl = 1 * SEC
    c.sock.keepcnt = 3
    c.p.advance(10 * SEC)
    probe = c.recv()
    assert probe.seq == c.rcv - 1 and probe.data == b""  # <SEQ=SND.NXT-1> (RFC 9293 §3.8.4)
    c.send(ACK)  # answered: idle again
    c.p.advance(10 * SEC)
    c.recv()
    for _ in range(3):
        c.p.advance(1 * SEC)
        c.p.recv_all()
    assert c.sock.state == "CLOSED" and c.sock.error == errno.ETIMEDOUT


def test_delayed_ack_timer_is_bounded(c):
    c.send(ACK, b"x")
    c.recv_nothing()
    assert c.p.iface.poll_at() - c.p.now == 40 * MS


def test_reno_slow_start_and_avoidance():
    cc = Reno(1000)
    assert cc.cwnd == initial_window(1000) == 4000
    cc.on_ack(1000, 0, None)
    assert cc.cwnd == 5000
    cc.on_rto(10_000)
    assert (cc.cwnd, cc.ssthresh) == (1000, 5000)
    cc.cwnd = 5000
    for _ in range(5):
        cc.on_ack(1000, 0, None)
    assert cc.cwnd == 6000  # one SMSS per window in congestion avoidance
