"""pystack.asyncio's own rules, beside the conformance suite: what a kernel stream has no equivalent for.

* Hosts are IPv4 addresses; a name raises ``socket.gaierror`` (EAI_NONAME)
  before any socket is made and without asking a resolver (pystack has none).
* Only asyncio's selector event loop is accepted (see pystack.runtime.streams).
* ``stack=None`` is ``pystack.Stack.default()``; ``local_addr`` binds first;
  a connect that is cancelled or fails leaves no socket behind.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time

import pytest
from apps_harness import make_world
from conftest import netns_available, require

import pystack.asyncio as pasyncio
from pystack.runtime import streams

TIMEOUT = 30.0


def run(coro, timeout: float = TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class NoStack:
    """A stack that fails the test if anything asks it for a socket."""

    def socket(self, *args):
        pytest.fail("a socket was made for an address that should have been refused")

    create_server = socket


@pytest.fixture
def no_resolver(monkeypatch):
    """Fail the test if anything asks the host's resolver."""

    def refuse(*args, **kwargs):
        pytest.fail(f"a resolver was asked: getaddrinfo{args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", refuse)


@pytest.mark.parametrize("host", ["localhost", "example.com", "10.0.0", "1", "10.0.0.256", " 10.0.0.1", ""])
def test_a_name_is_refused_without_a_lookup(no_resolver, host):
    with pytest.raises(socket.gaierror) as info:
        run(pasyncio.open_connection(host, 80, stack=NoStack()))
    assert info.value.errno == socket.EAI_NONAME


@pytest.mark.parametrize(("host", "port", "error"), [
    (None, 80, TypeError),
    (b"10.0.0.1", 80, TypeError),
    ("10.0.0.1", "80", TypeError),
    ("10.0.0.1", None, TypeError),
    ("10.0.0.1", 65536, OverflowError),
    ("10.0.0.1", -1, OverflowError),
])
def test_bad_addresses(no_resolver, host, port, error):
    with pytest.raises(error):
        run(pasyncio.open_connection(host, port, stack=NoStack()))


def test_only_selector_loops():
    class NotASelectorLoop(asyncio.AbstractEventLoop):
        pass

    async def check():
        assert streams.selector_loop() is asyncio.get_running_loop()

    run(check())
    with pytest.raises(RuntimeError, match="selector event loop"):
        streams.check_selector_loop(NotASelectorLoop())


def test_the_facade():
    assert pasyncio.StreamReader is asyncio.StreamReader and pasyncio.StreamWriter is asyncio.StreamWriter
    assert pasyncio.IncompleteReadError is asyncio.IncompleteReadError
    assert pasyncio.DEFAULT_LIMIT == 2**16
    assert set(pasyncio.__all__) <= set(dir(pasyncio))
    import pystack

    assert pystack.open_connection is pasyncio.open_connection
    assert pystack.start_server is pasyncio.start_server
    assert {"open_connection", "start_server"} <= set(pystack.__all__)


# -- on a Stack (needs a TAP in a namespace) ---------------------------------------------------


@pytest.fixture(scope="module")
def pworld():
    """A pystack world of the conformance harness (pystack.Stack on a TAP, kernel peer in the far namespace)."""
    require(netns_available())
    with make_world("pystack") as w:
        yield w


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(cond, timeout: float, what: str):
    """Poll ``cond()`` (no event announces it: descriptors closed by the loop thread) until true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def kernel_listener(world):
    sock = world.peer_socket()
    sock.settimeout(TIMEOUT)
    sock.bind((world.peer_ip, 0))
    sock.listen(4)
    return sock


@pytest.mark.netns
def test_streams_have_nodelay(pworld):
    """As asyncio's own host/port streams: TCP_NODELAY (tcp(7)) on the client and on accepted streams."""

    async def main():
        with kernel_listener(pworld) as listener:
            accepting = asyncio.ensure_future(asyncio.to_thread(listener.accept))
            reader, writer = await pasyncio.open_connection(pworld.peer_ip, listener.getsockname()[1],
                                                            stack=pworld.stack)
            peer, _ = await accepting
        with peer:
            sock = writer.get_extra_info("socket")
            assert sock.proto == socket.IPPROTO_TCP
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            writer.close()
            await writer.wait_closed()

        accepted = asyncio.Queue()
        server = await pasyncio.start_server(lambda r, w: accepted.put_nowait(w), pworld.ip, 0, stack=pworld.stack)
        async with server:
            lsock = server.sockets[0]
            assert lsock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            with pworld.peer_socket() as peer:
                peer.settimeout(TIMEOUT)
                await asyncio.to_thread(peer.connect, (pworld.ip, lsock.getsockname()[1]))
                writer = await accepted.get()
                assert writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                writer.close()
                await writer.wait_closed()

    run(main())


