"""A new SYN for a 4-tuple in TIME-WAIT (RFC 6191 §2; RFC 9293 §3.10.7.4; RFC 1122 §4.2.2.13)."""

from __future__ import annotations

from tcp_harness import ACK, FIN, PEER_ISN, PEER_PORT, PORT, SEC, SYN, Peer, open_passive, options


def to_time_wait(c):
    """Our side closes first: FIN, the peer's ACK and FIN, our ACK -> TIME-WAIT."""
    c.sock.shutdown(1)
    fin = c.recv()
    c.send(FIN | ACK, ack=fin.seq + 1, opts=options(ts=(c.tsval, fin.ts_val)) if c.ts else b"")
    c.recv()
    conn = c.p.tcp.connections()[0]
    assert conn.state.label == "TIME-WAIT"
    c.sock.close()
    return conn


def reopen_ok(c, old, syn_seq, syn_opts):
    p = c.p
    p.send(PEER_PORT, PORT, syn_seq, 0, SYN, opts=syn_opts)
    synack = p.recv()
    assert synack.flags == SYN | ACK and synack.ack == syn_seq + 1, synack
    # RFC 1122 §4.2.2.13 (1): the new ISS is above the old incarnation's sequence space.
    assert 0 < (synack.seq - old.snd_max) % (1 << 32) < 1 << 31
    assert old.state.label == "CLOSED" and old not in p.tcp.connections()
    assert [x.state.label for x in p.tcp.connections()] == ["SYN-RECEIVED"]
    assert p.tcp.stats["tcp.time_wait_reopened"] == 1
    ack_opts = options(ts=(10_000, synack.ts_val)) if synack.ts_val >= 0 else b""
    p.send(PEER_PORT, PORT, syn_seq + 1, synack.seq + 1, ACK, opts=ack_opts)
    sock, addr = c.lst.accept()
    assert addr == ("10.77.0.2", PEER_PORT) and sock.state == "ESTABLISHED"
    p.send(PEER_PORT, PORT, syn_seq + 1, synack.seq + 1, ACK | 0x08, data=b"new", opts=ack_opts)
    assert sock.recv(10) == b"new"


def test_syn_with_newer_timestamp_opens_a_new_incarnation():
    c = open_passive(Peer(), syn_opts=options(mss=1000, ts=(100, 0)))
    old = to_time_wait(c)
    # A sequence number below RCV.NXT: the timestamp decides (RFC 6191 §2, first rule).
    reopen_ok(c, old, PEER_ISN - 5000, options(mss=1000, ts=(old.ts_recent + 1, 0)))


def test_syn_with_old_timestamp_does_not_reopen():
    c = open_passive(Peer(), syn_opts=options(mss=1000, ts=(100, 0)))
    old = to_time_wait(c)
    c.p.send(PEER_PORT, PORT, c.snd + 100_000, 0, SYN, opts=options(mss=1000, ts=(old.ts_recent - 1, 0)))
    c.p.recv_all()  # PAWS (RFC 7323 §5.3): an ACK, the SYN dropped
    assert old.state.label == "TIME-WAIT" and c.p.tcp.connections() == [old]
    assert c.p.tcp.stats["tcp.time_wait_reopened"] == 0


def test_without_timestamps_a_higher_sequence_number_reopens():
    c = open_passive(Peer(), syn_opts=options(mss=1000))
    old = to_time_wait(c)
    reopen_ok(c, old, old.rcv_nxt + 100_000, options(mss=1000))


def test_without_timestamps_a_lower_sequence_number_gets_a_challenge_ack():
    c = open_passive(Peer(), syn_opts=options(mss=1000))
    old = to_time_wait(c)
    c.p.send(PEER_PORT, PORT, old.rcv_nxt - 10, 0, SYN, opts=options(mss=1000))
    ack = c.p.recv()
    assert ack.flags == ACK and ack.ack == old.rcv_nxt  # RFC 5961 §4.2 (after the sequence check)
    assert old.state.label == "TIME-WAIT" and c.p.tcp.stats["tcp.time_wait_reopened"] == 0
    # The peer's SYN-SENT answers the ACK with <SEQ=SEG.ACK><CTL=RST>: that ends TIME-WAIT (§3.10.7.4).
    c.p.send(PEER_PORT, PORT, ack.ack, 0, 0x04)
    assert c.p.tcp.connection_count == 0


def test_no_listener_keeps_time_wait():
    c = open_passive(Peer(), syn_opts=options(mss=1000))
    old = to_time_wait(c)
    c.lst.close()
    c.p.send(PEER_PORT, PORT, old.rcv_nxt + 100_000, 0, SYN, opts=options(mss=1000))
    c.p.recv_all()
    assert old.state.label == "TIME-WAIT" and c.p.tcp.connections() == [old]


def test_time_wait_still_expires_after_2msl():
    c = open_passive(Peer(), syn_opts=options(mss=1000, ts=(100, 0)))
    to_time_wait(c)
    c.p.advance(60 * SEC)
    c.p.recv_nothing()
    assert c.p.tcp.connection_count == 0 and c.p.tcp.stats["tcp.time_wait_expired"] == 1
