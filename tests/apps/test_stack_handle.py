"""pystack.Stack: life cycle, hand-offs, default(), and closing with work in flight.

The TAP tests (marked ``netns``) check that a Stack removes exactly what it
created: the TAP and a namespace it made go, a namespace it was given stays.
The others run two Stacks over an in-memory Pipe (no root needed).  Every
Stack made here is closed, also on failure.  Hand-offs are also checked
against signal handlers (a handler's own calls, and a call interrupted by
the handler's exception: it leaves nothing behind) and Stack.close against
connections still delivering data (the drain, then resets).
"""

from __future__ import annotations

import contextlib
import errno
import os
import gc
import secrets
import select
import signal
import socket as kernel_socket
import threading
import time

import pytest

import pystack
from conftest import netns_available, require
from pystack import socket as ps
from pystack.phy.device import Wrapper
from pystack.phy.pipe import Pipe
from pystack.runtime import stack as stack_mod

WAIT = 10.0


@pytest.fixture
def two():
    """Two Stacks on the ends of one Pipe (10.67.0.1 and 10.67.0.2)."""
    pipe = Pipe()
    made = []
    try:
        made.append(pystack.Stack("10.67.0.1/24", device=pipe.a))
        made.append(pystack.Stack("10.67.0.2/24", device=pipe.b))
        yield made
    finally:
        for st in reversed(made):
            st.close(timeout=0)  # the first one closed leaves the other's FINs unanswered: no drain


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _links(netns: str) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute(netns=netns) as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


@pytest.mark.netns
def test_stack_creates_then_removes_its_tap_and_namespace():
    require(netns_available())
    name = f"pst-stack-{os.getpid()}-{secrets.token_hex(3)}"
    tap = f"ph{secrets.token_hex(3)}"
    assert not _netns_exists(name)
    try:
        with pystack.Stack("10.93.0.2/24", tap=tap, netns=name, host_ip="10.93.0.1/24") as st:
            assert _netns_exists(name) and tap in _links(name)
            assert st.status()["stack"]["created_netns"] is True
            with ps.create_server(("", 8080), stack=st) as srv:
                from pystack.runtime.netns import NetNamespace

                with NetNamespace(name).entered():  # entering only: this object did not create it
                    k = kernel_socket.socket()
                with k:
                    k.settimeout(WAIT)
                    k.connect(("10.93.0.2", 8080))
                    srv.settimeout(WAIT)
                    conn, addr = srv.accept()
                    with conn:
                        assert addr[0] == "10.93.0.1"
                        k.sendall(b"through the TAP")
                        conn.settimeout(WAIT)
                        assert conn.recv(100) == b"through the TAP"
        assert not _netns_exists(name)  # the TAP went with it
    finally:
        if _netns_exists(name):
            from pyroute2 import netns

            netns.remove(name)


def test_stack_on_a_namespace_it_was_given_leaves_the_namespace(netns):
    tap = f"ph{secrets.token_hex(3)}"
    st = pystack.Stack("10.93.1.2/24", tap=tap, netns=netns.name, host_ip="10.93.1.1/24")
    try:
        assert tap in _links(netns.name)
        assert st.status()["stack"]["created_netns"] is False
    finally:
        st.close()
    assert _netns_exists(netns.name) and tap not in _links(netns.name)


def test_bad_arguments_are_refused_before_anything_is_made():
    with pytest.raises(ValueError, match="PREFIX"):
        pystack.Stack("10.93.2.2", device=Pipe().a)
    with pytest.raises(ValueError):
        pystack.Stack("10.93.2.2/24", impair="loss=2", device=Pipe().a)
    with pytest.raises(ValueError, match="device"):
        pystack.Stack("10.93.2.2/24", netns="x", device=Pipe().a)
    with pytest.raises(ValueError):
        pystack.Stack("10.93.2.300/24", device=Pipe().a)


