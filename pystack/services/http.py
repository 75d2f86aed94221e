"""HTTP/1.1 static file service: GET and HEAD of the files under one directory.

Owns the daemon's ``--http PORT[:DIR]``: the request parser, the response
heads, the mapping of a request target to a file, and streaming that file
over a pystack TCP connection.  It is a :class:`~pystack.services.tcp.TcpService`
like the others: sans-I/O sessions polled by the loop, file reads at the edge
in chunks of :data:`~pystack.services.tcp.CHUNK` bytes.

What it does (RFC 9110 semantics, RFC 9112 message syntax):

* Request line ``method SP request-target SP HTTP-version`` (RFC 9112 §3);
  one empty line before it is ignored (§2.2).  A malformed line or header
  field (no colon, whitespace before the colon: §5.1) is 400 and the
  connection closes (§2.2: the framing can no longer be trusted).
* GET and HEAD (RFC 9110 §9.3.1, §9.3.2: HEAD is GET without the content,
  the same header fields); any other method is 405 with ``Allow`` (§15.5.6).
  An HTTP/1.1 request without ``Host`` is 400 (RFC 9112 §3.2).  A major
  version other than 1 is 505 (RFC 9110 §15.6.6).
* Bounded head (RFC 9110 §15.5.15, RFC 6585 §5): a request line over
  :data:`MAX_LINE` bytes is 414; a head (line plus fields) over
  :data:`MAX_HEAD` bytes is 431; both close the connection.
* ``Content-Length`` on every response (RFC 9110 §8.6), ``Content-Type`` by
  extension (:mod:`mimetypes`; ``application/octet-stream`` otherwise),
  ``Last-Modified`` (§8.8.2), ``Date`` (§6.6.1).
* Persistence (RFC 9112 §9.3): HTTP/1.1 keeps the connection unless a
  ``close`` connection option is present; HTTP/1.0 closes unless
  ``keep-alive`` is.  Requests that arrive together (pipelining, §9.3.2) are
  answered in order, one after another.  A request with content
  (``Content-Length``) has it read and discarded; ``Transfer-Encoding`` in a
  request is 501 and closes (we do not decode chunked content: §6.1 allows
  refusing it with 501... and closing, §6.3).
* Closing (RFC 9112 §9.6): after the last response we half-close (FIN) and
  keep reading and discarding until the client closes, so a client's late
  bytes never turn our close into a reset that would destroy the response.
* No escape from DIR: the target's path is percent-decoded, any ``..``
  segment or NUL is 404, and the resolved path (symbolic links followed)
  must stay inside the resolved DIR, else 403.  A directory is served as its
  ``index.html`` when there is one, else 404 (no listings).
* Flow control: a response is sent as the connection accepts it (the TCP
  socket's send buffer; BlockingIOError ends the turn), reading the file one
  chunk ahead at most; no further request is read while a response is in
  flight beyond :data:`MAX_HEAD` bytes of buffered input.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import os
import posixpath
import time
from urllib.parse import unquote_to_bytes

from pystack.services.tcp import CHUNK, TURN_BYTES, Session, TcpService
from pystack.transport.tcp.socket import SHUT_WR

log = logging.getLogger("pystack.services")

#: Longest request line accepted (bytes, CRLF excluded); longer is 414.
MAX_LINE = 8 * 1024
#: Longest request head (line and fields, up to the empty line); longer is 431.
MAX_HEAD = 16 * 1024
#: Header fields accepted in one request; more is 431.
MAX_FIELDS = 100

REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           414: "URI Too Long", 431: "Request Header Fields Too Large", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Request:
    """A parsed request head: method, target, version (1, minor), fields (lower-case names)."""

    __slots__ = ("method", "target", "version", "fields")

    def __init__(self, method: str, target: str, version: tuple[int, int], fields: dict[str, str]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields

    def connection_options(self) -> set[str]:
        return {t.strip().lower() for t in self.fields.get("connection", "").split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: persistent by default in 1.1; 1.0 only with ``keep-alive``."""
        opts = self.connection_options()
        if "close" in opts:
            return False
        return self.version >= (1, 1) or "keep-alive" in opts


class HttpError(Exception):
    """A request answered with an error status (and, for framing errors, a close)."""

    def __init__(self, status: int, close: bool = True) -> None:
        super().__init__(status)
        self.status = status
        self.close = close


