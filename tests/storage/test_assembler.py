"""The TCP reassembly buffer, both implementations, against an obvious oracle."""

from __future__ import annotations

import array
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import implementations, load_implementation

assembler_impl = implementations("assembler", "pystack.storage._assembler_py")

MOD = 1 << 32

# The `assembler_impl` fixture is a module object, so sharing it across
# hypothesis examples is safe.
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def byte_at(seq: int) -> int:
    """The stream's byte at sequence number seq: a cheap hash."""
    return ((seq * 2654435761) >> 13) & 0xFF


def data_at(seq: int, n: int) -> bytes:
    """The stream's n bytes from sequence number seq: a function of the sequence
    number alone, so every retransmission carries the same bytes."""
    return bytes(byte_at((seq + i) % MOD) for i in range(n))


# -- the oracle ---------------------------------------------------------------


class Model:
    """Sequence space as a plain map of position -> recency stamp (STYLE.md item 8).

    Positions are absolute (0 = the initial rcv_nxt); ``held`` has one entry
    per out-of-order byte; a block is a maximal run of held positions.
    """

    def __init__(self, capacity: int, isn: int, max_ranges: int) -> None:
        self.cap, self.isn, self.max_ranges = capacity, isn, max_ranges
        self.read = self.nxt = 0
        self.held: dict[int, int] = {}
        self.clock = self.refused = 0
        self.dsack: tuple[int, int] | None = None

    @property
    def rcv_nxt(self) -> int:
        return (self.isn + self.nxt) % MOD

    def seq(self, p: int) -> int:
        return (self.isn + p) % MOD

    def blocks(self) -> list[tuple[int, int, int]]:
        out = []
        for p in sorted(self.held):
            if out and out[-1][1] == p:
                out[-1][1] = p + 1
            else:
                out.append([p, p + 1, self.held[p]])
        return [tuple(b) for b in out]

    def sack_blocks(self) -> list[tuple[int, int]]:
        ordered = sorted(self.blocks(), key=lambda b: -b[2])
        return [(self.seq(s), self.seq(e)) for s, e, _ in ordered]

    def position(self, seq: int) -> int:
        # RFC 9293 §3.4: signed difference; exactly 2**31 away counts as before.
        d = (seq - self.rcv_nxt) % MOD
        return self.nxt + (d - MOD if d >= MOD // 2 else d)

    def insert(self, seq: int, n: int) -> int:
        start = self.position(seq)
        limit = self.read + self.cap
        # RFC 2883 §4: the first run of bytes of this segment received before.
        dup = {p for p in range(start, start + n) if p < self.nxt or p in self.held}
        self.dsack = None
        if dup:
            first = run_end = min(dup)
            while run_end in dup:
                run_end += 1
            self.dsack = (self.seq(first), self.seq(run_end))
        new = range(max(start, self.nxt), min(start + n, limit))
        if not new:
            return 0
        lo, hi = new.start, new.stop
        if lo == self.nxt:
            for p in new:
                self.held[p] = 0
            before = self.nxt
            while self.nxt in self.held:
                del self.held[self.nxt]
                self.nxt += 1
            return self.nxt - before
        touches = any(p in self.held for p in range(lo - 1, hi + 1))
        if not touches and len(self.blocks()) >= self.max_ranges:
            self.refused += 1
            return 0
        self.clock += 1
        for p in new:
            self.held[p] = self.clock
        # The whole block that now holds this data is the most recent (RFC 2018 §4).
        p = lo
        while p - 1 in self.held:
            p -= 1
        while p in self.held:
            self.held[p] = self.clock
            p += 1
        return 0

    def take(self, n: int) -> bytes:
        out = data_at(self.seq(self.read), n)
        self.read += n
        return out


def observe(asm) -> dict:
    return {
        "rcv_nxt": asm.rcv_nxt,
        "readable": asm.readable,
        "window": asm.window,
        "ooo_bytes": asm.ooo_bytes,
        "range_count": asm.range_count,
        "refused": asm.refused,
        "dsack": asm.dsack,
        "sack": asm.sack_blocks(1000),
    }


def expect(model: Model) -> dict:
    blocks = model.blocks()
    return {
        "rcv_nxt": model.rcv_nxt,
        "readable": model.nxt - model.read,
        "window": model.cap - (model.nxt - model.read),
        "ooo_bytes": len(model.held),
        "range_count": len(blocks),
        "refused": model.refused,
        "dsack": model.dsack,
        "sack": model.sack_blocks(),
    }


MAXCAP = 48
# Mostly short segments near rcv_nxt, so ranges meet, touch and overlap often;
# some long or far ones, and some more than 2**31 away (RFC 9293 §3.4).
FAR = [-(1 << 31), -(1 << 31) + 3, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, MOD - 1]
offsets = st.builds(lambda k, near, wide, far: near if k < 7 else wide if k < 9 else far,
                    st.integers(0, 9), st.integers(-6, 30), st.integers(-2 * MAXCAP, 3 * MAXCAP),
                    st.sampled_from(FAR))
lengths = st.builds(lambda k, short, long: short if k < 8 else long,
                    st.integers(0, 9), st.integers(0, 6), st.integers(0, 2 * MAXCAP))


def _op(kind: int, off: int, n: int) -> tuple:
    # Five kinds in twelve insert near rcv_nxt, three at the edge of a held
    # block (where off-by-one bugs live); the rest read in the four ways.
    if kind < 5:
        return ("insert", off, n)
    if kind < 8:
        return ("edge", kind - 5, abs(off), n)
    return (("read", n - 1), ("consume", n), ("read_into", n), ("peek", 0))[kind - 8]


ops = st.lists(st.builds(_op, st.integers(0, 11), offsets, lengths), min_size=10, max_size=60)
isns = st.one_of(st.integers(0, MOD - 1), st.integers(MOD - 64, MOD - 1))
configs = st.tuples(st.one_of(st.integers(16, 40), st.integers(1, MAXCAP)), isns,
                    st.one_of(st.integers(1, 3), st.integers(1, 8)))


def resolve(asm, op) -> tuple:
    """Turn an insert op, relative to ``asm``'s state, into ("insert", seq, n)."""
    if op[0] == "insert":
        return ("insert", (asm.rcv_nxt + op[1]) % MOD, op[2])
    if op[0] != "edge":
        return op
    _, side, k, n = op
    blocks = asm.sack_blocks(1000)
    if not blocks:
        return ("insert", (asm.rcv_nxt + 1 + k % 8) % MOD, n)
    left, right = blocks[k % len(blocks)]
    if side == 0:  # starts where the block ends
        return ("insert", right, n)
    if side == 1:  # ends where the block starts
        return ("insert", (left - n) % MOD, n)
    # from rcv_nxt to the block's left edge, give or take a byte
    return ("insert", asm.rcv_nxt, ((left - asm.rcv_nxt) % MOD + n % 3 - 1) % MOD)


def apply(asm, op) -> object:
    """Run one resolved op on ``asm``; returns what the op gave back."""
    kind = op[0]
    if kind == "insert":
        _, seq, n = op
        return asm.insert(seq, data_at(seq, n))
    if kind == "read":
        return asm.read(op[1])
    if kind == "consume":
        n = min(op[1], asm.readable)
        asm.consume(n)
        return n
    if kind == "read_into":
        buf = bytearray(op[1])
        n = asm.read_into(buf)
        return bytes(buf[:n])
    view = asm.peek()
    assert view.readonly
    got = bytes(view)
    asm.consume(len(got))
    return got


def run_against_model(impl, config, op_list):
    capacity, isn, max_ranges = config
    asm = impl.Assembler(capacity, isn, max_ranges)
    model = Model(capacity, isn, max_ranges)
    assert observe(asm) == expect(model)
    for op in op_list:
        op = resolve(asm, op)
        got = apply(asm, op)
        kind = op[0]
        avail = model.nxt - model.read
        if kind == "insert":
            want = model.insert(op[1], op[2])
        elif kind == "read":
            want = model.take(avail if op[1] < 0 or op[1] > avail else op[1])
        elif kind == "consume":
            want = min(op[1], avail)
            model.take(want)
        elif kind == "read_into":
            want = model.take(min(op[1], avail))
        else:
            assert (len(got) > 0) == (avail > 0)
            want = model.take(len(got))
        assert got == want, op
        assert observe(asm) == expect(model), op
        assert set(asm.sack_blocks(1000)) == {(model.seq(s), model.seq(e)) for s, e, _ in model.blocks()}
        assert asm.sack_blocks(2) == asm.sack_blocks(1000)[:2]
    # Whatever is left in order reads back as the original stream.
    assert asm.read() == model.take(model.nxt - model.read)


@SETTINGS
@given(config=configs, op_list=ops)
def test_matches_oracle(assembler_impl, config, op_list):
    run_against_model(assembler_impl, config, op_list)


@settings(max_examples=100, deadline=None)
@given(config=configs, op_list=ops)
def test_py_and_c_agree(config, op_list):
    py = load_implementation("py", "assembler", "pystack.storage._assembler_py")
    c = load_implementation("c", "assembler", "pystack.storage._assembler_py")
    a, b = py.Assembler(*config), c.Assembler(*config)
    for op in op_list:
        op = resolve(a, op)
        assert apply(a, op) == apply(b, op), op
        assert observe(a) == observe(b), op
        assert repr(a) == repr(b)


# -- a stream fed many ways (STYLE.md item 7) ----------------------------------

STREAM_LEN = 3000
ISN = MOD - 1000  # the stream wraps the sequence space in the middle


def segments(size, step=None):
    step = step or size
    return [(off, min(size, STREAM_LEN - off)) for off in range(0, STREAM_LEN, step)]


def shuffled(segs, seed):
    segs = list(segs)
    random.Random(seed).shuffle(segs)
    return segs


WAYS = {
    "whole": [(0, STREAM_LEN)],
    "segments": segments(100),
    "bytes": segments(1),
    "shuffled": shuffled(segments(100), 1),
    "reversed": segments(100)[::-1],
    "reversed-bytes": segments(1)[::-1],
    "duplicated": [s for s in segments(100) for _ in (0, 1)],
    "duplicated-shuffled": shuffled(segments(100) * 2, 2),
    "overlapping": segments(150, step=100),
    "overlapping-reversed": segments(150, step=100)[::-1],
    "mixed-sizes": shuffled(segments(7) + segments(230) + segments(1000), 3),
}


@pytest.mark.parametrize("way", WAYS)
def test_stream_fed_many_ways(assembler_impl, way):
    data = data_at(ISN, STREAM_LEN)
    asm = assembler_impl.Assembler(4096, ISN)
    advanced = 0
    for off, n in WAYS[way]:
        advanced += asm.insert((ISN + off) % MOD, data[off:off + n])
    assert advanced == STREAM_LEN
    assert asm.rcv_nxt == (ISN + STREAM_LEN) % MOD
    assert asm.ooo_bytes == 0 and asm.range_count == 0 and asm.sack_blocks() == []
    assert asm.read() == data


def test_whole_stream_with_trailing_data_is_trimmed_to_window(assembler_impl):
    data = data_at(ISN, 5000)
    asm = assembler_impl.Assembler(4096, ISN)
    assert asm.insert(ISN, data) == 4096
    assert asm.window == 0
    assert asm.read() == data[:4096]
    assert asm.insert((ISN + 4096) % MOD, data[4096:]) == 5000 - 4096
    assert asm.read() == data[4096:]


def test_long_stream_through_small_window_with_loss_and_reordering(assembler_impl):
    """A lossy sender: segments from within the window, shuffled, some dropped, some doubled."""
    rng = random.Random(7)
    total, mss, capacity = 60_000, 137, 1000
    data = data_at(0, total)
    asm = assembler_impl.Assembler(capacity, MOD - 30_000)
    isn = asm.rcv_nxt
    received = bytearray()
    for _ in range(5000):  # bounded; finishes long before
        if len(received) == total:
            break
        base = (asm.rcv_nxt - isn) % MOD
        window_end = min(base + asm.window, total)
        flight = [(o, min(mss, total - o)) for o in range(base, window_end, mss)]
        flight += [(base - 50, 100)] if base >= 50 else []
        for off, n in shuffled(flight, rng.random()):
            if rng.random() < 0.3:
                continue  # lost
            for _ in range(2 if rng.random() < 0.1 else 1):
                asm.insert((isn + off) % MOD, data[off:off + n])
        received += asm.read(rng.randrange(1, capacity + 1))
    assert bytes(received) == data


def test_accepts_any_contiguous_bytes_like(assembler_impl):
    asm = assembler_impl.Assembler(64)
    assert asm.insert(0, bytearray(b"ab")) == 2
    assert asm.insert(2, memoryview(b"xxcd")[2:]) == 2
    assert asm.insert(4, array.array("H", [0x6665])) == 2
    assert asm.insert(6, b"") == 0
    assert asm.insert(1, b"") == 0 and asm.dsack is None  # nothing duplicated
    assert asm.read() == b"abcd" + array.array("H", [0x6665]).tobytes()


# -- peek / read / consume --------------------------------------------------------


def test_peek_is_contiguous_and_read_only_and_read_handles_the_wrap(assembler_impl):
    asm = assembler_impl.Assembler(8)
    assert asm.insert(0, b"abcdef") == 6
    assert asm.read(5) == b"abcde"
    assert asm.insert(6, b"ghijk") == 5  # ring slots 6, 7, 0, 1, 2
    assert asm.readable == 6
    view = asm.peek()
    assert bytes(view) == b"fgh" and view.readonly
    with pytest.raises(TypeError):
        view[0] = 0
    asm.consume(len(view))
    assert bytes(asm.peek()) == b"ijk"
    asm.insert(11, b"lmnopqrstuvwxyz")
    assert asm.readable == 8 and asm.window == 0
    buf = bytearray(5)
    assert asm.read_into(buf) == 5 and buf == b"ijklm"
    assert asm.read() == b"nop"
    assert asm.read() == b"" and bytes(asm.peek()) == b""


def test_read_sizes(assembler_impl):
    asm = assembler_impl.Assembler(16)
    asm.insert(0, b"0123456789")
    assert asm.read(0) == b""
    assert asm.read(3) == b"012"
    assert asm.read(100) == b"3456789"
    asm.insert(10, b"ab")
    assert asm.read_into(bytearray(0)) == 0
    assert asm.read(-5) == b"ab"


# -- window trimming (RFC 9293 §3.10.7.4) ---------------------------------------


def test_in_order_data_is_trimmed_to_the_window(assembler_impl):
    asm = assembler_impl.Assembler(10)
    assert asm.insert(0, bytes(range(15))) == 10
    assert asm.window == 0
    assert asm.insert(10, b"late") == 0 and asm.dsack is None
    assert asm.read(4) == bytes(range(4))
    assert asm.insert(10, bytes(range(10, 16))) == 4
    assert asm.read() == bytes(range(4, 14))


def test_out_of_order_data_is_trimmed_to_the_window(assembler_impl):
    asm = assembler_impl.Assembler(10, rcv_nxt=100)
    assert asm.insert(105, bytes(10)) == 0
    assert asm.ooo_bytes == 5 and asm.sack_blocks() == [(105, 110)]
    assert asm.insert(110, b"x") == 0 and asm.ooo_bytes == 5
    assert asm.insert(100, bytes(5)) == 10


def test_far_sequence_numbers_use_signed_difference(assembler_impl):
    """RFC 9293 §3.4: more than 2**31 ahead is behind; exactly 2**31 counts as behind."""
    asm = assembler_impl.Assembler(100, rcv_nxt=10)
    assert asm.insert((10 + (1 << 31)) % MOD, b"x") == 0
    assert asm.dsack == ((10 + (1 << 31)) % MOD, (11 + (1 << 31)) % MOD)  # already received
    assert asm.insert((10 + (1 << 31) - 1) % MOD, b"x") == 0
    assert asm.dsack is None and asm.ooo_bytes == 0  # ahead, beyond the window
    assert asm.insert((10 - 3) % MOD, b"abcdef") == 3  # straddles rcv_nxt
    assert asm.dsack == (7, 10)
    assert asm.read() == b"def"


def test_sequence_numbers_wrap(assembler_impl):
    asm = assembler_impl.Assembler(64, rcv_nxt=MOD - 4)
    assert asm.insert(2, b"cd") == 0
    assert asm.sack_blocks() == [(2, 4)]
    assert asm.insert(MOD - 4, b"wxyzabc") == 8
    assert asm.rcv_nxt == 4
    assert asm.dsack == (2, 3)
    assert asm.read() == b"wxyzabcd"


# -- SACK ordering (RFC 2018 §4, examples of §7) --------------------------------


def test_rfc2018_section7_case3(assembler_impl):
    """RFC 2018 §7, case 3: the 2nd, 4th, 6th and 8th of eight 500-byte segments are lost."""
    asm = assembler_impl.Assembler(65535, rcv_nxt=5000)
    seg = bytes(500)
    assert asm.insert(5000, seg) == 500 and asm.sack_blocks() == []
    asm.insert(6000, seg)
    assert asm.rcv_nxt == 5500 and asm.sack_blocks() == [(6000, 6500)]
    asm.insert(7000, seg)
    assert asm.sack_blocks() == [(7000, 7500), (6000, 6500)]
    asm.insert(8000, seg)
    assert asm.sack_blocks() == [(8000, 8500), (7000, 7500), (6000, 6500)]
    # "Suppose at this point, the 4th packet is received out of order."
    asm.insert(6500, seg)
    assert asm.sack_blocks() == [(6000, 7500), (8000, 8500)]
    # "Suppose at this point, the 2nd segment is received."
    assert asm.insert(5500, seg) == 2000
    assert asm.rcv_nxt == 7500 and asm.sack_blocks() == [(8000, 8500)]


def test_sack_blocks_most_recently_changed_first_and_limited(assembler_impl):
    asm = assembler_impl.Assembler(1000)
    for left in (100, 300, 200, 500, 400, 600):
        asm.insert(left, bytes(10))
    assert asm.sack_blocks() == [(600, 610), (400, 410), (500, 510), (200, 210)]
    assert asm.sack_blocks(1) == [(600, 610)]
    assert asm.sack_blocks(0) == []
    assert len(asm.sack_blocks(10)) == 6
    asm.insert(305, bytes(10))  # extends the block at 300: now the most recent
    assert asm.sack_blocks(2) == [(300, 315), (600, 610)]
    asm.insert(100, bytes(5))  # a duplicate refreshes its block (RFC 2883 §4)
    assert asm.sack_blocks(2) == [(100, 110), (300, 315)]
    asm.insert(0, bytes(100))  # in order: its block is gone, the others keep their order
    assert asm.sack_blocks() == [(300, 315), (600, 610), (400, 410), (500, 510)]


# -- D-SACK (RFC 2883 §4) ------------------------------------------------------


def test_rfc2883_example1_duplicate_segment(assembler_impl):
    asm = assembler_impl.Assembler(65535, rcv_nxt=3000)
    asm.insert(3000, bytes(500))
    asm.insert(3500, bytes(500))
    assert asm.dsack is None
    assert asm.insert(3000, bytes(500)) == 0
    assert asm.rcv_nxt == 4000 and asm.dsack == (3000, 3500) and asm.sack_blocks() == []


def test_rfc2883_example2_out_of_order_and_duplicate(assembler_impl):
    asm = assembler_impl.Assembler(65535, rcv_nxt=3000)
    asm.insert(3000, bytes(500))
    asm.insert(3500, bytes(500))
    asm.insert(4500, bytes(500))
    assert asm.dsack is None and asm.sack_blocks() == [(4500, 5000)]
    asm.insert(3000, bytes(500))
    assert asm.rcv_nxt == 4000 and asm.dsack == (3000, 3500) and asm.sack_blocks() == [(4500, 5000)]


def test_rfc2883_example3_duplicate_of_out_of_order(assembler_impl):
    asm = assembler_impl.Assembler(65535, rcv_nxt=3500)
    asm.insert(3500, bytes(500))
    asm.insert(4500, bytes(500))
    asm.insert(5000, bytes(500))
    assert asm.dsack is None and asm.sack_blocks() == [(4500, 5500)]
    asm.insert(5000, bytes(500))
    assert asm.rcv_nxt == 4000 and asm.dsack == (5000, 5500) and asm.sack_blocks() == [(4500, 5500)]


def test_rfc2883_example4_single_duplicate_subsegment(assembler_impl):
    asm = assembler_impl.Assembler(65535, rcv_nxt=500)
    asm.insert(500, bytes(500))
    asm.insert(2000, bytes(500))
    assert asm.insert(1000, bytes(500)) == 500
    assert asm.dsack is None and asm.sack_blocks() == [(2000, 2500)]
    assert asm.insert(1000, bytes(1000)) == 1000
    assert asm.rcv_nxt == 2500 and asm.dsack == (1000, 1500) and asm.sack_blocks() == []


def test_rfc2883_example5_two_duplicates_reports_the_first(assembler_impl):
    asm = assembler_impl.Assembler(65535, rcv_nxt=500)
    asm.insert(500, bytes(500))
    asm.insert(3000, bytes(500))
    asm.insert(1000, bytes(500))
    asm.insert(2000, bytes(500))
    assert asm.rcv_nxt == 1500 and asm.sack_blocks() == [(2000, 2500), (3000, 3500)]
    assert asm.insert(1000, bytes(1500)) == 1000
    assert asm.rcv_nxt == 2500 and asm.dsack == (1000, 1500) and asm.sack_blocks() == [(3000, 3500)]


def test_dsack_of_held_data_partially_overlapped(assembler_impl):
    asm = assembler_impl.Assembler(1000)
    asm.insert(100, bytes(50))
    asm.insert(200, bytes(50))
    asm.insert(140, bytes(80))  # covers 140..220: duplicates 140..150 first, then 200..220
    assert asm.dsack == (140, 150)
    assert asm.sack_blocks() == [(100, 250)] and asm.ooo_bytes == 150
    asm.insert(90, bytes(5))
    assert asm.dsack is None


# -- the memory cap on ranges ------------------------------------------------


def test_max_ranges_refuses_new_ranges_but_not_merges_or_in_order(assembler_impl):
    asm = assembler_impl.Assembler(100, max_ranges=2)
    asm.insert(10, b"a")
    asm.insert(20, b"b")
    assert asm.range_count == 2 and asm.refused == 0
    assert asm.insert(30, b"c") == 0
    assert asm.refused == 1 and asm.range_count == 2 and asm.ooo_bytes == 2
    assert asm.sack_blocks() == [(20, 21), (10, 11)]
    asm.insert(11, b"a")  # touches a held range: merged, not refused
    asm.insert(19, b"b")
    assert asm.refused == 1 and asm.ooo_bytes == 4 and asm.range_count == 2
    asm.insert(25, b"x")
    assert asm.refused == 2
    assert asm.insert(0, bytes(10)) == 12  # in order is always accepted
    assert asm.range_count == 1
    asm.insert(30, b"c")
    assert asm.refused == 2 and asm.range_count == 2


def test_huge_max_ranges_is_fine(assembler_impl):
    asm = assembler_impl.Assembler(9, max_ranges=1 << 40)
    for left in (1, 3, 5, 7):
        asm.insert(left, b"x")
    assert asm.range_count == 4 and asm.refused == 0


# -- misuse -----------------------------------------------------------------------


@pytest.mark.parametrize("args, error", [
    ((0,), ValueError),
    ((-5,), ValueError),
    (((1 << 30) + 1,), ValueError),
    ((1.5,), TypeError),
    (("10",), TypeError),
    ((10, -1), ValueError),
    ((10, MOD), ValueError),
    ((10, 1.0), TypeError),
    ((10, 0, 0), ValueError),
    ((10, 0, None), TypeError),
])
def test_constructor_misuse(assembler_impl, args, error):
    with pytest.raises(error):
        assembler_impl.Assembler(*args)


def test_call_misuse(assembler_impl):
    asm = assembler_impl.Assembler(10)
    asm.insert(0, b"abc")
    with pytest.raises(ValueError, match="consume"):
        asm.consume(4)
    with pytest.raises(ValueError):
        asm.consume(-1)
    with pytest.raises(TypeError):
        asm.consume(1.0)
    with pytest.raises(TypeError):
        asm.insert("3", b"x")
    with pytest.raises(TypeError):
        asm.insert(3.0, b"x")
    with pytest.raises(ValueError):
        asm.insert(-1, b"x")
    with pytest.raises(ValueError):
        asm.insert(MOD, b"x")
    with pytest.raises(TypeError):
        asm.insert(3, "text")
    with pytest.raises(TypeError):
        asm.insert(3, 5)
    with pytest.raises(TypeError):
        asm.insert(3, memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        asm.read("1")
    with pytest.raises(TypeError):
        asm.read_into(b"read-only")
    with pytest.raises(TypeError):
        asm.sack_blocks(1.0)
    with pytest.raises(ValueError):
        asm.sack_blocks(-1)
    # Nothing above changed the state.
    assert asm.rcv_nxt == 3 and asm.read() == b"abc"


def test_facade_exports_the_selected_implementation():
    from pystack import _accel
    from pystack.storage import assembler

    assert assembler.IMPLEMENTATION == _accel.IMPLEMENTATION
    assert assembler.Assembler(4).capacity == 4
