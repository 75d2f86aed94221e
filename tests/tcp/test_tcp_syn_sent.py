"""SYN-SENT: RFC 9293 §3.10.7.3, SYN retransmission, simultaneous open (MUST-10), ICMP errors."""

from __future__ import annotations

import errno

import pytest
from tcp_harness import ACK, B_IP, RST, SEC, SYN, Peer, options

from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet

SERVER = ("10.77.0.2", 80)
PEER_ISN = 5000


@pytest.fixture
def p():
    return Peer()


def connect(p):
    s = p.tcp.socket()
    assert s.connect_ex(SERVER) == errno.EINPROGRESS
    assert s.state == "SYN-SENT"
    syn = p.recv()
    return s, syn


def test_connect_sends_syn_with_options(p):
    s, syn = connect(p)
    assert syn.flags == SYN and syn.dport == 80 and 49152 <= syn.sport
    assert syn.mss == 1460 and syn.sack_permitted and syn.wscale == 3 and syn.ts_val >= 0 and syn.ts_ecr == 0
    assert not s.writable and not s.readable


def test_syn_ack_establishes(p):
    s, syn = connect(p)
    p.send(80, syn.sport, PEER_ISN, syn.seq + 1, SYN | ACK, 1000, opts=options(mss=1200))
    ack = p.recv()
    assert (ack.flags, ack.seq, ack.ack) == (ACK, syn.seq + 1, PEER_ISN + 1)
    assert s.state == "ESTABLISHED" and s.writable and s.error == 0
    conn = s.connection
    assert conn.mss == 1200 and conn.snd_wnd == 1000 and not conn.ts_ok and not conn.sack_ok


def test_syn_retransmitted_with_backoff_then_etimedout(p):
    s, syn = connect(p)
    t0 = p.now
    times = []
    for _ in range(6):
        p.at(p.iface.poll_at())
        assert p.recv().flags == SYN
        times.append((p.now - t0) // SEC)
    assert times == [1, 3, 7, 15, 31, 63]  # RFC 6298 §2.1 and §5.5; syn_retries 6 (Linux)
    p.at(p.iface.poll_at())
    p.recv_nothing()
    assert s.state == "CLOSED" and s.error == errno.ETIMEDOUT
    with pytest.raises(TimeoutError):
        s.recv(1)
    assert s.recv(1) == b""


def test_rst_ack_refuses(p):
    s, syn = connect(p)
    p.send(80, syn.sport, 0, syn.seq + 1, RST | ACK)
    assert s.state == "CLOSED" and s.error == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        s.send(b"x")
    with pytest.raises(BrokenPipeError):
        s.send(b"x")


def test_rst_without_ack_is_ignored(p):
    s, syn = connect(p)
    p.send(80, syn.sport, 0, 0, RST)
    assert s.state == "SYN-SENT"


def test_unacceptable_ack_gets_rst(p):
    s, syn = connect(p)
    p.send(80, syn.sport, PEER_ISN, syn.seq + 10, SYN | ACK)
    rst = p.recv()
    assert (rst.flags, rst.seq) == (RST, syn.seq + 10)
    assert s.state == "SYN-SENT"


def test_simultaneous_open(p):
    # MUST-10: SYN-SENT + SYN -> SYN-RECEIVED, SYN,ACK with our ISS; then ACK -> ESTABLISHED.
    s, syn = connect(p)
    p.send(80, syn.sport, PEER_ISN, 0, SYN)
    sa = p.recv()
    assert (sa.flags, sa.seq, sa.ack) == (SYN | ACK, syn.seq, PEER_ISN + 1)
    assert s.state == "SYN-RECEIVED"
    p.send(80, syn.sport, PEER_ISN + 1, syn.seq + 1, ACK)
    assert s.state == "ESTABLISHED"
    assert p.tcp.stats["tcp.simultaneous_open"] == 1


def _icmp_unreach(p, syn, code):
    quoted = IPv4Packet(0x0A4D0001, B_IP, 6, syn.sport.to_bytes(2, "big") + (80).to_bytes(2, "big")
                        + syn.seq.to_bytes(4, "big") + bytes(12)).to_bytes()
    msg = IcmpPacket.error(3, code, quoted).to_bytes()
    ip = IPv4Packet(B_IP, 0x0A4D0001, 1, msg).to_bytes()
    from tcp_harness import A_MAC, B_MAC
    p.iface.receive(A_MAC + B_MAC + b"\x08\x00" + ip, p.now)


def test_icmp_port_unreachable_refuses_in_syn_sent(p):
    s, syn = connect(p)
    _icmp_unreach(p, syn, 3)
    assert s.state == "CLOSED" and s.error == errno.ECONNREFUSED


def test_icmp_host_unreachable_is_soft_then_reported_on_timeout(p):
    s, syn = connect(p)
    _icmp_unreach(p, syn, 1)
    assert s.state == "SYN-SENT" and s.error == 0
    while s.state != "CLOSED":
        p.at(p.iface.poll_at())
        p.recv_all()
    assert s.error == errno.EHOSTUNREACH  # the soft error explains the timeout (RFC 1122 §4.2.3.9)


def test_data_queued_in_syn_sent_goes_after_the_handshake(p):
    s, syn = connect(p)
    assert s.send(b"early") == 5  # RFC 9293 §3.10.2: queued until ESTABLISHED
    p.recv_nothing()
    p.send(80, syn.sport, PEER_ISN, syn.seq + 1, SYN | ACK, 1000)
    seg = p.recv()
    assert seg.data == b"early" and seg.ack == PEER_ISN + 1


def test_connect_errors(p):
    s, syn = connect(p)
    assert s.connect_ex(SERVER) == errno.EALREADY
    t = p.tcp.socket()
    with pytest.raises(OSError) as e:
        t.connect(("192.0.2.1", 80))  # off-link, no gateway
    assert e.value.errno == errno.ENETUNREACH
