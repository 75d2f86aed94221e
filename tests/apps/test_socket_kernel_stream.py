"""Blocking TCP through the socket API, side under test as client and as server.

Every test runs against a kernel socket (the reference) and a pystack socket
(``world`` fixture), with the peer a kernel socket in the far namespace:
connect/accept and the names each end sees, 1 MiB each way checked with
SHA-256, ``recv_into``, ``makefile``, the context manager, half-close
(``shutdown(SHUT_WR)``, RFC 9293 3.6: the peer reads EOF while data still
flows the other way), ``shutdown(SHUT_RD)`` (received data is still read),
a blocking ``send`` (it takes everything, or what it took before a reset)
and ``sendfile``.
"""

from __future__ import annotations

import hashlib
import os
import select
import struct
import time

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import (
    ROLES,
    STEP,
    Bg,
    connected,
    our_listener,
    peer_listener,
    quiet_close,
    recv_all,
    recv_exactly,
)

pytestmark = pytest.mark.netns

MIB = 1 << 20


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def test_names_after_connect_and_accept(world, role):
    with connected(world, role) as (ours, theirs):
        assert ours.getsockname() == theirs.getpeername()
        assert ours.getpeername() == theirs.getsockname()
        assert ours.getsockname()[0] == world.ip
        assert ours.getpeername()[0] == world.peer_ip
        assert ours.family == world.mod.AF_INET
        assert ours.type == world.mod.SOCK_STREAM


def test_client_connect_and_accepted_address(world):
    lsock, port = peer_listener(world)
    ours = world.mod.socket()
    try:
        ours.settimeout(STEP)
        assert ours.getsockname() == ("0.0.0.0", 0)  # unbound: INADDR_ANY, port 0 (ip(7))
        assert ours.connect((world.peer_ip, port)) is None
        theirs, addr = lsock.accept()
        with theirs:
            assert addr == ours.getsockname()
            local_ip, local_port = ours.getsockname()
            assert local_ip == world.ip and local_port != 0  # bound implicitly to an ephemeral port
    finally:
        quiet_close(ours, lsock)


def test_server_accept_returns_peer_address(world):
    lsock, port = our_listener(world)
    theirs = world.peer_socket()
    try:
        assert lsock.getsockname() == (world.ip, port)
        theirs.settimeout(STEP)
        theirs.connect((world.ip, port))
        ours, addr = lsock.accept()
        with ours:
            assert addr == theirs.getsockname()
            assert ours.getpeername() == addr
            assert ours.getsockname() == (world.ip, port)
            assert isinstance(ours, type(lsock))
    finally:
        quiet_close(theirs, lsock)


def test_one_mib_each_way_sha256(world, role):
    up = os.urandom(MIB)
    down = os.urandom(MIB)
    with connected(world, role) as (ours, theirs):

        def peer():
            sender = Bg(lambda: (theirs.sendall(down), theirs.shutdown(world.mod.SHUT_WR)))
            got = recv_all(theirs)
            sender.result()
            return got

        peer_job = Bg(peer)
        ours_sender = Bg(lambda: (ours.sendall(up), ours.shutdown(world.mod.SHUT_WR)))
        received = recv_all(ours)
        ours_sender.result()
        sent_seen = peer_job.result()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(down).hexdigest()
    assert hashlib.sha256(sent_seen).hexdigest() == hashlib.sha256(up).hexdigest()


def test_send_returns_count_and_recv_respects_bufsize(world, role):
    with connected(world, role) as (ours, theirs):
        assert ours.send(b"hello") == 5
        assert theirs.recv(100) == b"hello"
        theirs.sendall(b"abcdefgh")
        got = b""
        while len(got) < 8:
            piece = ours.recv(3)
            assert 0 < len(piece) <= 3
            got += piece
        assert got == b"abcdefgh"
        assert ours.sendall(memoryview(b"xyz")) is None  # any bytes-like object
        assert ours.send(bytearray(b"!")) == 1
        assert theirs.recv(10) in (b"xyz!", b"xyz")


