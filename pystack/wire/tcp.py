"""TCP segments and TCP options (RFC 9293 §3.1, §3.2) as values.

Owns the TCP header as :class:`TcpSegment` and each option kind as a small
value class.  This is the readable, complete parser used off the hot path;
``pystack.wire.headers`` is the one-call fast path and applies exactly the
same option rules (:func:`parse_options`), which tests cross-check.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Source Port          |       Destination Port        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Sequence Number                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Acknowledgment Number                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Data |       |C|E|U|A|P|R|S|F|                               |
    | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
    |       |       |R|E|G|K|H|T|N|N|                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           Checksum            |         Urgent Pointer        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           Options (Data Offset*4 - 20 octets) ...             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                             Data ...                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Options (RFC 9293 §3.1, §3.2); an option may begin on any octet:

      kind   length  data                                   option
      0      -       -                                      End of Option List: the rest is padding
      1      -       -                                      No-Operation
      2      4       MSS (16 bits)                          Maximum Segment Size, RFC 9293 §3.2
      3      3       shift (8 bits)                         Window Scale, RFC 7323 §2.2
      4      2       -                                      SACK-Permitted, RFC 2018 §2
      5      2+8n    n >= 1 (left, right) edges, 32 bits    SACK, RFC 2018 §3
      8      10      TSval, TSecr (32 bits each)            Timestamps, RFC 7323 §3.2
      other  >= 2    length - 2 octets                      kept as UnknownOption (MUST-6)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from pystack.errors import malformed
from pystack.wire._fields import (
    as_payload,
    check_bytes,
    check_uint,
    have_addresses,
    out_window,
    value_repr,
    window,
)
from pystack.wire.checksum import checksum, pseudo_header_sum
from pystack.wire.ipv4 import PROTO_TCP

# Control bits (RFC 9293 §3.1; ECE and CWR from RFC 3168 §6.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

MIN_HEADER_LEN = 20
MAX_OPTIONS_LEN = 40  # Data Offset is 4 bits: at most 15 words of header

# Option kinds (RFC 9293 §3.2; IANA "TCP Option Kind Numbers").
KIND_EOL = 0
KIND_NOP = 1
KIND_MSS = 2
KIND_WINDOW_SCALE = 3
KIND_SACK_PERMITTED = 4
KIND_SACK = 5
KIND_TIMESTAMPS = 8

# tcpdump's letters, in tcpdump's order, except that ACK is "A" (not ".").
_FLAG_LETTERS = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"),
                 (ACK, "A"), (URG, "U"), (ECE, "E"), (CWR, "W"))

_HEADER = struct.Struct("!HHIIBBHHH")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_AT = 16
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")


# -- options -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NopOption:
    """No-Operation (kind 1): one octet, used to align the next option."""

    KIND: ClassVar[int] = KIND_NOP
    wire_len: ClassVar[int] = 1

    def to_bytes(self) -> bytes:
        return b"\x01"


@dataclass(frozen=True, slots=True)
class MssOption:
    """Maximum Segment Size (kind 2, length 4; RFC 9293 §3.2, §3.7.1)."""

    mss: int

    KIND: ClassVar[int] = KIND_MSS
    wire_len: ClassVar[int] = 4

    def __post_init__(self) -> None:
        check_uint("mss", self.mss, 16)

    def to_bytes(self) -> bytes:
        return bytes((KIND_MSS, 4)) + _U16.pack(self.mss)


@dataclass(frozen=True, slots=True)
class WindowScaleOption:
    """Window Scale (kind 3, length 3; RFC 7323 §2.2).

    ``shift`` is kept as received even above 14; the TCP layer clamps it to
    14 (RFC 7323 §2.3).
    """

    shift: int

    KIND: ClassVar[int] = KIND_WINDOW_SCALE
    wire_len: ClassVar[int] = 3

    def __post_init__(self) -> None:
        check_uint("shift", self.shift, 8)

    def to_bytes(self) -> bytes:
        return bytes((KIND_WINDOW_SCALE, 3, self.shift))


@dataclass(frozen=True, slots=True)
class SackPermittedOption:
    """SACK-Permitted (kind 4, length 2; RFC 2018 §2)."""

    KIND: ClassVar[int] = KIND_SACK_PERMITTED
    wire_len: ClassVar[int] = 2

    def to_bytes(self) -> bytes:
        return b"\x04\x02"


#: At most 4 SACK blocks fit in 40 octets of options (RFC 2018 §3).
MAX_SACK_BLOCKS = 4


@dataclass(frozen=True, slots=True)
class SackOption:
    """SACK (kind 5, length 2+8n, n >= 1; RFC 2018 §3): ``(left, right)`` edges, right exclusive."""

    blocks: tuple[tuple[int, int], ...]

    KIND: ClassVar[int] = KIND_SACK

    def __post_init__(self) -> None:
        try:
            blocks = tuple((left, right) for left, right in self.blocks)
        except (TypeError, ValueError):
            raise TypeError("blocks must be a sequence of (left, right) pairs") from None
        if not 1 <= len(blocks) <= MAX_SACK_BLOCKS:
            raise ValueError(f"a SACK option holds 1 to {MAX_SACK_BLOCKS} blocks, not {len(blocks)}")
        for left, right in blocks:
            check_uint("SACK left edge", left, 32)
            check_uint("SACK right edge", right, 32)
        object.__setattr__(self, "blocks", blocks)

    @property
    def wire_len(self) -> int:
        return 2 + 8 * len(self.blocks)

    def to_bytes(self) -> bytes:
        return bytes((KIND_SACK, self.wire_len)) + b"".join(_U32X2.pack(*b) for b in self.blocks)


@dataclass(frozen=True, slots=True)
class TimestampsOption:
    """Timestamps (kind 8, length 10; RFC 7323 §3.2)."""

    tsval: int
    tsecr: int

    KIND: ClassVar[int] = KIND_TIMESTAMPS
    wire_len: ClassVar[int] = 10

    def __post_init__(self) -> None:
        check_uint("tsval", self.tsval, 32)
        check_uint("tsecr", self.tsecr, 32)

    def to_bytes(self) -> bytes:
        return bytes((KIND_TIMESTAMPS, 10)) + _U32X2.pack(self.tsval, self.tsecr)


_KNOWN_KINDS = frozenset({KIND_EOL, KIND_NOP, KIND_MSS, KIND_WINDOW_SCALE,
                          KIND_SACK_PERMITTED, KIND_SACK, KIND_TIMESTAMPS})


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """Any other kind, kept whole so it can be logged or re-sent (RFC 9293 §3.1, MUST-6).

    ``data`` excludes the kind and length octets.
    """

    kind: int
    data: bytes

    def __post_init__(self) -> None:
        check_uint("kind", self.kind, 8)
        if self.kind in _KNOWN_KINDS:
            raise ValueError(f"kind {self.kind} has its own option class")
        data = check_bytes("data", self.data)
        if len(data) > MAX_OPTIONS_LEN - 2:
            raise ValueError(f"{len(data)} bytes of option data cannot fit in {MAX_OPTIONS_LEN} octets")
        object.__setattr__(self, "data", data)

    @property
    def wire_len(self) -> int:
        return 2 + len(self.data)

    def to_bytes(self) -> bytes:
        return bytes((self.kind, self.wire_len)) + self.data


OPTION_TYPES = (NopOption, MssOption, WindowScaleOption, SackPermittedOption,
                SackOption, TimestampsOption, UnknownOption)
_NOP = NopOption()
_SACK_PERMITTED = SackPermittedOption()

#: Known kinds whose length is fixed (RFC 9293 §3.2; RFC 7323 §2.2, §3.2; RFC 2018 §2).
_FIXED_LEN = {KIND_MSS: 4, KIND_WINDOW_SCALE: 3, KIND_SACK_PERMITTED: 2, KIND_TIMESTAMPS: 10}


def _bad_length(detail: str):
    return malformed("tcp.bad_option_length", detail)


def parse_options(buf) -> tuple:
    """The options in a TCP option area, in order, as option values.

    RFC 9293 §3.1: an option may begin on any octet; EOL (kind 0) ends the
    list and the rest of the area is padding, not listed; NOP (kind 1) is a
    single octet; every other kind has a length octet counting kind and
    length.  A missing length octet, a length below 2, a length running
    past the area or past the 40 octets any option area has, or a known
    kind with the wrong length raises ``tcp.bad_option_length`` (MUST-7).
    Unknown kinds are kept as :class:`UnknownOption` (MUST-6).  Any bytes
    given either parse or raise ``tcp.bad_option_length``: an area longer
    than 40 octets parses only when everything past octet 40 is padding
    after an EOL.
    """
    area = window(buf, 0, None)
    out = []
    i, n = 0, len(area)
    # Data Offset is 4 bits (RFC 9293 §3.1): no option reaches past octet 40.
    # This also bounds a SACK to 4 blocks and UnknownOption data to 38
    # octets, as the option classes require.
    limit = n if n < MAX_OPTIONS_LEN else MAX_OPTIONS_LEN
    while i < n:
        kind = area[i]
        if kind == KIND_EOL:
            break
        if i >= limit:
            raise _bad_length(f"option kind {kind} at offset {i} lies past the "
                              f"{MAX_OPTIONS_LEN}-octet limit of an option area")
        if kind == KIND_NOP:
            out.append(_NOP)
            i += 1
            continue
        if i + 1 >= n:
            raise _bad_length(f"option kind {kind} at offset {i} has no length octet")
        olen = area[i + 1]
        if olen < 2 or i + olen > n:
            raise _bad_length(f"option kind {kind} at offset {i} has length {olen} in a {n}-byte area")
        if i + olen > limit:
            raise _bad_length(f"option kind {kind} at offset {i} has length {olen}, running past the "
                              f"{MAX_OPTIONS_LEN}-octet limit of an option area")
        expected = _FIXED_LEN.get(kind)
        if expected is not None and olen != expected:
            raise _bad_length(f"option kind {kind} at offset {i} has length {olen}, not {expected}")
        if kind == KIND_MSS:
            out.append(MssOption(_U16.unpack_from(area, i + 2)[0]))
        elif kind == KIND_WINDOW_SCALE:
            out.append(WindowScaleOption(area[i + 2]))
        elif kind == KIND_SACK_PERMITTED:
            out.append(_SACK_PERMITTED)
        elif kind == KIND_TIMESTAMPS:
            out.append(TimestampsOption(*_U32X2.unpack_from(area, i + 2)))
        elif kind == KIND_SACK:
            if olen < 10 or (olen - 2) % 8:
                raise _bad_length(f"SACK option at offset {i} has length {olen}, not 2+8n with n >= 1")
            out.append(SackOption(tuple(_U32X2.unpack_from(area, j) for j in range(i + 2, i + olen, 8))))
        else:
            out.append(UnknownOption(kind, bytes(area[i + 2:i + olen])))
        i += olen
    return tuple(out)


def _options_len(options: tuple) -> int:
    """Octets the options take on the wire, padded to a multiple of 4."""
    raw = sum(o.wire_len for o in options)
    return (raw + 3) & ~3


def _check_options(options) -> tuple:
    if isinstance(options, (str, bytes, bytearray, memoryview)):
        raise TypeError("options must be a sequence of option values (see parse_options for bytes)")
    options = tuple(options)
    for o in options:
        if not isinstance(o, OPTION_TYPES):
            raise TypeError(f"{o!r} is not a TCP option value")
    size = _options_len(options)
    if size > MAX_OPTIONS_LEN:
        raise ValueError(f"options take {size} octets after padding, more than {MAX_OPTIONS_LEN}")
    return options


def emit_options(options) -> bytes:
    """The option area for ``options``, zero-padded (EOL) to a multiple of 4 octets.

    ValueError when it would exceed 40 octets (RFC 9293 §3.1: Data Offset
    is 4 bits).
    """
    options = _check_options(options)
    raw = b"".join(o.to_bytes() for o in options)
    return raw + bytes(-len(raw) % 4)


# -- segments ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """One TCP segment: header fields, options (values, EOL and padding excluded), data."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes | memoryview = field(hash=False)
    urgent: int = 0
    options: tuple = ()

    __repr__ = value_repr

    def __post_init__(self) -> None:
        check_uint("sport", self.sport, 16)
        check_uint("dport", self.dport, 16)
        check_uint("seq", self.seq, 32)
        check_uint("ack", self.ack, 32)
        check_uint("flags", self.flags, 8)
        check_uint("window", self.window, 16)
        check_uint("urgent", self.urgent, 16)
        object.__setattr__(self, "options", _check_options(self.options))
        object.__setattr__(self, "payload", as_payload(self.payload))

    @classmethod
    def parse(cls, buf, offset: int = 0, length: int | None = None,
              src: int | None = None, dst: int | None = None,
              verify_checksum: bool = True) -> TcpSegment:
        """Parse the segment filling ``buf[offset:offset+length]`` (the IP payload).

        TCP has no length field: the segment is the whole window.  The
        checksum is verified when ``src`` and ``dst`` are given (and
        ``verify_checksum``), before the options are read.  Reserved bits
        are ignored (RFC 9293 §3.1).
        """
        have_pseudo = have_addresses(src, dst)
        data = window(buf, offset, length)
        n = len(data)
        if n < MIN_HEADER_LEN:
            raise malformed("tcp.truncated", f"{n} bytes < the {MIN_HEADER_LEN}-byte header")
        sport, dport, seq, ack, offset_byte, flags, wnd, _, urgent = _HEADER.unpack_from(data)
        hlen = (offset_byte >> 4) * 4
        if hlen < MIN_HEADER_LEN or hlen > n:
            raise malformed("tcp.bad_data_offset",
                            f"data offset {hlen // 4} ({hlen} bytes) with {n} bytes present")
        # RFC 9293 §3.1 "Checksum": pseudo-header, header, options and data.
        if have_pseudo and verify_checksum and checksum(data, pseudo_header_sum(src, dst, PROTO_TCP, n)) != 0:
            raise malformed("tcp.bad_checksum", f"checksum does not verify over {n} bytes")
        options = parse_options(data[MIN_HEADER_LEN:hlen]) if hlen > MIN_HEADER_LEN else ()
        return cls(sport, dport, seq, ack, flags, wnd, data[hlen:], urgent, options)

    @property
    def header_len(self) -> int:
        return MIN_HEADER_LEN + _options_len(self.options)

    @property
    def wire_len(self) -> int:
        return self.header_len + len(self.payload)

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data, plus one each for SYN and FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    @property
    def flags_str(self) -> str:
        """The control bits as tcpdump letters, ACK as "A": "S", "SA", "FPA"; "" for none."""
        return "".join(letter for bit, letter in _FLAG_LETTERS if self.flags & bit)

    def get(self, option_class: type):
        """The last option of ``option_class`` in the segment, or None."""
        for o in reversed(self.options):
            if type(o) is option_class:
                return o
        return None

    def emit(self, buf, offset: int = 0, src: int | None = None, dst: int | None = None) -> int:
        """Write the segment; with ``src`` and ``dst`` fill in the checksum.

        Without them the checksum field is left zero, which no receiver
        accepts (RFC 9293 MUST-2): only for tests, or for a caller that
        fills it in itself.
        """
        have_pseudo = have_addresses(src, dst)
        opts = emit_options(self.options)
        hlen = MIN_HEADER_LEN + len(opts)
        n = hlen + len(self.payload)
        out = out_window(buf, offset, n)
        _HEADER.pack_into(out, 0, self.sport, self.dport, self.seq, self.ack, (hlen // 4) << 4,
                          self.flags, self.window, 0, self.urgent)
        out[MIN_HEADER_LEN:hlen] = opts
        out[hlen:] = self.payload
        if have_pseudo:
            _CHECKSUM.pack_into(out, _CHECKSUM_AT, checksum(out, pseudo_header_sum(src, dst, PROTO_TCP, n)))
        return n

    def to_bytes(self, src: int | None = None, dst: int | None = None) -> bytes:
        buf = bytearray(self.wire_len)
        self.emit(buf, 0, src, dst)
        return bytes(buf)
