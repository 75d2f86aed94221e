"""FaultInjector: each fault at its configured rate, replay by seed, time through poll_at.

Rates are checked over 10,000 frames with a fixed seed.  The tolerance is
5 standard deviations of the count (binomial: sqrt(n p (1 - p))): a correct
injector lands outside it with probability below 1e-6 for a random seed, so
the bound is not tuned to the one seed used, while an injector off by even
a fifth of the rate (p=0.1: 200 frames, 6.7 sigma) fails.
"""

from __future__ import annotations

import math
import struct

import pytest

from pystack.phy.device import Device, Wrapper
from pystack.phy.fault_injector import FaultConfig, FaultCounters, FaultInjector, parse_impairment
from pystack.phy.pipe import Pipe

N = 10_000
SIGMAS = 5


def binomial_tolerance(n: int, p: float) -> float:
    return SIGMAS * math.sqrt(n * p * (1 - p))


def assert_rate(count: int, n: int, p: float) -> None:
    tol = binomial_tolerance(n, p)
    assert abs(count - n * p) <= tol, f"{count} of {n}, expected {n * p:.0f} +- {tol:.0f} (p={p})"


def frame(i: int, size: int = 64) -> bytes:
    return struct.pack("!I", i) + bytes(size - 4)


def index(f) -> int:
    return struct.unpack_from("!I", f)[0]


class Harness:
    """One FaultInjector over a Pipe, fed one frame every ``spacing`` µs in ``direction``.

    ``out`` collects (release time, frame) in delivery order; time only
    moves to the send times and to the instants ``poll_at`` reports.
    """

    def __init__(self, direction: str, config: FaultConfig, seed: int = 1, other: FaultConfig | None = None):
        self.direction = direction
        self.pipe = Pipe(mtu=9000)
        configs = {"rx": config, "tx": other} if direction == "rx" else {"rx": other, "tx": config}
        self.inj = FaultInjector(self.pipe.a, seed=seed, **configs)
        self.out: list[tuple[int, bytes]] = []

    @property
    def counters(self) -> FaultCounters:
        return self.inj.rx_counters if self.direction == "rx" else self.inj.tx_counters

    def _collect(self, now: int) -> None:
        got = self.inj.receive(now)
        if self.direction == "tx":
            got = self.pipe.b.receive(now)
        self.out.extend((now, bytes(f)) for f in got)

    def advance(self, until: int) -> None:
        """Deliver everything released at or before ``until``, each at its own instant."""
        for _ in range(10 * N):
            due = self.inj.poll_at()
            if due is None or due > until:
                return
            self._collect(due)
        raise AssertionError("poll_at never moved past its frames")

    def send(self, frames, now: int) -> None:
        self.advance(now)
        if self.direction == "rx":
            self.pipe.b.transmit(frames, now)
        else:
            assert self.inj.transmit(frames, now) == len(frames)
        self._collect(now)

    def run(self, n: int = N, spacing: int = 100, size: int = 64) -> "Harness":
        for i in range(n):
            self.send([frame(i, size)], i * spacing)
        self.advance(math.inf)
        assert self.inj.poll_at() is None
        return self

    def indices(self) -> list[int]:
        return [index(f) for _, f in self.out]


directions = pytest.mark.parametrize("direction", ["rx", "tx"])


def dropped(c: FaultCounters) -> int:
    return c.dropped_loss + c.dropped_burst + c.dropped_rate + c.dropped_size


def check_invariant(h: Harness) -> None:
    c = h.counters
    assert c.seen + c.duplicated == c.passed + dropped(c)
    assert c.passed == len(h.out)


# -- configuration ------------------------------------------------------------

def test_default_config_is_noop_and_frames_pass_untouched():
    pipe = Pipe()
    inj = FaultInjector(pipe.a)
    assert FaultConfig().is_noop and isinstance(inj, Device)
    sent = [frame(i) for i in range(5)]
    pipe.b.transmit(sent, 0)
    assert inj.receive(0) == sent
    assert inj.transmit(sent, 0) == 5
    assert pipe.b.receive(0) == sent
    assert inj.rx_counters == FaultCounters(seen=5, passed=5)
    assert inj.tx_counters == FaultCounters(seen=5, passed=5)
    assert inj.poll_at() is None


