"""Many idle connections against ``pystack up --tcp-echo``: the shared machinery of
``tests/integration/test_kernel_many.py`` and ``benchmarks/test_bench_idle.py``.

* :data:`CLIENT` -- ONE asyncio program, run inside a namespace with
  ``nsenter --net``, that holds many kernel TCP connections.  It reads
  commands on stdin and answers one line each on stdout (``ok ...`` or
  ``error ...``; then it exits 1):

  ``open N WAVE HOST PORT``  opens N connections, WAVE at a time, each
      echoing a message unique to it (``hello <i>``); answers ``ok open N
      SECONDS SLOW`` where SLOW counts connects that took over 0.9 s (a SYN
      the kernel had to send again: its first retransmission is after 1 s,
      RFC 6298 §2.1 / tcp(7)).
  ``echo``  every open connection echoes ``again <i>`` once more, all at
      once; ``ok echo N SECONDS``.
  ``close``  closes every connection (we send FIN first, so the kernel side
      keeps the TIME-WAIT) and reads each to its EOF (the echo service
      closes after the client, RFC 862); ``ok close N SECONDS``.
  ``server PORT``  starts a kernel echo server in this process on
      127.0.0.1:PORT (the kernel-to-kernel baseline); ``ok server``.
  ``exit``  (or stdin's end: the test went away) ends the program.

  Why waves: a wave never exceeds the listener's backlog, so no SYN can
  meet a full SYN or accept queue (RFC 9293 §3.10.7.2 lets a listener drop
  such SYNs; the kernel would retry after 1 s).  Connects still tolerate
  a retransmitted SYN (the per-connection timeout is 30 s) and report how
  many needed one.

* :class:`Client` -- drives that program with bounded waits.
* :func:`start_daemon` / :func:`stop_daemon` -- ``pystack up`` in a
  namespace it creates (and removes), waiting (bounded) for the control
  socket.
* :func:`vm_rss` -- a process's VmRSS (``/proc/PID/status``, proc(5)).
* :func:`slab_bytes` -- the kernel's slab memory from ``/proc/slabinfo``
  (active objects x object size, slabinfo(5)): the kernel's own cost of a
  socket, for the baseline.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import subprocess
import sys
import time
from pathlib import Path

from pystack.runtime import procs
from pystack.runtime.procs import stop as stop_process

ROOT = Path(__file__).resolve().parents[2]
START_S = 15.0
ECHO_PORT = 7
KERNEL_PORT = 7007

CLIENT = r'''
import asyncio, resource, sys, time

N_TIMEOUT = 30.0  # one connect (SYN retransmissions included) or one echo

def answer(*words):
    print(*words, flush=True)

async def echo_once(r, w, msg):
    w.write(msg)
    await asyncio.wait_for(w.drain(), N_TIMEOUT)
    got = await asyncio.wait_for(r.readexactly(len(msg)), N_TIMEOUT)
    if got != msg:
        raise AssertionError(f"sent {msg!r}, got {got!r}")

async def one(host, port, i):
    t0 = time.monotonic()
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), N_TIMEOUT)
    took = time.monotonic() - t0
    await echo_once(r, w, b"hello %d\n" % i)
    return r, w, took

async def open_all(conns, n, wave, host, port):
    slow = 0
    base = len(conns)
    for start in range(base, base + n, wave):
        got = await asyncio.gather(*(one(host, port, i) for i in range(start, min(base + n, start + wave))))
        for r, w, took in got:
            conns.append((r, w))
            slow += took > 0.9
    return slow

async def echo_all(conns):
    await asyncio.gather(*(echo_once(r, w, b"again %d\n" % i) for i, (r, w) in enumerate(conns)))

async def close_one(r, w):
    w.close()
    await asyncio.wait_for(w.wait_closed(), N_TIMEOUT)
    rest = await asyncio.wait_for(r.read(), N_TIMEOUT)  # to the server's FIN
    if rest:
        raise AssertionError(f"unexpected bytes before EOF: {rest!r}")

async def close_all(conns):
    await asyncio.gather(*(close_one(r, w) for r, w in conns))
    conns.clear()

async def serve(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    loop = asyncio.new_event_loop()
    conns, servers = [], []
    answer("ready")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        t0 = time.monotonic()
        try:
            if cmd[0] == "open":
                n, wave, host, port = int(cmd[1]), int(cmd[2]), cmd[3], int(cmd[4])
                slow = loop.run_until_complete(open_all(conns, n, wave, host, port))
                answer("ok open", len(conns), round(time.monotonic() - t0, 3), slow)
            elif cmd[0] == "echo":
                loop.run_until_complete(echo_all(conns))
                answer("ok echo", len(conns), round(time.monotonic() - t0, 3))
            elif cmd[0] == "close":
                n = len(conns)
                loop.run_until_complete(close_all(conns))
                answer("ok close", n, round(time.monotonic() - t0, 3))
            elif cmd[0] == "server":
                servers.append(loop.run_until_complete(
                    asyncio.start_server(serve, "127.0.0.1", int(cmd[1]), backlog=4096)))
                answer("ok server")
            elif cmd[0] == "exit":
                break
            else:
                raise ValueError(f"unknown command {cmd[0]!r}")
        except Exception as exc:
            answer("error", type(exc).__name__, str(exc).replace("\n", " ") or repr(exc))
            sys.exit(1)
    for w in [w for _, w in conns]:
        w.close()
    for s in servers:
        s.close()

main()
'''


class Client:
    """:data:`CLIENT` inside namespace ``netns``; every wait bounded; stopped by PID."""

    def __init__(self, netns: str, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", CLIENT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            line = self._line(timeout)
            if line != "ready":
                raise AssertionError(f"the client did not start: {line!r}")
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise TimeoutError(f"the client did not answer within {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(timeout=5)
                err = self.proc.stderr.read().decode(errors="replace")
                raise AssertionError(f"the client exited with {self.proc.returncode}: {err}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, command: str, timeout: float) -> list[str]:
        """Send one command; the words of its ``ok <command>`` answer after those two
        (AssertionError on ``error``)."""
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        words = line.split()
        if words[:2] != ["ok", command.split()[0]]:
            raise AssertionError(f"client: {command!r} -> {line}")
        return words[2:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.write(b"exit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self._sel.close()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


def start_daemon(netns: str, ip: str, control: str, log: Path, *extra: str) -> subprocess.Popen:
    """``pystack up --netns NETNS --ip IP/24 --tcp-echo 7 ...`` answering on ``control`` (bounded wait)."""
    return procs.start_daemon(["--netns", netns, "--ip", f"{ip}/24", "--tcp-echo", str(ECHO_PORT), *extra],
                              control, log, timeout=START_S, cwd=ROOT)


def stop_daemon(proc: subprocess.Popen | None, netns: str) -> None:
    """Stop the daemon (SIGTERM, by PID) and, as a last resort, remove its namespace."""
    if proc is not None:
        stop_process(proc)
    if os.path.exists(f"/run/netns/{netns}"):
        from pyroute2 import netns as pr_netns

        with contextlib.suppress(OSError):
            pr_netns.remove(netns)


def status(control: str, timeout: float = 30.0) -> dict:
    from pystack.runtime.control import request

    return request(control, timeout=timeout)


def echo_rows(st: dict, port: int = ECHO_PORT) -> list[dict]:
    """The daemon's TCP connections (not the listener) on ``port``."""
    return [r for r in st["tcp"] if r["state"] != "LISTEN" and r["local"].endswith(f":{port}")]


