"""LISTEN and CLOSED (no socket): RFC 9293 §3.10.7.1-2, the SYN and accept queues, the SYN-ACK."""

from __future__ import annotations

import errno

import pytest
from tcp_harness import (ACK, MS, PEER_ISN, PEER_PORT, PORT, RST, SEC, SYN, FIN, Peer, open_passive, options)


@pytest.fixture
def p():
    return Peer()


def listen(p, backlog=8):
    s = p.tcp.socket()
    s.bind(("", PORT))
    s.listen(backlog)
    return s


def test_syn_to_closed_port_gets_rst_ack(p):
    # §3.10.7.1: ACK off -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    p.send(PEER_PORT, 81, 5000, 0, SYN)
    rst = p.recv()
    assert (rst.flags, rst.seq, rst.ack, rst.sport, rst.dport) == (RST | ACK, 0, 5001, 81, PEER_PORT)
    assert p.tcp.stats["tcp.drop.no_socket"] == 1


def test_data_without_ack_to_closed_port_acks_its_length(p):
    p.send(PEER_PORT, 81, 5000, 0, FIN, data=b"abc")
    rst = p.recv()
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 5004)


def test_ack_to_closed_port_gets_rst_at_seg_ack(p):
    # §3.10.7.1: ACK on -> <SEQ=SEG.ACK><CTL=RST>.
    p.send(PEER_PORT, 81, 5000, 777, ACK, data=b"x")
    rst = p.recv()
    assert (rst.flags, rst.seq) == (RST, 777)


def test_rst_is_never_answered_with_rst(p):
    p.send(PEER_PORT, 81, 5000, 777, RST | ACK)
    p.send(PEER_PORT, 81, 5000, 0, RST)
    p.recv_nothing()
    assert p.tcp.stats["tcp.drop.no_socket_rst"] == 2


def test_bad_checksum_is_counted_and_dropped(p):
    listen(p)
    p.send(PEER_PORT, PORT, 5000, 0, SYN, corrupt=True)
    p.recv_nothing()
    assert p.iface.stats["tcp.bad_checksum"] == 1


def test_port_zero_is_dropped(p):
    p.send(0, PORT, 5000, 0, SYN)
    p.recv_nothing()
    assert p.tcp.stats["tcp.drop.bad_port"] == 1


def test_listen_syn_ack_with_all_options(p):
    lst = listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN, 29200,
           opts=options(mss=1460, sack_permitted=True, ts=(12345, 0), wscale=7))
    synack = p.recv()
    assert synack.flags == SYN | ACK
    assert synack.ack == PEER_ISN + 1
    assert synack.mss == 1460  # MTU 1500 - 40 (RFC 9293 §3.7.1)
    assert synack.sack_permitted and synack.ts_ecr == 12345 and synack.wscale == 3  # 256 KiB needs shift 3
    assert synack.window == 65535  # a SYN's window is never scaled (RFC 7323 §2.2)
    assert lst.state == "LISTEN" and not lst.readable
    assert [r["state"] for r in p.tcp.connections_info()] == ["LISTEN", "SYN-RECEIVED"]


def test_listen_syn_ack_echoes_only_offered_options(p):
    listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN, 8192)  # no options at all
    synack = p.recv()
    assert synack.mss == 1460 and synack.wscale == -1 and synack.ts_val == -1 and not synack.sack_permitted
    p.send(PEER_PORT, PORT, PEER_ISN + 1, synack.seq + 1, ACK, 8192)
    conn = p.tcp.connections()[0]
    assert conn.mss == 536  # MUST-15: 536 when no MSS option came
    assert not conn.ts_ok and not conn.sack_ok and conn.snd_wscale == 0 and conn.rcv_wscale == 0


def test_handshake_then_accept(p):
    c = open_passive(p)
    assert c.sock.state == "ESTABLISHED"
    assert c.sock.remote == ("10.77.0.2", PEER_PORT)
    assert c.sock.local == ("10.77.0.1", PORT)
    with pytest.raises(BlockingIOError):
        c.lst.accept()
    with pytest.raises(BlockingIOError):
        c.sock.recv(10)


def test_ack_to_listener_gets_rst(p):
    listen(p)
    p.send(PEER_PORT, PORT, 5000, 4242, ACK)
    rst = p.recv()
    assert (rst.flags, rst.seq) == (RST, 4242)


def test_rst_to_listener_is_ignored(p):
    listen(p)
    p.send(PEER_PORT, PORT, 5000, 0, RST)
    p.recv_nothing()
    assert p.tcp.stats["tcp.drop.listen_rst"] == 1


