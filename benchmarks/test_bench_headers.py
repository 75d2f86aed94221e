"""One-call frame parse and segment emit: pure twin (py) vs Cython (c).

``parse``: ``parse_frame(buf, 0, n)`` with ``verify=True`` of a full-size TCP
frame (timestamps option, 1448 bytes of payload, 1514 bytes in all) sitting
in a preallocated bytearray, as a batch-read frame does.
``emit``: ``emit_tcp`` of the same segment into a preallocated buffer,
copying the 1448-byte payload.  ``emit-staged``: the same with the payload
already in place (``payload=None, payload_len=1448``).
"""

from __future__ import annotations

import os
import struct

import pytest

from pystack._accel import fast_module
from pystack.wire import _headers_py

# Each timed round runs the call enough times to last at least this long, so
# the median is not a single call plus the timer's own cost -- which is what
# the calibration settles on whenever its first call is preempted on a busy
# machine.
MIN_TIME = 0.0001

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
TS_OPTION = b"\x01\x01\x08\x0a" + struct.pack("!II", 123456789, 987654321)
PAYLOAD = os.urandom(1448)
# eth_dst, eth_src, ip_src, ip_dst, sport, dport, seq, ack, flags, window
HEADER = (MAC_B, MAC_A, 0x0A000001, 0x0A000002, 40000, 80, 0x12345678, 0x9ABCDEF0, 0x18, 502)


@pytest.fixture(params=["py", "c"])
def impl(request):
    if request.param == "py":
        return _headers_py
    try:
        return fast_module("headers")
    except ImportError as exc:
        pytest.skip(f"pystack._fast.headers is not built ({exc})")


def _frame():
    buf = bytearray(2048)
    n = _headers_py.emit_tcp(buf, 0, *HEADER, options=TS_OPTION, payload=PAYLOAD)
    assert n == 1514
    return buf, n


@pytest.mark.benchmark(group="parse", min_time=MIN_TIME)
def test_parse(benchmark, impl):
    buf, n = _frame()
    f = benchmark(impl.parse_frame, buf, 0, n)
    assert (f.layers, f.payload_len, f.ts_val) == (3, 1448, 123456789)


@pytest.mark.benchmark(group="emit", min_time=MIN_TIME)
def test_emit(benchmark, impl):
    buf = bytearray(2048)
    n = benchmark(impl.emit_tcp, buf, 0, *HEADER, options=TS_OPTION, payload=PAYLOAD)
    assert n == 1514 and (buf, n) == _frame()


@pytest.mark.benchmark(group="emit-staged", min_time=MIN_TIME)
def test_emit_staged(benchmark, impl):
    buf = bytearray(2048)
    buf[66:66 + 1448] = PAYLOAD
    n = benchmark(impl.emit_tcp, buf, 0, *HEADER, options=TS_OPTION, payload_len=1448)
    assert n == 1514 and (buf, n) == _frame()
