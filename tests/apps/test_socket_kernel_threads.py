"""Sockets used from many application threads at once.

The socket API is thread-safe per call: several threads may each drive
their own connection concurrently, and on one socket a thread blocked in
recv does not stop another thread from sending (the two directions are
independent), nor from shutting the socket down, which wakes the reader
with EOF (shutdown(2)).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket as _socket
import struct

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import ROLES, STEP, Bg, connected, our_listener, peer_listener, quiet_close, recv_all

pytestmark = pytest.mark.netns

THREADS = 8
SIZE = 256 << 10


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def peer_side(conn, payload: bytes) -> str:
    """Send ``payload`` (own thread) while receiving until EOF; the received bytes' digest."""
    conn.settimeout(STEP)
    with conn:
        sender = Bg(lambda: (conn.sendall(payload), conn.shutdown(_socket.SHUT_WR)))
        got = recv_all(conn)
        sender.result()
    return digest(got)


def our_side(sock, payload: bytes) -> str:
    """Send everything, half-close, then read until EOF; the received bytes' digest."""
    with sock:
        sock.settimeout(STEP)
        sock.sendall(payload)
        sock.shutdown(_socket.SHUT_WR)
        return digest(recv_all(sock))


def test_eight_threads_each_with_a_connection(world, role):
    ups = [os.urandom(SIZE) for _ in range(THREADS)]
    downs = [os.urandom(SIZE) for _ in range(THREADS)]
    ours_jobs, peer_jobs = [], []
    if role == "client":
        lsock, port = peer_listener(world, backlog=THREADS)
        with lsock:

            def connect_and_run(i):
                sock = world.mod.create_connection((world.peer_ip, port), timeout=STEP)
                sock.sendall(i.to_bytes(1, "big"))  # tells the peer which payloads are ours
                return our_side(sock, ups[i])

            ours_jobs = [Bg(connect_and_run, i) for i in range(THREADS)]
            for _ in range(THREADS):
                conn, _ = lsock.accept()
                conn.settimeout(STEP)
                i = conn.recv(1)[0]
                peer_jobs.append((i, Bg(peer_side, conn, downs[i])))
    else:
        lsock, port = our_listener(world, backlog=THREADS)
        with lsock:
            peers = []
            try:
                for i in range(THREADS):
                    peer = world.peer_socket()
                    peers.append(peer)
                    peer.settimeout(STEP)
                    peer.connect((world.ip, port))
                    peer.sendall(i.to_bytes(1, "big"))
                    peer_jobs.append((i, Bg(peer_side, peer, downs[i])))
                accepted = {}
                for _ in range(THREADS):
                    conn, _ = lsock.accept()
                    conn.settimeout(STEP)
                    accepted[conn.recv(1)[0]] = conn
            except BaseException:
                quiet_close(*peers)
                raise
            ours_jobs = [Bg(our_side, accepted[i], ups[i]) for i in range(THREADS)]
    received_by_us = [job.result(30) for job in ours_jobs]
    assert received_by_us == [digest(d) for d in downs]
    for i, job in peer_jobs:
        assert job.result(30) == digest(ups[i]), f"connection {i}"


def test_send_while_another_thread_is_blocked_in_recv(world, role):
    with connected(world, role) as (ours, theirs):
        ours.settimeout(STEP)
        reader = Bg(ours.recv, 100)
        assert not reader.done()
        ours.sendall(b"ping")  # must not wait for the blocked recv
        assert theirs.recv(100) == b"ping"
        theirs.sendall(b"pong")
        assert reader.result() == b"pong"


def test_many_sends_while_reader_blocked(world, role):
    """A reader blocked for the whole exchange while a writer moves 1 MiB the other way."""
    payload = os.urandom(1 << 20)
    with connected(world, role) as (ours, theirs):
        ours.settimeout(STEP)
        reader = Bg(ours.recv, 100)
        peer_reader = Bg(recv_all, theirs)
        ours.sendall(payload)
        ours.shutdown(_socket.SHUT_WR)
        assert peer_reader.result() == payload
        assert not reader.done()
        theirs.sendall(b"done")
        assert reader.result() == b"done"


def test_shutdown_from_another_thread_wakes_recv(world, role):
    with connected(world, role) as (ours, theirs):
        ours.settimeout(STEP)
        reader = Bg(ours.recv, 100)
        assert not reader.done()
        ours.shutdown(_socket.SHUT_RDWR)
        assert reader.result(5) == b""
        assert theirs.recv(10) == b""  # the peer saw our FIN


def test_reset_wakes_blocked_recv(world, role):
    with connected(world, role) as (ours, theirs):
        ours.settimeout(STEP)
        reader = Bg(ours.recv, 100)
        assert not reader.done()
        theirs.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        with pytest.raises(ConnectionResetError):
            reader.result(5)


def test_reset_wakes_blocked_sendall(world, role):
    """A sendall blocked on a full window fails with ECONNRESET when the peer aborts (tcp(7))."""
    with connected(world, role, peer_rcvbuf=4096) as (ours, theirs):
        ours.settimeout(STEP)
        writer = Bg(ours.sendall, b"w" * (32 << 20))
        assert not writer.done()
        theirs.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        with pytest.raises(ConnectionResetError) as info:
            writer.result(5)
        assert info.value.errno == errno.ECONNRESET


def test_accept_and_connect_from_threads(world):
    """Several threads blocked in accept on one listener each get a connection."""
    lsock, port = our_listener(world, backlog=4)
    peers = []
    with lsock:
        acceptors = [Bg(lsock.accept) for _ in range(4)]
        try:
            for _ in range(4):
                peer = world.peer_socket()
                peers.append(peer)
                peer.settimeout(STEP)
                peer.connect((world.ip, port))
            results = [job.result() for job in acceptors]
            assert sorted(addr for _, addr in results) == sorted(p.getsockname() for p in peers)
            for conn, _ in results:
                conn.close()
        finally:
            quiet_close(*peers)
