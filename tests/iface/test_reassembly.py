"""IPv4 reassembly: every arrival order, the overlap policy, timers and limits.

The random tests check the reassembler against an obvious oracle: a bitmap
of the bytes seen plus the known total length says when the datagram must
complete, and the result must be the original payload byte for byte.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.iface.reassembly import PIECE_COST, FragmentReassembler

SRC, DST, UDP, IDENT = 0x0A000001, 0x0A000002, 17, 0x1234
T0 = 1_000_000
TIMEOUT = 30_000_000


def header(ident=IDENT, offset=0, mf=True, ihl=5, src=SRC, dst=DST, proto=UDP):
    """An IPv4 header (checksum left 0: the reassembler never reads it)."""
    flags = (0x2000 if mf else 0) | (offset // 8)
    base = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, ident, flags, 64, proto, 0,
                       src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return base + b"\x01" * (ihl * 4 - 20)  # NOP options


def fragments(payload: bytes, sizes):
    """Cut ``payload`` into fragments of the given sizes (the last takes the rest)."""
    out, offset = [], 0
    for size in sizes:
        if offset + size >= len(payload):
            break
        out.append((offset, True, payload[offset:offset + size]))
        offset += size
    out.append((offset, False, payload[offset:]))
    return out


def add(r, frag, now=T0, ident=IDENT, src=SRC, dst=DST, proto=UDP):
    offset, mf, data = frag
    return r.add(now, src, dst, proto, ident, offset, mf, data, header(ident, offset, mf, src=src, dst=dst,
                                                                       proto=proto))


def payload_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def only_nonzero(counters):
    return {k: v for k, v in counters.items() if v}


# -- arrival orders -------------------------------------------------------------


@pytest.mark.parametrize("order", ["in_order", "reversed", "middle_first"])
def test_orders(order):
    data = payload_of(4000)
    frags = fragments(data, [1480] * 3)
    assert [f[0] for f in frags] == [0, 1480, 2960]
    if order == "reversed":
        frags.reverse()
    elif order == "middle_first":
        frags = [frags[1], frags[2], frags[0]]
    r = FragmentReassembler()
    results = [add(r, f) for f in frags]
    assert results[:-1] == [None, None]
    assert results[-1] == data
    assert type(results[-1]) is bytes
    assert (r.memory, r.pending, r.poll_at()) == (0, 0, None)
    assert only_nonzero(r.counters) == {"reasm.ok": 1}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_shuffled(draw):
    n = draw.draw(st.integers(1, 3000), label="length")
    sizes = draw.draw(st.lists(st.integers(1, 64).map(lambda k: 8 * k), min_size=1, max_size=60), label="sizes")
    data = payload_of(n, n)
    frags = draw.draw(st.permutations(fragments(data, sizes)), label="order")
    if len(frags) == 1:  # a single piece is not a fragment unless it has an offset
        return
    r = FragmentReassembler()
    results = [add(r, f) for f in frags]
    assert results[-1] == data
    assert results[:-1] == [None] * (len(frags) - 1)
    assert (r.memory, r.pending) == (0, 0)


class ByteOracle:
    """The obvious reassembler: a dict of byte positions, one datagram, no limits."""

    def __init__(self):
        self.values: dict[int, int] = {}
        self.total = None
        self.dead = False
        self.results = []
        self.counters = {"reasm.ok": 0, "reasm.duplicate": 0, "reasm.overlap": 0, "reasm.after_discard": 0}

    def add(self, offset, mf, chunk):
        if self.dead:
            self.counters["reasm.after_discard"] += 1
            return None
        span = range(offset, offset + len(chunk))
        if any(self.values.get(pos, byte) != byte for pos, byte in zip(span, chunk)):
            self.counters["reasm.overlap"] += 1
            self.dead = True
            return None
        if all(pos in self.values for pos in span) and (mf or self.total == span.stop):
            self.counters["reasm.duplicate"] += 1
            return None
        self.values.update(zip(span, chunk))
        if not mf:
            self.total = span.stop
        if self.total is not None and all(pos in self.values for pos in range(self.total)):
            result = bytes(self.values[pos] for pos in range(self.total))
            self.counters["reasm.ok"] += 1
            self.values, self.total = {}, None
            return result
        return None


def check_against_oracle(sequence):
    """Feed ``sequence`` to both; every answer and counter must agree.  Returns the results."""
    r, oracle = FragmentReassembler(), ByteOracle()
    results = []
    for frag in sequence:
        result = add(r, frag)
        assert result == oracle.add(*frag)
        if result is not None:
            results.append(result)
    assert {k: r.counters[k] for k in oracle.counters} == oracle.counters
    assert only_nonzero(r.counters).keys() <= oracle.counters.keys()
    return r, results


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_identical_overlaps_and_duplicates_against_oracle(draw):
    """Two fragmentations of one datagram, mixed and repeated: bytes identical wherever they overlap."""
    n = draw.draw(st.integers(9, 2000), label="length")
    data = payload_of(n, n + 1)
    cut = st.lists(st.integers(1, min(40, (n - 1) // 8)).map(lambda k: 8 * k), min_size=1, max_size=40)
    pool = fragments(data, draw.draw(cut, label="a")) + fragments(data, draw.draw(cut, label="b"))
    pool = [f for f in pool if f[0] or f[1]]  # drop a whole-datagram "fragment"
    sequence = draw.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=80), label="sequence")
    sequence += draw.draw(st.permutations(pool), label="rest")  # every piece eventually arrives
    r, results = check_against_oracle(sequence)
    assert results and all(result == data for result in results)
    assert r.counters["reasm.overlap"] == 0


def test_exact_duplicate_counted_and_ignored():
    data = payload_of(100)
    first, last = fragments(data, [48])
    r = FragmentReassembler()
    assert add(r, first) is None
    memory = r.memory
    assert add(r, first, now=T0 + 5) is None
    assert r.counters["reasm.duplicate"] == 1
    assert r.memory == memory
    assert add(r, last, now=T0 + 5) == data


def test_partial_identical_overlap_accepted():
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:24])) is None
    assert add(r, (16, True, data[16:40])) is None  # overlaps 16..24, same bytes
    assert r.memory == 40 + 2 * PIECE_COST + 20  # only the new 16 bytes were stored
    assert add(r, (8, False, data[8:])) == data  # covers everything seen so far, adds the tail
    assert r.counters["reasm.overlap"] == 0


# -- conflicting overlaps -------------------------------------------------------


def test_conflicting_overlap_discards_datagram_and_later_fragments():
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:32])) is None
    forged = bytearray(data[24:48])
    forged[3] ^= 0xFF  # byte 27, inside the overlap with [0, 32)
    assert add(r, (24, True, bytes(forged))) is None
    assert r.counters["reasm.overlap"] == 1
    assert (r.memory, r.pending) == (0, 0)
    # RFC 5722 §4: fragments not yet received are discarded too, silently.
    assert add(r, (32, False, data[32:])) is None
    assert add(r, (0, True, data[:32])) is None
    assert r.counters["reasm.after_discard"] == 2
    assert r.poll_at() == T0 + TIMEOUT
    assert r.expire(T0 + TIMEOUT) == []  # no ICMP for a discarded datagram
    assert r.counters["reasm.timeout"] == 0
    assert r.poll_at() is None
    # The key is free again once the discarded datagram's timer ended.
    assert add(r, (32, False, data[32:]), now=T0 + TIMEOUT) is None
    assert add(r, (0, True, data[:32]), now=T0 + TIMEOUT) == data


def test_conflict_beyond_the_overlap_is_not_an_overlap():
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:32])) is None
    assert add(r, (32, False, data[32:])) == data  # adjacent, not overlapping
    assert r.counters["reasm.overlap"] == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_conflicting_fragment_against_oracle(draw):
    """A forged fragment among genuine ones: discarded exactly when it meets different bytes."""
    n = draw.draw(st.integers(17, 1500), label="length")
    data = payload_of(n, 7 * n)
    sizes = draw.draw(st.lists(st.integers(1, min(30, (n - 1) // 8)).map(lambda k: 8 * k), min_size=1,
                               max_size=30), label="sizes")
    genuine = fragments(data, sizes)
    start = draw.draw(st.integers(0, (n - 1) // 8), label="start") * 8
    length = draw.draw(st.integers(1, n - start), label="len")
    mf = start + length < n
    if mf:
        length -= length % 8
        if length == 0:  # too short for a non-last fragment: make it the last one
            mf, length = False, n - start
    if start == 0 and not mf:
        mf, length = True, n - n % 8 if n % 8 else n - 8
    flip = draw.draw(st.integers(0, length - 1), label="flip")
    forged = bytearray(data[start:start + length])
    forged[flip] ^= draw.draw(st.integers(1, 255), label="xor")
    forged_frag = (start, mf, bytes(forged))
    sequence = draw.draw(st.permutations(genuine + [forged_frag]), label="order")
    sequence = [f for f in sequence if f[0] or f[1]]
    r, results = check_against_oracle(sequence)
    overlay = data[:start] + bytes(forged) + data[start + length:]
    assert all(result in (data, overlay) for result in results)
    # Forged after the genuine fragment it contradicts, while the datagram is open: discarded.
    position = sequence.index(forged_frag)
    victim = next((i for i, (o, _, c) in enumerate(sequence) if o <= start + flip < o + len(c) and i != position),
                  None)
    if victim is not None and victim < position and not results:
        assert r.counters["reasm.overlap"] == 1


# -- inconsistent lengths and bad fragments -------------------------------------


def test_two_last_fragments_disagree():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (48, False, data[48:])) is None
    assert add(r, (48, False, data[48:96])) is None  # a second end, at 96 instead of 100
    assert r.counters["reasm.inconsistent"] == 1
    assert (r.memory, r.pending) == (0, 0)


def test_last_fragment_before_data_already_seen():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (48, True, data[48:96])) is None
    assert add(r, (8, False, data[8:48])) is None  # claims the end is 48, but 96 was seen
    assert r.counters["reasm.inconsistent"] == 1


def test_more_fragments_past_the_known_end():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (48, False, data[48:])) is None
    assert add(r, (96, True, payload_of(8))) is None
    assert r.counters["reasm.inconsistent"] == 1


def test_repeated_last_fragment_sets_nothing_new():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (48, False, data[48:])) is None
    assert add(r, (48, False, data[48:])) is None
    assert r.counters["reasm.duplicate"] == 1
    assert add(r, (0, True, data[:48])) == data


def test_covered_last_fragment_still_fixes_the_end():
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:32])) is None
    assert add(r, (32, True, data[32:])) is None  # all bytes here, the end unknown
    assert add(r, (56, False, data[56:])) == data


@pytest.mark.parametrize("size", [7, 12, 1001])
def test_more_fragments_length_not_multiple_of_8(size):
    r = FragmentReassembler()
    assert add(r, (0, True, payload_of(size))) is None
    assert r.counters["reasm.bad_length"] == 1
    assert r.pending == 0


def test_empty_fragments_dropped():
    r = FragmentReassembler()
    assert add(r, (8, True, b"")) is None
    assert add(r, (8, False, b"")) is None
    assert r.counters["reasm.bad_length"] == 2
    assert r.pending == 0


def test_odd_last_fragment_is_fine():
    data = payload_of(13)
    r = FragmentReassembler()
    assert add(r, (8, False, data[8:])) is None
    assert add(r, (0, True, data[:8])) == data


# -- too big --------------------------------------------------------------------


def test_ping_of_death():
    r = FragmentReassembler()
    assert add(r, (65528, False, payload_of(8))) is None  # 20 + 65536 > 65535
    assert r.counters["reasm.too_big"] == 1
    assert r.pending == 0


def test_largest_datagram_fits():
    data = payload_of(65535 - 20)
    frags = fragments(data, [8000] * 9)
    r = FragmentReassembler()
    results = [add(r, f) for f in reversed(frags)]
    assert results[-1] == data


def test_too_big_discards_the_datagram_it_joins():
    r = FragmentReassembler(max_datagram=576)
    assert add(r, (0, True, payload_of(64))) is None
    assert add(r, (552, False, payload_of(8))) is None  # 20 + 560 > 576
    assert r.counters["reasm.too_big"] == 1
    assert (r.memory, r.pending) == (0, 0)
    assert add(r, (64, True, payload_of(8))) is None
    assert r.counters["reasm.after_discard"] == 1


def test_too_big_counts_fragment_zero_header():
    """Options in fragment zero's header count against the limit (RFC 791 §3.1)."""
    r = FragmentReassembler(max_datagram=576)
    assert add(r, (544, False, payload_of(12))) is None  # 20 + 556 fits
    offset, mf, chunk = 0, True, payload_of(8)
    assert r.add(T0, SRC, DST, UDP, IDENT, offset, mf, chunk, header(ihl=15)) is None  # 60 + 556 does not
    assert r.counters["reasm.too_big"] == 1