@pytest.mark.parametrize("kwargs, words", [
    ({"loss": 1.5}, "loss must be a probability"),
    ({"loss": -0.1}, "loss must be a probability"),
    ({"corrupt": float("nan")}, "corrupt must be a probability"),
    ({"duplicate": True}, "duplicate must be a probability"),
    ({"delay": -1}, "delay must be an int >= 0"),
    ({"jitter": 2.5}, "jitter must be an int"),
    ({"rate": "fast"}, "rate must be an int"),
    ({"burst_enter": 0.1}, "needs burst_exit > 0"),
    ({"reorder": 0.1, "reorder_delay": 0}, "needs reorder_delay > 0"),
])
def test_config_rejects_bad_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        FaultConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        FaultConfig().loss = 0.5


# -- rates --------------------------------------------------------------------

@directions
def test_loss_rate(direction):
    h = Harness(direction, FaultConfig(loss=0.1)).run()
    assert_rate(h.counters.dropped_loss, N, 0.1)
    assert h.counters.dropped_loss == N - len(h.out)
    assert h.indices() == sorted(h.indices())
    check_invariant(h)


@directions
def test_burst_loss_follows_the_gilbert_chain(direction):
    # Loss fraction and mean burst length of a two-state Markov chain.  Its
    # losses are correlated, so the fraction's variance is the binomial one
    # times (1 + lam) / (1 - lam), lam = 1 - enter - exit the chain's second
    # eigenvalue; 50,000 frames keep 5 sigma near a tenth of the mean.
    enter, exit_, n = 0.05, 0.25, 50_000
    h = Harness(direction, FaultConfig(burst_enter=enter, burst_exit=exit_)).run(n=n, spacing=10)
    pi = enter / (enter + exit_)
    lam = 1 - enter - exit_
    lost = h.counters.dropped_burst
    tol = SIGMAS * math.sqrt(n * pi * (1 - pi) * (1 + lam) / (1 - lam))
    assert abs(lost - n * pi) <= tol, (lost, n * pi, tol)
    # Bursts: runs of missing indices.  Length is geometric with mean
    # 1/exit and sd sqrt(1 - exit)/exit per burst.
    got = set(h.indices())
    runs, length = [], 0
    for i in range(n):
        if i in got:
            if length:
                runs.append(length)
            length = 0
        else:
            length += 1
    mean = sum(runs) / len(runs)
    tol = SIGMAS * math.sqrt(1 - exit_) / exit_ / math.sqrt(len(runs))
    assert abs(mean - 1 / exit_) <= tol, (mean, tol)
    # Independent loss at the same rate would give runs of mean 1/(1 - pi) = 1.2.
    assert mean > 2
    check_invariant(h)


@directions
def test_duplicate_rate_and_placement(direction):
    h = Harness(direction, FaultConfig(duplicate=0.05)).run()
    dups = h.counters.duplicated
    assert_rate(dups, N, 0.05)
    idx = h.indices()
    assert len(idx) == N + dups
    # A duplicate follows its original at once; nothing else changes.
    assert sorted(set(idx)) == list(range(N))
    assert sum(1 for a, b in zip(idx, idx[1:]) if a == b) == dups
    check_invariant(h)


@directions
def test_corruption_rate_and_exactly_one_bit(direction):
    h = Harness(direction, FaultConfig(corrupt=0.02)).run()
    assert len(h.out) == N
    flipped = 0
    for i, (_, got) in enumerate(h.out):
        want = frame(i)
        bits = sum(bin(a ^ b).count("1") for a, b in zip(got, want))
        assert len(got) == len(want) and bits in (0, 1)
        flipped += bits
    assert flipped == h.counters.corrupted
    assert_rate(flipped, N, 0.02)


def test_corruption_spreads_over_the_whole_frame():
    h = Harness("rx", FaultConfig(corrupt=1.0)).run(n=4000, size=64)
    hit = set()
    for i, (_, got) in enumerate(h.out):
        diff = [k for k, (a, b) in enumerate(zip(got, frame(i))) if a != b]
        assert len(diff) == 1 and bin(got[diff[0]] ^ frame(i)[diff[0]]).count("1") == 1
        hit.add((diff[0], got[diff[0]] ^ frame(i)[diff[0]]))
    # 512 (byte, bit) places, 4000 draws: each is missed with probability (511/512)**4000 ~ 4e-4.
    assert len(hit) == 64 * 8


