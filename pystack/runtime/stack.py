"""The Stack handle: a whole pystack (device chain, interface, loop thread) for applications.

Owns, for one :class:`Stack`: the link (a TAP set up by
:class:`~pystack.runtime.tapsetup.TapSetup`, or any device it is given),
the device chain over it (:func:`build_device_chain`, the same composition
as the daemon's), the sans-I/O :class:`~pystack.iface.interface.Interface`,
the :class:`~pystack.runtime.loop.Loop` and the background thread that runs
it, the hand-off through which application threads reach the stack
(:meth:`Stack.call`), and every socket made on it
(:class:`~pystack.runtime.sockets.SocketHub`).  :meth:`Stack.default` is the
stack ``pystack.socket`` uses when none is named.

Theory of operation
-------------------
*Start.*  Everything that can be checked is checked before anything is
set up (addresses, the impairment spec, the MAC), so a bad argument leaves
nothing behind; then the TAP (and namespace, when asked), the chain, the
interface and the loop are made, the loop thread starts, and the
constructor returns once one hand-off has gone through -- the loop runs.
A failure at any step undoes the steps before it.

*Hand-off* (:meth:`Stack._call`, the fast path of :meth:`Stack.call`).
The calling thread queues ``fn`` with ``Loop.call_soon`` and sleeps on a
lock made for this one call (:class:`_Waiter`, released by the loop when
``fn`` has run); the result or exception travels back in the same small
object.  From the loop thread itself ``fn`` simply runs.  A fresh waiter
per call, a lock-free ``call_soon`` and re-entrant locks elsewhere let a
signal handler use the stack while its thread is in the middle of a call.

*Giving up.*  A caller interrupted while it waits (KeyboardInterrupt from
a signal handler) or whose ``timeout`` passed gives its call up, and a
call given up must leave nothing behind: two atomic claims
(:class:`_Waiter`) decide, without a lock, whether the loop still runs it
-- a call not yet started never runs, so no data is consumed and no
connection accepted for nobody -- and, when it ran anyway, which side
disposes of a socket it made (``socket()``, ``accept()``), which is then
closed.  A caller that gives up a call the loop is running waits the
microseconds it takes, so a ``recv_into`` never writes into the caller's
buffer after the caller saw the exception.

*When the loop thread ends* (its device failed, or close): the dying
thread wakes every blocked socket call and fails every queued hand-off
with OSError (ENETDOWN, or EBADF after close); a caller that queues after
that cancels its own call, so no call waits for a loop that will not come.

*Two stacks in one process* (``device=`` a :class:`~pystack.phy.pipe.Pipe`
end, possibly wrapped): a pipe end has no file descriptor, so nothing would
wake the peer's loop when frames arrive.  Each Stack on a pipe end registers
its loop under that end, and wraps its device so that after every transmit
and receive (a FaultInjector may release delayed frames in either) it wakes
the loop of the other end if that end has frames waiting.  Any other device
must have a ``fileno`` (TAP, a joined daemon's link) or say through
``poll_at`` when it has frames.

*Close* (:meth:`Stack.close`, idempotent, from any thread but the loop's):
every socket is closed as its ``close()`` would (FIN, or RST), threads
blocked on one wake with EBADF -- so does a selector or asyncio loop
waiting on its descriptor, which stays open until the application closes
the socket object.  Then the loop runs on for at most ``timeout`` seconds
(the *drain*), until every closing connection -- those just closed and
those the application closed before -- has its data and FIN acknowledged;
a connection still holding unsent data or waiting for its FIN's ACK after
that is reset, so the peer learns the connection is gone.  (Decision:
Linux keeps such orphaned connections alive after the process exits; a
Stack cannot outlive itself, and a RST -- RFC 9293 §3.10.5 ABORT -- is
the honest end, where silence would leave the peer waiting forever.)  The
loop runs one more iteration so the RSTs leave, the thread is joined
(bounded: ``JOIN_TIMEOUT_S``), then the device chain is closed and the TAP
and namespace this Stack created are removed.  If the loop thread does not
stop in time, the device is closed anyway (the thread then stops on its
device error, and wakes the blocked calls on its way out: no descriptor is
closed while the loop thread may still use it) and the problem is logged:
closing never hangs.  Stacks still open at interpreter exit are closed by
an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass

from pystack.phy.device import Wrapper
from pystack.runtime.loop import Loop, monotonic_us
from pystack.runtime.sockets import _GLOBAL_DEFAULT_TIMEOUT, SocketHub, cores_in

log = logging.getLogger("pystack.runtime")

#: How long close() waits for the loop to close the sockets, and for the loop thread to end.
JOIN_TIMEOUT_S = 5.0
#: How long close() lets closing connections deliver their data and FIN by default.
DRAIN_TIMEOUT_S = 3.0
#: How long the constructor waits for the loop thread's first iteration.
START_TIMEOUT_S = 10.0

_registry_lock = threading.RLock()  # re-entrant: a signal handler may open or close a Stack
_open_stacks: list["Stack"] = []  # oldest first; Stack.default() is the last
_pipe_loops: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # PipeEnd -> Loop


# -- the device chain (shared with the daemon) -----------------------------------------------------


@dataclass
class DeviceChain:
    """What :func:`build_device_chain` made: ``device`` is the top, the one the Loop drives."""

    device: object
    pcap: object | None = None
    tracer: object | None = None
    faults: object | None = None


def build_device_chain(inner, *, pcap: str | None = None, trace: bool = False, faults=None,
                       clock=monotonic_us) -> DeviceChain:
    """``FaultInjector(Tracer(PcapWriter(inner)))``, each layer only when asked for.

    The capture and the trace show the frames that really crossed the link;
    the faults act between them and the stack.  ``faults`` is an impairment
    spec (``"loss=0.1,seed=3"``, see :func:`~pystack.phy.fault_injector.parse_impairment`)
    or its parsed ``(rx, tx, seed)``.  Raises SetupError when the capture
    cannot be written; closing the returned top device closes ``inner`` too.
    """
    from pystack.phy.fault_injector import FaultInjector, parse_impairment
    from pystack.phy.pcap_writer import PcapWriter
    from pystack.phy.tracer import Tracer
    from pystack.runtime.tapsetup import SetupError

    if isinstance(faults, str):
        faults = parse_impairment(faults)
    chain = DeviceChain(inner)
    device = inner
    if pcap:
        origin = time.time_ns() // 1000 - clock()
        try:
            device = chain.pcap = PcapWriter(device, pcap, time_origin=origin)
        except OSError as exc:
            raise SetupError(f"cannot write the capture {pcap}: {exc.strerror or exc}") from None
    if trace:
        device = chain.tracer = Tracer(device, level=logging.INFO)
    if faults is not None:
        rx, tx, seed = faults
        device = chain.faults = FaultInjector(device, rx, tx, seed=seed)
    chain.device = device
    return chain


def _innermost(device):
    for _ in range(32):
        inner = getattr(device, "inner", None)
        if inner is None:
            return device
        device = inner
    return device


class _PipeWaker(Wrapper):
    """Wakes the loop of the pipe's other end when frames wait for it (module docstring)."""

    def __init__(self, inner, end) -> None:
        super().__init__(inner)
        self._end = end

    def transmit(self, frames, now: int) -> int:
        taken = self.inner.transmit(frames, now)
        self._kick()
        return taken

    def receive(self, now: int) -> list:
        frames = self.inner.receive(now)
        self._kick()
        return frames

    def _kick(self) -> None:
        peer = self._end.peer
        if peer.pending:
            loop = _pipe_loops.get(peer)
            if loop is not None:
                loop._wake()  # lock-free eventfd write; harmless when the peer is busy anyway


