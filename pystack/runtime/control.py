"""The daemon's control socket: a Unix stream socket served by the loop thread, and its client.

Owns the wire protocol between ``pystack status`` and a running ``pystack
up``, and the socket file.  The server never blocks and never runs in a
thread of its own: its listening socket and its connections are watched by
the :class:`~pystack.runtime.loop.Loop` (:meth:`Loop.watch`), so a command
reads the stack's state from the owner thread, between two iterations -- a
consistent snapshot with no lock.

Protocol: the client connects, sends one command line (``status\\n``) and
reads until the server closes; the server answers with one JSON object and a
newline, then closes.  An answer always has ``"ok"``: true with the result's
fields, or false with ``"error"`` (a sentence) and, for a refusal that has
one, ``"errno"`` (the Linux errno the client raises as OSError).  Commands:
``status``, and those registered with an argument (``arg_handlers``): the
word, a space, then the rest of the line -- ``attach {"ip": ...}`` (see
:mod:`pystack.runtime.switch`).  An answer may carry file descriptors
(:class:`Reply`): they travel with its first bytes as SCM_RIGHTS
(unix(7)), which :func:`exchange` receives.

The socket file is created mode 0600 (only its owner -- root for a daemon
that made a TAP -- may ask), and removed when the server closes.  A path
where another daemon answers is refused (``EADDRINUSE``); a stale file left
by a daemon that died is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import socket
import stat
import struct
from collections.abc import Callable

log = logging.getLogger("pystack.control")

#: Where ``pystack up`` listens and ``pystack status`` asks, unless told otherwise.
DEFAULT_PATH = "/run/pystack.sock"
#: A command line longer than this is refused (the protocol's commands are words).
MAX_REQUEST = 1024
#: Connections served at once.  Beyond this the server stops accepting and the
#: kernel's listen backlog holds the rest until a slot frees: every client is
#: answered, none is cut off.  (The socket is its owner's only, mode 0600, so
#: clients that connect and stay silent can only come from that owner.)
MAX_CONNECTIONS = 64


class ControlError(Exception):
    """A control request failed; the message is one line meant for the user."""


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex(":")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode(obj: dict) -> bytes:
    """One JSON line; values JSON cannot hold (bytes, sets) are written as text."""
    return json.dumps(obj, default=_json_default, sort_keys=False).encode() + b"\n"


class Reply(dict):
    """An answer's fields plus ``fds``: sockets (or anything with ``fileno()`` and ``close()``)
    passed to the client with the answer (SCM_RIGHTS, unix(7)).  The server closes its
    copies once they are sent, or when the client goes away first."""

    def __init__(self, fields: dict, fds=()) -> None:
        super().__init__(fields)
        self.fds = list(fds)


class _Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "fds")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.fds: list = []  # to pass with the answer's first bytes

    def release_fds(self) -> None:
        fds, self.fds = self.fds, []
        for f in fds:
            with contextlib.suppress(OSError):
                f.close()


class ControlServer:
    """Serves the control protocol on ``path`` through ``loop``.

    ``handlers`` maps a command word to a function returning a dict (the
    answer's fields); ``arg_handlers`` maps a word to a function taking the
    rest of the line (a str) -- either may return a :class:`Reply` to pass
    file descriptors, and may raise OSError to refuse with its errno.  They
    run in the loop's owner thread.  Create the server from the owner thread
    or before ``loop.run()``; :meth:`close` likewise.
    """

    def __init__(self, path: str, loop, handlers: dict[str, Callable[[], dict]],
                 arg_handlers: dict[str, Callable[[str], dict]] | None = None) -> None:
        self.path = os.fspath(path)
        self.loop = loop
        self.handlers = dict(handlers)
        self.arg_handlers = dict(arg_handlers or {})
        self.requests = 0
        self._conns: dict[int, _Conn] = {}
        self._sock = self._listen(self.path)
        self._accepting = True
        loop.watch(self._sock.fileno(), self._on_accept)

    @staticmethod
    def _listen(path: str) -> socket.socket:
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket", path)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # stale: its daemon is gone
            except OSError:
                pass
            else:
                raise OSError(errno.EADDRINUSE,
                              f"another pystack daemon answers on {path} (use --control PATH)", path)
            finally:
                probe.close()
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old)
        sock.listen(128)
        return sock

    def _on_accept(self, events: int) -> None:
        while True:
            if len(self._conns) >= MAX_CONNECTIONS:
                # Full: leave the rest in the listen backlog; _drop resumes us.
                self.loop.unwatch(self._sock.fileno())
                self._accepting = False
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again at the next event
                log.warning("control: accept failed: %s", exc)
                return
            conn.setblocking(False)
            fd = conn.fileno()
            self._conns[fd] = _Conn(conn)
            self.loop.watch(fd, lambda ev, fd=fd: self._on_conn(fd, ev))

    def _on_conn(self, fd: int, events: int) -> None:
        c = self._conns.get(fd)
        if c is None:
            return
        if c.outbuf:
            self._send(fd, c)
            return
        try:
            data = c.sock.recv(MAX_REQUEST + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        c.inbuf += data
        line, newline, _ = c.inbuf.partition(b"\n")
        if not newline and data and len(c.inbuf) <= MAX_REQUEST:
            return  # wait for the rest of the line
        if len(line) > MAX_REQUEST:
            answer = {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        elif not newline and not line.strip():
            self._drop(fd)  # closed without asking anything
            return
        else:
            answer = self._answer(line.decode("utf-8", "replace").strip())
        c.outbuf = encode(answer)
        if isinstance(answer, Reply):
            c.fds = answer.fds
        self.loop.watch(fd, lambda ev, fd=fd: self._on_conn(fd, ev), select.EPOLLOUT)
        self._send(fd, c)

    def _answer(self, command: str) -> dict:
        self.requests += 1
        handler = self.handlers.get(command)
        args: tuple = ()
        if handler is None:
            word, _, rest = command.partition(" ")
            handler = self.arg_handlers.get(word)
            if handler is not None:
                command, args = word, (rest.strip(),)
            elif word in self.handlers:
                return {"ok": False, "error": f"{word} takes no argument"}
        if handler is None:
            known = ", ".join(sorted({*self.handlers, *self.arg_handlers}))
            return {"ok": False, "error": f"unknown command {command!r} (known: {known})"}
        try:
            result = handler(*args)
            if isinstance(result, Reply):
                return Reply({"ok": True, **result}, result.fds)
            return {"ok": True, **result}
        except OSError as exc:
            # A refusal (EADDRINUSE...): the client raises it again with the same errno.
            message = exc.strerror or str(exc)
            return {"ok": False, "error": f"{command}: {message}", "errno": exc.errno}
        except Exception as exc:
            log.exception("control: command %r failed", command)
            return {"ok": False, "error": f"{command} failed: {type(exc).__name__}: {exc}"}

    def _send(self, fd: int, c: _Conn) -> None:
        try:
            if c.fds:
                # The descriptors ride on the first bytes (unix(7) SCM_RIGHTS).
                sent = socket.send_fds(c.sock, [c.outbuf], [f.fileno() for f in c.fds])
                c.release_fds()  # the client holds its own copies now
            else:
                sent = c.sock.send(c.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        c.outbuf = c.outbuf[sent:]
        if not c.outbuf:
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is not None:
            self.loop.unwatch(fd)
            c.release_fds()  # never sent: closing them tells whoever waits on the other ends
            # Closing with unread bytes makes the peer's recv fail with
            # ECONNRESET before it reads our answer: discard them first.
            with contextlib.suppress(OSError):
                for _ in range(16):
                    if not c.sock.recv(65536):
                        break
            c.sock.close()
            if not self._accepting and self._sock.fileno() >= 0:
                self._accepting = True
                self.loop.watch(self._sock.fileno(), self._on_accept)

    def close(self) -> None:
        """Close every connection and the listener, and remove the socket file."""
        if self._sock.fileno() >= 0:
            self.loop.unwatch(self._sock.fileno())  # unknown fds are ignored
        self._accepting = True  # so the drops below do not watch the listener again
        for fd in list(self._conns):
            self._drop(fd)
        if self._sock.fileno() >= 0:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> "ControlServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def request(path: str = DEFAULT_PATH, command: str = "status", timeout: float = 5.0) -> dict:
    """Send ``command`` to the daemon at ``path`` and return its answer's fields.

    Raises :class:`ControlError` with a one-line message when no daemon
    answers, access is denied, the answer is not JSON, or the daemon
    reports an error.
    """
    answer, fds = exchange(path, command, timeout)
    for fd in fds:  # not asked for (maxfds=0 receives none); never leak one
        os.close(fd)
    if not answer.pop("ok"):
        raise ControlError(f"the daemon says: {answer.get('error', 'unknown error')}")
    return answer


def exchange(path: str, command: str, timeout: float = 5.0, *, maxfds: int = 0) -> tuple[dict, list[int]]:
    """One request: ``(answer, fds)`` -- the whole answer (``"ok"`` included) and the file
    descriptors that came with it (at most ``maxfds``; the caller owns them, close-on-exec).

    Raises :class:`ControlError` when no daemon answers, access is denied, or
    the answer is not a JSON object with ``"ok"``; an error answer is
    returned, not raised.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Connect in blocking mode bounded by SO_SNDTIMEO: an AF_UNIX connect then
    # waits for room in a busy daemon's listen backlog, where one made with a
    # Python timeout (a non-blocking socket) fails at once with EAGAIN.
    sec = int(timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, int((timeout - sec) * 1e6)))
    chunks = []
    fds: list[int] = []
    try:
        try:
            sock.connect(path)
            sock.settimeout(timeout)
        except BlockingIOError:
            raise ControlError(f"the daemon on {path} did not accept within {timeout:g} s") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no pystack daemon answers on {path} (is `pystack up` running? "
                               "see --control)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (the daemon's socket is its "
                               "owner's only: run as the same user, usually root)") from None
        try:
            sock.sendall(command.encode() + b"\n")
            while True:
                if maxfds:
                    chunk, got, flags, _ = socket.recv_fds(sock, 65536, maxfds, socket.MSG_CMSG_CLOEXEC)
                    fds.extend(got)
                    if flags & socket.MSG_CTRUNC:
                        raise ControlError(f"the daemon on {path} passed more descriptors than expected")
                else:
                    chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise ControlError(f"the daemon on {path} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"talking to the daemon on {path}: {exc.strerror or exc}") from None
        try:
            answer = json.loads(b"".join(chunks))
        except ValueError:
            raise ControlError(f"the daemon on {path} sent an answer that is not JSON") from None
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ControlError(f"the daemon on {path} sent an unexpected answer")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        sock.close()
    return answer, fds
