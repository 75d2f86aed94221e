"""Frames made by the Linux kernel parse to what the kernel was asked to send.

The saved frames (``tests/data/kernel_frames``, see its README) are checked
with the per-protocol parsers (``pystack.wire.*``) and with the one-call
fast path (``pystack.wire.headers.parse_frame``, both implementations).  The
``netns`` tests capture fresh frames from the running kernel and check the
same facts, so a stale file cannot hide a change.

Only facts the kernel guarantees are asserted: what the capture chose
(addresses, ports, payloads, our SYN-ACK's ISN and TSval), what RFCs and a
fresh namespace's defaults fix (MSS 1460 for MTU 1500, SACK-permitted,
timestamps and window scale in a SYN, TTL 64, DF on TCP), and that every
checksum verifies -- never a window size or an initial sequence number.
"""

from __future__ import annotations

import pytest

import kernel_frames as kf
from conftest import implementations, netns_available, require
from pystack.wire.arp import OP_REQUEST, ArpPacket
from pystack.wire.ethernet import EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet, ip_from_str
from pystack.wire.tcp import (MssOption, SackPermittedOption, TcpSegment, TimestampsOption,
                              WindowScaleOption)
from pystack.wire.udp import UdpDatagram

headers_impl = implementations("headers", "pystack.wire._headers_py")

TAP_IP = ip_from_str(kf.TAP_IP)
PEER_IP = ip_from_str(kf.PEER_IP)
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
MAX_DATA = 1460 - 12  # MSS minus the timestamps option every data segment carries (RFC 7323 §3)


@pytest.fixture(scope="module")
def saved():
    return kf.load_saved()


@pytest.fixture(scope="module")
def live():
    """Frames captured now, from this kernel, in a namespace made for them."""
    require(netns_available())
    return kf.capture_fresh()


def test_saved_files_are_complete():
    names = sorted(p.stem for p in kf.DATA_DIR.glob("*.hex"))
    assert names == sorted(kf.FRAME_NAMES)
    readme = (kf.DATA_DIR / "README").read_text()
    assert "kernel" in readme and "kernel_frames.py --write" in readme


# -- the facts, with the per-protocol parsers -----------------------------------

def _ipv4(frames, name: str, proto: int) -> IPv4Packet:
    frame = frames[name]
    assert kf.checksums_verify(frame), f"{name}: a checksum does not verify"
    eth = EthernetFrame.parse(frame)
    assert (eth.dst, eth.src, eth.ethertype) == (kf.PEER_MAC, kf.TAP_MAC, kf.ETH_P_IP)
    ip = IPv4Packet.parse(eth.payload)
    assert (ip.src, ip.dst, ip.proto) == (TAP_IP, PEER_IP, proto)
    assert ip.ttl == 64  # net.ipv4.ip_default_ttl of a fresh namespace
    return ip


def _tcp(frames, name: str) -> TcpSegment:
    ip = _ipv4(frames, name, kf.IPPROTO_TCP)
    assert ip.dont_fragment  # path MTU discovery is on by default (RFC 1191)
    return TcpSegment.parse(ip.payload, src=ip.src, dst=ip.dst)


def check_with_wire_parsers(frames) -> None:
    eth = EthernetFrame.parse(frames["arp_request"])
    assert (eth.dst, eth.src, eth.ethertype) == (kf.BROADCAST_MAC, kf.TAP_MAC, kf.ETH_P_ARP)
    arp = ArpPacket.parse(eth.payload)
    assert arp.opcode == OP_REQUEST
    assert (arp.sender_mac, arp.sender_ip, arp.target_ip) == (kf.TAP_MAC, TAP_IP, PEER_IP)

    ip = _ipv4(frames, "udp", kf.IPPROTO_UDP)
    udp = UdpDatagram.parse(ip.payload, src=ip.src, dst=ip.dst)
    assert (udp.sport, udp.dport, bytes(udp.payload)) == (kf.UDP_SPORT, kf.UDP_DPORT, kf.UDP_PAYLOAD)

    syn = _tcp(frames, "tcp_syn")
    assert syn.dport == kf.TCP_PORT
    assert syn.flags & (SYN | ACK | FIN | RST | PSH) == SYN
    assert len(syn.payload) == 0 and syn.window > 0
    assert syn.get(MssOption).mss == 1460  # MTU 1500 - 20 - 20 (RFC 9293 §3.7.1)
    assert syn.get(SackPermittedOption) is not None
    assert syn.get(TimestampsOption).tsecr == 0  # nothing to echo yet (RFC 7323 §3.2)
    assert 0 <= syn.get(WindowScaleOption).shift <= 14  # RFC 7323 §2.3

    segments = [_tcp(frames, "tcp_data_1"), _tcp(frames, "tcp_data_2")]
    expected_seq = (syn.seq + 1) & 0xFFFFFFFF
    for seg in segments:
        assert (seg.sport, seg.dport) == (syn.sport, syn.dport)
        assert seg.seq == expected_seq
        assert seg.flags & ACK and seg.ack == kf.SYNACK_ISN + 1
        assert not seg.flags & (SYN | FIN | RST)
        assert 0 < len(seg.payload) <= MAX_DATA
        assert seg.get(TimestampsOption).tsecr == kf.SYNACK_TSVAL  # echoes our SYN-ACK
        expected_seq = (expected_seq + len(seg.payload)) & 0xFFFFFFFF
    assert b"".join(bytes(s.payload) for s in segments) == kf.TCP_DATA
    assert segments[-1].flags & PSH  # the end of the send() is pushed

    ip = _ipv4(frames, "icmp_echo_request", kf.IPPROTO_ICMP)
    icmp = IcmpPacket.parse(ip.payload)
    assert (icmp.type, icmp.code, icmp.ident, icmp.sequence) == (8, 0, kf.PING_IDENT, kf.PING_SEQ)
    assert bytes(icmp.payload) == kf.PING_PAYLOAD

    ip = _ipv4(frames, "icmp_echo_reply", kf.IPPROTO_ICMP)
    icmp = IcmpPacket.parse(ip.payload)
    assert (icmp.type, icmp.code, icmp.ident, icmp.sequence) == (0, 0, kf.ECHO_IDENT, kf.ECHO_SEQ)
    assert bytes(icmp.payload) == kf.ECHO_PAYLOAD  # RFC 792: the reply returns the data


