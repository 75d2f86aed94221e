"""TCP services and file-transfer sessions, polled by the runtime loop like :class:`UdpEchoService`.

Owns the application side of the daemon's TCP ports and of the ``pystack
send`` / ``recv`` clients: what each connection does with its bytes.  Four
services, each a listening :class:`~pystack.transport.tcp.socket.TcpSocket` that
serves any number of clients at once:

* :class:`TcpEchoService` -- RFC 862 (TCP based): "any data received is sent
  back", until the client closes; then we close.
* :class:`TcpDiscardService` -- RFC 863: "any data received is thrown away".
* :class:`TcpSourceService` -- sends a file, N bytes of the RFC 864 character
  pattern, or (no size) that pattern until the client closes (RFC 864
  "Character Generator": "Data received is thrown away"); after a bounded
  transfer it half-closes (FIN), keeps discarding input, and closes when the
  client does -- so the source, having closed first, holds the TIME-WAIT.
* :class:`TcpSinkService` -- reads each client to its FIN; with a directory,
  writes each connection to a file of its own there (decision: one file per
  connection, ``sink-PORT-N.bin``, so concurrent clients never interleave and
  every file's SHA-256 can be compared with what its client sent); logs
  bytes, seconds, MB/s and SHA-256 when the client closes.

Theory of operation
-------------------
The loop calls :meth:`TcpService.poll` once per iteration, after the frames
of the iteration were received and before the flush: it accepts what waits
in the listener's queue, then lets every *ready* session move what it can
without waiting (non-blocking sockets: BlockingIOError ends a session's
turn).  A session that finished (or failed) is closed and dropped, and its
record (peer, bytes, seconds, MB/s, SHA-256, error) kept in
:attr:`TcpService.history`.

*Readiness (decision).*  Stepping every session on every iteration made an
iteration cost O(sessions) -- about a millisecond and a half for a thousand
idle echo clients, most of it BlockingIOErrors.  So a service steps only
the sessions something happened to, as epoll would tell a server
(epoll(7)): the layer's hooks ``_note_readable`` (data or EOF arrived),
``_note_writable`` (send-buffer room) and ``_state_changed`` (established,
reset, timed out, closed) are wrapped once per layer (:class:`_Readiness`;
the wrappers call what was there before, so another runtime may wrap them
too), and each marks the connection's session ready.  A new session is
ready; a session whose turn moved bytes stays ready for the next iteration
(it may have more: :data:`TURN_BYTES` ended its turn, or its peer answers
at once); a session whose turn moved nothing waits for the next event.
This needs nothing from the session classes, so subclasses elsewhere
(:mod:`pystack.services.http`) work unchanged.

*Bounded turns.*  A session moves at most :data:`TURN_BYTES` per poll in each
direction, so one fast client cannot starve the others or the loop's own
work (the flush, the control socket).

*File I/O at the edge (decision).*  Reading a source file and writing a sink
file is I/O, so it lives here, in the services, not in the sans-I/O stack.
It runs in the loop thread, in chunks of at most :data:`CHUNK` bytes: a
regular file's read/write goes to the page cache and does not wait on the
network, so a bounded chunk costs microseconds to a millisecond, less than
a read batch.  A thread per file would add a hand-off for every chunk and
make the ordering of bytes and FIN harder to reason about, for no gain at
the rates a Python stack reaches.  (A sink on a slow or network filesystem
would stall the loop: point it at a local disk or tmpfs.)

*Time.*  Only for the logs (seconds, MB/s): the service takes a ``clock``
(seconds, float; ``time.monotonic`` by default) so tests can inject one.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable

from pystack.transport.tcp.socket import SHUT_WR, TcpSocket

log = logging.getLogger("pystack.services")

#: RFC 862 / 863 / 864 ports (the daemon lets the user choose others).
ECHO_PORT, DISCARD_PORT, CHARGEN_PORT = 7, 9, 19
#: Bytes read or written per call; also the size of a session's receive buffer.
CHUNK = 64 * 1024
#: Bytes a session moves per poll in each direction (see "Bounded turns").
TURN_BYTES = 1024 * 1024
#: Finished transfers kept per service for ``status``.
HISTORY = 32


def chargen_cycle() -> bytes:
    """RFC 864's suggested pattern: lines of 72 printable ASCII characters (codes 32..126)
    plus CR LF, each line starting one character further along; after 95 lines it repeats."""
    chars = bytes(range(32, 127))
    lines = [(chars[i:] + chars[:i])[:72] + b"\r\n" for i in range(len(chars))]
    return b"".join(lines)


_CHARGEN = chargen_cycle()

_SIZE = re.compile(r"^(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1 << 20, "mb": 1000 ** 2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30}


def parse_size(text: str) -> int | None:
    """``"65536"``, ``"64KiB"``, ``"64k"``, ``"1MB"`` -> bytes; None when ``text`` is not a size.

    K/M/G and KiB/MiB/GiB are powers of 1024; kB/MB/GB powers of 1000.
    """
    m = _SIZE.match(text.strip())
    if m is None:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


# -- producers: what a sending session sends ---------------------------------------------------

class ChargenProducer:
    """The RFC 864 pattern, ``size`` bytes of it (None: without end)."""

    def __init__(self, size: int | None) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"size must be an int >= 0 or None, got {size!r}")
        self.remaining = size
        self._pos = 0
        self._cycle = _CHARGEN * (1 + CHUNK // len(_CHARGEN) + 1)

    def read(self, n: int) -> bytes:
        if self.remaining is not None:
            n = min(n, self.remaining)
            self.remaining -= n
        n = min(n, CHUNK)
        pos = self._pos
        out = self._cycle[pos:pos + n]
        self._pos = (pos + n) % len(_CHARGEN)
        return out

    def close(self) -> None:
        pass


class FileProducer:
    """The bytes of a file, read in chunks (opened here; OSError if it cannot be read)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by close()

    def read(self, n: int) -> bytes:
        return self._f.read(min(n, CHUNK))

    def close(self) -> None:
        self._f.close()


