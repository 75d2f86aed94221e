"""Batch frame I/O on a TAP fd, Cython twin of ``pystack.phy._tapio_py``.

Same API and behaviour as the pure twin, whose docstrings hold the rules
(batch end, truncation, errors, the drain contract).  Here each loop of
read(2) or write(2) calls runs with the GIL released, one release per batch:
a TAP hands over one frame per call (drivers/net/tun.c, ``tun_do_read`` and
``tun_get_user``), so a batch costs one syscall per frame but no Python
work per frame.

EINTR leaves the GIL-free loop to run the Python signal handlers, then
resumes (PEP 475, as ``os.read`` does): a handler that raises -- Ctrl-C --
ends the call, even on an fd that was wrongly left blocking.
"""

from operator import index as _index
from os import strerror

from pystack._numpy import numpy as _numpy

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EINTR, ENOBUFS, errno
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdint cimport int32_t
from posix.unistd cimport read, write

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from *:
    """
    #include <errno.h>
    /* POSIX lets EWOULDBLOCK differ from EAGAIN; on Linux they are equal, so
       this is written in C, where "a == x || a == x" compiles (a switch would not). */
    static inline int pystack_would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }
    """
    bint pystack_would_block(int err) noexcept nogil


cdef int _raise_errno(int err) except -1:
    # OSError(errno, text) builds the errno's subclass (BlockingIOError, ...), PEP 3151.
    raise OSError(err, strerror(err))


cdef inline object _as_int(object value):
    # Any integer (int, bool, numpy integer) as an exact int; TypeError for
    # anything else (a float is refused, never truncated).  Exact ints, every
    # ordinary call, skip the __index__ lookup.
    return value if PyLong_CheckExact(value) else _index(value)


cdef int _fd(object fd) except? -1:
    # The fd as a C int, checked as the pure twin checks it.
    cdef int overflow = 0
    cdef long long v
    fd = _as_int(fd)
    v = PyLong_AsLongLongAndOverflow(fd, &overflow)
    if overflow or v < INT_MIN or v > INT_MAX:
        raise OverflowError(f"fd {fd} does not fit in a C int")
    return <int>v


