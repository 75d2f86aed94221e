"""Interface: Ethernet demux, ARP, IPv4 in/out (routing, fragmentation, reassembly), counters, poll_at.

Sans-I/O: frames in at ``now``, frames out of ``poll(now)``.  Frames are
built with the wire value classes (tested on their own in tests/wire) and
the interface's output is parsed back with them.
"""

from __future__ import annotations

import errno
import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iface_harness import A_IP, A_MAC, P_IP, P_MAC, SEC, headers_impl, impl, make, SUBNET_BCAST  # noqa: F401 (fixtures)
from pystack.errors import REASONS, MalformedPacket
from pystack.iface import interface as interface_mod
from pystack.iface.interface import ANNOUNCE_INTERVAL, Interface, InterfaceConfig
from pystack.phy.fault_injector import FaultConfig, FaultInjector
from pystack.phy.pipe import Pipe
from pystack.stats import Stats
from pystack.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from pystack.wire.ethernet import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4Packet, ip_from_str
from pystack.wire.tcp import TcpSegment
from pystack.wire.udp import UdpDatagram

GW_MAC = bytes.fromhex("0200000000fe")
GW_IP = ip_from_str("10.77.0.254")
FAR_IP = ip_from_str("192.0.2.7")  # off-link (TEST-NET-1)
T0 = 1_000 * SEC

def eth(payload: bytes, ethertype: int = ETHERTYPE_IPV4, dst: bytes = A_MAC, src: bytes = P_MAC) -> bytes:
    return EthernetFrame(dst, src, ethertype, payload).to_bytes()


def ip_frame(payload: bytes, proto: int, src: int = P_IP, dst: int = A_IP, mac_dst: bytes = A_MAC,
             **kw) -> bytes:
    return eth(IPv4Packet(src, dst, proto, payload, **kw).to_bytes(), dst=mac_dst)


def udp_frame(sport: int, dport: int, data: bytes, src: int = P_IP, dst: int = A_IP, mac_dst: bytes = A_MAC,
              **kw) -> bytes:
    return ip_frame(UdpDatagram(sport, dport, data).to_bytes(src, dst), PROTO_UDP, src, dst, mac_dst, **kw)


def arp_frame(arp: ArpPacket, dst: bytes = BROADCAST, src: bytes = P_MAC) -> bytes:
    return eth(arp.to_bytes(), ETHERTYPE_ARP, dst=dst, src=src)


def parse_ip(frame) -> tuple[EthernetFrame, IPv4Packet]:
    e = EthernetFrame.parse(frame)
    assert e.ethertype == ETHERTYPE_IPV4
    return e, IPv4Packet.parse(e.payload)


def parse_arp(frame) -> tuple[EthernetFrame, ArpPacket]:
    e = EthernetFrame.parse(frame)
    assert e.ethertype == ETHERTYPE_ARP
    return e, ArpPacket.parse(e.payload)


def moved(stats: Stats) -> dict[str, int]:
    return {k: v for k, v in stats.snapshot().items() if v}


# -- config ------------------------------------------------------------------------------------

def test_config_accepts_text_and_stores_values():
    c = InterfaceConfig("02:00:00:00:00:01", "10.77.0.1", 24, gateway="10.77.0.254")
    assert c.mac == A_MAC and c.ip == A_IP and c.gateway == GW_IP
    assert c.mtu == 1500 and c.ttl == 64 and c.icmp_error_rate == 1000 and c.icmp_error_burst == 50
    assert json.loads(json.dumps(c.as_dict()))["gateway"] == "10.77.0.254"


@pytest.mark.parametrize("kw, match", [
    (dict(mac=b"\x01\x00\x00\x00\x00\x01"), "unicast"),
    (dict(mac=bytes(6)), "unicast"),
    (dict(mac=b"\x02"), "6 bytes"),
    (dict(ip="10.77.0.0"), "host address"),
    (dict(ip="10.77.0.255"), "host address"),
    (dict(ip="127.0.0.1"), "host address"),
    (dict(ip="224.0.0.1"), "host address"),
    (dict(prefix_len=33), "prefix_len"),
    (dict(gateway="10.78.0.1"), "on-link"),
    (dict(gateway="10.77.0.1"), "on-link"),
    (dict(mtu=67), "mtu"),
    (dict(ttl=0), "ttl"),
    (dict(icmp_error_burst=0), "icmp_error_burst"),
    (dict(arp_max_queued=0), "arp_max_queued"),
])
def test_config_rejects_nonsense(kw, match):
    cfg = dict(mac=A_MAC, ip=A_IP, prefix_len=24)
    cfg.update(kw)
    with pytest.raises(ValueError, match=match):
        InterfaceConfig(**cfg)


def test_point_to_point_prefixes_have_no_broadcast():
    # RFC 3021: in a /31 both addresses are hosts.
    InterfaceConfig(A_MAC, ip_from_str("10.77.0.0"), 31)
    InterfaceConfig(A_MAC, ip_from_str("10.77.0.1"), 32)


def test_interface_rejects_a_non_config():
    with pytest.raises(TypeError):
        Interface({"mac": A_MAC})


# -- stats -----------------------------------------------------------------------------------------

