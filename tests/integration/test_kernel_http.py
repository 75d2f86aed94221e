"""The daemon's HTTP/1.1 file service (``pystack up --http 8080:DIR``) against ``curl`` and
``wget`` run on the kernel side of the TAP, in a namespace the daemon makes and removes.

Needs root, /dev/net/tun, ``curl``, ``wget`` and ``nsenter`` (ci/common.sh installs them).
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from test_kernel_tap import STACK_IP, _need, in_ns
from test_kernel_tcp import MiB, _random_file, _sha, service, tcp_daemon

pytestmark = pytest.mark.netns

PORT = 8080
URL = f"http://{STACK_IP}:{PORT}"


@pytest.fixture(scope="module")
def httpd(tmp_path_factory):
    _need("curl", "wget", "nsenter")
    tmp = tmp_path_factory.mktemp("httpd")
    www = tmp / "www"
    www.mkdir()
    big = www / "big.bin"
    digest = _random_file(big, 5 * MiB)
    (www / "hello.txt").write_text("hello\n")
    (tmp / "secret.txt").write_text("secret\n")
    (www / "escape").symlink_to(tmp / "secret.txt")
    with tcp_daemon(tmp, ["--http", f"{PORT}:{www}"]) as d:
        d.www, d.digest, d.tmp = www, digest, tmp
        yield d


def curl(d, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{d.netns}", "curl", "-sS", "--max-time", "60", *args],
                          capture_output=True, timeout=90)


def test_curl_downloads_5mib_intact(httpd):
    out = curl(httpd, f"{URL}/big.bin")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == 5 * MiB
    assert hashlib.sha256(out.stdout).hexdigest() == httpd.digest


def test_wget_downloads_5mib_intact(httpd):
    dest = httpd.tmp / "wget.bin"
    out = in_ns(httpd.netns, "wget", "-q", "-T", "60", "-t", "1", "-O", str(dest), f"{URL}/big.bin")
    assert out.returncode == 0, out.stderr
    assert _sha(dest) == httpd.digest
    dest.unlink()


def test_head_gives_the_headers_and_no_body(httpd):
    out = curl(httpd, "-I", f"{URL}/hello.txt")
    assert out.returncode == 0, out.stderr
    head = out.stdout.decode().lower()
    assert head.startswith("http/1.1 200 ok")
    assert "content-length: 6\r\n" in head and "content-type: text/plain" in head


def test_404_and_traversal_refused(httpd):
    def status(path: str) -> str:
        out = curl(httpd, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", f"{URL}{path}")
        assert out.returncode == 0, out.stderr
        return out.stdout.decode()

    assert status("/missing.txt") == "404"
    assert status("/../secret.txt") == "404"
    assert status("/%2e%2e/secret.txt") == "404"
    assert status("/escape") == "403"


def test_keep_alive_two_urls_one_connection(httpd):
    before = service(httpd.status(), f"tcp-http:{PORT}")["accepted"]
    out = curl(httpd, "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
               f"{URL}/hello.txt", f"{URL}/big.bin")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["1", "0"]  # the second transfer reused the connection
    assert service(httpd.status(), f"tcp-http:{PORT}")["accepted"] == before + 1
