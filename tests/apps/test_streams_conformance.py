"""Conformance suite for asyncio streams: one test, run on the kernel's sockets and on pystack's.

Every test runs for ``world.kind`` ``"kernel"`` (the reference: asyncio's own
streams on kernel sockets) and ``"pystack"`` (``pystack.asyncio``); most run
in both roles, the side under test as the client of a kernel server
(``role="client"``) and as the server of kernel clients (``role="server"``).
The kernel peer lives in the far namespace: blocking stdlib sockets with
timeouts driven from worker threads (``asyncio.to_thread``), or asyncio in a
thread of its own (:class:`PeerLoop`) where it needs many connections.

What is checked, after trio's stream conformance checks
(``trio/testing/_check_streams.py``) and asyncio's documented stream
semantics: ordering of thousands of mixed-size writes (SHA-256), half-close
in both directions, closing while a read waits, 8 MiB through a peer that does
not read (``drain()`` blocks and the transport's buffer stays bounded near its
high-water mark), reset by the peer (``SO_LINGER`` (1, 0), socket(7)),
``readexactly``/``IncompleteReadError``, ``readline``/``readuntil`` past the
limit, ``at_eof``, ``get_extra_info``, ``wait_closed``, the Server's life
cycle, and 200 concurrent connections through one server.

Every wait is bounded: each test body runs under ``asyncio.wait_for``, every
peer socket has a timeout, every thread join a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import random
import socket
import struct
import threading

import pytest
from apps_harness import world  # noqa: F401  (the fixture)

pytestmark = pytest.mark.netns

TEST_TIMEOUT = 60.0  # a whole test body
PEER_TIMEOUT = 30.0  # every blocking call of a peer socket
MiB = 1 << 20


@pytest.fixture(params=["client", "server"])
def role(request):
    """The side under test opens the connection (client) or accepts it (server)."""
    return request.param


def run(coro, timeout: float = TEST_TIMEOUT):
    """Run ``coro`` in a fresh event loop, bounded by ``timeout`` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# -- the kernel peer: blocking sockets in the far namespace ----------------------------------


