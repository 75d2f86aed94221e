"""The runtime loop against a fake fd-backed device, a Pipe, and a stub stack.

The device is one end of an AF_UNIX datagram socketpair (an fd, so epoll
works as with a TAP); the test holds the other end, "the wire".  The stub
stack answers every frame ``b"ping<n>"`` with ``b"pong<n>"`` and can be
given a timer.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time

import pytest

from pystack.phy.fault_injector import FaultConfig, FaultInjector
from pystack.phy.pipe import Pipe
from pystack.runtime.loop import Loop, LoopError, monotonic_us

WAIT_S = 5.0


class FdDevice:
    """A device over one end of a socketpair: batch reads, partial writes on demand."""

    def __init__(self, batch: int = 64, mtu: int = 1500) -> None:
        self.mtu = mtu
        self.batch = batch
        self.sock, self.wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.wire.settimeout(WAIT_S)
        self.take_limit: int | None = None  # frames accepted per transmit call; None = all
        self.receive_error: OSError | None = None
        self.batches: list[int] = []
        self.log: list[tuple[str, int]] = []  # ("rx", n) / ("tx", n), in call order

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, now: int) -> list:
        if self.receive_error is not None:
            raise self.receive_error
        out = []
        while len(out) < self.batch:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                break
        if out:
            self.batches.append(len(out))
            self.log.append(("rx", len(out)))
        return out

    def transmit(self, frames, now: int) -> int:
        limit = len(frames) if self.take_limit is None else min(self.take_limit, len(frames))
        for i in range(limit):
            try:
                self.sock.send(bytes(frames[i]))
            except BlockingIOError:  # queue full: the rest stay with the caller, like a TAP
                limit = i
                break
        if limit:
            self.log.append(("tx", limit))
        return limit

    def poll_at(self):
        return None

    def close(self) -> None:
        self.sock.close()
        self.wire.close()

    # the test's side
    def put(self, *frames: bytes) -> None:
        # Non-blocking sends: a blocking AF_UNIX datagram send waits once the
        # peer holds max_dgram_qlen datagrams, far fewer than the buffer takes.
        self.wire.setblocking(False)
        try:
            for f in frames:
                deadline = time.monotonic() + WAIT_S
                while True:
                    try:
                        self.wire.send(f)
                        break
                    except BlockingIOError:
                        assert time.monotonic() < deadline, "the device side never drained"
                        select.select([], [self.wire], [], 0.01)
        finally:
            self.wire.settimeout(WAIT_S)

    def get(self) -> bytes:
        return self.wire.recv(4096)

    def pending_out(self) -> list[bytes]:
        out = []
        self.wire.setblocking(False)
        try:
            while True:
                out.append(self.wire.recv(4096))
        except BlockingIOError:
            pass
        finally:
            self.wire.settimeout(WAIT_S)
        return out


class StubStack:
    """Sans-I/O stand-in for Interface: echoes ping<n> as pong<n>; an optional timer."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, int]] = []
        self.out: list[bytes] = []
        self.timer_at: int | None = None
        self.timer_frame = b"timer"
        self.timer_fired_at: int | None = None
        self.started: int | None = None
        self.polls = 0
        self.raise_on: bytes | None = None
        self.got = threading.Event()
        self.expect = 0

    def start(self, now: int) -> None:
        self.started = now
        self.out.append(b"hello")

    def receive(self, frame, now: int) -> None:
        frame = bytes(frame)  # the view is only valid during the call
        if frame == self.raise_on:
            raise RuntimeError("stub bug")
        self.received.append((frame, now))
        if frame.startswith(b"ping"):
            self.out.append(b"pong" + frame[4:])
        if len(self.received) >= self.expect:
            self.got.set()

    def poll(self, now: int) -> list:
        self.polls += 1
        if self.timer_at is not None and now >= self.timer_at:
            self.timer_at = None
            self.timer_fired_at = now
            self.out.append(self.timer_frame)
        out, self.out = self.out, []
        return out

    def poll_at(self):
        if self.out:
            return 0
        return self.timer_at


