"""The runtime loop: the one place where the stack meets file descriptors and the clock.

Owns, for one device and one stack: the epoll set (the device fd, a wake-up
eventfd, and any extra fd registered with :meth:`Loop.watch`, such as the
control socket), the clock, the timer (re-armed at the stack's and the
device's ``poll_at``), the transmit backlog, and the thread-safe hand-off
(:meth:`Loop.call_soon`) through which other threads reach the stack.  Every
piece of stack state is touched only by the thread running :meth:`Loop.run`
(the *owner* thread); other threads only queue callables and wake it.

The stack below (``iface``) is sans-I/O: any object with

* ``receive(frame, now)``  -- one inbound frame (a view valid only during the call);
* optionally ``receive_batch(frames, now)`` -- a whole read batch at once
  (the views valid during the call); used instead of ``receive`` when present;
* ``poll(now) -> list``    -- run due timers, return every frame ready to send;
* ``poll_at() -> int|None``-- the next instant ``poll`` has work;

and, optionally, ``start(now)`` (called once when the loop starts).
``now`` is integer microseconds from ``time.monotonic_ns() // 1000``
(or the injected ``clock``).

Theory of operation
-------------------
One iteration::

    1. events: drain the eventfd; run watched fds' callbacks (control socket)
       now = clock()   -- one instant for the whole iteration
    2. rx:     device.receive(now) -> up to one batch; iface.receive_batch(frames, now)
               (or iface.receive(f, now) for each frame of a stack without batches)
    3. hand-offs: run every callable queued by call_soon, in order
    4. services: svc.poll() for each (app-side code, such as the UDP echo)
    5. flush:  device.transmit(backlog + iface.poll(now), now)
    6. wait:   epoll until the earliest of iface.poll_at(), device.poll_at(),
               a tx retry, or an fd event

Step 2 runs when epoll reported the device readable, when the device's own
``poll_at`` is due (a FaultInjector releasing delayed frames), or on every
iteration for a device without a file descriptor (a Pipe end).

**Batching (decision).**  The device fd is registered *level-triggered*.
``TapDevice.receive`` returns at most one batch (64 frames by default); if
the kernel queue held more, the next ``epoll.poll`` reports the fd readable
again at once, so nothing is ever left unread -- and between two batches the
loop has flushed what the first produced (replies leave after at most one
batch of delay, not after the whole queue) and looked at the wake-up fd and
the control socket, so a flood cannot starve them.  Edge-triggered epoll
would force a drain-until-short loop here and lose that interleaving.

**Transmit back-pressure.**  ``device.transmit`` may take only part of the
frames (a TAP whose kernel queue is full).  The rest wait, in order, in a
backlog that is offered again first; while it is not empty the device fd is
also watched for EPOLLOUT (a device without an fd is retried after
``TX_RETRY_US``).  The backlog is bounded (``tx_backlog_limit`` frames); past
that, new frames are dropped at the tail and counted (``tx_dropped``), as a
NIC's full transmit queue does.

**Errors.**  The stack never raises on input (it counts and drops bad frames
itself), so an exception escaping ``iface.receive``/``poll`` is a bug: it is
logged with its traceback and counted (``stack_errors``), and the loop goes
on.  So are exceptions from hand-offs and services (``callback_errors``,
``service_errors``).  A device error (OSError from receive/transmit) is
logged and counted (``device_errors``); the frames of a failed transmit are
dropped.  ``MAX_DEVICE_ERRORS`` device errors in a row, or ENODEV/EBADFD/
EBADF (the device is gone), stop the loop and make :meth:`Loop.run` raise.

**Stopping.**  :meth:`Loop.stop` may be called from any thread and from a
signal handler (it takes no lock: it sets a flag and writes the eventfd);
:meth:`Loop.run` returns after finishing the current iteration, having run
every callable queued before the stop and handed every frame produced so far
to the device.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from pystack.phy.device import earliest

log = logging.getLogger("pystack.runtime")

#: Retry interval for a backlog on a device that has no fd to wait on (µs).
TX_RETRY_US = 1000
#: Device errors in a row after which the loop gives up.
MAX_DEVICE_ERRORS = 100
_FATAL_ERRNOS = frozenset({errno.ENODEV, errno.EBADFD, errno.EBADF, errno.ENXIO})

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP

#: The loop's counters (:attr:`Loop.stats`), all start at 0.
COUNTERS = (
    "iterations",       # times round the loop
    "wakeups",          # eventfd reads (call_soon / stop from elsewhere)
    "rx_batches",       # device.receive calls that returned at least one frame
    "rx_frames",        # frames handed to iface.receive
    "rx_full_batches",  # batches that filled the device's batch size (more were waiting)
    "tx_frames",        # frames the device took
    "tx_deferred",      # frames the device refused at first (kept in the backlog)
    "tx_dropped",       # frames dropped: backlog full, or the device failed on them
    "tx_backlog_max",   # the most frames ever waiting in the backlog
    "callbacks",        # call_soon callables run
    "callback_errors",
    "service_errors",
    "stack_errors",     # exceptions escaping iface.receive/poll/poll_at (bugs)
    "device_errors",
)


def monotonic_us() -> int:
    """The loop's default clock: CLOCK_MONOTONIC in integer microseconds."""
    return time.monotonic_ns() // 1000


