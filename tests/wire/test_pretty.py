"""One-line frame summaries: exact text for each protocol, and never an exception."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from kernel_frames import load_saved

from pystack.wire import tcp
from pystack.wire.arp import ArpPacket
from pystack.wire.ethernet import BROADCAST, EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet
from pystack.wire.pretty import summarize
from pystack.wire.tcp import TcpSegment
from pystack.wire.udp import UdpDatagram

MAC_1 = bytes.fromhex("020000000001")
MAC_2 = bytes.fromhex("020000000002")
A, B = 0x0A000001, 0x0A000002
MACS = "02:00:00:00:00:01 > 02:00:00:00:00:02"


def frame(ethertype: int, payload: bytes) -> bytes:
    return EthernetFrame(MAC_2, MAC_1, ethertype, payload).to_bytes()


def ip_frame(proto: int, payload: bytes, src=A, dst=B, **kw) -> bytes:
    return frame(0x0800, IPv4Packet(src, dst, proto, payload, **kw).to_bytes())


def test_tcp_syn():
    seg = TcpSegment(40000, 80, 1000, 0, tcp.SYN, 64240, b"", options=(
        tcp.MssOption(1460), tcp.SackPermittedOption(), tcp.TimestampsOption(1, 0), tcp.NopOption(),
        tcp.WindowScaleOption(7)))
    assert summarize(ip_frame(6, seg.to_bytes(A, B))) == (
        f"{MACS} IPv4 10.0.0.1:40000 > 10.0.0.2:80 TCP [S] seq 1000 win 64240 "
        "<mss 1460,sackOK,TS 1:0,nop,wscale 7> len 0")


def test_tcp_ack_urg_sack_unknown_and_no_flags():
    seg = TcpSegment(80, 40000, 5, 6, tcp.ACK | tcp.URG | tcp.PSH, 100, b"abc", urgent=2, options=(
        tcp.SackOption(((10, 20), (30, 40))), tcp.UnknownOption(30, b"\x01\xff"), tcp.UnknownOption(99, b"")))
    assert summarize(ip_frame(6, seg.to_bytes(A, B))) == (
        f"{MACS} IPv4 10.0.0.1:80 > 10.0.0.2:40000 TCP [PAU] seq 5 ack 6 win 100 urg 2 "
        "<sack 10:20 30:40,opt30:01ff,opt99> len 3")
    bare = TcpSegment(1, 2, 3, 4, 0, 5, b"")
    assert summarize(ip_frame(6, bare.to_bytes(A, B))) == (
        f"{MACS} IPv4 10.0.0.1:1 > 10.0.0.2:2 TCP [none] seq 3 win 5 len 0")


def test_kernel_syn():
    syn = load_saved()["tcp_syn"]  # may be re-captured: read the values with struct
    assert syn[54:58] == b"\x02\x04\x05\xb4" and syn[58:62] == b"\x04\x02\x08\x0a"  # Linux's layout
    sport, seq = struct.unpack_from("!H2xI", syn, 34)
    tsval, tsecr = struct.unpack_from("!II", syn, 62)
    assert syn[70:73] == b"\x01\x03\x03"
    assert summarize(syn) == (
        f"{MACS} IPv4 10.77.0.1:{sport} > 10.77.0.2:5000 TCP [S] seq {seq} win 64240 "
        f"<mss 1460,sackOK,TS {tsval}:{tsecr},nop,wscale {syn[73]}> len 0")


def test_arp():
    req = ArpPacket.request(MAC_1, A, B)
    raw = EthernetFrame(BROADCAST, MAC_1, 0x0806, req.to_bytes() + bytes(18)).to_bytes()
    assert summarize(raw) == "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1"
    rep = req.reply_for(MAC_2)
    raw = EthernetFrame(MAC_1, MAC_2, 0x0806, rep.to_bytes()).to_bytes()
    assert summarize(raw) == \
        "02:00:00:00:00:02 > 02:00:00:00:00:01 ARP reply 10.0.0.2 is-at 02:00:00:00:00:02"


def test_icmp_echo():
    ping = IcmpPacket.echo(True, 3, 1, bytes(56))
    assert summarize(ip_frame(1, ping.to_bytes())) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 3 seq 1 len 56"
    pong = IcmpPacket.echo(False, 3, 1, b"")
    assert summarize(ip_frame(1, pong.to_bytes())) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 ICMP echo reply id 3 seq 1 len 0"


def _offending(proto=17) -> bytes:
    inner = UdpDatagram(5000, 53, b"question").to_bytes(A, B) if proto == 17 else b"\x08\0\0\0\0\0\0\0"
    return IPv4Packet(A, B, proto, inner).to_bytes()


@pytest.mark.parametrize("error, text", [
    (IcmpPacket.error(3, 3, _offending()), "unreachable port [10.0.0.1:5000 > 10.0.0.2:53 UDP]"),
    (IcmpPacket.error(3, 4, _offending(), mtu=1400),
     "unreachable frag-needed mtu 1400 [10.0.0.1:5000 > 10.0.0.2:53 UDP]"),
    (IcmpPacket.error(3, 13, _offending()), "unreachable code 13 [10.0.0.1:5000 > 10.0.0.2:53 UDP]"),
    (IcmpPacket.error(11, 0, _offending(1)), "time-exceeded ttl [10.0.0.1 > 10.0.0.2 ICMP]"),
    (IcmpPacket.error(11, 1, _offending()), "time-exceeded reassembly [10.0.0.1:5000 > 10.0.0.2:53 UDP]"),
    (IcmpPacket.error(12, 0, _offending()), "parameter-problem code 0 [10.0.0.1:5000 > 10.0.0.2:53 UDP]"),
    (IcmpPacket(3, 1, 0, _offending()[:12]), "unreachable host [quote cut short, 12 bytes]"),
    (IcmpPacket(3, 1, 0, b"\x55" + _offending()[1:]),
     "unreachable host [quote malformed (ipv4.bad_version: version 5, not 4)]"),
    (IcmpPacket(13, 0, 0, bytes(12)), "type 13 code 0 len 12"),
])
def test_icmp_errors_and_others(error, text):
    assert summarize(ip_frame(1, error.to_bytes(), src=B, dst=A)) == \
        f"{MACS} IPv4 10.0.0.2 > 10.0.0.1 ICMP {text}"


def test_udp():
    dgram = UdpDatagram(53, 5000, b"answer!")
    assert summarize(ip_frame(17, dgram.to_bytes(A, B))) == \
        f"{MACS} IPv4 10.0.0.1:53 > 10.0.0.2:5000 UDP len 7"


def test_fragments():
    assert summarize(ip_frame(17, b"x" * 1480, ident=7, frag_offset=1480, more_fragments=True)) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 UDP frag id 7 off 1480+ len 1480"
    assert summarize(ip_frame(6, b"x" * 100, ident=7, frag_offset=2960)) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 TCP frag id 7 off 2960 len 100"
    assert summarize(ip_frame(17, b"x" * 16, ident=9, more_fragments=True)) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 UDP frag id 9 off 0+ len 16"


def test_other_protocols_and_ethertypes():
    assert summarize(ip_frame(47, b"gre!")) == f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 proto 47 len 4"
    assert summarize(frame(0x86DD, bytes(40))) == f"{MACS} IPv6 len 40"
    assert summarize(frame(0x88CC, b"lldp")) == f"{MACS} ethertype 0x88cc len 4"


def test_bad_checksums_are_shown_not_hidden():
    raw = bytearray(ip_frame(17, UdpDatagram(1, 2, b"data").to_bytes(A, B)))
    raw[-1] ^= 1
    assert summarize(raw) == f"{MACS} IPv4 10.0.0.1:1 > 10.0.0.2:2 UDP len 4 [bad udp cksum]"
    raw = bytearray(ip_frame(6, TcpSegment(1, 2, 3, 4, tcp.ACK, 5, b"").to_bytes(A, B)))
    raw[-1] ^= 1
    assert summarize(raw) == \
        f"{MACS} IPv4 10.0.0.1:1 > 10.0.0.2:2 TCP [A] seq 3 ack 4 win 5 len 0 [bad tcp cksum]"
    raw = bytearray(ip_frame(1, IcmpPacket.echo(True, 1, 2).to_bytes()))
    raw[-1] ^= 1
    assert summarize(raw) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 1 seq 3 len 0 [bad icmp cksum]"
    raw = bytearray(ip_frame(47, b""))
    raw[14 + 8] = 1  # ttl
    assert summarize(raw) == f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 proto 47 len 0 [bad ip cksum]"


def test_malformed_layers():
    assert summarize(b"\x02" * 10) == "malformed (ethernet.truncated: 10 bytes < the 14-byte header) 10 bytes"
    bad_ihl = bytearray(ip_frame(6, b""))
    bad_ihl[14] = 0x44
    assert summarize(bad_ihl) == \
        f"{MACS} IPv4 malformed (ipv4.bad_ihl: IHL 4 (16 bytes) with 20 bytes present) 20 bytes"
    short_tcp = ip_frame(6, b"\0" * 12)
    assert summarize(short_tcp) == \
        f"{MACS} IPv4 10.0.0.1 > 10.0.0.2 TCP malformed (tcp.truncated: 12 bytes < the 20-byte header) " \
        "12 bytes"
    assert summarize(frame(0x0806, bytes(10))).startswith(f"{MACS} ARP malformed (arp.unsupported: ")
    ips = f"{MACS} IPv4 10.0.0.1 > 10.0.0.2"
    assert summarize(ip_frame(1, b"\0" * 4)).startswith(f"{ips} ICMP malformed (icmp.truncated: ")
    assert summarize(ip_frame(17, b"\0" * 4)).startswith(f"{ips} UDP malformed (udp.truncated: ")


def test_offset_length_and_other_buffers():
    raw = ip_frame(17, UdpDatagram(1, 2, b"").to_bytes(A, B))
    want = f"{MACS} IPv4 10.0.0.1:1 > 10.0.0.2:2 UDP len 0"
    assert summarize(b"junk" + raw + b"more", 4, len(raw)) == want
    assert summarize(np.frombuffer(raw, dtype=np.uint8)) == want
    assert summarize(memoryview(bytearray(raw))) == want


@pytest.mark.parametrize("args", [(None,), ("text",), (b"abc", 10), (b"abc", 0, 10), (b"abc", -1), (12,)])
def test_never_raises_even_on_misuse(args):
    assert isinstance(summarize(*args), str)
