"""ARP for IPv4 over Ethernet (RFC 826)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_frames import load_saved
from strategies import SETTINGS, arp_packets, embedded

from pystack.wire import arp
from pystack.wire.arp import ArpPacket
from pystack.wire.ethernet import EthernetFrame

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A, IP_B = 0x0A000001, 0x0A000002


def test_hand_built_request_with_ethernet_padding():
    raw = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, bytes([10, 0, 0, 1]),
                      bytes(6), bytes([10, 0, 0, 2])) + bytes(18)
    p = ArpPacket.parse(raw)
    assert p == ArpPacket(arp.OP_REQUEST, MAC_A, IP_A, bytes(6), IP_B)
    assert (p.header_len, p.wire_len) == (28, 28)
    assert p.to_bytes() == raw[:28]


def test_kernel_request():
    frame = EthernetFrame.parse(load_saved()["arp_request"])
    p = ArpPacket.parse(frame.payload)
    assert p.opcode == arp.OP_REQUEST
    assert (p.sender_mac, p.sender_ip, p.target_ip) == (MAC_A, 0x0A4D0001, 0x0A4D0002)
    assert p.to_bytes() == bytes(frame.payload[:28])


def test_request_and_reply_for():
    req = ArpPacket.request(MAC_A, IP_A, IP_B)
    assert req == ArpPacket(arp.OP_REQUEST, MAC_A, IP_A, b"\0" * 6, IP_B)
    assert req.reply_for(MAC_B) == ArpPacket(arp.OP_REPLY, MAC_B, IP_B, MAC_A, IP_A)
    with pytest.raises(ValueError):
        req.reply_for(MAC_B).reply_for(MAC_A)


@pytest.mark.parametrize("kwargs, error", [
    (dict(opcode=3), ValueError),
    (dict(opcode=0), ValueError),
    (dict(sender_mac=b"\x01"), ValueError),
    (dict(target_ip=1 << 32), ValueError),
    (dict(sender_ip="10.0.0.1"), TypeError),
])
def test_constructor_refuses_misuse(kwargs, error):
    fields = dict(opcode=1, sender_mac=MAC_A, sender_ip=IP_A, target_mac=MAC_B, target_ip=IP_B)
    with pytest.raises(error):
        ArpPacket(**{**fields, **kwargs})


def test_emit_refuses_a_small_buffer():
    with pytest.raises(ValueError):
        ArpPacket.request(MAC_A, IP_A, IP_B).emit(bytearray(30), 3)


@SETTINGS
@given(st.data(), arp_packets())
def test_round_trip_inside_a_larger_buffer(data, packet):
    buf, offset = data.draw(embedded(packet.to_bytes()))
    assert ArpPacket.parse(buf, offset) == packet  # trailing bytes are padding
    out = bytearray(offset + 30)
    assert packet.emit(out, offset) == 28
    assert out[offset:offset + 28] == buf[offset:offset + 28]
