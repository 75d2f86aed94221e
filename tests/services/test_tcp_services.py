"""The TCP services and client sessions over two stacks joined by an in-memory pipe, manual clock.

Stack A (10.77.0.1) runs the clients, stack B (10.77.0.2) the services;
every byte is checked (SHA-256), and the services' records and counters too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest

from pystack.iface.interface import Interface, InterfaceConfig
from pystack.phy.device import earliest
from pystack.phy.fault_injector import FaultConfig, FaultInjector
from pystack.phy.pipe import Pipe
from pystack.services import tcp as svc
from pystack.services.tcp import (ChargenProducer, FileProducer, SinkSession, SourceSession, TcpClient,
                                  TcpDiscardService, TcpEchoService, TcpSinkService, TcpSourceService,
                                  chargen_cycle, parse_size)
from pystack.wire.ipv4 import ip_from_str

A_MAC, B_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A_IP, B_IP = ip_from_str("10.77.0.1"), ip_from_str("10.77.0.2")
B = "10.77.0.2"
SEC = 1_000_000


class Net:
    """Two stacks over a pipe (1 ms latency), optional seeded loss on both transmit sides."""

    def __init__(self, loss: float = 0.0, seed: int = 0) -> None:
        self.pipe = Pipe(latency=1000)
        fc = FaultConfig(loss=loss)
        self.dev_a = FaultInjector(self.pipe.a, tx=fc, seed=seed)
        self.dev_b = FaultInjector(self.pipe.b, tx=fc, seed=seed + 1)
        self.a = Interface(InterfaceConfig(mac=A_MAC, ip=A_IP, prefix_len=24), tcp_secret=b"a")
        self.b = Interface(InterfaceConfig(mac=B_MAC, ip=B_IP, prefix_len=24), tcp_secret=b"b")
        self.a.neighbors.add_static(B_IP, B_MAC)
        self.b.neighbors.add_static(A_IP, A_MAC)
        self.now = 0
        self.services: list = []

    def clock(self) -> float:
        return self.now / SEC

    def run(self, done, app=None, limit_s: float = 600) -> None:
        """Step (services and ``app`` first, as the runtime loop does) until ``done()``."""
        while True:
            for iface, dev in ((self.a, self.dev_a), (self.b, self.dev_b)):
                frames = dev.receive(self.now)
                if frames:
                    iface.receive_batch(frames, self.now)
            for s in self.services:
                s.poll()
            if app is not None:
                app()
            for iface, dev in ((self.a, self.dev_a), (self.b, self.dev_b)):
                out = iface.poll(self.now)
                if out:
                    dev.transmit(out, self.now)
            if done():
                return
            t = earliest(self.a.poll_at(), self.b.poll_at(), self.dev_a.poll_at(), self.dev_b.poll_at(),
                         *(s.poll_at() for s in self.services if hasattr(s, "poll_at")))
            assert t is not None, "deadlock: nothing scheduled and not done"
            self.now = max(self.now, t)
            assert self.now <= limit_s * SEC, "simulation ran too long"

    def serve(self, cls, port: int, **kw):
        s = cls(svc.listen(self.b.tcp, port), clock=self.clock, **kw)
        self.services.append(s)
        return s

    def client(self, session_cls, port: int, *args):
        sock = self.a.tcp.socket()
        sock.connect((B, port))
        session = session_cls(sock, (B, port), self.clock, *args)
        done = []
        c = TcpClient(session, done.append)
        self.services.append(c)
        return session, done


class Pump:
    """A client on stack A that sends ``data``, half-closes, and reads to EOF."""

    def __init__(self, net: Net, port: int, data: bytes, shut: bool = True) -> None:
        self.sock = net.a.tcp.socket()
        self.sock.connect((B, port))
        self.data = memoryview(data)
        self.sent = 0
        self.shut = shut
        self.got = bytearray()
        self.eof = False

    def step(self) -> None:
        s = self.sock
        while self.sent < len(self.data) and s.state != "SYN-SENT":
            try:
                self.sent += s.send(self.data[self.sent:self.sent + 65536])
            except BlockingIOError:
                break
        if self.shut and self.sent == len(self.data) and s.state == "ESTABLISHED":
            s.shutdown(1)
        while not self.eof:
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
            self.got += chunk


def _pumps_done(pumps):
    return lambda: all(p.eof for p in pumps)


def _run_pumps(net, pumps):
    net.run(_pumps_done(pumps), lambda: [p.step() for p in pumps])


def test_echo_serves_many_clients_at_once():
    net = Net()
    echo = net.serve(TcpEchoService, 7)
    rng = random.Random(1)
    pumps = [Pump(net, 7, rng.randbytes(rng.randrange(0, 300_000))) for _ in range(20)]
    _run_pumps(net, pumps)
    for p in pumps:
        assert bytes(p.got) == bytes(p.data)
    net.run(lambda: echo.completed == 20)
    assert echo.failed == 0 and not echo.sessions
    assert echo.bytes_in == echo.bytes_out == sum(len(p.data) for p in pumps)
    assert max(len(p.data) for p in pumps) > 256 * 1024  # more than a send buffer: back-pressure


def test_echo_with_loss_is_intact():
    net = Net(loss=0.05, seed=3)
    net.serve(TcpEchoService, 7)
    data = random.Random(2).randbytes(500_000)
    p = Pump(net, 7, data)
    _run_pumps(net, [p])
    assert bytes(p.got) == data


def test_discard_reads_and_forgets():
    net = Net()
    d = net.serve(TcpDiscardService, 9)
    data = os.urandom(1_000_000)
    p = Pump(net, 9, data)
    _run_pumps(net, [p])
    assert p.got == b""
    net.run(lambda: d.completed == 1)
    rec = d.history[-1]
    assert rec["bytes_in"] == len(data) and rec["bytes_out"] == 0
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()


def test_sized_source_sends_the_chargen_pattern_then_closes_first():
    net = Net()
    src = net.serve(TcpSourceService, 19, size=65536)
    p = Pump(net, 19, b"thrown away", shut=False)
    _run_pumps(net, [p])
    pattern = chargen_cycle()
    assert len(pattern) == 95 * 74
    assert bytes(p.got) == (pattern * 10)[:65536]
    p.sock.close()
    net.run(lambda: src.completed == 1)
    # The source closed first, so its end holds the TIME-WAIT (RFC 9293 §3.6).
    assert [c.state.label for c in net.b.tcp.connections()] == ["TIME-WAIT"]
    assert src.history[-1]["bytes_out"] == 65536


def test_file_source_and_half_close_from_the_client(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(700_001)
    path.write_bytes(data)
    net = Net()
    src = net.serve(TcpSourceService, 19, path=str(path))
    p = Pump(net, 19, b"", shut=True)  # FIN at once: the source still sends everything
    _run_pumps(net, [p])
    assert bytes(p.got) == data
    net.run(lambda: src.completed == 1)
    assert src.history[-1]["sha256"] == hashlib.sha256(data).hexdigest()


def test_endless_source_ends_when_the_client_goes():
    net = Net()
    src = net.serve(TcpSourceService, 19)
    p = Pump(net, 19, b"", shut=False)
    net.run(lambda: len(p.got) >= 200_000, p.step)
    p.sock.close()  # unread data: a RST (RFC 9293 §3.6), which ends the session
    net.run(lambda: not src.sessions)
    assert src.accepted == 1 and src.completed + src.failed == 1


def test_sink_writes_one_file_per_connection(tmp_path):
    net = Net()
    sink = net.serve(TcpSinkService, 5001, directory=str(tmp_path / "sink"))
    datas = [os.urandom(n) for n in (0, 1, 100_000, 1_000_000)]
    pumps = [Pump(net, 5001, d) for d in datas]
    _run_pumps(net, pumps)
    net.run(lambda: sink.completed == len(datas))
    by_sha = {r["sha256"]: r for r in sink.history}
    for d in datas:
        rec = by_sha[hashlib.sha256(d).hexdigest()]
        assert rec["bytes_in"] == len(d) and rec["error"] is None
        with open(rec["file"], "rb") as f:
            assert f.read() == d
    assert sorted(os.listdir(tmp_path / "sink")) == [f"sink-5001-{i}.bin" for i in range(1, 5)]


def test_clients_send_and_receive_files(tmp_path):
    net = Net(loss=0.02, seed=9)
    sink = net.serve(TcpSinkService, 5001)
    path = tmp_path / "out.bin"
    data = os.urandom(400_000)
    path.write_bytes(data)
    send, done = net.client(SourceSession, 5001, FileProducer(str(path)))
    net.run(lambda: done)
    assert send.error is None and send.bytes_out == len(data)
    net.run(lambda: sink.completed == 1)
    assert sink.history[-1]["sha256"] == send.sha256.hexdigest() == hashlib.sha256(data).hexdigest()

    net.serve(TcpSourceService, 19, path=str(path))
    dest = tmp_path / "in.bin"
    recv, done = net.client(SinkSession, 19, str(dest))
    net.run(lambda: done)
    assert recv.error is None
    assert dest.read_bytes() == data


def test_client_to_a_closed_port_fails_with_connection_refused():
    net = Net()
    session, done = net.client(SourceSession, 4444, ChargenProducer(10))
    net.run(lambda: done)
    assert session.errno == errno.ECONNREFUSED
    assert session.record()["error"] == os.strerror(errno.ECONNREFUSED)


def test_client_connect_timeout():
    net = Net(loss=1.0)
    session = SinkSession(net.a.tcp.socket(), (B, 5), net.clock)
    session.sock.connect((B, 5))
    done = []
    client = TcpClient(session, done.append, connect_timeout_s=0.0)
    client.poll()
    assert done and session.errno == errno.ETIMEDOUT


def test_services_check_their_socket(tmp_path):
    net = Net()
    with pytest.raises(TypeError):
        TcpEchoService(object())
    with pytest.raises(ValueError, match="listening"):
        TcpEchoService(net.b.tcp.socket())
    with pytest.raises(FileNotFoundError):
        TcpSourceService(svc.listen(net.b.tcp, 19), path=str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        TcpSourceService(svc.listen(net.b.tcp, 20), path="x", size=1)
    with pytest.raises(OSError) as info:
        svc.listen(net.b.tcp, 19)
    assert info.value.errno == errno.EADDRINUSE


def test_close_stops_every_session(tmp_path):
    net = Net()
    sink = net.serve(TcpSinkService, 5001, directory=str(tmp_path))
    p = Pump(net, 5001, os.urandom(10_000), shut=False)
    net.run(lambda: sink.sessions and sink.sessions[0].bytes_in == 10_000, p.step)
    sink.close()
    assert not sink.sessions and sink.failed == 1
    assert sink.history[-1]["error"] == "service stopped"
    assert sink.listener.closed


@pytest.mark.parametrize("text, value", [("0", 0), ("100", 100), ("64KiB", 65536), ("64k", 65536),
                                         ("64kB", 64000), ("1M", 1 << 20), ("2MB", 2_000_000),
                                         ("1GiB", 1 << 30), ("file.bin", None), ("-1", None), ("1.5M", None)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_chargen_producer_wraps_the_pattern():
    pattern = chargen_cycle()
    prod = ChargenProducer(3 * len(pattern) + 5)
    got = b""
    while chunk := prod.read(1000):
        got += chunk
    assert got == (pattern * 4)[:3 * len(pattern) + 5]
    assert all(32 <= c < 127 for line in pattern.split(b"\r\n") for c in line)