# -- timers ---------------------------------------------------------------------


def test_timeout_with_fragment_zero_quotes_header_and_8_bytes():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:48]), now=T0) is None
    assert add(r, (48, True, data[48:96]), now=T0 + 10) is None  # does not restart the timer
    assert r.poll_at() == T0 + TIMEOUT
    assert r.expire(T0 + TIMEOUT - 1) == []
    assert r.pending == 1
    assert r.expire(T0 + TIMEOUT) == [header(offset=0, mf=True) + data[:8]]
    assert r.counters["reasm.timeout"] == 1
    assert (r.memory, r.pending, r.poll_at()) == (0, 0, None)


def test_timeout_without_fragment_zero_quotes_nothing():
    data = payload_of(100)
    r = FragmentReassembler()
    assert add(r, (48, False, data[48:])) is None
    assert r.expire(T0 + TIMEOUT) == []
    assert r.counters["reasm.timeout"] == 1
    assert r.pending == 0


def test_quote_from_split_pieces():
    """Fragment zero arrives after a fragment that covered part of its first 8 bytes."""
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (8, True, data[8:16])) is None
    assert add(r, (0, True, data[:24])) is None  # stored as pieces [0, 8) and [16, 24)
    [quote] = r.expire(T0 + TIMEOUT)
    assert quote == header() + data[:8]


