"""Draining a TAP: FrameBatch.read (py and c) against one os.read per frame.

The kernel of a namespace made for the run queues 10,000 small UDP frames on
a TAP (queue length 20,000, so none is dropped: every round checks the
count); each round times draining them.  Per-frame cost is median / 10,000.
Needs root and /dev/net/tun; skipped otherwise (benchmarks are not CI-gated).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest

FRAMES = 10_000
ROUNDS = 25
GROUP = "tap-read-10000"


def _kernel_frames():
    """tests/kernel_frames.py (the TAP setup the tests use), imported by path."""
    if "kernel_frames" in sys.modules:
        return sys.modules["kernel_frames"]
    path = Path(__file__).resolve().parent.parent / "tests" / "kernel_frames.py"
    spec = importlib.util.spec_from_file_location("kernel_frames", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernel_frames"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tap():
    """(TAP fd, a kernel UDP socket of the same namespace)."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")
    from pystack.runtime.netns import NetNamespace

    kf = _kernel_frames()
    with NetNamespace() as ns, kf.tap_in_namespace(ns, txqlen=2 * FRAMES) as fd, \
            kf.kernel_socket(ns) as sock:
        yield fd, sock


def _drain_os_read(fd: int) -> int:
    n = 0
    read = os.read
    try:
        while True:
            read(fd, 2048)
            n += 1
    except BlockingIOError:
        return n


def _fill(fd: int, sock: socket.socket) -> None:
    """Empty the TAP queue, then let the kernel queue FRAMES 60-byte frames on it."""
    _drain_os_read(fd)
    sendto = sock.sendto
    peer = (_kernel_frames().PEER_IP, 9999)
    payload = b"pystack benchmark!"
    for _ in range(FRAMES):
        sendto(payload, peer)


def _run(benchmark, tap, drain) -> None:
    fd, sock = tap
    counts = []
    benchmark.pedantic(lambda: counts.append(drain()), setup=lambda: _fill(fd, sock),
                       rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert counts and all(c == FRAMES for c in counts), f"frames drained per round: {counts}"
    benchmark.extra_info["frames"] = FRAMES


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("max_frames", [64, 256])
@pytest.mark.parametrize("impl", ["py", "c"])
def test_tap_read_batch(benchmark, tap, impl, max_frames):
    if impl == "py":
        module = importlib.import_module("pystack.phy._tapio_py")
    else:
        try:
            from pystack import _accel
            module = _accel.fast_module("tapio")
        except ImportError as exc:
            pytest.skip(f"pystack._fast.tapio is not built ({exc})")
    fd = tap[0]
    batch = module.FrameBatch(max_frames=max_frames, frame_size=2048)

    def drain() -> int:
        total = 0
        while True:  # the drain contract: a short batch means the queue is empty
            n = batch.read(fd)
            # Hand out a view per frame, as the stack does, so the comparison
            # with os.read (one bytes object per frame) is like for like.
            total += len(batch.frames())
            if n < max_frames:
                return total

    _run(benchmark, tap, drain)


@pytest.mark.benchmark(group=GROUP)
def test_tap_read_os_read(benchmark, tap):
    _run(benchmark, tap, lambda: _drain_os_read(tap[0]))