def test_call_returns_raises_and_runs_inline_in_the_loop(two):
    a, _ = two
    assert a.call(lambda x, y: x + y, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        a.call(lambda: 1 / 0)
    # From the loop thread itself, call() runs the function at once.
    assert a.call(lambda: a.call(threading.get_ident)) == a.call(threading.get_ident)
    assert a.call(threading.get_ident) != threading.get_ident()
    st = a.status()
    assert st["config"]["ip"] == "10.67.0.1" and st["runtime"]["callbacks"] > 0
    a.close()
    a.close()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        a.call(int)
    with pytest.raises(OSError) as e:
        ps.socket(stack=a)
    assert e.value.errno == errno.EBADF


def test_default_is_the_newest_open_stack(monkeypatch, two):
    monkeypatch.setattr(stack_mod, "_open_stacks", [])  # other tests' stacks are not ours to see
    with pytest.raises(RuntimeError, match="no pystack.Stack"):
        pystack.Stack.default()
    with pytest.raises(RuntimeError):
        ps.socket()
    pipe = Pipe()
    first = pystack.Stack("10.68.0.1/24", device=pipe.a)
    try:
        second = pystack.Stack("10.68.0.2/24", device=pipe.b)
        try:
            assert pystack.Stack.default() is second
            with ps.socket() as s:  # stack=None: the default one
                assert s.stack is second
        finally:
            second.close()
        assert pystack.Stack.default() is first
    finally:
        first.close()
    with pytest.raises(RuntimeError):
        pystack.Stack.default()


def test_close_with_sockets_open_and_a_thread_blocked_in_recv(two):
    a, b = two
    srv = ps.create_server(("", 7000), stack=b)
    cli = ps.create_connection(("10.67.0.2", 7000), timeout=WAIT, stack=a)
    srv.settimeout(WAIT)
    conn, _ = srv.accept()
    udp = ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=a)
    udp.bind(("", 7001))
    outcome: list = []
    started = threading.Event()

    def reader():
        started.set()
        try:
            outcome.append(cli.recv(10))
        except OSError as exc:
            outcome.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    started.wait(WAIT)
    a.call(lambda: None)
    a.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EBADF
    for s in (cli, udp):
        # Until the application closes it, the descriptor stays, readable and writable, so a
        # selector waiting on it wakes; every call fails with EBADF.
        assert select.select([s], [s], [], 0)[:2] == ([s], [s])
        with pytest.raises(OSError) as e:
            s.recv(1)
        assert e.value.errno == errno.EBADF
        s.close()
        assert s.fileno() == -1
    conn.settimeout(WAIT)
    assert conn.recv(10) == b""  # Stack.close closed the connection as close() would: a FIN
    conn.close()
    srv.close()


class _Breakable(Wrapper):
    """A device that fails for good (ENODEV, as a TAP removed under us) when told to."""

    broken = False

    def receive(self, now):
        if self.broken:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return self.inner.receive(now)


def test_a_dead_loop_fails_calls_and_close_does_not_hang():
    pipe = Pipe()
    dev = _Breakable(pipe.a)
    a = pystack.Stack("10.69.0.1/24", device=dev)
    b = pystack.Stack("10.69.0.2/24", device=pipe.b)
    try:
        srv = ps.create_server(("", 7000), stack=b)
        cli = ps.create_connection(("10.69.0.2", 7000), timeout=WAIT, stack=a)
        outcome: list = []
        t = threading.Thread(target=lambda: outcome.append(_recv_or_error(cli)))
        t.start()
        a.call(lambda: None)
        dev.broken = True
        a.loop._wake()
        t.join(WAIT)
        assert not t.is_alive()
        assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.ENETDOWN
        assert not a.running
        with pytest.raises(RuntimeError):
            a.call(int)
        with pytest.raises(OSError) as e:
            cli.send(b"x")
        assert e.value.errno == errno.ENETDOWN
        srv.close()
    finally:
        a.close()  # returns: the loop thread is gone already
        b.close()
    cli.close()
    assert cli.fileno() == -1


def _recv_or_error(sock):
    try:
        return sock.recv(10)
    except OSError as exc:
        return exc


def test_constructor_failure_leaves_nothing_registered(tmp_path, monkeypatch):
    from pystack.runtime.tapsetup import SetupError

    monkeypatch.setattr(stack_mod, "_open_stacks", [])
    threads = threading.active_count()
    with pytest.raises(SetupError, match="capture"):
        pystack.Stack("10.70.0.1/24", device=Pipe().a, pcap=str(tmp_path / "missing" / "x.pcap"))
    assert stack_mod._open_stacks == [] and threading.active_count() == threads


def test_context_manager_repr_and_pcap(tmp_path):
    pipe = Pipe()
    with pystack.Stack("10.71.0.1/24", device=pipe.a, pcap=str(tmp_path / "a.pcap")) as a, \
            pystack.Stack("10.71.0.2/24", device=pipe.b) as b:
        assert "10.71.0.1/24" in repr(a) and "running" in repr(a)
        with ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=b) as rx, \
                ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=a) as tx:
            rx.bind(("", 9))
            rx.settimeout(WAIT)
            tx.sendto(b"captured", ("10.71.0.2", 9))
            assert rx.recv(100) == b"captured"
    assert "closed" in repr(a) and a.closed
    assert (tmp_path / "a.pcap").stat().st_size > 24  # header plus the frames (flushed at close)


