"""pystack.socket between two Stacks joined back to back by an in-memory Pipe (no root needed).

What these prove is the mechanism of :mod:`pystack.runtime.sockets` -- the
hand-offs to each stack's loop thread, the readiness descriptor behind
``fileno()``, blocking / timeout / non-blocking modes, makefile, many threads
at once -- rather than conformance with Linux, which the kernel suites
(``test_socket_kernel_*.py``) check.  Both stacks live in this process: ``A``
(10.66.0.1) and ``B`` (10.66.0.2); every test uses its own ports and closes
what it opens.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import select
import selectors
import struct
import threading
import time

import pytest

import pystack
from pystack import socket as ps
from pystack.phy.pipe import Pipe

A_IP, B_IP = "10.66.0.1", "10.66.0.2"
SILENT_IP = "10.66.0.99"  # on the link, nobody answers ARP
WAIT = 10.0  # the bound of every wait that should succeed
MiB = 1 << 20


@pytest.fixture(scope="module")
def stacks():
    pipe = Pipe()
    a = pystack.Stack(f"{A_IP}/24", device=pipe.a)
    try:
        b = pystack.Stack(f"{B_IP}/24", device=pipe.b)
    except BaseException:
        a.close()
        raise
    try:
        yield a, b
    finally:
        b.close()
        a.close()


_ports = iter(range(20000, 30000))


def port() -> int:
    return next(_ports)


def pair(stacks, **kw):
    """A connected (client on A, server-side socket on B) pair and the listener."""
    a, b = stacks
    p = port()
    srv = ps.create_server(("", p), stack=b)
    cli = ps.create_connection((B_IP, p), timeout=WAIT, stack=a, **kw)
    srv.settimeout(WAIT)
    conn, _ = srv.accept()
    conn.settimeout(WAIT)
    return cli, conn, srv


def ready(sock) -> tuple[bool, bool]:
    r, w, _ = select.select([sock], [sock], [], 0)
    return bool(r), bool(w)


def wait_ready(sock, want: tuple[bool, bool]) -> tuple[bool, bool]:
    """Readiness once it equals ``want`` (bounded by WAIT; select with a timeout, no sleeps)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = ready(sock)
        if got == want or time.monotonic() > deadline:
            return got
        rl = [sock] if want[0] and not got[0] else []
        wl = [sock] if want[1] and not got[1] else []
        if rl or wl:
            select.select(rl, wl, [], max(0.0, deadline - time.monotonic()))
        else:  # waiting for a readiness to go away: nothing to select on; poll the loop instead
            sock.stack.call(lambda: None)


def recv_all(sock) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := sock.recv(1 << 16):
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def test_tcp_1mib_each_way_sha256(stacks):
    cli, conn, srv = pair(stacks)
    up, down = os.urandom(MiB), os.urandom(MiB)
    result = {}

    def server():
        result["server"] = recv_all(conn)  # until the client's FIN
        conn.sendall(down)
        conn.shutdown(ps.SHUT_WR)

    t = threading.Thread(target=server)
    t.start()
    cli.sendall(up)
    cli.shutdown(ps.SHUT_WR)
    got = recv_all(cli)
    t.join(WAIT)
    assert not t.is_alive()
    assert result["server"] == (MiB, hashlib.sha256(up).hexdigest())
    assert got == (MiB, hashlib.sha256(down).hexdigest())
    for s in (cli, conn, srv):
        s.close()


def test_udp_sendto_recvfrom_and_connected(stacks):
    a, b = stacks
    p = port()
    with ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=b) as rx, \
            ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=a) as tx:
        rx.bind(("", p))
        rx.settimeout(WAIT)
        assert tx.sendto(b"first", (B_IP, p)) == 5
        data, addr = rx.recvfrom(100)
        assert data == b"first" and addr[0] == A_IP
        buf = bytearray(3)
        tx.sendto(b"truncated", (B_IP, p))
        assert rx.recvfrom_into(buf) == (3, addr)  # the rest of the datagram is discarded
        assert bytes(buf) == b"tru"
        rx.connect(addr)
        tx.connect((B_IP, p))
        tx.send(b"connected")
        assert rx.recv(100) == b"connected"
        assert tx.getpeername() == (B_IP, p) and rx.getpeername() == addr