def test_missing_piece_never_completes():
    data = payload_of(4000)
    frags = fragments(data, [1480] * 3)
    r = FragmentReassembler()
    for f in (frags[0], frags[2], frags[0], frags[2]):
        assert add(r, f) is None
    assert r.pending == 1
    assert len(r.expire(T0 + TIMEOUT)) == 1


def test_expiry_inside_add_is_kept_for_expire():
    data = payload_of(64)
    r = FragmentReassembler()
    assert add(r, (0, True, data[:32]), now=T0) is None
    # expire() was not called in time: the late fragment starts a new datagram.
    assert add(r, (32, False, data[32:]), now=T0 + TIMEOUT + 5) is None
    assert r.poll_at() == T0 + TIMEOUT  # the quote is overdue
    assert r.expire(T0 + TIMEOUT + 5) == [header() + data[:8]]
    assert r.poll_at() == T0 + 2 * TIMEOUT + 5


def test_poll_at_is_the_oldest_deadline():
    r = FragmentReassembler(timeout=1000)
    assert r.poll_at() is None
    add(r, (8, False, payload_of(8)), now=10, ident=1)
    add(r, (8, False, payload_of(8)), now=20, ident=2)
    assert r.poll_at() == 1010
    assert r.expire(1010) == []
    assert r.poll_at() == 1020
    assert add(r, (0, True, payload_of(8)), now=1015, ident=2) is not None
    assert r.poll_at() is None


