"""The standard library's own servers, unmodified, on pystack sockets and on the kernel's.

Every test runs twice through the ``world`` fixture (tests/apps/apps_harness.py):

* ``kernel`` -- the reference: the stdlib server constructed the ordinary
  way inside the near namespace, so its socket is a kernel socket there;
* ``pystack`` -- the same server class made by
  :func:`pystack.runtime.stdlib_servers.make_server` on ``world.stack``.

The clients are always the kernel in the far namespace: ``curl`` and
``wget`` (run there with ``world.peer_run``) for ``http.server``, stdlib
sockets (``world.peer_socket``) for ``socketserver``.  A test that passes on
``kernel`` and fails on ``pystack`` has found a pystack bug.

Resolver safety: ``http.server.HTTPServer.server_bind`` calls
``socket.getfqdn`` on the bound address (see the stdlib_servers module
docstring), which may ask the host's DNS resolver.  Servers are therefore
constructed while the constructing thread is inside one of the test's own
namespaces (near for kernel, far for pystack), where no route leads to any
nameserver: a query cannot leave them, and ``/etc/hosts`` still answers.

Needs root, /dev/net/tun, ``curl``, ``wget`` and ``nsenter``.  The 5 MiB
download prints its MB/s per kind (run with ``-s`` to see it).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import http.server
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from apps_harness import inside, world  # noqa: F401  (world is the fixture)
from conftest import require

from pystack.runtime.stdlib_servers import make_server

pytestmark = pytest.mark.netns

MiB = 1 << 20
BIG = 5 * MiB
MID = 1 * MiB
WAIT_S = 10.0       # bound on every thread join and socket wait
CURL_S = 60         # bound on every curl / wget run


def _have(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":"))


@pytest.fixture(scope="module", autouse=True)
def _tools():
    missing = [t for t in ("curl", "wget", "nsenter") if not _have(t)]
    require(missing and f"needs {', '.join(missing)} (ci/common.sh installs them)")


def _sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def docroot(tmp_path_factory) -> Path:
    """A directory for SimpleHTTPRequestHandler: big.bin (5 MiB), mid.bin (1 MiB), a.txt, b.txt."""
    root = tmp_path_factory.mktemp("docroot")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "mid.bin").write_bytes(os.urandom(MID))
    (root / "a.txt").write_bytes(b"first file\n" * 100)
    (root / "b.txt").write_bytes(b"second\n")
    return root


# -- making and stopping servers ---------------------------------------------------------


def _build(world, server_class, address, handler):
    """``server_class(address, handler)`` bound and listening on the side under test."""
    if world.kind == "kernel":
        with inside(world.near):      # the stdlib's own constructor; its socket is made in near
            return server_class(address, handler)
    with inside(world.far):           # only to confine HTTPServer's getfqdn (module docstring)
        return make_server(server_class, address, handler, stack=world.stack)


def _bounded(fn, *args, timeout: float = WAIT_S) -> float:
    """Run ``fn(*args)`` in a thread; fail unless it returns within ``timeout``; its duration."""
    errors: list[BaseException] = []

    def run():
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test thread
            errors.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__qualname__} did not return within {timeout} s"
    if errors:
        raise errors[0]
    return time.monotonic() - start


@contextlib.contextmanager
def serving(world, server_class, address, handler, *, poll_interval: float = 0.05):
    """The server running ``serve_forever`` in a thread; shut down and closed (bounded) on exit."""
    server = _build(world, server_class, address, handler)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        try:
            _bounded(server.shutdown)
            loop.join(WAIT_S)
            assert not loop.is_alive(), "serve_forever did not return after shutdown()"
        finally:
            # ThreadingMixIn.server_close joins the handler threads without a timeout: bound it here.
            _bounded(server.server_close)


def _port(server) -> int:
    return server.server_address[1]


def _docs_handler(docroot, base=http.server.SimpleHTTPRequestHandler):
    return functools.partial(base, directory=str(docroot))


class _Http11Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler speaking HTTP/1.1 (persistent connections), as the docs say to."""

    protocol_version = "HTTP/1.1"


# -- clients in the far namespace ---------------------------------------------------------