def test_close_frees_every_descriptor():
    """Each socket holds two descriptors (its readiness pair) and the loop two (epoll, eventfd):
    after Stack.close, open or closed sockets alike, none is left."""
    before = len(os.listdir("/proc/self/fd"))
    pipe = Pipe()
    a = pystack.Stack("10.72.0.1/24", device=pipe.a)
    b = pystack.Stack("10.72.0.2/24", device=pipe.b)
    try:
        srv = ps.create_server(("", 7000), stack=b)
        cli = ps.create_connection(("10.72.0.2", 7000), timeout=WAIT, stack=a)
        srv.settimeout(WAIT)
        conn, _ = srv.accept()
        ps.socket(ps.AF_INET, ps.SOCK_DGRAM, stack=a).close()
        assert len(os.listdir("/proc/self/fd")) >= before + 4 + 3 * 2
    finally:
        a.close()
        b.close(timeout=0)  # a is gone: nobody would acknowledge b's FINs
    srv.close()  # closed by the application after the stack...
    with pytest.warns(ResourceWarning):
        del cli, conn  # ...or collected unclosed
        gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


# -- signal handlers and interrupted hand-offs ----------------------------------------------------


class _Interrupted(Exception):
    pass


@contextlib.contextmanager
def _on_sigusr1(handler):
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def _signal_main_when(event: threading.Event, delay: float = 0.0) -> threading.Thread:
    """SIGUSR1 to the main thread once ``event`` is set (and ``delay`` more seconds passed)."""
    main = threading.main_thread().ident

    def kick():
        if event.wait(WAIT):
            time.sleep(delay)
            signal.pthread_kill(main, signal.SIGUSR1)

    t = threading.Thread(target=kick, daemon=True)
    t.start()
    return t


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_signal_handler_calls_the_stack_while_its_thread_waits_on_a_call(two):
    """The handler's call and the call it interrupted each get their own answer (each hand-off
    has its own waiter; call_soon takes no lock)."""
    a, _ = two
    got = {}
    busy = threading.Event()

    def slow():
        busy.set()
        time.sleep(0.2)  # the loop is busy while the handler runs
        return "main"

    def handler(signum, frame):
        got["handler"] = a.call(lambda: "handler", timeout=WAIT)

    with _on_sigusr1(handler):
        kicker = _signal_main_when(busy)
        got["main"] = a.call(slow, timeout=WAIT)
        kicker.join(WAIT)
    assert got == {"main": "main", "handler": "handler"}
    assert a.call(lambda: "still fine", timeout=WAIT) == "still fine"


def test_an_interrupted_accept_leaves_the_connection_queued(two):
    """accept() interrupted while its hand-off waits behind other work never runs: the connection
    stays queued for the next accept, and the client's connection works."""
    a, b = two
    srv = ps.create_server(("", 7100), stack=b)
    cli = ps.create_connection(("10.67.0.2", 7100), timeout=WAIT, stack=a)
    srv.settimeout(WAIT)
    assert select.select([srv], [], [], WAIT)[0]  # queued
    busy, release = threading.Event(), threading.Event()

    def hold():
        busy.set()
        release.wait(WAIT)

    holder = threading.Thread(target=b.call, args=(hold,), kwargs={"timeout": WAIT})
    holder.start()
    busy.wait(WAIT)

    def handler(signum, frame):
        raise _Interrupted

    try:
        with _on_sigusr1(handler):
            kicker = _signal_main_when(busy, 0.1)  # the accept hand-off is queued behind hold() by then
            with pytest.raises(_Interrupted):
                srv.accept()
            kicker.join(WAIT)
    finally:
        release.set()
        holder.join(WAIT)
    conn, addr = srv.accept()
    with conn, cli, srv:
        assert addr == cli.getsockname()
        cli.sendall(b"still connected")
        conn.settimeout(WAIT)
        assert conn.recv(100) == b"still connected"
        assert b.call(lambda: len(b._hub.cores)) == 2  # the listener and conn: no socket owned by nobody


