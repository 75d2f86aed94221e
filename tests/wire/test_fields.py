"""Integers in the wire values (``pystack.wire._fields``): positions and field values.

A position (``offset``, ``length``) is any integer ``operator.index`` takes --
numpy integers above all, since ``FrameBatch.offsets`` and ``lengths`` are
numpy arrays -- and anything else raises TypeError, never the "outside the
buffer" ValueError meant for a bad position.  A field value must be a Python
int (a bool is one); a numpy integer there is a TypeError naming its type.
"""

from __future__ import annotations

import numpy as np
import pytest

from pystack.wire.arp import ArpPacket
from pystack.wire.ethernet import EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import IPv4Packet, ip_to_str
from pystack.wire.tcp import SackOption, TcpSegment
from pystack.wire.udp import UdpDatagram

MAC_1, MAC_2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC, DST = 0x0A000001, 0x0A000002
FRAME = EthernetFrame(MAC_2, MAC_1, 0x0800, bytes(range(46))).to_bytes()
INTEGERS = [np.int64, np.int32, np.uint16, int]


@pytest.mark.parametrize("kind", INTEGERS)
def test_parse_takes_numpy_offsets_and_lengths(kind):
    """What a FrameBatch hands over: numpy offsets and lengths into one big buffer."""
    buf = np.zeros(3 * 100, dtype=np.uint8)
    buf[100:100 + len(FRAME)] = np.frombuffer(FRAME, dtype=np.uint8)
    frame = EthernetFrame.parse(buf, kind(100), kind(len(FRAME)))
    assert frame == EthernetFrame.parse(FRAME)
    assert EthernetFrame.parse(bytes(60), kind(0)).ethertype == 0
    raw = TcpSegment(1, 2, 3, 4, 0x10, 5, b"data").to_bytes(SRC, DST)
    assert TcpSegment.parse(b"xx" + raw, kind(2), kind(len(raw)), SRC, DST).payload == b"data"
    raw = UdpDatagram(1, 2, b"data").to_bytes(SRC, DST)
    assert UdpDatagram.parse(b"xx" + raw, kind(2), kind(len(raw)), src=SRC, dst=DST).sport == 1


@pytest.mark.parametrize("kind", INTEGERS)
def test_emit_takes_a_numpy_offset(kind):
    seg = TcpSegment(1, 2, 3, 4, 0x10, 5, b"data")
    buf = bytearray(100)
    n = seg.emit(buf, kind(7), SRC, DST)
    assert bytes(buf[7:7 + n]) == seg.to_bytes(SRC, DST)


@pytest.mark.parametrize("offset, length", [(1.0, None), (0, 14.0), ("0", None), (None, None), (0, "14")])
def test_a_non_integer_position_is_a_type_error(offset, length):
    with pytest.raises(TypeError):
        EthernetFrame.parse(FRAME, offset, length)
    with pytest.raises(TypeError):
        EthernetFrame(MAC_2, MAC_1, 0x0800, b"").emit(bytearray(100), offset if length is None else 1.5)


@pytest.mark.parametrize("offset, length", [(-1, None), (61, None), (0, 61), (0, -1), (np.int64(61), None)])
def test_a_position_outside_the_buffer_is_a_value_error(offset, length):
    with pytest.raises(ValueError, match="buffer"):
        EthernetFrame.parse(bytes(60), offset, length)


def test_a_bool_position_is_the_int_it_equals():
    assert EthernetFrame.parse(b"\0" + FRAME, True) == EthernetFrame.parse(FRAME)


def test_field_values_are_python_ints():
    """Bools are ints; numpy integers are refused with their type named (convert with int())."""
    seg = TcpSegment(80, 443, 2**32 - 1, True, 0x12, 5, b"", urgent=False)
    assert (seg.ack, seg.urgent) == (1, 0)
    assert seg == TcpSegment(80, 443, 2**32 - 1, 1, 0x12, 5, b"")
    for make in (lambda: TcpSegment(np.uint16(80), 443, 0, 0, 0, 0, b""),
                 lambda: SackOption([(np.uint32(1), 2)]),
                 lambda: IPv4Packet(np.int64(SRC), DST, 6, b""),
                 lambda: UdpDatagram(1, np.int64(2), b""),
                 lambda: ArpPacket(1, MAC_1, np.int64(SRC), MAC_2, DST),
                 lambda: EthernetFrame(MAC_2, MAC_1, np.uint16(0x0806), b""),
                 lambda: IcmpPacket.echo(True, np.uint16(1), 7)):
        with pytest.raises(TypeError, match="must be an int, not u?int"):
            make()
    assert TcpSegment(int(np.uint16(80)), 443, 0, 0, 0, 0, b"").sport == 80
    assert ip_to_str(SRC) == "10.0.0.1"


@pytest.mark.parametrize("make", [
    lambda: TcpSegment(1.0, 2, 0, 0, 0, 0, b""),
    lambda: TcpSegment(1, 2, "0", 0, 0, 0, b""),
    lambda: TcpSegment(1, 2, 0, 0, 0, 0, b"", urgent=None),
    lambda: SackOption([(1.0, 2)]),
    lambda: IPv4Packet(SRC, DST, 6.0, b""),
    lambda: IcmpPacket.echo(True, 1.0, 2),
    lambda: ip_to_str(1.0),
])
def test_non_integer_field_values_are_type_errors(make):
    with pytest.raises(TypeError, match="must be an int"):
        make()
