"""Hypothesis strategies for the wire values, and the tests' own byte-level oracles.

The oracles (:func:`ref_checksum`, :func:`ref_pseudo`) are written from the
RFCs with plain loops, independent of :mod:`pystack.wire.checksum`, so the
hand-built vectors in the tests do not trust the code under test.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pystack.wire import tcp
from pystack.wire.arp import ArpPacket
from pystack.wire.ethernet import EthernetFrame
from pystack.wire.icmpv4 import ERROR_TYPES, IcmpPacket
from pystack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4Packet
from pystack.wire.tcp import TcpSegment
from pystack.wire.udp import UdpDatagram

#: Modest example counts: the whole wire suite must stay well under a minute
#: on a busy two-core machine.  No deadline: a loaded box makes timings noisy.
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- oracles -------------------------------------------------------------------

def ref_checksum(*chunks: bytes, pseudo: bytes = b"") -> int:
    """RFC 1071 by the book over ``pseudo`` + the chunks: 16-bit words, end-around carry."""
    data = pseudo + b"".join(bytes(c) for c in chunks)
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ref_pseudo(src: int, dst: int, proto: int, length: int) -> bytes:
    """The IPv4 pseudo-header (RFC 9293 §3.1, RFC 768) as bytes."""
    return struct.pack("!IIBBH", src, dst, 0, proto, length)


# -- field strategies ----------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
macs = st.binary(min_size=6, max_size=6)
payloads = st.binary(max_size=64)


def garbage(max_size: int = 16):
    return st.binary(max_size=max_size)


def embedded(data: bytes):
    """``(buf, offset)``: ``data`` inside a larger bytearray, after a prefix, before garbage."""
    return st.tuples(garbage(), garbage()).map(
        lambda pg: (bytearray(pg[0] + data + pg[1]), len(pg[0])))


@st.composite
def ethernet_frames(draw, payload=payloads, ethertype=u16):
    return EthernetFrame(draw(macs), draw(macs), draw(ethertype), draw(payload))


@st.composite
def arp_packets(draw):
    return ArpPacket(draw(st.sampled_from([1, 2])), draw(macs), draw(u32), draw(macs), draw(u32))


ipv4_options = st.integers(0, 10).flatmap(lambda k: st.binary(min_size=4 * k, max_size=4 * k))


@st.composite
def ipv4_packets(draw, payload=payloads, proto=u8):
    return IPv4Packet(
        draw(u32), draw(u32), draw(proto), draw(payload),
        ttl=draw(u8), ident=draw(u16), dont_fragment=draw(st.booleans()),
        more_fragments=draw(st.booleans()), frag_offset=8 * draw(st.integers(0, 0x1FFF)),
        tos=draw(u8), options=draw(ipv4_options), reserved_flag=draw(st.booleans()))


@st.composite
def icmp_packets(draw):
    return IcmpPacket(draw(u8), draw(u8), draw(u32), draw(payloads))


@st.composite
def udp_datagrams(draw):
    return UdpDatagram(draw(u16), draw(u16), draw(payloads))


_unknown_kinds = st.integers(0, 255).filter(lambda k: k not in (0, 1, 2, 3, 4, 5, 8))

tcp_option = st.one_of(
    st.just(tcp.NopOption()),
    u16.map(tcp.MssOption),
    u8.map(tcp.WindowScaleOption),
    st.just(tcp.SackPermittedOption()),
    st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(lambda b: tcp.SackOption(tuple(b))),
    st.tuples(u32, u32).map(lambda t: tcp.TimestampsOption(*t)),
    st.tuples(_unknown_kinds, st.binary(max_size=12)).map(lambda t: tcp.UnknownOption(*t)),
)


def _fit(options: list) -> tuple:
    """Drop options from the end until they fit the 40-byte option area."""
    while (sum(o.wire_len for o in options) + 3) // 4 * 4 > tcp.MAX_OPTIONS_LEN:
        options = options[:-1]
    return tuple(options)


tcp_options = st.lists(tcp_option, max_size=8).map(_fit)


@st.composite
def tcp_segments(draw, payload=payloads):
    return TcpSegment(draw(u16), draw(u16), draw(u32), draw(u32), draw(u8), draw(u16),
                      draw(payload), urgent=draw(u16), options=draw(tcp_options))


# -- whole valid frames, for the fuzz tests ---------------------------------------

def _frame(ethertype: int, payload: bytes, src_mac=b"\x02\0\0\0\0\x01", dst_mac=b"\x02\0\0\0\0\x02") -> bytes:
    return EthernetFrame(dst_mac, src_mac, ethertype, payload).to_bytes()


def _transport(draw, src: int, dst: int, kinds) -> tuple[int, bytes]:
    """(protocol, bytes) of a valid TCP, UDP, ICMP or ICMP error message, or other data."""
    kind = draw(st.sampled_from(kinds))
    if kind == "tcp":
        return PROTO_TCP, draw(tcp_segments()).to_bytes(src, dst)
    if kind == "udp":
        return PROTO_UDP, draw(udp_datagrams()).to_bytes(src, dst)
    if kind == "icmp":
        return PROTO_ICMP, draw(icmp_packets()).to_bytes()
    if kind == "icmp_error":
        quoted = draw(datagrams(kinds=("tcp", "udp")))
        error_type = draw(st.sampled_from(sorted(ERROR_TYPES)))
        return PROTO_ICMP, IcmpPacket.error(error_type, draw(u8), quoted).to_bytes()
    return draw(u8.filter(lambda p: p not in (PROTO_ICMP, PROTO_TCP, PROTO_UDP))), draw(payloads)


@st.composite
def datagrams(draw, kinds=("tcp", "udp", "icmp", "icmp_error", "other"), fragments=False):
    """A valid IPv4 datagram (bytes) carrying one of ``kinds``."""
    src, dst = draw(u32), draw(u32)
    proto, inner = _transport(draw, src, dst, kinds)
    whole = (False, 0)
    more, offset = draw(st.sampled_from([whole] * 4 + [(True, 0), (True, 1480), (False, 1480)])) \
        if fragments else whole
    return IPv4Packet(src, dst, proto, inner, ttl=draw(u8), ident=draw(u16), options=draw(ipv4_options),
                      more_fragments=more, frag_offset=offset).to_bytes()


valid_frames = st.one_of(
    arp_packets().map(lambda a: _frame(0x0806, a.to_bytes() + bytes(18))),
    datagrams(fragments=True).map(lambda d: _frame(0x0800, d)),
    ethernet_frames(ethertype=u16.filter(lambda t: t not in (0x0800, 0x0806))).map(lambda f: f.to_bytes()),
)


@st.composite
def mutated_frames(draw):
    """A valid frame after random byte changes, a truncation, or an insertion."""
    frame = bytearray(draw(valid_frames))
    for _ in range(draw(st.integers(0, 4))):
        if not frame:
            break
        how = draw(st.sampled_from(["set", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, len(frame) - 1))
        if how == "set":
            frame[at] = draw(u8)
        elif how == "truncate":
            del frame[at:]
        elif how == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del frame[at]
    return bytes(frame)
