"""1,000 concurrent idle connections from asyncio clients on the kernel side against one
``pystack up --tcp-echo`` (issue 5, item 6).

One daemon (``pystack up --netns <unique> --ip 10.88.0.2/24 --tcp-echo 7``),
one asyncio program on the kernel side of its TAP (10.88.0.1, run with
``nsenter --net``; see ``many_harness.CLIENT``).  The program opens 1,000
connections, in waves no larger than the listener's backlog (so no SYN
meets a full queue; a retransmitted SYN is still tolerated and counted),
each echoing a message unique to it; holds them open and idle while
``pystack status --json`` shows 1,000 ESTABLISHED on the echo port and the
daemon's VmRSS is read; echoes once more on every connection; closes them
all; and the daemon's connection table drains.  The daemon's memory per
idle connection is (VmRSS with them - VmRSS before) / 1,000, printed beside
the kernel's own (slab growth per socket for 1,000 kernel-to-kernel
connections in a namespace of this test), and bounded so that a
preallocated receive ring (256 KiB each) would fail the test.

Every namespace and process made here is removed when the test ends, also
on failure.  Needs root, /dev/net/tun and ``nsenter``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from many_harness import (ECHO_PORT, ROOT, Client, echo_rows, kernel_per_socket, start_daemon, status,
                          stop_daemon, unique, vm_rss)
from pystack.runtime.procs import wait_until
from test_kernel_tap import _need

pytestmark = pytest.mark.netns

N = 1000
STACK_IP = "10.88.0.2"
HOST_IP = "10.88.0.1"  # the TAP's kernel side (the CLI's default: the subnet's first host)
STEP_S = 120.0  # one phase of the client (1,000 connects, echoes or closes)
#: Generous against noise; the ring the receive buffer used to preallocate was 256 KiB.
MAX_RSS_PER_CONN = 32 * 1024


def _listener(st: dict) -> dict:
    return next(r for r in st["tcp"] if r["state"] == "LISTEN" and r["local"].endswith(f":{ECHO_PORT}"))


def _echo_service(st: dict) -> dict:
    return next(s for s in st["services"] if s["service"] == f"tcp-echo:{ECHO_PORT}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (/proc/PID/stat fields 14 and 15, proc(5))."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cli_status(control: str) -> dict:
    """``pystack status --json``, the command a user would run."""
    out = subprocess.run([sys.executable, "-m", "pystack", "status", "--json", "--control", control],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_1000_idle_asyncio_connections_against_the_daemon_echo(tmp_path, netns):
    _need("nsenter")
    name = unique("pst-many")
    control = str(tmp_path / "ctl.sock")
    log = tmp_path / "daemon.log"
    proc = None
    try:
        proc = start_daemon(name, STACK_IP, control, log)
        with Client(name) as cli:
            backlog = _listener(status(control))["send_q"]
            wave = min(250, backlog)
            # Warm-up: the code paths, the first pymalloc arenas, the ARP entry.
            cli.ask(f"open 20 20 {STACK_IP} {ECHO_PORT}", STEP_S)
            cli.ask("close", STEP_S)
            wait_until(lambda: not echo_rows(status(control)), 30, "the warm-up connections to close")
            rss_before = vm_rss(proc.pid)

            n, secs, slow = cli.ask(f"open {N} {wave} {STACK_IP} {ECHO_PORT}", STEP_S)
            assert int(n) == N
            # Read before any status: a status of 1,000 rows leaves its own garbage in the heap.
            rss_idle = vm_rss(proc.pid)

            def idle():  # every echo went back and was acknowledged (the kernel may delay an ACK)
                rows = echo_rows(status(control))
                return len(rows) == N and all(r["recv_q"] == 0 and r["send_q"] == 0 for r in rows)

            wait_until(idle, 30, f"{N} idle connections")

            st = _cli_status(control)
            rows = echo_rows(st)
            assert len(rows) == N and all(r["state"] == "ESTABLISHED" for r in rows), \
                {r["state"] for r in rows}
            assert len({r["remote"] for r in rows}) == N
            svc = _echo_service(st)
            assert svc["active"] == N and svc["failed"] == 0
            drops = st["counters"]["tcp"]
            assert drops["drop.syn_queue_full"] == 0 and drops["drop.accept_queue_full"] == 0

            # Idle means idle: no timer armed, so the loop wakes only for our status requests.
            it0, cpu0 = status(control)["runtime"]["iterations"], _cpu_s(proc.pid)
            time.sleep(0.5)  # a measurement window, not a wait for an event
            it1, cpu1 = status(control)["runtime"]["iterations"], _cpu_s(proc.pid)
            assert it1 - it0 < 50, f"{it1 - it0} loop iterations in 0.5 s with {N} idle connections"

            n, echo_secs = cli.ask("echo", STEP_S)
            assert int(n) == N
            n, close_secs = cli.ask("close", STEP_S)
            assert int(n) == N

            def drained():
                s = status(control)
                left = [r for r in echo_rows(s) if r["state"] != "TIME-WAIT"]
                return not left and _echo_service(s)["active"] == 0 and s

            st = wait_until(drained, 30, "the daemon's connection table to drain")
            svc = _echo_service(st)
            assert svc["failed"] == 0 and svc["completed"] == N + 20
            assert svc["bytes_in"] == svc["bytes_out"]
            assert proc.poll() is None, "the daemon died"

        kernel = kernel_per_socket(netns, N)
        per_conn = (rss_idle - rss_before) / N
        print(f"\n{N} idle connections: opened in {secs} s ({slow} slow connects, waves of {wave}), "
              f"echoed again in {echo_secs} s, closed in {close_secs} s; while idle for 0.5 s the daemon "
              f"ran {it1 - it0} loop iterations (two status requests) and {cpu1 - cpu0:.2f} s of CPU")
        print(f"daemon VmRSS {rss_before / 2**20:.1f} MiB -> {rss_idle / 2**20:.1f} MiB: "
              f"{per_conn / 1024:.2f} KiB per idle connection; the kernel's own, slab per socket: "
              f"{kernel['per_socket'] / 1024:.2f} KiB ({ {k: round(v) for k, v in kernel['named'].items()} }); "
              f"ratio {per_conn / kernel['per_socket']:.1f}")
        assert per_conn < MAX_RSS_PER_CONN, f"{per_conn:.0f} bytes per idle connection"
    finally:
        stop_daemon(proc, name)