def parse_head(head: bytes) -> Request:
    """Parse a request head (without the final empty line); HttpError on a malformed one."""
    lines = head.split(b"\r\n")
    if lines and lines[0] == b"":  # RFC 9112 §2.2: ignore an empty line before the request line
        lines = lines[1:]
    if not lines:
        raise HttpError(400)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400)  # RFC 9112 §3: exactly three parts separated by single spaces
    method, target, version = parts
    if not set(method) <= _TOKEN:
        raise HttpError(400)
    if (len(version) != 8 or not version.startswith(b"HTTP/") or version[6:7] != b"."
            or not version[5:6].isdigit() or not version[7:8].isdigit()):
        raise HttpError(400)  # RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT
    major, minor = version[5] - 48, version[7] - 48
    if major != 1:
        raise HttpError(505)
    if len(lines) - 1 > MAX_FIELDS:
        raise HttpError(431)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TOKEN:
            raise HttpError(400)  # RFC 9112 §5.1: no whitespace between name and colon
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text  # RFC 9110 §5.3
    try:
        target_text = target.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400) from None
    req = Request(method.decode("ascii"), target_text, (major, minor), fields)
    if req.version >= (1, 1) and "host" not in fields:
        raise HttpError(400)  # RFC 9112 §3.2
    return req


def resolve(root: str, target: str) -> tuple[int, str | None]:
    """Map a request target to a regular file under ``root`` (already resolved): (status, path)."""
    if target.startswith(("http://", "https://")):  # absolute-form, RFC 9112 §3.2.2
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not target.startswith("/"):
        return 400, None  # origin-form (RFC 9112 §3.2.1); "*" is only for OPTIONS
    path = target.split("?", 1)[0].split("#", 1)[0]
    raw = unquote_to_bytes(path)
    if b"\0" in raw:
        return 404, None
    try:
        text = os.fsdecode(raw)
    except UnicodeDecodeError:
        return 404, None
    segments = [s for s in text.split("/") if s not in ("", ".")]
    if ".." in segments:
        return 404, None  # never climb, even when the result would land inside root
    full = os.path.join(root, *segments) if segments else root
    real = os.path.realpath(full)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        return 403, None  # a symbolic link out of root
    if os.path.isdir(real):
        real = os.path.join(real, "index.html")
        if os.path.realpath(real) != real and not os.path.realpath(real).startswith(root.rstrip("/") + "/"):
            return 403, None
    if not os.path.isfile(real):
        return 404, None
    return 200, real


def content_type(path: str) -> str:
    ctype, encoding = mimetypes.guess_type(posixpath.basename(path))
    if ctype is None or encoding is not None:  # a .gz is not text/plain with an encoding
        return "application/octet-stream"
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return ctype


