"""Sequence number arithmetic modulo 2**32 (RFC 9293 §3.4), across the wrap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from strategies import SETTINGS, u32

from pystack.wire.seq import (
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
)

TOP = 2**32 - 1
distances = st.integers(-(2**31) + 1, 2**31 - 1)


def test_add_wraps():
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 5, 10) == 4
    assert seq_add(3, -5) == TOP - 1
    assert seq_add(0, 2**32) == 0


def test_diff_across_the_wrap():
    assert seq_diff(0, TOP) == 1
    assert seq_diff(TOP, 0) == -1
    assert seq_diff(5, TOP - 4) == 10
    assert seq_diff(100, 100) == 0
    assert seq_diff(2**31 - 1, 0) == 2**31 - 1
    assert seq_diff(2**31, 0) == -(2**31)  # the undefined half: reads as behind
    assert seq_diff(0, 2**31) == -(2**31)


def test_comparisons_across_the_wrap():
    assert seq_lt(TOP - 10, 5) and seq_le(TOP - 10, 5)
    assert seq_gt(5, TOP - 10) and seq_ge(5, TOP - 10)
    assert not seq_lt(5, TOP - 10) and not seq_gt(TOP - 10, 5)
    assert seq_le(7, 7) and seq_ge(7, 7) and not seq_lt(7, 7) and not seq_gt(7, 7)


def test_window_across_the_wrap():
    start = TOP - 2
    assert seq_in_window(TOP - 2, start, 10)
    assert seq_in_window(TOP, start, 10)
    assert seq_in_window(0, start, 10)
    assert seq_in_window(6, start, 10)
    assert not seq_in_window(7, start, 10)       # start + size is outside
    assert not seq_in_window(TOP - 3, start, 10)  # just before start
    assert not seq_in_window(start, start, 0)     # a zero window holds nothing
    assert seq_in_window(start, start, 1)


def test_max_min_across_the_wrap():
    assert seq_max(TOP, 3) == 3 and seq_max(3, TOP) == 3
    assert seq_min(TOP, 3) == TOP and seq_min(3, TOP) == TOP
    assert seq_max(9, 9) == seq_min(9, 9) == 9


@SETTINGS
@given(u32, distances)
def test_diff_inverts_add(a, d):
    b = seq_add(a, d)
    assert 0 <= b <= TOP
    assert seq_diff(b, a) == d and seq_diff(a, b) == -d
    assert seq_lt(a, b) == (d > 0) == seq_gt(b, a)
    assert seq_le(a, b) == (d >= 0) == seq_ge(b, a)
    assert seq_max(a, b) == (b if d >= 0 else a)
    assert seq_min(a, b) == (a if d >= 0 else b)


@SETTINGS
@given(u32, u32)
def test_exactly_one_order_holds_unless_half_apart(a, b):
    if seq_diff(a, b) == -(2**31):
        return
    assert [seq_lt(a, b), a == b, seq_gt(a, b)].count(True) == 1


@SETTINGS
@given(u32, u32, st.integers(0, 2**32))
def test_in_window_matches_the_definition(x, start, size):
    # x is in the window iff x == start + k (mod 2**32) for some 0 <= k < size
    k = (x - start) % 2**32
    assert seq_in_window(x, start, size) == (k < size)
    if 0 < size <= 2**31:
        assert seq_in_window(x, start, size) == (seq_le(start, x) and seq_lt(x, seq_add(start, size)))


@SETTINGS
@given(u32, st.integers(1, 1000))
def test_small_windows_by_enumeration(start, size):
    inside = {seq_add(start, k) for k in range(size)}
    for x in (seq_add(start, -1), start, seq_add(start, size - 1), seq_add(start, size)):
        assert seq_in_window(x, start, size) == (x in inside)
