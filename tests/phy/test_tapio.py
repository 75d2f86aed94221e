"""Batch frame I/O (pystack.phy.tapio), both implementations.

Two kinds of fd: a non-blocking ``AF_UNIX``/``SOCK_DGRAM`` socketpair (keeps
datagram boundaries like a TAP, needs no privilege) and a real TAP in a
namespace the test creates, with the kernel on the other side.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import textwrap
import tty
from pathlib import Path

import numpy as np
import pytest

import kernel_frames as kf
from conftest import implementations

tapio_impl = implementations("tapio", "pystack.phy._tapio_py")


def test_facade_exports_the_selected_implementation():
    from pystack import _accel
    from pystack.phy import _tapio_py, tapio

    assert tapio.IMPLEMENTATION == _accel.IMPLEMENTATION
    expected = _accel.fast_module("tapio") if _accel.IMPLEMENTATION == "c" else _tapio_py
    assert tapio.FrameBatch is expected.FrameBatch
    assert tapio.write_batch is expected.write_batch


# -- a datagram socketpair: no root needed ---------------------------------------

@pytest.fixture
def pair():
    """(reader fd, writer fd) of a non-blocking datagram socketpair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        yield a.fileno(), b.fileno()


def test_layout(tapio_impl):
    batch = tapio_impl.FrameBatch(max_frames=8, frame_size=100)
    assert (batch.max_frames, batch.frame_size, batch.count, batch.truncated) == (8, 100, 0, 0)
    assert batch.buffer.dtype == np.uint8 and batch.buffer.shape == (800,)
    assert batch.offsets.dtype == np.int64 and list(batch.offsets) == [i * 100 for i in range(8)]
    assert batch.lengths.dtype == np.int32 and batch.lengths.shape == (8,)
    assert batch.frames() == []
    defaults = tapio_impl.FrameBatch()
    assert (defaults.max_frames, defaults.frame_size) == (64, 2048)


def test_attributes_are_read_only(tapio_impl):
    batch = tapio_impl.FrameBatch(4, 64)
    for name in ("max_frames", "frame_size", "count", "truncated", "buffer", "offsets", "lengths"):
        with pytest.raises(AttributeError):
            setattr(batch, name, 1)


@pytest.mark.parametrize("max_frames, frame_size",
                         [(0, 2048), (-1, 2048), (4, 0), (4, 2 ** 31), (2 ** 40, 2 ** 30),
                          (2 ** 70, 64), (4, 2 ** 70), (-(2 ** 70), 64)])
def test_misuse_raises_value_error(tapio_impl, max_frames, frame_size):
    with pytest.raises(ValueError):
        tapio_impl.FrameBatch(max_frames, frame_size)


@pytest.mark.parametrize("i", [-1, 1, 2 ** 70, -(2 ** 70)])
def test_frame_out_of_range_raises_index_error(tapio_impl, pair, i):
    r, w = pair
    os.write(w, b"one")
    batch = tapio_impl.FrameBatch(4, 64)
    assert batch.read(r) == 1
    with pytest.raises(IndexError, match="out of range"):
        batch.frame(i)
    assert bytes(batch.frame(np.int64(0))) == b"one"


def test_init_runs_once(tapio_impl):
    """A second __init__ is refused, before it allocates: the batch keeps its buffers."""
    batch = tapio_impl.FrameBatch(2, 64)
    buffer = batch.buffer
    with pytest.raises(RuntimeError, match="only once"):
        batch.__init__(4, 128)
    assert (batch.max_frames, batch.frame_size, batch.buffer is buffer) == (2, 64, True)


_FAILED_INIT_SCRIPT = textwrap.dedent("""
    import importlib, socket, sys
    impl = importlib.import_module(sys.argv[1])
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    for _ in range(2):
        b.send(bytes(60000))
    batch = impl.FrameBatch(1, 64)
    try:
        batch.__init__(2 ** 40, 2 ** 20)  # 1 EiB: refused before it tries
    except RuntimeError:
        pass
    else:
        sys.exit("a second __init__ was not refused")
    print(batch.read(a.fileno()), batch.max_frames, batch.frame_size, len(batch.frame(0)))
    fresh = impl.FrameBatch.__new__(impl.FrameBatch)
    try:
        fresh.__init__(2 ** 40, 2 ** 20)  # the first __init__, failing: MemoryError
    except MemoryError:
        pass
    else:
        sys.exit("a 1 EiB buffer was allocated")
    print(fresh.read(a.fileno()), fresh.max_frames, len(fresh.frames()), fresh.count)
    fresh.__init__(2, 65536)  # a failed __init__ leaves an empty batch, which may be set up
    print(fresh.read(a.fileno()), fresh.lengths.tolist())
""")