def test_recv_into(world, role):
    with connected(world, role) as (ours, theirs):
        theirs.sendall(b"0123456789")
        buf = bytearray(16)
        got = 0
        while got < 10:
            n = ours.recv_into(memoryview(buf)[got:])
            assert n > 0
            got += n
        assert bytes(buf[:10]) == b"0123456789"
        theirs.sendall(b"abcdef")
        small = bytearray(b"........")
        n = ours.recv_into(small, 4)  # nbytes caps the read
        assert 0 < n <= 4
        assert bytes(small[:n]) == b"abcd"[:n]
        assert bytes(small[n:]) == b"." * (8 - n)
        with pytest.raises(ValueError):
            ours.recv_into(bytearray(2), 5)  # nbytes larger than the buffer (stdlib check)


def test_makefile_readline_write_flush(world, role):
    with connected(world, role) as (ours, theirs):
        rw = ours.makefile("rwb")
        try:
            theirs.sendall(b"first line\nsecond line\npartial")
            assert rw.readline() == b"first line\n"
            assert rw.readline() == b"second line\n"
            rw.write(b"reply one\n")
            rw.write(b"reply two\n")
            rw.flush()
            assert recv_exactly_lines(theirs, 2) == b"reply one\nreply two\n"
            theirs.shutdown(world.mod.SHUT_WR)
            assert rw.read() == b"partial"  # read() to EOF
            assert rw.readline() == b""
        finally:
            rw.close()
        text = ours.makefile("w", encoding="utf-8", newline="\n")
        with text:
            text.write("héllo\n")
        assert recv_exactly_lines(theirs, 1) == "héllo\n".encode()


def recv_exactly_lines(sock, count: int) -> bytes:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(4096)
        assert chunk, "EOF before the lines arrived"
        data += chunk
    return data


def test_makefile_defers_close(world, role):
    """socket.makefile: close() of the socket waits for the files made from it (stdlib semantics)."""
    with connected(world, role) as (ours, theirs):
        reader = ours.makefile("rb")
        ours.close()  # the file still holds the connection open
        theirs.sendall(b"still open\n")
        assert reader.readline() == b"still open\n"
        reader.close()  # now the socket really closes: the peer reads EOF
        assert theirs.recv(10) == b""
        assert ours.fileno() == -1


def test_context_manager_closes(world, role):
    with connected(world, role) as (ours, theirs):
        with ours as entered:
            assert entered is ours
            ours.sendall(b"bye")
        assert ours.fileno() == -1
        assert recv_all(theirs) == b"bye"  # data then EOF: an orderly close (FIN)
        with pytest.raises(OSError) as info:
            ours.send(b"x")
        assert info.value.errno == 9  # EBADF


def test_listener_context_manager(world):
    lsock, port = our_listener(world)
    with lsock:
        pass
    assert lsock.fileno() == -1
    probe = world.peer_socket()
    try:
        probe.settimeout(STEP)
        with pytest.raises(ConnectionRefusedError):  # nobody listens any more: RST
            probe.connect((world.ip, port))
    finally:
        probe.close()


def test_half_close_ours(world, role):
    """We shut down sending; the peer reads EOF and still talks to us (RFC 9293 3.6)."""
    with connected(world, role) as (ours, theirs):
        ours.sendall(b"request")
        ours.shutdown(world.mod.SHUT_WR)
        assert recv_all(theirs) == b"request"
        reply = os.urandom(200_000)
        sender = Bg(lambda: (theirs.sendall(reply), theirs.close()))
        assert recv_all(ours) == reply
        sender.result()


def test_half_close_theirs(world, role):
    """The peer shuts down sending; we read EOF (again and again) and still send."""
    with connected(world, role) as (ours, theirs):
        theirs.sendall(b"question")
        theirs.shutdown(world.mod.SHUT_WR)
        assert recv_all(ours) == b"question"
        assert ours.recv(10) == b""  # EOF is sticky
        payload = os.urandom(200_000)
        receiver = Bg(recv_all, theirs)
        ours.sendall(payload)
        ours.shutdown(world.mod.SHUT_WR)
        assert receiver.result() == payload


