"""`pystack up` against the Linux kernel, through a TAP, in namespaces the tests create.

One daemon (``python -m pystack up --netns <unique>``) serves the module: the
kernel side of its TAP (10.77.0.1) pings it, echoes UDP through it, meets
ECONNREFUSED from it; ``pystack status --json`` shows the counters; SIGTERM
stops it and leaves no namespace behind; tshark reads its capture back with
no malformed packet and no checksum error.  A second test attaches the
daemon to a TAP that already exists and checks its configuration is left
alone.  Every namespace and process made here is removed when the test ends,
also on failure (fixtures with ``finally``).

Needs root, /dev/net/tun, ``ping`` (iputils-ping), ``nsenter`` and ``tshark``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import netns_available, require
from pystack.runtime import procs
from pystack.runtime.procs import stop as stop_process

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
STACK_IP = "10.77.0.2"
HOST_IP = "10.77.0.1"
ECHO_PORT = 7
CLOSED_PORT = 9
START_S = 15.0
RUN_S = 60.0
CLONE_NEWNET = 0x40000000


def _need(*tools: str) -> None:
    require(netns_available())
    missing = [t for t in tools if not any(os.access(os.path.join(d, t), os.X_OK)
                                           for d in os.environ.get("PATH", "").split(":"))]
    require(missing and f"needs {', '.join(missing)} (ci/common.sh installs them)")


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def inside(netns: str):
    """Run the block with this thread in ``netns`` (fds opened stay bound to it).

    setns(2) on the namespace's file: never creates one (pyroute2's pushns
    would create a missing namespace).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), netns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot recover
                os.abort()
    finally:
        os.close(own)


def in_ns(netns: str, *cmd: str, timeout: float = RUN_S) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *cmd], capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Daemon:
    netns: str
    proc: subprocess.Popen
    control: str
    pcap: str
    log: Path

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "pystack", "status", "--json", "--control", self.control],
                             cwd=ROOT, capture_output=True, text=True, timeout=RUN_S)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_daemon(args: list[str], control: str, log: Path, prefix: list[str] = ()) -> subprocess.Popen:
    """Start ``pystack up`` and wait (bounded) until its control socket answers."""
    return procs.start_daemon(args, control, log, prefix, timeout=START_S, cwd=ROOT)


def remove_netns(name: str) -> None:
    """Last resort after a failure: the daemon should have removed it."""
    if os.path.exists(f"/run/netns/{name}"):
        from pyroute2 import netns

        with contextlib.suppress(OSError):
            netns.remove(name)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    _need("ping", "nsenter", "tshark")
    tmp = tmp_path_factory.mktemp("daemon")
    name = _unique("pst-it")
    control = str(tmp / "ctl.sock")
    pcap = str(tmp / "run.pcap")
    log = tmp / "daemon.log"
    proc = None
    try:
        proc = start_daemon(["--netns", name, "--ip", f"{STACK_IP}/24", "--udp-echo", str(ECHO_PORT),
                             "--pcap", pcap], control, log)
        yield Daemon(name, proc, control, pcap, log)
    finally:
        if proc is not None:
            stop_process(proc)
        remove_netns(name)


def ping(d: Daemon, *args: str, timeout: float = RUN_S) -> tuple[int, int, str]:
    out = in_ns(d.netns, "ping", *args, STACK_IP, timeout=timeout)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out.stdout)
    assert m, f"ping output:\n{out.stdout}\n{out.stderr}\ndaemon:\n{d.stderr()}"
    return int(m.group(1)), int(m.group(2)), out.stdout


def test_the_namespace_and_host_side_exist(daemon):
    assert os.path.exists(f"/run/netns/{daemon.netns}")
    from pyroute2 import IPRoute

    with IPRoute(netns=daemon.netns) as ipr:
        (index,) = ipr.link_lookup(ifname="pst0")
        addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)]
        assert HOST_IP in addrs
        assert ipr.get_links(index)[0].get_attr("IFLA_MTU") == 1500


def test_ping_20_without_loss(daemon):
    sent, received, out = ping(daemon, "-c", "20", "-i", "0.01", "-W", "2", "-w", "20")
    assert (sent, received) == (20, 20), out
    assert "ttl=64" in out