def test_timeouts_and_nonblocking(stacks):
    a, b = stacks
    cli, conn, srv = pair(stacks)
    with cli, conn, srv:
        cli.settimeout(0.2)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="timed out"):
            cli.recv(10)
        assert 0.15 < time.monotonic() - t0 < WAIT
        conn.sendall(b"still works")
        assert cli.recv(100) == b"still works"  # a timeout leaves the socket usable
        srv.settimeout(0.1)
        with pytest.raises(TimeoutError):
            srv.accept()
        cli.setblocking(False)
        assert cli.gettimeout() == 0.0 and not cli.getblocking()
        with pytest.raises(BlockingIOError) as e:
            cli.recv(10)
        assert e.value.errno == errno.EAGAIN
        # Fill the send buffer (the peer does not read): send raises EAGAIN, sendall with a timeout times out.
        with pytest.raises(BlockingIOError):
            while True:
                cli.send(bytes(65536))
        cli.settimeout(0.2)
        with pytest.raises(TimeoutError):
            cli.sendall(bytes(MiB))
    s = ps.socket(stack=a)
    s.settimeout(0.3)
    with s, pytest.raises(TimeoutError):
        s.connect((SILENT_IP, 80))  # ARP goes unanswered: still connecting when the timeout ends


def test_nonblocking_selectors_echo(stacks):
    a, b = stacks
    p = port()
    srv = ps.create_server(("", p), stack=b)
    srv.setblocking(False)
    clients = []
    with selectors.DefaultSelector() as sel, srv:
        sel.register(srv, selectors.EVENT_READ, "listener")
        for i in range(5):
            c = ps.socket(stack=a)
            c.setblocking(False)
            with pytest.raises(BlockingIOError) as e:
                c.connect((B_IP, p))
            assert e.value.errno == errno.EINPROGRESS
            clients.append(c)
        with selectors.DefaultSelector() as csel:
            for c in clients:
                csel.register(c, selectors.EVENT_WRITE)
            connected = 0
            deadline = time.monotonic() + WAIT
            echoed: dict = {}
            while (connected < len(clients) or len(echoed) < len(clients)) and time.monotonic() < deadline:
                for key, _ in csel.select(0.05):
                    c = key.fileobj
                    assert c.getsockopt(ps.SOL_SOCKET, ps.SO_ERROR) == 0
                    csel.unregister(c)
                    c.send(b"msg%d" % clients.index(c))
                    connected += 1
                for key, _ in sel.select(0.05):
                    if key.data == "listener":
                        conn, _ = srv.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    else:
                        data = key.fileobj.recv(100)
                        if data:
                            key.fileobj.send(data.upper())
                        else:
                            sel.unregister(key.fileobj)
                            key.fileobj.close()
                for c in clients:
                    if c not in echoed and ready(c)[0]:
                        echoed[c] = c.recv(100)
            assert connected == len(clients)
            assert sorted(echoed.values()) == sorted(b"MSG%d" % i for i in range(len(clients)))
        for key in list(sel.get_map().values()):
            if key.data == "conn":
                key.fileobj.close()
    for c in clients:
        c.close()


