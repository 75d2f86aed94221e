"""make_server's own contract, on two Stacks joined by an in-memory Pipe (no root needed).

Stack ``server`` (10.95.0.1) runs the unmodified stdlib servers that
:func:`pystack.runtime.stdlib_servers.make_server` builds; stack ``client``
(10.95.0.2) talks to them with pystack sockets (and ``http.client`` on one).
The kernel-facing tests (curl, wget, the kernel as reference) are in
test_stdlib_servers.py; these check what only make_server decides: the
arguments it takes, the unbound server, the default stack, the server's
state after a failed bind, and that nothing in the stdlib's global state
changes.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import http.server
import socket
import socketserver
import threading

import pytest

import pystack
import pystack.socket as psocket
from pystack.phy.pipe import Pipe
from pystack.runtime.stdlib_servers import make_server

SERVER_IP, CLIENT_IP = "10.95.0.1", "10.95.0.2"
WAIT_S = 10.0


@pytest.fixture(scope="module")
def stacks():
    pipe = Pipe()
    server = pystack.Stack(ip=f"{SERVER_IP}/24", device=pipe.a)
    try:
        client = pystack.Stack(ip=f"{CLIENT_IP}/24", device=pipe.b)
        try:
            yield server, client
        finally:
            client.close()
    finally:
        server.close()


def _open_sockets(stack) -> int:
    return stack.status()["stack"]["sockets"]


@contextlib.contextmanager
def serving(server):
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(WAIT_S)
        loop.join(WAIT_S)
        closer = threading.Thread(target=server.server_close, daemon=True)
        closer.start()
        closer.join(WAIT_S)
        assert not (stopper.is_alive() or loop.is_alive() or closer.is_alive()), "server did not stop"


class _Echo(socketserver.StreamRequestHandler):
    def handle(self):
        while line := self.rfile.readline():
            self.wfile.write(line)


def test_returns_the_stdlib_server_itself_on_a_pystack_socket(stacks):
    server_stack, client_stack = stacks
    server = make_server(socketserver.ThreadingTCPServer, (SERVER_IP, 0), _Echo, stack=server_stack)
    assert type(server) is socketserver.ThreadingTCPServer
    assert isinstance(server.socket, psocket.socket)
    assert (server.socket.family, server.socket.type) == (socket.AF_INET, socket.SOCK_STREAM)
    host, port = server.server_address
    assert host == SERVER_IP and port > 0
    with serving(server):
        with psocket.create_connection((SERVER_IP, port), timeout=WAIT_S, stack=client_stack) as sock:
            sock.sendall(b"one\ntwo\n")
            with sock.makefile("rb") as replies:
                assert [replies.readline(), replies.readline()] == [b"one\n", b"two\n"]
    # The stdlib's module globals are untouched: its own servers still make kernel sockets.
    assert socketserver.socket is socket and socket.socket.__module__ == "socket"


def test_http_server_answers_http_client(stacks, tmp_path):
    server_stack, client_stack = stacks
    (tmp_path / "hello.txt").write_bytes(b"hello over a pipe\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the test output quiet
            pass

    handler = lambda *a: Handler(*a, directory=str(tmp_path))  # noqa: E731
    # Bound to "" so that HTTPServer.server_bind's getfqdn asks /etc/hosts for this host's own name.
    server = make_server(http.server.ThreadingHTTPServer, ("", 0), handler, stack=server_stack)
    with serving(server):
        conn = http.client.HTTPConnection(SERVER_IP, server.server_port, timeout=WAIT_S)
        # Give http.client a connected pystack socket: it connects only when it has none.
        conn.sock = psocket.create_connection((SERVER_IP, server.server_port), timeout=WAIT_S, stack=client_stack)
        try:
            for path, status, body in [("/hello.txt", 200, b"hello over a pipe\n"), ("/nope", 404, None)]:
                conn.request("GET", path)
                reply = conn.getresponse()
                data = reply.read()
                assert reply.status == status
                if body is not None:
                    assert data == body
        finally:
            conn.close()


def test_udp_server(stacks):
    server_stack, client_stack = stacks

    class Echo(socketserver.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read()[::-1])

    server = make_server(socketserver.UDPServer, (SERVER_IP, 0), Echo, stack=server_stack)
    assert server.socket.type == socket.SOCK_DGRAM
    with serving(server):
        with psocket.socket(socket.AF_INET, socket.SOCK_DGRAM, stack=client_stack) as sock:
            sock.settimeout(WAIT_S)
            sock.sendto(b"abc", server.server_address)
            assert sock.recvfrom(100) == (b"cba", server.server_address)


def test_bind_and_activate_false_leaves_it_to_the_caller(stacks):
    server_stack, _ = stacks
    server = make_server(socketserver.TCPServer, (SERVER_IP, 0), _Echo, stack=server_stack,
                         bind_and_activate=False)
    try:
        assert isinstance(server.socket, psocket.socket)
        assert server.socket.getsockname() == ("0.0.0.0", 0)    # not bound yet
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        assert server.server_address[1] > 0
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    finally:
        server.server_close()


def test_stack_none_is_the_default_stack(stacks):
    default = pystack.Stack.default()                # the most recently made open Stack
    # Binding the default stack's address succeeds only on that stack (EADDRNOTAVAIL elsewhere).
    server = make_server(socketserver.TCPServer, (default.ip, 0), _Echo)
    try:
        assert server.server_address[0] == default.ip
    finally:
        server.server_close()


def test_failed_bind_closes_the_pystack_socket(stacks):
    server_stack, _ = stacks
    before = _open_sockets(server_stack)
    first = make_server(socketserver.TCPServer, (SERVER_IP, 0), _Echo, stack=server_stack)
    try:
        with pytest.raises(OSError) as info:
            make_server(socketserver.TCPServer, first.server_address, _Echo, stack=server_stack)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as info:
            # An address that is not the stack's: EADDRNOTAVAIL, as bind(2) on Linux.
            make_server(socketserver.TCPServer, ("10.95.0.77", 0), _Echo, stack=server_stack)
        assert info.value.errno == errno.EADDRNOTAVAIL
        assert _open_sockets(server_stack) == before + 1
    finally:
        first.server_close()
    assert _open_sockets(server_stack) == before


def test_not_a_tcp_server_class_is_a_type_error():
    with pytest.raises(TypeError, match="TCPServer"):
        make_server(socketserver.BaseServer, ("", 0), _Echo)
    with pytest.raises(TypeError, match="TCPServer"):
        make_server(object(), ("", 0), _Echo)


def test_ipv6_server_class_is_eafnosupport(stacks):
    server_stack, _ = stacks

    class V6Server(socketserver.TCPServer):
        address_family = socket.AF_INET6

    before = _open_sockets(server_stack)
    with pytest.raises(OSError) as info:
        make_server(V6Server, ("::", 0), _Echo, stack=server_stack)
    assert info.value.errno == errno.EAFNOSUPPORT
    assert _open_sockets(server_stack) == before
