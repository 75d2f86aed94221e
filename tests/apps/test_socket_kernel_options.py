"""Socket options: what setsockopt stores and getsockopt gives back, as on Linux.

socket(7), tcp(7): booleans read back as 0/1 whatever non-zero value was set;
SO_RCVBUF/SO_SNDBUF read back doubled ("the kernel doubles this value");
SO_LINGER is a ``struct linger`` (two C ints) and (1, 0) makes close() send a
RST; the TCP keep-alive knobs have Linux's ranges; unknown or read-only
options are ENOPROTOOPT; an accepted socket inherits its listener's options.
"""

from __future__ import annotations

import errno
import select
import socket as _socket
import struct

import pytest
from apps_harness import world  # noqa: F401  (pytest fixture)
from socket_suite_support import ROLES, STEP, Bg, closed_port, connected, elapsed, our_listener, quiet_close, recv_all

pytestmark = pytest.mark.netns

SOL, TCP = _socket.SOL_SOCKET, _socket.IPPROTO_TCP
LINGER = struct.Struct("ii")  # struct linger {int l_onoff; int l_linger;}


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def test_defaults_of_a_fresh_tcp_socket(world):
    sock = world.mod.socket()
    with sock:
        assert sock.getsockopt(TCP, _socket.TCP_NODELAY) == 0
        assert sock.getsockopt(SOL, _socket.SO_KEEPALIVE) == 0
        assert sock.getsockopt(SOL, _socket.SO_REUSEADDR) == 0
        assert sock.getsockopt(SOL, _socket.SO_ERROR) == 0
        assert sock.getsockopt(SOL, _socket.SO_TYPE) == _socket.SOCK_STREAM
        assert sock.getsockopt(SOL, _socket.SO_LINGER, LINGER.size) == LINGER.pack(0, 0)
        # tcp(7): tcp_keepalive_time 7200 s, tcp_keepalive_intvl 75 s, tcp_keepalive_probes 9.
        assert sock.getsockopt(TCP, _socket.TCP_KEEPIDLE) == 7200
        assert sock.getsockopt(TCP, _socket.TCP_KEEPINTVL) == 75
        assert sock.getsockopt(TCP, _socket.TCP_KEEPCNT) == 9
        assert sock.getsockopt(TCP, _socket.TCP_USER_TIMEOUT) == 0
        assert sock.getsockopt(SOL, _socket.SO_RCVBUF) > 0
        assert sock.getsockopt(SOL, _socket.SO_SNDBUF) > 0


def test_boolean_options_read_back_as_one(world):
    sock = world.mod.socket()
    with sock:
        for level, option in [(TCP, _socket.TCP_NODELAY), (SOL, _socket.SO_KEEPALIVE), (SOL, _socket.SO_REUSEADDR)]:
            sock.setsockopt(level, option, 1)
            assert sock.getsockopt(level, option) == 1
            sock.setsockopt(level, option, 0)
            assert sock.getsockopt(level, option) == 0
            sock.setsockopt(level, option, 5)
            assert sock.getsockopt(level, option) == 1
            sock.setsockopt(level, option, True)
            assert sock.getsockopt(level, option) == 1
            raw = sock.getsockopt(level, option, 4)  # with a buffer length: the C int's bytes
            assert raw == struct.pack("i", 1)


def test_options_on_a_connection(world, role):
    with connected(world, role) as (ours, theirs):
        ours.setsockopt(TCP, _socket.TCP_NODELAY, 1)
        ours.setsockopt(SOL, _socket.SO_KEEPALIVE, 1)
        ours.setsockopt(TCP, _socket.TCP_KEEPIDLE, 10)
        ours.setsockopt(TCP, _socket.TCP_KEEPINTVL, 5)
        ours.setsockopt(TCP, _socket.TCP_KEEPCNT, 3)
        ours.setsockopt(TCP, _socket.TCP_USER_TIMEOUT, 4000)
        assert ours.getsockopt(TCP, _socket.TCP_NODELAY) == 1
        assert ours.getsockopt(SOL, _socket.SO_KEEPALIVE) == 1
        assert ours.getsockopt(TCP, _socket.TCP_KEEPIDLE) == 10
        assert ours.getsockopt(TCP, _socket.TCP_KEEPINTVL) == 5
        assert ours.getsockopt(TCP, _socket.TCP_KEEPCNT) == 3
        assert ours.getsockopt(TCP, _socket.TCP_USER_TIMEOUT) == 4000
        ours.sendall(b"still works")
        assert theirs.recv(100) == b"still works"