@directions
def test_reorder_rate_and_overtaking(direction):
    # A frame every 100 µs, a reordered one held 250 µs more: the next two overtake it.
    cfg = FaultConfig(reorder=0.05, reorder_delay=250)
    h = Harness(direction, cfg).run()
    assert_rate(h.counters.reordered, N, 0.05)
    idx = h.indices()
    assert sorted(idx) == list(range(N))
    late = [i for pos, i in enumerate(idx) if pos > 0 and i < idx[pos - 1]]
    assert late, "nothing was overtaken"
    released = {index(f): t for t, f in h.out}
    for i in range(N):
        # Every frame leaves when sent, or exactly reorder_delay later.
        assert released[i] - i * 100 in (0, 250)
    assert sum(1 for i in range(N) if released[i] != i * 100) == h.counters.reordered
    check_invariant(h)


@directions
def test_mtu_drops_larger_frames(direction):
    h = Harness(direction, FaultConfig(mtu=1000))
    for i, size in enumerate([1014, 1015, 64, 1500]):
        h.send([frame(i, size)], i)
    assert h.indices() == [0, 2]
    assert h.counters.dropped_size == 2


# -- time: delay, jitter, reorder through poll_at ------------------------------

@directions
def test_delay_and_jitter_are_seen_through_poll_at(direction):
    delay, jitter, spacing = 2000, 500, 1000
    h = Harness(direction, FaultConfig(delay=delay, jitter=jitter))
    h.send([frame(0)], 0)
    assert h.out == []
    due = h.inj.poll_at()
    assert delay - jitter <= due <= delay + jitter
    h._collect(due - 1)
    assert h.out == []
    h._collect(due)
    assert h.indices() == [0]
    assert h.inj.poll_at() is None

    h = Harness(direction, FaultConfig(delay=delay, jitter=jitter)).run(spacing=spacing)
    assert h.indices() == list(range(N))
    delays = [t - index(f) * spacing for t, f in h.out]
    assert min(delays) >= delay - jitter and max(delays) <= delay + jitter
    # Spacing > 2 * jitter, so order never clamps a delay: they are uniform
    # on the 1001 integers in [1500, 2500], sd 289 µs each.
    mean = sum(delays) / N
    assert abs(mean - delay) <= SIGMAS * 289 / math.sqrt(N)
    assert min(delays) < delay - 0.9 * jitter and max(delays) > delay + 0.9 * jitter
    assert h.counters.delayed == N


@directions
def test_jitter_never_reorders(direction):
    # Frames 100 µs apart, jitter +-500: without the order rule they would cross.
    h = Harness(direction, FaultConfig(delay=1000, jitter=500)).run(n=2000, spacing=100)
    assert h.indices() == list(range(2000))
    times = [t for t, _ in h.out]
    assert times == sorted(times)
    delays = [t - index(f) * 100 for t, f in h.out]
    assert min(delays) >= 500 and max(delays) <= 1500
    # Waiting behind a slower frame skews delays upward: the mean is ~1185
    # µs, where unclamped uniform delays would average 1000 +- 16 (5 sigma).
    assert sum(delays) / len(delays) > 1100


def test_jitter_below_zero_clamps_to_no_delay():
    h = Harness("rx", FaultConfig(delay=100, jitter=300)).run(n=2000, spacing=1000)
    delays = [t - index(f) * 1000 for t, f in h.out]
    assert min(delays) == 0 and max(delays) <= 400
    assert h.counters.delayed < 2000


def test_delayed_tx_frames_go_out_on_receive_or_transmit_and_poll_at_covers_both_directions():
    pipe = Pipe()
    inj = FaultInjector(pipe.a, rx=FaultConfig(delay=300), tx=FaultConfig(delay=100), seed=3)
    inj.transmit([b"t1" * 30], 0)
    pipe.b.transmit([b"r1" * 30], 0)
    assert inj.receive(0) == []
    assert inj.poll_at() == 100
    assert pipe.b.receive(100) == []
    assert inj.receive(100) == []            # releases the tx frame into the pipe
    assert pipe.b.receive(100) == [b"t1" * 30]
    assert inj.poll_at() == 300
    inj.transmit([b"t2" * 30], 250)
    assert inj.transmit([b"t3" * 30], 350) == 1   # t2 leaves first, on this call
    assert pipe.b.receive(350) == [b"t2" * 30]
    assert inj.receive(350) == [b"r1" * 30]
    assert inj.poll_at() == 450
    assert inj.held == (0, 1)


