"""Batch frame I/O on a TAP fd, pure-Python twin of ``pystack._fast.tapio``.

Owns moving many frames per call between a non-blocking fd and memory:
:class:`FrameBatch` reads every frame waiting on the fd into one
preallocated buffer, :func:`write_batch` writes a queue of frames.  Nothing
here parses a frame or owns the fd.

A TAP moves exactly one frame per read(2) or write(2) (drivers/net/tun.c:
``tun_do_read`` hands over one skb, ``tun_get_user`` builds one skb per
write), so a batch is a loop of syscalls; the Cython twin runs that loop
without the GIL.

Buffer layout (what the fast-path parsers take)::

    buffer  uint8[max_frames * frame_size]   slot i = buffer[i*frame_size : (i+1)*frame_size]
    offsets int64[max_frames]                offsets[i] == i * frame_size, never changes
    lengths int32[max_frames]                bytes of frame i; only lengths[:count] are meaningful

Rules both twins keep:

* A read ends at EAGAIN (queue empty), at ``max_frames`` frames, at an error,
  or at a read(2) returning 0 (end of file or an empty datagram; a TAP never
  returns one).  EINTR is retried.
* **Drain contract**: a read that returned ``max_frames`` may have left frames
  behind, and an edge-triggered epoll will not report them again; call
  ``read`` again, before waiting, until it returns fewer than ``max_frames``.
* **Truncation**: a TAP (like a datagram socket) cuts a frame longer than the
  buffer to the buffer's size and returns that size, so a frame of exactly
  ``frame_size`` bytes cannot be told from a cut one.  Every read(2) that
  filled its slot is counted in ``truncated`` (cumulative, since the batch was
  made) and the frame is still delivered; the parsers reject a cut frame by
  its IPv4 total length.  Choose ``frame_size >= MTU + 14 + 1`` (1515 for
  MTU 1500; the default 2048 is fine) so no whole frame fills a slot.
* **Errors**: an error other than EAGAIN/EINTR raises OSError (with its
  errno subclass) when no frame was read.  When frames were already read,
  ``read`` returns them and the *next* call raises the error before reading,
  so neither the frames nor a one-shot error (a socket's pending error) is
  lost.
* **Arguments**: ``fd``, ``max_frames``, ``frame_size`` and ``i`` take any
  integer (``int``, ``bool``, numpy integers: whatever ``operator.index``
  takes) and raise TypeError for anything else -- a float is never
  truncated.  Sizes out of range raise ValueError, an index out of range
  IndexError, an fd that does not fit a C int OverflowError.
* **Set up once**: ``__init__`` allocates every buffer before it changes the
  batch, so a failed one (MemoryError) leaves the empty batch a bare
  ``FrameBatch.__new__`` gives (``max_frames`` 0; ``read`` reads nothing).
  Calling it on a batch that was set up raises RuntimeError: the Cython
  twin's read loop runs without the GIL on pointers into the buffers, which
  must not be swapped under it.
"""

from __future__ import annotations

import errno as _errno
import operator
import os
import sys

from pystack._numpy import numpy as _numpy

_INT32_MAX = 0x7FFFFFFF
_C_INT_MIN = -(1 << 31)
_C_INT_MAX = (1 << 31) - 1


def _fd(fd) -> int:
    """``fd`` as an int that fits a C int, checked before any I/O, as the Cython twin does."""
    fd = operator.index(fd)
    if not _C_INT_MIN <= fd <= _C_INT_MAX:
        raise OverflowError(f"fd {fd} does not fit in a C int")
    return fd