# -- sessions: one connection each ------------------------------------------------------------------

class Session:
    """One connection of a service (or of a client command).

    Subclasses implement :meth:`_turn`, which returns True once the session
    is done.  Counters: ``bytes_in``, ``bytes_out``; ``sha256`` hashes the
    bytes the session is about (received for a sink, sent for a source).
    """

    kind = "session"

    def __init__(self, sock: TcpSocket, peer: tuple[str, int], clock: Callable[[], float]) -> None:
        self.sock = sock
        self.peer = peer
        self.clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.sha256 = hashlib.sha256()
        self.error: str | None = None
        self.errno = 0
        self.done = False

    def step(self) -> bool:
        """Move what can move now; True when the session is over (and closed)."""
        if self.done:
            return True
        try:
            if self.sock.error:  # ECONNREFUSED, ECONNRESET, ETIMEDOUT: reported before anything else
                code = self.sock.take_error()
                raise OSError(code, os.strerror(code))
            finished = self._turn()
        except OSError as exc:  # ECONNRESET, ETIMEDOUT, EPIPE, ECONNREFUSED...: the peer went away
            self.error = exc.strerror or str(exc)
            self.errno = exc.errno
            finished = True
        if finished:
            self.finish()
        return finished

    def _turn(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """Close the socket (abort on error) and stop the clock.  Idempotent."""
        if self.done:
            return
        self.done = True
        self.ended = self.clock()
        if self.error is not None:
            self.sock.abort()
        else:
            self.sock.close()
        self._release()

    def _release(self) -> None:
        pass

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else self.clock()) - self.started

    def record(self) -> dict:
        """What the logs and ``status`` say about this session."""
        secs = self.seconds
        moved = max(self.bytes_in, self.bytes_out)
        return {"peer": "%s:%d" % self.peer, "kind": self.kind, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "seconds": round(secs, 6),
                "mb_per_s": round(moved / secs / 1e6, 3) if secs > 0 else None,
                "sha256": self.sha256.hexdigest(), "error": self.error}

    # helpers for subclasses

    def _drain(self, buf: bytearray, sink=None) -> bool:
        """Read up to TURN_BYTES; hand each chunk to ``sink(view)``; True at end of stream."""
        sock = self.sock
        view = memoryview(buf)
        moved = 0
        while moved < TURN_BYTES:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                return False
            if n == 0:
                return True
            moved += n
            self.bytes_in += n
            if sink is not None:
                sink(view[:n])
        return False