# -- the facts, with the one-call fast path ---------------------------------------

def _payload(frame: bytes, f) -> bytes:
    return frame[f.payload_offset:f.payload_offset + f.payload_len]


def _ip_frame(headers, frames, name: str, proto: int, layers: int):
    f = headers.parse_frame(frames[name])
    assert f.layers == layers
    assert (f.eth_dst, f.eth_src, f.ethertype) == (kf.PEER_MAC, kf.TAP_MAC, kf.ETH_P_IP)
    assert (f.ip_src, f.ip_dst, f.ip_proto, f.ip_ttl) == (TAP_IP, PEER_IP, proto, 64)
    assert f.ip_offset == 14 and f.ip_total_len == len(frames[name]) - 14
    return f


def check_with_parse_frame(headers, frames) -> None:
    f = headers.parse_frame(frames["arp_request"])
    assert f.layers == 1
    assert (f.eth_dst, f.eth_src, f.ethertype) == (kf.BROADCAST_MAC, kf.TAP_MAC, kf.ETH_P_ARP)

    for name, ident, seq, data in (("icmp_echo_request", kf.PING_IDENT, kf.PING_SEQ, kf.PING_PAYLOAD),
                                   ("icmp_echo_reply", kf.ECHO_IDENT, kf.ECHO_SEQ, kf.ECHO_PAYLOAD)):
        f = _ip_frame(headers, frames, name, kf.IPPROTO_ICMP, 2)
        icmp = _payload(frames[name], f)  # layers 2: the payload is the IP payload
        assert icmp[4:8] == ident.to_bytes(2, "big") + seq.to_bytes(2, "big") and icmp[8:] == data

    f = _ip_frame(headers, frames, "udp", kf.IPPROTO_UDP, 3)
    assert (f.sport, f.dport, f.udp_len) == (kf.UDP_SPORT, kf.UDP_DPORT, 8 + len(kf.UDP_PAYLOAD))
    assert _payload(frames["udp"], f) == kf.UDP_PAYLOAD

    syn = _ip_frame(headers, frames, "tcp_syn", kf.IPPROTO_TCP, 3)
    assert syn.dport == kf.TCP_PORT and syn.tcp_flags & (SYN | ACK | FIN | RST | PSH) == SYN
    assert (syn.mss, syn.sack_permitted, syn.ts_ecr) == (1460, True, 0)
    assert syn.ts_val >= 0 and 0 <= syn.wscale <= 14
    assert syn.payload_len == 0

    data = b""
    expected_seq = (syn.seq + 1) & 0xFFFFFFFF
    for name in ("tcp_data_1", "tcp_data_2"):
        f = _ip_frame(headers, frames, name, kf.IPPROTO_TCP, 3)
        assert (f.sport, f.dport, f.seq) == (syn.sport, syn.dport, expected_seq)
        assert f.tcp_flags & ACK and f.ack == kf.SYNACK_ISN + 1
        assert f.ts_ecr == kf.SYNACK_TSVAL and f.ts_val >= 0
        assert (f.mss, f.wscale, f.sack_permitted) == (-1, -1, False)  # SYN-only options
        assert 0 < f.payload_len <= MAX_DATA
        data += _payload(frames[name], f)
        expected_seq = (expected_seq + f.payload_len) & 0xFFFFFFFF
    assert data == kf.TCP_DATA
    assert f.tcp_flags & PSH


def check_parsers_agree(headers, frames) -> None:
    """parse_frame and the per-protocol parsers read the same TCP fields."""
    for name in ("tcp_syn", "tcp_data_1", "tcp_data_2"):
        f = headers.parse_frame(frames[name])
        seg = _tcp(frames, name)
        ts = seg.get(TimestampsOption)
        assert (f.sport, f.dport, f.seq, f.ack, f.tcp_flags, f.window) == (
            seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window)
        assert (f.ts_val, f.ts_ecr) == (ts.tsval, ts.tsecr)
        assert _payload(frames[name], f) == bytes(seg.payload)


# -- the tests ----------------------------------------------------------------------

def test_saved_frames_wire_parsers(saved):
    check_with_wire_parsers(saved)


def test_saved_frames_parse_frame(saved, headers_impl):
    check_with_parse_frame(headers_impl, saved)
    check_parsers_agree(headers_impl, saved)


@pytest.mark.netns
def test_live_frames_wire_parsers(live):
    check_with_wire_parsers(live)


@pytest.mark.netns
def test_live_frames_parse_frame(live, headers_impl):
    check_with_parse_frame(headers_impl, live)
    check_parsers_agree(headers_impl, live)


def test_checks_catch_a_changed_byte(saved, headers_impl):
    """The checks can fail: one flipped payload bit breaks the TCP checksum."""
    from pystack.errors import BadChecksum

    frame = bytearray(saved["tcp_data_2"])
    frame[-1] ^= 0x01
    bad = {**saved, "tcp_data_2": bytes(frame)}
    assert not kf.checksums_verify(bad["tcp_data_2"])
    with pytest.raises(AssertionError, match="checksum"):
        check_with_wire_parsers(bad)
    with pytest.raises(BadChecksum):
        headers_impl.parse_frame(bad["tcp_data_2"])