def test_shutdown_rdwr_then_close(world, role):
    with connected(world, role) as (ours, theirs):
        ours.shutdown(world.mod.SHUT_RDWR)
        assert theirs.recv(10) == b""
        assert ours.recv(10) == b""  # our receive side is shut: EOF at once
        ours.close()


def test_shutdown_rd_still_reads_queued_and_later_data(world, role):
    """SHUT_RD only makes a recv that finds nothing return b"" at once (Linux RCV_SHUTDOWN):
    what was queued, and what arrives afterwards, is still read."""
    with connected(world, role) as (ours, theirs):
        theirs.sendall(b"a" * 100)
        assert select.select([ours], [], [], STEP)[0]
        ours.shutdown(world.mod.SHUT_RD)
        assert recv_exactly(ours, 100) == b"a" * 100
        assert ours.recv(100) == b""  # nothing queued: no wait
        theirs.sendall(b"b" * 50)
        got = b""
        deadline = time.monotonic() + STEP
        while len(got) < 50 and time.monotonic() < deadline:  # no event says "arrived": poll
            piece = ours.recv(100)
            if not piece:
                time.sleep(0.01)
            got += piece
        assert got == b"b" * 50


def test_blocking_send_takes_everything(world, role):
    """A blocking send returns once all of its data is in the send buffer (Linux tcp_sendmsg
    waits in sk_stream_wait_memory), not after the first buffer-full."""
    payload = os.urandom(4 * MIB)
    with connected(world, role) as (ours, theirs):
        ours.settimeout(None)
        sender = Bg(ours.send, payload)  # blocking; the Bg bounds the test's wait
        assert recv_exactly(theirs, len(payload)) == payload
        assert sender.result() == len(payload)


def test_blocking_send_stopped_by_a_reset_returns_what_it_took(world, role):
    """A reset while a blocking send waits for room: the send returns the count it took, and the
    error comes with the next call (Linux tcp_sendmsg: copied bytes win over the error)."""
    total = 16 * MIB
    with connected(world, role, peer_rcvbuf=4096) as (ours, theirs):
        ours.settimeout(None)
        sender = Bg(ours.send, bytes(total))
        deadline = time.monotonic() + STEP
        while select.select([], [ours], [], 0)[1]:  # until the send buffer is full: the send waits
            assert time.monotonic() < deadline, "the send buffer never filled"
            time.sleep(0.01)
        theirs.setsockopt(world.mod.SOL_SOCKET, world.mod.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()  # RST
        sent = sender.result()
        assert 0 < sent < total
        with pytest.raises(ConnectionResetError):
            ours.send(b"x")


def test_sendfile(world, role, tmp_path):
    """sendfile sends the file from the offset and moves its position; a non-blocking socket is
    refused up front (the stdlib's ValueError)."""
    data = os.urandom(100_000)
    path = tmp_path / "payload"
    path.write_bytes(data)
    with connected(world, role) as (ours, theirs), open(path, "rb") as f:
        ours.setblocking(False)
        with pytest.raises(ValueError, match="non-blocking"):
            ours.sendfile(f)
        ours.settimeout(STEP)
        assert ours.sendfile(f, 10) == len(data) - 10
        assert f.tell() == len(data)
        assert recv_exactly(theirs, len(data) - 10) == data[10:]


def test_sendmsg_gathers_buffers(world, role):
    with connected(world, role) as (ours, theirs):
        assert ours.sendmsg([b"ab", bytearray(b"cd"), memoryview(b"ef")]) == 6
        assert recv_exactly(theirs, 6) == b"abcdef"
        with pytest.raises(TypeError):
            ours.sendmsg([b"ok", "text"])
