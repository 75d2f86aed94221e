"""RFC 5961: challenge ACKs for inexact RSTs and SYNs, ACK validation, the rate limit."""

from __future__ import annotations

import pytest
from tcp_harness import ACK, RST, SYN, Peer, open_passive, options

from pystack.transport.tcp.layer import TcpConfig


@pytest.fixture
def c():
    return open_passive(Peer(), syn_opts=options(mss=1000))


def test_rst_in_window_but_not_exact_gets_challenge_ack(c):
    c.send(RST, seq=c.snd + 10)
    ack = c.recv()
    assert (ack.flags, ack.seq, ack.ack) == (ACK, c.rcv, c.snd)  # <SEQ=SND.NXT><ACK=RCV.NXT> (§3.2)
    assert c.sock.state == "ESTABLISHED" and c.p.tcp.stats["tcp.challenge_acks_rst"] == 1


def test_rst_outside_window_is_silently_dropped(c):
    c.send(RST, seq=c.snd + 10_000_000)
    c.recv_nothing()
    assert c.sock.state == "ESTABLISHED"


def test_exact_rst_resets(c):
    c.send(RST)
    assert c.sock.state == "CLOSED"


def test_syn_in_synchronized_state_gets_challenge_ack(c):
    c.send(SYN, seq=c.snd + 5)
    ack = c.recv()
    assert ack.flags == ACK and ack.ack == c.snd
    assert c.sock.state == "ESTABLISHED" and c.p.tcp.stats["tcp.challenge_acks_syn"] == 1


def test_ack_of_unsent_data_gets_challenge_ack(c):
    c.send(ACK, b"x", ack=c.rcv + 5000)
    assert c.recv().flags == ACK
    assert c.p.tcp.stats["tcp.drop.ack_unsent"] == 1
    assert c.sock.connection.readable_bytes == 0  # the segment was dropped


def test_ack_too_old_gets_challenge_ack(c):
    c.send(ACK, ack=c.rcv - 70_000)  # below SND.UNA - MAX.SND.WND (§5.2)
    assert c.recv().flags == ACK
    assert c.p.tcp.stats["tcp.drop.ack_too_old"] == 1


def test_challenge_acks_are_rate_limited():
    p = Peer(tcp_config=TcpConfig(challenge_ack_limit=3))
    c = open_passive(p, syn_opts=options(mss=1000))
    for i in range(5):
        c.send(RST, seq=c.snd + 10 + i)
    assert len(p.recv_all()) == 3
    assert p.tcp.stats["tcp.challenge_acks_rate_limited"] == 2
    p.advance(1_000_000)
    c.send(RST, seq=c.snd + 10)
    assert len(p.recv_all()) == 1