def test_failed_or_repeated_init_never_leaves_sizes_bigger_than_the_buffers(tapio_impl):
    """__init__ allocates before it changes the batch, and runs once.

    Once, a failed second __init__ (MemoryError) left the new sizes with the
    old buffers and the next read wrote 60000-byte datagrams into 64-byte
    slots.  In a subprocess, so a regression fails this test, not the run.
    """
    out = subprocess.run([sys.executable, "-c", _FAILED_INIT_SCRIPT, tapio_impl.__name__],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1 1 64 64", "0 0 0 0", "1 [60000, 0]"]


def test_read_empty_returns_zero(tapio_impl, pair):
    r, _ = pair
    batch = tapio_impl.FrameBatch(4, 64)
    assert batch.read(r) == 0
    assert batch.count == 0 and batch.frames() == []


def test_round_trip_in_order(tapio_impl, pair):
    r, w = pair
    sent = [bytes([i]) * (i + 1) for i in range(10)]
    assert tapio_impl.write_batch(w, sent) == 10
    batch = tapio_impl.FrameBatch(16, 64)
    assert batch.read(r) == 10
    assert batch.count == 10
    assert [bytes(f) for f in batch.frames()] == sent
    assert [bytes(batch.frame(i)) for i in range(10)] == sent
    assert list(batch.lengths[:10]) == [len(s) for s in sent]
    assert batch.truncated == 0
    assert batch.read(r) == 0


def test_max_frames_respected_and_drain_continues(tapio_impl, pair):
    r, w = pair
    assert tapio_impl.write_batch(w, [struct.pack("!I", i) for i in range(10)]) == 10
    batch = tapio_impl.FrameBatch(4, 64)
    got = []
    counts = []
    while (n := batch.read(r)) > 0:
        counts.append(n)
        got += [struct.unpack("!I", f)[0] for f in batch.frames()]
    assert counts == [4, 4, 2]
    assert got == list(range(10))


def test_frames_are_views_into_the_buffer(tapio_impl, pair):
    r, w = pair
    tapio_impl.write_batch(w, [b"abc", b"defgh"])
    batch = tapio_impl.FrameBatch(4, 32)
    assert batch.read(r) == 2
    view = batch.frame(1)
    assert isinstance(view, memoryview) and view.format == "B" and not view.readonly
    assert bytes(batch.buffer[32:37]) == b"defgh"
    view[0] = ord("X")  # zero-copy: the write lands in the batch buffer
    assert bytes(batch.buffer[32:37]) == b"Xefgh"
    for i in (2, -1, 4):
        with pytest.raises(IndexError):
            batch.frame(i)


def test_truncation_counted(tapio_impl, pair):
    """A read that fills its slot counts as (possibly) truncated; the cut frame is kept."""
    r, w = pair
    tapio_impl.write_batch(w, [b"a" * 7, b"b" * 8, b"c" * 9, b"d" * 100])
    batch = tapio_impl.FrameBatch(8, 8)
    assert batch.read(r) == 4
    assert list(batch.lengths[:4]) == [7, 8, 8, 8]
    assert [bytes(f) for f in batch.frames()] == [b"a" * 7, b"b" * 8, b"c" * 8, b"d" * 8]
    assert batch.truncated == 3
    tapio_impl.write_batch(w, [b"e" * 9])
    assert batch.read(r) == 1
    assert batch.truncated == 4  # cumulative


def test_empty_datagram_ends_a_batch(tapio_impl, pair):
    """read(2) returning 0 ends the batch (EOF; a TAP never returns one); what follows is read next."""
    r, w = pair
    tapio_impl.write_batch(w, [b"one", b"", b"two"])
    batch = tapio_impl.FrameBatch(8, 64)
    assert batch.read(r) == 1 and bytes(batch.frame(0)) == b"one"
    assert batch.read(r) == 1 and bytes(batch.frame(0)) == b"two"
    assert batch.read(r) == 0


def test_bad_fd(tapio_impl):
    fd = -1
    batch = tapio_impl.FrameBatch(4, 64)
    with pytest.raises(OSError) as exc:
        batch.read(fd)
    assert exc.value.errno == errno.EBADF
    assert batch.count == 0
    with pytest.raises(OSError) as exc:
        tapio_impl.write_batch(fd, [b"frame"])
    assert exc.value.errno == errno.EBADF


def test_error_after_frames_is_raised_by_the_next_read(tapio_impl):
    """A pty master whose slave closed returns its data, then EIO: frames first, error next call."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.write(slave, b"0123456789")
        os.close(slave)
        slave = -1
        os.set_blocking(master, False)
        batch = tapio_impl.FrameBatch(8, 4)
        assert batch.read(master) == 3  # a pty is a stream: 4 + 4 + 2 bytes, then EIO
        assert [bytes(f) for f in batch.frames()] == [b"0123", b"4567", b"89"]
        with pytest.raises(OSError) as exc:
            batch.read(master)
        assert exc.value.errno == errno.EIO
        assert batch.count == 0
        with pytest.raises(OSError) as exc:  # the error persists: raised again, now directly
            batch.read(master)
        assert exc.value.errno == errno.EIO
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


_SIGNAL_SCRIPT = textwrap.dedent("""
    import importlib, signal, socket, sys
    impl = importlib.import_module(sys.argv[1])
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # blocking, on purpose
    calls = []

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) == 1:
            b.send(b"sent by the handler")  # the handler returns: the read must resume
        else:
            raise Interrupted

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    batch = impl.FrameBatch(4, 64)
    try:
        batch.read(a.fileno())  # reads the handler's frame, blocks again, second signal raises
    except Interrupted:
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(len(calls), batch.count, bytes(batch.buffer[:19]).decode())
""")


def test_eintr_runs_signal_handlers(tapio_impl):
    """EINTR: handlers run (PEP 475); one that returns resumes the loop, one that raises ends it.

    On a blocking fd, so only a signal ends the read; in a subprocess, so a
    read that ignored signals would be caught by the timeout.
    """
    out = subprocess.run([sys.executable, "-c", _SIGNAL_SCRIPT, tapio_impl.__name__],
                         capture_output=True, text=True, timeout=20,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "0", "sent", "by", "the", "handler"]


def test_write_batch_accepts_bytes_like_and_iterables(tapio_impl, pair):
    r, w = pair
    frames = [b"bytes", bytearray(b"bytearray"), memoryview(b"xxmemoryview")[2:],
              np.frombuffer(b"numpy", dtype=np.uint8)]
    assert tapio_impl.write_batch(w, iter(frames)) == 4
    assert tapio_impl.write_batch(w, ()) == 0
    batch = tapio_impl.FrameBatch(8, 64)
    assert batch.read(r) == 4
    assert [bytes(f) for f in batch.frames()] == [b"bytes", b"bytearray", b"memoryview", b"numpy"]


def test_write_batch_rejects_non_buffers_before_writing(tapio_impl, pair):
    r, w = pair
    with pytest.raises(TypeError):
        tapio_impl.write_batch(w, [b"first", "not bytes"])
    with pytest.raises(BufferError):
        tapio_impl.write_batch(w, [b"first", np.zeros(8, dtype=np.uint8)[::2]])
    assert tapio_impl.FrameBatch(4, 64).read(r) == 0


def test_write_batch_stops_when_full_and_resumes(tapio_impl, pair):
    """EAGAIN ends the batch without an error; the caller re-sends the rest later."""
    r, w = pair
    frames = [struct.pack("!I", i) * 64 for i in range(5000)]
    written = tapio_impl.write_batch(w, frames)
    assert 0 < written < len(frames)  # the socket's send buffer holds far fewer
    assert tapio_impl.write_batch(w, frames[written:]) == 0
    batch = tapio_impl.FrameBatch(64, 512)
    received = []
    while len(received) < len(frames):
        n = batch.read(r)
        received += [bytes(f) for f in batch.frames()]
        sent = tapio_impl.write_batch(w, frames[written:]) if written < len(frames) else 0
        written += sent
        assert n or sent, "neither end made progress"
    assert received == frames


# -- a real TAP, the kernel on the other side -------------------------------------

FRAME_SIZE = 1515  # MTU 1500 + 14 + 1: a whole frame never fills a slot


def _kernel_sends(sock: socket.socket, count: int, size: int = 16) -> None:
    """``count`` datagrams 10.77.0.1 -> 10.77.0.2:9999, datagram i starting with i."""
    for i in range(count):
        sock.sendto(struct.pack("!I", i).ljust(size, b"."), (kf.PEER_IP, 9999))


def _index(frame) -> int:
    """The index a datagram of _kernel_sends carries (and a check of where it went)."""
    proto, src, dst, l4 = kf.ipv4_fields(bytes(frame))
    assert (proto, src, dst) == (kf.IPPROTO_UDP, kf.ip_int(kf.TAP_IP), kf.ip_int(kf.PEER_IP))
    assert struct.unpack_from("!H", l4, 2)[0] == 9999
    return struct.unpack_from("!I", l4, 8)[0]


@pytest.fixture
def tap(netns):
    """(namespace, TAP fd) with a permanent neighbour for 10.77.0.2."""
    with kf.tap_in_namespace(netns, txqlen=5000) as fd:
        yield netns, fd


@pytest.mark.netns
def test_tap_read_drains_what_the_kernel_sent(tapio_impl, tap):
    ns, fd = tap
    batch = tapio_impl.FrameBatch(64, FRAME_SIZE)
    assert batch.read(fd) == 0
    with kf.kernel_socket(ns) as sock:
        _kernel_sends(sock, 20)
        assert kf.wait_readable(fd)
        # sendto() returns once the frame is in the TAP's queue (the qdisc is bypassed
        # when empty, and tun_net_xmit queues synchronously), so all 20 are there.
        assert batch.read(fd) == 20
    assert [_index(f) for f in batch.frames()] == list(range(20))
    assert batch.truncated == 0
    assert all(batch.lengths[:20] == 14 + 20 + 8 + 16)
    assert batch.read(fd) == 0


@pytest.mark.netns
def test_tap_read_respects_max_frames(tapio_impl, tap):
    ns, fd = tap
    batch = tapio_impl.FrameBatch(64, FRAME_SIZE)
    with kf.kernel_socket(ns) as sock:
        _kernel_sends(sock, 100)
    assert kf.wait_readable(fd)
    assert batch.read(fd) == 64
    first = [_index(f) for f in batch.frames()]
    assert batch.read(fd) == 36
    second = [_index(f) for f in batch.frames()]
    assert first + second == list(range(100))
    assert batch.read(fd) == 0


@pytest.mark.netns
def test_tap_truncation(tapio_impl, tap):
    ns, fd = tap
    batch = tapio_impl.FrameBatch(8, 64)
    with kf.kernel_socket(ns) as sock:
        sock.sendto(b"x" * 100, (kf.PEER_IP, 9999))  # 142-byte frame
        sock.sendto(b"y" * 8, (kf.PEER_IP, 9999))    # 50-byte frame
    assert kf.wait_readable(fd)
    assert batch.read(fd) == 2
    assert list(batch.lengths[:2]) == [64, 50]
    assert batch.truncated == 1
    head = bytes(batch.frame(0))
    assert head[:12] == kf.PEER_MAC + kf.TAP_MAC and kf.ethertype(head) == kf.ETH_P_IP


@pytest.mark.netns
def test_tap_write_batch_reaches_a_kernel_socket(tapio_impl, tap):
    ns, fd = tap
    with kf.kernel_socket(ns) as sock:
        sock.bind((kf.TAP_IP, 6000))
        sock.setblocking(False)
        frames = [kf.udp_frame(7000, 6000, b"datagram %d" % i, ident=i + 1) for i in range(50)]
        assert tapio_impl.write_batch(fd, frames) == 50
        got = []
        while len(got) < 50 and kf.wait_readable(sock.fileno()):
            while True:
                try:
                    data, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                assert addr == (kf.PEER_IP, 7000)
                got.append(data)
    assert got == [b"datagram %d" % i for i in range(50)]


@pytest.mark.netns
def test_tap_write_batch_error_concerns_the_first_frame(tapio_impl, tap):
    """A TAP refuses a frame shorter than an Ethernet header (EINVAL, drivers/net/tun.c)."""
    ns, fd = tap
    good = kf.udp_frame(7000, 6000, b"ok")
    frames = [good, b"short", good]
    assert tapio_impl.write_batch(fd, frames) == 1
    with pytest.raises(OSError) as exc:
        tapio_impl.write_batch(fd, frames[1:])
    assert exc.value.errno == errno.EINVAL
    assert tapio_impl.write_batch(fd, frames[2:]) == 1  # the caller dropped the bad frame
