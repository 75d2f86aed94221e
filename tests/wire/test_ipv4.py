"""IPv4 datagrams (RFC 791 §3.1), options, address text."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_frames import load_saved
from strategies import SETTINGS, embedded, ipv4_packets, ref_checksum, u32

from pystack.errors import MalformedPacket
from pystack.wire import ipv4
from pystack.wire.ipv4 import IPv4Packet, ip_from_str, ip_to_str, iter_options

# A textbook header (UDP, DF, 192.168.0.1 -> 192.168.0.199) with its checksum 0xb861.
TEXTBOOK = bytes.fromhex("450000730000400040 11b861c0a80001c0a800c7".replace(" ", ""))


def header(*, ihl=5, total=20, ident=0, flags_frag=0, ttl=64, proto=17, src=0x0A000001,
           dst=0x0A000002, tos=0, options=b"", version=4, check=None) -> bytes:
    raw = struct.pack("!BBHHHBBHII", (version << 4) | ihl, tos, total, ident, flags_frag, ttl,
                      proto, 0, src, dst) + options
    if check is None:
        check = ref_checksum(raw)
    return raw[:10] + struct.pack("!H", check) + raw[12:]


def test_textbook_header():
    assert ref_checksum(TEXTBOOK) == 0  # the oracle agrees the vector is right
    data = bytes(range(95))
    p = IPv4Packet.parse(TEXTBOOK + data)
    assert p == IPv4Packet(0xC0A80001, 0xC0A800C7, ipv4.PROTO_UDP, data, ttl=64, ident=0,
                           dont_fragment=True)
    assert isinstance(p.payload, memoryview)
    assert (p.header_len, p.wire_len, p.is_fragment) == (20, 115, False)
    assert p.to_bytes() == TEXTBOOK + data


def test_kernel_frames_parse_and_re_emit_unchanged():
    for name, frame in load_saved().items():
        if frame[12:14] != b"\x08\x00":
            continue
        p = IPv4Packet.parse(frame, 14)
        assert p.src == 0x0A4D0001, name
        assert p.to_bytes() == frame[14:14 + p.wire_len], name


def test_fields_and_flags():
    raw = header(total=24, ident=0x1234, flags_frag=0x2000 | 185, ttl=3, proto=6, tos=0xB8) + b"abcd"
    p = IPv4Packet.parse(raw)
    assert (p.ident, p.more_fragments, p.dont_fragment, p.frag_offset) == (0x1234, True, False, 1480)
    assert (p.ttl, p.proto, p.tos, p.src, p.dst) == (3, 6, 0xB8, 0x0A000001, 0x0A000002)
    assert p.is_fragment and p.payload == b"abcd"
    assert IPv4Packet.parse(header(flags_frag=1)).is_fragment  # offset 8, MF clear: the last fragment
    assert not IPv4Packet.parse(header(flags_frag=0x4000)).is_fragment


def test_link_padding_after_total_length_is_ignored():
    raw = header(total=22) + b"hi" + b"\0" * 24
    p = IPv4Packet.parse(raw)
    assert p.payload == b"hi" and p.wire_len == 22


def test_reserved_flag_is_accepted_and_kept():
    raw = header(total=20, flags_frag=0x8000)
    p = IPv4Packet.parse(raw)
    assert p.reserved_flag and not p.dont_fragment and not p.more_fragments
    assert p.to_bytes() == raw


def test_options_are_kept_raw_and_re_emitted():
    opts = bytes([7, 7, 4, 0, 0, 0, 0, 1])  # record route with one empty slot, then NOP
    raw = header(ihl=7, total=38, options=opts) + b"0123456789"
    p = IPv4Packet.parse(raw)
    assert p.options == opts and p.header_len == 28 and p.payload == b"0123456789"
    assert p.to_bytes() == raw
    assert iter_options(p.options) == [(7, bytes([4, 0, 0, 0, 0])), (1, b"")]


def test_iter_options_stops_at_end_of_list():
    assert iter_options(bytes([1, 1, 0, 99, 99, 99])) == [(1, b""), (1, b"")]
    assert iter_options(b"") == []
    assert iter_options(bytes([0x94, 4, 0, 0])) == [(0x94, b"\0\0")]  # router alert, RFC 2113


def test_bad_checksum_and_not_verifying():
    raw = bytearray(header(total=20))
    raw[8] ^= 0x01  # ttl changed, checksum not updated
    with pytest.raises(MalformedPacket) as info:
        IPv4Packet.parse(raw)
    assert info.value.reason == "ipv4.bad_checksum"
    assert IPv4Packet.parse(raw, verify_checksum=False).ttl == 65


def test_emitted_checksum_verifies_by_the_oracle():
    p = IPv4Packet(0xC0A80001, 0x08080808, 1, b"xyz", ttl=200, ident=77, options=b"\x01\x01\x01\x00")
    raw = p.to_bytes()
    assert ref_checksum(raw[:24]) == 0
    assert raw[:2] == b"\x46\x00" and struct.unpack("!H", raw[2:4])[0] == 27


def test_partial_parse_of_a_cut_datagram():
    raw = header(total=1000) + b"12345678"
    with pytest.raises(MalformedPacket, match="ipv4.bad_total_length"):
        IPv4Packet.parse(raw)
    p = IPv4Packet.parse(raw, partial=True)
    assert p.payload == b"12345678"


@pytest.mark.parametrize("kwargs, error", [
    (dict(frag_offset=7), ValueError),
    (dict(frag_offset=65536), ValueError),
    (dict(options=b"\x01\x01\x01"), ValueError),
    (dict(options=b"\x01" * 44), ValueError),
    (dict(options="abcd"), TypeError),
    (dict(ttl=256), ValueError),
    (dict(src=-1), ValueError),
    (dict(proto=None), TypeError),
    (dict(payload=b"x" * 65516), ValueError),
])
def test_constructor_refuses_misuse(kwargs, error):
    fields = dict(src=1, dst=2, proto=17, payload=b"")
    with pytest.raises(error):
        IPv4Packet(**{**fields, **kwargs})


def test_largest_datagram_is_accepted():
    p = IPv4Packet(1, 2, 17, b"x" * 65515, frag_offset=65528)
    assert p.wire_len == 65535
    assert IPv4Packet.parse(p.to_bytes()) == p


@SETTINGS
@given(st.data(), ipv4_packets())
def test_round_trip_inside_a_larger_buffer(data, packet):
    buf, offset = data.draw(embedded(packet.to_bytes()))
    assert IPv4Packet.parse(buf, offset) == packet  # the total length field bounds it
    out = bytearray(offset + packet.wire_len)
    assert packet.emit(out, offset) == packet.wire_len
    assert out[offset:] == buf[offset:offset + packet.wire_len]


def test_address_text():
    assert ip_to_str(0x0A000001) == "10.0.0.1"
    assert ip_to_str(0xFFFFFFFF) == "255.255.255.255"
    assert ip_from_str("192.168.0.199") == 0xC0A800C7
    assert ip_from_str("0.0.0.0") == 0


@pytest.mark.parametrize("text", ["", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.-4",
                                  "a.b.c.d", " 1.2.3.4", "::1", "1.2.3.4/24"])
def test_ip_from_str_refuses_bad_text(text):
    with pytest.raises(ValueError):
        ip_from_str(text)


def test_ip_text_misuse():
    with pytest.raises(ValueError):
        ip_to_str(1 << 32)
    with pytest.raises(TypeError):
        ip_from_str(b"1.2.3.4")


@SETTINGS
@given(u32)
def test_address_text_round_trip(addr):
    assert ip_from_str(ip_to_str(addr)) == addr
