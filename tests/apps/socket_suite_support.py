"""Shared pieces of the socket conformance suite (``tests/apps/test_socket_kernel_*.py``).

The suite runs every test twice through the ``world`` fixture of
``apps_harness``: once with a kernel socket as the side under test (the
reference) and once with a ``pystack.socket`` socket; the peer is always a
kernel socket in the far namespace.  This module owns only the plumbing the
test modules share:

* :func:`connected` -- a connected TCP pair ``(ours, theirs)`` with the side
  under test either the client (``role="client"``: it connects to a kernel
  listener) or the server (``role="server"``: a kernel client connects to it);
* :class:`Bg` -- a function run in a daemon thread whose result is collected
  with a bounded wait (a hung thread fails the test instead of hanging it);
* :func:`closed_port` / :func:`recv_all` / :func:`elapsed` helpers.

Every blocking call made here has a timeout, every socket is closed on exit.
"""

from __future__ import annotations

import contextlib
import socket as _socket
import threading
import time
from collections.abc import Callable, Iterator

#: Seconds any single blocking step may take before the test fails.
STEP = 10.0
ROLES = ("client", "server")


class Bg:
    """Run ``fn(*args)`` in a daemon thread; :meth:`result` joins it (bounded) and re-raises."""

    def __init__(self, fn: Callable, *args) -> None:
        self._result = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable, args: tuple) -> None:
        try:
            self._result = fn(*args)
        except BaseException as exc:  # handed to result()
            self._exc = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = STEP):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background thread still running after {timeout} s")
        if self._exc is not None:
            raise self._exc
        return self._result


def quiet_close(*socks) -> None:
    for sock in socks:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def peer_listener(world, *, rcvbuf: int | None = None, backlog: int = 8) -> tuple[_socket.socket, int]:
    """A kernel listener in the far namespace on an ephemeral port: ``(sock, port)``."""
    lsock = world.peer_socket()
    try:
        lsock.settimeout(STEP)
        if rcvbuf is not None:
            lsock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf)
        lsock.bind((world.peer_ip, 0))
        lsock.listen(backlog)
    except BaseException:
        lsock.close()
        raise
    return lsock, lsock.getsockname()[1]


def our_listener(world, backlog: int = 8):
    """A listener of the side under test on an ephemeral port: ``(sock, port)``."""
    lsock = world.mod.socket()
    try:
        lsock.settimeout(STEP)
        lsock.bind((world.ip, 0))
        lsock.listen(backlog)
    except BaseException:
        lsock.close()
        raise
    return lsock, lsock.getsockname()[1]


@contextlib.contextmanager
def connected(world, role: str, *, peer_rcvbuf: int | None = None) -> Iterator[tuple]:
    """A connected TCP pair ``(ours, theirs)``, both with a :data:`STEP` timeout, closed on exit.

    ``ours`` is the side under test as ``role`` ("client" or "server");
    ``theirs`` is the kernel peer.  ``peer_rcvbuf`` sets the peer's SO_RCVBUF
    before the handshake (so the window it advertises stays small).
    """
    ours = theirs = None
    try:
        if role == "client":
            lsock, port = peer_listener(world, rcvbuf=peer_rcvbuf)
            try:
                ours = world.mod.socket()
                ours.settimeout(STEP)
                ours.connect((world.peer_ip, port))
                theirs, _ = lsock.accept()
            finally:
                lsock.close()
        else:
            lsock, port = our_listener(world)
            try:
                theirs = world.peer_socket()
                theirs.settimeout(STEP)
                if peer_rcvbuf is not None:
                    theirs.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, peer_rcvbuf)
                theirs.connect((world.ip, port))
                ours, _ = lsock.accept()
            finally:
                lsock.close()
        ours.settimeout(STEP)
        theirs.settimeout(STEP)
        yield ours, theirs
    finally:
        quiet_close(ours, theirs)


def recv_all(sock, limit: int = 1 << 30) -> bytes:
    """Everything ``sock`` receives until EOF (each recv bounded by the socket's timeout)."""
    chunks = []
    total = 0
    while total < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def recv_exactly(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def closed_port(world, type=_socket.SOCK_STREAM) -> tuple[_socket.socket, int]:
    """A peer port nobody listens on, kept so by a bound (never listening) socket: ``(holder, port)``.

    A SYN to a bound socket that does not listen gets a RST (RFC 9293 3.10.7.1,
    CLOSED state), a datagram to it is delivered to the holder -- so UDP
    callers close the holder first and use the port while it stays free.
    """
    holder = world.peer_socket(type)
    holder.bind((world.peer_ip, 0))
    return holder, holder.getsockname()[1]


def silent_ip(world, index: int) -> str:
    """An address on the link where nobody answers ARP, a different one per ``index``.

    Each test uses its own: a neighbour entry that failed (or is still being
    resolved) for an earlier test would fail the next connect early with
    EHOSTUNREACH instead of letting it time out (the module-scoped world keeps
    neighbour caches between tests).
    """
    head, last = world.silent_ip.rsplit(".", 1)
    return f"{head}.{int(last) + index}"


@contextlib.contextmanager
def elapsed() -> Iterator[list]:
    """``with elapsed() as t: ...`` -- ``t[0]`` is the block's wall time in seconds afterwards."""
    box = [0.0]
    start = time.monotonic()
    try:
        yield box
    finally:
        box[0] = time.monotonic() - start
