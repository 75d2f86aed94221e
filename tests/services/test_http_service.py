"""The HTTP/1.1 file service: the parser and path mapping alone, and sessions over two stacks
joined by an in-memory pipe (manual clock) -- GET, HEAD, keep-alive, pipelining, errors, a large
file streamed intact."""

from __future__ import annotations

import hashlib
import os

import pytest

from pystack.services.http import (MAX_HEAD, MAX_LINE, HttpError, HttpService, content_type, parse_head,
                                   resolve)
from test_tcp_services import B, Net

PORT = 80


def test_parse_head_and_persistence_defaults():
    r = parse_head(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2")
    assert (r.method, r.target, r.version) == ("GET", "/a.txt", (1, 1))
    assert r.fields["x-a"] == "1, 2" and r.keep_alive
    assert not parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close").keep_alive
    assert not parse_head(b"GET / HTTP/1.0").keep_alive
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive
    assert parse_head(b"\r\nGET / HTTP/1.0").method == "GET"  # RFC 9112 §2.2


@pytest.mark.parametrize("head,status", [
    (b"GET /", 400), (b"GET  / HTTP/1.1", 400), (b"GET / HTTP/1.1 x", 400), (b"GET / HTTX/1.1", 400),
    (b"G(T / HTTP/1.1\r\nHost: x", 400), (b"GET / HTTP/1.1", 400),  # no Host in 1.1
    (b"GET / HTTP/1.1\r\nHost : x", 400), (b"GET / HTTP/1.1\r\nnocolon", 400), (b"GET / HTTP/2.0", 505),
])
def test_parse_head_rejects(head, status):
    with pytest.raises(HttpError) as exc:
        parse_head(head)
    assert exc.value.status == status


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("<h1>hi</h1>")
    (d / "a.txt").write_text("hello\n")
    (d / "sub").mkdir()
    (d / "sub" / "b.json").write_text("{}")
    (tmp_path / "secret").write_text("no")
    (d / "out").symlink_to(tmp_path / "secret")
    (d / "in").symlink_to(d / "a.txt")
    return str(d)


def test_resolve_stays_inside_root(root):
    assert resolve(root, "/a.txt") == (200, os.path.join(root, "a.txt"))
    assert resolve(root, "/sub/b.json?x=1") == (200, os.path.join(root, "sub", "b.json"))
    assert resolve(root, "/") == (200, os.path.join(root, "index.html"))
    assert resolve(root, "/%61.txt") == (200, os.path.join(root, "a.txt"))
    assert resolve(root, "http://h/a.txt")[0] == 200
    assert resolve(root, "/in")[0] == 200
    for bad in ("/../secret", "/sub/../../secret", "/%2e%2e/secret", "/a.txt%00", "/missing", "/sub"):
        assert resolve(root, bad)[0] == 404, bad
    assert resolve(root, "/out")[0] == 403
    assert resolve(root, "a.txt")[0] == 400
    assert content_type("x.html").startswith("text/html") and content_type("x.bin") == "application/octet-stream"


class Client:
    """A raw pystack TCP client on stack A: sends ``data`` (then FIN when asked), collects the reply."""

    def __init__(self, net: Net, data: bytes, fin: bool = False) -> None:
        self.sock = net.a.tcp.socket()
        self.sock.connect((B, PORT))
        self.out = memoryview(data)
        self.fin = fin
        self.got = bytearray()
        self.eof = False

    def __call__(self) -> None:
        s = self.sock
        if s.state in ("SYN-SENT",):
            return
        while self.out:
            try:
                self.out = self.out[s.send(self.out):]
            except BlockingIOError:
                break
        if not self.out and self.fin:
            self.fin = False
            s.shutdown(1)
        while not self.eof:
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
            self.got += chunk


def responses(raw: bytes) -> list[tuple[bytes, dict, bytes]]:
    """Split a byte stream into (status line, fields, body) using Content-Length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (ln.decode().partition(":") for ln in lines[1:])}
        n = int(fields["content-length"])
        out.append((lines[0], fields, rest[:n]))
        raw = rest[n:]
    return out


def serve(root, data: bytes, fin: bool = False, until=None):
    net = Net()
    svc = net.serve(HttpService, PORT, directory=root)
    c = Client(net, data, fin)
    net.run(until(c) if until else (lambda: c.eof), app=c)
    return svc, c


def test_keep_alive_pipelined_requests_in_order(root):
    reqs = (b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /sub/b.json HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nPOST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    svc, c = serve(root, reqs)
    raw = bytes(c.got)
    cut = raw.index(b"HTTP/1.1", raw.index(b"application/json"))  # HEAD: no body despite Content-Length 2
    rs = responses(raw[:raw.index(b"\r\n\r\n", raw.index(b"application/json")) + 4].replace(
        b"Content-Length: 2", b"Content-Length: 0")) + responses(raw[cut:])
    assert rs[0][0] == b"HTTP/1.1 200 OK" and rs[0][2] == b"hello\n"
    assert rs[0][1]["content-type"].startswith("text/plain") and rs[0][1]["connection"] == "keep-alive"
    assert rs[1][0] == b"HTTP/1.1 200 OK" and rs[1][1]["content-type"] == "application/json"
    # HEAD: Content-Length of the file, no body: the next response follows at once
    assert b"application/json\r\nContent-Length: 2\r\n" in raw
    assert [r[0][9:12] for r in rs] == [b"200", b"200", b"404", b"405", b"200"]
    assert rs[4][2] == b"<h1>hi</h1>" and rs[4][1]["connection"] == "close"
    assert svc.accepted == 1 and svc.requests == 5


def test_head_has_no_body_and_errors(root):
    svc, c = serve(root, b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = bytes(c.got).partition(b"\r\n\r\n")
    assert b"Content-Length: 6" in head and body == b""
    for req, status in ((b"GET /nope HTTP/1.0\r\n\r\n", b"404"), (b"BREW / HTTP/1.0\r\n\r\n", b"405"),
                        (b"garbage\r\n\r\n", b"400"), (b"GET /../secret HTTP/1.0\r\n\r\n", b"404"),
                        (b"GET /out HTTP/1.0\r\n\r\n", b"403"),
                        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", b"414"),
                        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * (MAX_HEAD // 6) + b"\r\n", b"431")):
        svc, c = serve(root, req)
        assert bytes(c.got).startswith(b"HTTP/1.1 " + status), (req[:40], bytes(c.got[:80]))
        assert c.eof  # the server closed
    assert b"Allow: GET, HEAD" in serve(root, b"PUT / HTTP/1.0\r\n\r\n")[1].got


def test_http10_closes_and_the_sequence_of_the_pipelined_stream(root):
    svc, c = serve(root, b"GET /a.txt HTTP/1.0\r\n\r\nGET /a.txt HTTP/1.0\r\n\r\n")
    rs = responses(bytes(c.got))
    assert len(rs) == 1 and rs[0][1]["connection"] == "close"
    assert svc.requests == 1 and svc.status()["statuses"] == {"200": 1}


def test_a_large_file_is_streamed_intact(root):
    data = os.urandom(3 * 1024 * 1024 + 5)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(data)
    svc, c = serve(root, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", fin=True)
    (status, fields, body), = responses(bytes(c.got))
    assert status == b"HTTP/1.1 200 OK" and fields["content-type"] == "application/octet-stream"
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert svc.status()["completed"] == 1 and svc.status()["failed"] == 0