class HttpSession(Session):
    """One connection: requests answered in order until one closes it or the client does."""

    kind = "http"

    def __init__(self, sock, peer, clock, root: str, service: HttpService | None = None) -> None:
        super().__init__(sock, peer, clock)
        self.root = root
        self.service = service
        self.requests = 0
        self._in = bytearray()
        self._skip = 0           # request content still to discard
        self._out = memoryview(b"")
        self._file = None        # the body being sent
        self._left = 0
        self._close_after = False
        self._closing = False    # FIN sent, discarding until the client's
        self._eof = False
        self._buf = bytearray(CHUNK)

    # -- reading ---------------------------------------------------------------------------------

    def _read(self) -> bool:
        """Read what is there (bounded); True when something new arrived or EOF."""
        try:
            n = self.sock.recv_into(self._buf)
        except BlockingIOError:
            return False
        if n == 0:
            self._eof = True
            return True
        self.bytes_in += n
        self._in += memoryview(self._buf)[:n]
        return True

    def _next_request(self) -> bool:
        """Parse one request from the input if a whole head is there; True when one was started."""
        if self._skip:
            k = min(self._skip, len(self._in))
            del self._in[:k]
            self._skip -= k
            if self._skip:
                return False
        end = self._in.find(b"\r\n\r\n")
        line_end = self._in.find(b"\r\n")
        if (line_end < 0 and len(self._in) > MAX_LINE) or line_end > MAX_LINE:
            self._error(414)
            return True
        if end < 0:
            if len(self._in) > MAX_HEAD:
                self._error(431)
                return True
            if self._in == b"\r\n":
                return False
            return False
        if end + 4 > MAX_HEAD:
            self._error(431)
            return True
        head = bytes(self._in[:end])
        del self._in[:end + 4]
        try:
            req = parse_head(head)
        except HttpError as exc:
            self._error(exc.status)
            return True
        self._answer(req)
        return True

    # -- responding --------------------------------------------------------------------------------

    def _head(self, status: int, fields: list[tuple[str, str]], close: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Date: {email.utils.formatdate(usegmt=True)}",
                 "Server: pystack", *(f"{k}: {v}" for k, v in fields),
                 f"Connection: {'close' if close else 'keep-alive'}", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _error(self, status: int, *, close: bool = True, head_only: bool = False,
               extra: list[tuple[str, str]] = ()) -> None:
        body = f"{status} {REASONS[status]}\n".encode()
        fields = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra]
        self._count(status)
        self._out = memoryview(self._head(status, fields, close) + (b"" if head_only else body))
        self._close_after = self._close_after or close

    def _count(self, status: int) -> None:
        self.requests += 1
        if self.service is not None:
            self.service.requests += 1
            self.service.statuses[status] = self.service.statuses.get(status, 0) + 1

    def _answer(self, req: Request) -> None:
        keep = req.keep_alive
        head_only = req.method == "HEAD"
        if "transfer-encoding" in req.fields:
            self._error(501)  # RFC 9112 §6.1: we do not decode request content codings; close
            return
        length = req.fields.get("content-length")
        if length is not None:
            if not length.isdigit():
                self._error(400)  # RFC 9112 §6.3 item 5: an invalid length is unrecoverable
                return
            self._skip = int(length)
        if req.method not in ("GET", "HEAD"):
            self._error(405, close=not keep, head_only=False, extra=[("Allow", "GET, HEAD")])
            return
        status, path = resolve(self.root, req.target)
        if status != 200:
            self._error(status, close=not keep or status == 400, head_only=head_only)
            return
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed when sent or in _release
            st = os.fstat(f.fileno())
        except OSError:
            self._error(403 if os.path.exists(path) else 404, close=not keep, head_only=head_only)
            return
        fields = [("Content-Type", content_type(path)), ("Content-Length", str(st.st_size)),
                  ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))]
        self._count(200)
        self._out = memoryview(self._head(200, fields, not keep))
        self._close_after = not keep
        if head_only or st.st_size == 0:
            f.close()
        else:
            self._file, self._left = f, st.st_size

    def _send(self, budget: int) -> int:
        """Send the response in flight; returns the bytes sent (stops on a full send buffer)."""
        sent = 0
        while sent < budget:
            if not self._out:
                if self._file is None:
                    break
                chunk = self._file.read(min(CHUNK, self._left))
                if not chunk:  # the file shrank under us: the framing is broken, close
                    self._left = 0
                    self._close_after = True
                if chunk:
                    self._left -= len(chunk)
                    self._out = memoryview(chunk)
                if self._left == 0:
                    self._file.close()
                    self._file = None
                if not chunk:
                    break
            try:
                n = self.sock.send(self._out)
            except BlockingIOError:
                break
            self._out = self._out[n:]
            self.bytes_out += n
            sent += n
        return sent

    @property
    def _sending(self) -> bool:
        return bool(self._out) or self._file is not None

    def _turn(self) -> bool:
        moved = 0
        while moved < TURN_BYTES:
            if self._closing:
                while not self._eof and self._read():
                    self._in.clear()  # RFC 9112 §9.6: read and discard until the client closes
                return self._eof
            if self._sending:
                n = self._send(TURN_BYTES - moved)
                moved += n
                if self._sending:
                    return False  # the send buffer is full: the client's window decides
                continue
            if self._close_after:
                self.sock.shutdown(SHUT_WR)  # FIN after the response (RFC 9293 §3.10.4)
                self._closing = True
                self._in.clear()
                continue
            if self._next_request():
                continue
            if self._eof:
                return True  # the client closed between requests (or mid-head: nothing to answer)
            if len(self._in) > MAX_HEAD + 2 * CHUNK or not self._read():
                return False
        return False

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self) -> dict:
        return {**super().record(), "requests": self.requests}


class HttpService(TcpService):
    """GET/HEAD of the files under ``directory`` (default: the current directory)."""

    kind = "http"

    def __init__(self, listener, *, directory: str | None = None, clock=time.monotonic) -> None:
        root = os.path.realpath(directory or os.getcwd())
        if not os.path.isdir(root):
            raise NotADirectoryError(20, "not a directory", directory)
        if not os.access(root, os.R_OK | os.X_OK):
            raise PermissionError(13, "cannot read the directory", directory)
        super().__init__(listener, clock=clock)
        self.root = root
        self.requests = 0
        self.statuses: dict[int, int] = {}

    def _open(self, sock, peer):
        return HttpSession(sock, peer, self.clock, self.root, self)

    def status(self) -> dict:
        return {**super().status(), "root": self.root, "requests": self.requests,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


__all__ = ["MAX_HEAD", "MAX_LINE", "HttpError", "HttpService", "HttpSession", "Request", "content_type",
           "parse_head", "resolve"]