def _url(world, port: int, path: str) -> str:
    return f"http://{world.ip}:{port}/{path}"


def curl(world, *args: str) -> str:
    """curl's stdout; fails the test on a non-zero exit."""
    r = world.peer_run("curl", "--noproxy", "*", "-sS", "--max-time", str(CURL_S - 10), *args, timeout=CURL_S)
    assert r.returncode == 0, f"curl {args} exited {r.returncode}: {r.stderr}"
    return r.stdout


def _peer_connect(world, port: int) -> socket.socket:
    sock = world.peer_socket()
    sock.settimeout(WAIT_S)
    try:
        sock.connect((world.ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- http.server: ThreadingHTTPServer + SimpleHTTPRequestHandler --------------------------


def test_server_socket_is_the_kind_under_test(world, docroot):
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        if world.kind == "pystack":
            import pystack.socket as psocket

            assert isinstance(server.socket, psocket.socket)
        else:
            assert type(server.socket) is socket.socket
        host, port = server.server_address
        assert host == "0.0.0.0" and 0 < port < 65536
        assert server.server_port == port
        assert server.socket.getsockname() == ("0.0.0.0", port)


def test_curl_downloads_5mib_intact(world, docroot, tmp_path):
    out = tmp_path / "big.out"
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        report = curl(world, "-o", str(out), "-w", "%{http_code} %{size_download} %{speed_download}",
                      _url(world, _port(server), "big.bin"))
    code, size, speed = report.split()
    assert (code, int(size)) == ("200", BIG)
    assert _sha(out) == _sha(docroot / "big.bin")
    print(f"\n[stdlib ThreadingHTTPServer, {world.kind}] curl 5 MiB: {float(speed) / 1e6:.1f} MB/s")


def test_curl_head_gives_headers_only(world, docroot):
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        port = _port(server)
        headers = curl(world, "-I", _url(world, port, "big.bin"))
        # curl -I never reads a body, so check on the wire that none came.
        with _peer_connect(world, port) as sock:
            sock.sendall(b"HEAD /big.bin HTTP/1.0\r\n\r\n")
            raw = _read_to_eof(sock)
    lines = headers.splitlines()
    assert lines[0].split()[:2] == ["HTTP/1.0", "200"]
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    assert fields["content-length"] == str(BIG)
    assert fields["content-type"] == "application/octet-stream"
    assert raw.startswith(b"HTTP/1.0 200 ") and raw.endswith(b"\r\n\r\n")
    assert raw.count(b"\r\n\r\n") == 1


def test_curl_missing_file_is_404(world, docroot):
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        code = curl(world, "-o", "/dev/null", "-w", "%{http_code}", _url(world, _port(server), "missing.bin"))
    assert code == "404"


def test_curl_directory_listing(world, docroot):
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        page = curl(world, _url(world, _port(server), ""))
    for name in ("a.txt", "b.txt", "big.bin", "mid.bin"):
        assert f'<a href="{name}">{name}</a>' in page


def test_http11_keep_alive_two_urls_one_connection(world, docroot, tmp_path):
    a, b = tmp_path / "a.out", tmp_path / "b.out"
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot, _Http11Handler)) as server:
        port = _port(server)
        report = curl(world, "-w", "%{num_connects} %{http_code} %{http_version}\n",
                      "-o", str(a), _url(world, port, "a.txt"), "-o", str(b), _url(world, port, "b.txt"))
    # num_connects: new connections made for that transfer -- 0 for the second one means reused.
    assert report.splitlines() == ["1 200 1.1", "0 200 1.1"]
    assert a.read_bytes() == (docroot / "a.txt").read_bytes()
    assert b.read_bytes() == (docroot / "b.txt").read_bytes()


class _BarrierHandler(http.server.SimpleHTTPRequestHandler):
    """Answers only once ``barrier.parties`` requests are being handled at the same time."""

    barrier: threading.Barrier

    def do_GET(self):
        self.barrier.wait()
        super().do_GET()


