"""Timeout and blocking-mode semantics of the socket API (the stdlib's, on Linux).

``settimeout(None)`` blocks, ``0.0`` never blocks, ``t > 0`` raises
``TimeoutError("timed out")`` after ``t`` seconds and leaves the socket
usable.  Covered: the accessors, recv/accept/connect/sendall timing out,
``create_connection(timeout=...)`` and the module's default timeout.  A
connect to :data:`apps_harness.SILENT_IP` (on the link, nobody answers ARP)
never completes within the test's timeout.
"""

from __future__ import annotations

import errno
import time

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import (
    ROLES,
    STEP,
    Bg,
    connected,
    elapsed,
    our_listener,
    peer_listener,
    quiet_close,
    silent_ip,
)

pytestmark = pytest.mark.netns

SHORT = 0.3


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def assert_timed_out(excinfo, took: float, timeout: float = SHORT) -> None:
    assert type(excinfo.value) is TimeoutError  # socket.timeout is TimeoutError since 3.10
    assert str(excinfo.value) == "timed out"
    assert timeout * 0.8 <= took < timeout + 2.0


def test_timeout_accessors(world):
    sock = world.mod.socket()
    with sock:
        assert sock.gettimeout() is None and sock.getblocking() is True
        sock.settimeout(2.5)
        assert sock.gettimeout() == 2.5 and sock.getblocking() is True
        sock.settimeout(0)
        assert sock.gettimeout() == 0.0 and sock.getblocking() is False
        sock.setblocking(True)
        assert sock.gettimeout() is None and sock.getblocking() is True
        sock.setblocking(False)
        assert sock.gettimeout() == 0.0 and sock.getblocking() is False
        sock.settimeout(None)
        assert sock.gettimeout() is None
        sock.settimeout(3)
        assert sock.gettimeout() == 3.0 and isinstance(sock.gettimeout(), float)
        with pytest.raises(ValueError):
            sock.settimeout(-1)
        with pytest.raises(TypeError):
            sock.settimeout("1")
        assert sock.gettimeout() == 3.0  # a rejected value changes nothing


def test_recv_times_out_then_works(world, role):
    with connected(world, role) as (ours, theirs):
        ours.settimeout(SHORT)
        with elapsed() as took, pytest.raises(TimeoutError) as info:
            ours.recv(10)
        assert_timed_out(info, took[0])
        theirs.sendall(b"late data")
        assert ours.recv(100) == b"late data"
        ours.sendall(b"still fine")
        assert theirs.recv(100) == b"still fine"


def test_recv_into_times_out(world, role):
    with connected(world, role) as (ours, theirs):
        ours.settimeout(SHORT)
        with elapsed() as took, pytest.raises(TimeoutError) as info:
            ours.recv_into(bytearray(10))
        assert_timed_out(info, took[0])


def test_accept_times_out_then_works(world):
    lsock, port = our_listener(world)
    peer = world.peer_socket()
    try:
        lsock.settimeout(SHORT)
        with elapsed() as took, pytest.raises(TimeoutError) as info:
            lsock.accept()
        assert_timed_out(info, took[0])
        peer.settimeout(STEP)
        peer.connect((world.ip, port))
        lsock.settimeout(STEP)
        conn, addr = lsock.accept()
        with conn:
            assert addr == peer.getsockname()
            # An accepted socket is blocking when the default timeout is None, whatever the
            # listener's timeout (socket.accept in the stdlib).
            assert conn.gettimeout() is None
    finally:
        quiet_close(peer, lsock)


def test_connect_to_silent_address_times_out(world):
    sock = world.mod.socket()
    with sock:
        sock.settimeout(SHORT)
        with elapsed() as took, pytest.raises(TimeoutError) as info:
            sock.connect((silent_ip(world, 0), 80))
        assert_timed_out(info, took[0])


def test_connect_ex_timing_out_returns_eagain(world):
    """connect_ex reports a timeout as a code, not an exception: EWOULDBLOCK (== EAGAIN), the
    stdlib's SOCK_TIMEOUT_ERR."""
    sock = world.mod.socket()
    with sock:
        sock.settimeout(SHORT)
        with elapsed() as took:
            code = sock.connect_ex((silent_ip(world, 2), 80))
        assert code == errno.EAGAIN
        assert SHORT * 0.8 <= took[0] < SHORT + 2.0