@pytest.mark.parametrize(
    "option, good, bad",
    [
        (_socket.TCP_KEEPIDLE, (1, 32767), (0, -1, 32768)),  # tcp(7): 1..MAX_TCP_KEEPIDLE
        (_socket.TCP_KEEPINTVL, (1, 32767), (0, 32768)),  # 1..MAX_TCP_KEEPINTVL
        (_socket.TCP_KEEPCNT, (1, 127), (0, 128)),  # 1..MAX_TCP_KEEPCNT
    ],
)
def test_keepalive_ranges(world, option, good, bad):
    sock = world.mod.socket()
    with sock:
        for value in good:
            sock.setsockopt(TCP, option, value)
            assert sock.getsockopt(TCP, option) == value
        for value in bad:
            with pytest.raises(OSError) as info:
                sock.setsockopt(TCP, option, value)
            assert type(info.value) is OSError and info.value.errno == errno.EINVAL
        assert sock.getsockopt(TCP, option) == good[-1]  # unchanged by the rejected values


@pytest.mark.parametrize("option", [_socket.SO_RCVBUF, _socket.SO_SNDBUF])
def test_buffer_sizes_are_doubled(world, option):
    """socket(7): "The kernel doubles this value (to allow space for bookkeeping overhead)"."""
    for kind in (_socket.SOCK_STREAM, _socket.SOCK_DGRAM):
        sock = world.mod.socket(type=kind)
        with sock:
            for value in (65536, 100_000):
                sock.setsockopt(SOL, option, value)
                assert sock.getsockopt(SOL, option) == 2 * value
            sock.setsockopt(SOL, option, 1)
            # Tiny values are raised to a floor (socket(7) documents 256 for SO_RCVBUF and 2048 for
            # SO_SNDBUF, doubled; current kernels use 2304 and 4608).
            floor = sock.getsockopt(SOL, option)
            assert floor >= (256 if option == _socket.SO_RCVBUF else 2048)
            assert floor <= 8192


def test_buffer_size_kept_after_connect(world, role):
    """A size set before the handshake stays what getsockopt reports (no auto-tuning over it)."""
    with connected(world, role) as (ours, theirs):
        ours.setsockopt(SOL, _socket.SO_RCVBUF, 70000)
        ours.setsockopt(SOL, _socket.SO_SNDBUF, 70000)
        theirs.sendall(b"a" * 300_000)
        got = 0
        while got < 300_000:
            got += len(ours.recv(65536))
        assert ours.getsockopt(SOL, _socket.SO_RCVBUF) == 140000
        assert ours.getsockopt(SOL, _socket.SO_SNDBUF) == 140000


def test_linger_struct(world):
    sock = world.mod.socket()
    with sock:
        sock.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(1, 5))
        assert sock.getsockopt(SOL, _socket.SO_LINGER, LINGER.size) == LINGER.pack(1, 5)
        assert sock.getsockopt(SOL, _socket.SO_LINGER) == 1  # no length: the first int, l_onoff
        sock.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(0, 0))
        # l_onoff 0 turns lingering off and leaves the stored time alone (sock_setsockopt).
        assert LINGER.unpack(sock.getsockopt(SOL, _socket.SO_LINGER, LINGER.size)) == (0, 5)
        sock.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(1, 0))
        assert LINGER.unpack(sock.getsockopt(SOL, _socket.SO_LINGER, LINGER.size)) == (1, 0)
        sock.setsockopt(SOL, _socket.SO_LINGER, struct.pack("iii", 1, 2, 3))  # longer: the first 8 bytes
        assert LINGER.unpack(sock.getsockopt(SOL, _socket.SO_LINGER, LINGER.size)) == (1, 2)
        with pytest.raises(OSError) as info:
            sock.setsockopt(SOL, _socket.SO_LINGER, b"\x01\x00\x00\x00")  # shorter than struct linger
        assert info.value.errno == errno.EINVAL


def test_linger_zero_sends_reset(world, role):
    """SO_LINGER (1, 0): close() aborts with a RST (socket(7)); the peer gets ECONNRESET."""
    with connected(world, role) as (ours, theirs):
        ours.sendall(b"before")
        assert theirs.recv(100) == b"before"
        ours.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(1, 0))
        ours.close()
        with pytest.raises(ConnectionResetError) as info:
            theirs.recv(100)
        assert info.value.errno == errno.ECONNRESET


