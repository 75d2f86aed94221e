"""8 MiB through asyncio streams each way, kernel kind and pystack kind: SHA-256 checked, MB/s printed.

The side under test is the client of a kernel peer in the far namespace (a
blocking socket in a worker thread).  *send*: we write 8 MiB (256 KiB writes,
``drain()`` after each) and ``write_eof``; the clock stops when the peer's
SHA-256 of everything it read comes back.  *receive*: we ask, the peer
``sendall``s 8 MiB and closes; the clock stops at our end of file.  Each
direction runs ``RUNS`` times on fresh connections and the median is
reported (1 MB = 10**6 bytes), printed and kept as a ``record_property``
value; the figures are a report, not a pass criterion -- only the bytes are
checked.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time

import pytest
from apps_harness import world  # noqa: F401  (the fixture)
from test_streams_conformance import connected, in_thread, run, sha_to_eof

pytestmark = pytest.mark.netns

SIZE = 8 << 20
PIECE = 256 * 1024
RUNS = 3
PAYLOAD = random.Random(8).randbytes(SIZE)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def _report(capsys, record_property, world, direction: str, times: list[float]) -> None:
    secs = statistics.median(times)
    rate = SIZE / secs / 1e6
    record_property(f"{direction}_MBps", round(rate, 2))
    with capsys.disabled():
        print(f"\n  streams {world.kind:7s} {direction:7s}: {SIZE >> 20} MiB in {secs:.3f} s = {rate:.1f} MB/s "
              f"(median of {RUNS}; {', '.join(f'{SIZE / t / 1e6:.0f}' for t in times)})")


async def _send_once(world) -> float:
    def peer(sock):
        n, digest = sha_to_eof(sock)
        sock.sendall(f"{n} {digest}\n".encode())
        sock.close()

    async with connected(world, "client") as (reader, writer, sock):
        reading = in_thread(peer, sock)
        start = time.perf_counter()
        for i in range(0, SIZE, PIECE):
            writer.write(PAYLOAD[i : i + PIECE])
            await writer.drain()
        writer.write_eof()
        answer = await reader.readline()
        secs = time.perf_counter() - start
        await reading
        assert answer == f"{SIZE} {DIGEST}\n".encode()
        return secs


async def _receive_once(world) -> float:
    def peer(sock):
        assert sock.recv(1) == b"?"
        sock.sendall(PAYLOAD)
        sock.close()

    async with connected(world, "client") as (reader, writer, sock):
        sending = in_thread(peer, sock)
        start = time.perf_counter()
        writer.write(b"?")
        h, n = hashlib.sha256(), 0
        while data := await reader.read(PIECE):
            h.update(data)
            n += len(data)
        secs = time.perf_counter() - start
        await sending
        assert (n, h.hexdigest()) == (SIZE, DIGEST)
        return secs


def test_send_8mib(world, capsys, record_property):
    async def main():
        return [await _send_once(world) for _ in range(RUNS)]

    _report(capsys, record_property, world, "send", run(main(), timeout=120))


def test_receive_8mib(world, capsys, record_property):
    async def main():
        return [await _receive_once(world) for _ in range(RUNS)]

    _report(capsys, record_property, world, "receive", run(main(), timeout=120))
