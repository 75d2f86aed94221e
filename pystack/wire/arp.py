"""ARP for IPv4 over Ethernet (RFC 826).

Owns the ARP packet format for the one hardware/protocol pair the stack
speaks -- Ethernet (hardware type 1, 6-byte addresses) resolving IPv4
(protocol type 0x0800, 4-byte addresses) -- as :class:`ArpPacket`.  Any
other pair is ``arp.unsupported``.  Bytes after the 28-byte packet (the
Ethernet minimum-size padding) are ignored.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Hardware type (HTYPE)     |     Protocol type (PTYPE)     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  HLEN (= 6)   |  PLEN (= 4)   |           Operation           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |              Sender hardware address (SHA, 6 octets)          |
    +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               |  Sender protocol address (SPA)|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |             SPA cont.         |  Target hardware address (THA)|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |              Target protocol address (TPA, 4 octets)          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pystack.errors import malformed
from pystack.wire._fields import check_bytes, check_uint, out_window, value_repr, window

OP_REQUEST = 1  # RFC 826 "ares_op$REQUEST"
OP_REPLY = 2  # RFC 826 "ares_op$REPLY"
WIRE_LEN = 28

HTYPE_ETHERNET = 1  # RFC 826 "ares_hrd$Ethernet"
PTYPE_IPV4 = 0x0800

_FIXED = struct.Struct("!HHBB")  # the 6 octets that say which address pair follows
_PACKET = struct.Struct("!HHBBH6sI6sI")
_ZERO_MAC = b"\x00" * 6


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP request or reply; IPv4 addresses are ints."""

    opcode: int
    sender_mac: bytes
    sender_ip: int
    target_mac: bytes
    target_ip: int

    __repr__ = value_repr

    def __post_init__(self) -> None:
        if self.opcode not in (OP_REQUEST, OP_REPLY):
            raise ValueError(f"ARP opcode must be OP_REQUEST (1) or OP_REPLY (2), not {self.opcode!r}")
        object.__setattr__(self, "sender_mac", check_bytes("sender_mac", self.sender_mac, 6))
        object.__setattr__(self, "target_mac", check_bytes("target_mac", self.target_mac, 6))
        check_uint("sender_ip", self.sender_ip, 32)
        check_uint("target_ip", self.target_ip, 32)

    @classmethod
    def request(cls, sender_mac: bytes, sender_ip: int, target_ip: int) -> ArpPacket:
        """Who has ``target_ip``?  The target hardware address is unknown, sent as zeros (RFC 826)."""
        return cls(OP_REQUEST, sender_mac, sender_ip, _ZERO_MAC, target_ip)

    def reply_for(self, mac: bytes) -> ArpPacket:
        """The reply to this request saying that ``target_ip`` is at ``mac``.

        RFC 826 "Packet Reception": swap the sender and target fields, put
        the local addresses in the sender fields, set the opcode to reply.
        """
        if self.opcode != OP_REQUEST:
            raise ValueError("only a request can be answered")
        return ArpPacket(OP_REPLY, mac, self.target_ip, self.sender_mac, self.sender_ip)

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None) -> ArpPacket:
        data = window(buf, offset, length)
        if len(data) < _FIXED.size:
            raise malformed("arp.truncated", f"{len(data)} bytes, not even the {_FIXED.size}-byte fixed part")
        htype, ptype, hlen, plen = _FIXED.unpack_from(data)
        if (htype, ptype, hlen, plen) != (HTYPE_ETHERNET, PTYPE_IPV4, 6, 4):
            raise malformed(
                "arp.unsupported",
                f"htype {htype} ptype 0x{ptype:04x} hlen {hlen} plen {plen} is not Ethernet/IPv4")
        if len(data) < WIRE_LEN:
            raise malformed("arp.truncated", f"{len(data)} bytes < {WIRE_LEN}")
        _, _, _, _, opcode, sha, spa, tha, tpa = _PACKET.unpack_from(data)
        if opcode not in (OP_REQUEST, OP_REPLY):
            raise malformed("arp.bad_opcode", f"opcode {opcode} is neither request (1) nor reply (2)")
        return cls(opcode, sha, spa, tha, tpa)

    @property
    def header_len(self) -> int:
        return WIRE_LEN

    @property
    def wire_len(self) -> int:
        return WIRE_LEN

    def emit(self, buf, offset: int = 0) -> int:
        out = out_window(buf, offset, WIRE_LEN)
        _PACKET.pack_into(out, 0, HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, self.opcode,
                          self.sender_mac, self.sender_ip, self.target_mac, self.target_ip)
        return WIRE_LEN

    def to_bytes(self) -> bytes:
        buf = bytearray(WIRE_LEN)
        self.emit(buf)
        return bytes(buf)
