"""Options in a connection: timestamps and PAWS (RFC 7323), window scale, SACK and D-SACK (RFC 2018, 2883)."""

from __future__ import annotations

import pytest
from tcp_harness import ACK, Peer, open_passive, options

ALL = options(mss=1460, sack_permitted=True, ts=(100, 0), wscale=2)


@pytest.fixture
def c():
    return open_passive(Peer(), syn_opts=ALL)


def test_negotiated(c):
    conn = c.sock.connection
    assert conn.ts_ok and conn.sack_ok and conn.snd_wscale == 2 and conn.rcv_wscale == 3
    assert conn.mss == 1460 - 12  # timestamps take 12 bytes of every segment (MUST-16)


def test_timestamps_in_every_segment_and_echoed(c):
    c.tsval = 555
    c.send(ACK, b"x" * 2000)
    c.send(ACK, b"y" * 2000)
    ack = c.recv()
    assert ack.ts_val >= 0 and ack.ts_ecr == 555


def test_peer_window_is_scaled(c):
    c.send(ACK, window=1000)
    assert c.sock.connection.snd_wnd == 4000  # 1000 << 2 (RFC 7323 §2.3)


def test_our_window_is_scaled(c):
    c.send(ACK, b"x" * 1448)
    c.send(ACK, b"x" * 1448)
    ack = c.recv()
    assert ack.window == (256 * 1024 - 2896) >> 3  # shift 3 (RFC 7323 §2.3)


def test_paws_drops_an_old_timestamp(c):
    c.tsval = 1000
    c.send(ACK, b"a")
    c.tsval = 900  # older than TS.Recent (RFC 7323 §5.3)
    c.send(ACK, b"b")
    assert c.p.recv_all()[-1].flags == ACK
    assert c.p.tcp.stats["tcp.drop.paws"] == 1
    assert c.sock.recv(10) == b"a"


def test_segment_without_timestamp_is_dropped_once_negotiated(c):
    c.send(ACK, b"a", opts=b"")
    assert c.p.tcp.stats["tcp.drop.no_timestamp"] == 1


def test_sack_blocks_for_out_of_order_data(c):
    c.send(ACK, b"B" * 100, seq=c.snd + 100)
    dup = c.recv()
    assert dup.ack == c.snd and dup.sack == ((c.snd + 100, c.snd + 200),)
    c.send(ACK, b"D" * 100, seq=c.snd + 300)
    dup = c.recv()
    assert dup.sack == ((c.snd + 300, c.snd + 400), (c.snd + 100, c.snd + 200))  # most recent first


def test_dsack_for_a_duplicate(c):
    c.send(ACK, b"A" * 100)
    c.p.recv_all()
    c.send(ACK, b"A" * 100, seq=c.snd - 100)
    ack = c.recv()
    assert ack.sack == ((c.snd - 100, c.snd),)  # RFC 2883 §4: the duplicate block first


def test_unknown_option_ignored(c):
    opts = options(ts=(200, 0)) + bytes((99, 4, 1, 2))
    c.send(ACK, b"z", opts=opts)
    assert c.sock.recv(1) == b"z"


def test_wscale_above_14_is_clamped():
    p = Peer()
    c = open_passive(p, syn_opts=options(mss=1460, wscale=15))
    assert c.sock.connection.snd_wscale == 14