@pytest.mark.netns
def test_default_stack_and_local_addr(pworld):
    import pystack

    assert pystack.Stack.default() is pworld.stack

    async def main():
        with kernel_listener(pworld) as listener:
            accepting = asyncio.ensure_future(asyncio.to_thread(listener.accept))
            reader, writer = await pasyncio.open_connection(pworld.peer_ip, listener.getsockname()[1],
                                                            local_addr=(pworld.ip, 45123))
            peer, address = await accepting
        with peer:
            assert address == (pworld.ip, 45123) == writer.get_extra_info("sockname")
            peer.sendall(b"hi")
            assert await reader.readexactly(2) == b"hi"
            writer.close()
            await writer.wait_closed()

    run(main())


@pytest.mark.netns
def test_not_serving_means_refused(pworld):
    """start_serving=False binds but does not listen (as asyncio.start_server(host, port)): a SYN gets
    RST (RFC 9293 §3.10.7.1) until start_serving()."""

    def connect(port):
        with pworld.peer_socket() as peer:
            peer.settimeout(TIMEOUT)
            peer.connect((pworld.ip, port))
            peer.sendall(b"ok")
            peer.shutdown(socket.SHUT_WR)
            return peer.recv(10)

    async def echo(reader, writer):
        writer.write(await reader.read())
        writer.close()

    async def main():
        server = await pasyncio.start_server(echo, None, 0, stack=pworld.stack, start_serving=False)
        async with server:
            host, port = server.sockets[0].getsockname()
            assert host == "0.0.0.0" and port > 0
            with pytest.raises(ConnectionRefusedError):
                await asyncio.to_thread(connect, port)
            await server.start_serving()
            assert await asyncio.to_thread(connect, port) == b"ok"

    run(main())


@pytest.mark.netns
def test_start_server_address_errors(pworld, no_resolver):
    async def main():
        with pytest.raises(socket.gaierror):
            await pasyncio.start_server(lambda r, w: None, "localhost", 0, stack=pworld.stack)
        server = await pasyncio.start_server(lambda r, w: None, pworld.ip, 0, stack=pworld.stack)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(OSError) as info:
                await pasyncio.start_server(lambda r, w: None, pworld.ip, port, stack=pworld.stack)
            assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as info:
            await pasyncio.start_server(lambda r, w: None, "10.1.2.3", 0, stack=pworld.stack)
        assert info.value.errno == errno.EADDRNOTAVAIL

    fds = open_fds()
    run(main())
    assert open_fds() <= fds


@pytest.mark.netns
def test_failed_or_cancelled_connects_leave_no_socket(pworld):
    async def main():
        before = open_fds()
        with kernel_listener(pworld) as listener:
            port = listener.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await pasyncio.open_connection(pworld.peer_ip, port, stack=pworld.stack)
        # Nobody answers ARP for the silent address: the connect is still pending when cancelled.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pasyncio.open_connection(pworld.silent_ip, 80, stack=pworld.stack), 0.3)
        await until(lambda: open_fds() <= before, 10, "the sockets' descriptors to close")

    run(main())


@pytest.mark.netns
def test_stack_close_ends_waiting_streams():
    """Closing the Stack under open streams: a pending read and a drain raise OSError (EBADF), as a
    blocked recv in a thread does (the Stack's contract), instead of waiting forever."""
    require(netns_available())

    async def main(world):
        with kernel_listener(world) as listener:
            accepting = asyncio.ensure_future(asyncio.to_thread(listener.accept))
            reader, writer = await pasyncio.open_connection(world.peer_ip, listener.getsockname()[1],
                                                            stack=world.stack)
            peer, _ = await accepting
        with peer:
            pending = asyncio.ensure_future(reader.read(100))
            await asyncio.sleep(0)
            world.stack.close()
            with pytest.raises(OSError) as info:
                await asyncio.wait_for(pending, 10)
            assert info.value.errno == errno.EBADF
            writer.write(b"x")
            with pytest.raises(OSError):
                await asyncio.wait_for(writer.drain(), 10)
            writer.close()

    with make_world("pystack") as world:
        run(main(world))