def test_stats_every_reason_and_every_part_registered_at_zero():
    iface = make(peer_known=False)
    snap = iface.stats.snapshot()
    for name in list(REASONS) + list(interface_mod.COUNTERS) + ["arp.unresolved", "reasm.timeout",
                                                                "udp.rcvbuf_full", "udp.no_port"]:
        assert snap[name] == 0, name
    assert list(snap) == sorted(snap)
    layers = iface.stats.by_layer()
    assert set(layers) >= {"ethernet", "arp", "ipv4", "reasm", "icmp", "udp", "tcp"}
    assert layers["ipv4"]["bad_checksum"] == 0


def test_stats_incr_getitem_include_and_snapshot_is_a_copy():
    s = Stats()
    assert s["never.seen"] == 0
    s.incr("ipv4.rx")
    s.incr("ipv4.rx", 2)
    part = {"arp.expired": 4, "ipv4.rx": 1}
    s.include(part)
    s.include(part)  # once only
    assert s["ipv4.rx"] == 4 and s["arp.expired"] == 4
    part["arp.expired"] += 1
    assert s["arp.expired"] == 5  # read live
    snap = s.snapshot()
    snap["ipv4.rx"] = 99
    assert s["ipv4.rx"] == 4
    assert s.by_layer()["ipv4"]["rx"] == 4
    with pytest.raises(ValueError):
        s.incr("nodot")
    with pytest.raises(TypeError):
        s.include([1, 2])


# -- Ethernet -----------------------------------------------------------------------------------------

def test_frames_for_another_mac_are_dropped():
    iface = make()
    iface.receive(udp_frame(1, 2, b"x", mac_dst=bytes.fromhex("020000000099")), T0)
    iface.receive(udp_frame(1, 2, b"x", mac_dst=bytes.fromhex("01005e000001")), T0)  # multicast group
    assert iface.stats["ethernet.not_ours"] == 2
    assert iface.stats["ipv4.rx"] == 0
    assert iface.poll(T0) == []


def test_unknown_ethertype_is_counted():
    iface = make()
    iface.receive(eth(b"\x60" + bytes(60), 0x86DD), T0)
    assert iface.stats["ethernet.unknown_type"] == 1
    assert iface.poll(T0) == []


# -- ARP ----------------------------------------------------------------------------------------------

def test_gratuitous_arp_at_start_and_a_second_announcement():
    iface = make(peer_known=False)
    iface.start(T0)
    assert iface.poll_at() == T0  # a frame is waiting
    (frame,) = iface.poll(T0)
    e, arp = parse_arp(frame)
    assert e.dst == BROADCAST and e.src == A_MAC
    # RFC 5227 §3: a request with sender and target IP ours, target MAC zero.
    assert arp == ArpPacket(OP_REQUEST, A_MAC, A_IP, bytes(6), A_IP)
    assert iface.poll_at() == T0 + ANNOUNCE_INTERVAL
    assert iface.poll(T0 + ANNOUNCE_INTERVAL - 1) == []
    (again,) = iface.poll(T0 + ANNOUNCE_INTERVAL)
    assert again == frame
    assert iface.poll_at() is None
    assert iface.stats["arp.announcements"] == 2


def test_arp_request_for_us_is_answered_and_the_sender_learned(impl):
    iface = make(peer_known=False)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)), T0)
    (frame,) = iface.poll(T0)
    e, arp = parse_arp(frame)
    assert e.dst == P_MAC and e.src == A_MAC  # RFC 826: straight back to the requester
    assert arp == ArpPacket(OP_REPLY, A_MAC, A_IP, P_MAC, P_IP)
    # Exact bytes: Ethernet + the 28-byte reply.
    assert frame == P_MAC + A_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002") + A_MAC + \
        struct.pack("!I", A_IP) + P_MAC + struct.pack("!I", P_IP)
    assert iface.neighbors.lookup(P_IP, T0) == P_MAC  # created: the request was for us
    assert iface.stats["arp.replies_sent"] == 1


def test_arp_padding_is_ignored():
    iface = make(peer_known=False)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)) + bytes(18), T0)
    assert len(iface.poll(T0)) == 1


def test_arp_request_for_someone_else_is_neither_answered_nor_learned():
    iface = make(peer_known=False)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, ip_from_str("10.77.0.9"))), T0)
    assert iface.poll(T0) == []
    assert iface.neighbors.lookup(P_IP, T0) is None  # RFC 826: unknown sender, not for us -> not added


def test_merge_rule_updates_a_known_sender_whatever_the_target():
    iface = make(peer_known=False)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)), T0)
    iface.poll(T0)
    new_mac = bytes.fromhex("020000000077")
    iface.receive(arp_frame(ArpPacket.request(new_mac, P_IP, ip_from_str("10.77.0.9")), src=new_mac), T0 + 1)
    assert iface.neighbors.lookup(P_IP, T0 + 1) == new_mac  # merge_flag: updated although not for us
    # A gratuitous ARP (sender == target) updates a known entry too.
    newer = bytes.fromhex("020000000078")
    iface.receive(arp_frame(ArpPacket.request(newer, P_IP, P_IP), src=newer), T0 + 2)
    assert iface.neighbors.lookup(P_IP, T0 + 2) == newer