def test_many_connections_per_listening_port(p):
    lst = listen(p, backlog=16)
    for i in range(10):
        p.send(PEER_PORT + i, PORT, 100 * i, 0, SYN)
        sa = p.recv()
        p.send(PEER_PORT + i, PORT, 100 * i + 1, sa.seq + 1, ACK)
    ports = sorted(lst.accept()[1][1] for _ in range(10))
    assert ports == list(range(PEER_PORT, PEER_PORT + 10))


def test_syn_queue_bounded_by_backlog(p):
    listen(p, backlog=2)
    for i in range(3):
        p.send(PEER_PORT + i, PORT, 100, 0, SYN)
    assert len(p.recv(2)) == 2
    assert p.tcp.stats["tcp.drop.syn_queue_full"] == 1


def test_accept_queue_full_drops_the_final_ack(p):
    listen(p, backlog=1)
    p.send(PEER_PORT, PORT, 100, 0, SYN)
    sa = p.recv()
    p.send(PEER_PORT, PORT, 101, sa.seq + 1, ACK)
    p.send(PEER_PORT + 1, PORT, 100, 0, SYN)  # accept queue holds 1: no SYN-ACK
    p.recv_nothing()
    assert p.tcp.stats["tcp.drop.accept_queue_full"] == 1


def test_retransmitted_syn_gets_the_syn_ack_again(p):
    listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    first = p.recv()
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    again = p.recv()
    assert (again.flags, again.seq, again.ack) == (first.flags, first.seq, first.ack)


def test_syn_ack_retransmitted_with_backoff_then_given_up(p):
    listen(p)
    t0 = p.now
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    p.recv()
    # RFC 6298 §2.1: 1 s, then doubled; synack_retries = 5.
    times = []
    for _ in range(5):
        at = p.iface.poll_at()
        p.at(at)
        seg = p.recv()
        assert seg.flags == SYN | ACK
        times.append((at - t0) // SEC)
    assert times == [1, 3, 7, 15, 31]
    p.at(p.iface.poll_at())
    p.recv_nothing()
    assert p.tcp.connection_count == 0 and p.tcp.stats["tcp.syn_timeout"] == 1


def test_rst_in_syn_received_drops_the_half_connection(p):
    listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    p.recv()
    p.send(PEER_PORT, PORT, PEER_ISN + 1, 0, RST)
    assert p.tcp.connection_count == 0


def test_bad_ack_in_syn_received_gets_rst(p):
    listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    sa = p.recv()
    p.send(PEER_PORT, PORT, PEER_ISN + 1, sa.seq + 5, ACK)
    rst = p.recv()
    assert (rst.flags, rst.seq) == (RST, sa.seq + 5)


def test_isn_differs_per_tuple_and_moves_with_the_clock(p):
    listen(p, backlog=8)
    p.send(PEER_PORT, PORT, 1, 0, SYN)
    a = p.recv().seq
    p.send(PEER_PORT + 1, PORT, 1, 0, SYN)
    b = p.recv().seq
    assert a != b
    from pystack.transport.tcp.isn import IsnGenerator
    g = IsnGenerator(b"k")
    assert (g.isn(4000, 1, 2, 3, 4) - g.isn(0, 1, 2, 3, 4)) % 2**32 == 1000  # 4 µs ticks (RFC 6528 §3)
    assert IsnGenerator(b"other").isn(0, 1, 2, 3, 4) != g.isn(0, 1, 2, 3, 4)


def test_close_listener_resets_queued_connections(p):
    lst = listen(p)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN)
    sa = p.recv()
    p.send(PEER_PORT, PORT, PEER_ISN + 1, sa.seq + 1, ACK)
    lst.close()
    rst = p.recv()
    assert rst.flags & RST and rst.seq == sa.seq + 1
    assert p.tcp.connection_count == 0
    # The port is free again; a SYN now gets a RST.
    p.send(PEER_PORT + 1, PORT, 7, 0, SYN)
    assert p.recv().flags == RST | ACK


def test_bind_errors(p):
    a = listen(p)
    b = p.tcp.socket()
    with pytest.raises(OSError) as e:
        b.bind(("", PORT))
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as e:
        b.bind(("10.77.0.9", 0))
    assert e.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(OSError) as e:
        a.accept() and None
    assert e.value.errno == errno.EAGAIN
    c = p.tcp.socket()
    with pytest.raises(OSError) as e:
        c.accept()
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        c.recv(1)
    assert e.value.errno == errno.ENOTCONN
    with pytest.raises(BrokenPipeError):
        c.send(b"x")
    c.close()
    with pytest.raises(OSError) as e:
        c.send(b"x")
    assert e.value.errno == errno.EBADF
    _ = MS
