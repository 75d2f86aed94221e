"""Shared machinery for the TCP tests (imported as ``tcp_harness`` by tests in this folder).

* :class:`Peer` -- one pystack Interface (with its TcpLayer) under test, fed
  hand-made segments from a scripted peer: ``send(...)`` a segment at time
  t, ``recv()`` the segments it answers with, ``recv_nothing()`` -- the
  smoltcp style of STYLE item 6.
* :class:`Sim` -- two full stacks over a :class:`~pystack.phy.pipe.Pipe`
  with :class:`~pystack.phy.fault_injector.FaultInjector` s and a manual
  clock; :meth:`Sim.transfer` moves bytes both ways and checks them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pystack.iface.interface import Interface, InterfaceConfig
from pystack.phy.device import earliest
from pystack.phy.fault_injector import FaultConfig, FaultInjector
from pystack.phy.pipe import Pipe
from pystack.transport.tcp.layer import TcpConfig
from pystack.wire import _headers_py
from pystack.wire.headers import emit_tcp, parse_frame
from pystack.wire.ipv4 import ip_from_str

A_MAC = bytes.fromhex("020000000001")
A_IP = ip_from_str("10.77.0.1")
B_MAC = bytes.fromhex("020000000002")
B_IP = ip_from_str("10.77.0.2")
MS = 1_000
SEC = 1_000_000
T0 = 1_000 * SEC

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


@dataclass
class Seg:
    """A segment as the tests see it (what the stack sent, parsed back)."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    data: bytes = b""
    mss: int = -1
    wscale: int = -1
    sack_permitted: bool = False
    ts_val: int = -1
    ts_ecr: int = 0
    sack: tuple = ()
    urgent: int = 0

    @property
    def flag_str(self) -> str:
        return "".join(c for bit, c in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"))
                       if self.flags & bit)

    def __repr__(self) -> str:
        extra = []
        for name in ("mss", "wscale", "ts_val"):
            if getattr(self, name) != -1:
                extra.append(f"{name}={getattr(self, name)}")
        if self.sack_permitted:
            extra.append("sackok")
        if self.sack:
            extra.append(f"sack={self.sack}")
        return (f"Seg({self.flag_str} seq={self.seq} ack={self.ack} win={self.window} len={len(self.data)}"
                f"{' ' + ' '.join(extra) if extra else ''})")


def parse_seg(frame) -> Seg:
    f = parse_frame(frame)
    assert f.layers == 3 and f.ip_proto == 6, f
    data = bytes(frame[f.payload_offset:f.payload_offset + f.payload_len])
    return Seg(f.sport, f.dport, f.seq, f.ack, f.tcp_flags, f.window, data, f.mss, f.wscale,
               bool(f.sack_permitted), f.ts_val, f.ts_ecr, tuple(tuple(b) for b in f.sack), f.urgent)


def options(mss=None, wscale=None, sack_permitted=False, ts=None, sack=()) -> bytes:
    out = b""
    if mss is not None:
        out += bytes((2, 4)) + mss.to_bytes(2, "big")
    if sack_permitted:
        out += b"\x01\x01\x04\x02"
    if ts is not None:
        out += b"\x01\x01\x08\x0a" + ts[0].to_bytes(4, "big") + ts[1].to_bytes(4, "big")
    if wscale is not None:
        out += bytes((1, 3, 3, wscale))
    if sack:
        out += bytes((1, 1, 5, 2 + 8 * len(sack))) + b"".join(
            left.to_bytes(4, "big") + right.to_bytes(4, "big") for left, right in sack)
    return out