@pytest.fixture
def dev():
    d = FdDevice()
    yield d
    d.close()


@pytest.fixture
def running():
    """Start a Loop in a thread; always stopped and closed at the end."""
    started = []

    def start(loop: Loop) -> threading.Thread:
        thread = loop.start_thread()
        started.append((loop, thread))
        return thread

    yield start
    for loop, thread in started:
        loop.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the loop did not stop"
        loop.close()


def test_batches_are_bounded_and_flushed_between(dev):
    """150 frames waiting, batch 64: three batches, each one's replies sent before the next read."""
    stack = StubStack()
    frames = [b"ping%d" % i for i in range(150)]
    dev.put(*frames)
    with Loop(dev, stack) as loop:
        loop.run_once(1.0)
        assert dev.batches == [64]
        assert len(dev.pending_out()) == 64, "the first batch's replies leave before the next read"
        loop.run_once(1.0)  # level-triggered: still readable, no wait
        loop.run_once(1.0)
        assert dev.batches == [64, 64, 22]
        assert dev.log == [("rx", 64), ("tx", 64), ("rx", 64), ("tx", 64), ("rx", 22), ("tx", 22)]
        assert [f for f, _ in stack.received] == frames
        assert loop.stats["rx_frames"] == 150
        assert loop.stats["rx_full_batches"] == 2
        assert loop.stats["rx_batches"] == 3
        assert loop.stats["tx_frames"] == 150
        assert len(dev.pending_out()) == 86


def test_frames_of_one_batch_share_now(dev):
    stack = StubStack()
    dev.put(b"ping1", b"ping2", b"ping3")
    with Loop(dev, stack) as loop:
        loop.run_once(1.0)
    assert len({now for _, now in stack.received}) == 1


def test_running_loop_echoes_and_nothing_is_left_unread(dev, running):
    stack = StubStack()
    stack.expect = 1000
    loop = Loop(dev, stack)
    running(loop)
    assert dev.get() == b"hello"  # start(now) ran in the loop
    frames = [b"ping%d" % i for i in range(1000)]
    for i in range(0, 1000, 100):
        dev.put(*frames[i:i + 100])
    assert stack.got.wait(WAIT_S)
    replies = [dev.get() for _ in range(1000)]
    assert replies == [b"pong%d" % i for i in range(1000)]


def test_timer_from_stack_poll_at(dev, running):
    """The loop sleeps until poll_at, calls poll then, and does not spin meanwhile."""
    stack = StubStack()
    loop = Loop(dev, stack)
    delay = 30_000
    armed = threading.Event()

    def arm():
        stack.timer_at = loop.clock() + delay
        armed.set()

    running(loop)
    assert dev.get() == b"hello"
    loop.call_soon(arm)
    assert armed.wait(WAIT_S)
    armed_at = stack.timer_at
    t0 = time.monotonic()
    assert dev.get() == b"timer"
    assert time.monotonic() - t0 < WAIT_S
    assert stack.timer_fired_at >= armed_at
    # Waiting 30 ms took a handful of iterations, not a busy loop.
    assert stack.polls < 20, stack.polls


def test_timer_never_fires_early(dev):
    stack = StubStack()
    with Loop(dev, stack) as loop:
        deadline = stack.timer_at = loop.clock() + 5_000
        for _ in range(50):
            loop.run_once(None)
            if stack.timer_fired_at is not None:
                break
        assert stack.timer_fired_at is not None
        assert stack.timer_fired_at >= deadline
        assert loop.stats["iterations"] <= 3  # slept until the deadline, did not spin


