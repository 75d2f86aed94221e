"""Internet checksum, pure-Python twin of ``pystack._fast.checksum``.

RFC 1071: the checksum is the 16-bit one's complement of the one's
complement sum of the data taken as big-endian 16-bit words, an odd final
byte padded with a zero byte (RFC 1071 §4.1).

The sum is computed without a Python loop: read the whole buffer as one
big-endian integer N = sum(w_i * 2**(16*i)).  Since 2**16 = 1 (mod 0xFFFF),
N = sum(w_i) (mod 0xFFFF), which is exactly the end-around-carry sum, except
that one's complement arithmetic writes a non-zero multiple of 0xFFFF as
0xFFFF ("negative zero") and zero only when every word is zero.

All functions take any contiguous bytes-like object (bytes, bytearray,
memoryview, numpy array) at any alignment and length.  Integer arguments
take any integer (``int``, ``bool``, numpy integers: what ``operator.index``
takes) and raise TypeError for anything else; a float is never truncated.
"""

from __future__ import annotations

from operator import index as _index

_from_bytes = int.from_bytes


def ones_sum(data, initial: int = 0) -> int:
    """The folded 16-bit one's complement sum of ``data``, plus ``initial``.

    Returns 0 only when ``initial`` and every word are zero; otherwise a value
    in 1..0xFFFF.  ``initial`` (for example a pseudo-header sum) is a 16-bit
    sum; chaining sums of several buffers is exact when every buffer but the
    last has even length.
    """
    if type(initial) is not int:
        initial = _index(initial)
    mv = memoryview(data).cast("B")
    n = len(mv)
    total = _from_bytes(mv, "big")
    if n & 1:
        total <<= 8  # RFC 1071 §4.1: pad an odd length with a zero byte
    total += initial
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def checksum(data, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (RFC 1071): ~ones_sum(data, initial).

    Over a header whose checksum field is filled in correctly this is 0.
    """
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """One's complement sum of the IPv4 pseudo-header (RFC 9293 §3.1; RFC 768).

    ``src`` and ``dst`` are IPv4 addresses as integers, ``proto`` the IP
    protocol number, ``length`` the TCP or UDP length (header plus data).
    """
    if not type(src) is type(dst) is type(proto) is type(length) is int:
        src, dst, proto, length = _index(src), _index(dst), _index(proto), _index(length)
    total = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def update16(check: int, old: int, new: int) -> int:
    """Checksum after one 16-bit word of the data changed from ``old`` to ``new``.

    RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m'), which, unlike eqn. 2 of
    RFC 1141, never yields 0x0000 from a checksum that should be 0xFFFF.
    """
    if not type(check) is type(old) is type(new) is int:
        check, old, new = _index(check), _index(old), _index(new)
    total = (~check & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def update32(check: int, old: int, new: int) -> int:
    """Checksum after an aligned 32-bit field (an IPv4 address) changed (RFC 1624)."""
    if not type(old) is type(new) is int:
        old, new = _index(old), _index(new)
    check = update16(check, old >> 16, new >> 16)
    return update16(check, old & 0xFFFF, new & 0xFFFF)