# -- limits ---------------------------------------------------------------------


def test_memory_cap_evicts_the_oldest():
    cost = 800 + PIECE_COST + 20  # one fragment zero of 800 bytes
    tail = 200 + PIECE_COST
    r = FragmentReassembler(memory_limit=2 * cost + tail)
    a, b, c = payload_of(1000, 1), payload_of(1000, 2), payload_of(1000, 3)
    assert add(r, (0, True, a[:800]), now=T0, ident=1) is None
    assert add(r, (0, True, b[:800]), now=T0 + 1, ident=2) is None
    assert r.memory == 2 * cost
    assert r.counters["reasm.evicted"] == 0
    assert add(r, (0, True, c[:800]), now=T0 + 2, ident=3) is None
    assert r.counters["reasm.evicted"] == 1
    assert (r.memory, r.pending) == (2 * cost, 2)
    assert add(r, (800, False, b[800:]), now=T0 + 3, ident=2) == b
    assert add(r, (800, False, c[800:]), now=T0 + 3, ident=3) == c
    assert add(r, (800, False, a[800:]), now=T0 + 3, ident=1) is None  # ident 1 was evicted
    assert r.memory <= r.memory_limit


def test_memory_cap_spares_the_datagram_being_filled():
    cost = 800 + PIECE_COST + 20
    r = FragmentReassembler(memory_limit=2 * cost + 100)
    a, b = payload_of(1000, 1), payload_of(1000, 2)
    assert add(r, (0, True, a[:800]), now=T0, ident=1) is None
    assert add(r, (0, True, b[:800]), now=T0 + 1, ident=2) is None
    assert add(r, (800, False, a[800:]), now=T0 + 2, ident=1) == a  # the oldest, yet ident 2 goes
    assert r.counters["reasm.evicted"] == 1
    assert (r.memory, r.pending) == (0, 0)


