"""Ethernet II frames and MAC address text."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import SETTINGS, embedded, ethernet_frames, macs

from pystack.wire import ethernet
from pystack.wire.ethernet import EthernetFrame, mac_from_str, mac_to_str

DST = bytes.fromhex("020000000002")
SRC = bytes.fromhex("020000000001")


def test_hand_built_frame_parses():
    buf = bytearray(struct.pack("!6s6sH", DST, SRC, 0x0800) + b"payload")
    f = EthernetFrame.parse(buf)
    assert (f.dst, f.src, f.ethertype) == (DST, SRC, ethernet.ETHERTYPE_IPV4)
    assert isinstance(f.payload, memoryview) and f.payload == b"payload"
    assert (f.header_len, f.wire_len) == (14, 21)
    buf[14] = ord("P")  # the payload is a view of the buffer, not a copy
    assert f.payload == b"Payload"


def test_offset_and_length_select_the_frame():
    buf = b"xx" + struct.pack("!6s6sH", DST, SRC, 0x0806) + b"abc" + b"trailing"
    f = EthernetFrame.parse(buf, 2, 17)
    assert f.ethertype == ethernet.ETHERTYPE_ARP and f.payload == b"abc"


def test_emit_writes_exactly_the_frame_at_offset():
    f = EthernetFrame(DST, SRC, ethernet.ETHERTYPE_IPV6, b"\x60\x00")
    buf = bytearray(b"\xee" * 24)
    assert f.emit(buf, 3) == 16
    assert buf == b"\xee" * 3 + DST + SRC + b"\x86\xdd\x60\x00" + b"\xee" * 5
    assert f.to_bytes() == bytes(buf[3:19])


def test_emit_refuses_a_small_buffer():
    f = EthernetFrame(DST, SRC, 0x0800, b"12345")
    with pytest.raises(ValueError):
        f.emit(bytearray(18))
    with pytest.raises(ValueError):
        f.emit(bytearray(19), 1)


@pytest.mark.parametrize("kwargs, error", [
    (dict(dst=b"\x02" * 5), ValueError),
    (dict(src=b"\x02" * 7), ValueError),
    (dict(dst="02:00:00:00:00:01"), TypeError),
    (dict(ethertype=0x10000), ValueError),
    (dict(ethertype=-1), ValueError),
    (dict(ethertype=8.0), TypeError),
    (dict(payload="text"), TypeError),
])
def test_constructor_refuses_misuse(kwargs, error):
    fields = dict(dst=DST, src=SRC, ethertype=0x0800, payload=b"")
    with pytest.raises(error):
        EthernetFrame(**{**fields, **kwargs})


@pytest.mark.parametrize("offset, length", [(-1, None), (31, None), (0, 40), (5, -1), (20, 11)])
def test_parse_refuses_a_window_outside_the_buffer(offset, length):
    with pytest.raises(ValueError):
        EthernetFrame.parse(bytes(30), offset, length)


@SETTINGS
@given(st.data(), ethernet_frames())
def test_round_trip_inside_a_larger_buffer(data, frame):
    buf, offset = data.draw(embedded(frame.to_bytes()))
    assert EthernetFrame.parse(buf, offset, frame.wire_len) == frame
    out = bytearray(offset + frame.wire_len + 3)
    assert frame.emit(out, offset) == frame.wire_len
    assert out[offset:offset + frame.wire_len] == buf[offset:offset + frame.wire_len]


def test_mac_text():
    assert mac_to_str(bytes.fromhex("0200000000ff")) == "02:00:00:00:00:ff"
    assert mac_from_str("02:00:00:00:00:FF") == bytes.fromhex("0200000000ff")
    assert mac_from_str("02-00-00-00-00-01") == SRC
    assert ethernet.BROADCAST == mac_from_str("ff:ff:ff:ff:ff:ff")


@pytest.mark.parametrize("text", [
    "", "02:00:00:00:00", "02:00:00:00:00:01:02", "2:00:00:00:00:01", "02:00:00:00:00:0g",
    "02:00-00:00:00:01", "0200.0000.0001", "020000000001", " 02:00:00:00:00:01", "02:00:00:00:00:01\n",
])
def test_mac_from_str_refuses_bad_text(text):
    with pytest.raises(ValueError):
        mac_from_str(text)


def test_mac_to_str_refuses_bad_length():
    with pytest.raises(ValueError):
        mac_to_str(b"\x01" * 5)


@SETTINGS
@given(macs)
def test_mac_text_round_trip(mac):
    assert mac_from_str(mac_to_str(mac)) == mac