class EchoSession(Session):
    """RFC 862: what comes in goes back out; when the client closes, close after the echo."""

    kind = "echo"

    def __init__(self, sock, peer, clock) -> None:
        super().__init__(sock, peer, clock)
        self._pending = b""
        self._eof = False

    def _turn(self) -> bool:
        sock = self.sock
        moved = 0
        while moved < TURN_BYTES:
            if self._pending:
                try:
                    n = sock.send(self._pending)
                except BlockingIOError:
                    return False
                self.bytes_out += n
                moved += n
                self._pending = self._pending[n:]
                continue
            if self._eof:
                return True
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                return False
            if not data:
                self._eof = True
                continue
            self.bytes_in += len(data)
            self.sha256.update(data)
            self._pending = memoryview(data)
        return False


class DiscardSession(Session):
    """RFC 863: read and forget; close when the client does."""

    kind = "discard"

    def __init__(self, sock, peer, clock) -> None:
        super().__init__(sock, peer, clock)
        self._buf = bytearray(CHUNK)

    def _turn(self) -> bool:
        return self._drain(self._buf, self.sha256.update)


class SinkSession(Session):
    """Read to the client's FIN, writing each chunk to ``path`` (None: hash only), then close."""

    kind = "sink"

    def __init__(self, sock, peer, clock, path: str | None = None) -> None:
        super().__init__(sock, peer, clock)
        self.path = path
        self._buf = bytearray(CHUNK)
        self._fd = (os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                    if path is not None else None)

    def _write(self, view) -> None:
        self.sha256.update(view)
        fd = self._fd
        if fd is not None:
            while view:
                view = view[os.write(fd, view):]

    def _turn(self) -> bool:
        return self._drain(self._buf, self._write)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def record(self) -> dict:
        return {**super().record(), "file": self.path}


class SourceSession(Session):
    """Send what ``producer`` gives, then half-close (FIN) and discard input until the
    client closes (RFC 864: "Data received is thrown away")."""

    kind = "source"

    def __init__(self, sock, peer, clock, producer) -> None:
        super().__init__(sock, peer, clock)
        self.producer = producer
        self._pending = b""
        self._exhausted = False
        self._shut = False
        self._peer_eof = False
        self._buf = bytearray(CHUNK)

    def _turn(self) -> bool:
        sock = self.sock
        moved = 0
        while not self._shut and moved < TURN_BYTES:
            if not self._pending:
                if not self._exhausted:
                    chunk = self.producer.read(CHUNK)
                    if chunk:
                        self.sha256.update(chunk)
                        self._pending = memoryview(chunk)
                    else:
                        self._exhausted = True
                if self._exhausted:
                    if sock.state == "SYN-SENT":
                        break  # a client with nothing to send: FIN once connected
                    sock.shutdown(SHUT_WR)  # FIN after the queued data (RFC 9293 §3.10.4)
                    self._shut = True
                    break
            try:
                n = sock.send(self._pending)
            except BlockingIOError:
                break
            self.bytes_out += n
            moved += n
            self._pending = self._pending[n:]
        if not self._peer_eof:
            # The client's bytes are thrown away.  Its FIN ends an endless source;
            # a bounded one still sends the rest (a half-close is only a half).
            self._peer_eof = self._drain(self._buf)
        return self._peer_eof and (self._shut or getattr(self.producer, "remaining", 0) is None)

    def _release(self) -> None:
        self.producer.close()


# -- services ----------------------------------------------------------------------------------------

class _Readiness:
    """The readiness events of one TcpLayer, for the services on it (see "Readiness").

    ``owner`` maps each served connection to the ready set (a dict used as
    an ordered set) of the service it belongs to; the wrapped hooks add the
    connection to that set.  One per layer, made by the first service that
    accepts a connection (:meth:`of`), kept on the layer.
    """

    __slots__ = ("owner",)

    def __init__(self, layer) -> None:
        owner: dict = {}
        self.owner = owner
        get = owner.get

        def wrap(prev):
            def hook(conn, *args):
                prev(conn, *args)
                ready = get(conn)
                if ready is not None:
                    ready[conn] = None
            return hook

        # The layer calls these through the instance, so instance attributes
        # take effect at once; each wrapper calls what was installed before.
        layer._note_readable = wrap(layer._note_readable)
        layer._note_writable = wrap(layer._note_writable)
        layer._state_changed = wrap(layer._state_changed)

    @classmethod
    def of(cls, layer) -> _Readiness:
        events = layer.__dict__.get("_service_readiness")
        if events is None:
            events = layer._service_readiness = cls(layer)
        return events


