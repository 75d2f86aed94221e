"""Pipe: order, latency, poll_at, copies, capacity, closing."""

from __future__ import annotations

import pytest

from pystack.phy.device import Device
from pystack.phy.pipe import Pipe


def frames(n, size=60, tag=0):
    return [bytes([tag, i]) + bytes(size - 2) for i in range(n)]


def test_endpoints_are_devices():
    pipe = Pipe()
    assert isinstance(pipe.a, Device) and isinstance(pipe.b, Device)
    assert pipe.a.mtu == pipe.b.mtu == 1500


def test_zero_latency_delivers_in_order_both_ways():
    pipe = Pipe()
    sent_ab, sent_ba = frames(5, tag=1), frames(3, tag=2)
    assert pipe.a.transmit(sent_ab, 0) == 5
    assert pipe.b.transmit(sent_ba, 0) == 3
    assert pipe.b.receive(0) == sent_ab
    assert pipe.a.receive(0) == sent_ba
    assert pipe.a.receive(0) == [] and pipe.b.receive(0) == []


def test_latency_and_poll_at():
    pipe = Pipe(latency=250)
    assert pipe.b.poll_at() is None
    pipe.a.transmit(frames(2), 1000)
    pipe.a.transmit(frames(1, tag=9), 1100)
    assert pipe.b.poll_at() == 1250
    assert pipe.poll_at() == 1250
    assert pipe.a.poll_at() is None
    assert pipe.b.receive(1249) == []
    assert pipe.b.receive(1250) == frames(2)
    assert pipe.b.poll_at() == 1350
    assert pipe.b.receive(1349) == []
    assert pipe.b.receive(5000) == frames(1, tag=9)
    assert pipe.b.poll_at() is None


def test_order_kept_even_if_sender_clock_goes_back():
    pipe = Pipe(latency=100)
    pipe.a.transmit([b"first"], 500)
    pipe.a.transmit([b"second"], 400)
    # "second" is due at 500 but stays behind "first" (due 600).
    assert pipe.b.receive(550) == []
    assert pipe.b.receive(600) == [b"first", b"second"]


def test_frames_are_copied_on_transmit():
    pipe = Pipe()
    buf = bytearray(b"A" * 60)
    pipe.a.transmit([buf, memoryview(buf)], 0)
    buf[:] = b"B" * 60
    got = pipe.b.receive(0)
    assert got == [b"A" * 60, b"A" * 60]
    assert all(type(f) is bytes for f in got)


def test_oversize_frame_rejected_and_nothing_sent():
    pipe = Pipe(mtu=100)
    with pytest.raises(ValueError, match="114-byte limit"):
        pipe.a.transmit([bytes(114), bytes(115)], 0)
    assert pipe.b.pending == 0


def test_capacity_takes_part_of_a_batch():
    pipe = Pipe(capacity=3)
    assert pipe.a.transmit(frames(5), 0) == 3
    assert pipe.a.transmit(frames(1), 0) == 0
    assert len(pipe.b.receive(0)) == 3
    assert pipe.a.transmit(frames(5)[3:], 0) == 2


def test_close():
    pipe = Pipe(latency=10)
    pipe.a.transmit(frames(2), 0)
    pipe.b.close()
    assert pipe.b.poll_at() is None
    assert pipe.a.transmit(frames(2), 0) == 2  # a cable to nowhere swallows frames
    with pytest.raises(ValueError):
        pipe.b.receive(100)
    with pytest.raises(ValueError):
        pipe.b.transmit(frames(1), 100)


@pytest.mark.parametrize("kwargs", [{"mtu": 67}, {"latency": -1}, {"capacity": 0}, {"latency": 1.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Pipe(**kwargs)