def test_eight_concurrent_curls(world, docroot, tmp_path):
    n = 8
    # Fresh subclass per run: the barrier proves all n connections were accepted and served at once.
    handler = type("Handler", (_BarrierHandler,), {"barrier": threading.Barrier(n, timeout=WAIT_S)})
    outs = [tmp_path / f"mid{i}.out" for i in range(n)]
    procs = []
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot, handler)) as server:
        url = _url(world, _port(server), "mid.bin")
        try:
            for out in outs:
                procs.append(world.peer_popen("curl", "--noproxy", "*", "-sS", "--max-time", str(CURL_S - 10),
                                              "-o", str(out), url, stderr=subprocess.PIPE))
            results = [(p.wait(timeout=CURL_S), p.stderr.read()) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=WAIT_S)
                p.stderr.close()
    assert [rc for rc, _ in results] == [0] * n, results
    want = _sha(docroot / "mid.bin")
    assert [_sha(out) for out in outs] == [want] * n


def test_wget_downloads_5mib_intact(world, docroot, tmp_path):
    out = tmp_path / "big.wget"
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        r = world.peer_run("wget", "-q", "--no-proxy", "--tries=1", f"--timeout={CURL_S - 10}", "-O", str(out),
                           _url(world, _port(server), "big.bin"), timeout=CURL_S)
    assert r.returncode == 0, r.stderr
    assert _sha(out) == _sha(docroot / "big.bin")


# -- socketserver ---------------------------------------------------------------------------


class _LineEcho(socketserver.StreamRequestHandler):
    """Each line back upper-cased, through the handler's rfile.readline / wfile.write."""

    def handle(self):
        while line := self.rfile.readline():
            self.wfile.write(line.upper())


def _line_echo_client(world, port: int, tag: bytes) -> None:
    lines = [b"%s line %d\n" % (tag, i) for i in range(50)] + [tag * 20000 + b"\n"]
    with _peer_connect(world, port) as sock:
        sock.sendall(b"".join(lines))
        with sock.makefile("rb") as replies:
            for line in lines:
                assert replies.readline() == line.upper()
            sock.shutdown(socket.SHUT_WR)
            # Our EOF ends handle(); the server shuts its side down (shutdown_request): EOF here.
            assert replies.read() == b""


@pytest.mark.parametrize("server_class", [socketserver.ThreadingTCPServer, socketserver.TCPServer])
def test_socketserver_tcp_line_echo(world, server_class):
    with serving(world, server_class, (world.ip, 0), _LineEcho) as server:
        port = _port(server)
        if server_class is socketserver.TCPServer:
            _line_echo_client(world, port, b"x")
        else:
            errors: list[BaseException] = []

            def client(tag):
                try:
                    _line_echo_client(world, port, tag)
                except BaseException as exc:  # noqa: BLE001 -- reported below
                    errors.append(exc)

            clients = [threading.Thread(target=client, args=(b"c%d" % i,), daemon=True) for i in range(4)]
            for c in clients:
                c.start()
            for c in clients:
                c.join(WAIT_S)
            assert not any(c.is_alive() for c in clients), "a client hung"
            assert not errors, errors


class _DatagramEcho(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read().upper())