class Peer:
    """The interface under test (10.77.0.1) and a scripted peer (10.77.0.2) that knows its MAC."""

    def __init__(self, now: int = T0, tcp_config: TcpConfig | None = None, mtu: int = 1500) -> None:
        self.iface = Interface(InterfaceConfig(mac=A_MAC, ip=A_IP, prefix_len=24, mtu=mtu),
                               tcp_config=tcp_config, tcp_secret=b"unit-test-secret")
        self.iface.neighbors.add_static(B_IP, B_MAC)
        self.tcp = self.iface.tcp
        self.now = now

    def at(self, t: int) -> Peer:
        assert t >= self.now
        self.now = t
        return self

    def advance(self, dt: int) -> Peer:
        self.now += dt
        return self

    def send(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int = 65535,
             data: bytes = b"", opts: bytes = b"", urgent: int = 0, corrupt: bool = False) -> None:
        buf = bytearray(54 + ((len(opts) + 3) & ~3) + len(data))
        emit_tcp(buf, 0, A_MAC, B_MAC, B_IP, A_IP, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags,
                 window, opts, data, len(data), 0, 64, 0, True, urgent)
        if corrupt:
            buf[-1] ^= 0xFF
        self.iface.receive(bytes(buf), self.now)

    def recv_all(self) -> list[Seg]:
        return [parse_seg(fr) for fr in self.iface.poll(self.now)]

    def recv(self, n: int | None = None) -> list[Seg] | Seg:
        segs = self.recv_all()
        if n is None:
            assert len(segs) == 1, f"expected one segment, got {segs}"
            return segs[0]
        assert len(segs) == n, f"expected {n} segments, got {segs}"
        return segs

    def recv_nothing(self) -> None:
        segs = self.recv_all()
        assert segs == [], f"expected nothing, got {segs}"

    def run_timers_until(self, t: int) -> list[Seg]:
        """Advance the clock to each deadline up to ``t``, collecting everything sent."""
        out = []
        while True:
            at = self.iface.poll_at()
            if at is None or at > t:
                break
            self.now = max(self.now, at)
            out += self.recv_all()
        self.now = t
        out += self.recv_all()
        return out


@dataclass
class Faults:
    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0

    def config(self) -> FaultConfig:
        return FaultConfig(loss=self.loss, reorder=self.reorder, reorder_delay=3000 if self.reorder else 1000,
                           duplicate=self.duplicate, corrupt=self.corrupt)


class Sim:
    """Two stacks, A (10.77.0.1) and B (10.77.0.2), over a pipe with faults on both transmit sides."""

    def __init__(self, seed: int = 0, faults: Faults | None = None, latency: int = 1000, mtu: int = 1500,
                 tcp_config: TcpConfig | None = None) -> None:
        self.pipe = Pipe(mtu=mtu, latency=latency)
        fc = (faults or Faults()).config()
        self.dev_a = FaultInjector(self.pipe.a, tx=fc, seed=seed)
        self.dev_b = FaultInjector(self.pipe.b, tx=fc, seed=seed + 1_000_003)
        self.a = Interface(InterfaceConfig(mac=A_MAC, ip=A_IP, prefix_len=24, mtu=mtu),
                           tcp_config=tcp_config, tcp_secret=b"stack-a")
        self.b = Interface(InterfaceConfig(mac=B_MAC, ip=B_IP, prefix_len=24, mtu=mtu),
                           tcp_config=tcp_config, tcp_secret=b"stack-b")
        self.a.neighbors.add_static(B_IP, B_MAC)
        self.b.neighbors.add_static(A_IP, A_MAC)
        self.now = 0
        self.frames = 0
        self.digest = hashlib.sha256()

    def step(self) -> None:
        """Receive what is due, poll, transmit, at ``self.now``."""
        now = self.now
        for iface, dev in ((self.a, self.dev_a), (self.b, self.dev_b)):
            frames = dev.receive(now)
            if frames:
                iface.receive_batch(frames, now)
            out = iface.poll(now)
            if out:
                for fr in out:
                    self.digest.update(fr)
                self.frames += len(out)
                dev.transmit(out, now)

    def next_time(self) -> int | None:
        return earliest(self.a.poll_at(), self.b.poll_at(), self.dev_a.poll_at(), self.dev_b.poll_at())

    def run(self, done, app=None, limit: int = 3600 * SEC) -> None:
        """Step until ``done()``; ``app()`` runs before each step (the applications' turn)."""
        while True:
            if app is not None:
                app()
            self.step()
            if done():
                return
            t = self.next_time()
            if app is not None and t is None:
                t = self.now
            assert t is not None, "deadlock: nothing scheduled and not done"
            if t > self.now:
                self.now = t
            assert self.now <= limit, f"simulation exceeded {limit} µs"

    def connect(self, port: int = 5000):
        """A listener on B, a connection from A; returns (client socket on A, server socket on B)."""
        lst = self.b.tcp.socket()
        lst.bind(("", port))
        lst.listen(8)
        cli = self.a.tcp.socket()
        cli.connect(("10.77.0.2", port))
        got = []

        def accepted():
            if lst.readable:
                got.append(lst.accept()[0])
            return bool(got) and cli.state == "ESTABLISHED"

        self.run(accepted)
        lst.close()
        return cli, got[0]

    def transfer(self, size_ab: int, size_ba: int, seed: int = 0, chunk: int = 65536, limit: int = 3600 * SEC):
        """Send ``size_ab`` bytes A->B and ``size_ba`` B->A at once, then close; check SHA-256 both ways."""
        cli, srv = self.connect()
        import random
        rng = random.Random(seed)
        data_ab = rng.randbytes(size_ab)
        data_ba = rng.randbytes(size_ba)
        state = {"ab_sent": 0, "ba_sent": 0, "a_closed": False, "b_closed": False}
        got_ab = hashlib.sha256()
        got_ba = hashlib.sha256()
        counts = {"ab": 0, "ba": 0, "a_eof": False, "b_eof": False}
        buf = bytearray(chunk)

        def pump(sock, data, key, closed_key):
            sent = state[key]
            while sent < len(data):
                try:
                    n = sock.send(data[sent:sent + chunk])
                except BlockingIOError:
                    break
                sent += n
            state[key] = sent
            if sent == len(data) and not state[closed_key]:
                sock.shutdown(1)
                state[closed_key] = True

        def drain(sock, h, key, eof_key):
            while not counts[eof_key]:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    return
                if n == 0:
                    counts[eof_key] = True
                    return
                h.update(memoryview(buf)[:n])
                counts[key] += n

        def app():
            pump(cli, data_ab, "ab_sent", "a_closed")
            pump(srv, data_ba, "ba_sent", "b_closed")
            drain(srv, got_ab, "ab", "b_eof")
            drain(cli, got_ba, "ba", "a_eof")

        self.run(lambda: counts["a_eof"] and counts["b_eof"], app, limit=limit)
        assert counts["ab"] == size_ab and counts["ba"] == size_ba, counts
        assert got_ab.digest() == hashlib.sha256(data_ab).digest()
        assert got_ba.digest() == hashlib.sha256(data_ba).digest()
        cli.close()
        srv.close()
        return cli, srv


