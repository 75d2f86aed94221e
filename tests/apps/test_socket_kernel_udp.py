"""UDP (SOCK_DGRAM) through the socket API against a kernel peer.

udp(7), ip(7): datagrams keep their boundaries; a datagram longer than the
buffer is truncated and the rest discarded; a socket is bound to an
ephemeral port on first use; ``connect`` fixes the peer and filters what is
received; an ICMP port unreachable (RFC 1122 4.1.3.3) is reported as
ECONNREFUSED on a *connected* socket only (without IP_RECVERR Linux drops it
for unconnected ones); a payload above 65507 bytes (65535 - 20 - 8) is
EMSGSIZE.
"""

from __future__ import annotations

import errno
import os
import select
import socket as _socket

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import STEP, closed_port, quiet_close

pytestmark = pytest.mark.netns

DGRAM = _socket.SOCK_DGRAM
MAX_PAYLOAD = 65507


@pytest.fixture
def udp_pair(world):
    """``(ours, theirs)``: bound UDP sockets with a :data:`STEP` timeout."""
    ours = world.mod.socket(type=DGRAM)
    theirs = world.peer_socket(DGRAM)
    try:
        ours.settimeout(STEP)
        theirs.settimeout(STEP)
        ours.bind((world.ip, 0))
        theirs.bind((world.peer_ip, 0))
        yield ours, theirs
    finally:
        quiet_close(ours, theirs)


def free_udp_port(world) -> int:
    holder, port = closed_port(world, DGRAM)
    holder.close()  # the port is free again (nobody else binds in this namespace)
    return port


def test_sendto_recvfrom_both_ways(world, udp_pair):
    ours, theirs = udp_pair
    assert ours.sendto(b"ping", theirs.getsockname()) == 4
    data, addr = theirs.recvfrom(100)
    assert data == b"ping" and addr == ours.getsockname()
    theirs.sendto(b"pong", addr)
    data, addr = ours.recvfrom(100)
    assert data == b"pong" and addr == theirs.getsockname()
    # As a server: answer whoever asked, several datagrams keep their boundaries.
    for i in range(5):
        theirs.sendto(b"q%d" % i, ours.getsockname())
    for i in range(5):
        data, addr = ours.recvfrom(100)
        assert data == b"q%d" % i
        ours.sendto(data.upper(), addr)
    assert [theirs.recv(100) for _ in range(5)] == [b"Q%d" % i for i in range(5)]


def test_recvfrom_into(world, udp_pair):
    ours, theirs = udp_pair
    theirs.sendto(b"0123456789", ours.getsockname())
    buf = bytearray(32)
    n, addr = ours.recvfrom_into(buf)
    assert n == 10 and bytes(buf[:10]) == b"0123456789" and addr == theirs.getsockname()
    theirs.sendto(b"abcdefgh", ours.getsockname())
    small = bytearray(16)
    n, addr = ours.recvfrom_into(small, 3)  # nbytes: the datagram is truncated to 3 bytes
    assert n == 3 and bytes(small[:3]) == b"abc"
    theirs.sendto(b"xy", ours.getsockname())
    assert ours.recv_into(small) == 2 and bytes(small[:2]) == b"xy"


def test_connect_send_recv(world, udp_pair):
    ours, theirs = udp_pair
    ours.connect(theirs.getsockname())
    assert ours.getpeername() == theirs.getsockname()
    assert ours.send(b"hello") == 5
    data, addr = theirs.recvfrom(100)
    assert data == b"hello" and addr == ours.getsockname()
    # A datagram from another port is filtered out by the connected socket (udp(7)).
    stranger = world.peer_socket(DGRAM)
    with stranger:
        stranger.bind((world.peer_ip, 0))
        stranger.sendto(b"not for you", ours.getsockname())
        theirs.sendto(b"reply", ours.getsockname())
        assert ours.recv(100) == b"reply"
        ours.setblocking(False)
        with pytest.raises(BlockingIOError):
            ours.recv(100)


def test_bind_port_zero_and_autobind(world):
    bound = world.mod.socket(type=DGRAM)
    auto = world.mod.socket(type=DGRAM)
    theirs = world.peer_socket(DGRAM)
    try:
        assert bound.getsockname() == ("0.0.0.0", 0)
        bound.bind((world.ip, 0))
        ip, port = bound.getsockname()
        assert ip == world.ip and port != 0
        theirs.settimeout(STEP)
        theirs.bind((world.peer_ip, 0))
        auto.sendto(b"x", theirs.getsockname())  # sending binds to an ephemeral port (udp(7))
        ip, port = auto.getsockname()
        assert ip == "0.0.0.0" and port != 0
        data, addr = theirs.recvfrom(10)
        assert addr == (world.ip, port)
    finally:
        quiet_close(bound, auto, theirs)


