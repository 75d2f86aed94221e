"""One test, two stacks: the ``world`` fixture runs a test against the kernel and against pystack.

The side under test is either a kernel socket (kind ``"kernel"``, the
reference) or a pystack socket (kind ``"pystack"``); the peer is always the
Linux kernel in a namespace of its own (the *far* namespace).  A test that
passes on ``kernel`` and fails on ``pystack`` has found a pystack bug; one
that fails on ``kernel`` is a wrong test.

* kernel:  near namespace (10.90.0.2) --veth-- far namespace (10.90.0.1)
* pystack: pystack.Stack (10.90.0.2) on a TAP whose kernel side is in the
  far namespace (10.90.0.1)

Worlds are module-scoped (a namespace pair or a Stack per test module and
kind) to keep the suite fast: tests must use their own ports and leave no
socket open.  Neighbour state carries over between the tests of a module:
a test that needs an address nobody answers should use one of its own.  Everything is created here and removed at teardown, also on
failure; nothing touches the root namespace.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket as _socket
import subprocess
import threading
from contextlib import contextmanager

import pytest
from conftest import netns_available, require

NEAR_IP, FAR_IP, PREFIX = "10.90.0.2", "10.90.0.1", 24
#: An address on the link where nobody answers ARP (connects there time out or fail EHOSTUNREACH).
SILENT_IP = "10.90.0.99"
KINDS = ("kernel", "pystack")

# pyroute2's pushns/popns keep one process-wide stack of saved namespaces:
# entering a namespace is serialized so threads never interleave them.
_ns_lock = threading.RLock()


@contextmanager
def inside(ns):
    """The calling thread inside ``ns`` (``world.near`` or ``world.far``) for the block."""
    with _ns_lock, ns.entered():
        yield


class _KernelModule:
    """The stdlib ``socket`` module, except that sockets are made inside the near namespace."""

    def __init__(self, ns) -> None:
        self._ns = ns

    def __getattr__(self, name: str):
        return getattr(_socket, name)

    def socket(self, family=_socket.AF_INET, type=_socket.SOCK_STREAM, proto=0, fileno=None):
        with inside(self._ns):
            return _socket.socket(family, type, proto, fileno)

    def create_connection(self, address, timeout=_socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        # As socket.create_connection for one IPv4 address; only making the socket needs the
        # namespace, so a blocking connect does not hold the namespace lock.
        with inside(self._ns):
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            if timeout is not _socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def create_server(self, *args, **kwargs):
        with inside(self._ns):
            return _socket.create_server(*args, **kwargs)


class _PystackModule:
    """``pystack.socket`` with every socket made on this world's Stack."""

    def __init__(self, stack) -> None:
        import pystack.socket as psocket

        self._mod = psocket
        self._stack = stack

    def __getattr__(self, name: str):
        return getattr(self._mod, name)

    def socket(self, family=_socket.AF_INET, type=_socket.SOCK_STREAM, proto=0, fileno=None):
        return self._mod.socket(family, type, proto, fileno, stack=self._stack)

    def create_connection(self, *args, **kwargs):
        return self._mod.create_connection(*args, stack=self._stack, **kwargs)

    def create_server(self, *args, **kwargs):
        return self._mod.create_server(*args, stack=self._stack, **kwargs)


class World:
    """What a test sees (see the module docstring); made by the ``world`` fixture."""

    def __init__(self, kind: str, far, near=None, stack=None) -> None:
        self.kind = kind
        self.far = far
        self.near = near
        self.stack = stack
        self.ip = NEAR_IP
        self.peer_ip = FAR_IP
        self.silent_ip = SILENT_IP
        self.mod = _KernelModule(near) if kind == "kernel" else _PystackModule(stack)

    def __repr__(self) -> str:
        return f"<World {self.kind} {self.ip} <-> peer {self.peer_ip} in {self.far.name}>"

    # -- the kernel peer ------------------------------------------------------------------

    def peer_socket(self, type=_socket.SOCK_STREAM) -> _socket.socket:
        """A stdlib socket inside the far namespace (the peer)."""
        with inside(self.far):
            return _socket.socket(_socket.AF_INET, type)

    def peer_argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.far.name}", *argv]

    def peer_run(self, *argv: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run a command (curl, nc, ...) in the far namespace; output captured as text unless told."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.peer_argv(*argv), timeout=timeout, **kwargs)

    def peer_popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.peer_argv(*argv), **kwargs)

    # -- asyncio on the side under test ---------------------------------------------------

    async def open_connection(self, host: str, port: int, **kwargs):
        if self.kind == "pystack":
            import pystack.asyncio as pasyncio

            return await pasyncio.open_connection(host, port, stack=self.stack, **kwargs)
        # As asyncio's own open_connection(host, port) makes it: proto IPPROTO_TCP, as getaddrinfo
        # answers, so asyncio turns Nagle off (pystack.asyncio does the same).
        with inside(self.near):
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, _socket.IPPROTO_TCP)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, **kwargs)

    async def start_server(self, client_connected_cb, host: str | None = None, port: int = 0, **kwargs):
        if self.kind == "pystack":
            import pystack.asyncio as pasyncio

            return await pasyncio.start_server(client_connected_cb, host, port, stack=self.stack, **kwargs)
        # As asyncio's start_server(cb, host, port) makes it: IPPROTO_TCP, SO_REUSEADDR, bound now,
        # listening only when the server starts serving (asyncio calls listen(backlog) then).
        with inside(self.near):
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, _socket.IPPROTO_TCP)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind((host or "", port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return await asyncio.start_server(client_connected_cb, sock=sock, **kwargs)


def _configure(ns, ifname: str, address: str) -> None:
    with ns.iproute() as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        ipr.addr("add", index=index, address=address, prefixlen=PREFIX)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@contextmanager
def make_world(kind: str):
    """A World of ``kind``, removed on exit whatever happens."""
    from pystack.runtime.netns import NetNamespace

    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    with NetNamespace(f"pst-far-{tag}") as far:
        if kind == "kernel":
            with NetNamespace(f"pst-near-{tag}") as near:
                with near.iproute() as ipr:
                    # Made inside near with its peer placed straight into far: never in the root namespace.
                    ipr.link("add", ifname="vnear", kind="veth", peer={"ifname": "vfar", "net_ns_fd": far.name})
                _configure(near, "vnear", NEAR_IP)
                _configure(far, "vfar", FAR_IP)
                yield World(kind, far, near=near)
        else:
            import pystack

            with far.iproute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            stack = pystack.Stack(ip=f"{NEAR_IP}/{PREFIX}", tap=f"pst{secrets.token_hex(3)}", netns=far.name,
                                  host_ip=f"{FAR_IP}/{PREFIX}")
            try:
                yield World(kind, far, stack=stack)
            finally:
                stack.close()


@pytest.fixture(scope="module", params=KINDS)
def world(request):
    """The same test against the kernel (reference) and against pystack (see the module docstring)."""
    require(netns_available())
    with make_world(request.param) as w:
        yield w