def test_ping_8000_bytes_fragments_both_ways(daemon):
    before = daemon.status()["counters"]
    sent, received, out = ping(daemon, "-c", "3", "-i", "0.05", "-s", "8000", "-W", "2", "-w", "20")
    assert (sent, received) == (3, 3), out
    assert "8008 bytes from" in out
    after = daemon.status()["counters"]
    # 8028-byte datagrams on a 1500 MTU: 6 fragments each way per ping.
    assert after["reasm"]["ok"] - before["reasm"]["ok"] == 3
    assert after["ipv4"]["fragments_rx"] - before["ipv4"]["fragments_rx"] == 18
    assert after["ipv4"]["fragments_tx"] - before["ipv4"]["fragments_tx"] == 18


def test_flood_ping_1000(daemon):
    sent, received, out = ping(daemon, "-f", "-c", "1000", "-W", "2", "-w", "30", "-q")
    assert sent == 1000
    assert received == 1000, out


def test_udp_echo_with_a_kernel_socket(daemon):
    with inside(daemon.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(5.0)
        sock.bind((HOST_IP, 0))
        for size in (0, 1, 100, 1472, 1473, 4000, 20000):
            data = bytes((i * 7 + size) & 0xFF for i in range(size))
            sock.sendto(data, (STACK_IP, ECHO_PORT))
            got, addr = sock.recvfrom(65535)
            assert addr == (STACK_IP, ECHO_PORT)
            assert got == data, size
        burst = [b"datagram %d" % i for i in range(50)]
        for data in burst:
            sock.sendto(data, (STACK_IP, ECHO_PORT))
        assert sorted(sock.recvfrom(100)[0] for _ in burst) == sorted(burst)


def test_connected_udp_socket_to_a_closed_port_gets_econnrefused(daemon):
    with inside(daemon.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(5.0)
        sock.connect((STACK_IP, CLOSED_PORT))
        sock.send(b"anyone there?")
        with pytest.raises(ConnectionRefusedError):
            sock.recv(100)
    counters = daemon.status()["counters"]
    assert counters["udp"]["no_port"] >= 1


def test_status_json_shows_the_counters(daemon):
    st = daemon.status()
    c = st["counters"]
    assert c["icmp"]["echo_requests"] >= 1023
    assert c["icmp"]["echo_replies"] == c["icmp"]["echo_requests"]
    assert c["udp"]["delivered"] >= 57
    assert c["arp"]["replies_sent"] >= 1
    assert st["config"]["ip"] == STACK_IP
    assert st["daemon"]["netns"] == daemon.netns and st["daemon"]["created_netns"] is True
    assert st["runtime"]["stack_errors"] == 0 and st["runtime"]["device_errors"] == 0
    assert st["runtime"]["rx_frames"] > 1000 and st["runtime"]["tx_frames"] > 1000
    assert any(row["local"].endswith(f":{ECHO_PORT}") for row in st["sockets"])
    assert any(row["ip"] == HOST_IP for row in st["arp"])
    text = subprocess.run([sys.executable, "-m", "pystack", "status", "--control", daemon.control],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_S)
    assert text.returncode == 0, text.stderr
    assert "Icmp:" in text.stdout and HOST_IP in text.stdout


# Every packet tshark finds malformed, with a bad checksum, or with a warning or error.
TSHARK_BAD = ('_ws.malformed || _ws.expert.severity >= "Warning" || ip.checksum.status == "Bad" '
              '|| udp.checksum.status == "Bad" || icmp.checksum.status == "Bad"')


def tshark_problems(pcap: str) -> tuple[int, str]:
    """(packets read, the lines tshark flags) for ``pcap``, checksums verified."""
    opts = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    total = subprocess.run(["tshark", "-r", pcap, *opts, "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, timeout=RUN_S)
    assert total.returncode == 0, total.stderr
    bad = subprocess.run(["tshark", "-r", pcap, *opts, "-Y", TSHARK_BAD, "-T", "fields", "-e", "frame.number",
                          "-e", "_ws.col.Info", "-e", "_ws.expert.message"],
                         capture_output=True, text=True, timeout=RUN_S)
    assert bad.returncode == 0, bad.stderr
    return len(total.stdout.split()), bad.stdout.strip()


def test_sigterm_stops_cleanly_and_the_capture_reads_back(daemon):
    """Last in the module: stops the daemon."""
    assert stop_process(daemon.proc, signal.SIGTERM) == 0, daemon.stderr()
    assert "Traceback" not in daemon.stderr()
    assert not os.path.exists(f"/run/netns/{daemon.netns}"), "the namespace outlived the daemon"
    assert not os.path.exists(daemon.control), "the control socket outlived the daemon"
    packets, problems = tshark_problems(daemon.pcap)
    assert packets > 2000
    assert problems == "", problems
    icmp = subprocess.run(["tshark", "-r", daemon.pcap, "-Y", "icmp.type == 0 && ip.src == " + STACK_IP,
                           "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=RUN_S)
    assert len(icmp.stdout.split()) >= 1023  # our echo replies, decoded as such


def test_the_tshark_check_catches_a_bad_checksum(tmp_path):
    """The check above can fail: a capture holding a UDP datagram with a wrong checksum."""
    _need("tshark")
    import struct

    from pystack.phy.pcap_writer import PcapFile
    from pystack.wire.checksum import checksum

    udp = struct.pack("!HHHH", 1000, 2000, 12, 0x1234) + b"oops"  # 0x1234 is wrong
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               socket.inet_aton(HOST_IP), socket.inet_aton(STACK_IP)))
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    frame = bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + bytes(ip) + udp
    path = str(tmp_path / "bad.pcap")
    with PcapFile(path) as pcap:
        pcap.write(frame, 0)
    packets, problems = tshark_problems(path)
    assert packets == 1
    assert problems.startswith("1")


# -- attaching to a TAP that exists ---------------------------------------------------------

@pytest.fixture
def existing_tap():
    """A namespace with a persistent TAP tap0 (10.77.0.1/24, up), as `ip tuntap add` would make."""
    _need("ping", "nsenter")
    from pystack.runtime.netns import NetNamespace

    with NetNamespace(_unique("pst-at")) as ns:
        with ns.iproute() as ipr:
            ipr.link("add", ifname="tap0", kind="tuntap", mode="tap")
            (index,) = ipr.link_lookup(ifname="tap0")
            ipr.link("set", index=index, mtu=1400, state="up")
            ipr.addr("add", index=index, address=HOST_IP, prefixlen=24)
        yield ns


def _tap_state(ns) -> tuple:
    with ns.iproute() as ipr:
        found = ipr.link_lookup(ifname="tap0")
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        # IPv4 only: the kernel itself adds an IPv6 link-local address when
        # the TAP gets carrier (a process attaches), whoever that process is.
        addrs = sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=found[0], family=socket.AF_INET))
        up = bool(link["flags"] & 1)  # IFF_UP
        return link.get_attr("IFLA_MTU"), link.get_attr("IFLA_ADDRESS"), addrs, up


def test_attach_to_an_existing_tap_and_leave_it_alone(existing_tap, tmp_path):
    ns = existing_tap
    before = _tap_state(ns)
    control = str(tmp_path / "ctl.sock")
    proc = start_daemon(["--tap", "tap0", "--ip", f"{STACK_IP}/24"], control, tmp_path / "log",
                        prefix=["nsenter", f"--net=/run/netns/{ns.name}"])
    try:
        out = in_ns(ns.name, "ping", "-c", "3", "-i", "0.05", "-W", "2", "-w", "20", STACK_IP)
        assert ", 0% packet loss" in out.stdout, out.stdout + out.stderr
        from pystack.runtime.control import request

        st = request(control)
        assert st["config"]["mtu"] == 1400  # the existing TAP's MTU
        assert st["daemon"]["created_tap"] is False
        assert stop_process(proc, signal.SIGINT) == 0, (tmp_path / "log").read_text()
    finally:
        stop_process(proc)
    assert _tap_state(ns) == before, "the existing TAP's configuration changed"


def test_a_failed_setup_removes_the_namespace_it_made(tmp_path):
    """`--tap lo` names an interface that exists and is no TAP: one line, exit 1, nothing left."""
    _need()
    name = _unique("pst-fail")
    try:
        proc = subprocess.run([sys.executable, "-m", "pystack", "up", "--netns", name, "--tap", "lo",
                               "--control", str(tmp_path / "c.sock")], cwd=ROOT, capture_output=True,
                              text=True, timeout=RUN_S)
        assert proc.returncode == 1
        lines = [ln for ln in proc.stderr.splitlines() if " INFO: " not in ln]
        assert lines == [f"pystack: error: lo already exists in namespace {name} and is a "
                         "physical or loopback device, not a TAP"]
        assert not os.path.exists(f"/run/netns/{name}")
    finally:
        remove_netns(name)