def test_device_poll_at_wakes_the_loop_for_delayed_frames(running):
    """A Pipe (no fd) behind a FaultInjector delaying rx by 20 ms: the loop wakes at the device's poll_at."""
    pipe = Pipe()
    device = FaultInjector(pipe.b, rx=FaultConfig(delay=20_000))
    stack = StubStack()
    stack.expect = 1
    loop = Loop(device, stack)
    sent_at = []

    def inject():
        now = loop.clock()
        sent_at.append(now)
        pipe.a.transmit([b"ping7"], now)

    running(loop)
    loop.call_soon(inject)
    assert stack.got.wait(WAIT_S)
    (frame, now), = stack.received
    assert frame == b"ping7"
    assert now >= sent_at[0] + 20_000
    assert stack.polls < 20, "waited for the delayed frame without spinning"
    replies = []
    deadline = time.monotonic() + WAIT_S
    while b"pong7" not in replies and time.monotonic() < deadline:
        done = threading.Event()
        loop.call_soon(lambda: (replies.extend(pipe.a.receive(loop.clock())), done.set()))
        assert done.wait(WAIT_S)
    assert replies == [b"hello", b"pong7"]
    assert device.rx_counters.delayed == 1


def test_call_soon_from_many_threads_runs_in_owner_in_order(dev, running):
    stack = StubStack()
    loop = Loop(dev, stack)
    thread = running(loop)
    seen: dict[int, list[int]] = {t: [] for t in range(4)}
    owners = set()
    done = threading.Event()
    total = 4 * 500

    def record(t, i):
        owners.add(threading.get_ident())
        assert loop.in_owner_thread()
        seen[t].append(i)
        if sum(len(v) for v in seen.values()) == total:
            done.set()

    def producer(t):
        for i in range(500):
            loop.call_soon(record, t, i)

    producers = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(WAIT_S)
    assert done.wait(WAIT_S)
    assert owners == {thread.ident}
    assert all(seen[t] == list(range(500)) for t in range(4))
    assert loop.stats["callbacks"] == total
    assert not loop.in_owner_thread()


def test_frames_queued_by_call_soon_leave_in_the_same_iteration(dev, running):
    stack = StubStack()
    loop = Loop(dev, stack)
    running(loop)
    assert dev.get() == b"hello"
    loop.call_soon(lambda: stack.out.append(b"from-app"))
    assert dev.get() == b"from-app"


def test_stop_from_another_thread_flushes_and_returns(dev):
    stack = StubStack()
    loop = Loop(dev, stack)
    thread = loop.start_thread()
    try:
        assert dev.get() == b"hello"
        loop.call_soon(lambda: stack.out.append(b"last"))
        loop.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        assert b"last" in [dev.get()]
    finally:
        loop.stop()
        thread.join(WAIT_S)
        loop.close()


def test_stop_before_run_returns_at_once_and_run_again_works(dev):
    stack = StubStack()
    with Loop(dev, stack) as loop:
        loop.stop()
        t0 = time.monotonic()
        loop.run()
        assert time.monotonic() - t0 < 1.0
        assert stack.started is not None  # start() ran once, before the first iteration
        thread = loop.start_thread()
        loop.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_run_twice_at_once_is_refused(dev, running):
    loop = Loop(dev, StubStack())
    running(loop)
    deadline = time.monotonic() + WAIT_S
    while loop._owner is None and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(RuntimeError, match="already running"):
        loop.run()


def test_partial_transmit_keeps_order_through_the_backlog(dev):
    stack = StubStack()
    dev.take_limit = 3
    dev.put(*[b"ping%d" % i for i in range(10)])
    with Loop(dev, stack) as loop:
        loop.run_once(1.0)
        assert loop.backlog == 7
        assert loop.stats["tx_deferred"] == 7
        for _ in range(10):
            if not loop.backlog:
                break
            loop.run_once(1.0)  # EPOLLOUT wakes the loop; the backlog goes first
        assert loop.backlog == 0
    assert dev.pending_out() == [b"pong%d" % i for i in range(10)]
    assert loop.stats["tx_backlog_max"] == 7
    assert loop.stats["tx_dropped"] == 0


