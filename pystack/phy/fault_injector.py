"""A wrapper that makes a link bad on purpose: loss, bursts, duplicates, reordering,
corruption, delay and jitter, a rate-limited bottleneck, and an MTU black hole.

Each direction has its own :class:`FaultConfig`, its own counters and its own
random generator (seeded from the one ``seed``), so traffic in one direction
never changes the fate of frames in the other, and a run replays exactly
from its seed.  Nothing here reads a clock: ``now`` comes in with every call.

Theory of operation
-------------------
``rx`` acts on frames coming out of ``inner.receive``; ``tx`` on frames going
into ``inner.transmit``.  A frame entering a direction goes through these
stages, in this order; each random decision is drawn only when its fault is
enabled, so a default :class:`FaultConfig` draws nothing and copies nothing::

    size     longer than mtu + 14 bytes               -> dropped_size
    burst    Gilbert-Elliott chain steps; if bad       -> dropped_burst
    loss     independent loss                          -> dropped_loss
    corrupt  one random bit of a copy flipped          (corrupted)
    duplicate  a second identical copy follows         (duplicated)
    -- each copy, separately, from here on --
    rate     token bucket; waits in the bottleneck queue, or tail drop -> dropped_rate
    delay    + delay, + uniform jitter in [-jitter, +jitter], at least 0   (delayed)
    reorder  held a further reorder_delay µs           (reordered)

A frame whose release time is ``now`` goes straight on; a later one is copied
and held until a call with ``now`` at or past its release time.
:meth:`FaultInjector.poll_at` reports the earliest release.

Ordering: delay and jitter never reorder.  Each frame's release time is at
least that of the frame before it (as if variable delay came from queueing on
one path, where packets cannot pass each other), so with jitter large against
the gap between frames, frames bunch up behind a slow one and the delay
distribution skews upward.  Only ``reorder`` reorders: a reordered frame's
extra hold does not delay the frames behind it, so those sent within
``reorder_delay`` overtake it.  (Linux netem, by contrast, reorders on jitter
unless a rate is set; tc-netem(8).)

Burst loss is the simplified Gilbert model (E. N. Gilbert, "Capacity of a
burst-noise channel", 1960; the ``loss gemodel p r`` of tc-netem(8)): a
two-state Markov chain that moves once per frame, good -> bad with
probability ``burst_enter`` and bad -> good with ``burst_exit``, and loses
every frame while bad.  The long-run loss is
``burst_enter / (burst_enter + burst_exit)`` and the mean burst length
``1 / burst_exit`` frames.

The rate limit is a token bucket feeding a FIFO bottleneck queue, like a
slow link with a buffer: tokens accrue at ``rate`` bytes per second up to
``burst`` bytes; a frame leaves when the bucket holds ``min(len, burst)``
bytes and takes ``len`` bytes from it (the bucket may go negative, so a frame
longer than ``burst`` -- including any frame when ``burst`` is 0, which paces
frames at exactly ``rate`` -- still leaves, and the long-run rate still
holds).  A frame that cannot leave at once waits if the bytes waiting plus
its own fit ``queue_limit``, else it is dropped (tail drop, as a router's
FIFO does).  Arithmetic is in integers (byte-microseconds), so it is exact.

Transmit back-pressure: the injector takes every frame it is given (a frame
it drops or holds counts as taken).  Frames it hands to ``inner.transmit``
that the inner device refuses are copied into a backlog that is retried,
before anything else, at the next ``transmit`` or ``receive``; while that
backlog cannot be emptied, ``transmit`` takes nothing (returns 0), so the
caller keeps its frames and waits for the device to become writable.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

from pystack.phy.device import ETHERNET_HEADER_LEN, Device, Wrapper, earliest

_PROBABILITIES = ("loss", "burst_enter", "burst_exit", "duplicate", "reorder", "corrupt")
_AMOUNTS = {
    "reorder_delay": "microseconds",
    "delay": "microseconds",
    "jitter": "microseconds",
    "rate": "bytes per second, 0 for unlimited",
    "burst": "bytes",
    "queue_limit": "bytes",
    "mtu": "bytes of IP packet, 0 for no limit",
}

_US_PER_S = 1_000_000


def _check_field(name: str, value) -> None:
    if name in _PROBABILITIES:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    elif name in _AMOUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 ({_AMOUNTS[name]}), got {value!r}")
    else:  # pragma: no cover - guards the tables against a new field
        raise AssertionError(f"FaultConfig field {name} has no validation rule")


@dataclass(frozen=True)
class FaultConfig:
    """The faults applied to one direction.  The default applies none.

    Probabilities are per frame, in [0, 1].  Times are integer µs, sizes
    integer bytes.  ``mtu`` counts like a device's mtu (IP packet bytes): a
    frame longer than ``mtu + 14`` is dropped, modelling a path MTU black
    hole; the injector's own ``mtu`` attribute still reports the inner
    device's, as a host behind such a path would see.
    """

    loss: float = 0.0
    burst_enter: float = 0.0
    burst_exit: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: int = 1000
    corrupt: float = 0.0
    delay: int = 0
    jitter: int = 0
    rate: int = 0
    burst: int = 0
    queue_limit: int = 65536
    mtu: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_field(f.name, getattr(self, f.name))
        if self.burst_enter > 0 and self.burst_exit == 0:
            raise ValueError(
                f"burst_enter={self.burst_enter} needs burst_exit > 0: "
                "with burst_exit=0 the first burst never ends (use loss=1 for a dead link)")
        if self.reorder > 0 and self.reorder_delay == 0:
            raise ValueError(f"reorder={self.reorder} needs reorder_delay > 0, or nothing is held back")

    @property
    def is_noop(self) -> bool:
        """True when this config changes nothing (every frame passes at once, untouched)."""
        return not (self.mtu or self.burst_enter or self.loss or self.corrupt or self.duplicate
                    or self.rate or self.delay or self.jitter or self.reorder)


@dataclass
class FaultCounters:
    """What one direction did.

    ``seen``: frames that entered; ``passed``: frames handed on (to the
    caller for rx, taken by the inner device for tx), duplicates included;
    ``dropped_*``: by stage; ``duplicated``: extra copies made;
    ``reordered``: frames held back by ``reorder`` (overtaken if others came
    within ``reorder_delay``); ``corrupted``: frames with a flipped bit;
    ``delayed``: copies released later than they left the rate stage because
    of delay, jitter or waiting behind a delayed frame.  Invariant:
    ``seen + duplicated == passed + dropped_* + frames still held``.
    """

    seen: int = 0
    passed: int = 0
    dropped_loss: int = 0
    dropped_burst: int = 0
    dropped_rate: int = 0
    dropped_size: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    delayed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Lane:
    """One direction: its config, random generator, counters and held frames."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.counters = FaultCounters()
        self.noop = config.is_noop
        self.bad = False  # Gilbert-Elliott state
        # Held frames: a heap of (release time, sequence number, frame copy).
        self.held: list[tuple[int, int, bytes]] = []
        self.seq = 0
        # Release time of the last frame not reordered; later frames never go before it.
        self.last_due = -math.inf
        # Token bucket, in byte-microseconds so refills stay integers: the
        # level was ``tokens`` at time ``bucket_at`` (None: never used, full).
        self.tokens = config.burst * _US_PER_S
        self.bucket_at: int | None = None
        # Frames waiting in the bottleneck queue: (departure time, length).
        self.queue: deque[tuple[int, int]] = deque()
        self.queued_bytes = 0

    def next_due(self) -> int | None:
        return self.held[0][0] if self.held else None

    def release(self, now: int, out: list) -> None:
        """Append the held frames due by ``now`` to ``out``, in release order."""
        held = self.held
        while held and held[0][0] <= now:
            out.append(heapq.heappop(held)[2])

    def push(self, frame, now: int, out: list) -> None:
        """Run ``frame`` through the stages; append it to ``out`` if it leaves at ``now``."""
        cfg = self.config
        c = self.counters
        rng = self.rng
        c.seen += 1
        n = len(frame)
        if cfg.mtu and n > cfg.mtu + ETHERNET_HEADER_LEN:
            c.dropped_size += 1
            return
        if cfg.burst_enter:
            if self.bad:
                if rng.random() < cfg.burst_exit:
                    self.bad = False
            elif rng.random() < cfg.burst_enter:
                self.bad = True
            if self.bad:
                c.dropped_burst += 1
                return
        if cfg.loss and rng.random() < cfg.loss:
            c.dropped_loss += 1
            return
        if cfg.corrupt and n and rng.random() < cfg.corrupt:
            copy = bytearray(frame)
            bit = rng.randrange(n * 8)
            copy[bit >> 3] ^= 1 << (bit & 7)
            frame = bytes(copy)
            c.corrupted += 1
        self._schedule(frame, n, now, out)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            c.duplicated += 1
            self._schedule(frame, n, now, out)

    def _schedule(self, frame, n: int, now: int, out: list) -> None:
        cfg = self.config
        c = self.counters
        due = now
        if cfg.rate:
            due = self._depart(n, now)
            if due is None:
                c.dropped_rate += 1
                return
        if cfg.delay or cfg.jitter:
            late = due + max(0, cfg.delay + (self.rng.randint(-cfg.jitter, cfg.jitter) if cfg.jitter else 0))
            if late < self.last_due:
                late = self.last_due
            if late > due:
                c.delayed += 1
            due = late
        elif due < self.last_due:
            due = self.last_due
        if cfg.reorder and self.rng.random() < cfg.reorder:
            c.reordered += 1
            due += cfg.reorder_delay
        else:
            self.last_due = due
        if due <= now:
            out.append(frame)
        else:
            heapq.heappush(self.held, (due, self.seq, bytes(frame)))
            self.seq += 1

    def _depart(self, n: int, now: int) -> int | None:
        """When a frame of ``n`` bytes offered at ``now`` leaves the bucket, or None if dropped."""
        cfg = self.config
        rate = cfg.rate
        cap = cfg.burst * _US_PER_S
        if self.bucket_at is None:
            t, tokens = now, cap
        else:
            t = max(now, self.bucket_at)
            tokens = min(cap, self.tokens + rate * (t - self.bucket_at))
        need = min(n, cfg.burst) * _US_PER_S
        if tokens < need:
            wait = -(-(need - tokens) // rate)
            t += wait
            tokens = min(cap, tokens + rate * wait)
        queue = self.queue
        while queue and queue[0][0] <= now:
            self.queued_bytes -= queue.popleft()[1]
        if t > now:
            if self.queued_bytes + n > cfg.queue_limit:
                return None
            queue.append((t, n))
            self.queued_bytes += n
        self.bucket_at = t
        self.tokens = tokens - n * _US_PER_S
        return t


class FaultInjector(Wrapper):
    """Wraps ``inner``, applying ``rx`` to received frames and ``tx`` to transmitted ones.

    ``rx_counters`` and ``tx_counters`` (:class:`FaultCounters`) say what
    happened in each direction.  The same ``seed``, configs and calls give
    the same frames and counters.
    """

    def __init__(self, inner: Device, rx: FaultConfig | None = None, tx: FaultConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__(inner)
        self.rx = rx if rx is not None else FaultConfig()
        self.tx = tx if tx is not None else FaultConfig()
        self.seed = seed
        # String seeds are hashed with SHA-512 (random.seed, version 2): stable
        # across runs and Python versions, and the two streams are unrelated.
        self._rx = _Lane(self.rx, random.Random(f"pystack.fault.rx.{seed}"))
        self._tx = _Lane(self.tx, random.Random(f"pystack.fault.tx.{seed}"))
        self._backlog: list[bytes] = []

    @property
    def rx_counters(self) -> FaultCounters:
        return self._rx.counters

    @property
    def tx_counters(self) -> FaultCounters:
        return self._tx.counters

    @property
    def held(self) -> tuple[int, int]:
        """Frames held for later release as (rx, tx), the tx count including the backlog."""
        return len(self._rx.held), len(self._tx.held) + len(self._backlog)

    def status(self) -> dict:
        """Seed, and per direction the counters plus the frames held now (for ``status`` output)."""
        held_rx, held_tx = self.held
        return {"seed": self.seed,
                "rx": {**self.rx_counters.as_dict(), "held": held_rx},
                "tx": {**self.tx_counters.as_dict(), "held": held_tx}}

    def _flush_tx(self, now: int) -> bool:
        """Hand the backlog and the tx frames due by ``now`` to the inner device; True if all went."""
        out = self._backlog
        self._tx.release(now, out)
        if not out:
            return True
        taken = self.inner.transmit(out, now)
        self._tx.counters.passed += taken
        del out[:taken]
        return not out

    def transmit(self, frames: Sequence, now: int) -> int:
        if not self._flush_tx(now):
            return 0
        lane = self._tx
        if lane.noop:
            taken = self.inner.transmit(frames, now)
            lane.counters.seen += taken
            lane.counters.passed += taken
            return taken
        out: list = []
        for frame in frames:
            lane.push(frame, now, out)
        if out:
            taken = self.inner.transmit(out, now)
            lane.counters.passed += taken
            if taken < len(out):
                self._backlog.extend(bytes(f) for f in out[taken:])
        return len(frames)

    def receive(self, now: int) -> list:
        self._flush_tx(now)
        frames = self.inner.receive(now)
        lane = self._rx
        if lane.noop:
            lane.counters.seen += len(frames)
            lane.counters.passed += len(frames)
            return frames
        out: list = []
        lane.release(now, out)
        for frame in frames:
            lane.push(frame, now, out)
        lane.counters.passed += len(out)
        return out

    def poll_at(self) -> int | None:
        """The earliest of the inner device's deadline and the next held frame of either direction.

        The transmit backlog is not a deadline: it waits for the device to
        take frames again, which the caller learns from its own refused frames.
        """
        return earliest(self.inner.poll_at(), self._rx.next_due(), self._tx.next_due())

    def close(self) -> None:
        self._rx.held.clear()
        self._tx.held.clear()
        self._backlog.clear()
        self.inner.close()

    def __repr__(self) -> str:
        return f"FaultInjector({self.inner!r}, rx={self.rx}, tx={self.tx}, seed={self.seed})"


# -- the CLI's --impair spec -------------------------------------------------

_FIELD_TYPES = {f.name: (float if f.name in _PROBABILITIES else int) for f in fields(FaultConfig)}


def _valid_keys() -> str:
    names = sorted(_FIELD_TYPES)
    return ("seed, " + ", ".join(names) + " (each also as rx.<key> or tx.<key> for one direction)")


def parse_impairment(spec: str) -> tuple[FaultConfig, FaultConfig, int]:
    """Parse ``"loss=0.1,tx.corrupt=0.01,seed=7"`` into (rx config, tx config, seed).

    A bare key applies to both directions; ``rx.<key>`` or ``tx.<key>``
    applies to one and wins over the bare key whatever the order.  Times are
    integer µs, ``rate`` bytes per second, probabilities in [0, 1]; ``seed``
    defaults to 0.  An empty spec means no faults.  Raises ValueError naming
    the offending key (and listing the valid ones when the key is unknown).
    """
    both: dict[str, float | int] = {}
    one: dict[str, dict[str, float | int]] = {"rx": {}, "tx": {}}
    seed = 0
    seen: set[str] = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(f"impairment item {item!r} is not key=value; valid keys: {_valid_keys()}")
        if key in seen:
            raise ValueError(f"impairment key {key!r} is given twice")
        seen.add(key)
        if key == "seed":
            try:
                seed = int(text)
            except ValueError:
                raise ValueError(f"impairment key 'seed' needs an integer, got {text!r}") from None
            continue
        direction, dot, name = key.rpartition(".")
        if (dot and direction not in ("rx", "tx")) or name not in _FIELD_TYPES:
            raise ValueError(f"unknown impairment key {key!r}; valid keys: {_valid_keys()}")
        kind = _FIELD_TYPES[name]
        try:
            value = kind(text)
        except ValueError:
            what = "a number in [0, 1]" if kind is float else "an integer"
            raise ValueError(f"impairment key {key!r} needs {what}, got {text!r}") from None
        try:
            _check_field(name, value)
        except ValueError as exc:
            raise ValueError(f"impairment key {key!r}: {exc}") from None
        (one[direction] if dot else both)[name] = value
    try:
        rx = FaultConfig(**{**both, **one["rx"]})
        tx = FaultConfig(**{**both, **one["tx"]})
    except ValueError as exc:
        raise ValueError(f"impairment {spec!r}: {exc}") from None
    return rx, tx, seed
