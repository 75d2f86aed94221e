"""The reassembly buffer's memory policy, both implementations: no ring until data comes, growth
by doubling that keeps every held byte in place, release when reading empties it (see "Memory"
in ``pystack/storage/_assembler_py.py``)."""

from __future__ import annotations

import random

from conftest import implementations, load_implementation

assembler_impl = implementations("assembler", "pystack.storage._assembler_py")

MOD = 1 << 32
MIN_RING = 4096


def data_at(seq: int, n: int) -> bytes:
    return bytes(((((seq + i) % MOD) * 2654435761) >> 13) & 0xFF for i in range(n))


def test_min_ring_is_the_same_in_both(assembler_impl):
    assert assembler_impl.MIN_RING == MIN_RING


def test_no_ring_until_data_and_none_after_it_is_read(assembler_impl):
    asm = assembler_impl.Assembler(256 * 1024, rcv_nxt=1000)
    assert asm.allocated == 0 and asm.window == 256 * 1024
    assert asm.read() == b"" and asm.read_into(bytearray(10)) == 0 and bytes(asm.peek()) == b""
    assert asm.insert(1000, b"") == 0 and asm.allocated == 0
    assert asm.insert(1000, b"hello") == 5
    assert asm.allocated == MIN_RING
    assert asm.read(2) == b"he" and asm.allocated == MIN_RING  # still holding "llo"
    assert asm.read() == b"llo"
    assert asm.allocated == 0 and asm.window == 256 * 1024


def test_each_way_of_reading_releases_the_ring(assembler_impl):
    asm = assembler_impl.Assembler(65536)
    asm.insert(0, b"abc")
    asm.consume(3)
    assert asm.allocated == 0
    asm.insert(3, b"def")
    buf = bytearray(8)
    assert asm.read_into(buf) == 3 and buf[:3] == b"def"
    assert asm.allocated == 0


def test_out_of_order_data_keeps_the_ring(assembler_impl):
    asm = assembler_impl.Assembler(65536)
    asm.insert(10, b"later")
    assert asm.readable == 0 and asm.allocated == MIN_RING
    assert asm.read() == b"" and asm.allocated == MIN_RING  # the held range stays
    asm.insert(0, b"0123456789")
    assert asm.read() == b"0123456789later" and asm.allocated == 0


def test_a_small_capacity_is_the_whole_ring(assembler_impl):
    asm = assembler_impl.Assembler(100)
    asm.insert(0, b"x" * 150)
    assert asm.allocated == 100 and asm.readable == 100 and asm.window == 0


def test_growth_doubles_and_keeps_wrapped_and_out_of_order_bytes(assembler_impl):
    cap = 64 * 1024
    isn = MOD - 5000  # the sequence numbers wrap too
    asm = assembler_impl.Assembler(cap, rcv_nxt=isn)
    # Fill, read most, refill so the data wraps the 4 KiB ring's end.
    asm.insert(isn, data_at(isn, 4000))
    assert asm.read(3900) == data_at(isn, 3900)
    pos = 4000
    asm.insert((isn + pos) % MOD, data_at(isn + pos, 3000))  # 3100 held: fits, wrapping the ring's end
    assert asm.allocated == MIN_RING
    pos += 3000
    asm.insert((isn + pos) % MOD, data_at(isn + pos, 1000))  # 4100 held: grows to 8 KiB
    assert asm.allocated == 2 * MIN_RING
    pos += 1000
    # An out-of-order range far ahead: the ring grows to hold it, with the hole.
    ahead = pos + 20_000
    asm.insert((isn + ahead) % MOD, data_at(isn + ahead, 1000))
    assert asm.allocated == 32 * 1024 and asm.range_count == 1
    # Fill the hole: everything is delivered in order.
    assert asm.insert((isn + pos) % MOD, data_at(isn + pos, 20_000)) == 21_000
    assert asm.read() == data_at(isn + 3900, pos + 21_000 - 3900)
    assert asm.allocated == 0


def test_after_a_release_the_next_ring_has_the_last_size(assembler_impl):
    asm = assembler_impl.Assembler(256 * 1024)
    asm.insert(0, bytes(100_000))
    assert asm.allocated == 128 * 1024
    asm.read()
    assert asm.allocated == 0
    asm.insert(100_000, b"x")
    assert asm.allocated == 128 * 1024  # a bulk receiver does not regrow every batch


def test_a_peek_view_outlives_a_release(assembler_impl):
    asm = assembler_impl.Assembler(1024)
    asm.insert(0, b"abcdef")
    view = asm.peek()
    asm.consume(6)
    assert asm.allocated == 0
    assert bytes(view) == b"abcdef"  # the old ring lives as long as the view


def test_both_implementations_allocate_alike():
    py = load_implementation("py", "assembler", "pystack.storage._assembler_py")
    c = load_implementation("c", "assembler", "pystack.storage._assembler_py")
    rng = random.Random(7)
    a, b = py.Assembler(40_000, rcv_nxt=MOD - 777, max_ranges=4), c.Assembler(40_000, rcv_nxt=MOD - 777,
                                                                               max_ranges=4)
    base = MOD - 777
    for _ in range(3000):
        op = rng.random()
        if op < 0.6:
            off = a.rcv_nxt - base + rng.randrange(-2000, 30_000)
            seq, n = (base + off) % MOD, rng.randrange(0, 3000)
            assert a.insert(seq, data_at(seq, n)) == b.insert(seq, data_at(seq, n))
        else:
            n = rng.randrange(0, 20_000)
            assert a.read(n) == b.read(n)
        assert (a.allocated, a.readable, a.range_count, a.refused) == (b.allocated, b.readable, b.range_count,
                                                                       b.refused)
        assert a.allocated <= 40_000