def test_sendall_times_out_against_a_peer_that_does_not_read(world, role):
    with connected(world, role, peer_rcvbuf=4096) as (ours, theirs):
        ours.settimeout(0.5)
        with elapsed() as took, pytest.raises(TimeoutError) as info:
            ours.sendall(b"x" * (16 << 20))  # far more than both buffers hold
        assert_timed_out(info, took[0], 0.5)


def test_send_times_out_when_buffer_full(world, role):
    with connected(world, role, peer_rcvbuf=4096) as (ours, theirs):
        ours.settimeout(SHORT)
        chunk = b"y" * 65536
        with pytest.raises(TimeoutError):
            for _ in range(4096):  # bounded: 256 MiB would never fit
                ours.send(chunk)
        theirs.setblocking(False)  # the connection is still alive: the peer reads what arrived
        assert len(theirs.recv(1000)) > 0


def test_create_connection_timeout(world):
    lsock, port = peer_listener(world)
    try:
        sock = world.mod.create_connection((world.peer_ip, port), timeout=1.5)
        with sock:
            assert sock.gettimeout() == 1.5
            theirs, _ = lsock.accept()
            with theirs:
                assert sock.getpeername() == (world.peer_ip, port)
        blocking = world.mod.create_connection((world.peer_ip, port), timeout=None)
        with blocking:
            assert blocking.gettimeout() is None
            lsock.accept()[0].close()
    finally:
        lsock.close()
    with elapsed() as took, pytest.raises(TimeoutError) as info:
        world.mod.create_connection((silent_ip(world, 1), 80), timeout=SHORT)
    assert_timed_out(info, took[0])


def test_create_connection_source_address(world):
    lsock, port = peer_listener(world)
    try:
        sock = world.mod.create_connection((world.peer_ip, port), timeout=STEP, source_address=(world.ip, 0))
        with sock:
            theirs, addr = lsock.accept()
            with theirs:
                assert addr == sock.getsockname() and addr[0] == world.ip
    finally:
        lsock.close()


def test_setdefaulttimeout(world):
    assert world.mod.getdefaulttimeout() is None
    try:
        world.mod.setdefaulttimeout(SHORT)
        assert world.mod.getdefaulttimeout() == SHORT
        lsock = world.mod.socket()
        peer = world.peer_socket()
        with lsock, peer:
            assert lsock.gettimeout() == SHORT
            lsock.bind((world.ip, 0))
            lsock.listen(1)
            with elapsed() as took, pytest.raises(TimeoutError) as info:
                lsock.accept()
            assert_timed_out(info, took[0])
            peer.settimeout(STEP)
            peer.connect((world.ip, lsock.getsockname()[1]))
            conn, _ = lsock.accept()
            with conn:
                assert conn.gettimeout() == SHORT  # accepted sockets take the default timeout
        with pytest.raises(ValueError):
            world.mod.setdefaulttimeout(-2)
    finally:
        world.mod.setdefaulttimeout(None)
    fresh = world.mod.socket()
    with fresh:
        assert fresh.gettimeout() is None


def test_blocking_recv_wakes_for_data(world, role):
    """A recv with no timeout blocks until data comes (not a busy loop that returns early)."""
    with connected(world, role) as (ours, theirs):
        ours.settimeout(None)
        waiter = Bg(ours.recv, 100)
        assert not waiter.done()
        theirs.sendall(b"wake")
        assert waiter.result() == b"wake"


def test_timeout_too_large_for_the_clock(world):
    """CPython keeps a timeout as 64-bit nanoseconds: a larger one is an OverflowError."""
    sock = world.mod.socket()
    with sock:
        with pytest.raises(OverflowError):
            sock.settimeout(1e10)
        with pytest.raises(OverflowError):
            sock.settimeout(10**10)
        assert sock.gettimeout() is None
        sock.settimeout(9e9)
        assert sock.gettimeout() == 9e9


def test_timeout_longer_than_poll_takes(world, role):
    """3e6 s (about 35 days) is more milliseconds than poll(2)'s int holds: a recv with it still
    waits and wakes for data."""
    with connected(world, role) as (ours, theirs):
        ours.settimeout(3e6)
        waiter = Bg(ours.recv, 100)
        time.sleep(SHORT)  # nothing signals "it waits": give a wrong wait the time to fail
        assert not waiter.done()
        theirs.sendall(b"wake")
        assert waiter.result() == b"wake"
