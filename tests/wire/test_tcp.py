"""TCP segments and options (RFC 9293 §3.1, §3.2; RFC 7323; RFC 2018)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_frames import TCP_DATA, load_saved
from strategies import SETTINGS, embedded, ref_checksum, ref_pseudo, tcp_options, tcp_segments, u32

from pystack.errors import MalformedPacket
from pystack.wire import tcp
from pystack.wire.ipv4 import IPv4Packet
from pystack.wire.tcp import (
    MssOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TcpSegment,
    TimestampsOption,
    UnknownOption,
    WindowScaleOption,
    emit_options,
    parse_options,
)

SRC, DST = 0x0A000001, 0x0A000002

# What Linux puts in a SYN: MSS, SACK-permitted, timestamps, NOP, window scale.
LINUX_SYN_OPTIONS = bytes.fromhex("020405b4" "0402" "080a" "00000001" "00000000" "01" "030307")


def tcp_bytes(sport, dport, seq, ack, flags, window, options=b"", data=b"", urgent=0,
              reserved=0, src=SRC, dst=DST) -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    raw = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (doff << 4) | reserved, flags,
                      window, 0, urgent) + options + data
    check = ref_checksum(raw, pseudo=ref_pseudo(src, dst, 6, len(raw)))
    return raw[:16] + struct.pack("!H", check) + raw[18:]


def test_hand_built_syn():
    raw = tcp_bytes(40000, 80, 1000, 0, tcp.SYN, 64240, LINUX_SYN_OPTIONS)
    seg = TcpSegment.parse(raw, src=SRC, dst=DST)
    assert seg == TcpSegment(40000, 80, 1000, 0, tcp.SYN, 64240, b"", options=(
        MssOption(1460), SackPermittedOption(), TimestampsOption(1, 0), NopOption(), WindowScaleOption(7)))
    assert (seg.header_len, seg.wire_len, seg.seg_len, seg.flags_str) == (40, 40, 1, "S")
    assert seg.get(MssOption).mss == 1460 and seg.get(SackOption) is None
    assert seg.to_bytes(SRC, DST) == raw


def test_hand_built_data_segment():
    raw = tcp_bytes(80, 40000, 0xFFFFFFF0, 1001, tcp.ACK | tcp.PSH | tcp.URG, 500,
                    data=b"hello", urgent=3)
    seg = TcpSegment.parse(raw, src=SRC, dst=DST)
    assert (seg.seq, seg.ack, seg.urgent, seg.options, seg.seg_len) == (0xFFFFFFF0, 1001, 3, (), 5)
    assert isinstance(seg.payload, memoryview) and seg.payload == b"hello"
    assert seg.flags_str == "PAU"


def test_kernel_segments():
    frames = load_saved()
    ip = IPv4Packet.parse(frames["tcp_syn"], 14)
    syn = TcpSegment.parse(ip.payload, src=ip.src, dst=ip.dst)
    assert (syn.dport, syn.flags, syn.window) == (5000, tcp.SYN, 64240)
    assert [type(o) for o in syn.options] == [MssOption, SackPermittedOption, TimestampsOption,
                                              NopOption, WindowScaleOption]
    assert syn.get(MssOption).mss == 1460 and syn.get(WindowScaleOption).shift == ip.payload[39]
    assert syn.get(TimestampsOption).tsval == struct.unpack_from("!I", ip.payload, 28)[0]
    assert syn.seq == struct.unpack_from("!I", ip.payload, 4)[0]
    assert syn.to_bytes(ip.src, ip.dst) == bytes(ip.payload)
    data = b""
    for name in ("tcp_data_1", "tcp_data_2"):
        ip = IPv4Packet.parse(frames[name], 14)
        seg = TcpSegment.parse(ip.payload, src=ip.src, dst=ip.dst)
        assert seg.flags & tcp.ACK and seg.get(TimestampsOption) is not None
        assert seg.to_bytes(ip.src, ip.dst) == bytes(ip.payload)
        data += bytes(seg.payload)
    assert data == TCP_DATA


def test_bad_checksum_verified_only_with_addresses():
    raw = bytearray(tcp_bytes(1, 2, 3, 4, tcp.ACK, 5, data=b"data"))
    raw[-1] ^= 0x80
    assert TcpSegment.parse(raw).payload == b"dat\xe1"
    assert TcpSegment.parse(raw, src=SRC, dst=DST, verify_checksum=False).payload == b"dat\xe1"
    with pytest.raises(MalformedPacket) as info:
        TcpSegment.parse(raw, src=SRC, dst=DST)
    assert info.value.reason == "tcp.bad_checksum"


def test_reserved_bits_are_ignored():
    raw = tcp_bytes(1, 2, 3, 4, tcp.SYN, 5, reserved=0x0F)
    seg = TcpSegment.parse(raw, src=SRC, dst=DST)
    assert seg == TcpSegment(1, 2, 3, 4, tcp.SYN, 5, b"")


@pytest.mark.parametrize("flags, text", [
    (0, ""), (tcp.SYN, "S"), (tcp.SYN | tcp.ACK, "SA"), (tcp.FIN | tcp.PSH | tcp.ACK, "FPA"),
    (tcp.RST, "R"), (tcp.RST | tcp.ACK, "RA"), (0xFF, "FSRPAUEW"), (tcp.ECE | tcp.CWR | tcp.SYN, "SEW"),
])
def test_flags_str(flags, text):
    assert TcpSegment(1, 2, 0, 0, flags, 0, b"").flags_str == text


@pytest.mark.parametrize("flags, payload, seg_len", [
    (tcp.SYN, b"", 1), (tcp.SYN | tcp.FIN, b"ab", 4), (tcp.FIN | tcp.ACK, b"abc", 4),
    (tcp.ACK, b"", 0), (tcp.RST, b"x", 1),
])
def test_seg_len(flags, payload, seg_len):
    assert TcpSegment(1, 2, 0, 0, flags, 0, payload).seg_len == seg_len


def test_get_returns_the_last_of_a_class():
    seg = TcpSegment(1, 2, 0, 0, 0, 0, b"", options=[MssOption(1), NopOption(), MssOption(2)])
    assert seg.options == (MssOption(1), NopOption(), MssOption(2))  # a list becomes a tuple
    assert seg.get(MssOption) == MssOption(2) and seg.get(TimestampsOption) is None


def test_parse_options_examples():
    assert parse_options(LINUX_SYN_OPTIONS) == (
        MssOption(1460), SackPermittedOption(), TimestampsOption(1, 0), NopOption(), WindowScaleOption(7))
    assert parse_options(b"") == ()
    assert parse_options(b"\x01\x01\x00\x02\x00\xff\xff") == (NopOption(), NopOption())  # EOL ends it
    assert parse_options(bytes.fromhex("0303 0f")) == (WindowScaleOption(15),)  # kept above 14
    assert parse_options(bytes.fromhex("050a 00000001 00000002")) == (SackOption(((1, 2),)),)
    four = bytes.fromhex("0522") + b"".join(struct.pack("!II", i, i + 1) for i in range(4))
    assert parse_options(four) == (SackOption(tuple((i, i + 1) for i in range(4))),)


def test_unknown_kinds_are_kept():
    area = bytes.fromhex("1e04abcd" "0602" "2202")  # MPTCP-ish, echo with a short length, TFO cookie-less
    assert parse_options(area) == (UnknownOption(30, b"\xab\xcd"), UnknownOption(6, b""),
                                   UnknownOption(34, b""))
    md5 = bytes([19, 18]) + bytes(range(16))
    assert parse_options(md5) == (UnknownOption(19, bytes(range(16))),)


def test_emit_options_pads_with_zeros():
    assert emit_options(()) == b""
    assert emit_options([NopOption()]) == b"\x01\0\0\0"
    assert emit_options([MssOption(536)]) == b"\x02\x04\x02\x18"
    assert emit_options([WindowScaleOption(14), SackPermittedOption()]) == b"\x03\x03\x0e\x04\x02\0\0\0"
    assert emit_options([UnknownOption(254, b"\xf9\x89")]) == b"\xfe\x04\xf9\x89"
    assert emit_options(parse_options(LINUX_SYN_OPTIONS)) == LINUX_SYN_OPTIONS


def test_too_many_options():
    opts = [SackOption(((1, 2),) * 4), TimestampsOption(1, 2)]  # 34 + 10 > 40
    with pytest.raises(ValueError):
        emit_options(opts)
    with pytest.raises(ValueError):
        TcpSegment(1, 2, 0, 0, 0, 0, b"", options=opts)
    with pytest.raises(ValueError):  # 41 bytes
        emit_options([NopOption()] * 7 + [SackOption(((1, 2),) * 4)])
    assert len(emit_options([NopOption()] * 3 + [SackOption(((1, 2),) * 4)])) == 40  # 37, padded
    assert len(emit_options([NopOption()] * 6 + [SackOption(((1, 2),) * 4)])) == 40


@pytest.mark.parametrize("make, error", [
    (lambda: UnknownOption(2, b"\0\0"), ValueError),
    (lambda: UnknownOption(0, b""), ValueError),
    (lambda: UnknownOption(99, b"x" * 39), ValueError),
    (lambda: UnknownOption(99, "x"), TypeError),
    (lambda: SackOption(()), ValueError),
    (lambda: SackOption(((1, 2),) * 5), ValueError),
    (lambda: SackOption(((1, 1 << 32),)), ValueError),
    (lambda: SackOption((1, 2)), TypeError),
    (lambda: MssOption(65536), ValueError),
    (lambda: WindowScaleOption(256), ValueError),
    (lambda: TimestampsOption(-1, 0), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"", options=[b"\x01"]), TypeError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"", options=b"\x01\x01\x01\x01"), TypeError),
    (lambda: TcpSegment(1, 2, 1 << 32, 0, 0, 0, b""), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 256, 0, b""), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 65536, b""), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"", urgent=-1), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, None), TypeError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"").to_bytes(src=SRC), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"").emit(bytearray(19)), ValueError),
    (lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"").emit(bytes(20)), TypeError),
])
def test_misuse(make, error):
    with pytest.raises(error):
        make()


def test_emit_without_addresses_leaves_the_checksum_zero():
    raw = TcpSegment(1, 2, 3, 4, tcp.ACK, 5, b"x").to_bytes()
    assert raw[16:18] == b"\0\0"
    assert TcpSegment.parse(raw) == TcpSegment(1, 2, 3, 4, tcp.ACK, 5, b"x")


@SETTINGS
@given(tcp_options, st.integers(0, 3))
def test_options_round_trip_at_every_alignment(options, nops):
    options = tuple([NopOption()] * nops) + options
    try:
        area = emit_options(options)
    except ValueError:  # the extra NOPs pushed it past 40 octets
        return
    assert len(area) % 4 == 0 and len(area) <= 40
    assert parse_options(area) == options


@SETTINGS
@given(st.data(), tcp_segments(), u32, u32)
def test_round_trip_inside_a_larger_buffer(data, seg, src, dst):
    raw = seg.to_bytes(src, dst)
    assert ref_checksum(raw, pseudo=ref_pseudo(src, dst, 6, len(raw))) == 0
    buf, offset = data.draw(embedded(raw))
    assert TcpSegment.parse(buf, offset, len(raw), src, dst) == seg
    out = bytearray(offset + seg.wire_len)
    assert seg.emit(out, offset, src, dst) == seg.wire_len == len(raw)
    assert out[offset:] == raw
