"""What idle connections cost: memory per connection (pystack's daemon vs the kernel) and one
runtime-loop iteration with 0 and 1,000 idle connections.

* ``idle-memory``: ``pystack up --tcp-echo 7`` in a namespace it creates, and
  ONE asyncio program on the kernel side of its TAP (``nsenter --net``; see
  ``tests/integration/many_harness.py``) that opens 1,000 connections, each
  echoing a message of its own, and holds them.  The round timed is that
  open (connects and echoes); ``extra_info`` keeps the daemon's VmRSS
  growth per idle connection (``/proc/PID/status``, read before the round
  and with the connections held).  ``_kernel``: the same program makes
  1,000 kernel-to-kernel connections on 127.0.0.1 in a namespace of its
  own, three times (the round times all of it); ``extra_info`` keeps the
  median slab growth per socket (``/proc/slabinfo``; both ends are kernel
  sockets, so per endpoint, like the daemon's figure).  One round each: a
  second daemon round would reuse the memory the first freed, so only the
  first growth means anything.
* ``idle-iteration``: one iteration of a :class:`~pystack.runtime.loop.Loop`
  (``_iterate`` with no events plus ``_timeout``, what every wake-up does)
  for a stack with the echo service and 0 or 1,000 idle connections, its
  clients on a second stack over an in-memory Pipe with a manual clock (no
  TAP: the cost is the stack's own).  ``extra_info`` of the 1,000 case has
  what ``sys.getsizeof`` says one server-side connection's objects take.

``benchmarks/report.py`` prints the figures side by side.  Needs root,
/dev/net/tun and nsenter for ``idle-memory`` (skipped otherwise; benchmarks
are not CI-gated); ``idle-iteration`` runs anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from many_harness import (ECHO_PORT, Client, echo_rows, kernel_per_socket, start_daemon, status,  # noqa: E402
                          stop_daemon, unique, vm_rss)

from pystack.runtime.procs import wait_until  # noqa: E402

N = 1000
STACK_IP = "10.89.0.2"
STEP_S = 120.0


def _need_netns() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")
    if not any(os.access(os.path.join(d, "nsenter"), os.X_OK) for d in os.environ.get("PATH", "").split(":")):
        pytest.skip("needs nsenter")


# -- memory ----------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="idle-memory")
def test_idle_memory_pystack(benchmark, tmp_path):
    _need_netns()
    name = unique("pst-idle")
    control = str(tmp_path / "ctl.sock")
    proc = None
    try:
        proc = start_daemon(name, STACK_IP, control, tmp_path / "daemon.log")
        with Client(name) as cli:
            wave = min(250, next(r["send_q"] for r in status(control)["tcp"] if r["state"] == "LISTEN"))
            cli.ask(f"open 20 20 {STACK_IP} {ECHO_PORT}", STEP_S)  # warm-up
            cli.ask("close", STEP_S)
            wait_until(lambda: not echo_rows(status(control)), 30, "the warm-up connections to close")
            before = vm_rss(proc.pid)
            benchmark.pedantic(cli.ask, args=(f"open {N} {wave} {STACK_IP} {ECHO_PORT}", STEP_S),
                               rounds=1, iterations=1)
            held = vm_rss(proc.pid)
            rows = echo_rows(status(control))
            assert len(rows) == N and all(r["state"] == "ESTABLISHED" for r in rows)
            cli.ask("close", STEP_S)
        benchmark.extra_info["connections"] = N
        benchmark.extra_info["rss_before_bytes"] = before
        benchmark.extra_info["rss_idle_bytes"] = held
        benchmark.extra_info["bytes_per_idle_connection"] = round((held - before) / N)
    finally:
        stop_daemon(proc, name)


@pytest.mark.benchmark(group="idle-memory")
def test_idle_memory_kernel(benchmark):
    _need_netns()
    from pystack.runtime.netns import NetNamespace

    got = {}
    with NetNamespace(unique("pst-idlek")) as ns:
        benchmark.pedantic(lambda: got.update(kernel_per_socket(ns, N)), rounds=1, iterations=1)
    benchmark.extra_info["connections"] = N
    benchmark.extra_info["bytes_per_idle_connection"] = round(got["per_socket"])
    benchmark.extra_info["slab_bytes_per_socket"] = {k: round(v) for k, v in got["named"].items()}


# -- one loop iteration -------------------------------------------------------------------------------


class IdleWorld:
    """Stack B (echo service, driven by a runtime Loop) and stack A (``n`` clients) over a Pipe.

    Every client echoes one message, then everything is left idle: the
    clock moves through the delayed ACKs until neither stack has a timer.
    """

    def __init__(self, n: int) -> None:
        from pystack.iface.interface import Interface, InterfaceConfig
        from pystack.phy.pipe import Pipe
        from pystack.runtime.loop import Loop
        from pystack.services.tcp import TcpEchoService, listen
        from pystack.wire.ipv4 import ip_from_str

        mac_a, mac_b = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
        ip_a, ip_b = ip_from_str("10.90.0.1"), ip_from_str("10.90.0.2")
        self.pipe = Pipe(mtu=1500, latency=100)
        self.a = Interface(InterfaceConfig(mac=mac_a, ip=ip_a, prefix_len=24, mtu=1500), tcp_secret=b"a")
        self.b = Interface(InterfaceConfig(mac=mac_b, ip=ip_b, prefix_len=24, mtu=1500), tcp_secret=b"b")
        self.a.neighbors.add_static(ip_b, mac_b)
        self.b.neighbors.add_static(ip_a, mac_a)
        self.now = 1_000_000
        self.echo = TcpEchoService(listen(self.b.tcp, ECHO_PORT, backlog=4096))
        self.loop = Loop(self.pipe.b, self.b, services=[self.echo], clock=lambda: self.now)
        self.clients = []
        for _ in range(n):
            s = self.a.tcp.socket()
            s.connect(("10.90.0.2", ECHO_PORT))
            self.clients.append(s)
        sent, got = set(), {}

        def app() -> bool:
            for i, s in enumerate(self.clients):
                if i not in sent and s.state == "ESTABLISHED":
                    s.send(b"hello %d" % i)
                    sent.add(i)
                elif i in sent and i not in got:
                    try:
                        got[i] = s.recv(100)
                    except BlockingIOError:
                        pass
            return len(got) == n

        self._run(app)
        assert all(got[i] == b"hello %d" % i for i in range(n))
        assert sum(1 for c in self.b.tcp.connections() if c.state.label == "ESTABLISHED") == n
        self._run(lambda: self.a.poll_at() is None and self.b.poll_at() is None)

    def _step(self) -> None:
        frames = self.pipe.a.receive(self.now)
        if frames:
            self.a.receive_batch(frames, self.now)
        out = self.a.poll(self.now)
        if out:
            self.pipe.a.transmit(out, self.now)
        self.loop._iterate(())

    def _run(self, done, limit: int = 100_000) -> None:
        for _ in range(limit):
            self._step()
            if done():
                return
            due = [t for t in (self.a.poll_at(), self.b.poll_at(), self.pipe.a.poll_at(), self.pipe.b.poll_at())
                   if t is not None]
            self.now = max(self.now + 1, min(due)) if due else self.now + 1
        raise AssertionError("the idle world did not settle")

    def iteration(self) -> None:
        """What one wake-up of the loop costs: the iteration, then the next timeout."""
        self.loop._iterate(())
        self.loop._timeout()

    def sizes(self) -> dict[str, int]:
        """``sys.getsizeof`` of one server-side connection's objects (bytes)."""
        size = sys.getsizeof

        def with_dict(obj) -> int:
            d = getattr(obj, "__dict__", None)
            return size(obj) + (size(d) if d is not None else 0)

        conn, session = next(iter(self.echo._by_conn.items()))
        sock = session.sock
        asm = conn.asm
        return {
            "TcpConnection": size(conn),
            "congestion control": with_dict(conn.cc),
            "receive buffer (Assembler, ring)": size(asm) + asm.allocated,
            "send buffer": size(conn._sndbuf),
            "TcpSocket": with_dict(sock) + sum(size(getattr(sock, q)) for q in ("_syn_q", "_accept_q")
                                               if hasattr(sock, q)),
            "echo session": with_dict(session) + size(session.sha256),
        }

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def idle_worlds():
    worlds = {}
    yield lambda n: worlds.setdefault(n, IdleWorld(n))
    for w in worlds.values():
        w.close()


@pytest.mark.parametrize("connections", [0, N])
@pytest.mark.benchmark(group="idle-iteration")
def test_idle_iteration(benchmark, idle_worlds, connections):
    world = idle_worlds(connections)
    benchmark(world.iteration)
    assert world.b.tcp.connection_count == connections
    benchmark.extra_info["connections"] = connections
    if connections:
        sizes = world.sizes()
        benchmark.extra_info["getsizeof_per_connection"] = sizes
        benchmark.extra_info["getsizeof_total"] = sum(sizes.values())
