"""ICMPv4 (RFC 792, RFC 1122 §3.2.2, RFC 1191)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_frames import load_saved
from strategies import SETTINGS, embedded, icmp_packets, ref_checksum

from pystack.errors import MalformedPacket
from pystack.wire import icmpv4
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet


def echo_bytes(type_: int, ident: int, seq: int, data: bytes) -> bytes:
    raw = struct.pack("!BBHHH", type_, 0, 0, ident, seq) + data
    return raw[:2] + struct.pack("!H", ref_checksum(raw)) + raw[4:]


def test_hand_built_echo_request():
    raw = echo_bytes(8, 0x1234, 7, b"ping data!")
    p = IcmpPacket.parse(raw)
    assert p == IcmpPacket(icmpv4.ECHO_REQUEST, 0, 0x12340007, b"ping data!")
    assert (p.ident, p.sequence, p.header_len, p.wire_len) == (0x1234, 7, 8, 18)
    assert p == IcmpPacket.echo(True, 0x1234, 7, b"ping data!")
    assert p.to_bytes() == raw


def test_odd_length_checksum():
    raw = echo_bytes(0, 1, 2, b"abc")
    assert IcmpPacket.parse(raw) == IcmpPacket.echo(False, 1, 2, b"abc")
    assert IcmpPacket.echo(False, 1, 2, b"abc").to_bytes() == raw


def test_kernel_echo_frames():
    frames = load_saved()
    for name, ident, seq, type_ in [("icmp_echo_request", 0x7057, 1, 8), ("icmp_echo_reply", 0x4242, 7, 0)]:
        ip = IPv4Packet.parse(frames[name], 14)
        p = IcmpPacket.parse(ip.payload)
        assert (p.type, p.code, p.ident, p.sequence) == (type_, 0, ident, seq), name
        assert p.to_bytes() == bytes(ip.payload)


def test_bad_checksum():
    raw = bytearray(echo_bytes(8, 1, 1, b"data"))
    raw[-1] ^= 0x40
    with pytest.raises(MalformedPacket) as info:
        IcmpPacket.parse(raw)
    assert info.value.reason == "icmp.bad_checksum"
    assert IcmpPacket.parse(raw, verify_checksum=False).payload == b"dat!"


def offending(payload_len: int = 30, options: bytes = b"") -> bytes:
    udp = struct.pack("!HHHH", 5000, 53, 8 + payload_len, 0) + bytes(range(1, payload_len + 1))
    return IPv4Packet(0x0A000001, 0x0A000002, 17, udp, options=options).to_bytes()


def test_error_quotes_header_and_eight_bytes():
    dgram = offending(options=b"\x01\x01\x01\x00")
    err = IcmpPacket.error(icmpv4.DEST_UNREACHABLE, icmpv4.UNREACH_PORT, dgram)
    assert (err.type, err.code, err.rest) == (3, 3, 0)
    assert err.payload == dgram[:24 + 8]
    q = err.quoted_datagram()
    assert (q.src, q.dst, q.proto, q.options) == (0x0A000001, 0x0A000002, 17, b"\x01\x01\x01\x00")
    assert q.payload == dgram[24:32]
    assert IcmpPacket.parse(err.to_bytes()) == err


def test_error_quote_lengths():
    dgram = offending()
    assert IcmpPacket.error(11, 0, dgram, quote_data=None).payload == dgram
    assert IcmpPacket.error(11, 0, dgram, quote_data=0).payload == dgram[:20]
    assert IcmpPacket.error(11, 0, dgram[:24]).payload == dgram[:24]  # shorter than asked: all of it


def test_frag_needed_carries_the_mtu():
    err = IcmpPacket.error(icmpv4.DEST_UNREACHABLE, icmpv4.UNREACH_FRAG_NEEDED, offending(), mtu=1400)
    assert err.rest == 1400 and err.next_hop_mtu == 1400
    raw = err.to_bytes()
    assert raw[4:8] == b"\x00\x00\x05\x78"
    assert ref_checksum(raw) == 0


@pytest.mark.parametrize("args, kwargs", [
    ((icmpv4.ECHO_REQUEST, 0, offending()), {}),                   # not an error type
    ((icmpv4.TIME_EXCEEDED, 0, offending()), dict(mtu=1400)),      # mtu only for frag needed
    ((icmpv4.DEST_UNREACHABLE, 4, offending()), dict(mtu=70000)),
    ((icmpv4.DEST_UNREACHABLE, 3, b"\x45" + bytes(10)), {}),       # not even an IP header
    ((icmpv4.DEST_UNREACHABLE, 3, offending()), dict(quote_data=-1)),
])
def test_error_refuses_misuse(args, kwargs):
    with pytest.raises(ValueError):
        IcmpPacket.error(*args, **kwargs)


def test_quoted_datagram_is_lenient_or_none():
    dgram = bytearray(offending())
    dgram[10] ^= 0xFF  # checksum wrong: still read (not verified)
    err = IcmpPacket(3, 3, 0, bytes(dgram[:28]))
    assert err.quoted_datagram().payload == dgram[20:28]  # total length 58 > 28 present
    assert IcmpPacket(3, 3, 0, bytes(dgram[:19])).quoted_datagram() is None
    opts = offending(options=bytes(8))
    assert IcmpPacket(11, 0, 0, opts[:25]).quoted_datagram() is None  # IHL 7 > 25 bytes present
    assert IcmpPacket(11, 0, 0, opts[:28]).quoted_datagram().payload == b""


def test_quoted_datagram_garbage_raises_malformed():
    bad_version = b"\x65" + offending()[1:]
    with pytest.raises(MalformedPacket) as info:
        IcmpPacket(3, 1, 0, bad_version).quoted_datagram()
    assert info.value.reason == "ipv4.bad_version"
    bad_ihl = b"\x44" + offending()[1:]
    with pytest.raises(MalformedPacket) as info:
        IcmpPacket(3, 1, 0, bad_ihl).quoted_datagram()
    assert info.value.reason == "ipv4.bad_ihl"


def test_quoted_datagram_of_a_non_error_is_misuse():
    with pytest.raises(ValueError):
        IcmpPacket.echo(True, 1, 1, offending()).quoted_datagram()


@pytest.mark.parametrize("kwargs, error", [
    (dict(type=256), ValueError),
    (dict(code=-1), ValueError),
    (dict(rest=1 << 32), ValueError),
    (dict(payload=3), TypeError),
])
def test_constructor_refuses_misuse(kwargs, error):
    with pytest.raises(error):
        IcmpPacket(**{**dict(type=8, code=0, rest=0, payload=b""), **kwargs})


def test_echo_refuses_misuse():
    with pytest.raises(ValueError):
        IcmpPacket.echo(True, 0x10000, 0)


@SETTINGS
@given(st.data(), icmp_packets())
def test_round_trip_inside_a_larger_buffer(data, packet):
    buf, offset = data.draw(embedded(packet.to_bytes()))
    assert IcmpPacket.parse(buf, offset, packet.wire_len) == packet
    out = bytearray(offset + packet.wire_len)
    assert packet.emit(out, offset) == packet.wire_len
    assert out[offset:] == buf[offset:offset + packet.wire_len]
    assert ref_checksum(out[offset:]) == 0
