"""Internet checksum: pure twin (py) vs Cython (c) vs a plain memory copy.

Groups ``checksum-64``, ``checksum-1500``, ``checksum-65536``: the checksum
of a ``bytes`` object of that size by each implementation, beside the
baseline ``dst_mv[:] = src_mv`` (a copy of the same size between
preallocated buffers, from Python), i.e. "what touching the bytes once from
Python costs".  ``checksum-1500`` also has ``floor_len``: ``len`` of the same
bytes, i.e. what the harness alone spends on calling a C function (the part
of the ``c`` figure that no implementation can remove).
``checksum-1500-memoryview`` sums a memoryview slice at an odd offset (the
buffer-protocol path instead of the bytes fast path).
"""

from __future__ import annotations

import os

import pytest

from pystack._accel import fast_module
from pystack.wire import _checksum_py

# Each timed round runs the call enough times to last at least this long, so
# the median is not a single call plus the timer's own cost -- which is what
# the calibration settles on whenever its first call is preempted on a busy
# machine.
MIN_TIME = 0.0001

SIZES = (64, 1500, 65536)


@pytest.fixture(params=["py", "c"])
def impl(request):
    if request.param == "py":
        return _checksum_py
    try:
        return fast_module("checksum")
    except ImportError as exc:
        pytest.skip(f"pystack._fast.checksum is not built ({exc})")


def _data(size: int) -> bytes:
    return os.urandom(size)


def _bench_checksum(benchmark, impl, size):
    data = _data(size)
    result = benchmark(impl.checksum, data)
    assert result == _checksum_py.checksum(data)


def _bench_memcpy(benchmark, size):
    src_mv = memoryview(bytearray(_data(size)))
    dst_mv = memoryview(bytearray(size))

    def copy():
        dst_mv[:] = src_mv

    benchmark(copy)
    assert dst_mv == src_mv


@pytest.mark.benchmark(group="checksum-64", min_time=MIN_TIME)
def test_checksum_64(benchmark, impl):
    _bench_checksum(benchmark, impl, 64)


@pytest.mark.benchmark(group="checksum-64", min_time=MIN_TIME)
def test_memcpy_64(benchmark):
    _bench_memcpy(benchmark, 64)


@pytest.mark.benchmark(group="checksum-1500", min_time=MIN_TIME)
def test_checksum_1500(benchmark, impl):
    _bench_checksum(benchmark, impl, 1500)


@pytest.mark.benchmark(group="checksum-1500", min_time=MIN_TIME)
def test_memcpy_1500(benchmark):
    _bench_memcpy(benchmark, 1500)


@pytest.mark.benchmark(group="checksum-65536", min_time=MIN_TIME)
def test_checksum_65536(benchmark, impl):
    _bench_checksum(benchmark, impl, 65536)


@pytest.mark.benchmark(group="checksum-65536", min_time=MIN_TIME)
def test_memcpy_65536(benchmark):
    _bench_memcpy(benchmark, 65536)


@pytest.mark.benchmark(group="checksum-1500-memoryview", min_time=MIN_TIME)
def test_checksum_1500_memoryview(benchmark, impl):
    view = memoryview(bytearray(_data(1501)))[1:]
    result = benchmark(impl.checksum, view)
    assert result == _checksum_py.checksum(view)


@pytest.mark.benchmark(group="checksum-1500", min_time=MIN_TIME)
def test_floor_len_1500(benchmark):
    """The harness's own cost of one call of a C function on the same bytes (``len``)."""
    data = _data(1500)
    assert benchmark(len, data) == 1500