class TcpService:
    """A listening socket and its sessions (see the module docstring).

    ``listener`` is a bound, listening TcpSocket; :meth:`_open` makes the
    session of each accepted connection.
    """

    kind = "tcp"

    def __init__(self, listener: TcpSocket, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(listener, TcpSocket):
            raise TypeError(f"{type(self).__name__} needs a pystack TcpSocket, not {type(listener).__name__}")
        if listener.state != "LISTEN":
            raise ValueError(f"{type(self).__name__} needs a listening socket, not one in {listener.state}")
        self.listener = listener
        self.port = listener.local[1]
        self.clock = clock
        self.sessions: list[Session] = []
        self._by_conn: dict = {}  # TcpConnection -> its Session
        self._ready: dict = {}  # connections whose session should step (an ordered set)
        self._events: _Readiness | None = None
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.accepted = 0
        self.completed = 0
        self.failed = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def name(self) -> str:
        return f"tcp-{self.kind}:{self.port}"

    def _open(self, sock: TcpSocket, peer: tuple[str, int]) -> Session:
        raise NotImplementedError

    def poll(self) -> int:
        """Accept waiting clients and move the ready sessions' bytes; returns sessions finished."""
        lst = self.listener
        ready = self._ready
        while lst.readable:
            try:
                sock, peer = lst.accept()
            except BlockingIOError:
                break
            self.accepted += 1
            try:
                session = self._open(sock, peer)
            except OSError as exc:  # a sink file that cannot be created: refuse this client
                log.error("%s: cannot serve %s:%d: %s", self.name, *peer, exc.strerror or exc)
                self.failed += 1
                sock.abort()
                continue
            self.sessions.append(session)
            conn = sock.connection
            if self._events is None:
                self._events = _Readiness.of(conn.layer)
            self._events.owner[conn] = ready
            self._by_conn[conn] = session
            ready[conn] = None  # data may have arrived before the accept
        if not ready:
            return 0
        finished = 0
        by_conn = self._by_conn
        owner = self._events.owner
        conns = list(ready)
        ready.clear()
        for k, conn in enumerate(conns):
            s = by_conn.get(conn)
            if s is None:
                continue  # an event after its session ended
            moved = s.bytes_in + s.bytes_out
            try:
                over = s.step()
            except BaseException:
                # A bug in a session (the loop logs it): the sessions after
                # it keep their turn for the next iteration.
                for later in conns[k + 1:]:
                    ready[later] = None
                raise
            if over:
                finished += 1
                del by_conn[conn]
                owner.pop(conn, None)
                ready.pop(conn, None)  # its own close was an event
                self._ended(s)
            elif s.bytes_in + s.bytes_out != moved:
                ready[conn] = None  # it moved bytes: it may have more (see "Readiness")
        if finished:
            self.sessions = [s for s in self.sessions if not s.done]
        return finished

    def _ended(self, s: Session) -> None:
        rec = s.record()
        self.history.append(rec)
        self.bytes_in += s.bytes_in
        self.bytes_out += s.bytes_out
        if s.error is None:
            self.completed += 1
        else:
            self.failed += 1
        self._log(rec)

    def _log(self, rec: dict) -> None:
        if rec["error"] is not None:
            log.info("%s: %s failed after %d bytes in, %d out: %s", self.name, rec["peer"],
                     rec["bytes_in"], rec["bytes_out"], rec["error"])
        else:
            log.debug("%s: %s done, %d bytes in, %d out", self.name, rec["peer"], rec["bytes_in"],
                      rec["bytes_out"])

    def close(self) -> None:
        """Close the listener and every session (files are closed).  Idempotent."""
        self.listener.close()
        for s in self.sessions:
            s.error = s.error or "service stopped"
            s.finish()
            self._ended(s)
        self.sessions = []
        if self._events is not None:
            for conn in self._by_conn:
                self._events.owner.pop(conn, None)
        self._by_conn.clear()
        self._ready.clear()

    def status(self) -> dict:
        return {"service": self.name, "port": self.port, "accepted": self.accepted, "active": len(self.sessions),
                "completed": self.completed, "failed": self.failed, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "recent": list(self.history)}


class TcpEchoService(TcpService):
    kind = "echo"

    def _open(self, sock, peer):
        return EchoSession(sock, peer, self.clock)


class TcpDiscardService(TcpService):
    kind = "discard"

    def _open(self, sock, peer):
        return DiscardSession(sock, peer, self.clock)


class TcpSourceService(TcpService):
    """``path`` (a file) or ``size`` (bytes of RFC 864 pattern) or neither (the pattern without end)."""

    kind = "source"

    def __init__(self, listener, *, path: str | None = None, size: int | None = None, clock=time.monotonic):
        if path is not None and size is not None:
            raise ValueError("a source sends a file or a size, not both")
        if path is not None:
            FileProducer(path).close()  # fail now (OSError) rather than at the first client
        super().__init__(listener, clock=clock)
        self.path = path
        self.size = size

    def _open(self, sock, peer):
        producer = FileProducer(self.path) if self.path is not None else ChargenProducer(self.size)
        return SourceSession(sock, peer, self.clock, producer)

    def _log(self, rec: dict) -> None:
        if rec["error"] is None:
            log.info("%s: sent %d bytes to %s in %.3f s (%s MB/s), sha256 %s", self.name, rec["bytes_out"],
                     rec["peer"], rec["seconds"], rec["mb_per_s"], rec["sha256"])
        else:
            super()._log(rec)


class TcpSinkService(TcpService):
    """Each connection to ``directory/sink-PORT-N.bin`` (created); None: hash and count only."""

    kind = "sink"

    def __init__(self, listener, *, directory: str | None = None, clock=time.monotonic):
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "cannot write in the sink directory", directory)
        super().__init__(listener, clock=clock)
        self.directory = directory

    def _open(self, sock, peer):
        path = None
        if self.directory is not None:
            path = os.path.join(self.directory, f"sink-{self.port}-{self.accepted}.bin")
        return SinkSession(sock, peer, self.clock, path)

    def _log(self, rec: dict) -> None:
        if rec["error"] is None:
            log.info("%s: received %d bytes from %s in %.3f s (%s MB/s), sha256 %s%s", self.name,
                     rec["bytes_in"], rec["peer"], rec["seconds"], rec["mb_per_s"], rec["sha256"],
                     f", written to {rec['file']}" if rec.get("file") else "")
        else:
            super()._log(rec)


