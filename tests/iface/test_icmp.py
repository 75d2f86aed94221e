"""ICMP at the interface: echo, errors sent (and every "never" rule, the rate limit), errors received.

RFC 792; RFC 1122 §3.2.2.  Sans-I/O: frames in at ``now``, frames out of
``poll(now)``.  Expected echo replies are built byte by byte here, with a
checksum written from RFC 1071, independent of pystack.wire.
"""

from __future__ import annotations

import errno
import random
import struct

import pytest

from iface_harness import A_IP, A_MAC, P_IP, P_MAC, SEC, headers_impl, impl, make, SUBNET_BCAST  # noqa: F401 (fixtures)
from pystack.iface import interface as interface_mod
from pystack.iface.interface import Interface, InterfaceConfig
from pystack.wire.ethernet import BROADCAST, ETHERTYPE_IPV4, EthernetFrame
from pystack.wire.icmpv4 import (DEST_UNREACHABLE, PARAMETER_PROBLEM, REDIRECT, SOURCE_QUENCH,
                                 TIME_EXCEEDED, UNREACH_FRAG_NEEDED, UNREACH_HOST, UNREACH_PORT,
                                 UNREACH_PROTOCOL, IcmpPacket)
from pystack.wire.ipv4 import PROTO_ICMP, PROTO_UDP, IPv4Packet, ip_from_str
from pystack.wire.udp import UdpDatagram

T0 = 50 * SEC

