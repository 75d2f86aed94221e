"""Non-blocking sockets driven by ``selectors`` and ``select``, through ``fileno()``.

The contract: ``fileno()`` is readable exactly when recv/accept would not
block and writable exactly when send would not block (or a connect
finished), so the stdlib's readiness machinery works unmodified.  Covered: an
echo server multiplexing 50 kernel clients, a non-blocking connect finished
through EVENT_WRITE + SO_ERROR (and re-``connect`` semantics, connect(2)),
BlockingIOError on an empty recv and a full send, and the readiness
transitions seen by ``select.select`` with a zero timeout.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket as _socket
import time

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import (
    ROLES,
    STEP,
    Bg,
    closed_port,
    connected,
    our_listener,
    peer_listener,
    quiet_close,
    recv_exactly,
)

pytestmark = pytest.mark.netns

CLIENTS = 50


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def readable(sock, timeout: float = 0) -> bool:
    """select(2) on ``sock`` for reading; ``timeout`` 0 asks for the state now."""
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def writable(sock, timeout: float = 0) -> bool:
    _, w, _ = select.select([], [sock], [], timeout)
    return bool(w)


def test_echo_server_multiplexes_50_kernel_clients(world):
    lsock, port = our_listener(world, backlog=CLIENTS)
    lsock.setblocking(False)
    messages = {i: os.urandom(4000 + 97 * i) for i in range(CLIENTS)}

    def clients():
        socks = []
        try:
            for i in range(CLIENTS):
                s = world.peer_socket()
                socks.append(s)
                s.settimeout(STEP)
                s.connect((world.ip, port))
            for i, s in enumerate(socks):
                s.sendall(messages[i])
            for i, s in enumerate(socks):
                if recv_exactly(s, len(messages[i])) != messages[i]:
                    raise AssertionError(f"client {i}: wrong echo")
                s.shutdown(_socket.SHUT_WR)
            for s in socks:
                if s.recv(1) != b"":
                    raise AssertionError("expected EOF")
        finally:
            quiet_close(*socks)
        return len(socks)

    sel = selectors.DefaultSelector()
    conns = []
    try:
        sel.register(lsock, selectors.EVENT_READ, "listener")
        job = Bg(clients)
        accepted = finished = 0
        pending: dict = {}
        deadline = time.monotonic() + 30
        while finished < CLIENTS:
            assert time.monotonic() < deadline, f"only {finished} of {CLIENTS} clients finished"
            for key, mask in sel.select(timeout=1.0):
                if key.data == "listener":
                    while True:
                        try:
                            conn, _ = lsock.accept()
                        except BlockingIOError:
                            break
                        conn.setblocking(False)
                        conns.append(conn)
                        accepted += 1
                        pending[conn] = b""
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                conn = key.fileobj
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        data = None  # a spurious wake-up is allowed, a lost one is not
                    if data == b"":
                        sel.unregister(conn)
                        conn.close()
                        finished += 1
                        continue
                    if data:
                        pending[conn] += data
                if pending[conn]:
                    try:
                        sent = conn.send(pending[conn])
                    except BlockingIOError:
                        sent = 0
                    pending[conn] = pending[conn][sent:]
                    sel.modify(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending[conn] else 0), "conn")
        assert job.result() == CLIENTS
        assert accepted == CLIENTS
    finally:
        sel.close()
        quiet_close(lsock, *conns)


def test_nonblocking_connect_event_write_and_so_error(world):
    lsock, port = peer_listener(world)
    sock = world.mod.socket()
    try:
        sock.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            sock.connect((world.peer_ip, port))
        assert info.value.errno == errno.EINPROGRESS
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_WRITE)
            events = sel.select(timeout=STEP)
            assert events and events[0][1] & selectors.EVENT_WRITE
        assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == 0
        assert sock.getpeername() == (world.peer_ip, port)
        theirs, _ = lsock.accept()
        with theirs:
            sock.send(b"ok")
            assert theirs.recv(10) == b"ok"
    finally:
        quiet_close(sock, lsock)


def test_nonblocking_connect_ex_reports_progress_then_success(world):
    """connect(2) on Linux: EINPROGRESS, then 0 once established, then EISCONN."""
    lsock, port = peer_listener(world)
    sock = world.mod.socket()
    try:
        sock.setblocking(False)
        assert sock.connect_ex((world.peer_ip, port)) == errno.EINPROGRESS
        assert writable(sock, STEP)
        assert sock.connect_ex((world.peer_ip, port)) == 0
        assert sock.connect_ex((world.peer_ip, port)) == errno.EISCONN
        lsock.accept()[0].close()
    finally:
        quiet_close(sock, lsock)


def test_nonblocking_connect_refused_through_so_error(world):
    holder, port = closed_port(world)
    sock = world.mod.socket()
    try:
        sock.setblocking(False)
        assert sock.connect_ex((world.peer_ip, port)) == errno.EINPROGRESS
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_WRITE)
            assert sel.select(timeout=STEP), "a failed connect makes the socket writable"
        assert readable(sock)  # the pending error also makes it readable (poll: POLLERR)
        assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == errno.ECONNREFUSED
        assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == 0  # reading it clears it
    finally:
        quiet_close(sock, holder)


def test_blocking_io_error_on_empty_recv(world, role):
    with connected(world, role) as (ours, theirs):
        ours.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            ours.recv(10)
        assert info.value.errno == errno.EAGAIN
        with pytest.raises(BlockingIOError):
            ours.recv_into(bytearray(10))
        theirs.sendall(b"now")
        assert readable(ours, STEP)
        assert ours.recv(10) == b"now"


def test_blocking_io_error_on_accept(world):
    lsock, port = our_listener(world)
    with lsock:
        lsock.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            lsock.accept()
        assert info.value.errno == errno.EAGAIN


def test_blocking_io_error_on_full_send_then_writable_again(world, role):
    with connected(world, role, peer_rcvbuf=4096) as (ours, theirs):
        ours.setblocking(False)
        chunk = b"z" * 65536
        sent = 0
        with pytest.raises(BlockingIOError) as info:
            for _ in range(4096):  # bounded
                sent += ours.send(chunk)
        assert info.value.errno == errno.EAGAIN
        assert sent > 0
        assert not writable(ours)
        # The peer drains everything: the socket becomes writable again.
        theirs.settimeout(STEP)
        got = 0
        while got < sent:
            got += len(theirs.recv(1 << 20))
        assert got == sent
        assert writable(ours, STEP)
        assert ours.send(b"more") == 4


def test_readiness_transitions(world, role):
    with connected(world, role) as (ours, theirs):
        ours.setblocking(False)
        assert not readable(ours)
        assert writable(ours)
        theirs.sendall(b"x" * 1000)
        assert readable(ours, STEP)
        assert readable(ours)  # stays readable until consumed
        got = b""
        while len(got) < 1000:
            got += ours.recv(300)
        assert got == b"x" * 1000
        assert not readable(ours)  # consumed: no longer readable
        theirs.sendall(b"y")
        assert readable(ours, STEP)
        assert ours.recv(10) == b"y"
        assert not readable(ours)
        theirs.shutdown(_socket.SHUT_WR)
        assert readable(ours, STEP)  # EOF is readable
        assert ours.recv(10) == b""
        assert readable(ours)  # and stays so
        assert ours.recv(10) == b""


def test_listener_readable_with_queued_connection(world):
    lsock, port = our_listener(world)
    peer = world.peer_socket()
    try:
        lsock.setblocking(False)
        assert not readable(lsock)
        peer.settimeout(STEP)
        peer.connect((world.ip, port))
        assert readable(lsock, STEP)
        conn, _ = lsock.accept()
        conn.close()
        assert not readable(lsock)
    finally:
        quiet_close(peer, lsock)


def test_readable_on_reset(world, role):
    with connected(world, role) as (ours, theirs):
        ours.setblocking(False)
        theirs.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        theirs.close()
        assert readable(ours, STEP)
        with pytest.raises(ConnectionResetError):
            ours.recv(10)