def listen(layer, port: int, backlog: int = 256) -> TcpSocket:
    """A socket of ``layer`` listening on ``port`` (all of the interface's addresses)."""
    sock = layer.socket()
    try:
        sock.bind(("", port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["CHARGEN_PORT", "DISCARD_PORT", "ECHO_PORT", "ChargenProducer", "DiscardSession", "EchoSession",
           "FileProducer", "Session", "SinkSession", "SourceSession", "TcpDiscardService", "TcpEchoService",
           "TcpService", "TcpSinkService", "TcpSourceService", "chargen_cycle", "listen", "parse_size"]


class TcpClient:
    """A client command's one session on a connecting socket, polled like a service.

    Calls ``on_done(self)`` once the session is over and the connection has
    finished its close (CLOSED or TIME-WAIT; at most ``linger_s`` after the
    session ended, so our last ACK or FIN leaves before the process does).
    Fails the session when the handshake has not completed within
    ``connect_timeout_s``.  Times here are the loop's: monotonic µs.
    """

    def __init__(self, session: Session, on_done: Callable[[TcpClient], None], *,
                 connect_timeout_s: float = 10.0, linger_s: float = 2.0) -> None:
        self.session = session
        self.on_done = on_done
        self._now = lambda: time.monotonic_ns() // 1000
        self._connect_by: int | None = self._now() + int(connect_timeout_s * 1e6)
        self._linger_us = int(linger_s * 1e6)
        self._linger_until: int | None = None
        self.finished = False

    @property
    def name(self) -> str:
        return f"tcp-{self.session.kind}-client"

    def poll(self) -> None:
        if self.finished:
            return
        s = self.session
        now = self._now()
        if not s.done:
            state = s.sock.state
            if self._connect_by is not None:
                if state in ("SYN-SENT", "SYN-RECEIVED"):
                    if now >= self._connect_by:
                        s.error, s.errno = os.strerror(errno.ETIMEDOUT) + " (connecting)", errno.ETIMEDOUT
                        s.finish()
                else:
                    self._connect_by = None
            if not s.done:
                s.step()
            if not s.done:
                return
            self._linger_until = now + self._linger_us
        conn = s.sock.connection
        if (s.error is None and conn is not None and conn.state.label not in ("CLOSED", "TIME-WAIT")
                and now < self._linger_until):
            return
        self.finished = True
        self.on_done(self)

    def poll_at(self) -> int | None:
        if self.finished:
            return None
        if self.session.done:
            return self._linger_until
        return self._connect_by


__all__ += ["TcpClient"]