def test_a_call_given_up_while_the_loop_runs_it_leaves_no_socket(two):
    """A hand-off whose caller stops waiting (its timeout, or a signal handler's exception) while
    the loop runs it: the socket it made is closed, by the loop or by the caller, whichever
    side sees the outcome last -- no core and no descriptor is left."""
    a, _ = two
    cores = a.call(lambda: len(a._hub.cores))
    fds = _fds()
    running = threading.Event()

    def slow_socket():
        running.set()
        time.sleep(0.3)
        return a._hub.new_core(True)

    with pytest.raises(TimeoutError):  # the caller gives up first: the loop disposes of it
        a.call(slow_socket, timeout=0.05)

    def handler(signum, frame):
        raise _Interrupted

    running.clear()
    with _on_sigusr1(handler):  # the loop finishes first: the interrupted caller disposes of it
        kicker = _signal_main_when(running, 0.05)
        with pytest.raises(_Interrupted):
            a.call(slow_socket, timeout=WAIT)
        kicker.join(WAIT)
    deadline = time.monotonic() + WAIT
    while (a.call(lambda: len(a._hub.cores)), _fds()) != (cores, fds):  # the loop closes them soon
        assert time.monotonic() < deadline, (a.call(lambda: len(a._hub.cores)), cores, _fds(), fds)
        time.sleep(0.01)


def test_an_interrupted_socket_call_leaves_no_descriptor(two):
    """socket() interrupted while its hand-off is queued: it never runs, nothing is made."""
    a, _ = two
    fds = _fds()
    busy, release = threading.Event(), threading.Event()

    def hold():
        busy.set()
        release.wait(WAIT)

    holder = threading.Thread(target=a.call, args=(hold,), kwargs={"timeout": WAIT})
    holder.start()

    def handler(signum, frame):
        raise _Interrupted

    try:
        with _on_sigusr1(handler):
            kicker = _signal_main_when(busy, 0.1)
            with pytest.raises(_Interrupted):
                ps.socket(stack=a)
            kicker.join(WAIT)
    finally:
        release.set()
        holder.join(WAIT)
    a.call(lambda: None)
    assert _fds() == fds


# -- closing with connections still delivering -----------------------------------------------------


def _recv_until_eof_or_error(sock) -> tuple[bytes, BaseException | None]:
    chunks = []
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return b"".join(chunks), None
            chunks.append(data)
    except OSError as exc:
        return b"".join(chunks), exc


def test_close_delivers_what_closed_connections_still_hold():
    """Data and FIN a closed socket still has in flight reach the peer before the loop stops
    (Stack.close drains), here over a link with 20 ms of delay."""
    pipe = Pipe()
    a = pystack.Stack("10.73.0.1/24", device=pipe.a, impair="tx.delay=20000")
    b = pystack.Stack("10.73.0.2/24", device=pipe.b)
    try:
        srv = ps.create_server(("", 7000), stack=b)
        cli = ps.create_connection(("10.73.0.2", 7000), timeout=WAIT, stack=a)
        srv.settimeout(WAIT)
        conn, _ = srv.accept()
        conn.settimeout(WAIT)
        payload = os.urandom(200_000)
        cli.sendall(payload)  # in the send buffer; most of it not yet on the link
        cli.close()
        t0 = time.monotonic()
        a.close()
        assert time.monotonic() - t0 < stack_mod.DRAIN_TIMEOUT_S  # ended by the ACKs, not the bound
        got, error = _recv_until_eof_or_error(conn)
        assert error is None and got == payload  # everything, then EOF
        conn.close()
        srv.close()
    finally:
        a.close()
        b.close(timeout=0)  # a is gone: nobody would acknowledge conn's FIN


def test_close_resets_connections_that_cannot_drain(two):
    """A peer that does not read keeps our data unsent: after the drain time, Stack.close resets
    the connection, so the peer learns (it reads what arrived, then ECONNRESET)."""
    a, b = two
    srv = ps.create_server(("", 7200), stack=b)
    srv.setsockopt(ps.SOL_SOCKET, ps.SO_RCVBUF, 4096)  # a small window, inherited by conn
    cli = ps.create_connection(("10.67.0.2", 7200), timeout=WAIT, stack=a)
    srv.settimeout(WAIT)
    conn, _ = srv.accept()
    conn.settimeout(WAIT)
    cli.setblocking(False)
    sent = 0
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            sent += cli.send(bytes(65536))
    cli.close()  # FIN-WAIT-1 with unsent data
    t0 = time.monotonic()
    a.close(timeout=0.3)
    assert 0.3 <= time.monotonic() - t0 < 0.3 + 2
    got, error = _recv_until_eof_or_error(conn)
    assert isinstance(error, ConnectionResetError) and 0 < len(got) < sent
    conn.close()
    srv.close()
    with pytest.raises(ValueError):
        b.close(timeout=-1)