def test_fileno_readiness_transitions(stacks):
    a, b = stacks
    fresh = ps.socket(stack=a)
    assert ready(fresh) == (True, True)  # as Linux: POLLHUP|POLLOUT on an unconnected TCP socket
    fresh.setblocking(False)
    with pytest.raises(BlockingIOError):
        fresh.connect((SILENT_IP, 80))
    assert ready(fresh) == (False, False)  # SYN-SENT: neither
    fresh.close()
    assert fresh.fileno() == -1
    cli, conn, srv = pair(stacks)
    with cli, conn, srv:
        assert ready(srv) == (False, False)  # a listener with nothing queued
        assert wait_ready(cli, (False, True)) == (False, True)
        conn.sendall(b"x" * 1000)
        assert wait_ready(cli, (True, True)) == (True, True)
        assert cli.recv(400) == b"x" * 400
        assert ready(cli) == (True, True)  # 600 bytes left
        assert cli.recv(1000) == b"x" * 600
        assert ready(cli) == (False, True)  # consumed: unreadable at once, no iteration needed
        # The peer does not read: its window and then our send buffer fill, and we turn unwritable.
        cli.setblocking(False)
        while True:
            with pytest.raises(BlockingIOError):
                while True:
                    cli.send(bytes(65536))
            assert ready(cli) == (False, False)
            if not select.select([], [cli], [], 0.3)[1]:
                break  # no ACK freed room for 0.3 s: the peer's window is closed
        assert ready(cli) == (False, False)
        drained = 0
        while ready(cli) != (False, True):
            drained += len(conn.recv(1 << 16))  # reading opens the window; the ACKs free our buffer
            select.select([], [cli], [], 0.05)
        assert drained > 0
        conn.close()  # with unread data: a RST (RFC 1122 §4.2.2.13)
        assert wait_ready(cli, (True, True)) == (True, True)
        with pytest.raises(ConnectionResetError):
            cli.recv(10)


def test_makefile_and_deferred_close(stacks):
    cli, conn, srv = pair(stacks)
    srv.close()
    rfile = conn.makefile("rb")
    wfile = conn.makefile("wb")
    conn.close()  # deferred: the files still use the socket
    assert conn.fileno() >= 0
    with cli.makefile("rw", encoding="ascii", newline="") as f:
        f.write("hello\r\nworld\r\n")
        f.flush()
        assert rfile.readline() == b"hello\r\n"
        assert rfile.readline() == b"world\r\n"
        wfile.write(b"back\n")
        wfile.flush()
        assert f.readline() == "back\n"
    rfile.close()
    assert conn.fileno() >= 0
    wfile.close()  # the last file: the socket really closes now
    assert conn.fileno() == -1
    cli.settimeout(WAIT)
    assert cli.recv(10) == b""  # the FIN
    cli.close()
    with pytest.raises(ValueError):
        cli.makefile("rwx")


def test_threads_eight_connections_at_once(stacks):
    a, b = stacks
    p = port()
    size = 256 * 1024
    srv = ps.create_server(("", p), backlog=16, stack=b)
    errors: list = []
    digests: dict = {}

    def serve_one():
        try:
            srv.settimeout(WAIT)
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(WAIT)
                n, digest = recv_all(conn)
                conn.sendall(digest.encode())
        except BaseException as exc:  # reported below
            errors.append(exc)

    def client(i):
        try:
            data = os.urandom(size)
            with ps.create_connection((B_IP, p), timeout=WAIT, stack=a) as c:
                c.sendall(data)
                c.shutdown(ps.SHUT_WR)
                digests[i] = (c.recv(100).decode(), hashlib.sha256(data).hexdigest())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve_one) for _ in range(8)]
    threads += [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    srv.close()
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(digests) == 8 and all(got == want for got, want in digests.values())


def test_blocked_recv_while_another_thread_sends(stacks):
    cli, conn, srv = pair(stacks)
    got: list = []
    t = threading.Thread(target=lambda: got.append(cli.recv(100)))
    t.start()
    cli.sendall(b"from the other thread")  # the same socket, while recv blocks
    assert conn.recv(100) == b"from the other thread"
    conn.sendall(b"answer")
    t.join(WAIT)
    assert got == [b"answer"]
    for s in (cli, conn, srv):
        s.close()


def test_close_wakes_a_blocked_recv_with_ebadf(stacks):
    cli, conn, srv = pair(stacks)
    outcome: list = []
    started = threading.Event()

    def reader():
        started.set()
        try:
            outcome.append(cli.recv(10))
        except OSError as exc:
            outcome.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    started.wait(WAIT)
    cli.stack.call(lambda: None)  # one loop round trip; the reader is in (or about to enter) its wait
    cli.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EBADF
    conn.close()
    srv.close()


def test_linger_options(stacks):
    cli, conn, srv = pair(stacks)
    srv.close()
    cli.setsockopt(ps.SOL_SOCKET, ps.SO_LINGER, struct.pack("ii", 1, 0))
    assert cli.getsockopt(ps.SOL_SOCKET, ps.SO_LINGER, 8) == struct.pack("ii", 1, 0)
    cli.close()  # linger (1, 0): RST (socket(7))
    with pytest.raises(ConnectionResetError):
        conn.recv(10)
    conn.close()
    cli, conn, srv = pair(stacks)
    srv.close()
    cli.setsockopt(ps.SOL_SOCKET, ps.SO_LINGER, struct.pack("ii", 1, 5))
    cli.sendall(bytes(100_000))
    t0 = time.monotonic()
    cli.close()  # waits for the FIN's acknowledgement, which comes at once here
    assert time.monotonic() - t0 < 5
    assert len(b"".join(iter(lambda: conn.recv(1 << 16), b""))) == 100_000
    conn.close()


def test_reuseaddr_and_time_wait(stacks):
    a, b = stacks
    p = port()
    srv = ps.create_server(("", p), stack=b)  # SO_REUSEADDR, as socket.create_server sets it
    cli = ps.create_connection((B_IP, p), timeout=WAIT, stack=a)
    conn, _ = srv.accept()
    conn.close()  # the server closes first: its side goes to TIME-WAIT
    assert cli.recv(10) == b""
    cli.close()
    srv.close()
    plain = ps.socket(stack=b)
    with plain, pytest.raises(OSError) as e:
        plain.bind(("", p))  # TIME-WAIT holds the port for a socket without SO_REUSEADDR
    assert e.value.errno == errno.EADDRINUSE
    again = ps.create_server(("", p), stack=b)  # with it, the port is free again
    again.close()


def test_asyncio_selector_loop_accepts_pystack_sockets(stacks):
    a, b = stacks
    p = port()

    async def main():
        async def handle(reader, writer):
            data = await reader.readline()
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        lst = ps.create_server(("", p), stack=b)
        lst.setblocking(False)
        server = await asyncio.start_server(handle, sock=lst)
        async with server:
            sock = ps.socket(stack=a)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (B_IP, p))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"over asyncio\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == b"OVER ASYNCIO\n"