def test_arp_conflict_and_probe():
    iface = make(peer_known=False)
    # Someone else claims our address (RFC 5227 §2.4): counted, nothing learned or answered.
    iface.receive(arp_frame(ArpPacket.request(P_MAC, A_IP, A_IP)), T0)
    assert iface.stats["arp.conflict"] == 1
    assert iface.poll(T0) == []
    # A probe (sender 0.0.0.0) for our address is answered, nothing learned (RFC 5227 §2.1.1).
    iface.receive(arp_frame(ArpPacket.request(P_MAC, 0, A_IP)), T0)
    (frame,) = iface.poll(T0)
    e, arp = parse_arp(frame)
    assert e.dst == P_MAC and arp == ArpPacket(OP_REPLY, A_MAC, A_IP, P_MAC, 0)
    assert iface.neighbors.entries() == [] and iface.stats["arp.probes"] == 1


def test_arp_from_a_group_mac_is_not_answered():
    iface = make(peer_known=False)
    group = bytes.fromhex("01005e000001")
    iface.receive(arp_frame(ArpPacket.request(group, P_IP, A_IP)), T0)
    assert iface.poll(T0) == []
    assert iface.stats["arp.bad_sender"] == 1


def test_arp_resolution_queues_then_flushes_in_order(impl):
    iface = make(peer_known=False)
    iface.send_udp(T0, P_IP, 1000, 2000, b"first")
    iface.send_udp(T0, P_IP, 1000, 2000, b"second")
    (req,) = iface.poll(T0)  # one request for both
    e, arp = parse_arp(req)
    assert e.dst == BROADCAST and arp == ArpPacket.request(A_MAC, A_IP, P_IP)
    iface.receive(arp_frame(ArpPacket(OP_REPLY, P_MAC, P_IP, A_MAC, A_IP), dst=A_MAC), T0 + 10)
    out = iface.poll(T0 + 10)
    assert [UdpDatagram.parse(parse_ip(f)[1].payload).payload for f in out] == [b"first", b"second"]
    assert all(EthernetFrame.parse(f).dst == P_MAC for f in out)
    # Now resolved: the next datagram leaves at once, no ARP.
    iface.send_udp(T0 + 11, P_IP, 1000, 2000, b"third")
    (f,) = iface.poll(T0 + 11)
    assert EthernetFrame.parse(f).dst == P_MAC


def test_arp_retries_then_fails_with_ehostunreach_to_the_local_sender():
    iface = make(peer_known=False)
    sock = iface.udp.socket()
    sock.connect(("10.77.0.2", 53))
    sock.send(b"one")
    sock.send(b"two")
    unconnected = iface.udp.socket()
    unconnected.sendto(b"three", ("10.77.0.2", 53))
    sent_at = []
    now = T0
    for _ in range(20):  # bounded walk along poll_at
        frames = iface.poll(now)
        sent_at += [now for f in frames if EthernetFrame.parse(f).ethertype == ETHERTYPE_ARP]
        assert all(EthernetFrame.parse(f).ethertype == ETHERTYPE_ARP for f in frames)
        nxt = iface.poll_at()
        if nxt is None:
            break
        assert nxt > now
        assert iface.poll(nxt - 1) == []  # nothing happens before poll_at
        now = nxt
    # RFC 1122 §2.3.2.1: one request per second, bounded retries (1 + 3), then failure at 4 s.
    assert sent_at == [T0, T0 + SEC, T0 + 2 * SEC, T0 + 3 * SEC]
    assert now == T0 + 4 * SEC
    assert iface.stats["arp.unresolved"] == 3  # the three queued datagrams dropped
    assert iface.stats["arp.host_unreachable"] == 3
    with pytest.raises(OSError) as err:
        sock.send(b"again")
    assert err.value.errno == errno.EHOSTUNREACH
    sock.send(b"again")  # reported once
    # An unconnected socket is not told (Linux without IP_RECVERR).
    assert unconnected.sendto(b"x", ("10.77.0.2", 53)) == 1
    assert iface.neighbors.resolving() == []


def test_learned_entries_expire_and_are_resolved_again():
    iface = make(peer_known=False, arp_entry_lifetime=30 * SEC)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)), T0)
    iface.poll(T0)
    assert iface.poll_at() == T0 + 30 * SEC  # the expiry is a timer too
    iface.send_udp(T0 + 30 * SEC - 1, P_IP, 1, 2, b"still known")
    (frame,) = iface.poll(T0 + 30 * SEC - 1)
    assert EthernetFrame.parse(frame).dst == P_MAC
    assert iface.poll(T0 + 30 * SEC) == []
    assert iface.stats["arp.expired"] == 1
    iface.send_udp(T0 + 30 * SEC, P_IP, 1, 2, b"forgotten")
    (req,) = iface.poll(T0 + 30 * SEC)
    assert parse_arp(req)[1] == ArpPacket.request(A_MAC, A_IP, P_IP)


def test_arp_queue_is_bounded_and_keeps_the_latest():
    iface = make(peer_known=False, arp_max_queued=2)
    for i in range(4):
        iface.send_udp(T0, P_IP, 1000, 2000, bytes([i]))
    iface.poll(T0)
    assert iface.stats["arp.queue_overflow"] == 2
    iface.receive(arp_frame(ArpPacket(OP_REPLY, P_MAC, P_IP, A_MAC, A_IP), dst=A_MAC), T0)
    out = iface.poll(T0)
    assert [bytes(UdpDatagram.parse(parse_ip(f)[1].payload).payload) for f in out] == [b"\x02", b"\x03"]


