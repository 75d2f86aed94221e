"""Stacks that join a running daemon's link, against the Linux kernel, in a namespace made here.

One daemon serves the module (``pystack up --netns <unique> --ip 10.78.5.2/24
--tcp-echo 7 --tcp-sink 5001``; the kernel side of its TAP is 10.78.5.1).
Joined hosts run in this process: each attaches over the control socket
(:func:`pystack.runtime.switch.attach`), gets its end of a switch port, and
runs its own Interface and Loop in a thread on it -- another host of the
same Ethernet segment, with its own MAC and address.  The kernel pings a
joined host, talks TCP to it, a joined host reaches the daemon's own echo
service and another joined host through the switch, and a port disappears
from ``status`` when its host closes.  The throughput of 16 MiB kernel ->
joined host is printed beside kernel -> daemon, measured in the same run.

Needs root, /dev/net/tun, ``ping`` (iputils-ping), ``nc`` (netcat-openbsd)
and ``nsenter``.  The namespace and the daemon are removed when the module
ends, also on failure.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from pystack.iface.interface import Interface, InterfaceConfig
from pystack.runtime.loop import Loop
from pystack.runtime.procs import stop as stop_process
from pystack.runtime.procs import wait_until
from pystack.runtime.switch import attach
from pystack.services.tcp import TcpEchoService, TcpSinkService, listen
from pystack.wire.ethernet import mac_from_str
from pystack.wire.ipv4 import ip_from_str
from test_kernel_tap import Daemon, _need, _unique, in_ns, inside, remove_netns, start_daemon

pytestmark = pytest.mark.netns

NET = "10.78.5"
HOST_IP, DAEMON_IP, JOIN_A, JOIN_B = f"{NET}.1", f"{NET}.2", f"{NET}.3", f"{NET}.4"
ECHO, SINK = 7, 5001
WAIT_S = 10.0
XFER_S = 120.0
MiB = 1 << 20


@pytest.fixture(scope="module")
def joind(tmp_path_factory):
    _need("ping", "nc", "nsenter")
    tmp = tmp_path_factory.mktemp("joind")
    name = _unique("pst-join")
    control = str(tmp / "ctl.sock")
    log = tmp / "daemon.log"
    proc = None
    try:
        proc = start_daemon(["--netns", name, "--ip", f"{DAEMON_IP}/24", "--tcp-echo", str(ECHO),
                             "--tcp-sink", str(SINK)], control, log)
        yield Daemon(name, proc, control, "", log)
    finally:
        if proc is not None:
            stop_process(proc)
        remove_netns(name)


class Waiter:
    """A service of the joined host's loop: checks conditions in the loop thread, after each
    iteration's frames, and wakes the test thread waiting on them (no polling from outside)."""

    def __init__(self) -> None:
        self.pending: list = []

    def poll(self) -> None:
        for item in list(self.pending):
            pred, done, box = item
            try:
                value = pred()
            except Exception as exc:  # handed to the waiting thread
                value = exc
            if value:
                box.append(value)
                self.pending.remove(item)
                done.set()