@pytest.mark.parametrize("server_class", [socketserver.UDPServer, socketserver.ThreadingUDPServer])
def test_socketserver_udp_echo(world, server_class):
    with serving(world, server_class, (world.ip, 0), _DatagramEcho) as server:
        port = _port(server)
        with world.peer_socket(socket.SOCK_DGRAM) as sock:
            sock.settimeout(WAIT_S)
            for size in (1, 100, 1472, 1000, 5):
                payload = bytes(range(97, 123)) * (size // 26) + b"z" * (size % 26)
                sock.sendto(payload, (world.ip, port))
                data, source = sock.recvfrom(65536)
                assert (data, source) == (payload.upper(), (world.ip, port))


# -- serving loop and errors -------------------------------------------------------------


def test_serve_forever_shutdown_from_another_thread_is_prompt(world):
    server = _build(world, socketserver.ThreadingTCPServer, (world.ip, 0), _LineEcho)
    try:
        loop = threading.Thread(target=server.serve_forever, daemon=True)  # the default poll_interval, 0.5 s
        loop.start()
        _line_echo_client(world, _port(server), b"before")    # it serves
        took = _bounded(server.shutdown)
        loop.join(WAIT_S)
        assert not loop.is_alive()
        # serve_forever checks the shutdown flag at least every poll_interval.
        assert took < 0.5 + 1.0, f"shutdown() took {took:.2f} s"
    finally:
        _bounded(server.server_close)


def test_handle_request_times_out_then_serves(world):
    server = _build(world, socketserver.TCPServer, (world.ip, 0), _LineEcho)
    try:
        server.timeout = 0.2
        timeouts = []
        server.handle_timeout = lambda: timeouts.append(1)   # an instance attribute: the class is untouched
        took = _bounded(server.handle_request)
        assert timeouts == [1] and 0.15 < took < 0.2 + 2.0
        client = threading.Thread(target=_line_echo_client, args=(world, _port(server), b"late"), daemon=True)
        client.start()
        server.timeout = WAIT_S
        _bounded(server.handle_request)
        client.join(WAIT_S)
        assert not client.is_alive() and timeouts == [1]
    finally:
        _bounded(server.server_close)


def test_port_in_use_is_eaddrinuse(world):
    first = _build(world, http.server.HTTPServer, (world.ip, 0), http.server.BaseHTTPRequestHandler)
    try:
        with pytest.raises(OSError) as info:
            _build(world, http.server.HTTPServer, (world.ip, _port(first)), http.server.BaseHTTPRequestHandler)
        assert info.value.errno == errno.EADDRINUSE  # a listener holds the port even with SO_REUSEADDR (socket(7))
    finally:
        first.server_close()


class _WhoAmI(socketserver.BaseRequestHandler):
    """Tells the client the address accept() gave the server for it."""

    def handle(self):
        self.request.sendall(b"%s %d\n" % (self.client_address[0].encode(), self.client_address[1]))


def test_client_address_is_the_peers(world):
    with serving(world, socketserver.ThreadingTCPServer, (world.ip, 0), _WhoAmI) as server:
        with _peer_connect(world, _port(server)) as sock:
            host, port = sock.getsockname()
            assert _read_to_eof(sock) == b"%s %d\n" % (host.encode(), port)
            assert sock.getpeername() == server.server_address


class _IdleTimeoutHandler(_Http11Handler):
    timeout = 0.3   # StreamRequestHandler: settimeout on the connection; idle keep-alive ends


def test_idle_keep_alive_connection_times_out(world, docroot):
    handler = _docs_handler(docroot, _IdleTimeoutHandler)
    with serving(world, http.server.ThreadingHTTPServer, ("", 0), handler) as server:
        with _peer_connect(world, _port(server)) as sock:
            sock.sendall(b"GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.monotonic()
            raw = _read_to_eof(sock)   # the reply, then EOF once the server's readline timed out
            took = time.monotonic() - start
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\nsecond\n")
    assert 0.25 < took < 0.3 + 3.0, f"connection closed after {took:.2f} s"


class _JoiningHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = False    # so server_close() joins every handler thread: none may be left hanging

    def __init__(self, *args, **kwargs):
        self.errors: list[BaseException] = []
        super().__init__(*args, **kwargs)

    def handle_error(self, request, client_address):
        self.errors.append(sys.exc_info()[1])    # instead of printing the traceback


def test_client_that_resets_mid_download_leaves_the_server_serving(world, docroot, tmp_path):
    with serving(world, _JoiningHTTPServer, ("", 0), _docs_handler(docroot)) as server:
        port = _port(server)
        for _ in range(3):
            with _peer_connect(world, port) as sock:
                sock.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.0 200 ")
                # Closing with unread data sends RST (RFC 2525 section 2.17; tcp(7)): the handler's
                # sendall fails with EPIPE or ECONNRESET, which socketserver reports and survives.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        out = tmp_path / "after.out"
        assert curl(world, "-o", str(out), "-w", "%{http_code}", _url(world, port, "mid.bin")) == "200"
    # serving() has joined the handler threads (bounded): every aborted download's handler ended.
    assert [type(e) for e in server.errors if not isinstance(e, (ConnectionResetError, BrokenPipeError))] == []
    assert len(server.errors) == 3
    assert _sha(out) == _sha(docroot / "mid.bin")