def test_unclosed_socket_is_closed_by_the_loop(stacks):
    cli, conn, srv = pair(stacks)
    srv.close()
    with pytest.warns(ResourceWarning):
        del cli
        import gc

        gc.collect()
    assert conn.recv(10) == b""  # the loop closed it: FIN
    conn.close()


def test_failed_send_leaves_the_callers_buffer_unexported(stacks):
    """asyncio clears its bytearray in ``except`` after a failed send: the exception must not keep
    a view of it (as CPython's socket releases its buffer before raising)."""
    cli, conn, srv = pair(stacks)
    srv.close()
    conn.setsockopt(ps.SOL_SOCKET, ps.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST
    assert select.select([cli], [], [], WAIT)[0]
    for call in (cli.send, cli.sendall, lambda b: cli.sendto(b, (B_IP, 9)), cli.recv_into):
        buf = bytearray(b"abc")
        try:
            call(buf)
        except OSError as exc:
            assert exc.errno in (errno.ECONNRESET, errno.EPIPE)
            buf.clear()  # BufferError if a view were still exported
    cli.close()


def test_accept_without_descriptors_keeps_the_connection_queued(stacks, monkeypatch):
    """accept() under EMFILE fails before it takes the connection (Linux's accept4 reserves the
    descriptor first): the connection stays queued, and the next accept gets it."""
    from pystack.runtime import sockets

    cli, conn, srv = pair(stacks)
    conn.close()
    a, _ = stacks
    p = srv.getsockname()[1]
    cli2 = ps.create_connection((B_IP, p), timeout=WAIT, stack=a)
    assert select.select([srv], [], [], WAIT)[0]

    def no_descriptors():
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(sockets, "_readiness_pair", no_descriptors)
    with pytest.raises(OSError) as e:
        srv.accept()
    assert e.value.errno == errno.EMFILE
    monkeypatch.undo()
    conn2, addr = srv.accept()
    assert addr == cli2.getsockname()
    cli2.sendall(b"still queued")
    assert conn2.recv(100) == b"still queued"
    for s in (cli, cli2, conn2, srv):
        s.close()