def _batch_size(device) -> int:
    """The innermost device's batch size (a TapDevice's ``batch``), 0 when it has none."""
    for _ in range(32):  # wrappers nest a few deep; the bound guards a cycle
        batch = getattr(device, "batch", None)
        if isinstance(batch, int):
            return batch
        device = getattr(device, "inner", None)
        if device is None:
            break
    return 0


class LoopError(RuntimeError):
    """The loop stopped because its device failed; ``__cause__`` is the OSError."""


class Loop:
    """Runs ``iface`` on ``device``; one instance per device, one owner thread.

    ``services`` are objects with a ``poll()`` method, called once per
    iteration after the frames of the iteration were received (a service
    may read and write sockets; what it sends leaves in the same
    iteration's flush).  ``clock`` returns integer µs and never goes back.
    """

    def __init__(self, device, iface, *, services=(), clock: Callable[[], int] = monotonic_us,
                 tx_backlog_limit: int = 4096) -> None:
        if not isinstance(tx_backlog_limit, int) or tx_backlog_limit < 1:
            raise ValueError(f"tx_backlog_limit must be an int >= 1, got {tx_backlog_limit!r}")
        self.device = device
        self.iface = iface
        self.services = list(services)
        self.clock = clock
        self.tx_backlog_limit = tx_backlog_limit
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.started_at: int | None = None

        fileno = getattr(device, "fileno", None)
        self._dev_fd: int | None = fileno() if fileno is not None else None
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, _IN)
        if self._dev_fd is not None:
            self._epoll.register(self._dev_fd, _IN)
        self._dev_mask = _IN
        self._batch = _batch_size(device)
        self._watched: dict[int, Callable[[int], None]] = {}

        self._backlog: deque = deque()
        self._retry_at: int | None = None
        self._error_run = 0
        self._failure: OSError | None = None

        # call_soon hand-off, lock-free (deque.append and popleft are atomic),
        # so a signal handler may queue a call while its thread is inside
        # call_soon.  ``_signalled`` saves the eventfd write while a wake-up
        # is pending; racing callers may both write, which is harmless.
        self._calls: deque = deque()
        self._signalled = False
        self._stopping = False
        self._owner: int | None = None
        self._closed = False

    # -- threads ------------------------------------------------------------

    def call_soon(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` in the owner thread at its next iteration; callable from any thread.

        Callables run in the order they were queued, before the iteration's
        flush, so frames they cause leave in the same iteration.  It takes no
        lock: a signal handler may call it, also while its own thread is
        inside call_soon.
        """
        if self._closed:
            raise RuntimeError("call_soon on a closed Loop")
        self._calls.append((fn, args))
        # The owner clears the flag before it takes the calls: a caller that still sees it
        # set appended before the clear, so its call is taken in that round.
        if not self._signalled:
            self._signalled = True
            self._wake()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current iteration.  Safe from any thread and
        from a signal handler; calling it before :meth:`run` makes run return at once."""
        self._stopping = True
        self._wake()

    def in_owner_thread(self) -> bool:
        """True when called from the thread running :meth:`run`."""
        return self._owner == threading.get_ident()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except (OSError, ValueError):
            # Closed already (a late stop()), or the counter is saturated
            # (EAGAIN): either way the loop has, or will get, the wake-up.
            pass

    # -- extra fds (the control socket) --------------------------------------

    def watch(self, fd: int, callback: Callable[[int], None], events: int = _IN) -> None:
        """Call ``callback(events)`` in the owner thread when ``fd`` is ready (level-triggered).

        Call it from the owner thread, or before :meth:`run`.  Watching a
        watched fd again changes its events and callback.
        """
        if fd in (self._wake_fd, self._dev_fd):
            raise ValueError(f"fd {fd} belongs to the loop")
        if fd in self._watched:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
        self._watched[fd] = callback

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (call before closing it).  Unknown fds are ignored."""
        if self._watched.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    # -- running --------------------------------------------------------------

    def run(self) -> None:
        """Run until :meth:`stop`; the calling thread becomes the owner of all stack state.

        Raises :class:`LoopError` if the device failed for good.
        """
        if self._closed:
            raise RuntimeError("run on a closed Loop")
        if self._owner is not None:
            raise RuntimeError("Loop.run is already running")
        self._owner = threading.get_ident()
        try:
            now = self.clock()
            if self.started_at is None:
                self.started_at = now
                start = getattr(self.iface, "start", None)
                if start is not None:
                    start(now)
            events: list = []
            while True:
                # Always one iteration after a wake-up, stop included: the
                # hand-offs queued before stop() run and their frames leave.
                self._iterate(events)
                if self._failure is not None:
                    raise LoopError(f"device failed: {self._failure}") from self._failure
                if self._stopping:
                    if self._calls:
                        # stop() raced with the end of that iteration:
                        # hand-offs queued before it still run, and flush.
                        self._iterate([])
                    break
                events = self._epoll.poll(self._timeout())
        finally:
            self._owner = None
            self._stopping = False

    def run_once(self, timeout: float | None = 0.0) -> None:
        """Wait at most ``timeout`` seconds (None: until the next timer or event) for
        events, then run one iteration.  For tests and embedding; never with run()."""
        if self._owner is not None and not self.in_owner_thread():
            raise RuntimeError("run_once while another thread runs the loop")
        wait = self._timeout()
        if timeout is not None:
            wait = min(timeout, wait) if wait >= 0 else timeout
        self._iterate(self._epoll.poll(wait))
        if self._failure is not None:
            raise LoopError(f"device failed: {self._failure}") from self._failure

    def _timeout(self) -> float:
        """Seconds until the next deadline, for epoll (-1: none).  Python's epoll rounds
        up to the millisecond, so the loop never wakes before a deadline."""
        if self._calls:
            return 0
        try:
            stack_at = self.iface.poll_at()
        except Exception:
            self._stack_bug("poll_at")
            stack_at = None
        deadline = earliest(stack_at, self.device.poll_at(), self._retry_at)
        for svc in self.services:
            at = getattr(svc, "poll_at", None)
            if at is not None:
                deadline = earliest(deadline, at())
        if deadline is None:
            return -1
        return max(0, deadline - self.clock()) / 1e6

    def _iterate(self, events) -> None:
        stats = self.stats
        stats["iterations"] += 1
        dev_fd = self._dev_fd
        readable = dev_fd is None
        for fd, ev in events:
            if fd == dev_fd:
                if ev & (_IN | _ERR):
                    readable = True
                # EPOLLOUT needs no action: the flush below retries the backlog.
            elif fd == self._wake_fd:
                self._consume_wakeup()
            else:
                callback = self._watched.get(fd)
                if callback is not None:
                    try:
                        callback(ev)
                    except Exception:
                        stats["callback_errors"] += 1
                        log.exception("callback for fd %d failed", fd)
        now = self.clock()
        if not readable:
            due = self.device.poll_at()
            readable = due is not None and due <= now
        if readable:
            self._receive(now)
        if self._calls:
            self._run_calls()
        for svc in self.services:
            try:
                svc.poll()
            except Exception:
                stats["service_errors"] += 1
                log.exception("service %r failed", svc)
        self._flush(now)

    def _consume_wakeup(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        self.stats["wakeups"] += 1

    def _run_calls(self) -> None:
        # The calls queued so far; those they queue themselves run next iteration.
        self._signalled = False
        calls = self._calls
        stats = self.stats
        for _ in range(len(calls)):
            fn, args = calls.popleft()
            stats["callbacks"] += 1
            try:
                fn(*args)
            except Exception:
                stats["callback_errors"] += 1
                log.exception("call_soon callable %r failed", fn)

    def _receive(self, now: int) -> None:
        try:
            frames = self.device.receive(now)
        except OSError as exc:
            self._device_error("receive", exc)
            return
        self._error_run = 0
        if not frames:
            return
        stats = self.stats
        stats["rx_batches"] += 1
        stats["rx_frames"] += len(frames)
        if self._batch and len(frames) >= self._batch:
            stats["rx_full_batches"] += 1
        # The whole batch in one call when the stack takes batches (TCP then
        # runs its per-connection work once per batch: issue 4 item 12).
        batch = getattr(self.iface, "receive_batch", None)
        if batch is not None:
            try:
                batch(frames, now)
            except Exception:
                self._stack_bug("receive_batch")
            return
        receive = self.iface.receive
        for frame in frames:
            try:
                receive(frame, now)
            except Exception:
                self._stack_bug("receive")

    def _flush(self, now: int) -> None:
        """Hand the backlog and everything the stack has ready to the device."""
        try:
            out = self.iface.poll(now)
        except Exception:
            self._stack_bug("poll")
            out = []
        backlog = self._backlog
        stats = self.stats
        if backlog:
            room = self.tx_backlog_limit - len(backlog)
            if len(out) > room:
                stats["tx_dropped"] += len(out) - room
                out = out[:max(room, 0)]
            backlog.extend(out)
            frames = list(backlog)
        else:
            frames = out
        if not frames:
            self._set_writable_wait(False)
            return
        try:
            taken = self.device.transmit(frames, now)
        except OSError as exc:
            # The frames are lost: a persistent error would otherwise wedge
            # the backlog (an OSError concerns the first frame, tapio's contract).
            stats["tx_dropped"] += len(frames)
            backlog.clear()
            self._device_error("transmit", exc)
            self._set_writable_wait(False)
            return
        self._error_run = 0
        stats["tx_frames"] += taken
        if backlog:
            for _ in range(taken):
                backlog.popleft()
        elif taken < len(frames):
            rest = frames[taken:]
            stats["tx_deferred"] += len(rest)
            if len(rest) > self.tx_backlog_limit:
                stats["tx_dropped"] += len(rest) - self.tx_backlog_limit
                rest = rest[:self.tx_backlog_limit]
            backlog.extend(rest)
        if len(backlog) > stats["tx_backlog_max"]:
            stats["tx_backlog_max"] = len(backlog)
        self._set_writable_wait(bool(backlog), now)

    def _set_writable_wait(self, waiting: bool, now: int = 0) -> None:
        if self._dev_fd is None:
            self._retry_at = now + TX_RETRY_US if waiting else None
            return
        mask = _IN | _OUT if waiting else _IN
        if mask != self._dev_mask:
            self._epoll.modify(self._dev_fd, mask)
            self._dev_mask = mask

    def _device_error(self, what: str, exc: OSError) -> None:
        stats = self.stats
        stats["device_errors"] += 1
        self._error_run += 1
        if exc.errno in _FATAL_ERRNOS or self._error_run >= MAX_DEVICE_ERRORS:
            log.error("device %s failed: %s; stopping", what, exc)
            self._failure = exc
            self._stopping = True
        elif self._error_run == 1:
            log.warning("device %s failed: %s (dropped; counted in device_errors)", what, exc)

    def _stack_bug(self, what: str) -> None:
        self.stats["stack_errors"] += 1
        log.exception("iface.%s raised (a bug in the stack; the loop goes on)", what)

    # -- status and shutdown ---------------------------------------------------

    @property
    def backlog(self) -> int:
        """Frames waiting for the device to take them."""
        return len(self._backlog)

    def close(self) -> None:
        """Release the epoll and the eventfd (not the device: whoever opened it closes it)."""
        if self._closed:
            return
        if self._owner is not None and not self.in_owner_thread():
            raise RuntimeError("close a Loop only after run() returned")
        self._closed = True
        self._epoll.close()
        fd, self._wake_fd = self._wake_fd, -1
        os.close(fd)

    def __enter__(self) -> "Loop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_thread(self, name: str = "pystack-loop") -> threading.Thread:
        """Run the loop in a new daemon thread (which becomes the owner) and return it."""
        thread = threading.Thread(target=self.run, name=name, daemon=True)
        thread.start()
        return thread
