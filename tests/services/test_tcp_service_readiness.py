"""Readiness-driven service polling (see "Readiness" in ``pystack/services/tcp.py``): a service
steps only the sessions something happened to, and still misses nothing -- data, EOF, a reset,
a session whose turn was cut short by TURN_BYTES.  Two stacks over a pipe, manual clock."""

from __future__ import annotations

import pytest

from pystack.iface.interface import Interface, InterfaceConfig
from pystack.phy.device import earliest
from pystack.phy.pipe import Pipe
from pystack.services import tcp as svc
from pystack.services.tcp import EchoSession, TcpDiscardService, TcpEchoService
from pystack.wire.ipv4 import ip_from_str

A_MAC, B_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A_IP, B_IP = ip_from_str("10.77.0.1"), ip_from_str("10.77.0.2")
SEC = 1_000_000


class Net:
    def __init__(self) -> None:
        self.pipe = Pipe(latency=1000)
        self.a = Interface(InterfaceConfig(mac=A_MAC, ip=A_IP, prefix_len=24), tcp_secret=b"a")
        self.b = Interface(InterfaceConfig(mac=B_MAC, ip=B_IP, prefix_len=24), tcp_secret=b"b")
        self.a.neighbors.add_static(B_IP, B_MAC)
        self.b.neighbors.add_static(A_IP, A_MAC)
        self.now = 0
        self.services = []

    def step(self, app=None) -> None:
        for iface, dev in ((self.a, self.pipe.a), (self.b, self.pipe.b)):
            frames = dev.receive(self.now)
            if frames:
                iface.receive_batch(frames, self.now)
        for s in self.services:
            s.poll()
        if app is not None:
            app()
        for iface, dev in ((self.a, self.pipe.a), (self.b, self.pipe.b)):
            out = iface.poll(self.now)
            if out:
                dev.transmit(out, self.now)

    def run(self, done, app=None, limit_s: float = 60, max_steps: int = 20_000) -> None:
        for _ in range(max_steps):
            self.step(app)
            if done():
                return
            t = earliest(self.a.poll_at(), self.b.poll_at(), self.pipe.a.poll_at(), self.pipe.b.poll_at())
            self.now = max(self.now + 1 if app is not None else self.now, t if t is not None else self.now + 1000)
            assert self.now <= limit_s * SEC, "simulation ran too long"
        raise AssertionError(f"not done after {max_steps} steps")

    def settle(self) -> None:
        """Run until neither stack nor the pipe has anything to do."""
        self.run(lambda: all(x.poll_at() is None for x in (self.a, self.b, self.pipe.a, self.pipe.b)))

    def connect(self, port: int, n: int) -> list:
        socks = []
        for _ in range(n):
            s = self.a.tcp.socket()
            s.connect(("10.77.0.2", port))
            socks.append(s)
        self.run(lambda: all(s.state == "ESTABLISHED" for s in socks))
        return socks


def echo_once(net: Net, socks, message=b"hello %d") -> None:
    got = {}

    def app():
        for i, s in enumerate(socks):
            if i not in got:
                try:
                    got[i] = s.recv(1000)
                except BlockingIOError:
                    pass

    for i, s in enumerate(socks):
        s.send(message % i)
    net.run(lambda: len(got) == len(socks), app)
    assert [got[i] for i in range(len(socks))] == [message % i for i in range(len(socks))]


@pytest.fixture
def counted(monkeypatch):
    """Counts EchoSession.step calls."""
    calls = [0]
    step = EchoSession.step

    def counting(self):
        calls[0] += 1
        return step(self)

    monkeypatch.setattr(EchoSession, "step", counting)
    return calls


def test_idle_sessions_are_not_stepped(counted):
    net = Net()
    echo = TcpEchoService(svc.listen(net.b.tcp, 7))
    net.services.append(echo)
    socks = net.connect(7, 50)
    echo_once(net, socks)
    net.settle()
    before = counted[0]
    for _ in range(100):
        net.now += 1000
        net.step()
    assert counted[0] == before
    assert len(echo.sessions) == 50
    echo_once(net, socks, b"again %d")  # data after the idle time wakes each session
    assert echo.bytes_in == 0 and echo.completed == 0  # totals count finished sessions only


def test_a_reset_ends_an_idle_session_at_once():
    net = Net()
    echo = TcpEchoService(svc.listen(net.b.tcp, 7))
    net.services.append(echo)
    socks = net.connect(7, 3)
    echo_once(net, socks)
    net.settle()
    socks[1].abort()  # RST; no data, no FIN: only the state change tells the service
    net.run(lambda: echo.failed == 1)
    assert len(echo.sessions) == 2
    rec = echo.history[-1]
    assert rec["error"] == "Connection reset by peer" and rec["bytes_in"] == len(b"hello 1")


def test_a_turn_cut_short_goes_on_without_new_events(monkeypatch):
    monkeypatch.setattr(svc, "TURN_BYTES", 1000)  # each turn moves at most 1000 bytes each way
    net = Net()
    discard = TcpDiscardService(svc.listen(net.b.tcp, 9))
    net.services.append(discard)
    (sock,) = net.connect(9, 1)
    data = bytes(range(256)) * 200  # 51,200 bytes: arrives long before 52 turns are over
    sent = [0]

    def app():
        if sent[0] < len(data):
            sent[0] += sock.send(data[sent[0]:])
            if sent[0] == len(data):
                sock.shutdown(1)

    net.run(lambda: discard.completed == 1, app)
    assert discard.bytes_in == len(data)


def test_hooks_installed_before_the_service_still_run():
    net = Net()
    layer = net.b.tcp
    seen = []
    prev = layer._note_readable

    def mine(conn):
        seen.append(conn)
        prev(conn)

    layer._note_readable = mine
    echo = TcpEchoService(svc.listen(layer, 7))
    net.services.append(echo)
    socks = net.connect(7, 2)
    echo_once(net, socks)
    assert len(set(seen)) == 2


def test_an_error_is_reported_once_and_the_session_is_gone():
    net = Net()
    echo = TcpEchoService(svc.listen(net.b.tcp, 7))
    net.services.append(echo)
    (sock,) = net.connect(7, 1)
    echo_once(net, [sock])
    sock.abort()
    net.run(lambda: echo.failed == 1)
    assert not echo.sessions and not echo._by_conn and not echo._ready
    assert echo.history[-1]["error"] == "Connection reset by peer"
