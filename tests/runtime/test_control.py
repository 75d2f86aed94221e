"""The control socket: served by a running Loop, asked with request()."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading

import pytest

from pystack.phy.pipe import Pipe
from pystack.runtime.control import MAX_CONNECTIONS, ControlError, ControlServer, request
from pystack.runtime.loop import Loop

WAIT_S = 5.0


class Idle:
    def receive(self, frame, now): pass
    def poll(self, now): return []
    def poll_at(self): return None


@pytest.fixture
def served(tmp_path):
    """(path, loop, server) with the loop running in a thread; torn down whatever happens."""
    pipe = Pipe()
    loop = Loop(pipe.b, Idle())
    path = str(tmp_path / "ctl.sock")
    owner = {}

    def status():
        owner["thread"] = threading.get_ident()
        return {"answer": 42, "blob": b"\x01\x02"}

    server = ControlServer(path, loop, {"status": status, "big": lambda: {"data": "x" * 3_000_000},
                                        "broken": lambda: 1 / 0})
    thread = loop.start_thread()
    try:
        yield path, loop, server, owner, thread
    finally:
        loop.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        server.close()
        loop.close()


def test_status_is_answered_by_the_loop_thread(served):
    path, loop, server, owner, thread = served
    assert request(path, "status") == {"answer": 42, "blob": "01:02"}
    assert owner["thread"] == thread.ident
    assert server.requests == 1


def test_socket_file_is_private(served):
    path = served[0]
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_unknown_command_and_failing_handler_are_one_line_errors(served):
    path = served[0]
    with pytest.raises(ControlError, match="unknown command 'nope'") as info:
        request(path, "nope")
    assert "\n" not in str(info.value)
    with pytest.raises(ControlError, match="ZeroDivisionError"):
        request(path, "broken")
    assert request(path, "status")["answer"] == 42  # still serving


def test_a_large_answer_arrives_whole(served):
    """Bigger than the socket buffer: the server finishes it on EPOLLOUT without blocking the loop."""
    path = served[0]
    got = request(path, "big")
    assert got["data"] == "x" * 3_000_000


def test_a_silent_client_does_not_block_others(served):
    path = served[0]
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        idle.connect(path)
        idle.send(b"sta")  # half a line, never finished
        assert request(path, "status")["answer"] == 42
    finally:
        idle.close()


@pytest.mark.parametrize("clients", [20, 3 * MAX_CONNECTIONS])
def test_many_clients_at_once(served, clients):
    """More clients than MAX_CONNECTIONS at once: every one gets its answer.

    The server once closed the oldest connection when full, so clients beyond
    the limit read an empty answer ("not JSON"); now the listen backlog holds
    them until a slot frees.
    """
    path = served[0]
    results, errors = [], []
    go = threading.Barrier(clients)

    def ask():
        go.wait(WAIT_S)
        try:
            results.append(request(path, "status")["answer"])
        except Exception as exc:  # reported below with the count
            errors.append(repr(exc))

    threads = [threading.Thread(target=ask) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert errors == []
    assert results == [42] * clients


def test_overlong_request_is_refused(served):
    path = served[0]
    with pytest.raises(ControlError, match="longer than"):
        request(path, "x" * 5000)


def test_second_server_on_a_live_path_is_refused(served):
    path, loop = served[0], served[1]
    with pytest.raises(OSError) as info:
        ControlServer(path, loop, {})
    assert info.value.errno == errno.EADDRINUSE
    assert request(path, "status")["answer"] == 42


def test_stale_socket_file_is_replaced_and_removed_at_close(tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: a daemon that died
    pipe = Pipe()
    with Loop(pipe.b, Idle()) as loop:
        server = ControlServer(path, loop, {"status": lambda: {"fresh": True}})
        thread = loop.start_thread()
        try:
            assert request(path)["fresh"] is True
        finally:
            loop.stop()
            thread.join(WAIT_S)
            server.close()
    assert not os.path.exists(path)


def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path):
    path = tmp_path / "file"
    path.write_text("precious")
    with Loop(Pipe().b, Idle()) as loop:
        with pytest.raises(FileExistsError):
            ControlServer(str(path), loop, {})
    assert path.read_text() == "precious"


def test_request_without_daemon_is_a_one_line_error(tmp_path):
    with pytest.raises(ControlError, match="no pystack daemon answers") as info:
        request(str(tmp_path / "none.sock"))
    assert "\n" not in str(info.value)


def test_request_to_a_server_that_never_answers_times_out(tmp_path):
    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        mute.bind(path)
        mute.listen(1)
        with pytest.raises(ControlError, match="did not answer within 0.2 s"):
            request(path, timeout=0.2)
    finally:
        mute.close()


def test_garbage_answer_is_reported(tmp_path):
    path = str(tmp_path / "garbage.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(100)
        conn.sendall(b"not json\n")
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with pytest.raises(ControlError, match="not JSON"):
            request(path, timeout=WAIT_S)
    finally:
        t.join(WAIT_S)
        srv.close()