def test_memory_cap_a_datagram_alone_too_large():
    r = FragmentReassembler(memory_limit=1000)
    assert add(r, (0, True, payload_of(400)), ident=1) is None
    assert add(r, (0, True, payload_of(504)), ident=2) is None
    assert r.pending == 1  # ident 1 made room
    assert add(r, (504, True, payload_of(504)), ident=2) is None  # ident 2 alone exceeds 1000
    assert r.counters["reasm.evicted"] == 2
    assert (r.memory, r.pending) == (0, 0)
    assert add(r, (0, True, payload_of(2000)), ident=3) is None
    assert r.counters["reasm.evicted"] == 3
    assert (r.memory, r.pending) == (0, 0)


def test_tiny_fragments_are_charged_for_their_pieces():
    r = FragmentReassembler(memory_limit=100 * (8 + PIECE_COST))
    for k in range(1, 400, 2):  # every other 8-byte block: no two pieces merge
        add(r, (8 * k, True, payload_of(8, k)), now=T0 + k)
        assert r.memory <= r.memory_limit
    assert r.counters["reasm.evicted"] == 1  # the only datagram, once over the limit


def test_max_datagrams_evicts_the_oldest():
    r = FragmentReassembler(max_datagrams=2)
    data = {i: payload_of(64, i) for i in (1, 2, 3)}
    for i in (1, 2, 3):
        assert add(r, (32, False, data[i][32:]), now=T0 + i, ident=i) is None
    assert r.pending == 2
    assert r.counters["reasm.evicted"] == 1
    assert r.poll_at() == T0 + 2 + TIMEOUT
    assert add(r, (0, True, data[3][:32]), ident=3, now=T0 + 4) == data[3]
    assert add(r, (0, True, data[2][:32]), ident=2, now=T0 + 4) == data[2]
    assert add(r, (0, True, data[1][:32]), ident=1, now=T0 + 4) is None


def test_tombstones_hold_slots_but_are_evicted_silently():
    r = FragmentReassembler(max_datagrams=1)
    data = payload_of(64)
    add(r, (0, True, data[:32]), ident=1)
    add(r, (0, True, b"x" * 32), ident=1)  # conflict: ident 1 becomes a tombstone
    assert r.pending == 0
    assert add(r, (32, False, data[32:]), ident=2) is None
    assert add(r, (0, True, data[:32]), ident=2) == data
    assert r.counters["reasm.evicted"] == 0


# -- keys, interleaving, copies ------------------------------------------------------


def test_interleaved_datagrams_by_key():
    """(src, dst, proto, ident) tell datagrams apart (RFC 791 §3.2)."""
    keys = [dict(ident=1), dict(ident=2), dict(ident=1, src=SRC + 1), dict(ident=1, dst=DST + 1),
            dict(ident=1, proto=6)]
    datas = [payload_of(3000, i) for i in range(len(keys))]
    streams = [fragments(d, [1000, 1000]) for d in datas]
    r = FragmentReassembler()
    done = {}
    rng = random.Random(5)
    order = [(i, j) for i in range(len(keys)) for j in range(3)]
    rng.shuffle(order)
    for step, (i, j) in enumerate(order):
        result = add(r, streams[i][j], now=T0 + step, **keys[i])
        if result is not None:
            done[i] = result
    assert done == dict(enumerate(datas))
    assert (r.memory, r.pending) == (0, 0)