cdef class FrameBatch:
    """Up to ``max_frames`` frames read from one fd into one preallocated buffer."""

    cdef readonly Py_ssize_t max_frames
    cdef readonly Py_ssize_t frame_size
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t truncated
    cdef readonly object buffer
    cdef readonly object offsets
    cdef readonly object lengths
    cdef object _view
    cdef unsigned char* _base
    cdef int32_t* _lens
    cdef int _pending_errno
    # Keep the typed views alive: _base and _lens point into them.
    cdef unsigned char[::1] _buf_mv
    cdef int32_t[::1] _lens_mv

    def __init__(self, max_frames=64, frame_size=2048):
        cdef unsigned char[::1] buf_mv
        cdef int32_t[::1] lens_mv
        # read() runs its loop without the GIL through raw pointers into the
        # buffers, so they must never change under it: a batch is set up
        # once (see the pure twin).
        if self._base != NULL:
            raise RuntimeError("FrameBatch.__init__ may run only once; make a new FrameBatch")
        # Sizes are checked as Python ints, so 2**70 is a ValueError, not an OverflowError.
        max_frames = _as_int(max_frames)
        frame_size = _as_int(frame_size)
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames}")
        if frame_size < 1 or frame_size > 0x7FFFFFFF:
            raise ValueError(f"frame_size must be in 1..{0x7FFFFFFF}, not {frame_size}")
        if max_frames > PY_SSIZE_T_MAX // frame_size:
            raise ValueError(f"max_frames * frame_size ({max_frames} * {frame_size}) is too large")
        # Allocate everything into locals first: if anything fails (MemoryError)
        # the batch keeps its empty state -- max_frames 0, no buffer -- in which
        # read() reads nothing, never sizes that disagree with the buffers.
        np = _numpy()  # imported on first use: importing pystack starts no thread
        buffer = np.zeros(max_frames * frame_size, dtype=np.uint8)
        offsets = np.arange(max_frames, dtype=np.int64) * frame_size
        lengths = np.zeros(max_frames, dtype=np.int32)
        view = memoryview(buffer)
        buf_mv = buffer
        lens_mv = lengths
        # Nothing below can fail.
        self.buffer = buffer
        self.offsets = offsets
        self.lengths = lengths
        self._view = view
        self._buf_mv = buf_mv
        self._lens_mv = lens_mv
        self._base = &buf_mv[0]
        self._lens = &lens_mv[0]
        self.count = 0
        self.truncated = 0
        self._pending_errno = 0
        self.frame_size = frame_size
        self.max_frames = max_frames

    def read(self, fd):
        """Read every waiting frame, up to ``max_frames``; return how many (see the pure twin)."""
        cdef int cfd = _fd(fd)
        cdef Py_ssize_t n = 0, got
        cdef Py_ssize_t fsize = self.frame_size, limit = self.max_frames
        cdef Py_ssize_t trunc = 0
        cdef int err = 0
        cdef bint interrupted = True
        cdef unsigned char* base = self._base
        cdef int32_t* lens = self._lens
        self.count = 0
        if self._pending_errno:
            err = self._pending_errno
            self._pending_errno = 0
            _raise_errno(err)
        while interrupted:
            interrupted = False
            with nogil:
                while n < limit:
                    got = read(cfd, base + n * fsize, <size_t>fsize)
                    if got > 0:
                        if got >= fsize:
                            got = fsize
                            trunc += 1
                        lens[n] = <int32_t>got
                        n += 1
                    elif got == 0:
                        break
                    else:
                        err = errno
                        if err == EINTR:
                            err = 0
                            interrupted = True
                        elif pystack_would_block(err):
                            err = 0
                        break
            if interrupted:
                PyErr_CheckSignals()
        self.count = n
        self.truncated += trunc
        if err:
            if n == 0:
                _raise_errno(err)
            self._pending_errno = err
        return n

    def frame(self, i):
        """Zero-copy view of frame ``i`` (0 <= i < count), valid until the next read."""
        cdef Py_ssize_t k, start
        cdef int overflow = 0
        i = _as_int(i)
        k = <Py_ssize_t>PyLong_AsLongLongAndOverflow(i, &overflow)
        if overflow or k < 0 or k >= self.count:
            raise IndexError(f"frame {i} out of range: the last read held {self.count}")
        start = k * self.frame_size
        return self._view[start:start + self._lens[k]]

    def frames(self):
        """Views of every frame the last read held, in arrival order."""
        cdef Py_ssize_t i, start
        cdef list out = []
        for i in range(self.count):
            start = i * self.frame_size
            out.append(self._view[start:start + self._lens[i]])
        return out

    def __repr__(self):
        return (f"FrameBatch(max_frames={self.max_frames}, frame_size={self.frame_size}, "
                f"count={self.count}, truncated={self.truncated})")


def write_batch(fd, frames):
    """Write each frame with one write(2), stopping at a full queue (see the pure twin)."""
    cdef int cfd = _fd(fd)
    cdef Py_ssize_t total
    cdef Py_ssize_t acquired = 0, n = 0, got
    cdef int err = 0
    cdef bint interrupted = True
    cdef Py_buffer* views
    if not isinstance(frames, (list, tuple)):
        frames = list(frames)
    total = len(frames)
    if total == 0:
        return 0
    views = <Py_buffer*>PyMem_Malloc(total * sizeof(Py_buffer))
    if views == NULL:
        raise MemoryError()
    try:
        # Acquire every buffer first (GIL held), so misuse raises before any write.
        while acquired < total:
            item = frames[acquired]
            if not PyObject_CheckBuffer(item):
                raise TypeError(f"write_batch: frame {acquired} is not bytes-like "
                                f"({type(item).__name__})")
            try:
                PyObject_GetBuffer(item, &views[acquired], PyBUF_SIMPLE)
            except Exception as exc:  # the exporter's own words: BufferError, ValueError...
                raise BufferError(f"write_batch: frame {acquired} is not a C-contiguous buffer") from exc
            acquired += 1
        while interrupted:
            interrupted = False
            with nogil:
                while n < total:
                    got = write(cfd, views[n].buf, <size_t>views[n].len)
                    if got >= 0:
                        n += 1
                        continue
                    err = errno
                    if err == EINTR:
                        err = 0
                        interrupted = True
                    elif pystack_would_block(err) or err == ENOBUFS:
                        err = 0
                    break
            if interrupted:
                PyErr_CheckSignals()
    finally:
        while acquired > 0:
            acquired -= 1
            PyBuffer_Release(&views[acquired])
        PyMem_Free(views)
    if err and n == 0:
        _raise_errno(err)
    return n