# -- IPv4 in ---------------------------------------------------------------------------------------------

def test_udp_to_a_bound_port_is_delivered(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(udp_frame(4000, 7000, b"payload"), T0)
    assert s.recvfrom() == (b"payload", ("10.77.0.2", 4000))
    assert moved(iface.stats) == {"ethernet.rx": 1, "ipv4.rx": 1, "ipv4.delivered": 1, "udp.rx": 1,
                                  "udp.delivered": 1}


def test_ethernet_padding_after_the_datagram_is_ignored():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(udp_frame(4000, 7000, b"a") + bytes(20), T0)
    assert s.recv(100) == b"a"


@pytest.mark.parametrize("dst, counter", [
    (ip_from_str("10.77.0.3"), "ipv4.not_ours"),
    (ip_from_str("8.8.8.8"), "ipv4.not_ours"),
    (ip_from_str("224.0.0.1"), "ipv4.not_ours"),
])
def test_datagrams_not_for_us_are_dropped(dst, counter):
    iface = make()
    iface.receive(udp_frame(1, 7, b"x", dst=dst), T0)
    assert iface.stats[counter] == 1
    assert iface.poll(T0) == []


@pytest.mark.parametrize("src", ["0.0.0.0", "255.255.255.255", "10.77.0.255", "224.0.0.5", "240.0.0.1",
                                 "127.0.0.1", "10.77.0.1"])
def test_bad_sources_are_dropped_silently(src):
    iface = make()
    iface.receive(udp_frame(1, 9, b"x", src=ip_from_str(src)), T0)
    assert iface.stats["ipv4.bad_src"] == 1
    assert iface.poll(T0) == []  # no port unreachable either


def test_unicast_ip_in_a_link_broadcast_is_dropped():
    iface = make()
    iface.receive(udp_frame(1, 9, b"x", mac_dst=BROADCAST), T0)
    assert iface.stats["ipv4.link_broadcast"] == 1  # RFC 1122 §3.3.6
    assert iface.poll(T0) == []


@pytest.mark.parametrize("dst", [0xFFFFFFFF, SUBNET_BCAST])
def test_broadcasts_reach_wildcard_udp_sockets_only(dst):
    iface = make()
    anyaddr = iface.udp.socket()
    anyaddr.bind(("0.0.0.0", 67))
    specific = iface.udp.socket()
    specific.bind(("10.77.0.1", 68))
    iface.receive(udp_frame(68, 67, b"discover", src=0, dst=dst, mac_dst=BROADCAST), T0)
    assert anyaddr.recvfrom() == (b"discover", ("0.0.0.0", 68))
    iface.receive(udp_frame(67, 68, b"offer", dst=dst, mac_dst=BROADCAST), T0)
    assert not specific.readable
    assert iface.stats["udp.no_port"] == 1
    assert iface.poll(T0) == []  # never an ICMP error about a broadcast


def test_broadcasts_other_than_udp_are_dropped():
    iface = make()
    echo = IcmpPacket.echo(True, 1, 1, b"ping").to_bytes()
    iface.receive(ip_frame(echo, PROTO_ICMP, dst=SUBNET_BCAST, mac_dst=BROADCAST), T0)
    assert iface.stats["ipv4.broadcast_not_udp"] == 1
    assert iface.poll(T0) == []


def test_options_and_ttl_zero_are_accepted():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    seg = UdpDatagram(1, 7000, b"opt").to_bytes(P_IP, A_IP)
    # NOP NOP NOP EOL; TTL 0 MUST NOT make a host drop it (RFC 1122 §3.2.1.7).
    iface.receive(ip_frame(seg, PROTO_UDP, options=b"\x01\x01\x01\x00", ttl=0), T0)
    assert s.recv(10) == b"opt"


def test_inbound_fragments_are_reassembled_in_any_order(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    data = bytes(random.Random(1).randbytes(3000))
    seg = UdpDatagram(4000, 7000, data).to_bytes(P_IP, A_IP)
    pieces = [(0, True, seg[:1480]), (1480, True, seg[1480:2960]), (2960, False, seg[2960:])]
    for off, mf, chunk in reversed(pieces):
        iface.receive(ip_frame(chunk, PROTO_UDP, ident=77, frag_offset=off, more_fragments=mf), T0)
    assert s.recvfrom() == (data, ("10.77.0.2", 4000))
    assert iface.stats["reasm.ok"] == 1 and iface.stats["ipv4.fragments_rx"] == 3


def test_a_reassembled_datagram_with_a_bad_udp_checksum_is_counted(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    seg = bytearray(UdpDatagram(4000, 7000, bytes(2000)).to_bytes(P_IP, A_IP))
    seg[100] ^= 1
    iface.receive(ip_frame(bytes(seg[:1480]), PROTO_UDP, ident=5, more_fragments=True), T0)
    iface.receive(ip_frame(bytes(seg[1480:]), PROTO_UDP, ident=5, frag_offset=1480), T0)
    assert iface.stats["udp.bad_checksum"] == 1 and not s.readable


# -- malformed input: counted under its reason, never raised ------------------------------------------------

def _valid_frames() -> list[bytes]:
    tcp = TcpSegment(4000, 80, 1, 0, 0x02, 1024, b"").to_bytes(P_IP, A_IP)
    echo = IcmpPacket.echo(True, 9, 1, b"abcdefgh").to_bytes()
    return [
        udp_frame(4000, 7000, b"hello"),
        udp_frame(4000, 7001, b"closed port"),
        ip_frame(echo, PROTO_ICMP),
        ip_frame(tcp, PROTO_TCP),
        ip_frame(b"\x00" * 8, 99),
        ip_frame(UdpDatagram(1, 7000, bytes(40)).to_bytes(P_IP, A_IP)[:24], PROTO_UDP, ident=3,
                 more_fragments=True),
        ip_frame(bytes(16), PROTO_UDP, ident=3, frag_offset=24),
        arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)),
        arp_frame(ArpPacket(OP_REPLY, P_MAC, P_IP, A_MAC, A_IP), dst=A_MAC),
        ip_frame(IcmpPacket.error(3, 3, IPv4Packet(A_IP, P_IP, PROTO_UDP,
                                                   UdpDatagram(7000, 53, b"q").to_bytes(A_IP, P_IP)).to_bytes()
                                  ).to_bytes(), PROTO_ICMP),
    ]


def _corrupt(frame: bytes, at: int, value: int) -> bytes:
    b = bytearray(frame)
    b[at] = value
    return bytes(b)


def _with_ip_checksum(frame: bytes) -> bytes:
    """Recompute the IPv4 header checksum after an edit (so the edit, not the checksum, is judged)."""
    b = bytearray(frame)
    hl = (b[14] & 0x0F) * 4
    b[24:26] = b"\0\0"
    total = 0
    for i in range(14, 14 + hl, 2):
        total += (b[i] << 8) | b[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    b[24:26] = struct.pack("!H", ~total & 0xFFFF)
    return bytes(b)


def _malformed_cases():
    udp = udp_frame(4000, 7000, b"hello")
    echo = ip_frame(IcmpPacket.echo(True, 9, 1, b"abcdefgh").to_bytes(), PROTO_ICMP)
    tcp = ip_frame(TcpSegment(4000, 80, 1, 0, 0x02, 1024, b"").to_bytes(P_IP, A_IP), PROTO_TCP)
    arp = arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP))
    return [
        ("ethernet.truncated", udp[:13]),
        ("ipv4.truncated", udp[:14 + 19]),
        ("ipv4.bad_version", _with_ip_checksum(_corrupt(udp, 14, 0x65))),
        ("ipv4.bad_ihl", _with_ip_checksum(_corrupt(udp, 14, 0x44))),
        ("ipv4.bad_total_length", _with_ip_checksum(_corrupt(udp, 17, 0xFF))),
        ("ipv4.bad_total_length", _with_ip_checksum(_corrupt(udp, 17, 10))),
        ("ipv4.bad_checksum", _corrupt(udp, 22, 1)),
        ("udp.truncated", ip_frame(b"\x00\x01\x1b\x58", PROTO_UDP)),
        ("udp.bad_length", _corrupt(udp_frame(1, 7000, b"x"), 14 + 20 + 5, 200)),
        ("udp.bad_checksum", _corrupt(udp, len(udp) - 1, udp[-1] ^ 0xFF)),
        ("tcp.bad_checksum", _corrupt(tcp, len(tcp) - 1, tcp[-1] ^ 0xFF)),
        ("tcp.bad_data_offset", _corrupt(tcp, 14 + 20 + 12, 0x40)),
        ("icmp.bad_checksum", _corrupt(echo, len(echo) - 1, echo[-1] ^ 0xFF)),
        ("icmp.truncated", ip_frame(b"\x08\x00\xf7", PROTO_ICMP)),
        ("arp.truncated", arp[:14 + 27]),
        ("arp.unsupported", _corrupt(arp, 15, 6)),
        ("arp.bad_opcode", _corrupt(arp, 21, 9)),
    ]