def peer_listener(world, backlog: int = 8) -> socket.socket:
    sock = world.peer_socket()
    try:
        sock.settimeout(PEER_TIMEOUT)
        sock.bind((world.peer_ip, 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_connect(world, port: int) -> socket.socket:
    sock = world.peer_socket()
    try:
        sock.settimeout(PEER_TIMEOUT)
        sock.connect((world.ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def recv_to_eof(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(256 * 1024):
        parts.append(data)
    return b"".join(parts)


def sha_to_eof(sock: socket.socket) -> tuple[int, str]:
    """Read ``sock`` to its end; return (byte count, SHA-256 hex)."""
    h, n = hashlib.sha256(), 0
    while data := sock.recv(256 * 1024):
        h.update(data)
        n += len(data)
    return n, h.hexdigest()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the kernel sends RST instead of FIN (socket(7), SO_LINGER)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def quietly_close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


@contextlib.asynccontextmanager
async def connected(world, role: str, **kwargs):
    """(reader, writer) on the side under test and the kernel peer's blocking socket, connected.

    ``role="client"``: the side under test connects to a kernel listener;
    ``role="server"``: a kernel client connects to the side under test's server
    (closed again once the connection is accepted; its ``wait_closed`` is
    awaited at the end, as since Python 3.12 it waits for the connection too).
    """
    server = None
    if role == "client":
        listener = peer_listener(world)
        try:
            accepting = asyncio.ensure_future(asyncio.to_thread(listener.accept))
            try:
                reader, writer = await world.open_connection(world.peer_ip, listener.getsockname()[1], **kwargs)
            except BaseException:
                accepting.cancel()
                raise
            peer, _ = await accepting
        finally:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting (Linux: EINVAL)
            listener.close()
    else:
        accepted: asyncio.Queue = asyncio.Queue()
        server = await world.start_server(lambda r, w: accepted.put_nowait((r, w)), world.ip, 0, **kwargs)
        try:
            port = server.sockets[0].getsockname()[1]
            peer = await asyncio.to_thread(peer_connect, world, port)
            reader, writer = await accepted.get()
        finally:
            server.close()
    try:
        yield reader, writer, peer
    finally:
        await quietly_close(writer)
        peer.close()
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), 10)


def in_thread(fn, *args) -> asyncio.Future:
    """Run blocking peer code in a worker thread (already started when this returns)."""
    return asyncio.ensure_future(asyncio.to_thread(fn, *args))


class PeerLoop:
    """An asyncio event loop in a thread of its own, for kernel peers with many connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="peer-loop", daemon=True)
        self.thread.start()

    async def run(self, coro):
        """Await ``coro`` run in the peer loop (cancelled there if we are cancelled)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the peer loop did not stop"
        self.loop.close()


@pytest.fixture
def peer_loop():
    pl = PeerLoop()
    try:
        yield pl
    finally:
        pl.close()


async def peer_open(world, port: int, limit: int = 2**16):
    """asyncio.open_connection from the far namespace to the side under test (call in the peer loop)."""
    sock = world.peer_socket()
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (world.ip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


# -- ordering ------------------------------------------------------------------------------


def mixed_sizes(rng: random.Random, count: int) -> list[int]:
    """Write sizes from 1 byte to 20 kB, mostly small: segment boundaries fall everywhere."""
    sizes = []
    for _ in range(count):
        r = rng.random()
        if r < 0.6:
            sizes.append(rng.randint(1, 200))
        elif r < 0.9:
            sizes.append(rng.randint(200, 5000))
        else:
            sizes.append(rng.randint(5000, 20000))
    return sizes


def echo_to_eof(sock: socket.socket) -> int:
    n = 0
    while data := sock.recv(65536):
        sock.sendall(data)
        n += len(data)
    sock.shutdown(socket.SHUT_WR)
    return n


def test_ordering_through_an_echo(world, role):
    """2,000 writes (and writelines) of mixed sizes, echoed by the peer, read back with mixed read
    sizes: every byte arrives once and in order."""
    rng = random.Random(20240605)
    chunks = [rng.randbytes(n) for n in mixed_sizes(rng, 2000)]
    sent = hashlib.sha256(b"".join(chunks)).hexdigest()
    total = sum(map(len, chunks))

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            echo = in_thread(echo_to_eof, peer)

            async def send():
                i = 0
                while i < len(chunks):
                    if i % 10 == 9:
                        writer.writelines(chunks[i : i + 3])
                        i += 3
                    else:
                        writer.write(chunks[i])
                        i += 1
                    if i % 7 == 0:
                        await writer.drain()
                await writer.drain()
                writer.write_eof()

            async def receive():
                h, n = hashlib.sha256(), 0
                sizes = (1, 7, 100, 1460, 4096, 65536, -1)
                while True:
                    data = await reader.read(rng.choice(sizes))
                    if not data:
                        break
                    h.update(data)
                    n += len(data)
                return n, h.hexdigest()

            _, got = await asyncio.gather(send(), receive())
            assert await echo == total
            assert got == (total, sent)
            assert reader.at_eof()

    run(main())


def test_ordering_from_the_peer(world, role):
    """The peer writes 3,000 mixed-size pieces; readexactly of mixed sizes gets them in order."""
    rng = random.Random(7)
    chunks = [rng.randbytes(n) for n in mixed_sizes(rng, 3000)]
    blob = b"".join(chunks)

    def peer_sends(sock):
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(1)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            sender = in_thread(peer_sends, peer)
            got, left = [], len(blob)
            while left:
                n = min(left, rng.choice((1, 3, 1000, 1460, 8192, 50000)))
                got.append(await reader.readexactly(n))
                left -= n
            assert await reader.read() == b""
            assert reader.at_eof()
            writer.close()
            assert await sender == b""  # our close is the peer's end of file
            assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(blob).digest()

    run(main())


# -- half-close ------------------------------------------------------------------------------


def test_write_eof_then_read_the_answer(world, role):
    """We send a request and write_eof (a FIN, RFC 9293 §3.6); the peer answers after our end of file."""
    request = random.Random(1).randbytes(300_000)
    answer = random.Random(2).randbytes(1_000_000)

    def peer_answers(sock):
        n, digest = sha_to_eof(sock)
        sock.sendall(f"{n} {digest}\n".encode() + answer)
        sock.close()

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            answering = in_thread(peer_answers, peer)
            assert writer.can_write_eof()
            writer.write(request)
            await writer.drain()
            writer.write_eof()
            assert not writer.is_closing()
            line = await reader.readline()
            assert line == f"{len(request)} {hashlib.sha256(request).hexdigest()}\n".encode()
            assert not reader.at_eof()
            assert await reader.read() == answer
            assert reader.at_eof()
            await answering

    run(main())


def test_peer_half_closes_and_we_keep_writing(world, role):
    """The peer shuts down its sending side; we read its end of file and go on writing 2 MB."""
    payload = random.Random(3).randbytes(2_000_000)

    def peer_half_closes(sock):
        sock.sendall(b"question")
        sock.shutdown(socket.SHUT_WR)
        return sha_to_eof(sock)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            peer_side = in_thread(peer_half_closes, peer)
            assert await reader.read() == b"question"
            assert reader.at_eof()
            assert not writer.is_closing()  # StreamReaderProtocol keeps the transport open after EOF
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i : i + 100_000])
                await writer.drain()
            writer.write_eof()
            assert await peer_side == (len(payload), hashlib.sha256(payload).hexdigest())

    run(main())


# -- close while a read waits --------------------------------------------------------------


def test_read_waiting_when_the_peer_closes(world, role):
    async def main():
        async with connected(world, role) as (reader, writer, peer):
            pending = asyncio.ensure_future(reader.read(100))
            await asyncio.sleep(0)  # the task is now waiting for data
            assert not pending.done()
            peer.close()
            assert await pending == b""
            assert reader.at_eof()

    run(main())


def test_readexactly_waiting_when_the_peer_closes(world, role):
    async def main():
        async with connected(world, role) as (reader, writer, peer):
            pending = asyncio.ensure_future(reader.readexactly(10))
            await asyncio.sleep(0)
            peer.sendall(b"abc")
            peer.close()
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await pending
            assert info.value.partial == b"abc"
            assert info.value.expected == 10
            assert reader.at_eof()

    run(main())


def test_read_waiting_when_we_close(world, role):
    """Closing our own writer ends a pending read with b"" (connection_lost(None) feeds EOF)."""

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            pending = asyncio.ensure_future(reader.read(100))
            await asyncio.sleep(0)
            writer.close()
            assert writer.is_closing()
            await writer.wait_closed()
            assert await pending == b""
            assert await asyncio.to_thread(peer.recv, 100) == b""  # the peer sees our FIN

    run(main())


def test_close_flushes_what_was_written(world, role):
    """close() right after a big write: the transport sends everything, then the FIN."""
    payload = random.Random(4).randbytes(3 * MiB)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            receiving = in_thread(sha_to_eof, peer)
            writer.write(payload)
            writer.close()
            assert writer.is_closing()
            await writer.wait_closed()
            assert await receiving == (len(payload), hashlib.sha256(payload).hexdigest())
            assert await reader.read() == b""

    run(main())


# -- flow control --------------------------------------------------------------------------


class FlowWatch:
    """Counts pause_writing/resume_writing calls the transport makes on the stream's protocol."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.paused = asyncio.Event()
        self.pauses = self.resumes = 0
        protocol = writer.transport.get_protocol()
        pause, resume = protocol.pause_writing, protocol.resume_writing

        def on_pause():
            self.pauses += 1
            self.paused.set()
            pause()

        def on_resume():
            self.resumes += 1
            self.paused.clear()
            resume()

        protocol.pause_writing, protocol.resume_writing = on_pause, on_resume


def test_large_write_to_a_slow_reader(world, role):
    """8 MiB to a peer that first does not read: drain() blocks, the transport's buffer stays
    within one write of its high-water mark, and everything arrives once the peer reads."""
    payload = random.Random(5).randbytes(8 * MiB)
    chunk = 64 * 1024
    go = threading.Event()

    def slow_reader(sock):
        if not go.wait(PEER_TIMEOUT):
            raise TimeoutError("never told to read")
        return sha_to_eof(sock)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            transport = writer.transport
            low, high = transport.get_write_buffer_limits()
            watch = FlowWatch(writer)
            reading = in_thread(slow_reader, peer)
            progress = {"sent": 0, "most_buffered": 0}

            async def write_all():
                for i in range(0, len(payload), chunk):
                    writer.write(payload[i : i + chunk])
                    progress["most_buffered"] = max(progress["most_buffered"], transport.get_write_buffer_size())
                    await writer.drain()
                    progress["sent"] = i + chunk
                writer.write_eof()

            writing = asyncio.ensure_future(write_all())
            try:
                await asyncio.wait_for(watch.paused.wait(), 20)
                # The peer does not read: once its window and our socket's send buffer are full nothing
                # moves.  There is no event for "nothing happens", so look twice, 0.5 s apart.
                await asyncio.sleep(0.5)
                before = (progress["sent"], watch.resumes)
                await asyncio.sleep(0.5)
                assert (progress["sent"], watch.resumes) == before
                assert watch.paused.is_set() and not writing.done()
                assert high < transport.get_write_buffer_size() <= high + chunk
                assert progress["sent"] < len(payload)
                go.set()
                await writing
            finally:
                go.set()
                writing.cancel()
            assert await reading == (len(payload), hashlib.sha256(payload).hexdigest())
            assert watch.pauses >= 1 and watch.resumes == watch.pauses
            assert progress["most_buffered"] <= high + chunk
            assert transport.get_write_buffer_size() == 0

    run(main())


def test_we_read_slowly_and_the_peer_waits(world, role):
    """The peer writes 8 MiB while we read nothing: our transport pauses reading past 2 * limit, our
    receive window closes (RFC 9293 §3.8.6) and the peer's sendall stalls; then everything arrives."""
    payload = random.Random(6).randbytes(8 * MiB)
    chunk = 64 * 1024
    progress = {"sent": 0}

    def peer_writes(sock):
        for i in range(0, len(payload), chunk):
            sock.sendall(payload[i : i + chunk])
            progress["sent"] = i + chunk
        sock.shutdown(socket.SHUT_WR)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            transport = writer.transport
            reading_paused = asyncio.Event()
            pause_reading = transport.pause_reading

            def on_pause_reading():
                pause_reading()
                reading_paused.set()

            transport.pause_reading = on_pause_reading  # the StreamReader calls it past 2 * limit
            # A fixed receive buffer (socket(7): setting SO_RCVBUF turns Linux's autotuning off, which
            # could otherwise grow it towards tcp_rmem's maximum, 32 MiB here): with the peer's send
            # buffer (at most tcp_wmem's 4 MiB) well under 8 MiB in all.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            writing = in_thread(peer_writes, peer)
            await asyncio.wait_for(reading_paused.wait(), 20)
            await asyncio.sleep(0.5)  # no event for "nothing moves": look twice, 0.5 s apart
            before = progress["sent"]
            await asyncio.sleep(0.5)
            assert progress["sent"] == before < len(payload)
            assert not writing.done()
            h, n = hashlib.sha256(), 0
            while data := await reader.read(65536):
                h.update(data)
                n += len(data)
            await writing
            assert (n, h.digest()) == (len(payload), hashlib.sha256(payload).digest())

    run(main())


# -- reset by the peer ---------------------------------------------------------------------


def test_reset_while_a_read_waits(world, role):
    """The peer closes with SO_LINGER (1, 0): the pending read raises ConnectionResetError
    (RFC 9293 §3.10.7.4: a RST in a synchronized state), so do write+drain and wait_closed."""

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            pending = asyncio.ensure_future(reader.read(100))
            await asyncio.sleep(0)
            reset(peer)
            with pytest.raises(ConnectionResetError):
                await pending
            writer.write(b"after the reset")
            with pytest.raises(ConnectionResetError):
                await writer.drain()
            with pytest.raises(ConnectionResetError):
                await writer.wait_closed()
            assert writer.is_closing()

    run(main())


def test_reset_with_unread_data(world, role):
    """The peer resets with our data unread in its receive queue; our reads end in ConnectionResetError."""

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            writer.write(b"x" * 1000)  # unread by the peer when it resets
            await writer.drain()
            await asyncio.to_thread(peer.recv, 1)
            reset(peer)
            with pytest.raises(ConnectionResetError):
                while await reader.read(1000):
                    pass

    run(main())


def test_reset_while_writing(world, role):
    """A peer that reads a little then resets stops a writer looping on write+drain."""

    def read_some_then_reset(sock):
        left = 100_000
        while left > 0:
            left -= len(sock.recv(min(left, 65536)))
        reset(sock)

    async def main():
        async with connected(world, role) as (reader, writer, peer):
            resetting = in_thread(read_some_then_reset, peer)
            block = b"y" * 65536
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(100_000):
                    writer.write(block)
                    await writer.drain()
            await resetting

    run(main())


def test_reset_while_both_directions_are_backed_up(world, role):
    """Nobody reads on either side (our transport has paused reading, data waits in its write
    buffer) when the peer resets: the transport learns it from a failing send() alone, closes, and
    drain() raises."""

    async def main():
        async with connected(world, role, limit=1024) as (reader, writer, peer):
            transport = writer.transport
            reading_paused = asyncio.Event()
            pause_reading = transport.pause_reading

            def on_pause_reading():
                pause_reading()
                reading_paused.set()

            transport.pause_reading = on_pause_reading  # the StreamReader calls it past 2 * limit
            await asyncio.to_thread(peer.sendall, b"z" * 20_000)
            await asyncio.wait_for(reading_paused.wait(), 10)
            writer.write(b"w" * (4 * MiB))  # the peer reads nothing: most of it stays queued here
            assert transport.get_write_buffer_size() > 0
            reset(peer)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await asyncio.wait_for(writer.drain(), 10)
            assert transport.is_closing()

    run(main())


# -- the reader's own rules ----------------------------------------------------------------


def test_readexactly_and_incomplete_read(world, role):
    async def main():
        async with connected(world, role) as (reader, writer, peer):
            peer.sendall(b"0123456789")
            peer.shutdown(socket.SHUT_WR)
            assert await reader.readexactly(0) == b""
            assert await reader.readexactly(4) == b"0123"
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(100)
            assert info.value.partial == b"456789" and info.value.expected == 100
            assert reader.at_eof()
            assert await reader.read() == b""

    run(main())


def test_readuntil_past_the_limit_keeps_the_data(world, role):
    """readuntil raises LimitOverrunError when the line is longer than ``limit``; the data stays."""
    line = b"a" * 3000 + b"\n"

    async def main():
        async with connected(world, role, limit=1024) as (reader, writer, peer):
            peer.sendall(line + b"tail\n")
            peer.shutdown(socket.SHUT_WR)
            with pytest.raises(asyncio.LimitOverrunError):
                await reader.readuntil(b"\n")
            assert await reader.readexactly(len(line)) == line
            assert await reader.readline() == b"tail\n"
            assert await reader.readline() == b""
            assert reader.at_eof()

    run(main())


def test_readline_past_the_limit(world, role):
    """readline turns the overrun into ValueError and drops what it looked at."""

    async def main():
        async with connected(world, role, limit=1024) as (reader, writer, peer):
            peer.sendall(b"b" * 3000 + b"\n" + b"tail\n")
            peer.shutdown(socket.SHUT_WR)
            with pytest.raises(ValueError):
                await reader.readline()
            rest = await reader.read()
            assert rest.endswith(b"tail\n")
            assert set(rest[: -len(b"tail\n")]) <= set(b"b\n")
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readuntil(b"\n")
            assert info.value.partial == b""

    run(main())


def test_readuntil_separators_and_eof(world, role):
    async def main():
        async with connected(world, role) as (reader, writer, peer):
            assert not reader.at_eof()
            peer.sendall(b"one\r\ntwo\r\nthree")
            peer.shutdown(socket.SHUT_WR)
            assert await reader.readuntil(b"\r\n") == b"one\r\n"
            assert await reader.readline() == b"two\r\n"
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readuntil(b"\r\n")
            assert info.value.partial == b"three"
            assert reader.at_eof()

    run(main())


# -- extra info ----------------------------------------------------------------------------


def test_extra_info(world, role):
    async def main():
        async with connected(world, role) as (reader, writer, peer):
            peername, sockname = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            assert peername == peer.getsockname()
            assert sockname == peer.getpeername()
            assert peername[0] == world.peer_ip and sockname[0] == world.ip
            sock = writer.get_extra_info("socket")
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert sock.getpeername() == peername and sock.getsockname() == sockname
            assert sock.fileno() >= 0
            assert writer.get_extra_info("nonexistent", "default") == "default"
            assert writer.transport.get_extra_info("peername") == peername
            if world.kind == "pystack":  # the guard: this stream really runs on the Stack
                rows = world.stack.status()["tcp"]
                assert {"local": "%s:%d" % sockname, "remote": "%s:%d" % peername, "state": "ESTABLISHED"} in [
                    {k: r[k] for k in ("local", "remote", "state")} for r in rows]

    run(main())


# -- servers -------------------------------------------------------------------------------


async def echo_handler(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def test_server_life_cycle(world):
    """start_serving=False, start_serving(), serve_forever() cancelled, close, wait_closed, and the
    port refuses connections afterwards (RFC 9293 §3.10.7.1: a SYN to a closed port gets RST)."""

    def exchange(port, message):
        with peer_connect(world, port) as sock:
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            return recv_to_eof(sock)

    async def main():
        server = await world.start_server(echo_handler, world.ip, 0, start_serving=False)
        try:
            assert not server.is_serving()
            (lsock,) = server.sockets
            address = lsock.getsockname()
            assert address[0] == world.ip and address[1] > 0
            assert server.get_loop() is asyncio.get_running_loop()
            await server.start_serving()
            assert server.is_serving()
            assert await asyncio.to_thread(exchange, address[1], b"ping") == b"ping"
            forever = asyncio.ensure_future(server.serve_forever())
            assert await asyncio.to_thread(exchange, address[1], b"pong") == b"pong"
            forever.cancel()
            with pytest.raises(asyncio.CancelledError):
                await forever
            assert not server.is_serving()  # serve_forever closes the server when cancelled
            await asyncio.wait_for(server.wait_closed(), 10)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.to_thread(exchange, address[1], b"late")
        finally:
            server.close()

    run(main())


def test_server_async_with_and_close(world):
    async def main():
        async with await world.start_server(echo_handler, world.ip, 0) as server:
            assert server.is_serving()
            port = server.sockets[0].getsockname()[1]
        assert not server.is_serving()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(peer_connect, world, port)

    run(main())


def test_connection_refused(world):
    async def main():
        listener = peer_listener(world)
        port = listener.getsockname()[1]
        listener.close()  # nobody listens there any more
        with pytest.raises(ConnectionRefusedError):
            await world.open_connection(world.peer_ip, port)

    run(main())


def test_connect_to_a_silent_address(world):
    """Nobody answers ARP: the connect fails with EHOSTUNREACH once address resolution gives up
    (RFC 1122 §2.3.2.2; Linux: 3 probes 1 s apart), reported through SO_ERROR to loop.sock_connect."""

    async def main():
        with pytest.raises(OSError) as info:
            await asyncio.wait_for(world.open_connection(world.silent_ip, 80), 15)
        assert info.value.errno == errno.EHOSTUNREACH

    run(main())


CONNECTIONS = 200


def test_many_connections_through_one_server(world, peer_loop):
    """200 kernel clients connected at once to one server on the side under test, each echoed."""
    state = {"open": 0, "peak": 0}

    async def handler(reader, writer):
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            await echo_handler(reader, writer)
        finally:
            state["open"] -= 1

    async def clients(port):
        streams = await asyncio.gather(*(peer_open(world, port) for _ in range(CONNECTIONS)))
        try:
            # Every client is connected before any sends: the server holds all of them at once.
            for i, (reader, writer) in enumerate(streams):
                writer.write(b"client %d\n" % i)
            answers = await asyncio.gather(*(reader.readline() for reader, _ in streams))
            for _, writer in streams:
                writer.write_eof()
            ends = await asyncio.gather(*(reader.read() for reader, _ in streams))
            return answers, ends
        finally:
            for _, writer in streams:
                writer.close()

    async def main():
        server = await world.start_server(handler, world.ip, 0, backlog=CONNECTIONS)
        try:
            port = server.sockets[0].getsockname()[1]
            answers, ends = await peer_loop.run(clients(port))
            assert answers == [b"client %d\n" % i for i in range(CONNECTIONS)]
            assert ends == [b""] * CONNECTIONS
            assert state["peak"] == CONNECTIONS
        finally:
            server.close()
            await server.wait_closed()

    run(main(), timeout=120)


def test_many_connections_to_one_kernel_server(world, peer_loop):
    """200 connections opened at once by the side under test to one kernel asyncio server."""
    async def serve():
        sock = world.peer_socket()
        sock.bind((world.peer_ip, 0))
        sock.listen(CONNECTIONS)
        sock.setblocking(False)
        return await asyncio.start_server(echo_handler, sock=sock)

    async def stop(server):
        server.close()
        await server.wait_closed()

    async def main():
        server = await peer_loop.run(serve())
        try:
            port = server.sockets[0].getsockname()[1]
            streams = await asyncio.gather(*(world.open_connection(world.peer_ip, port) for _ in range(CONNECTIONS)), return_exceptions=True)
            try:
                errors = [s for s in streams if isinstance(s, BaseException)]
                assert not errors, errors[:3]
                for i, (_, writer) in enumerate(streams):
                    writer.write(b"n%d\n" % i)
                answers = await asyncio.gather(*(reader.readline() for reader, _ in streams))
                assert answers == [b"n%d\n" % i for i in range(CONNECTIONS)]
            finally:
                for s in streams:
                    if not isinstance(s, BaseException):
                        s[1].close()
                await asyncio.gather(*(s[1].wait_closed() for s in streams if not isinstance(s, BaseException)),
                                     return_exceptions=True)
        finally:
            await peer_loop.run(stop(server))

    run(main(), timeout=120)
