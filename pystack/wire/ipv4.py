"""IPv4 datagrams (RFC 791 §3.1) and dotted-quad address text.

Owns the IPv4 header: :class:`IPv4Packet` parses a datagram (integrity
first: length, version, header length, total length, header checksum) and
emits one with its header checksum computed.  Addresses are ints.
Options are kept as the raw bytes of the option area, padding included, and
emitted as given; :func:`iter_options` walks them when someone needs to look
inside.  Reassembly and routing live in ``iface/``, not here.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version|  IHL  |Type of Service|          Total Length         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         Identification        |R|D|M|   Fragment Offset (x8)  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Time to Live |    Protocol   |        Header Checksum        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Source Address                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Destination Address                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Options (IHL*4 - 20 octets, padded to 32 bits) ...   |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    R: reserved, D: don't fragment, M: more fragments.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from pystack.errors import malformed
from pystack.wire._fields import as_payload, check_bytes, check_uint, out_window, value_repr, window
from pystack.wire.checksum import checksum

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

MIN_HEADER_LEN = 20
MAX_HEADER_LEN = 60  # IHL is 4 bits: 15 words
MAX_OPTIONS_LEN = MAX_HEADER_LEN - MIN_HEADER_LEN
MAX_TOTAL_LEN = 0xFFFF

# RFC 791 §3.1 "Flags" (the top 3 bits of the 16-bit word holding the offset).
_FLAG_RESERVED = 0x8000
_FLAG_DF = 0x4000
_FLAG_MF = 0x2000
_OFFSET_MASK = 0x1FFF  # in units of 8 octets

# RFC 791 §3.1 "Options": the two single-octet options; the rest are
# type-length-value with a length octet counting type and length.
OPT_EOL = 0
OPT_NOP = 1

_HEADER = struct.Struct("!BBHHHBBHII")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_AT = 10


def ip_to_str(addr: int) -> str:
    """``0x0A000001`` -> ``"10.0.0.1"``."""
    check_uint("IPv4 address", addr, 32)
    return f"{addr >> 24}.{(addr >> 16) & 0xFF}.{(addr >> 8) & 0xFF}.{addr & 0xFF}"


def ip_from_str(text: str) -> int:
    """``"10.0.0.1"`` -> ``0x0A000001``; ValueError on anything but a dotted quad."""
    if not isinstance(text, str):
        raise TypeError(f"IPv4 address text must be str, not {type(text).__name__}")
    return int(ipaddress.IPv4Address(text))  # AddressValueError is a ValueError


def iter_options(options) -> list[tuple[int, bytes]]:
    """The options in a raw option area as ``(type, data)`` pairs, in order.

    RFC 791 §3.1 "Options": End of Option List (0) stops the walk and is not
    listed, nor is anything after it (padding); No Operation (1) is listed as
    ``(1, b"")``; every other option is type, length (counting both octets),
    data.  A missing length octet, a length below 2 or one running past the
    area raises ``ipv4.bad_option``.
    """
    area = window(options, 0, None)
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(area)
    while i < n:
        kind = area[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            out.append((OPT_NOP, b""))
            i += 1
            continue
        if i + 1 >= n:
            raise malformed("ipv4.bad_option", f"option type {kind} at offset {i} has no length octet")
        olen = area[i + 1]
        if olen < 2 or i + olen > n:
            raise malformed("ipv4.bad_option",
                            f"option type {kind} at offset {i} has length {olen} in a {n}-byte area")
        out.append((kind, bytes(area[i + 2:i + olen])))
        i += olen
    return out


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """One IPv4 datagram (or fragment).

    ``frag_offset`` is in bytes (the header field times 8).  ``options`` is
    the raw option area, a multiple of 4 bytes, at most 40.
    ``reserved_flag`` is the reserved "must be zero" flag bit (RFC 791 §3.1),
    kept only so that a received header re-emits unchanged; see :meth:`parse`.
    """

    src: int
    dst: int
    proto: int
    payload: bytes | memoryview = field(hash=False)
    ttl: int = 64
    ident: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    frag_offset: int = 0
    tos: int = 0
    options: bytes = b""
    reserved_flag: bool = False

    __repr__ = value_repr

    def __post_init__(self) -> None:
        check_uint("src", self.src, 32)
        check_uint("dst", self.dst, 32)
        check_uint("proto", self.proto, 8)
        check_uint("ttl", self.ttl, 8)
        check_uint("ident", self.ident, 16)
        check_uint("tos", self.tos, 8)
        check_uint("frag_offset", self.frag_offset, 16)
        if self.frag_offset % 8:
            raise ValueError(f"frag_offset {self.frag_offset} is not a multiple of 8 bytes (RFC 791 §3.1)")
        options = check_bytes("options", self.options)
        if len(options) % 4 or len(options) > MAX_OPTIONS_LEN:
            raise ValueError(f"options must be a multiple of 4 bytes, at most {MAX_OPTIONS_LEN}, "
                             f"not {len(options)} (pad them with EOL/NOP)")
        object.__setattr__(self, "options", options)
        payload = as_payload(self.payload)
        object.__setattr__(self, "payload", payload)
        if MIN_HEADER_LEN + len(options) + len(payload) > MAX_TOTAL_LEN:
            raise ValueError(f"{len(payload)}-byte payload makes the datagram longer than {MAX_TOTAL_LEN}")

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None,
              verify_checksum: bool = True, *, partial: bool = False) -> IPv4Packet:
        """Parse the datagram at ``buf[offset:offset+length]``.

        Bytes past the total length are link-layer padding and are ignored.
        The reserved flag bit is accepted when set, as RFC 1122 §1.2.2 asks
        of a receiver ("be liberal"), and recorded in ``reserved_flag``.
        Options are not validated here (see :func:`iter_options`).

        ``partial=True`` is for the datagram an ICMP error quotes (RFC 792):
        the total length may exceed the bytes present, and the payload is
        then what is present.  The header itself must still be whole.
        """
        data = window(buf, offset, length)
        n = len(data)
        if n < MIN_HEADER_LEN:
            raise malformed("ipv4.truncated", f"{n} bytes < the {MIN_HEADER_LEN}-byte header")
        ver_ihl, tos, total_len, ident, frag_word, ttl, proto, _, src, dst = _HEADER.unpack_from(data)
        version, ihl = ver_ihl >> 4, (ver_ihl & 0x0F) * 4
        if version != 4:
            raise malformed("ipv4.bad_version", f"version {version}, not 4")
        if ihl < MIN_HEADER_LEN or ihl > n:
            raise malformed("ipv4.bad_ihl", f"IHL {ihl // 4} ({ihl} bytes) with {n} bytes present")
        if total_len < ihl or (total_len > n and not partial):
            raise malformed("ipv4.bad_total_length",
                            f"total length {total_len} with a {ihl}-byte header and {n} bytes present")
        if verify_checksum and checksum(data[:ihl]) != 0:
            raise malformed("ipv4.bad_checksum", f"header checksum does not verify over {ihl} bytes")
        return cls(
            src, dst, proto, data[ihl:min(total_len, n)],
            ttl=ttl, ident=ident,
            dont_fragment=bool(frag_word & _FLAG_DF),
            more_fragments=bool(frag_word & _FLAG_MF),
            frag_offset=(frag_word & _OFFSET_MASK) * 8,
            tos=tos, options=bytes(data[MIN_HEADER_LEN:ihl]),
            reserved_flag=bool(frag_word & _FLAG_RESERVED),
        )

    @property
    def header_len(self) -> int:
        return MIN_HEADER_LEN + len(self.options)

    @property
    def wire_len(self) -> int:
        return MIN_HEADER_LEN + len(self.options) + len(self.payload)

    @property
    def is_fragment(self) -> bool:
        """True for any fragment but a whole datagram (RFC 791 §3.2 "Fragmentation")."""
        return self.more_fragments or self.frag_offset != 0

    def emit(self, buf, offset: int = 0) -> int:
        hlen = self.header_len
        n = hlen + len(self.payload)
        out = out_window(buf, offset, n)
        frag_word = ((_FLAG_RESERVED if self.reserved_flag else 0)
                     | (_FLAG_DF if self.dont_fragment else 0)
                     | (_FLAG_MF if self.more_fragments else 0)
                     | (self.frag_offset // 8))
        _HEADER.pack_into(out, 0, 0x40 | (hlen // 4), self.tos, n, self.ident, frag_word,
                          self.ttl, self.proto, 0, self.src, self.dst)
        out[MIN_HEADER_LEN:hlen] = self.options
        _CHECKSUM.pack_into(out, _CHECKSUM_AT, checksum(out[:hlen]))
        out[hlen:] = self.payload
        return n

    def to_bytes(self) -> bytes:
        buf = bytearray(self.wire_len)
        self.emit(buf)
        return bytes(buf)