@pytest.mark.parametrize("reason, frame", _malformed_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_frames_are_counted_under_their_reason(impl, reason, frame):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(frame, T0)
    assert iface.stats[reason] == 1
    assert not s.readable
    assert iface.poll(T0) == []  # nothing answered, no ICMP about garbage


def test_frames_as_views_and_numpy_buffers():
    np = pytest.importorskip("numpy")
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    frame = udp_frame(4000, 7000, b"view")
    buf = np.zeros(2048, dtype=np.uint8)
    buf[100:100 + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
    iface.receive(memoryview(buf)[100:100 + len(frame)], T0)
    buf[:] = 0  # the runtime reuses its buffer: what was delivered must be a copy
    assert s.recv(100) == b"view"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_never_raise(data):
    iface = make()
    iface.receive(data, T0)
    iface.receive(A_MAC + P_MAC + b"\x08\x00" + data, T0)
    iface.receive(A_MAC + P_MAC + b"\x08\x06" + data, T0)
    iface.poll(T0 + SEC)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_frames_never_raise(data):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    frames = _valid_frames()
    frame = bytearray(data.draw(st.sampled_from(frames)))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "extend"]))
        if kind == "truncate":
            del frame[data.draw(st.integers(0, len(frame))):]
        elif kind == "extend":
            frame += data.draw(st.binary(max_size=20))
        elif frame:
            i = data.draw(st.integers(0, len(frame) - 1))
            frame[i] = frame[i] ^ (1 << data.draw(st.integers(0, 7))) if kind == "flip" else data.draw(
                st.integers(0, 255))
    fix = data.draw(st.booleans())
    if fix and len(frame) >= 34 and frame[12:14] == b"\x08\x00" and 20 <= (frame[14] & 15) * 4 <= len(frame) - 14:
        frame = bytearray(_with_ip_checksum(bytes(frame)))  # get past the header checksum
    def counted() -> int:  # everything but the frame count itself
        return sum(v for k, v in iface.stats.snapshot().items() if k != "ethernet.rx")

    before = counted()
    try:
        iface.receive(bytes(frame), T0)
    except MalformedPacket:  # pragma: no cover - the point of the test
        pytest.fail("receive let a MalformedPacket escape")
    assert counted() > before  # every frame lands under some counter: a reason, or the layer it reached
    iface.poll(T0)
    iface.poll(T0 + 60 * SEC)  # timers (reassembly, ARP) on whatever the frame left behind


