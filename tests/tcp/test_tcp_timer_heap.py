"""The layer's timer heap (see "Timers" in ``pystack/transport/tcp/layer.py``) against the obvious
oracle: the minimum of every connection's ``poll_at()``, and no deadline left overdue.

Two stacks over a lossy, reordering pipe with many connections doing everything that arms,
moves or cancels a timer (handshakes, data, delayed ACKs, retransmissions, keep-alive set
through the socket, half-closes, TIME-WAIT, aborts), checked after every step.
"""

from __future__ import annotations

import random

import pytest

from tcp_harness import SEC, Faults, Sim
from pystack.transport.tcp.layer import TcpConfig


def brute_poll_at(layer) -> int | None:
    if layer._dirty or layer._txq:
        return layer.now
    times = [t for c in layer.connections() if (t := c.poll_at()) is not None]
    return min(times) if times else None


def check(sim: Sim) -> None:
    for iface in (sim.a, sim.b):
        layer = iface.tcp
        assert layer.poll_at() == brute_poll_at(layer)
        for conn in layer.connections():
            t = conn.poll_at()
            assert t is None or t > sim.now, f"{conn!r}: deadline {t} overdue at {sim.now}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poll_at_is_every_connections_minimum(seed):
    rng = random.Random(seed)
    cfg = TcpConfig(msl=200_000, min_rto=50_000, delayed_ack=40_000)
    sim = Sim(seed=seed, faults=Faults(loss=0.05, reorder=0.05), tcp_config=cfg)
    lst = sim.b.tcp.socket()
    lst.bind(("", 5000))
    lst.listen(64)
    clients = []
    for _ in range(24):
        s = sim.a.tcp.socket()
        s.connect(("10.77.0.2", 5000))
        clients.append(s)
    servers = []
    steps = 0

    def app():
        while lst.readable:
            servers.append(lst.accept()[0])
        for s in clients + servers:
            if s.closed:
                continue
            r = rng.random()
            state = s.state
            try:
                if r < 0.3 and state in ("ESTABLISHED", "CLOSE-WAIT"):
                    s.send(rng.randbytes(rng.randrange(1, 5000)))
                elif r < 0.6:
                    s.recv(65536)
                elif r < 0.62 and state == "ESTABLISHED":
                    s.keepidle = rng.randrange(1, 300) * 1000  # armed through the socket, no dirty mark
                    s.keepintvl = 20_000
                    s.keepalive = True
                elif r < 0.63 and state == "ESTABLISHED":
                    s.keepalive = False
                elif r < 0.64 and steps > 200:
                    s.shutdown(1)
                elif r < 0.65 and steps > 300:
                    s.close()
                elif r < 0.655 and steps > 300:
                    s.abort()
            except OSError:
                pass

    def done():
        nonlocal steps
        steps += 1
        check(sim)
        if steps > 600:
            for s in clients + servers:
                s.close()
        return steps > 600 and not sim.a.tcp.connection_count and not sim.b.tcp.connection_count

    sim.run(done, app, limit=3600 * SEC)
    check(sim)
    assert sim.a.tcp.poll_at() is None and sim.b.tcp.poll_at() is None


def test_keepalive_armed_on_an_idle_connection_fires():
    sim = Sim()
    cli, srv = sim.connect()
    sim.run(lambda: sim.a.poll_at() is None and sim.b.poll_at() is None)  # idle: no timer at all
    t0 = sim.now
    cli.keepidle = 5 * SEC  # through the socket: rearm_keepalive, which marks nothing dirty
    cli.keepalive = True
    assert sim.a.tcp.poll_at() == t0 + 5 * SEC
    probes = sim.a.stats["tcp.keepalive_probes"]
    sim.run(lambda: sim.a.stats["tcp.keepalive_probes"] > probes)
    assert sim.now == t0 + 5 * SEC


def test_idle_connections_leave_no_heap_entries():
    sim = Sim()
    lst = sim.b.tcp.socket()
    lst.bind(("", 5000))
    lst.listen(256)
    clients = []
    for i in range(100):
        s = sim.a.tcp.socket()
        s.connect(("10.77.0.2", 5000))
        clients.append(s)
    servers = []

    def app():
        while lst.readable:
            servers.append(lst.accept()[0])
        for i, s in enumerate(clients):
            if s.state == "ESTABLISHED" and not s.connection.bytes_sent:
                s.send(b"x%d" % i)

    sim.run(lambda: len(servers) == 100 and all(c.connection.bytes_acked for c in clients), app)
    sim.run(lambda: sim.a.poll_at() is None and sim.b.poll_at() is None)
    # Stale entries (the delayed ACKs and retransmission timers that were
    # cancelled) went when poll_at reached them: nothing is left to wake for.
    assert sim.a.tcp._timers == [] and sim.b.tcp._timers == []
    assert sim.b.tcp.connection_count == 100
