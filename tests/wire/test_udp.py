"""UDP (RFC 768)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_frames import load_saved
from strategies import SETTINGS, embedded, ref_checksum, ref_pseudo, u32, udp_datagrams

from pystack.errors import MalformedPacket
from pystack.wire.ipv4 import IPv4Packet
from pystack.wire.udp import UdpDatagram

SRC, DST = 0x0A000001, 0x0A000002


def udp_bytes(sport: int, dport: int, data: bytes, src=SRC, dst=DST, check=None) -> bytes:
    raw = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    if check is None:
        check = ref_checksum(raw, pseudo=ref_pseudo(src, dst, 17, len(raw))) or 0xFFFF
    return raw[:6] + struct.pack("!H", check) + raw[8:]


def test_hand_built_datagram():
    raw = udp_bytes(5000, 53, b"query")
    for kwargs in ({}, dict(src=SRC, dst=DST)):
        d = UdpDatagram.parse(raw, **kwargs)
        assert d == UdpDatagram(5000, 53, b"query")
        assert (d.header_len, d.wire_len) == (8, 13)
    assert UdpDatagram(5000, 53, b"query").to_bytes(SRC, DST) == raw


def test_kernel_datagram():
    ip = IPv4Packet.parse(load_saved()["udp"], 14)
    d = UdpDatagram.parse(ip.payload, src=ip.src, dst=ip.dst)
    assert (d.sport, d.dport) == (4000, 5001)
    assert d.to_bytes(ip.src, ip.dst) == bytes(ip.payload)


def test_bytes_past_the_length_field_are_ignored():
    raw = udp_bytes(1, 2, b"abc") + b"garbage"
    assert UdpDatagram.parse(raw, src=SRC, dst=DST).payload == b"abc"


def test_bad_checksum_only_when_addresses_given():
    raw = bytearray(udp_bytes(1, 2, b"abcd"))
    raw[-1] ^= 1
    assert UdpDatagram.parse(raw).payload == b"abce"
    with pytest.raises(MalformedPacket) as info:
        UdpDatagram.parse(raw, src=SRC, dst=DST)
    assert info.value.reason == "udp.bad_checksum"
    with pytest.raises(MalformedPacket):  # the pseudo-header counts: wrong address, wrong sum
        UdpDatagram.parse(udp_bytes(1, 2, b"abcd"), src=SRC, dst=DST + 1)


def test_zero_checksum_means_not_computed():
    raw = udp_bytes(1, 2, b"anything", check=0)
    assert UdpDatagram.parse(raw, src=SRC, dst=DST).payload == b"anything"
    assert UdpDatagram(1, 2, b"anything").to_bytes() == raw


def test_computed_zero_is_sent_as_all_ones():
    # Choose the last data word so that the sum of everything else plus it is 0xFFFF:
    # the checksum is then 0, which RFC 768 sends as 0xFFFF.
    head = struct.pack("!HHHH", 1000, 2000, 12, 0) + b"\x12\x34"
    partial = ~ref_checksum(head, pseudo=ref_pseudo(SRC, DST, 17, 12)) & 0xFFFF
    data = b"\x12\x34" + struct.pack("!H", 0xFFFF - partial)
    raw = UdpDatagram(1000, 2000, data).to_bytes(SRC, DST)
    assert raw[6:8] == b"\xff\xff"
    assert UdpDatagram.parse(raw, src=SRC, dst=DST).payload == data


def test_addresses_come_in_pairs():
    raw = udp_bytes(1, 2, b"")
    with pytest.raises(ValueError):
        UdpDatagram.parse(raw, src=SRC)
    with pytest.raises(ValueError):
        UdpDatagram(1, 2, b"").to_bytes(dst=DST)


@pytest.mark.parametrize("kwargs, error", [
    (dict(sport=65536), ValueError),
    (dict(dport=-1), ValueError),
    (dict(payload=b"x" * 65528), ValueError),
    (dict(payload=["x"]), TypeError),
])
def test_constructor_refuses_misuse(kwargs, error):
    with pytest.raises(error):
        UdpDatagram(**{**dict(sport=1, dport=2, payload=b""), **kwargs})


@SETTINGS
@given(st.data(), udp_datagrams(), u32, u32, st.booleans())
def test_round_trip_inside_a_larger_buffer(data, dgram, src, dst, with_checksum):
    addrs = (src, dst) if with_checksum else (None, None)
    raw = dgram.to_bytes(*addrs)
    if with_checksum:
        assert ref_checksum(raw, pseudo=ref_pseudo(src, dst, 17, len(raw))) == 0
    buf, offset = data.draw(embedded(raw))
    assert UdpDatagram.parse(buf, offset, None, *addrs) == dgram  # the length field bounds it
    out = bytearray(offset + dgram.wire_len)
    assert dgram.emit(out, offset, *addrs) == dgram.wire_len
    assert out[offset:] == raw