# -- rate limit -----------------------------------------------------------------

@directions
def test_rate_limit_throughput(direction):
    rate, burst, size = 1_000_000, 3000, 1000
    # Offered 2 MB/s (a 1000-byte frame every 500 µs) for one second.
    h = Harness(direction, FaultConfig(rate=rate, burst=burst, queue_limit=10**9)).run(
        n=2000, spacing=500, size=size)
    times = [t for t, _ in h.out]
    for horizon in (100_000, 500_000, 1_000_000):
        sent = size * sum(1 for t in times if t <= horizon)
        assert rate * horizon // 10**6 - size <= sent <= burst + rate * horizon // 10**6, horizon
    # Saturated, the link sends one 1000-byte frame per millisecond exactly.
    gaps = {b - a for a, b in zip(times[10:], times[11:])}
    assert gaps == {1000}
    assert h.indices() == list(range(2000)) and h.counters.dropped_rate == 0


@directions
def test_rate_limit_queue_overflow_drops(direction):
    rate, limit = 1_000_000, 10_000
    h = Harness(direction, FaultConfig(rate=rate, burst=1000, queue_limit=limit)).run(
        n=2000, spacing=500, size=1000)
    c = h.counters
    # The link carries ~1000 of the 2000 frames in 1 s; the rest overflow the queue.
    assert 990 <= len(h.out) <= 1012
    assert c.dropped_rate == 2000 - len(h.out)
    # No frame waits longer than the queue drains: limit / rate = 10 ms.
    waits = [t - index(f) * 500 for t, f in h.out]
    assert max(waits) <= limit * 10**6 // rate
    check_invariant(h)


def test_rate_without_queue_is_a_policer():
    h = Harness("rx", FaultConfig(rate=1_000_000, burst=2000, queue_limit=0)).run(
        n=1000, spacing=500, size=1000)
    assert all(t == index(f) * 500 for t, f in h.out)
    assert 495 <= len(h.out) <= 505


def test_idle_link_saves_up_only_one_burst():
    h = Harness("rx", FaultConfig(rate=1_000_000, burst=3000))
    h.send([frame(i, 1000) for i in range(6)], 0)
    h.advance(10_000_000)
    h.send([frame(i, 1000) for i in range(6, 12)], 10_000_000)
    h.advance(math.inf)
    times = [t for t, _ in h.out]
    # A full bucket (3000 bytes) sends three at once; then one per millisecond.
    assert times[:6] == [0, 0, 0, 1000, 2000, 3000]
    assert [t - 10_000_000 for t in times[6:]] == [0, 0, 0, 1000, 2000, 3000]


def test_frame_longer_than_burst_still_leaves():
    h = Harness("rx", FaultConfig(rate=1000, burst=0)).run(n=3, spacing=0, size=100)
    assert [t for t, _ in h.out] == [0, 100_000, 200_000]


# -- replay and independence ----------------------------------------------------

MIX = FaultConfig(loss=0.05, burst_enter=0.01, burst_exit=0.3, duplicate=0.03, reorder=0.05,
                  reorder_delay=700, corrupt=0.02, delay=500, jitter=200, rate=800_000, burst=4000,
                  queue_limit=20_000)


@directions
def test_same_seed_same_frames_and_counters(direction):
    one = Harness(direction, MIX, seed=7).run(n=3000)
    two = Harness(direction, MIX, seed=7).run(n=3000)
    assert one.out == two.out
    assert one.counters == two.counters
    other = Harness(direction, MIX, seed=8).run(n=3000)
    assert other.out != one.out
    assert other.counters != one.counters
    check_invariant(one)


