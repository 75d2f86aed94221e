"""TCP reassembly buffer: pure twin (py) vs Cython (c).

One round is a batch of 100 full-size segments (1448 bytes of payload) put
into a 256 KiB :class:`Assembler` and then read out with ``read_into`` into a
preallocated buffer; divide a round's median by 100 for the per-segment cost.
The sequence numbers start near 2**32 so they wrap during the run.

``assembler-inorder``: the segments arrive in order (each insert advances
RCV.NXT).  ``assembler-ooo``: they arrive in reverse order, all within the
window: 99 out-of-order inserts that each extend one held range leftwards,
then the first segment, which delivers all 100 at once.
"""

from __future__ import annotations

import os

import pytest

from pystack._accel import fast_module
from pystack.storage import _assembler_py

SEG = 1448
BATCH = 100
CAPACITY = 256 * 1024
MOD = 1 << 32
PAYLOAD = os.urandom(SEG)


@pytest.fixture(params=["py", "c"])
def impl(request):
    if request.param == "py":
        return _assembler_py
    try:
        return fast_module("assembler")
    except ImportError as exc:
        pytest.skip(f"pystack._fast.assembler is not built ({exc})")


def _bench(benchmark, impl, order):
    asm = impl.Assembler(CAPACITY, rcv_nxt=MOD - 3 * BATCH * SEG)
    out = bytearray(BATCH * SEG)
    payload = PAYLOAD

    def one_batch():
        base = asm.rcv_nxt
        for i in order:
            asm.insert((base + i * SEG) % MOD, payload)
        return asm.read_into(out)

    assert benchmark(one_batch) == BATCH * SEG
    assert asm.readable == 0 and asm.range_count == 0
    assert out[-SEG:] == PAYLOAD


@pytest.mark.benchmark(group="assembler-inorder")
def test_assembler_inorder(benchmark, impl):
    _bench(benchmark, impl, range(BATCH))


@pytest.mark.benchmark(group="assembler-ooo")
def test_assembler_ooo(benchmark, impl):
    _bench(benchmark, impl, range(BATCH - 1, -1, -1))
