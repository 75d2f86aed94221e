"""TCP sequence number arithmetic, modulo 2**32 (RFC 9293 §3.4).

Sequence numbers are plain ints in ``[0, 2**32)``.  Comparisons are made on
the signed distance ``seq_diff(a, b)``, which is right as long as the two
numbers are less than 2**31 apart -- always true of numbers within one
window (RFC 9293 §3.4; RFC 1982 §3.2 leaves the exact half undefined; here a
distance of exactly 2**31 reads as -2**31, so both ``seq_lt(a, b)`` and
``seq_lt(b, a)`` hold).  Plain functions, so the hot path pays for nothing
but the arithmetic.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b``, in ``[-2**31, 2**31)``."""
    return ((a - b + _HALF) & MASK) - _HALF


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def seq_in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` modulo 2**32; a zero-size window holds nothing.

    RFC 9293 §3.4 writes the acceptability tests in this form, e.g.
    ``RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND``.
    """
    return ((x - start) & MASK) < size


def seq_max(a: int, b: int) -> int:
    """The later of ``a`` and ``b`` in sequence space."""
    return a if seq_diff(a, b) >= 0 else b


def seq_min(a: int, b: int) -> int:
    """The earlier of ``a`` and ``b`` in sequence space."""
    return a if seq_diff(a, b) <= 0 else b
