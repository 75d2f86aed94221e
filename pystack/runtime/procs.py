"""Processes and kernel sockets seen from outside a namespace.

The demo, the kernel-interop tests and the benchmarks all start helper
processes (the daemon, ``nc``, echo servers) and wait for conditions that
have no event to wait on (a socket file appears, the kernel starts
listening).  These are the one copy of those helpers.  Impure by nature, so
they live in runtime/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: /proc/net/tcp's ``st`` column (include/net/tcp_states.h), in its hex spelling.
TCP_LISTEN = "0A"
TCP_CLOSE_WAIT = "08"


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop a process we started, by its PID: ``sig``, then SIGKILL after ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def wait_until(cond: Callable[[], T], timeout: float, what: str, *, interval: float = 0.02,
               error: type[Exception] = TimeoutError) -> T:
    """Poll ``cond()`` until it is truthy and return its value; ``error`` after ``timeout`` s.

    Only for conditions no event announces (a file appears, another process's
    state changes); anything with an fd or a callback should wait on that.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def kernel_tcp_sockets(netns: str) -> list[tuple[int, str]]:
    """The kernel's TCP sockets in namespace ``netns``: (local port, ``st`` hex) from /proc/net/tcp."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "cat", "/proc/net/tcp"],
                         capture_output=True, text=True, timeout=10, check=True)
    rows = []
    for line in out.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3:
            rows.append((int(fields[1].rsplit(":", 1)[1], 16), fields[3]))
    return rows


def kernel_listening(netns: str, port: int) -> bool:
    """Whether a kernel TCP socket in ``netns`` listens on ``port``."""
    return (port, TCP_LISTEN) in kernel_tcp_sockets(netns)


def start_daemon(args: list[str], control: str, log, prefix=(), timeout: float = 15.0,
                 cwd: str | None = None) -> subprocess.Popen:
    """Start ``[*prefix] python -m pystack up *args --control control`` (stdout and stderr to the
    file ``log``) and wait, at most ``timeout`` s, until its control socket answers.

    Raises RuntimeError with the log when it exits or does not answer in time (then it is stopped).
    """
    from pystack.runtime.control import ControlError, request

    with open(log, "wb") as err:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "pystack", "up", *args, "--control", control],
                                cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    def log_text() -> str:
        with open(log, errors="replace") as f:
            return f.read()

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pystack up exited with {proc.returncode}:\n{log_text()}")
        if os.path.exists(control):
            with contextlib.suppress(ControlError):
                request(control, timeout=1.0)
                return proc
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"pystack up did not answer on {control} within {timeout} s:\n{log_text()}")
        time.sleep(0.02)  # no event announces "a socket file appeared"; bounded by timeout