def test_directions_are_independent():
    base = Harness("rx", MIX, seed=5).run(n=2000)
    assert base.inj.tx_counters == FaultCounters()
    # The same rx run with heavy tx faults and traffic interleaved gives the same rx output.
    busy = Harness("rx", MIX, seed=5, other=FaultConfig(loss=0.5, corrupt=0.5, delay=50))
    for i in range(2000):
        busy.send([frame(i)], i * 100)
        busy.inj.transmit([frame(i)], i * 100)
    busy.advance(math.inf)
    assert busy.out == base.out and busy.counters == base.counters
    assert busy.inj.tx_counters.dropped_loss > 0
    # And rx-only faults leave tx alone.
    h = Harness("tx", FaultConfig(), other=FaultConfig(loss=1.0)).run(n=500)
    assert h.indices() == list(range(500))


# -- transmit back-pressure -------------------------------------------------------

def test_frames_the_inner_device_refuses_wait_in_order():
    pipe = Pipe(capacity=4)
    inj = FaultInjector(pipe.a, tx=FaultConfig(duplicate=1.0), seed=1)
    assert inj.transmit([frame(0), frame(1), frame(2)], 0) == 3   # 6 copies, 4 fit
    assert inj.held == (0, 2)
    assert inj.transmit([frame(3)], 0) == 0                      # backlog still stuck
    assert [index(f) for f in pipe.b.receive(0)] == [0, 0, 1, 1]
    assert inj.transmit([frame(3)], 1) == 1
    assert [index(f) for f in pipe.b.receive(1)] == [2, 2, 3, 3]
    assert inj.tx_counters.passed == 8 and inj.held == (0, 0)


def test_backlog_copies_caller_buffers():
    pipe = Pipe(capacity=1)
    inj = FaultInjector(pipe.a, tx=FaultConfig(delay=0, duplicate=1.0), seed=1)
    buf = bytearray(frame(1))
    assert inj.transmit([buf], 0) == 1
    buf[:] = bytes(len(buf))
    assert pipe.b.receive(0) == [frame(1)]
    inj.receive(1)
    assert pipe.b.receive(1) == [frame(1)]


# -- wrapper plumbing -------------------------------------------------------------

def test_wrapper_forwards_mtu_fileno_and_close():
    pipe = Pipe(mtu=1280)
    inj = FaultInjector(pipe.a, rx=FaultConfig(mtu=500))
    assert inj.mtu == 1280                      # the black hole is invisible to the host
    assert not hasattr(inj, "fileno")

    class WithFd(Wrapper):
        def fileno(self):
            return 42

    assert FaultInjector(WithFd(pipe.b)).fileno() == 42
    with pytest.raises(AttributeError):
        inj.no_such_thing
    inj.close()
    assert pipe.a.closed


# -- parse_impairment ---------------------------------------------------------------

def test_parse_impairment_both_directions():
    rx, tx, seed = parse_impairment("loss=0.1,reorder=0.05,seed=7,delay=2000,jitter=500,rate=1000000")
    want = FaultConfig(loss=0.1, reorder=0.05, delay=2000, jitter=500, rate=1_000_000)
    assert rx == tx == want and seed == 7


def test_parse_impairment_one_direction_wins_whatever_the_order():
    rx, tx, seed = parse_impairment(" rx.loss=0.2 , loss=0.1, tx.corrupt=0.01,")
    assert rx == FaultConfig(loss=0.2)
    assert tx == FaultConfig(loss=0.1, corrupt=0.01)
    assert seed == 0


def test_parse_impairment_empty_is_no_faults():
    assert parse_impairment("") == (FaultConfig(), FaultConfig(), 0)


@pytest.mark.parametrize("spec, words", [
    ("lose=0.1", "unknown impairment key 'lose'; valid keys: seed, burst,"),
    ("up.loss=0.1", "unknown impairment key 'up.loss'"),
    ("rx.seed=3", "unknown impairment key 'rx.seed'"),
    ("loss", "not key=value"),
    ("loss=lots", "'loss' needs a number in"),
    ("delay=1.5", "'delay' needs an integer"),
    ("seed=x", "'seed' needs an integer"),
    ("tx.loss=2", "'tx.loss': loss must be a probability in \\[0, 1\\]"),
    ("rate=-5", "'rate': rate must be an int >= 0"),
    ("loss=0.1,loss=0.2", "'loss' is given twice"),
    ("rx.burst_enter=0.1", "needs burst_exit > 0"),
])
def test_parse_impairment_rejects(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_impairment(spec)