class JoinedHost:
    """A stack in this process on the daemon's link: attach, then an Interface + Loop thread."""

    def __init__(self, control: str, ip: str, **kw) -> None:
        self.dev, self.info = attach(control, ip=ip, **kw)
        info = self.info
        try:
            self.iface = Interface(InterfaceConfig(
                mac=mac_from_str(info["mac"]), ip=ip_from_str(info["ip"]), prefix_len=info["prefix_len"],
                gateway=ip_from_str(info["gateway"]) if info["gateway"] else None, mtu=info["mtu"]))
            self.waiter = Waiter()
            self.loop = Loop(self.dev, self.iface, services=[self.waiter])
        except BaseException:
            self.dev.close()
            raise
        self.thread = self.loop.start_thread(f"joined-{ip}")

    def call(self, fn, *args):
        """``fn(*args)`` in the loop thread; its result (or its exception, raised here)."""
        done = threading.Event()
        box: list = []

        def run():
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.loop.call_soon(run)
        assert done.wait(WAIT_S), f"the joined host's loop did not run {fn!r}"
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def wait(self, pred, timeout: float = WAIT_S, what: str = "a condition"):
        """Wait until ``pred()`` (run in the loop thread after each iteration) is truthy."""
        done = threading.Event()
        box: list = []
        self.call(self.waiter.pending.append, (pred, done, box))
        if not done.wait(timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    def serve(self, make):
        """Add ``make(iface)`` to the loop's services (in the loop thread); return it."""
        def add():
            svc = make(self.iface)
            self.loop.services.append(svc)
            return svc
        return self.call(add)

    def close(self) -> None:
        self.loop.stop()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the joined host's loop did not stop"
        self.loop.close()
        self.dev.close()


@contextlib.contextmanager
def joined(d: Daemon, ip: str, **kw):
    host = JoinedHost(d.control, ip, **kw)
    try:
        yield host
    finally:
        host.close()


class EchoCheck:
    """A client of the joined host: connect, send ``payload``, half-close, read until the end,
    close.  A service polled by the loop; ``done`` once over, ``got``/``error`` say how."""

    def __init__(self, iface, addr, payload: bytes) -> None:
        self.sock = iface.tcp.socket()
        self.sock.connect(addr)
        self.payload = memoryview(payload)
        self.sent = 0
        self.got = bytearray()
        self.error: int | None = None
        self.done = False

    def poll(self) -> None:
        if self.done:
            return
        s = self.sock
        try:
            if s.error:
                raise OSError(s.take_error(), "connection failed")
            if s.state in ("SYN-SENT", "SYN-RECEIVED"):
                return
            while self.sent < len(self.payload):
                try:
                    self.sent += s.send(self.payload[self.sent:])
                except BlockingIOError:
                    break
                if self.sent == len(self.payload):
                    s.shutdown(1)  # SHUT_WR: a FIN after the data
            while True:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    return
                if not chunk:
                    s.close()
                    self.done = True
                    return
                self.got += chunk
        except OSError as exc:
            self.error = exc.errno
            s.abort()
            self.done = True


def echo_through(host: JoinedHost, addr, size: int) -> None:
    payload = os.urandom(size)
    check = host.serve(lambda iface: EchoCheck(iface, addr, payload))
    host.wait(lambda: check.done, what=f"the echo from {addr}")
    assert check.error is None, os.strerror(check.error)
    assert bytes(check.got) == payload


def kernel_echo(netns: str, addr, size: int) -> None:
    """A kernel client (in the namespace) sends ``size`` bytes to an echo and reads them back."""
    with inside(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(WAIT_S)
        sock.connect(addr)
        data = os.urandom(size)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        assert bytes(got) == data


def ports(d: Daemon) -> list[dict]:
    from pystack.runtime.control import request

    return request(d.control, "status", timeout=WAIT_S)["switch"]["ports"]


# -- tests ------------------------------------------------------------------------------------

def test_a_joined_host_answers_ping_at_its_own_address(joind):
    with joined(joind, JOIN_A) as a:
        assert a.info["daemon_ip"] == DAEMON_IP and a.info["prefix_len"] == 24
        out = in_ns(joind.netns, "ping", "-c", "5", "-i", "0.05", "-W", "2", "-w", "20", JOIN_A, timeout=30)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out.stdout)
        assert m and m.groups() == ("5", "5"), out.stdout + out.stderr
        # The kernel learned the joined host's own MAC (ARP through the switch), not the daemon's.
        neigh = in_ns(joind.netns, "cat", "/proc/net/arp", timeout=10).stdout
        assert re.search(rf"^{re.escape(JOIN_A)}\s.*{a.info['mac']}", neigh, re.M), neigh
        (port,) = ports(joind)
        assert port["ip"] == JOIN_A and port["rx_frames"] >= 5 and port["tx_frames"] >= 5


def test_a_joined_host_serves_tcp_to_the_kernel_and_reaches_the_daemon(joind):
    with joined(joind, JOIN_A) as a:
        a.serve(lambda iface: TcpEchoService(listen(iface.tcp, ECHO)))
        kernel_echo(joind.netns, (JOIN_A, ECHO), 200_000)
        echo_through(a, (DAEMON_IP, ECHO), 300_000)  # port -> switch -> the daemon's interface


def test_two_joined_hosts_talk_to_each_other(joind):
    with joined(joind, JOIN_A) as a, joined(joind, JOIN_B, mac="02:00:0b:00:00:04") as b:
        assert b.info["mac"] == "02:00:0b:00:00:04"
        b.serve(lambda iface: TcpEchoService(listen(iface.tcp, ECHO)))
        echo_through(a, (JOIN_B, ECHO), 500_000)
        by_ip = {p["ip"]: p for p in ports(joind)}
        # Port to port: b received at least the 500 kB in MSS-sized frames, and none dropped.
        assert by_ip[JOIN_B]["tx_frames"] > 500_000 // 1460
        assert by_ip[JOIN_A]["tx_dropped"] == by_ip[JOIN_B]["tx_dropped"] == 0


def test_refusals_and_the_port_goes_when_its_host_closes(joind):
    with joined(joind, JOIN_A):
        for ip, code in ((JOIN_A, errno.EADDRINUSE), (DAEMON_IP, errno.EADDRINUSE), (HOST_IP, errno.EADDRINUSE),
                         ("10.78.6.3", errno.EADDRNOTAVAIL)):
            with pytest.raises(OSError) as info:
                attach(joind.control, ip=ip)
            assert info.value.errno == code, ip
        assert [p["ip"] for p in ports(joind)] == [JOIN_A]
        text = subprocess.run([*_pystack(), "status", "--control", joind.control], capture_output=True,
                              text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        assert "Switch: " in text.stdout and JOIN_A in text.stdout
    # The daemon reads the end of the port's socket at once; another process's state, so asked.
    wait_until(lambda: not ports(joind), WAIT_S, "the port to go")
    with joined(joind, JOIN_A):  # the address is free again
        pass


def _pystack() -> list[str]:
    import sys

    return [sys.executable, "-m", "pystack"]


def _sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def _nc_send(netns: str, addr: str, path) -> float:
    t0 = time.monotonic()
    with open(path, "rb") as f:
        out = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "nc", "-N", addr, str(SINK)], stdin=f,
                             capture_output=True, timeout=XFER_S)
    assert out.returncode == 0, out.stderr
    return time.monotonic() - t0


