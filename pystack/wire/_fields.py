"""Small helpers the pure wire values share: buffer windows, field checks, repr.

Not public API.  Every protocol module (ethernet, arp, ipv4, icmpv4, udp,
tcp) uses these so that they agree on what "caller misuse" means: a bad
``offset``/``length`` or an out-of-range field value raises ValueError, a
value of the wrong type TypeError.  Peer garbage is never detected here; it
is the parsers' business (:func:`pystack.errors.malformed`).

Integers.  A *position* (``offset``, ``length``) is anything
``operator.index`` takes -- ``int``, ``bool``, numpy integers such as the
``FrameBatch.offsets``/``lengths`` items -- used as that int, as the fast
path (``pystack.wire.headers``) and every fast-path module take it; anything
else (a float, a str, None) raises TypeError.  A *field value* stored in a
wire value must be a Python ``int`` (``bool`` is one): a numpy integer is
refused with a TypeError naming its type, since the value would keep it and
carry numpy's fixed-width arithmetic into sequence-number math, and
converting every field would cost the per-segment constructors more than the
check itself (convert with ``int()``).
"""

from __future__ import annotations

import dataclasses
from operator import index as _index


def window(buf, offset: int, length: int | None) -> memoryview:
    """``buf[offset:offset+length]`` as a byte memoryview, without copying.

    ``length=None`` means to the end of ``buf``.  An offset or length that
    does not fit inside ``buf`` is the caller's mistake (ValueError); one
    that is not an integer too (TypeError).
    """
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    size = len(mv)
    if type(offset) is not int:  # inline: a call would cost more than the rest of the check
        offset = _index(offset)
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} is outside the {size}-byte buffer")
    if length is None:
        return mv[offset:]
    if type(length) is not int:
        length = _index(length)
    if length < 0 or offset + length > size:
        raise ValueError(f"length {length} at offset {offset} runs past the {size}-byte buffer")
    return mv[offset:offset + length]


def out_window(buf, offset: int, needed: int) -> memoryview:
    """The writable ``needed`` bytes of ``buf`` at ``offset`` (ValueError if too small)."""
    mv = memoryview(buf)
    if mv.readonly:
        raise TypeError("emit needs a writable buffer (bytearray, memoryview, numpy array)")
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    if type(offset) is not int:
        offset = _index(offset)
    if offset < 0 or offset + needed > len(mv):
        raise ValueError(f"{needed} bytes at offset {offset} do not fit in a {len(mv)}-byte buffer")
    return mv[offset:offset + needed]


def check_uint(name: str, value, bits: int) -> None:
    """Raise unless ``value`` is an int in ``[0, 2**bits)`` (a field value: see the module docstring)."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} {value} does not fit in {bits} bits")


def have_addresses(src, dst) -> bool:
    """Whether a TCP/UDP pseudo-header can be built: both IPv4 addresses given, or neither."""
    if (src is None) != (dst is None):
        raise ValueError("give both src and dst (for the checksum) or neither")
    if src is None:
        return False
    check_uint("src", src, 32)
    check_uint("dst", dst, 32)
    return True


def check_bytes(name: str, value, size: int | None = None) -> bytes:
    """``value`` as bytes; TypeError unless bytes-like, ValueError unless ``size`` long."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if size is not None and len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, not {len(value)}")
    return value


def as_payload(value):
    """A payload as given (bytes) or as a flat byte memoryview (anything else bytes-like).

    Parsed values hold a memoryview slice of the caller's buffer; values
    built by hand usually hold bytes.  Both compare by content.
    """
    if isinstance(value, bytes):
        return value
    try:
        mv = memoryview(value)
    except TypeError:
        raise TypeError(f"payload must be bytes-like, not {type(value).__name__}") from None
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def value_repr(self) -> str:
    """A dataclass repr that shows a payload as its length and first bytes."""
    parts = []
    for f in dataclasses.fields(self):
        if not f.repr:
            continue
        v = getattr(self, f.name)
        if f.name == "payload":
            head = f" {bytes(v[:16]).hex()}{'...' if len(v) > 16 else ''}" if len(v) else ""
            parts.append(f"payload=<{len(v)} bytes{head}>")
        else:
            parts.append(f"{f.name}={v!r}")
    return f"{type(self).__name__}({', '.join(parts)})"