__all__ = ["A_IP", "A_MAC", "ACK", "B_IP", "B_MAC", "FIN", "MS", "PSH", "RST", "SEC", "SYN", "T0", "URG",
           "Faults", "Peer", "Seg", "Sim", "options", "parse_seg", "_headers_py"]


PEER_PORT = 40000
PORT = 80
PEER_ISN = 1_000_000


class Conn:
    """One connection of the stack under test to the scripted peer, with both sides' next numbers."""

    def __init__(self, p: Peer, sock, iss: int, peer_nxt: int, ts: bool = False) -> None:
        self.p = p
        self.sock = sock
        self.iss = iss
        self.snd = peer_nxt  # the peer's next sequence number
        self.rcv = (iss + 1) & 0xFFFFFFFF  # what the peer acknowledges
        self.ts = ts
        self.tsval = 200  # above the 101 of the handshake's ACK (PAWS)

    def send(self, flags: int = ACK, data: bytes = b"", seq: int | None = None, ack: int | None = None,
             window: int = 65535, opts: bytes | None = None, urgent: int = 0) -> None:
        if opts is None:
            opts = options(ts=(self.tsval, 0)) if self.ts else b""
        self.p.send(PEER_PORT, PORT, self.snd if seq is None else seq, self.rcv if ack is None else ack,
                    flags, window, data, opts, urgent)
        if seq is None:
            self.snd = (self.snd + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    def recv(self, n: int | None = None):
        return self.p.recv(n)

    def recv_nothing(self) -> None:
        self.p.recv_nothing()


def open_passive(p: Peer, syn_opts: bytes = b"", window: int = 65535, backlog: int = 8, nodelay: bool = False,
                 **sockopts) -> Conn:
    """A listener on port 80 and a connection from the peer, ESTABLISHED and accepted."""
    lst = p.tcp.socket()
    lst.bind(("", PORT))
    for k, v in sockopts.items():
        lst.setsockopt(k, v)
    lst.listen(backlog)
    p.send(PEER_PORT, PORT, PEER_ISN, 0, SYN, window, opts=syn_opts)
    synack = p.recv()
    assert synack.flags == SYN | ACK and synack.ack == PEER_ISN + 1, synack
    ts = synack.ts_val >= 0
    ack_opts = options(ts=(101, synack.ts_val)) if ts else b""
    p.send(PEER_PORT, PORT, PEER_ISN + 1, synack.seq + 1, ACK, window, opts=ack_opts)
    p.recv_nothing()
    sock, addr = lst.accept()
    assert addr == ("10.77.0.2", PEER_PORT)
    sock.nodelay = nodelay
    c = Conn(p, sock, synack.seq, PEER_ISN + 1, ts)
    c.lst = lst
    return c