def test_16mib_kernel_to_joined_host_beside_kernel_to_daemon(joind, tmp_path):
    """MB/s as each sink measures it (its session, accept to end of stream: both sides the
    same definition), beside nc's wall time (which includes connecting and ends when nc's
    last bytes left for the kernel's socket buffer, not when they arrived)."""
    from pystack.runtime.control import request

    size = 16 * MiB
    src = tmp_path / "16m.bin"
    src.write_bytes(os.urandom(size))
    digest = _sha(src)

    def sink_of(st):
        return next(s for s in st["services"] if s["service"] == f"tcp-sink:{SINK}")

    before = sink_of(request(joind.control, timeout=WAIT_S))["completed"]
    daemon_wall = _nc_send(joind.netns, DAEMON_IP, src)
    svc = wait_until(lambda: (s := sink_of(request(joind.control, timeout=WAIT_S)))["completed"] > before and s,
                     30, "the daemon's sink to finish")
    daemon_rec = svc["recent"][-1]
    assert daemon_rec["bytes_in"] == size and daemon_rec["sha256"] == digest

    with joined(joind, JOIN_A) as a:
        sink = a.serve(lambda iface: TcpSinkService(listen(iface.tcp, SINK)))
        joined_wall = _nc_send(joind.netns, JOIN_A, src)
        st = a.wait(lambda: (s := sink.status())["completed"] and s, what="the joined sink")
        joined_rec = st["recent"][-1]
        assert joined_rec["bytes_in"] == size and joined_rec["sha256"] == digest
        (port,) = ports(joind)
    print(f"\n16 MiB kernel -> daemon: {daemon_rec['mb_per_s']:.1f} MB/s (nc wall {size / daemon_wall / 1e6:.1f}); "
          f"kernel -> joined host: {joined_rec['mb_per_s']:.1f} MB/s (nc wall {size / joined_wall / 1e6:.1f}); "
          f"port: {port['tx_frames']} frames to the host, {port['tx_dropped']} dropped")


def test_join_gives_a_stack_with_the_socket_api(joind):
    """``pystack.Stack.join``: a :class:`pystack.Stack` on the daemon's link."""
    import pystack

    with pystack.Stack.join(joind.control, JOIN_B) as st:
        assert st.ip == JOIN_B and st.mac.hex(":") == "02:50:0a:4e:05:04"
        with st.create_connection((DAEMON_IP, ECHO), timeout=WAIT_S) as c:  # the daemon's echo
            c.sendall(b"through the switch" * 1000)
            c.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
            assert bytes(got) == b"through the switch" * 1000
        with st.create_server(("", 8080)) as srv:  # a server the kernel reaches
            srv.settimeout(WAIT_S)
            result: list = []
            client = threading.Thread(target=lambda: result.append(kernel_echo_once(joind.netns)))
            client.start()
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(WAIT_S)
                assert peer[0] == HOST_IP
                data = conn.recv(100)
                conn.sendall(data.upper())
            client.join(WAIT_S)
            assert not client.is_alive() and result == [b"HELLO"]
        assert [p["ip"] for p in ports(joind)] == [JOIN_B]
    wait_until(lambda: not ports(joind), WAIT_S, "the port to go")


def kernel_echo_once(netns: str) -> bytes:
    with inside(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(WAIT_S)
        sock.connect((JOIN_B, 8080))
        sock.sendall(b"hello")
        return sock.recv(100)
