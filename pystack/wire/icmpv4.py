"""ICMP for IPv4 (RFC 792; host requirements in RFC 1122 §3.2.2).

Owns the ICMP message format as :class:`IcmpPacket`: type, code, the
32-bit second word whose meaning depends on the type (``rest``), and the
data after it.  Echo (ping) and the error messages the stack sends or
reacts to have constructors and accessors; any other type still parses and
emits unchanged.  Deciding *when* to send an error belongs to ``iface/``.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |     Code      |           Checksum            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                rest (its meaning depends on Type)             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Data ...
    +-+-+-+-+-

    rest of an echo (types 0, 8):      |   Identifier  |Sequence Number|
    rest of "fragmentation needed":    |     unused    | Next-Hop MTU  |
    rest of parameter problem:         |Pointer|        unused         |
    rest of redirect:                  |     Gateway Internet Address  |
    rest of the other errors:          |          unused (zero)        |
    Data of an error: the offending datagram's IP header and at least
    the first 8 octets of its data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pystack.errors import malformed
from pystack.wire._fields import as_payload, check_bytes, check_uint, out_window, value_repr, window
from pystack.wire.checksum import checksum
from pystack.wire.ipv4 import MIN_HEADER_LEN, IPv4Packet

HEADER_LEN = 8

# Types (RFC 792).
ECHO_REPLY = 0
DEST_UNREACHABLE = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14

#: The types whose data is a quote of the offending datagram (RFC 792).
ERROR_TYPES = frozenset({DEST_UNREACHABLE, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})

# Destination Unreachable codes (RFC 792; 4 carries the next-hop MTU, RFC 1191 §4).
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4

# Time Exceeded codes (RFC 792).
TIME_EXCEEDED_TTL = 0
TIME_EXCEEDED_REASSEMBLY = 1

#: Octets of the offending datagram's data quoted after its IP header.  RFC 792
#: asks for 64 bits; RFC 1812 §4.3.2.3 lets routers quote up to 576 bytes in
#: all, but a host gains nothing from more, so we quote the minimum.
DEFAULT_QUOTE_DATA = 8

_HEADER = struct.Struct("!BBHI")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_AT = 2


@dataclass(frozen=True, slots=True)
class IcmpPacket:
    """One ICMP message; ``rest`` is the second 32-bit word, ``payload`` what follows."""

    type: int
    code: int
    rest: int
    payload: bytes | memoryview = field(hash=False)

    __repr__ = value_repr

    def __post_init__(self) -> None:
        check_uint("type", self.type, 8)
        check_uint("code", self.code, 8)
        check_uint("rest", self.rest, 32)
        object.__setattr__(self, "payload", as_payload(self.payload))

    @classmethod
    def echo(cls, request: bool, ident: int, sequence: int, data=b"") -> IcmpPacket:
        """An Echo Request (``request=True``) or Echo Reply (RFC 792 "Echo or Echo Reply Message")."""
        check_uint("ident", ident, 16)
        check_uint("sequence", sequence, 16)
        return cls(ECHO_REQUEST if request else ECHO_REPLY, 0, (ident << 16) | sequence, data)

    @classmethod
    def error(cls, type: int, code: int, quoted: bytes, mtu: int = 0,
              *, quote_data: int | None = DEFAULT_QUOTE_DATA) -> IcmpPacket:
        """An error message about the datagram ``quoted`` (its bytes from the IP header on).

        The quote is that datagram's IP header plus ``quote_data`` octets of
        its data (RFC 792, RFC 1122 §3.2.2: at least 8; ``None`` quotes all
        of it).  ``mtu`` is the next-hop MTU of a "fragmentation needed"
        message (RFC 1191 §4) and must be 0 for any other.  The second word
        of a parameter problem (pointer) or redirect (gateway) is left zero:
        build those with the plain constructor.
        """
        if type not in ERROR_TYPES:
            raise ValueError(f"ICMP type {type} is not an error type ({sorted(ERROR_TYPES)})")
        check_uint("mtu", mtu, 16)
        if mtu and (type, code) != (DEST_UNREACHABLE, UNREACH_FRAG_NEEDED):
            raise ValueError("mtu is only carried by destination unreachable / fragmentation needed")
        quoted = check_bytes("quoted", quoted)
        if len(quoted) < MIN_HEADER_LEN:
            raise ValueError(f"the quoted datagram must start with its IP header, got {len(quoted)} bytes")
        if quote_data is not None:
            if quote_data < 0:
                raise ValueError("quote_data must be >= 0")
            quoted = quoted[:(quoted[0] & 0x0F) * 4 + quote_data]
        return cls(type, code, mtu, quoted)

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None,
              verify_checksum: bool = True) -> IcmpPacket:
        """Parse an ICMP message; it runs to the end of the given window (the IP payload)."""
        data = window(buf, offset, length)
        if len(data) < HEADER_LEN:
            raise malformed("icmp.truncated", f"{len(data)} bytes < the {HEADER_LEN}-byte header")
        # RFC 792: the checksum covers the whole ICMP message, type onwards.
        if verify_checksum and checksum(data) != 0:
            raise malformed("icmp.bad_checksum", f"checksum does not verify over {len(data)} bytes")
        type_, code, _, rest = _HEADER.unpack_from(data)
        return cls(type_, code, rest, data[HEADER_LEN:])

    @property
    def header_len(self) -> int:
        return HEADER_LEN

    @property
    def wire_len(self) -> int:
        return HEADER_LEN + len(self.payload)

    @property
    def is_error(self) -> bool:
        return self.type in ERROR_TYPES

    @property
    def ident(self) -> int:
        """Echo identifier: the high 16 bits of ``rest`` (RFC 792)."""
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        """Echo sequence number: the low 16 bits of ``rest`` (RFC 792)."""
        return self.rest & 0xFFFF

    @property
    def next_hop_mtu(self) -> int:
        """Next-hop MTU of a "fragmentation needed" message, 0 if the router did not say (RFC 1191 §4)."""
        return self.rest & 0xFFFF

    def quoted_datagram(self) -> IPv4Packet | None:
        """The start of the datagram an error message is about, or None if its IP header is cut.

        Parsed leniently: the checksum is not verified (RFC 1812 §4.3.2.3
        does not promise it was still right) and the total length may exceed
        the quote, the payload being the quoted part.  A quote that is
        present but malformed raises MalformedPacket (``ipv4.*``).  Calling
        this on a message that is not an error is a mistake (ValueError).
        """
        if not self.is_error:
            raise ValueError(f"ICMP type {self.type} quotes no datagram")
        quote = self.payload
        if len(quote) < MIN_HEADER_LEN or (quote[0] >> 4 == 4 and (quote[0] & 0x0F) * 4 > len(quote)):
            return None
        return IPv4Packet.parse(quote, verify_checksum=False, partial=True)

    def emit(self, buf, offset: int = 0) -> int:
        n = self.wire_len
        out = out_window(buf, offset, n)
        _HEADER.pack_into(out, 0, self.type, self.code, 0, self.rest)
        out[HEADER_LEN:] = self.payload
        _CHECKSUM.pack_into(out, _CHECKSUM_AT, checksum(out))
        return n

    def to_bytes(self) -> bytes:
        buf = bytearray(self.wire_len)
        self.emit(buf)
        return bytes(buf)