def test_copies_what_it_keeps():
    data = payload_of(64)
    buf = bytearray(data[:32])
    hdr = bytearray(header())
    r = FragmentReassembler()
    assert r.add(T0, SRC, DST, UDP, IDENT, 0, True, memoryview(buf), hdr) is None
    buf[:] = bytes(32)
    hdr[:] = bytes(20)
    assert add(r, (32, True, data[32:56])) is None
    assert r.expire(T0 + TIMEOUT) == [header() + data[:8]]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_traffic_within_limits(draw):
    """Many datagrams, small limits, random order and time: never a wrong byte, never over a limit."""
    r = FragmentReassembler(timeout=draw.draw(st.integers(1, 50), label="timeout"),
                            memory_limit=draw.draw(st.integers(500, 5000), label="memory_limit"),
                            max_datagrams=draw.draw(st.integers(1, 4), label="max_datagrams"))
    originals = {}
    pool = []
    for ident in range(draw.draw(st.integers(1, 6), label="datagrams")):
        n = draw.draw(st.integers(9, 600), label="n")
        originals[ident] = payload_of(n, ident * 1000 + n)
        sizes = draw.draw(st.lists(st.integers(1, min(20, (n - 1) // 8)).map(lambda k: 8 * k), min_size=1,
                                   max_size=10))
        pool += [(ident, f) for f in fragments(originals[ident], sizes) if f[0] or f[1]]
    quotes = {header(ident) + data[:8] for ident, data in originals.items()}
    actions = st.one_of(st.sampled_from(pool), st.just("expire"))
    steps = draw.draw(st.lists(st.tuples(actions, st.integers(0, 5)), max_size=100), label="steps")
    now = T0
    for action, dt in steps:
        now += dt
        if action == "expire":
            assert set(r.expire(now)) <= quotes
            assert r.poll_at() is None or r.poll_at() > now
        else:
            ident, frag = action
            result = add(r, frag, now=now, ident=ident)
            assert result is None or result == originals[ident]
        assert r.memory <= r.memory_limit
        assert r.pending <= r.max_datagrams
        if r.pending == 0:
            assert r.memory == 0
    r.expire(now + r.timeout)
    assert (r.memory, r.pending, r.poll_at()) == (0, 0, None)


# -- caller misuse ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc", [
    (dict(frag_offset=12), ValueError),  # not a multiple of 8
    (dict(frag_offset=65536), ValueError),
    (dict(frag_offset=0, more_fragments=False), ValueError),  # not a fragment
    (dict(more_fragments=1), TypeError),
    (dict(src=-1), ValueError),
    (dict(src=1 << 32), ValueError),
    (dict(proto=256), ValueError),
    (dict(ident=65536), ValueError),
    (dict(ident=1.0), TypeError),
    (dict(payload="text"), TypeError),
    (dict(header=bytes(19)), ValueError),
    (dict(header=bytes(22)), ValueError),
    (dict(header=bytes(64)), ValueError),
    (dict(now=1.5), TypeError),
])
def test_misuse(kwargs, exc):
    args = dict(now=T0, src=SRC, dst=DST, proto=UDP, ident=IDENT, frag_offset=8, more_fragments=True,
                payload=bytes(8), header=header())
    args.update(kwargs)
    r = FragmentReassembler()
    with pytest.raises(exc):
        r.add(**args)
    assert r.pending == 0


def test_time_must_not_go_backwards():
    r = FragmentReassembler()
    add(r, (8, False, bytes(8)), now=T0)
    with pytest.raises(ValueError, match="backwards"):
        r.expire(T0 - 1)
    with pytest.raises(ValueError, match="backwards"):
        add(r, (0, True, bytes(8)), now=T0 - 1)
    assert r.pending == 1


@pytest.mark.parametrize("kwargs", [dict(timeout=0), dict(max_datagram=65536), dict(memory_limit=0),
                                    dict(max_datagrams=0), dict(timeout=1.0)])
def test_bad_configuration(kwargs):
    with pytest.raises((ValueError, TypeError)):
        FragmentReassembler(**kwargs)
