"""Ethernet II frames (IEEE 802.3 clause 3.2, DIX framing) and MAC address text.

Owns the 14-byte link header: parse a frame into :class:`EthernetFrame`,
emit one into a caller's buffer.  A TAP device hands us frames without the
preamble and without the frame check sequence, so there is no FCS here.
Emitted frames are not padded to the 60-byte minimum: a TAP does not need
it and the kernel pads what it puts on a real wire.  802.1Q tags are not
interpreted: a tagged frame parses with ethertype 0x8100.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Destination MAC address                    |
    +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               |                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
    |                      Source MAC address                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           EtherType           |  Payload ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from pystack.errors import malformed
from pystack.wire._fields import as_payload, check_bytes, check_uint, out_window, value_repr, window

HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6

_HEADER = struct.Struct("!6s6sH")
_MAC_TEXT = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")


def mac_to_str(mac: bytes) -> str:
    """``b"\\x02\\0\\0\\0\\0\\x01"`` -> ``"02:00:00:00:00:01"``."""
    mac = check_bytes("MAC address", mac, 6)
    return mac.hex(":")


def mac_from_str(text: str) -> bytes:
    """``"02:00:00:00:00:01"`` (or with ``-``) -> 6 bytes; ValueError on anything else."""
    if not isinstance(text, str):
        raise TypeError(f"MAC address text must be str, not {type(text).__name__}")
    if not _MAC_TEXT.fullmatch(text):
        raise ValueError(f"not a MAC address: {text!r} (want six hex pairs like 02:00:00:00:00:01)")
    return bytes.fromhex(text.replace(text[2], ""))


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """An Ethernet II frame: addresses, EtherType, and the payload it carries.

    A parsed frame's ``payload`` is a memoryview of the caller's buffer
    running to the end of the frame, link padding included: the protocol
    inside (IPv4 total length, ARP's fixed size) says where its data ends.
    """

    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes | memoryview = field(hash=False)

    __repr__ = value_repr

    def __post_init__(self) -> None:
        object.__setattr__(self, "dst", check_bytes("dst", self.dst, 6))
        object.__setattr__(self, "src", check_bytes("src", self.src, 6))
        check_uint("ethertype", self.ethertype, 16)
        object.__setattr__(self, "payload", as_payload(self.payload))

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None) -> EthernetFrame:
        data = window(buf, offset, length)
        if len(data) < HEADER_LEN:
            raise malformed("ethernet.truncated", f"{len(data)} bytes < the {HEADER_LEN}-byte header")
        dst, src, ethertype = _HEADER.unpack_from(data)
        return cls(dst, src, ethertype, data[HEADER_LEN:])

    @property
    def header_len(self) -> int:
        return HEADER_LEN

    @property
    def wire_len(self) -> int:
        return HEADER_LEN + len(self.payload)

    def emit(self, buf, offset: int = 0) -> int:
        n = self.wire_len
        out = out_window(buf, offset, n)
        _HEADER.pack_into(out, 0, self.dst, self.src, self.ethertype)
        out[HEADER_LEN:] = self.payload
        return n

    def to_bytes(self) -> bytes:
        buf = bytearray(self.wire_len)
        self.emit(buf)
        return bytes(buf)
