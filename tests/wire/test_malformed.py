"""Peer garbage: every reason for its case, every truncation, and a fuzz test.

Whatever bytes arrive, a parser raises MalformedPacket with a reason listed
in ``errors.REASONS`` (and the class that table names) or nothing at all;
:func:`summarize` never raises.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FUZZ_SETTINGS, mutated_frames, ref_checksum, ref_pseudo, valid_frames

from pystack.errors import REASONS, MalformedPacket
from pystack.wire import tcp
from pystack.wire.arp import ArpPacket
from pystack.wire.ethernet import EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet, iter_options
from pystack.wire.pretty import summarize
from pystack.wire.tcp import TcpSegment, parse_options
from pystack.wire.udp import UdpDatagram

SRC, DST = 0x0A000001, 0x0A000002
MAC_1, MAC_2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def expect(reason: str, parse, *args, **kwargs) -> MalformedPacket:
    with pytest.raises(MalformedPacket) as info:
        parse(*args, **kwargs)
    exc = info.value
    assert exc.reason == reason, f"{exc} (wanted {reason})"
    assert type(exc) is REASONS[reason]
    return exc


# -- hand-built headers (struct + the oracle checksum only) ----------------------

def ip_header(*, ihl=5, total=None, version=4, payload=b"", options=b"", check=None) -> bytes:
    if total is None:
        total = ihl * 4 + len(payload)
    raw = struct.pack("!BBHHHBBHII", (version << 4) | ihl, 0, total, 0, 0, 64, 6, 0, SRC, DST) + options
    check = ref_checksum(raw) if check is None else check
    return raw[:10] + struct.pack("!H", check) + raw[12:] + payload


def tcp_header(*, doff=None, options=b"", payload=b"", check=None) -> bytes:
    if doff is None:
        doff = 5 + len(options) // 4
    raw = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, doff << 4, tcp.ACK, 5, 0, 0) + options + payload
    check = ref_checksum(raw, pseudo=ref_pseudo(SRC, DST, 6, len(raw))) if check is None else check
    return raw[:16] + struct.pack("!H", check) + raw[18:]


def udp_header(*, length=None, payload=b"", check=None) -> bytes:
    length = 8 + len(payload) if length is None else length
    raw = struct.pack("!HHHH", 1, 2, length, 0) + payload
    if check is None:
        check = ref_checksum(raw, pseudo=ref_pseudo(SRC, DST, 17, len(raw))) or 0xFFFF
    return raw[:6] + struct.pack("!H", check) + raw[8:]


def arp_bytes(htype=1, ptype=0x0800, hlen=6, plen=4, op=1) -> bytes:
    return struct.pack("!HHBBH6sI6sI", htype, ptype, hlen, plen, op, MAC_1, SRC, MAC_2, DST)


def icmp_bytes(data=b"echo data") -> bytes:
    raw = struct.pack("!BBHI", 8, 0, 0, 0x00010002) + data
    return raw[:2] + struct.pack("!H", ref_checksum(raw)) + raw[4:]


def flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0x01
    return bytes(b)


CASES = [
    ("ethernet.truncated", lambda: EthernetFrame.parse(bytes(13))),
    ("ethernet.truncated", lambda: EthernetFrame.parse(b"")),
    ("arp.truncated", lambda: ArpPacket.parse(arp_bytes()[:7])),
    ("arp.truncated", lambda: ArpPacket.parse(arp_bytes()[:27])),
    ("arp.unsupported", lambda: ArpPacket.parse(arp_bytes(htype=6))),
    ("arp.unsupported", lambda: ArpPacket.parse(arp_bytes(ptype=0x86DD))),
    ("arp.unsupported", lambda: ArpPacket.parse(arp_bytes(hlen=8))),
    ("arp.unsupported", lambda: ArpPacket.parse(arp_bytes(plen=16))),
    ("arp.unsupported", lambda: ArpPacket.parse(arp_bytes(htype=6)[:10])),  # says so before it is cut
    ("arp.bad_opcode", lambda: ArpPacket.parse(arp_bytes(op=0))),
    ("arp.bad_opcode", lambda: ArpPacket.parse(arp_bytes(op=3))),
    ("arp.bad_opcode", lambda: ArpPacket.parse(arp_bytes(op=0xFFFF))),
    ("ipv4.truncated", lambda: IPv4Packet.parse(ip_header()[:19])),
    ("ipv4.bad_version", lambda: IPv4Packet.parse(ip_header(version=6))),
    ("ipv4.bad_version", lambda: IPv4Packet.parse(ip_header(version=0))),
    *[("ipv4.bad_ihl", lambda ihl=ihl: IPv4Packet.parse(ip_header(ihl=ihl, total=20))) for ihl in range(5)],
    ("ipv4.bad_ihl", lambda: IPv4Packet.parse(ip_header(ihl=6, total=24))),  # 24-byte header, 20 present
    ("ipv4.bad_ihl", lambda: IPv4Packet.parse(ip_header(ihl=15, total=60, options=bytes(40))[:59])),
    ("ipv4.bad_ihl", lambda: IPv4Packet.parse(ip_header(ihl=6, total=24, options=bytes(4)), partial=True,
                                              length=22)),
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(total=19))),
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(total=0))),
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(ihl=6, total=22, options=bytes(4)))),
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(total=21))),  # beyond the frame
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(total=1500, payload=bytes(100)))),
    ("ipv4.bad_total_length", lambda: IPv4Packet.parse(ip_header(total=19), partial=True)),
    ("ipv4.bad_checksum", lambda: IPv4Packet.parse(ip_header(check=0))),
    ("ipv4.bad_checksum", lambda: IPv4Packet.parse(flip(ip_header(payload=b"x"), 15))),
    ("icmp.truncated", lambda: IcmpPacket.parse(icmp_bytes()[:7])),
    ("icmp.truncated", lambda: IcmpPacket.parse(b"", verify_checksum=False)),
    ("icmp.bad_checksum", lambda: IcmpPacket.parse(flip(icmp_bytes(), 12))),
    ("icmp.bad_checksum", lambda: IcmpPacket.parse(icmp_bytes() + b"\x01")),
    ("udp.truncated", lambda: UdpDatagram.parse(udp_header()[:7])),
    ("udp.bad_length", lambda: UdpDatagram.parse(udp_header(length=0))),
    ("udp.bad_length", lambda: UdpDatagram.parse(udp_header(length=7, check=0))),
    ("udp.bad_length", lambda: UdpDatagram.parse(udp_header(length=13, payload=b"abcd", check=0))),
    ("udp.bad_checksum", lambda: UdpDatagram.parse(flip(udp_header(payload=b"abcd"), 9), src=SRC, dst=DST)),
    ("udp.bad_checksum", lambda: UdpDatagram.parse(udp_header(payload=b"abcd"), src=SRC, dst=DST ^ 1)),
    ("tcp.truncated", lambda: TcpSegment.parse(tcp_header()[:19])),
    *[("tcp.bad_data_offset", lambda d=d: TcpSegment.parse(tcp_header(doff=d))) for d in range(5)],
    ("tcp.bad_data_offset", lambda: TcpSegment.parse(tcp_header(doff=6))),  # 24-byte header, 20 present
    ("tcp.bad_data_offset", lambda: TcpSegment.parse(tcp_header(options=bytes(40))[:59], src=SRC, dst=DST)),
    ("tcp.bad_checksum", lambda: TcpSegment.parse(tcp_header(check=0), src=SRC, dst=DST)),
    ("tcp.bad_checksum", lambda: TcpSegment.parse(flip(tcp_header(payload=b"data"), 21), src=SRC, dst=DST)),
    # integrity before options: a bad checksum is reported even when the options are bad too
    ("tcp.bad_checksum", lambda: TcpSegment.parse(tcp_header(options=b"\x02\x00\0\0", check=1), src=SRC,
                                                  dst=DST)),
    ("tcp.bad_option_length", lambda: TcpSegment.parse(tcp_header(options=b"\x02\x00\0\0"))),
    ("ipv4.bad_option", lambda: iter_options(b"\x07\x00\x00\x00")),
]


@pytest.mark.parametrize("reason, parse", CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_reason_for_its_case(reason, parse):
    exc = expect(reason, parse)
    assert exc.detail  # a sentence with the values, for the log


def test_every_reason_used_here_is_catalogued():
    assert {reason for reason, _ in CASES} <= set(REASONS)


# -- options: every bad length at every alignment after NOP padding ------------------

def _pad4(area: bytes) -> bytes:
    return area + bytes(-len(area) % 4)


# (name, bad option bytes); each is followed by EOL padding in a segment.
BAD_OPTIONS = [
    ("len0-unknown", bytes([30, 0])),
    ("len1-unknown", bytes([30, 1])),
    ("len0-mss", bytes([2, 0])),
    ("len1-timestamps", bytes([8, 1])),
    ("len0-sack", bytes([5, 0])),
    *[(f"mss-len{n}", bytes([2, n]) + bytes(n - 2)) for n in (2, 3, 5, 6)],
    *[(f"wscale-len{n}", bytes([3, n]) + bytes(n - 2)) for n in (2, 4)],
    *[(f"sackok-len{n}", bytes([4, n]) + bytes(n - 2)) for n in (3, 4)],
    *[(f"sack-len{n}", bytes([5, n]) + bytes(n - 2)) for n in (2, 3, 9, 11, 17, 25)],
    *[(f"ts-len{n}", bytes([8, n]) + bytes(n - 2)) for n in (2, 8, 9, 11, 12)],
]


@pytest.mark.parametrize("align", range(4))
@pytest.mark.parametrize("name, bad", BAD_OPTIONS, ids=[n for n, _ in BAD_OPTIONS])
def test_bad_option_length_at_every_alignment(name, bad, align):
    area = b"\x01" * align + bad
    expect("tcp.bad_option_length", parse_options, area)
    expect("tcp.bad_option_length", parse_options, _pad4(area))
    expect("tcp.bad_option_length", TcpSegment.parse, tcp_header(options=_pad4(area)), src=SRC, dst=DST)
    longer = tcp_header(options=_pad4(area) + b"\0" * 4, payload=b"x")
    expect("tcp.bad_option_length", TcpSegment.parse, longer)
    if bad[1] < 2:  # IPv4 options share the TLV rule, not the known-kind lengths
        expect("ipv4.bad_option", iter_options, area)


@pytest.mark.parametrize("align", range(4))
@pytest.mark.parametrize("kind", [2, 3, 4, 5, 8, 30, 255])
def test_option_running_past_the_area_at_every_alignment(kind, align):
    # length one octet more than is left: the area is a multiple of 4, the option overhangs by one
    olen = 9 - align
    area = b"\x01" * align + bytes([kind, olen]) + bytes(olen - 3)
    assert len(area) == 8
    expect("tcp.bad_option_length", parse_options, area)
    seg = tcp_header(options=area, payload=b"data")
    expect("tcp.bad_option_length", TcpSegment.parse, seg, src=SRC, dst=DST)
    expect("ipv4.bad_option", iter_options, area)
    far = _pad4(b"\x01" * align + bytes([kind, 40]))
    expect("tcp.bad_option_length", parse_options, far)
    expect("ipv4.bad_option", iter_options, far)


@pytest.mark.parametrize("align", range(4))
@pytest.mark.parametrize("kind", [2, 3, 4, 5, 8, 30])
def test_missing_length_byte_at_every_alignment(kind, align):
    area = b"\x01" * align + bytes([kind])
    expect("tcp.bad_option_length", parse_options, area)
    expect("ipv4.bad_option", iter_options, area)
    # inside a segment the area is a multiple of 4: the kind is its last octet
    seg_area = b"\x01" * (3 + 4 * (align % 2)) + bytes([kind])
    expect("tcp.bad_option_length", TcpSegment.parse, tcp_header(options=seg_area), src=SRC, dst=DST)


@pytest.mark.parametrize("align", range(4))
def test_ipv4_option_bad_lengths_at_every_alignment(align):
    for bad in (bytes([7, 0]), bytes([7, 1]), bytes([0x94, 5, 0, 0])):
        area = b"\x01" * align + bad
        expect("ipv4.bad_option", iter_options, _pad4(area) if bad[1] < 2 else area)
    # the datagram still parses: options are only walked on request
    opts = _pad4(b"\x01" * align + bytes([7, 0]))
    p = IPv4Packet.parse(ip_header(ihl=5 + len(opts) // 4, options=opts))
    assert p.options == opts


def test_good_options_after_every_alignment_still_parse():
    for align in range(4):
        area = _pad4(b"\x01" * align + bytes([2, 4, 5, 0xB4, 8, 10]) + bytes(8))
        assert parse_options(area)[align:] == (tcp.MssOption(1460), tcp.TimestampsOption(0, 0))


# -- any option area: option values or tcp.bad_option_length, nothing else ----------

@pytest.mark.parametrize("area", [
    bytes([99, 45]) + bytes(43),  # unknown kind with 43 data octets: no option area holds them
    bytes([5, 42]) + bytes(40),  # SACK with 5 blocks
    bytes([30, 41]) + bytes(39),  # 41 octets, the whole (too long) area
    b"\x01" * 40 + b"\x01",  # a NOP at octet 40
    b"\x01" * 39 + bytes([2, 4, 5, 0xB4]),  # MSS across octet 40
    b"\x01" * 32 + bytes([8, 10]) + bytes(8),  # timestamps across octet 40
], ids=["unknown-43", "sack-5-blocks", "unknown-41", "nop-at-40", "mss-across-40", "ts-across-40"])
def test_options_past_40_octets_are_bad_lengths(area):
    exc = expect("tcp.bad_option_length", parse_options, area)
    assert "40-octet limit" in exc.detail


def test_options_area_longer_than_40_octets_may_end_in_padding():
    assert parse_options(bytes([2, 4, 5, 0xB4]) + bytes(60)) == (tcp.MssOption(1460),)
    assert parse_options(b"\x01" * 38 + bytes([4, 2]) + b"\0\xff") == (tcp.NopOption(),) * 38 + (
        tcp.SackPermittedOption(),)


_tlv = st.tuples(st.integers(0, 255), st.integers(0, 64), st.binary(max_size=62)).map(
    lambda t: bytes(t[:2]) + t[2][:max(t[1] - 2, 0)])
option_areas = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(st.just(b"\x01"), _tlv), max_size=10).map(lambda parts: b"".join(parts)[:64]),
)


@FUZZ_SETTINGS
@given(option_areas)
def test_parse_options_on_any_bytes(area):
    """parse_options (public) returns option values or raises tcp.bad_option_length: nothing else."""
    try:
        options = parse_options(area)
    except MalformedPacket as exc:
        assert exc.reason == "tcp.bad_option_length", exc
        return
    # Whatever parsed fits a real option area and survives the trip through it.
    assert parse_options(tcp.emit_options(options)) == options


# -- truncated at every length, every layer -----------------------------------------

IP_OPTIONS = b"\x01\x01\x01\x00"
TCP_OPTIONS = bytes.fromhex("020405b4" "0402" "080a" "0000000100000002" "01" "030307")
TCP_SEG = tcp_header(options=TCP_OPTIONS, payload=bytes(range(1, 30)))
DATAGRAM = ip_header(ihl=6, options=IP_OPTIONS, payload=TCP_SEG)
FRAME = struct.pack("!6s6sH", MAC_2, MAC_1, 0x0800) + DATAGRAM


def test_the_valid_frame_parses():
    ip = IPv4Packet.parse(EthernetFrame.parse(FRAME).payload)
    seg = TcpSegment.parse(ip.payload, src=ip.src, dst=ip.dst)
    assert len(seg.options) == 5 and len(seg.payload) == 29


@pytest.mark.parametrize("cut", range(len(FRAME)))
def test_truncated_frame_at_every_length(cut):
    part = FRAME[:cut]
    if cut < 14:
        expect("ethernet.truncated", EthernetFrame.parse, part)
        return
    payload = EthernetFrame.parse(part).payload
    n = cut - 14
    reason = "ipv4.truncated" if n < 20 else "ipv4.bad_ihl" if n < 24 else "ipv4.bad_total_length"
    expect(reason, IPv4Packet.parse, payload)


@pytest.mark.parametrize("cut", range(len(TCP_SEG)))
def test_truncated_tcp_segment_at_every_length(cut):
    reason = "tcp.truncated" if cut < 20 else "tcp.bad_data_offset" if cut < 40 else "tcp.bad_checksum"
    expect(reason, TcpSegment.parse, TCP_SEG[:cut], src=SRC, dst=DST)


@pytest.mark.parametrize("cut", range(8 + 12))
def test_truncated_udp_datagram_at_every_length(cut):
    raw = udp_header(payload=b"twelve bytes")
    expect("udp.truncated" if cut < 8 else "udp.bad_length", UdpDatagram.parse, raw[:cut], src=SRC, dst=DST)


@pytest.mark.parametrize("cut", range(8 + 9))
def test_truncated_icmp_message_at_every_length(cut):
    expect("icmp.truncated" if cut < 8 else "icmp.bad_checksum", IcmpPacket.parse, icmp_bytes()[:cut])


@pytest.mark.parametrize("cut", range(28))
def test_truncated_arp_packet_at_every_length(cut):
    expect("arp.truncated", ArpPacket.parse, arp_bytes()[:cut])


# -- fuzz: only MalformedPacket, only catalogued reasons; summarize never raises ---------

def _check(call) -> None:
    try:
        call()
    except MalformedPacket as exc:
        assert exc.reason in REASONS, exc
        assert type(exc) is REASONS[exc.reason], exc


def parse_everything(buf: bytes) -> None:
    """Every parser at every plausible offset, then a lenient walk down the layers."""
    n = len(buf)
    for at in sorted({0, min(14, n), min(34, n), min(n, 20)}):
        _check(lambda: EthernetFrame.parse(buf, at))
        _check(lambda: ArpPacket.parse(buf, at))
        for kw in ({}, dict(verify_checksum=False), dict(verify_checksum=False, partial=True)):
            _check(lambda: IPv4Packet.parse(buf, at, **kw))
        _check(lambda: IcmpPacket.parse(buf, at))
        _check(lambda: IcmpPacket.parse(buf, at, verify_checksum=False))
        _check(lambda: IcmpPacket(3, 0, 0, buf[at:]).quoted_datagram())
        for kw in ({}, dict(src=SRC, dst=DST)):
            _check(lambda: UdpDatagram.parse(buf, at, **kw))
            _check(lambda: TcpSegment.parse(buf, at, **kw))
        _check(lambda: parse_options(buf[at:at + 40]))
        _check(lambda: iter_options(buf[at:at + 40]))
    _check(lambda: _walk(buf))
    text = summarize(buf)
    assert isinstance(text, str) and "unprintable" not in text, text


def _walk(buf: bytes) -> None:
    """Down the layers without checksums, as far as the bytes allow, re-emitting each value."""
    eth = EthernetFrame.parse(buf)
    assert EthernetFrame.parse(eth.to_bytes()) == eth
    if eth.ethertype == 0x0806:
        arp = ArpPacket.parse(eth.payload)
        assert ArpPacket.parse(arp.to_bytes()) == arp
    if eth.ethertype != 0x0800:
        return
    ip = IPv4Packet.parse(eth.payload, verify_checksum=False)
    assert IPv4Packet.parse(ip.to_bytes()) == ip
    if ip.proto == 6:
        seg = TcpSegment.parse(ip.payload)
        assert TcpSegment.parse(seg.to_bytes(ip.src, ip.dst), src=ip.src, dst=ip.dst) == seg
    elif ip.proto == 17:
        dgram = UdpDatagram.parse(ip.payload)
        assert UdpDatagram.parse(dgram.to_bytes(ip.src, ip.dst), src=ip.src, dst=ip.dst) == dgram
    elif ip.proto == 1:
        msg = IcmpPacket.parse(ip.payload, verify_checksum=False)
        assert IcmpPacket.parse(msg.to_bytes()) == msg
        if msg.is_error:
            msg.quoted_datagram()


_ETH_IPV4 = struct.pack("!6s6sH", MAC_2, MAC_1, 0x0800)
random_bytes = st.one_of(
    st.binary(max_size=120),
    st.tuples(st.sampled_from([b"\x45", b"\x46", b"\x4f", b"\x40"]), st.binary(max_size=100)).map(
        lambda t: _ETH_IPV4 + t[0] + t[1]),
    st.binary(max_size=60).map(lambda b: struct.pack("!6s6sH", MAC_2, MAC_1, 0x0806) + b),
)


@FUZZ_SETTINGS
@given(random_bytes)
def test_fuzz_random_bytes(buf):
    parse_everything(buf)


@FUZZ_SETTINGS
@given(mutated_frames())
def test_fuzz_mutated_frames(buf):
    parse_everything(buf)


@FUZZ_SETTINGS
@given(valid_frames)
def test_valid_frames_walk_and_summarize(buf):
    _walk(buf)  # nothing raised at all
    assert "malformed" not in summarize(buf)