class FrameBatch:
    """Up to ``max_frames`` frames read from one fd into one preallocated buffer."""

    __slots__ = ("_max_frames", "_frame_size", "_count", "_truncated", "_buffer", "_offsets",
                 "_lengths", "_lens_mv", "_view", "_iovs", "_pending_errno")

    def __new__(cls, *args, **kwargs):
        # The empty state, as the Cython twin's zeroed object starts: what a
        # batch keeps when __init__ fails.  read() then reads nothing.
        self = super().__new__(cls)
        self._max_frames = self._frame_size = self._count = self._truncated = 0
        self._pending_errno = 0
        self._buffer = self._offsets = self._lengths = self._lens_mv = self._view = None
        self._iovs = []
        return self

    def __init__(self, max_frames: int = 64, frame_size: int = 2048) -> None:
        if self._buffer is not None:
            raise RuntimeError("FrameBatch.__init__ may run only once; make a new FrameBatch")
        max_frames = operator.index(max_frames)
        frame_size = operator.index(frame_size)
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames}")
        if frame_size < 1 or frame_size > _INT32_MAX:
            raise ValueError(f"frame_size must be in 1..{_INT32_MAX}, not {frame_size}")
        if max_frames > sys.maxsize // frame_size:
            raise ValueError(f"max_frames * frame_size ({max_frames} * {frame_size}) is too large")
        # Allocate into locals first, so a MemoryError leaves the batch empty
        # rather than with sizes that disagree with its buffers.
        np = _numpy()  # imported on first use: importing pystack starts no thread
        buffer = np.zeros(max_frames * frame_size, dtype=np.uint8)
        offsets = np.arange(max_frames, dtype=np.int64) * frame_size
        lengths = np.zeros(max_frames, dtype=np.int32)
        lens_mv = memoryview(lengths)  # format "i": item stores skip numpy's boxing
        view = memoryview(buffer)
        # One single-slot iovec list per slot, made once: readv then fills a
        # slot in place and a read allocates nothing but its result int.
        iovs = [[view[i * frame_size:(i + 1) * frame_size]] for i in range(max_frames)]
        # Nothing below can fail.
        self._buffer = buffer
        self._offsets = offsets
        self._lengths = lengths
        self._lens_mv = lens_mv
        self._view = view
        self._iovs = iovs
        self._count = 0
        self._truncated = 0
        self._pending_errno = 0
        self._frame_size = frame_size
        self._max_frames = max_frames

    max_frames = property(lambda self: self._max_frames, doc="Slots in the buffer.")
    frame_size = property(lambda self: self._frame_size, doc="Bytes per slot.")
    count = property(lambda self: self._count, doc="Frames held by the last read.")
    truncated = property(lambda self: self._truncated,
                         doc="Reads that filled their slot (possibly cut frames), since creation.")
    buffer = property(lambda self: self._buffer, doc="uint8 array of max_frames * frame_size bytes.")
    offsets = property(lambda self: self._offsets, doc="int64 array, offsets[i] == i * frame_size.")
    lengths = property(lambda self: self._lengths, doc="int32 array; lengths[:count] are the frames'.")

    def read(self, fd: int) -> int:
        """Read every waiting frame, up to ``max_frames``, into consecutive slots.

        Returns the number read (0 when nothing was waiting), also kept in
        ``count``.  The module docstring gives the rules for the end of a
        batch, truncation, errors and draining.
        """
        fd = _fd(fd)
        self._count = 0
        if self._pending_errno:
            err, self._pending_errno = self._pending_errno, 0
            raise OSError(err, os.strerror(err))
        limit = self._max_frames
        fsize = self._frame_size
        iovs = self._iovs
        lens = self._lens_mv
        readv = os.readv
        n = 0
        trunc = 0
        try:
            while n < limit:
                got = readv(fd, iovs[n])  # PEP 475: retries EINTR itself
                if got == 0:
                    break
                if got >= fsize:
                    trunc += 1
                lens[n] = got
                n += 1
        except BlockingIOError:
            pass
        except OSError as exc:
            if n == 0:
                raise
            self._pending_errno = exc.errno or _errno.EIO
        self._count = n
        self._truncated += trunc
        return n

    def frame(self, i: int) -> memoryview:
        """Zero-copy view of frame ``i`` (0 <= i < count), valid until the next read."""
        i = operator.index(i)
        if i < 0 or i >= self._count:
            raise IndexError(f"frame {i} out of range: the last read held {self._count}")
        start = i * self._frame_size
        return self._view[start:start + self._lens_mv[i]]

    def frames(self) -> list[memoryview]:
        """Views of every frame the last read held, in arrival order."""
        view = self._view
        fsize = self._frame_size
        lens = self._lens_mv
        return [view[i * fsize:i * fsize + lens[i]] for i in range(self._count)]

    def __repr__(self) -> str:
        return (f"FrameBatch(max_frames={self._max_frames}, frame_size={self._frame_size}, "
                f"count={self._count}, truncated={self._truncated})")


def write_batch(fd: int, frames) -> int:
    """Write each frame of ``frames`` (an iterable of bytes-like objects) with one write(2).

    Returns how many frames, from the front, were written; the caller keeps
    the rest queued and retries when the fd is writable.  Stops early, without
    an error, when the device queue is full (EAGAIN, or ENOBUFS which a TAP
    returns when the kernel cannot take the frame now).  EINTR is retried.
    Another error raises OSError when it hit ``frames[0]``; when frames were
    already written, the count is returned and the error, if it persists, is
    raised by the next call, which starts with the frame that failed -- so an
    OSError always concerns the caller's first queued frame.  An item that is
    not bytes-like raises TypeError, one that is not C-contiguous BufferError,
    before anything is written.
    """
    fd = _fd(fd)
    views = []
    for frame in frames:
        try:
            view = memoryview(frame)
        except TypeError:
            raise TypeError(f"write_batch: frame {len(views)} is not bytes-like "
                            f"({type(frame).__name__})") from None
        if not view.c_contiguous:
            raise BufferError(f"write_batch: frame {len(views)} is not a C-contiguous buffer")
        views.append(view)
    write = os.write
    n = 0
    try:
        for frame in views:
            write(fd, frame)  # a TAP or datagram socket takes all of a frame or none
            n += 1
    except BlockingIOError:
        pass
    except OSError as exc:
        if n == 0 and exc.errno != _errno.ENOBUFS:
            raise
    return n