def test_connect_binds_to_the_route_source(world, udp_pair):
    ours, theirs = udp_pair
    fresh = world.mod.socket(type=DGRAM)
    with fresh:
        fresh.connect(theirs.getsockname())  # binds: port and the address the route picks (ip(7))
        ip, port = fresh.getsockname()
        assert ip == world.ip and port != 0
        fresh.send(b"hi")
        assert theirs.recvfrom(10) == (b"hi", (ip, port))


def test_truncation_discards_the_rest(world, udp_pair):
    ours, theirs = udp_pair
    big = os.urandom(1000)
    theirs.sendto(big, ours.getsockname())
    theirs.sendto(b"next", ours.getsockname())
    assert ours.recv(100) == big[:100]
    assert ours.recv(100) == b"next"  # the 900 other bytes are gone
    theirs.sendto(big, ours.getsockname())
    data, addr = ours.recvfrom(10)
    assert data == big[:10]


def test_empty_datagram(world, udp_pair):
    ours, theirs = udp_pair
    theirs.sendto(b"", ours.getsockname())
    assert ours.recvfrom(10) == (b"", theirs.getsockname())
    assert ours.sendto(b"", theirs.getsockname()) == 0
    assert theirs.recv(10) == b""


def test_icmp_port_unreachable_refuses_connected_socket(world):
    port = free_udp_port(world)
    sock = world.mod.socket(type=DGRAM)
    with sock:
        sock.settimeout(STEP)
        sock.connect((world.peer_ip, port))
        sock.send(b"anyone?")
        # The error is reported on the next call; recv waits for it (the ICMP wakes it).
        with pytest.raises(ConnectionRefusedError) as info:
            sock.recv(100)
        assert info.value.errno == errno.ECONNREFUSED
        # Reported once: the socket works again.
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(100)


def test_icmp_port_unreachable_ignored_when_unconnected(world):
    port = free_udp_port(world)
    sock = world.mod.socket(type=DGRAM)
    with sock:
        sock.settimeout(0.3)
        sock.sendto(b"anyone?", (world.peer_ip, port))
        with pytest.raises(TimeoutError):
            sock.recvfrom(100)
        assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == 0


def test_connected_udp_error_makes_fileno_readable(world):
    port = free_udp_port(world)
    sock = world.mod.socket(type=DGRAM)
    with sock:
        sock.setblocking(False)
        sock.connect((world.peer_ip, port))
        sock.send(b"?")
        assert select.select([sock], [], [], STEP)[0]
        assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == errno.ECONNREFUSED


def test_emsgsize(world, udp_pair):
    ours, theirs = udp_pair
    with pytest.raises(OSError) as info:
        ours.sendto(b"x" * (MAX_PAYLOAD + 1), theirs.getsockname())
    assert type(info.value) is OSError and info.value.errno == errno.EMSGSIZE
    ours.connect(theirs.getsockname())
    with pytest.raises(OSError) as info:
        ours.send(b"x" * 70000)
    assert info.value.errno == errno.EMSGSIZE


def test_largest_datagram_is_fragmented_and_delivered(world, udp_pair):
    ours, theirs = udp_pair
    payload = os.urandom(MAX_PAYLOAD)
    assert ours.sendto(payload, theirs.getsockname()) == MAX_PAYLOAD
    assert theirs.recv(70000) == payload
    theirs.sendto(payload, ours.getsockname())
    assert ours.recv(70000) == payload


def test_udp_timeouts(world, udp_pair):
    ours, theirs = udp_pair
    ours.settimeout(0.2)
    with pytest.raises(TimeoutError):
        ours.recvfrom(10)
    theirs.sendto(b"late", ours.getsockname())
    assert ours.recvfrom(10)[0] == b"late"
    ours.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        ours.recvfrom(10)
    assert info.value.errno == errno.EAGAIN


def test_udp_readiness(world, udp_pair):
    ours, theirs = udp_pair
    assert not select.select([ours], [], [], 0)[0]
    assert select.select([], [ours], [], 0)[1]  # a UDP socket is writable with room in the buffer
    theirs.sendto(b"a", ours.getsockname())
    theirs.sendto(b"b", ours.getsockname())
    assert select.select([ours], [], [], STEP)[0]
    assert ours.recv(10) == b"a"
    assert select.select([ours], [], [], 0)[0]  # one more queued
    assert ours.recv(10) == b"b"
    assert not select.select([ours], [], [], 0)[0]


def test_udp_shutdown_and_close(world, udp_pair):
    ours, theirs = udp_pair
    ours.close()
    assert ours.fileno() == -1
    with pytest.raises(OSError) as info:
        ours.sendto(b"x", theirs.getsockname())
    assert info.value.errno == errno.EBADF