# -- arguments ----------------------------------------------------------------------------------------


def _address(text, what: str, default_prefix: int | None = None) -> tuple[str, int]:
    """"a.b.c.d/nn" (or a (address, prefix) pair) -> ("a.b.c.d", nn), checked."""
    from pystack.wire.ipv4 import ip_from_str

    if isinstance(text, tuple):
        address, prefix = text
    elif isinstance(text, str):
        address, sep, prefix = text.partition("/")
        if not sep:
            if default_prefix is None:
                raise ValueError(f"{what} must be ADDRESS/PREFIX (like 10.77.0.2/24), got {text!r}")
            prefix = default_prefix
        else:
            try:
                prefix = int(prefix)
            except ValueError:
                raise ValueError(f"{what}: bad prefix length in {text!r}") from None
    else:
        raise TypeError(f"{what} must be a str like '10.77.0.2/24', not {type(text).__name__}")
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= 32:
        raise ValueError(f"{what}: prefix length must be 0..32, got {prefix!r}")
    try:
        ip_from_str(address)
    except ValueError:
        raise ValueError(f"{what}: {address!r} is not a dotted-quad IPv4 address") from None
    return address, prefix


class _Waiter:
    """One hand-off: ``lock`` is held until the loop has run (or failed) the call.

    ``run`` and ``result`` are claims, one-item lists taken with ``pop``
    (atomic, so no lock is needed and a signal handler can never deadlock on
    one).  ``run``: whoever takes it first decides -- the loop, which then
    runs the call, or a caller giving up, which cancels it.  ``result``:
    taken by the loop once the call ran, to deliver the outcome, and by a
    caller giving up; whichever comes second is left holding a result nobody
    will read, and disposes of the sockets in it (:func:`_run_call`,
    :meth:`Stack._give_up`).
    """

    __slots__ = ("lock", "value", "exc", "run", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value = None
        self.exc: BaseException | None = None
        self.run = [True]
        self.result = [True]


def _take(claim: list) -> bool:
    """Take a :class:`_Waiter` claim; False when the other side took it first."""
    try:
        claim.pop()
    except IndexError:
        return False
    return True


def _run_call(waiter: _Waiter, fn, args, dispose) -> None:
    """The loop side of a hand-off."""
    if not _take(waiter.run):
        return  # the caller gave it up before it started: it never runs
    try:
        waiter.value = fn(*args)
    except BaseException as exc:  # handed to the caller, never lost in the loop
        waiter.exc = exc
    try:
        if not _take(waiter.result):
            # The caller gave up while it ran: nobody reads the outcome.
            waiter.exc = None
            dispose(waiter.value)
    finally:
        waiter.lock.release()


class Stack:
    """A running pystack with its own loop thread (see the module docstring).

    ``ip`` is the stack's address with its prefix (``"10.77.0.2/24"``).
    Without ``device``, a TAP named ``tap`` is created (or attached to) in
    ``netns`` (created when missing, removed at close if this made it), its
    kernel side given ``host_ip`` (``"10.77.0.1/24"``; the prefix defaults
    to ``ip``'s) when this creates it.  With ``device``, that device is the
    link: nothing is set up and the Stack owns (and closes) the device.
    ``gateway``, ``mtu``, ``mac`` (bytes or text; default 02:50 + the
    address), ``pcap`` (a capture file), ``impair`` (a FaultInjector spec),
    ``trace``, ``tcp`` (a :class:`~pystack.transport.tcp.layer.TcpConfig`)
    and ``batch`` (frames per TAP read) are as for ``pystack up``.
    """

    def __init__(self, ip: str = "10.77.0.2/24", *, tap: str = "pst0", netns: str | None = None,
                 host_ip=None, gateway: str | None = None, mtu: int | None = None, mac=None,
                 pcap: str | None = None, impair=None, trace: bool = False, tcp=None, batch: int | None = None,
                 device=None) -> None:
        from pystack.iface.interface import Interface, InterfaceConfig
        from pystack.phy.fault_injector import parse_impairment
        from pystack.runtime.daemon import default_mac
        from pystack.transport.tcp.layer import TcpConfig
        from pystack.wire.ethernet import mac_from_str
        from pystack.wire.ipv4 import ip_from_str

        self._closed = True  # until fully started: close() and __del__ do nothing
        self._running = False  # application hand-offs accepted (False from close() on)
        self._loop_alive = False  # the loop thread runs hand-offs (False once it is ending)
        self._dead_cause: BaseException | None = None
        self.setup = None
        self.chain: DeviceChain | None = None
        self._thread: threading.Thread | None = None
        self._close_lock = threading.RLock()  # re-entrant: a signal handler may close while we close
        # Everything checked before anything is made.
        address, prefix = _address(ip, "ip")
        host = _address(host_ip, "host_ip", prefix) if host_ip is not None else None
        faults = parse_impairment(impair) if isinstance(impair, str) else impair
        if mac is None:
            mac = default_mac(address)
        elif isinstance(mac, str):
            mac = mac_from_str(mac)
        if tcp is not None and not isinstance(tcp, TcpConfig):
            raise TypeError(f"tcp must be a TcpConfig, not {type(tcp).__name__}")
        if gateway is not None:
            ip_from_str(gateway)
        if device is not None and (host_ip is not None or netns is not None):
            raise ValueError("host_ip and netns set up a TAP; with device= there is none")
        self.tap = tap if device is None else None
        self.netns = netns if device is None else None
        try:
            if device is None:
                from pystack.runtime.tapsetup import TapSetup

                self.setup = TapSetup(tap, netns=netns, host_ip=host, mtu=mtu, batch=batch or 64)
                self.setup.__enter__()
                inner = self.setup.device
                link_mtu = self.setup.mtu
            else:
                inner = device
                link_mtu = device.mtu
                if mtu is not None and mtu != link_mtu:
                    raise ValueError(f"mtu {mtu} differs from the device's {link_mtu}")
            self.chain = build_device_chain(inner, pcap=pcap, trace=trace, faults=faults)
            top = self.chain.device
            end = _innermost(inner)
            if getattr(end, "fileno", None) is None and hasattr(end, "peer") and hasattr(end, "pending"):
                top = _PipeWaker(top, end)
            config = InterfaceConfig(mac=mac, ip=ip_from_str(address), prefix_len=prefix,
                                     gateway=ip_from_str(gateway) if gateway else None, mtu=link_mtu)
            self.iface = Interface(config, tcp_config=tcp)
            self._hub = SocketHub(self.iface)
            self._dispose = self._hub.dispose
            self.loop = Loop(top, self.iface, services=[self._hub], clock=monotonic_us)
            if top is not self.chain.device:
                _pipe_loops[end] = self.loop
            self.ip = address
            self.prefix_len = prefix
            self.mac = bytes(config.mac)
            self._running = self._loop_alive = True
            self._thread = threading.Thread(target=self._thread_main, name=f"pystack-{address}", daemon=True)
            self._thread.start()
            self.call(_noop, timeout=START_TIMEOUT_S)  # returns once the loop runs
        except BaseException:
            self._running = False
            thread = self._thread
            if thread is not None:
                self.loop.stop()
                thread.join(JOIN_TIMEOUT_S)
            self._teardown(loop_done=thread is None or not thread.is_alive())
            raise
        self._closed = False
        with _registry_lock:
            _open_stacks.append(self)

    # -- the loop thread ----------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self._dead_cause = exc
            log.error("pystack loop of %s stopped: %s", getattr(self, "ip", "?"), exc)
        finally:
            # Flag first: a caller that queues after the drain below sees it and cancels its call.
            self._running = self._loop_alive = False
            try:
                self._hub.abandon()
            finally:
                self._fail_pending()

    def _fail_pending(self) -> None:
        """Fail every queued hand-off (the dying loop thread: nothing runs them any more)."""
        calls: deque = self.loop._calls  # the Loop's queue; this module is its runtime sibling
        while True:
            try:
                fn, args = calls.popleft()
            except IndexError:
                return
            if fn is _run_call:
                waiter = args[0]
                if _take(waiter.run):  # else its caller gave it up already
                    waiter.exc = self._stopped_error()
                    waiter.lock.release()

    def _stopped_error(self) -> OSError:
        if self._dead_cause is not None:
            return OSError(errno.ENETDOWN, f"{os.strerror(errno.ENETDOWN)} (the stack's loop stopped: "
                                           f"{self._dead_cause})")
        return OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (the stack is closed)")

    def _in_loop_thread(self) -> bool:
        return self.loop._owner == threading.get_ident()

    # -- hand-offs ------------------------------------------------------------------------------------

    def _call(self, fn, *args, timeout: float | None = None):
        """Run ``fn(*args)`` in the loop thread; OSError EBADF (closed) / ENETDOWN (loop gone)."""
        if self.loop._owner == threading.get_ident():
            return fn(*args)
        if not self._running:
            raise self._stopped_error()
        return self._handoff(fn, args, timeout)

    def _handoff(self, fn, args, timeout: float | None):
        """The hand-off itself (see the module docstring), for :meth:`_call` and :meth:`close`."""
        waiter = _Waiter()
        try:
            self.loop.call_soon(_run_call, waiter, fn, args, self._dispose)
        except RuntimeError:  # the loop was closed under us
            raise self._stopped_error() from None
        if not self._loop_alive and _take(waiter.run):
            raise self._stopped_error()  # the dying loop thread has failed its queue already
        try:
            done = waiter.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))
        except BaseException:  # interrupted (a signal handler raised)
            self._give_up(waiter, True)
            raise
        if not done:
            self._give_up(waiter, False)
            raise TimeoutError(f"the stack's loop did not run the call within {timeout} s")
        exc = waiter.exc
        if exc is not None:
            # The loop-side frames are done: drop their locals, so the exception the caller may
            # keep holds no view of the caller's buffers (see sockets._buffer).
            traceback.clear_frames(exc.__traceback__)
            raise exc
        return waiter.value

    def _give_up(self, waiter: _Waiter, wait: bool) -> None:
        """The caller stops waiting for ``waiter``'s call (see "Giving up" in the module docstring)."""
        if _take(waiter.run):
            return  # cancelled: it never runs
        try:
            if wait:
                # The loop runs it now; a socket operation takes microseconds.
                waiter.lock.acquire(timeout=JOIN_TIMEOUT_S)
        finally:
            if not _take(waiter.result):
                # The loop delivered to nobody: close the sockets the call made for us.
                for core in cores_in(waiter.value):
                    core.app_done = True
                    self._orphan(core)

    def call(self, fn, *args, timeout: float | None = None):
        """Run ``fn(*args)`` in the loop thread and return its result (or raise its exception).

        The one way application code may touch stack state (``st.iface``,
        sans-I/O sockets).  RuntimeError when the stack is closed or its loop
        stopped; TimeoutError when ``timeout`` seconds pass first.  A call
        given up that way (or by a signal handler's exception) never runs if
        the loop had not started it; if it had, it runs to its end.
        """
        try:
            return self._call(fn, *args, timeout=timeout)
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ENETDOWN) and not self._running:
                raise RuntimeError(f"the Stack is not running: {exc.strerror}") from exc
            raise

    def _orphan(self, core) -> None:
        """The application dropped ``core`` unclosed (collected, or a call given up): the loop
        closes it.  Lock-free: called from finalizers and signal handlers, in any thread."""
        if self._loop_alive:
            self._hub.orphans.append(core)
            self.loop._wake()
            if self._loop_alive:
                return
            # The loop thread is ending: it may have released its orphans before we appended.
        self._hub.release_orphans()
        core.release_a()

    # -- sockets -------------------------------------------------------------------------------------

    def socket(self, family=None, type=None, proto: int = 0):
        """A :class:`pystack.socket.socket` on this stack."""
        from pystack import socket as psocket

        return psocket.socket(psocket.AF_INET if family is None else family,
                              psocket.SOCK_STREAM if type is None else type, proto, stack=self)

    def create_connection(self, address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kwargs):
        """As :func:`pystack.socket.create_connection` on this stack."""
        from pystack import socket as psocket

        return psocket.create_connection(address, timeout, source_address, stack=self, **kwargs)

    def create_server(self, address, *, family=None, backlog=None, reuse_port=False):
        """As :func:`pystack.socket.create_server` on this stack."""
        from pystack import socket as psocket

        return psocket.create_server(address, family=psocket.AF_INET if family is None else family,
                                     backlog=backlog, reuse_port=reuse_port, stack=self)

    # -- status --------------------------------------------------------------------------------------

    def status(self) -> dict:
        """The interface's status plus the loop's counters, like the daemon's ``status``."""
        return self.call(self._status, timeout=JOIN_TIMEOUT_S)

    def _status(self) -> dict:
        st = dict(self.iface.status())
        from pystack import _accel

        st["stack"] = {"pid": os.getpid(), "tap": self.tap, "netns": self.netns,
                       "created_tap": self.setup.created_tap if self.setup else None,
                       "created_netns": self.setup.created_netns if self.setup else None,
                       "implementation": _accel.IMPLEMENTATION, "sockets": len(self._hub.cores),
                       "uptime_s": round((self.loop.clock() - (self.loop.started_at or 0)) / 1e6, 3)}
        st["runtime"] = {**self.loop.stats, "tx_backlog": self.loop.backlog}
        if self.chain is not None and self.chain.faults is not None:
            st["faults"] = self.chain.faults.status()
        return st

    # -- default --------------------------------------------------------------------------------------

    @classmethod
    def join(cls, control_path: str, ip: str, *, mac=None, timeout: float = 5.0, **kwargs) -> "Stack":
        """A Stack that joins a running daemon's link instead of owning a TAP.

        The daemon (``pystack up --control PATH``) plugs this stack into the
        switch on top of its device chain, so it becomes another host on the
        TAP's Ethernet segment with its own ``ip`` (in the daemon's subnet:
        "A.B.C.D" or "A.B.C.D/N") and MAC; the kernel side reaches it like the
        daemon, and its traffic with the kernel crosses the daemon's capture,
        trace and fault injector.  ``kwargs`` go to :class:`Stack` (``tcp``,
        ``batch``...).  Closing the Stack unplugs it.  Raises OSError
        (EADDRINUSE, EADDRNOTAVAIL) when the daemon refuses the addresses and
        :class:`~pystack.runtime.control.ControlError` when no daemon answers.
        See :func:`pystack.runtime.switch.join`.
        """
        from pystack.runtime.switch import join

        return join(control_path, ip, mac=mac, timeout=timeout, **kwargs)

    @classmethod
    def default(cls) -> "Stack":
        """The most recently created Stack that is still open."""
        with _registry_lock:
            if _open_stacks:
                return _open_stacks[-1]
        raise RuntimeError("no pystack.Stack is open: create one (pystack.Stack(ip=...)) or pass stack=")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        """The loop thread runs (False once closed, or when its device failed)."""
        return self._running

    # -- closing -------------------------------------------------------------------------------------

    def close(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Close every socket, drain, stop the loop, free the device (see the module docstring).

        ``timeout``: how many seconds closing connections get to deliver their
        data and FIN before they are reset (0: reset them at once).
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        with self._close_lock:
            if self._closed:
                return
            if self._thread is not None and self._in_loop_thread():
                raise RuntimeError("Stack.close() from the stack's own loop thread would wait for itself")
            self._closed = True
        with _registry_lock:
            if self in _open_stacks:
                _open_stacks.remove(self)
        thread = self._thread
        if self._running:
            self._running = False  # application hand-offs fail at once (EBADF) from here on
            try:
                drained = self._handoff(self._hub.close_all, (), JOIN_TIMEOUT_S)
                if drained is not None:
                    drained.wait(timeout)
                self._handoff(self._hub.reset_undrained, (), JOIN_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                log.warning("closing the sockets of %s failed: %s", self.ip, exc)
            self.loop.stop()  # one more iteration: what the hand-offs above produced leaves
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.error("the pystack loop thread of %s did not stop within %.0f s; closing its device "
                          "anyway", self.ip, JOIN_TIMEOUT_S)
                self._teardown(loop_done=False)  # the thread wakes the blocked calls when it ends
                return
        self._hub.abandon()  # did the dying thread's work already; idempotent (and needed without one)
        self._teardown()

    def _teardown(self, loop_done: bool = True) -> None:
        loop = getattr(self, "loop", None)
        for end, owner in list(_pipe_loops.items()):  # first: the peer's loop stops waking ours
            if owner is loop:
                _pipe_loops.pop(end, None)
        if loop is not None and loop_done:
            try:
                loop.close()
            except Exception:
                log.exception("closing the loop failed")
        chain, self.chain = self.chain, None
        setup, self.setup = self.setup, None
        try:
            if chain is not None and (setup is None or chain.device is not setup.device):
                chain.device.close()  # the wrappers (flushes a capture) and the inner device
        except Exception:
            log.exception("closing the device failed")
        finally:
            if setup is not None:
                setup.close()  # the TAP, then the namespace if this made it

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" tap {self.tap}" if self.tap else ""
        where += f" in {self.netns}" if self.netns else ""
        state = "closed" if self._closed else ("running" if self._running else "stopped")
        return f"<pystack.Stack {getattr(self, 'ip', '?')}/{getattr(self, 'prefix_len', '?')}{where} {state}>"


def _noop() -> None:
    return None


@atexit.register
def _close_open_stacks() -> None:
    with _registry_lock:
        stacks = list(_open_stacks)
    for st in reversed(stacks):
        try:
            st.close()
        except Exception:
            pass
