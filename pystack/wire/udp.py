"""UDP datagrams (RFC 768) over IPv4.

Owns the 8-byte UDP header as :class:`UdpDatagram`.  The checksum covers an
IPv4 pseudo-header, so it is verified and computed only when the caller
passes the IP source and destination (ints).  A checksum field of zero means
the sender computed none (RFC 768; allowed over IPv4, RFC 1122 §4.1.3.4).

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Source Port          |       Destination Port        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            Length             |           Checksum            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Data ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-

    Pseudo-header summed into the checksum (not sent):
    | Source Address | Destination Address | zero | proto 17 | UDP Length |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pystack.errors import malformed
from pystack.wire._fields import as_payload, check_uint, have_addresses, out_window, value_repr, window
from pystack.wire.checksum import checksum, pseudo_header_sum
from pystack.wire.ipv4 import PROTO_UDP

HEADER_LEN = 8
MAX_PAYLOAD_LEN = 0xFFFF - HEADER_LEN  # the length field is 16 bits

_HEADER = struct.Struct("!HHHH")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_AT = 6


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP datagram: ports and data (the length and checksum fields are derived)."""

    sport: int
    dport: int
    payload: bytes | memoryview = field(hash=False)

    __repr__ = value_repr

    def __post_init__(self) -> None:
        check_uint("sport", self.sport, 16)
        check_uint("dport", self.dport, 16)
        payload = as_payload(self.payload)
        if len(payload) > MAX_PAYLOAD_LEN:
            raise ValueError(f"{len(payload)}-byte payload exceeds the {MAX_PAYLOAD_LEN}-byte maximum")
        object.__setattr__(self, "payload", payload)

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None,
              src: int | None = None, dst: int | None = None) -> UdpDatagram:
        """Parse a datagram from the IP payload ``buf[offset:offset+length]``.

        Bytes beyond the UDP length field are ignored.  With ``src`` and
        ``dst`` a non-zero checksum is verified.
        """
        have_pseudo = have_addresses(src, dst)
        data = window(buf, offset, length)
        n = len(data)
        if n < HEADER_LEN:
            raise malformed("udp.truncated", f"{n} bytes < the {HEADER_LEN}-byte header")
        sport, dport, ulen, csum = _HEADER.unpack_from(data)
        if ulen < HEADER_LEN or ulen > n:
            raise malformed("udp.bad_length", f"length field {ulen} with {n} bytes present")
        data = data[:ulen]
        # RFC 768: checksum over pseudo-header, header and data; 0 = "not computed".
        if have_pseudo and csum != 0 and checksum(data, pseudo_header_sum(src, dst, PROTO_UDP, ulen)) != 0:
            raise malformed("udp.bad_checksum", f"checksum 0x{csum:04x} does not verify")
        return cls(sport, dport, data[HEADER_LEN:])

    @property
    def header_len(self) -> int:
        return HEADER_LEN

    @property
    def wire_len(self) -> int:
        return HEADER_LEN + len(self.payload)

    def emit(self, buf, offset: int = 0, src: int | None = None, dst: int | None = None) -> int:
        """Write the datagram; with ``src`` and ``dst`` compute its checksum, else send 0 (none)."""
        have_pseudo = have_addresses(src, dst)
        n = self.wire_len
        out = out_window(buf, offset, n)
        _HEADER.pack_into(out, 0, self.sport, self.dport, n, 0)
        out[HEADER_LEN:] = self.payload
        if have_pseudo:
            # RFC 768: a computed checksum of zero is sent as all ones.
            csum = checksum(out, pseudo_header_sum(src, dst, PROTO_UDP, n)) or 0xFFFF
            _CHECKSUM.pack_into(out, _CHECKSUM_AT, csum)
        return n

    def to_bytes(self, src: int | None = None, dst: int | None = None) -> bytes:
        buf = bytearray(self.wire_len)
        self.emit(buf, 0, src, dst)
        return bytes(buf)