def test_backlog_is_bounded_tail_drop(dev):
    stack = StubStack()
    dev.take_limit = 0
    dev.put(*[b"ping%d" % i for i in range(25)])
    with Loop(dev, stack, tx_backlog_limit=10) as loop:
        loop.run_once(1.0)
        assert loop.backlog == 10
        assert loop.stats["tx_dropped"] == 15
        dev.take_limit = None
        loop.run_once(1.0)
        assert loop.backlog == 0
    assert dev.pending_out() == [b"pong%d" % i for i in range(10)]


def test_backlog_on_a_device_without_fd_is_retried_by_timer():
    pipe = Pipe(capacity=2)
    stack = StubStack()
    with Loop(pipe.b, stack) as loop:
        stack.out.extend([b"a", b"b", b"c", b"d"])
        loop.run_once(0)
        assert loop.backlog == 2
        assert 0 < loop._timeout() <= 0.002
        got = pipe.a.receive(loop.clock() + 10)
        assert got == [b"a", b"b"]
        loop.run_once(0.01)
        assert loop.backlog == 0
        assert pipe.a.receive(loop.clock() + 10) == [b"c", b"d"]


def test_a_stack_exception_is_counted_and_the_loop_goes_on(dev, caplog):
    stack = StubStack()
    stack.raise_on = b"bad"
    dev.put(b"ping1", b"bad", b"ping2")
    with Loop(dev, stack) as loop:
        loop.run_once(1.0)
        assert loop.stats["stack_errors"] == 1
    assert [f for f, _ in stack.received] == [b"ping1", b"ping2"]
    assert dev.pending_out() == [b"pong1", b"pong2"]
    assert "stub bug" in caplog.text


def test_callback_and_service_errors_are_counted(dev):
    class Service:
        def __init__(self):
            self.calls = 0

        def poll(self):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("service bug")

    svc = Service()
    with Loop(dev, StubStack(), services=[svc]) as loop:
        loop.call_soon(lambda: 1 / 0)
        loop.run_once(0)
        loop.run_once(0)
        assert loop.stats["callback_errors"] == 1
        assert loop.stats["service_errors"] == 1
        assert svc.calls == 2


def test_device_gone_stops_the_loop_with_an_error(dev):
    stack = StubStack()
    loop = Loop(dev, stack)
    dev.receive_error = OSError(errno.EBADFD, "File descriptor in bad state")
    dev.put(b"ping")  # make it readable
    try:
        with pytest.raises(LoopError, match="device failed") as info:
            loop.run()
        assert info.value.__cause__ is dev.receive_error
        assert loop.stats["device_errors"] == 1
    finally:
        loop.close()


def test_transient_device_errors_are_counted(dev):
    stack = StubStack()
    dev.receive_error = OSError(errno.EIO, "I/O error")
    dev.put(b"ping")
    with Loop(dev, stack) as loop:
        loop.run_once(1.0)
        assert loop.stats["device_errors"] == 1
        dev.receive_error = None
        loop.run_once(1.0)
        assert stack.received[0][0] == b"ping"


def test_watch_calls_back_for_extra_fds(dev):
    a, b = socket.socketpair()
    got = []
    try:
        with Loop(dev, StubStack()) as loop:
            loop.watch(a.fileno(), lambda ev: got.append(a.recv(100)))
            b.send(b"x")
            loop.run_once(1.0)
            assert got == [b"x"]
            loop.unwatch(a.fileno())
            b.send(b"y")
            loop.run_once(0.01)
            assert got == [b"x"]
            with pytest.raises(ValueError):
                loop.watch(dev.fileno(), lambda ev: None)
    finally:
        a.close()
        b.close()


def test_close_releases_fds_and_refuses_reuse(dev):
    before = len(os.listdir("/proc/self/fd"))
    loop = Loop(dev, StubStack())
    loop.close()
    loop.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(RuntimeError):
        loop.call_soon(print)
    with pytest.raises(RuntimeError):
        loop.run()
    loop.stop()  # harmless after close


def test_default_clock_is_monotonic_microseconds():
    a = monotonic_us()
    b = monotonic_us()
    assert isinstance(a, int) and 0 <= b - a < 1_000_000
    assert abs(a - time.monotonic_ns() // 1000) < 1_000_000