def test_linger_with_time_delivers_data(world, role):
    """SO_LINGER (1, t): a blocking close waits for the data to be acknowledged; nothing is lost."""
    payload = bytes(range(256)) * 800
    with connected(world, role) as (ours, theirs):
        ours.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(1, 3))
        reader = Bg(recv_all, theirs)
        ours.sendall(payload)
        with elapsed() as took:
            ours.close()  # returns once the peer has acknowledged everything, well before 3 s
        assert reader.result() == payload
        assert took[0] < 2.5


def test_accepted_socket_inherits_listener_options(world):
    lsock, port = our_listener(world)
    peer = world.peer_socket()
    conn = None
    try:
        lsock.setsockopt(TCP, _socket.TCP_NODELAY, 1)
        lsock.setsockopt(SOL, _socket.SO_KEEPALIVE, 1)
        lsock.setsockopt(TCP, _socket.TCP_KEEPIDLE, 11)
        lsock.setsockopt(TCP, _socket.TCP_KEEPINTVL, 12)
        lsock.setsockopt(TCP, _socket.TCP_KEEPCNT, 13)
        lsock.setsockopt(SOL, _socket.SO_RCVBUF, 70000)
        lsock.setsockopt(SOL, _socket.SO_SNDBUF, 70000)
        lsock.setsockopt(SOL, _socket.SO_LINGER, LINGER.pack(1, 3))
        peer.settimeout(STEP)
        peer.connect((world.ip, port))
        conn, _ = lsock.accept()
        assert conn.getsockopt(TCP, _socket.TCP_NODELAY) == 1
        assert conn.getsockopt(SOL, _socket.SO_KEEPALIVE) == 1
        assert conn.getsockopt(TCP, _socket.TCP_KEEPIDLE) == 11
        assert conn.getsockopt(TCP, _socket.TCP_KEEPINTVL) == 12
        assert conn.getsockopt(TCP, _socket.TCP_KEEPCNT) == 13
        assert conn.getsockopt(SOL, _socket.SO_RCVBUF) == 140000
        assert conn.getsockopt(SOL, _socket.SO_SNDBUF) == 140000
        assert conn.getsockopt(SOL, _socket.SO_LINGER, LINGER.size) == LINGER.pack(1, 3)
    finally:
        quiet_close(conn, peer, lsock)


def test_so_error_and_so_type(world):
    holder, port = closed_port(world)
    sock = world.mod.socket()
    udp = world.mod.socket(type=_socket.SOCK_DGRAM)
    try:
        assert udp.getsockopt(SOL, _socket.SO_TYPE) == _socket.SOCK_DGRAM
        assert sock.getsockopt(SOL, _socket.SO_TYPE) == _socket.SOCK_STREAM
        assert sock.getsockopt(SOL, _socket.SO_TYPE, 4) == struct.pack("i", _socket.SOCK_STREAM)
        sock.setblocking(False)
        assert sock.connect_ex((world.peer_ip, port)) == errno.EINPROGRESS
        assert select.select([], [sock], [], STEP)[1]
        assert sock.getsockopt(SOL, _socket.SO_ERROR) == errno.ECONNREFUSED
        assert sock.getsockopt(SOL, _socket.SO_ERROR) == 0
    finally:
        quiet_close(sock, udp, holder)


def test_unknown_and_read_only_options(world):
    sock = world.mod.socket()
    udp = world.mod.socket(type=_socket.SOCK_DGRAM)
    with sock, udp:
        for level, option in [(SOL, 9999), (SOL, _socket.SO_TYPE), (SOL, _socket.SO_ERROR)]:
            with pytest.raises(OSError) as info:
                sock.setsockopt(level, option, 1)
            assert type(info.value) is OSError and info.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as info:
            sock.getsockopt(SOL, 9999)
        assert info.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as info:
            udp.setsockopt(TCP, _socket.TCP_NODELAY, 1)  # a TCP option on a UDP socket
        assert info.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as info:
            sock.setsockopt(TCP, _socket.TCP_NODELAY, b"")  # too short for an int
        assert info.value.errno == errno.EINVAL


def test_create_server_sets_reuseaddr(world):
    server = world.mod.create_server((world.ip, 0))
    with server:
        assert server.getsockopt(SOL, _socket.SO_REUSEADDR) == 1  # the stdlib does so on POSIX
        assert server.getsockname()[0] == world.ip
        peer = world.peer_socket()
        with peer:
            peer.settimeout(STEP)
            peer.connect(server.getsockname())
            server.settimeout(STEP)
            conn, _ = server.accept()
            conn.close()