# -- routing and IPv4 out -------------------------------------------------------------------------------------

def test_send_ip_on_link_builds_the_datagram():
    iface = make()
    iface.send_ip(T0, P_IP, 99, b"raw payload", tos=0x10, ttl=5)
    (frame,) = iface.poll(T0)
    e, ip = parse_ip(frame)
    assert (e.dst, e.src) == (P_MAC, A_MAC)
    assert (ip.src, ip.dst, ip.proto, ip.ttl, ip.tos, bytes(ip.payload)) == (A_IP, P_IP, 99, 5, 0x10, b"raw payload")
    assert not ip.dont_fragment and not ip.is_fragment


def test_ident_increments_per_datagram():
    iface = make()
    for _ in range(3):
        iface.send_ip(T0, P_IP, 99, b"x")
    idents = [parse_ip(f)[1].ident for f in iface.poll(T0)]
    assert idents[1] == (idents[0] + 1) & 0xFFFF and idents[2] == (idents[1] + 1) & 0xFFFF


def test_off_link_goes_through_the_gateway():
    iface = make(gateway=GW_IP)
    iface.send_ip(T0, FAR_IP, 99, b"far")
    (req,) = iface.poll(T0)
    assert parse_arp(req)[1].target_ip == GW_IP  # the gateway is resolved, not the destination
    iface.receive(arp_frame(ArpPacket(OP_REPLY, GW_MAC, GW_IP, A_MAC, A_IP), dst=A_MAC, src=GW_MAC), T0)
    (frame,) = iface.poll(T0)
    e, ip = parse_ip(frame)
    assert e.dst == GW_MAC and ip.dst == FAR_IP


@pytest.mark.parametrize("dst", [FAR_IP, A_IP, ip_from_str("127.0.0.1"), 0, ip_from_str("240.0.0.1")])
def test_unroutable_destinations_raise_enetunreach(dst):
    iface = make()
    with pytest.raises(OSError) as err:
        iface.send_ip(T0, dst, 99, b"x")
    assert err.value.errno == errno.ENETUNREACH
    assert iface.stats["ipv4.no_route"] == 1
    assert iface.poll(T0) == []


def test_broadcast_and_multicast_need_no_arp():
    iface = make(peer_known=False)
    iface.send_ip(T0, 0xFFFFFFFF, 99, b"b1")
    iface.send_ip(T0, SUBNET_BCAST, 99, b"b2")
    iface.send_ip(T0, ip_from_str("224.1.2.3"), 99, b"m")
    out = iface.poll(T0)
    assert [EthernetFrame.parse(f).dst for f in out] == [BROADCAST, BROADCAST, bytes.fromhex("01005e010203")]


@pytest.mark.parametrize("kw, exc", [
    (dict(proto=256), ValueError), (dict(ttl=0), ValueError), (dict(tos=300), ValueError),
    (dict(src=ip_from_str("10.77.0.9")), OSError),
])
def test_send_ip_misuse(kw, exc):
    iface = make()
    args = dict(proto=99)
    args.update(kw)
    proto = args.pop("proto")
    with pytest.raises(exc):
        iface.send_ip(T0, P_IP, proto, b"x", **args)