def vm_rss(pid: int) -> int:
    """Resident set size in bytes (VmRSS of /proc/PID/status, proc(5))."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slab_bytes() -> dict[str, int]:
    """Bytes in each kernel slab cache: active objects x object size (/proc/slabinfo, slabinfo(5))."""
    out = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            fields = line.split()
            out[fields[0]] = int(fields[1]) * int(fields[3])
    return out


def lo_up(ns) -> None:
    """Bring ``lo`` up in the NetNamespace ``ns`` (pyroute2; a new namespace starts with it down)."""
    with ns.iproute() as ipr:
        (index,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=index, state="up")


def kernel_per_socket(ns, n: int, repeat: int = 3, timeout: float = 120.0) -> dict:
    """The kernel's own memory per idle TCP socket: ``n`` kernel-to-kernel connections on 127.0.0.1
    inside ``ns`` (2n sockets, each with its file), slab bytes before / with them held open; the
    median of ``repeat`` measurements.

    Both ends are kernel sockets, so the slab growth divided by 2n is what one
    endpoint costs -- the daemon's figure is per endpoint too.  /proc/slabinfo
    is machine-wide: other processes' allocations meanwhile are noise (small
    against n sockets of a few KiB each; the median takes the worst out).
    """
    lo_up(ns)
    runs = []
    with Client(ns.name) as cli:
        cli.ask(f"server {KERNEL_PORT}", timeout)
        cli.ask(f"open 20 20 127.0.0.1 {KERNEL_PORT}", timeout)  # warm-up: caches, code paths
        cli.ask("close", timeout)
        for _ in range(repeat):
            before = slab_bytes()
            cli.ask(f"open {n} {n} 127.0.0.1 {KERNEL_PORT}", timeout)
            after = slab_bytes()
            cli.ask("close", timeout)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
            runs.append((sum(delta.values()) / (2 * n), delta))
    runs.sort(key=lambda r: r[0])
    per_socket, delta = runs[len(runs) // 2]
    named = {k: delta.get(k, 0) / (2 * n) for k in ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")}
    return {"per_socket": per_socket, "named": named}