def ref_checksum(data: bytes) -> int:
    """RFC 1071 by the book."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_frame(payload: bytes, proto: int, src: int = P_IP, dst: int = A_IP, mac_dst: bytes = A_MAC, **kw) -> bytes:
    return EthernetFrame(mac_dst, P_MAC, ETHERTYPE_IPV4, IPv4Packet(src, dst, proto, payload, **kw).to_bytes()).to_bytes()


def echo_request(ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", ref_checksum(body)) + body[4:]


def expected_reply(ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", 0, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", ref_checksum(body)) + body[4:]


def out_packets(frames) -> list[IPv4Packet]:
    out = []
    for f in frames:
        e = EthernetFrame.parse(f)
        assert e.ethertype == ETHERTYPE_IPV4 and e.dst == P_MAC and e.src == A_MAC
        out.append(IPv4Packet.parse(e.payload))
    return out


def reassemble(packets: list[IPv4Packet]) -> bytes:
    packets = sorted(packets, key=lambda p: p.frag_offset)
    assert len({p.ident for p in packets}) == 1
    data = b""
    for p in packets:
        assert p.frag_offset == len(data)
        data += bytes(p.payload)
    assert not packets[-1].more_fragments
    return data


def only_error(iface: Interface, now: int) -> IcmpPacket:
    (p,) = out_packets(iface.poll(now))
    assert (p.src, p.dst, p.proto, p.tos) == (A_IP, P_IP, PROTO_ICMP, 0)
    msg = IcmpPacket.parse(p.payload)
    assert msg.is_error
    return msg


# -- echo (RFC 792; RFC 1122 §3.2.2.6) ---------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 7, 56, 1471, 1472])
def test_echo_reply_bytes_are_exact(impl, size):
    iface = make()
    data = random.Random(size).randbytes(size)
    iface.receive(ip_frame(echo_request(0x1234, 7, data), PROTO_ICMP, tos=0x10), T0)
    (p,) = out_packets(iface.poll(T0))
    assert (p.src, p.dst, p.proto, p.tos, p.ttl) == (A_IP, P_IP, PROTO_ICMP, 0x10, 64)
    assert bytes(p.payload) == expected_reply(0x1234, 7, data)
    assert iface.stats["icmp.echo_requests"] == 1 and iface.stats["icmp.echo_replies"] == 1


def test_a_fragmented_8000_byte_echo_is_reassembled_and_the_reply_fragmented(impl):
    iface = make()
    data = random.Random(8000).randbytes(8000)
    request = echo_request(42, 1, data)
    pieces = [(off, request[off:off + 1480]) for off in range(0, len(request), 1480)]
    random.Random(1).shuffle(pieces)
    for off, chunk in pieces:
        iface.receive(ip_frame(chunk, PROTO_ICMP, ident=999, frag_offset=off,
                               more_fragments=off + len(chunk) < len(request)), T0)
    packets = out_packets(iface.poll(T0))
    assert len(packets) == 6  # 8008 bytes of ICMP in 1480-byte pieces
    assert all(p.frag_offset % 8 == 0 for p in packets)
    assert reassemble(packets) == expected_reply(42, 1, data)
    assert iface.stats["reasm.ok"] == 1


def test_the_largest_echo_reassembly_accepts_is_answered():
    iface = make()
    data = bytes(65535 - 20 - 8)
    request = echo_request(1, 1, data)
    for off in range(0, len(request), 1480):
        chunk = request[off:off + 1480]
        iface.receive(ip_frame(chunk, PROTO_ICMP, ident=5, frag_offset=off,
                               more_fragments=off + len(chunk) < len(request)), T0)
    assert reassemble(out_packets(iface.poll(T0))) == expected_reply(1, 1, data)


def test_echo_replies_and_other_queries_are_ignored():
    iface = make()
    iface.receive(ip_frame(expected_reply(1, 1, b"x"), PROTO_ICMP), T0)
    ts = IcmpPacket(13, 0, 0, bytes(12)).to_bytes()  # timestamp request: not implemented
    iface.receive(ip_frame(ts, PROTO_ICMP), T0)
    iface.receive(ip_frame(IcmpPacket(77, 0, 0, b"").to_bytes(), PROTO_ICMP), T0)  # unknown type
    assert iface.poll(T0) == []
    assert iface.stats["icmp.ignored"] == 3


# -- errors sent: port, protocol, reassembly timeout ---------------------------------------------------------

def test_port_unreachable_for_a_closed_udp_port(impl):
    iface = make()
    seg = UdpDatagram(40000, 9, b"anyone there?").to_bytes(P_IP, A_IP)
    frame = ip_frame(seg, PROTO_UDP, ident=321)
    iface.receive(frame, T0)
    msg = only_error(iface, T0)
    assert (msg.type, msg.code, msg.rest) == (DEST_UNREACHABLE, UNREACH_PORT, 0)
    assert bytes(msg.payload) == frame[14:14 + 20 + 8]  # header + 64 bits (RFC 792)
    assert iface.stats["udp.no_port"] == 1 and iface.stats["icmp.errors_tx"] == 1


@pytest.mark.parametrize("proto, payload", [
    (99, b"\x01\x02\x03\x04\x05\x06\x07\x08\x09"),
    (132, b"\x01\x02\x03\x04\x05\x06\x07\x08"),  # SCTP: none here (TCP answers with a RST since issue 4)
])
def test_protocol_unreachable_for_an_unknown_protocol(impl, proto, payload):
    iface = make()
    frame = ip_frame(payload, proto)
    iface.receive(frame, T0)
    msg = only_error(iface, T0)
    assert (msg.type, msg.code) == (DEST_UNREACHABLE, UNREACH_PROTOCOL)
    assert bytes(msg.payload) == frame[14:14 + 28]
    assert iface.stats["ipv4.unknown_protocol"] == 1


def test_reassembly_timeout_sends_time_exceeded_only_when_fragment_zero_arrived():
    iface = make(reasm_timeout=10 * SEC)
    seg = UdpDatagram(40000, 9, bytes(3000)).to_bytes(P_IP, A_IP)
    first = ip_frame(seg[:1480], PROTO_UDP, ident=1, more_fragments=True)
    iface.receive(first, T0)
    # Another datagram whose fragment zero never comes: no ICMP for it.
    iface.receive(ip_frame(seg[1480:2960], PROTO_UDP, ident=2, frag_offset=1480, more_fragments=True), T0)
    assert iface.poll_at() == T0 + 10 * SEC
    assert iface.poll(T0 + 10 * SEC - 1) == []
    msg = only_error(iface, T0 + 10 * SEC)
    assert (msg.type, msg.code) == (TIME_EXCEEDED, 1)
    assert bytes(msg.payload) == first[14:14 + 20 + 8]  # fragment zero's header as received + 8 bytes
    assert iface.stats["reasm.timeout"] == 2 and iface.stats["icmp.errors_tx"] == 1
    assert iface.poll_at() is None


# -- the "never" rules (RFC 1122 §3.2.2) ------------------------------------------------------------------------

def _quoted(src=P_IP, dst=A_IP, proto=99, payload=b"12345678", **kw) -> bytes:
    return IPv4Packet(src, dst, proto, payload, **kw).to_bytes()


@pytest.mark.parametrize("original, counter", [
    # about an ICMP error (any error type, and unknown types, conservatively)
    (_quoted(proto=PROTO_ICMP, payload=IcmpPacket(3, 3, 0, bytes(28)).to_bytes()), "icmp.error_about_error"),
    (_quoted(proto=PROTO_ICMP, payload=IcmpPacket(11, 0, 0, bytes(28)).to_bytes()), "icmp.error_about_error"),
    (_quoted(proto=PROTO_ICMP, payload=IcmpPacket(99, 0, 0, b"").to_bytes()), "icmp.error_about_error"),
    (_quoted(proto=PROTO_ICMP, payload=b""), "icmp.error_about_error"),
    # about a datagram to a broadcast or multicast address
    (_quoted(dst=0xFFFFFFFF), "icmp.error_about_broadcast"),
    (_quoted(dst=SUBNET_BCAST), "icmp.error_about_broadcast"),
    (_quoted(dst=ip_from_str("224.0.0.251")), "icmp.error_about_broadcast"),
    # about a non-first fragment
    (_quoted(frag_offset=1480), "icmp.error_about_fragment"),
    (_quoted(frag_offset=8, more_fragments=True), "icmp.error_about_fragment"),
    # to a source that is not one host
    (_quoted(src=0), "icmp.error_about_bad_src"),
    (_quoted(src=SUBNET_BCAST), "icmp.error_about_bad_src"),
    (_quoted(src=0xFFFFFFFF), "icmp.error_about_bad_src"),
    (_quoted(src=ip_from_str("239.1.1.1")), "icmp.error_about_bad_src"),
    (_quoted(src=ip_from_str("240.0.0.1")), "icmp.error_about_bad_src"),
    (_quoted(src=ip_from_str("127.0.0.1")), "icmp.error_about_bad_src"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_never_an_error_about(original, counter):
    iface = make()
    iface.send_icmp_error(T0, DEST_UNREACHABLE, UNREACH_PROTOCOL, original)
    assert iface.poll(T0) == []
    assert iface.stats[counter] == 1 and iface.stats["icmp.errors_tx"] == 0


def test_an_error_about_an_echo_request_is_allowed():
    iface = make()
    iface.send_icmp_error(T0, DEST_UNREACHABLE, UNREACH_PROTOCOL,
                          _quoted(proto=PROTO_ICMP, payload=echo_request(1, 1, b"abc")))
    assert only_error(iface, T0).code == UNREACH_PROTOCOL


def test_never_an_error_about_a_fragmented_icmp_error_that_times_out():
    iface = make(reasm_timeout=SEC)
    err = IcmpPacket(3, 1, 0, bytes(2000)).to_bytes()
    iface.receive(ip_frame(err[:1480], PROTO_ICMP, ident=3, more_fragments=True), T0)
    echo = echo_request(1, 1, bytes(2000))
    iface.receive(ip_frame(echo[:1480], PROTO_ICMP, ident=4, more_fragments=True), T0)
    msg = only_error(iface, T0 + SEC)  # one Time Exceeded: for the echo, not for the error
    assert IPv4Packet.parse(msg.payload, verify_checksum=False, partial=True).ident == 4
    assert iface.stats["icmp.error_about_error"] == 1


def test_never_an_error_about_a_udp_broadcast_to_a_closed_port():
    iface = make()
    seg = UdpDatagram(1, 9, b"x").to_bytes(P_IP, 0xFFFFFFFF)
    iface.receive(ip_frame(seg, PROTO_UDP, dst=0xFFFFFFFF, mac_dst=BROADCAST), T0)
    assert iface.poll(T0) == [] and iface.stats["udp.no_port"] == 1


def test_send_icmp_error_misuse():
    iface = make()
    with pytest.raises(ValueError):
        iface.send_icmp_error(T0, 8, 0, _quoted())  # echo is not an error
    with pytest.raises(ValueError):
        iface.send_icmp_error(T0, DEST_UNREACHABLE, 3, b"\x45garbage")
    with pytest.raises(ValueError):
        iface.send_icmp_error(T0, DEST_UNREACHABLE, UNREACH_PORT, _quoted(), mtu=1400)


def test_frag_needed_carries_the_mtu():
    iface = make()
    iface.send_icmp_error(T0, DEST_UNREACHABLE, UNREACH_FRAG_NEEDED, _quoted(), mtu=1400)
    assert only_error(iface, T0).next_hop_mtu == 1400


def test_an_error_that_cannot_be_routed_back_is_counted():
    iface = make()
    iface.send_icmp_error(T0, DEST_UNREACHABLE, UNREACH_PORT, _quoted(src=ip_from_str("192.0.2.1")))
    assert iface.poll(T0) == [] and iface.stats["ipv4.no_route"] == 1


# -- rate limit (token bucket; RFC 1812 §4.3.2.8, RFC 1122 §3.2.2) ------------------------------------------------

def test_errors_are_rate_limited_by_a_token_bucket():
    iface = make(icmp_error_rate=10, icmp_error_burst=5)
    frame = ip_frame(b"12345678", 99)

    def burst(now: int, n: int) -> int:
        for _ in range(n):
            iface.receive(frame, now)
        return len(iface.poll(now))

    assert burst(T0, 8) == 5  # the bucket starts full
    assert iface.stats["icmp.rate_limited"] == 3
    assert burst(T0 + 99_999, 3) == 0  # 10/s: a token every 100 ms
    assert burst(T0 + 100_000, 3) == 1
    assert burst(T0 + 350_000, 3) == 2  # 2.5 tokens accrued
    assert burst(T0 + 400_000, 3) == 1  # the half token was kept
    assert burst(T0 + 100 * SEC, 10) == 5  # never more than the burst
    assert iface.stats["icmp.errors_tx"] == 14


def test_rate_zero_means_unlimited():
    iface = make(icmp_error_rate=0)
    for _ in range(200):
        iface.receive(ip_frame(b"12345678", 99), T0)
    assert len(iface.poll(T0)) == 200


def test_echo_replies_are_not_rate_limited():
    iface = make(icmp_error_rate=1, icmp_error_burst=1)
    for seq in range(100):
        iface.receive(ip_frame(echo_request(1, seq, b"x"), PROTO_ICMP), T0)
    assert len(iface.poll(T0)) == 100


# -- errors received ----------------------------------------------------------------------------------------------

def _error_about_our_udp(type_: int, code: int, sport: int, dport: int, src: int = A_IP, rest: int = 0) -> bytes:
    ours = IPv4Packet(src, P_IP, PROTO_UDP, UdpDatagram(sport, dport, b"hi").to_bytes(src, P_IP)).to_bytes()
    msg = IcmpPacket.error(type_, code, ours)
    msg = IcmpPacket(msg.type, msg.code, rest, msg.payload)
    return ip_frame(msg.to_bytes(), PROTO_ICMP)


def test_port_unreachable_reaches_a_connected_socket_as_econnrefused(impl):
    iface = make()
    s = iface.udp.socket()
    s.connect(("10.77.0.2", 53))
    port = s.getsockname()[1]
    s.send(b"hi")
    iface.poll(T0)
    iface.receive(_error_about_our_udp(DEST_UNREACHABLE, UNREACH_PORT, port, 53), T0)
    assert s.readable  # the error wakes a reader
    with pytest.raises(ConnectionRefusedError) as err:
        s.recv(100)
    assert err.value.errno == errno.ECONNREFUSED
    assert s.send(b"again") == 5  # reported once
    iface.receive(_error_about_our_udp(DEST_UNREACHABLE, UNREACH_PORT, port, 53), T0)
    with pytest.raises(ConnectionRefusedError):
        s.send(b"x")
    assert iface.stats["udp.icmp_errors"] == 2


@pytest.mark.parametrize("type_, code, expected", [
    (DEST_UNREACHABLE, UNREACH_HOST, errno.EHOSTUNREACH),
    (DEST_UNREACHABLE, 0, errno.ENETUNREACH),
    (DEST_UNREACHABLE, UNREACH_PROTOCOL, errno.ENOPROTOOPT),
    (DEST_UNREACHABLE, 13, errno.EHOSTUNREACH),
    (TIME_EXCEEDED, 0, errno.EHOSTUNREACH),
    (PARAMETER_PROBLEM, 0, errno.EPROTO),
])
def test_other_errors_reach_a_connected_socket(type_, code, expected):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 5555))
    s.connect(("10.77.0.2", 53))
    iface.receive(_error_about_our_udp(type_, code, 5555, 53), T0)
    with pytest.raises(OSError) as err:
        s.recvfrom()
    assert err.value.errno == expected


@pytest.mark.parametrize("frame, counter", [
    # errors that concern no connected socket, or carry nothing to report
    (_error_about_our_udp(DEST_UNREACHABLE, UNREACH_PORT, 5555, 54), "udp.icmp_errors_ignored"),  # other peer
    (_error_about_our_udp(DEST_UNREACHABLE, UNREACH_PORT, 5556, 53), "udp.icmp_errors_ignored"),  # other port
    (_error_about_our_udp(DEST_UNREACHABLE, UNREACH_FRAG_NEEDED, 5555, 53, rest=1400), "udp.icmp_errors_ignored"),
    (_error_about_our_udp(DEST_UNREACHABLE, UNREACH_PORT, 5555, 53, src=ip_from_str("10.77.0.9")),
     "icmp.error_not_ours"),
    (_error_about_our_udp(SOURCE_QUENCH, 0, 5555, 53), "icmp.source_quench_ignored"),
    (_error_about_our_udp(REDIRECT, 0, 5555, 53), "icmp.redirect_ignored"),
    (ip_frame(IcmpPacket(DEST_UNREACHABLE, 3, 0, b"\x45\x00").to_bytes(), PROTO_ICMP), "icmp.bad_quote"),
    (ip_frame(IcmpPacket(DEST_UNREACHABLE, 3, 0, b"\x46" + bytes(19)).to_bytes(), PROTO_ICMP), "icmp.bad_quote"),
    (ip_frame(IcmpPacket.error(3, 3, IPv4Packet(A_IP, P_IP, 99, b"12345678").to_bytes()).to_bytes(), PROTO_ICMP),
     "icmp.error_unhandled"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_errors_that_reach_no_socket(frame, counter):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 5555))
    s.connect(("10.77.0.2", 53))
    iface.receive(frame, T0)
    assert iface.stats[counter] == 1
    assert not s.readable and s.send(b"fine") == 4
    assert iface.poll(T0)[-1:] and iface.stats["icmp.errors_tx"] == 0  # only our datagram; no ICMP about ICMP


def test_received_errors_reach_a_registered_handler_with_the_quote_and_mtu():
    iface = make()
    got = []

    class Handler:
        def handle(self, *a): pass
        def handle_icmp_error(self, iface, now, type, code, quoted, mtu):
            got.append((now, type, code, quoted.src, quoted.dst, quoted.proto, bytes(quoted.payload[:8]), mtu))
        def poll(self, *a): pass
        def poll_at(self): return None

    iface.register(200, Handler())
    ours = IPv4Packet(A_IP, P_IP, 200, b"ABCDEFGHIJ").to_bytes()
    iface.receive(ip_frame(IcmpPacket.error(DEST_UNREACHABLE, UNREACH_FRAG_NEEDED, ours, 1280).to_bytes(),
                           PROTO_ICMP), T0)
    assert got == [(T0, DEST_UNREACHABLE, UNREACH_FRAG_NEEDED, A_IP, P_IP, 200, b"ABCDEFGH", 1280)]
