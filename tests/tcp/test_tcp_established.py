"""ESTABLISHED: receiving (delayed ACKs, out of order, window) and sending (MSS, Nagle, SWS)."""

from __future__ import annotations

import pytest
from tcp_harness import ACK, FIN, MS, PSH, Peer, open_passive, options

from pystack.transport.tcp.layer import TcpConfig


@pytest.fixture
def c():
    return open_passive(Peer(), syn_opts=options(mss=1000))


def test_data_is_acked_after_the_delayed_ack_timeout(c):
    c.send(ACK | PSH, b"hello")
    c.recv_nothing()
    assert c.sock.recv(100) == b"hello"
    assert c.p.iface.poll_at() == c.p.now + 40 * MS  # 40 ms (Linux TCP_DELACK_MIN, < 0.5 s MUST-40)
    c.p.advance(40 * MS)
    ack = c.recv()
    assert (ack.flags, ack.ack, ack.seq) == (ACK, c.snd, c.rcv)


def test_every_second_full_segment_is_acked_at_once(c):
    c.send(ACK, bytes(536))
    c.recv_nothing()
    c.send(ACK, bytes(536))
    assert c.recv().ack == c.snd


def test_one_ack_per_batch(c):
    frames = []
    p = c.p
    from pystack.wire.headers import emit_tcp
    from tcp_harness import A_MAC, B_IP, B_MAC, A_IP, PEER_PORT, PORT
    seq = c.snd
    for i in range(8):
        buf = bytearray(54 + 536)
        emit_tcp(buf, 0, A_MAC, B_MAC, B_IP, A_IP, PEER_PORT, PORT, seq, c.rcv, ACK, 65535, b"", bytes(536), 536)
        frames.append(bytes(buf))
        seq += 536
    p.iface.receive_batch(frames, p.now)
    ack = p.recv()  # one ACK for the whole batch
    assert ack.ack == seq


def test_out_of_order_gets_immediate_duplicate_ack_and_hole_fill_acks(c):
    c.send(ACK, b"B" * 100, seq=c.snd + 100)
    dup = c.recv()
    assert dup.ack == c.snd
    c.send(ACK, b"A" * 100)
    ack = c.recv()
    assert ack.ack == c.snd + 100
    assert c.sock.recv(1000) == b"A" * 100 + b"B" * 100


def test_segment_outside_the_window_is_acked_and_dropped(c):
    c.send(ACK, b"x", seq=c.snd + 10_000_000)
    ack = c.recv()
    assert ack.ack == c.snd
    assert c.p.tcp.stats["tcp.drop.out_of_window"] == 1
    with pytest.raises(BlockingIOError):
        c.sock.recv(10)


def test_no_ack_bit_is_dropped(c):
    c.send(0, b"x")
    c.recv_nothing()
    assert c.p.tcp.stats["tcp.drop.no_ack"] == 1


def test_send_segments_to_the_effective_mss(c):
    c.sock.send(bytes(2500))
    segs = c.recv(2)
    assert [len(s.data) for s in segs] == [1000, 1000]  # peer MSS 1000 (MUST-16)
    assert segs[0].seq == c.rcv
    c.send(ACK, ack=c.rcv + 2000)  # Nagle held the short tail until now
    tail = c.recv()
    assert len(tail.data) == 500 and tail.flags == ACK | PSH


def test_nagle_holds_a_small_segment_while_data_is_unacked(c):
    c.sock.send(b"a")
    first = c.recv()
    c.sock.send(b"b")
    c.recv_nothing()  # RFC 9293 §3.7.4
    c.send(ACK, ack=first.seq + 1)
    assert c.recv().data == b"b"


def test_nodelay_sends_at_once(c):
    c.sock.nodelay = True
    c.sock.send(b"a")
    c.recv()
    c.sock.send(b"b")
    assert c.recv().data == b"b"


def test_sender_respects_the_peer_window(c):
    c.send(ACK, window=1500)
    c.sock.send(bytes(4000))
    segs = c.recv(1)  # the 500 that fit next would be a silly segment (max window seen 65535)
    assert [len(s.data) for s in segs] == [1000]


def test_sender_sws_avoidance_waits_for_a_useful_window(c):
    c.send(ACK, window=3000)  # max window seen 65535, now 3000
    c.sock.send(bytes(20_000))
    assert sum(len(s.data) for s in c.recv(3)) == 3000
    # Acked, but the window offered is tiny: no tiny segment (RFC 9293 §3.8.6.2.1),
    # until the override (persist) timer fires.
    c.send(ACK, ack=c.rcv + 3000, window=100)
    c.recv_nothing()
    c.p.at(c.p.iface.poll_at())
    assert len(c.recv().data) == 100
    assert c.p.tcp.stats["tcp.sws_override"] == 1


def test_receive_window_never_shrinks_and_reopens_after_a_drain():
    p = Peer(tcp_config=TcpConfig(rcvbuf=4000, sndbuf=4000))
    c = open_passive(p, syn_opts=options(mss=1000))
    c.send(ACK, bytes(1000))
    c.send(ACK, bytes(1000))
    a1 = c.recv()
    c.send(ACK, bytes(1000))
    c.send(ACK, bytes(1000))
    a2 = c.recv()
    assert a2.window == 0 and a1.ack + a1.window == a2.ack + a2.window
    c.sock.recv(4000)  # the application drains a full buffer: a window update at once
    upd = c.recv()
    assert upd.window == 4000 and upd.ack == c.snd


def test_half_close_by_peer_keeps_our_send_side(c):
    c.send(ACK | FIN, b"bye")
    assert c.recv().ack == c.snd
    assert c.sock.recv(10) == b"bye"
    assert c.sock.recv(10) == b""
    assert c.sock.state == "CLOSE-WAIT"
    assert c.sock.send(b"still") == 5
    assert c.recv().data == b"still"


def test_info_row(c):
    row = c.sock.info()
    for key in ("state", "local", "remote", "recv_q", "send_q", "srtt_us", "rttvar_us", "rto_us", "cwnd",
                "ssthresh", "mss", "wscale", "retrans", "bytes_sent", "bytes_acked", "bytes_received"):
        assert key in row
    assert row["state"] == "ESTABLISHED" and row["mss"] == 1000
    assert c.p.iface.status()["tcp"][1]["state"] == "ESTABLISHED"