@pytest.mark.parametrize("mtu, size", [(1500, 8000), (576, 3000), (68, 200), (1500, 1481), (1006, 65515)])
def test_fragmentation_on_send(mtu, size):
    iface = make(mtu=mtu)
    payload = random.Random(size).randbytes(size)
    iface.send_ip(T0, P_IP, 99, payload)
    frames = iface.poll(T0)
    packets = [parse_ip(f)[1] for f in frames]
    step = (mtu - 20) & ~7
    assert len(packets) == -(-size // step)
    assert all(len(f) - 14 <= mtu for f in frames)
    assert len({p.ident for p in packets}) == 1
    offsets = [p.frag_offset for p in packets]
    assert offsets == [i * step for i in range(len(packets))]
    assert all(o % 8 == 0 for o in offsets)  # RFC 791 §3.2
    assert [p.more_fragments for p in packets] == [True] * (len(packets) - 1) + [False]
    assert all(len(p.payload) == step for p in packets[:-1])
    assert b"".join(bytes(p.payload) for p in packets) == payload
    assert iface.stats["ipv4.fragments_tx"] == len(packets) and iface.stats["ipv4.fragmented"] == 1


def test_exactly_mtu_is_not_fragmented_and_df_too_big_is_emsgsize():
    iface = make(mtu=576)
    iface.send_ip(T0, P_IP, 99, bytes(556), dont_fragment=True)
    (frame,) = iface.poll(T0)
    assert parse_ip(frame)[1].dont_fragment and len(frame) == 14 + 576
    with pytest.raises(OSError) as err:
        iface.send_ip(T0, P_IP, 99, bytes(557), dont_fragment=True)
    assert err.value.errno == errno.EMSGSIZE
    with pytest.raises(OSError) as err:
        iface.send_ip(T0, P_IP, 99, bytes(65516))
    assert err.value.errno == errno.EMSGSIZE
    assert iface.poll(T0) == []


def test_send_udp_fast_path_frame(impl):
    iface = make()
    iface.send_udp(T0, P_IP, 5000, 53, b"query")
    (frame,) = iface.poll(T0)
    e, ip = parse_ip(frame)
    assert ip.proto == PROTO_UDP and not ip.dont_fragment and ip.ttl == 64
    d = UdpDatagram.parse(ip.payload, src=A_IP, dst=P_IP)  # checksum verified
    assert (d.sport, d.dport, bytes(d.payload)) == (5000, 53, b"query")
    assert struct.unpack_from("!H", ip.payload, 6)[0] != 0  # a checksum was computed


# -- poll_at --------------------------------------------------------------------------------------------------

def test_poll_at_is_none_when_idle_and_now_when_frames_wait():
    iface = make()
    assert iface.poll_at() is None
    iface.send_ip(T0, P_IP, 99, b"x")
    assert iface.poll_at() <= T0
    iface.poll(T0)
    assert iface.poll_at() is None


def test_poll_at_covers_reassembly_timeout():
    iface = make(reasm_timeout=5 * SEC)
    iface.receive(ip_frame(bytes(16), 99, ident=1, frag_offset=8), T0)  # a lone non-first fragment
    assert iface.poll_at() == T0 + 5 * SEC
    assert iface.poll(T0 + 5 * SEC - 1) == []
    assert iface.reassembler.pending == 1
    assert iface.poll(T0 + 5 * SEC) == []  # no ICMP: fragment zero never came
    assert iface.reassembler.pending == 0 and iface.stats["reasm.timeout"] == 1
    assert iface.poll_at() is None


def test_now_must_not_go_back():
    iface = make()
    iface.poll(T0)
    with pytest.raises(ValueError):
        iface.receive(udp_frame(1, 2, b""), T0 - 1)
    with pytest.raises(TypeError):
        iface.poll(1.5)


# -- handlers -----------------------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.got = []
        self.errors = []
        self.polled = []
        self.deadline = None

    def handle(self, iface, now, ip, payload):
        self.got.append((now, ip.src, ip.dst, ip.proto, ip.ttl, ip.tos, ip.ident, bytes(ip.header),
                         bytes(ip.datagram), ip.broadcast, bytes(payload)))

    def handle_icmp_error(self, iface, now, type, code, quoted, mtu):
        self.errors.append((type, code, quoted.src, quoted.dst, quoted.proto, bytes(quoted.payload), mtu))

    def poll(self, iface, now):
        self.polled.append(now)
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            iface.send_ip(now, P_IP, 200, b"timer fired")

    def poll_at(self):
        return self.deadline


def test_register_checks_and_dispatches_to_a_handler():
    iface = make()
    rec = Recorder()
    with pytest.raises(ValueError):
        iface.register(PROTO_ICMP, rec)
    with pytest.raises(ValueError):
        iface.register(PROTO_UDP, rec)
    with pytest.raises(TypeError):
        iface.register(200, object())
    iface.register(200, rec)
    frame = ip_frame(b"data for 200", 200, ttl=9, tos=4, ident=1234)
    iface.receive(frame, T0)
    (got,) = rec.got
    assert got[:7] == (T0, P_IP, A_IP, 200, 9, 4, 1234)
    assert got[7] == frame[14:34] and got[8] == frame[14:] and got[9] is False and got[10] == b"data for 200"
    # Handler timers are part of poll_at and run in poll.
    rec.deadline = T0 + 500
    assert iface.poll_at() == T0 + 500
    assert iface.poll(T0 + 499) == []
    (out,) = iface.poll(T0 + 500)
    assert bytes(parse_ip(out)[1].payload) == b"timer fired"


def test_a_reassembled_datagram_reaches_a_handler_with_a_whole_header():
    iface = make()
    rec = Recorder()
    iface.register(200, rec)
    data = bytes(range(256)) * 10
    iface.receive(ip_frame(data[:1480], 200, ident=9, more_fragments=True, ttl=33), T0)
    iface.receive(ip_frame(data[1480:], 200, ident=9, frag_offset=1480, ttl=33), T0)
    (got,) = rec.got
    assert got[10] == data and got[4] == 33
    whole = IPv4Packet.parse(got[8])  # total length fixed, fragment bits clear, checksum right
    assert bytes(whole.payload) == data and not whole.is_fragment


# -- status -------------------------------------------------------------------------------------------------

def test_status_is_json_able():
    iface = make(peer_known=False)
    iface.receive(arp_frame(ArpPacket.request(P_MAC, P_IP, A_IP)), T0)
    s = iface.udp.socket()
    s.bind(("", 7))
    iface.send_udp(T0, ip_from_str("10.77.0.3"), 1, 2, b"")
    status = json.loads(json.dumps(iface.status()))
    assert status["config"]["ip"] == "10.77.0.1"
    assert status["arp"] == [{"ip": "10.77.0.2", "mac": "02:00:00:00:00:02", "state": "reachable",
                              "expires_in_us": 60 * SEC}]
    assert status["arp_resolving"] == [{"ip": "10.77.0.3", "queued": 1, "requests_sent": 1}]
    assert status["sockets"] == [{"proto": "udp", "local": "0.0.0.0:7", "remote": "*:*", "rx_queue": 0,
                                  "tx_queue": 0, "drops": 0}]
    assert status["counters"]["arp"]["replies_sent"] == 1


# -- two interfaces over a pipe --------------------------------------------------------------------------------

def _run(pairs, now: int, until: int, log: list | None = None) -> int:
    """Drive (device, interface) pairs with a manual clock until nothing is due or ``until``."""
    for _ in range(100_000):
        for dev, iface in pairs:
            for frame in dev.receive(now):
                iface.receive(frame, now)
        for dev, iface in pairs:
            out = iface.poll(now)
            if log is not None:
                log.extend((now, iface.config.ip, bytes(f)) for f in out)
            dev.transmit(out, now)
        deadlines = [t for dev, iface in pairs for t in (dev.poll_at(), iface.poll_at()) if t is not None]
        nxt = min(deadlines, default=None)
        if nxt is None or nxt > until:
            return now
        if nxt > now + 1:
            # poll_at is right: with no new input, nothing happens before it.
            for _dev, iface in pairs:
                assert iface.poll(nxt - 1) == []
        now = max(now, nxt)
    raise AssertionError("simulation did not settle")


def _pair(loss: float = 0.0, seed: int = 0):
    pipe = Pipe(latency=100)
    a = make(peer_known=False)
    b = Interface(InterfaceConfig(P_MAC, P_IP, 24))
    dev_a = FaultInjector(pipe.a, rx=FaultConfig(loss=loss), tx=FaultConfig(loss=loss), seed=seed)
    return [(dev_a, a), (pipe.b, b)]


def test_two_interfaces_exchange_udp_both_ways_with_arp(impl):
    pairs = _pair()
    (_, a), (_, b) = pairs
    a.start(T0)
    b.start(T0)
    sa, sb = a.udp.socket(), b.udp.socket()
    sa.bind(("", 5000))
    sb.bind(("", 6000))
    big = random.Random(3).randbytes(9000)
    sa.sendto(b"to b", ("10.77.0.2", 6000))
    sa.sendto(big, ("10.77.0.2", 6000))
    now = _run(pairs, T0, T0 + 10 * SEC)
    assert sb.recvfrom() == (b"to b", ("10.77.0.1", 5000))
    assert sb.recvfrom(65535) == (big, ("10.77.0.1", 5000))
    sb.sendto(b"to a", ("10.77.0.1", 5000))
    now = _run(pairs, now, now + 10 * SEC)
    assert sa.recvfrom() == (b"to a", ("10.77.0.2", 6000))
    assert a.neighbors.lookup(P_IP, now) == P_MAC and b.neighbors.lookup(A_IP, now) == A_MAC
    assert a.stats["arp.requests_sent"] == 1 and b.stats["arp.requests_sent"] == 0  # b learned from a's request


def _lossy_exchange(seed: int):
    pairs = _pair(loss=0.3, seed=seed)
    (dev_a, a), (_, b) = pairs
    sa, sb = a.udp.socket(), b.udp.socket()
    sa.bind(("", 5000))
    sb.bind(("", 6000))
    log: list = []
    now = T0
    for i in range(40):
        sa.sendto(b"ping %d" % i, ("10.77.0.2", 6000))
        now = _run(pairs, now, now + 10 * SEC, log) + 1000
        while sb.readable:
            data, addr = sb.recvfrom()
            sb.sendto(data.replace(b"ping", b"pong"), addr)
        now = _run(pairs, now, now + 10 * SEC, log) + 1000
    got = []
    while sa.readable:
        got.append(sa.recv(100))
    return log, got, dev_a.tx_counters.as_dict(), dev_a.rx_counters.as_dict()


def test_lossy_link_same_seed_same_frames():
    log1, got1, tx1, rx1 = _lossy_exchange(seed=7)
    log2, got2, tx2, rx2 = _lossy_exchange(seed=7)
    assert log1 == log2 and got1 == got2 and tx1 == tx2 and rx1 == rx2
    assert tx1["dropped_loss"] > 0 and rx1["dropped_loss"] > 0  # the loss did happen
    # What arrives is in order, without duplicates, and a fair share made it.
    numbers = [int(g.split()[1]) for g in got1]
    assert numbers == sorted(set(numbers)) and all(g.startswith(b"pong ") for g in got1)
    assert 5 <= len(numbers) < 40
    log3, *_ = _lossy_exchange(seed=8)
    assert log3 != log1
