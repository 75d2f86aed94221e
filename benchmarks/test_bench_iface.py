"""End to end: ping round-trip time and UDP echo rate through pystack, beside the kernel over veth.

Two set-ups, made for the run and removed after it (namespaces, devices and
processes; also on failure):

* **pystack**: ``python -m pystack up --netns <A> --udp-echo 7`` (a process of
  its own); the client is the kernel of namespace A, on the TAP's host side
  (10.77.0.1 -> 10.77.0.2).
* **kernel**: namespaces B and C joined by a veth pair (10.78.0.1 in B,
  10.78.0.2 in C), made with pyroute2; C's "stack" is the Linux kernel, and its
  UDP echo is a small Python echo server (a process of its own, like pystack's
  service, so neither side shares the client's GIL).

The client is this process, with sockets created inside the client
namespace: ping is an ICMP echo over a raw socket, one in flight, timed from
send to matching reply (each round is one ping, so the median of the rounds
is the median RTT); UDP echo sends ``DATAGRAMS`` datagrams of 64 bytes with
``WINDOW`` in flight and waits for every echo (each round is one such burst;
datagrams/s = DATAGRAMS / median).  Both include the same Python client
overhead on both sides.  The ratios pystack / kernel are printed at the end
of the module and kept in each benchmark's ``extra_info``.

Needs root, /dev/net/tun and nsenter; skipped otherwise (benchmarks are not CI-gated).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from bench_summary import write_summary

from pystack.runtime.procs import stop

ROOT = Path(__file__).resolve().parent.parent
PING_ROUNDS = 400
UDP_ROUNDS = 15
DATAGRAMS = 1000
WINDOW = 16
PAYLOAD = 64
TIMEOUT_S = 2.0
CLONE_NEWNET = 0x40000000

_results: dict[tuple[str, str], float] = {}

ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def inside(netns: str):
    """This thread in ``netns`` for the block (setns on the namespace file; never creates one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed", netns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover
                os.abort()
    finally:
        os.close(own)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Client:
    """Raw ICMP and UDP sockets inside a namespace, aimed at one peer."""

    def __init__(self, netns: str, peer: str) -> None:
        self.peer = peer
        with inside(netns):
            self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.icmp.settimeout(TIMEOUT_S)
        self.udp.settimeout(TIMEOUT_S)
        self.udp.connect((peer, 7))
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0
        self.lost = 0

    def ping(self) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        body = struct.pack("!HH", self.ident, self.seq) + b"pystack-bench-56-bytes".ljust(56, b".")
        msg = struct.pack("!BBH", 8, 0, 0) + body
        msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
        self.icmp.sendto(msg, (self.peer, 0))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                packet = self.icmp.recv(2048)
            except TimeoutError:
                self.lost += 1
                return
            ihl = (packet[0] & 0x0F) * 4
            if packet[ihl] == 0 and packet[ihl + 4:ihl + 8] == body[:4]:
                return
            if time.monotonic() > deadline:
                self.lost += 1
                return

    def udp_burst(self) -> None:
        """DATAGRAMS datagrams, WINDOW in flight; after TIMEOUT_S without an echo the rest count as lost."""
        sock = self.udp
        data = b"u" * PAYLOAD
        sent = received = 0
        while sent < min(WINDOW, DATAGRAMS):
            sock.send(data)
            sent += 1
        while received < sent:
            try:
                sock.recv(2048)
            except TimeoutError:
                self.lost += sent - received
                return
            received += 1
            if sent < DATAGRAMS:
                sock.send(data)
                sent += 1

    def close(self) -> None:
        self.icmp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def clients(request):
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")
    from pyroute2 import netns

    from pystack.runtime.control import ControlError, request as ask
    from pystack.runtime.netns import NetNamespace

    tmp = tempfile.mkdtemp(prefix="pystack-bench-")
    control = os.path.join(tmp, "ctl.sock")
    a = _unique("pst-bench")
    procs: list[subprocess.Popen] = []
    made: dict[str, Client] = {}
    try:
        with open(os.path.join(tmp, "daemon.log"), "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "pystack", "up", "--netns", a, "--udp-echo", "7",
                                       "--log-level", "warning", "--control", control],
                                      cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        procs.append(daemon)
        deadline = time.monotonic() + 15
        while True:
            assert daemon.poll() is None, Path(tmp, "daemon.log").read_text()
            if os.path.exists(control):
                with contextlib.suppress(ControlError):
                    ask(control, timeout=1.0)
                    break
            assert time.monotonic() < deadline, "pystack up did not start"
            time.sleep(0.02)
        with NetNamespace(_unique("pst-vb")) as nb, NetNamespace(_unique("pst-vc")) as nc:
            vb, vc = f"vb{secrets.token_hex(3)}", f"vc{secrets.token_hex(3)}"
            with nb.iproute() as ipr:
                # Made inside B with its peer placed straight into C: the pair
                # never exists in the root namespace.
                ipr.link("add", ifname=vb, kind="veth", peer={"ifname": vc, "net_ns_fd": nc.name})
            for ns, ifname, addr in ((nb, vb, "10.78.0.1"), (nc, vc, "10.78.0.2")):
                with ns.iproute() as ipr:
                    (index,) = ipr.link_lookup(ifname=ifname)
                    ipr.addr("add", index=index, address=addr, prefixlen=24)
                    ipr.link("set", index=index, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            echo = subprocess.Popen(["nsenter", f"--net=/run/netns/{nc.name}", sys.executable, "-c", ECHO_SERVER,
                                     "10.78.0.2", "7"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            procs.append(echo)
            assert echo.stdout.readline() == b"ready\n"
            made["pystack"] = Client(a, "10.77.0.2")
            made["pystack"].control = control
            made["kernel"] = Client(nb.name, "10.78.0.2")
            for c in made.values():  # resolve ARP and warm up both paths
                for _ in range(5):
                    c.ping()
                c.lost = 0
            yield made
    finally:
        for c in made.values():
            c.close()
        for p in reversed(procs):
            stop(p)
        if os.path.exists(f"/run/netns/{a}"):
            with contextlib.suppress(OSError):
                netns.remove(a)
        with contextlib.suppress(OSError):
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        _report(request)


def _median(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    inner = getattr(stats, "stats", None)
    return getattr(inner, "median", None)


def _report(request) -> None:
    lines = []
    rtt_p, rtt_k = _results.get(("rtt", "pystack")), _results.get(("rtt", "kernel"))
    if rtt_p and rtt_k:
        lines.append(f"ping RTT median: pystack {rtt_p * 1e6:.0f} us, kernel/veth {rtt_k * 1e6:.0f} us, "
                     f"pystack / kernel = {rtt_p / rtt_k:.2f}")
    udp_p, udp_k = _results.get(("udp", "pystack")), _results.get(("udp", "kernel"))
    if udp_p and udp_k:
        rp, rk = DATAGRAMS / udp_p, DATAGRAMS / udp_k
        lines.append(f"UDP echo (64 B, {WINDOW} in flight): pystack {rp:,.0f} datagrams/s, kernel/veth "
                     f"{rk:,.0f} datagrams/s, pystack / kernel = {rp / rk:.2f}")
    write_summary(request, "iface benchmark: ", lines)


@pytest.mark.benchmark(group="iface-ping-rtt")
@pytest.mark.parametrize("side", ["pystack", "kernel"])
def test_ping_rtt(benchmark, clients, side):
    client = clients[side]
    benchmark.pedantic(client.ping, rounds=PING_ROUNDS, iterations=1, warmup_rounds=20)
    assert client.lost == 0, f"{client.lost} pings lost"
    median = _median(benchmark)
    if median is not None:
        _results[("rtt", side)] = median
        benchmark.extra_info["rtt_median_us"] = round(median * 1e6, 1)


@pytest.mark.benchmark(group="iface-udp-echo-1000")
@pytest.mark.parametrize("side", ["pystack", "kernel"])
def test_udp_echo_rate(benchmark, clients, side):
    from pystack.runtime.control import request

    client = clients[side]
    client.lost = 0
    before = request(client.control)["counters"]["udp"]["delivered"] if side == "pystack" else 0
    bursts = 0

    def burst():
        nonlocal bursts
        bursts += 1
        client.udp_burst()

    # Count the bursts: with --benchmark-disable pedantic runs a single one.
    benchmark.pedantic(burst, rounds=UDP_ROUNDS, iterations=1, warmup_rounds=2)
    assert client.lost == 0, f"{client.lost} datagrams lost"
    if side == "pystack":  # the echoes really came from pystack
        after = request(client.control)["counters"]["udp"]["delivered"]
        assert after - before >= bursts * DATAGRAMS
    median = _median(benchmark)
    if median is not None:
        _results[("udp", side)] = median
        benchmark.extra_info["datagrams_per_s"] = round(DATAGRAMS / median)
