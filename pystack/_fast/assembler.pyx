"""TCP receive reassembly buffer, Cython twin of ``pystack.storage._assembler_py``.

Same API and behaviour as the pure twin; its module docstring explains the
model (absolute stream positions, ring slot ``p % size``, one copy in) and
the memory policy (the ring is allocated on the first insert, grows by
doubling, and is released whenever reading empties the buffer).  Here the
ring is a bytearray written through its ``unsigned char*`` (made with
``PyByteArray_FromStringAndSize(NULL, n)``: not zeroed, so an unused part
costs no resident memory) and the out-of-order ranges are a small sorted C
array of :c:type:`Range`, also allocated when first needed.
``insert_ptr`` (see ``assembler.pxd``) lets the TCP layer insert straight
from a frame buffer without building a Python object.
"""

from operator import index as _index

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

#: Largest capacity: the largest window TCP can offer is 65535 << 14 < 2**30
#: (RFC 7323 §2.3), and sequence comparison needs the window below 2**31
#: (RFC 7323 §2.3, RFC 9293 §3.4).
MAX_CAPACITY = 1 << 30
#: The first ring's size (or ``capacity`` when smaller): one page.
MIN_RING = 4096
cdef int64_t _MIN_RING = 4096

cdef uint64_t _SEQ_MASK = 0xFFFFFFFF


cdef object _as_int(str name, object value):
    # Any integer (int, bool, numpy integer) as an exact int, else TypeError;
    # as the pure twin.  The per-segment methods test PyLong_CheckExact
    # themselves and, for anything else, call themselves again with
    # _as_int's result: an exact int then costs one type comparison and the
    # argument is never reassigned (which costs reference counting).
    if PyLong_CheckExact(value):
        return value
    try:
        return _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


cdef inline int64_t _min64(int64_t a, int64_t b) noexcept:
    return a if a < b else b


cdef class Assembler:
    """Reassembles one TCP byte stream in a ring of ``capacity`` bytes.

    ``peek`` views are read-only and are invalidated by the next ``insert``,
    ``consume``, ``read`` or ``read_into``.
    """

    # Invariant (positions are absolute stream offsets, 0 = initial rcv_nxt):
    #   0 <= _read <= _nxt <= _read + _cap
    #   in-order unread data is [_read, _nxt), in ring slots p % _cap;
    #   _ranges[0:_count] is the out-of-order data, sorted, disjoint and not
    #   touching one another or the in-order data:
    #     _nxt < start0 < end0 < start1 < ... < end_last <= _read + _cap
    #   hence _count <= _cap // 2; and _count <= _max_ranges, kept by
    #   refusing new ranges, never by dropping held ones;
    #   stamps are unique, larger is more recent;
    #   _ooo == sum of (end - start) over the ranges;
    #   every held byte fits the ring: (last range end or _nxt) - _read <= _size;
    #   _ring points into _buf (len _size), which is never resized (growing
    #   makes a new one); _buf is None and _ring NULL (_size 0) only when
    #   nothing is held; _ranges is NULL until the first out-of-order insert
    #   and after a release.

    def __cinit__(self, capacity, rcv_nxt=0, max_ranges=32):
        capacity = _as_int("capacity", capacity)
        rcv_nxt = _as_int("rcv_nxt", rcv_nxt)
        max_ranges = _as_int("max_ranges", max_ranges)
        if not 0 < capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in 1..{MAX_CAPACITY}, got {capacity}")
        if not 0 <= rcv_nxt <= 0xFFFFFFFF:
            raise ValueError(f"rcv_nxt must be in 0..2**32-1, got {rcv_nxt}")
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be >= 1, got {max_ranges}")
        self._cap = capacity
        self._isn = rcv_nxt
        # No more than _cap // 2 ranges can exist (see the invariant), so a
        # limit above that is never reached and is clamped to save memory.
        self._max_ranges = min(max_ranges, max(capacity // 2, 1))
        self._ranges = NULL  # allocated by the first out-of-order insert
        self._buf = None  # the ring: allocated by the first insert
        self._ring = NULL
        self._rview = None
        self._size = 0
        self._hint = 0

    def __dealloc__(self):
        PyMem_Free(self._ranges)

    # -- state ---------------------------------------------------------------

    @property
    def capacity(self):
        return self._cap

    @property
    def allocated(self):
        """Bytes of ring allocated now (0 while nothing is held; at most ``capacity``)."""
        return self._size

    @property
    def rcv_nxt(self):
        return (self._isn + <uint64_t>self._nxt) & _SEQ_MASK

    @property
    def readable(self):
        return self._nxt - self._read

    @property
    def window(self):
        return self._cap - (self._nxt - self._read)

    @property
    def ooo_bytes(self):
        return self._ooo

    @property
    def range_count(self):
        return self._count

    @property
    def refused(self):
        return self._refused

    @property
    def dsack(self):
        if not self._has_dsack:
            return None
        return ((self._isn + <uint64_t>self._dsack_lo) & _SEQ_MASK,
                (self._isn + <uint64_t>self._dsack_hi) & _SEQ_MASK)

    # -- receiving -----------------------------------------------------------

    def insert(self, seq, data):
        """Store ``data`` (contiguous bytes-like) whose first byte has number ``seq``.

        Bytes before RCV.NXT and at or beyond RCV.NXT + window are trimmed
        (RFC 9293 §3.10.7.4).  What is left is merged with the held ranges;
        when it starts at RCV.NXT, RCV.NXT advances over every range that is
        now contiguous.  Out-of-order data that would start a new disjoint
        range while ``max_ranges`` are held is not stored (``refused`` + 1);
        in-order data is always stored.  :attr:`dsack` becomes the first
        block of ``data`` that had been received already (RFC 2883 §4).
        Returns how far RCV.NXT advanced.
        """
        cdef const unsigned char[::1] view
        cdef int overflow = 0
        cdef long long s
        if not PyLong_CheckExact(seq):
            return self.insert(_as_int("seq", seq), data)
        s = PyLong_AsLongLongAndOverflow(seq, &overflow)
        if overflow or s < 0 or <uint64_t>s > _SEQ_MASK:
            raise ValueError(f"seq must be in 0..2**32-1, got {seq}")
        if data is None:  # a typed memoryview would take None as empty data
            raise TypeError("data must be a bytes-like object, not None")
        try:
            view = data  # bytes, bytearray, a 'B' memoryview: no extra object
        except (ValueError, BufferError):
            # Other item formats, and non-contiguous views (which the cast
            # refuses with the same TypeError as the pure twin).
            view = memoryview(data).cast("B")
        cdef int64_t n = view.shape[0]
        if n == 0:
            return self.insert_ptr(<uint32_t>s, NULL, 0)
        return self.insert_ptr(<uint32_t>s, &view[0], n)

    cdef int64_t insert_ptr(self, uint32_t seq, const unsigned char* data, int64_t n) noexcept:
        """Insert ``n`` bytes at ``data`` with sequence number ``seq``; see ``insert``."""
        cdef int64_t nxt = self._nxt
        # RFC 9293 §3.4: the signed 32-bit distance from RCV.NXT.
        cdef int64_t start = nxt + <int32_t>(seq - self._isn - <uint32_t>nxt)
        cdef int64_t end = start + n
        cdef int64_t lo, hi, new_nxt, rs, re, new_s, new_e
        cdef Py_ssize_t i, j, k
        cdef Py_ssize_t count = self._count
        cdef Range* ranges = self._ranges
        # RFC 2883 §4: the first block of this segment that was already
        # received; below RCV.NXT comes first, held ranges after.
        self._has_dsack = start < nxt and n > 0
        if self._has_dsack:
            self._dsack_lo = start
            self._dsack_hi = _min64(end, nxt)
        lo = start if start > nxt else nxt
        hi = _min64(end, self._read + self._cap)  # RFC 9293 §3.10.7.4: trim to the window
        if lo >= hi:
            return 0
        if lo == nxt:
            if self._copy_in(data + (lo - start), lo, hi) < 0:
                self._refused += 1  # no memory for the ring: not stored (the peer resends)
                return 0
            # Advance over every held range the new data reaches or touches.
            new_nxt = hi
            k = 0
            while k < count:
                rs = ranges[k].start
                re = ranges[k].end
                if rs > new_nxt:
                    break
                if not self._has_dsack and rs < hi:
                    self._has_dsack = True
                    self._dsack_lo = rs
                    self._dsack_hi = _min64(re, hi)
                if re > new_nxt:
                    new_nxt = re
                self._ooo -= re - rs
                k += 1
            if k:
                memmove(ranges, ranges + k, (count - k) * sizeof(Range))
                self._count = count - k
            self._nxt = new_nxt
            return new_nxt - nxt
        # Out of order: merge with every range it overlaps or touches.
        i = 0
        while i < count and ranges[i].end < lo:
            i += 1
        j = i
        while j < count and ranges[j].start <= hi:
            j += 1
        if i == j and count >= self._max_ranges:
            self._refused += 1
            return 0
        if ranges == NULL:
            ranges = self._ranges = <Range*>PyMem_Malloc(self._max_ranges * sizeof(Range))
            if ranges == NULL:
                self._refused += 1  # no memory: not stored, as when refused (the peer resends)
                return 0
        if self._copy_in(data + (lo - start), lo, hi) < 0:
            self._refused += 1
            return 0
        self._clock += 1
        new_s = lo
        new_e = hi
        for k in range(i, j):
            rs = ranges[k].start
            re = ranges[k].end
            if not self._has_dsack and rs < hi and lo < re:
                self._has_dsack = True
                self._dsack_lo = rs if rs > lo else lo
                self._dsack_hi = _min64(re, hi)
            if rs < new_s:
                new_s = rs
            if re > new_e:
                new_e = re
            self._ooo -= re - rs
        if i == j:
            memmove(ranges + i + 1, ranges + i, (count - i) * sizeof(Range))
            self._count = count + 1
        elif j - i > 1:
            memmove(ranges + i + 1, ranges + j, (count - j) * sizeof(Range))
            self._count = count - (j - i - 1)
        ranges[i].start = new_s
        ranges[i].end = new_e
        ranges[i].stamp = self._clock
        self._ooo += new_e - new_s
        return 0

    cdef int _grow(self, int64_t need) noexcept:
        # A ring of at least need bytes, the held bytes moved to their slots
        # in it; -1 (nothing changed) when the memory cannot be had.
        cdef int64_t old_size = self._size
        cdef int64_t size = old_size * 2 if old_size else self._hint
        cdef int64_t p, end, o, q, n
        cdef unsigned char* ring
        if size < _MIN_RING:
            size = _MIN_RING
        while size < need:
            size <<= 1
        if size > self._cap:
            size = self._cap
        try:
            buf = PyByteArray_FromStringAndSize(NULL, size)
        except MemoryError:
            return -1
        ring = <unsigned char*>PyByteArray_AS_STRING(buf)
        if old_size:
            # Every held position, holes included: [_read, end of the last range or _nxt).
            p = self._read
            end = self._ranges[self._count - 1].end if self._count else self._nxt
            while p < end:
                o = p % old_size
                q = p % size
                n = _min64(_min64(end - p, old_size - o), size - q)
                memcpy(ring + q, self._ring + o, n)
                p += n
        self._buf = buf
        self._ring = ring
        self._rview = None
        self._size = size
        return 0

    cdef void _release_if_empty(self) noexcept:
        # Drop the ring (and the range array) when nothing is held.
        if self._size and self._read == self._nxt and self._count == 0:
            self._hint = self._size
            self._buf = None
            self._ring = NULL
            self._rview = None
            self._size = 0
            PyMem_Free(self._ranges)
            self._ranges = NULL

    cdef int _copy_in(self, const unsigned char* src, int64_t lo, int64_t hi) noexcept:
        # Copy hi - lo bytes from src to the ring slots of positions [lo, hi),
        # growing the ring first if they (or a held range) would not fit;
        # -1 when the ring cannot grow.
        cdef int64_t top = hi
        if self._count and self._ranges[self._count - 1].end > top:
            top = self._ranges[self._count - 1].end
        if top - self._read > self._size and self._grow(top - self._read) < 0:
            return -1
        cdef int64_t p = lo % self._size
        cdef int64_t n = hi - lo
        cdef int64_t first = self._size - p
        if n <= first:
            memcpy(self._ring + p, src, n)
        else:
            memcpy(self._ring + p, src, first)
            memcpy(self._ring, src + first, n - first)
        return 0

    def sack_blocks(self, max_blocks=4):
        """Held out-of-order ranges as (left, right) sequence numbers.

        RFC 2018 §4: the block holding the most recently received segment
        first, then the others most recently changed first; at most
        ``max_blocks``.
        """
        cdef Py_ssize_t want, k, got, best
        cdef uint64_t below = <uint64_t>-1
        max_blocks = _as_int("max_blocks", max_blocks)
        if max_blocks < 0:
            raise ValueError(f"max_blocks must be >= 0, got {max_blocks}")
        want = min(max_blocks, self._count)
        out = []
        # Stamps are unique: repeatedly take the newest stamp below the last.
        for got in range(want):
            best = -1
            for k in range(self._count):
                if self._ranges[k].stamp < below and (
                        best < 0 or self._ranges[k].stamp > self._ranges[best].stamp):
                    best = k
            below = self._ranges[best].stamp
            out.append(((self._isn + <uint64_t>self._ranges[best].start) & _SEQ_MASK,
                        (self._isn + <uint64_t>self._ranges[best].end) & _SEQ_MASK))
        return out

    # -- reading -------------------------------------------------------------

    def peek(self):
        """A read-only view of the readable bytes that are contiguous in the ring.

        Shorter than :attr:`readable` when the data wraps the ring's end;
        consume it and peek again.  Invalid after the next mutating call.
        """
        if self._size == 0:
            return memoryview(b"")
        if self._rview is None:
            self._rview = memoryview(self._buf).toreadonly()
        cdef int64_t p = self._read % self._size
        cdef int64_t n = _min64(self._nxt - self._read, self._size - p)
        return self._rview[p:p + n]

    def consume(self, n):
        """Drop ``n`` readable bytes (the application has taken them)."""
        if not PyLong_CheckExact(n):
            return self.consume(_as_int("n", n))
        if not 0 <= n <= self._nxt - self._read:
            raise ValueError(f"cannot consume {n} bytes: {self._nxt - self._read} readable")
        self._read += <int64_t>n
        self._release_if_empty()

    def read(self, n=-1):
        """Copy out and consume up to ``n`` readable bytes (all when ``n < 0``)."""
        cdef int64_t avail = self._nxt - self._read
        cdef int64_t count
        if not PyLong_CheckExact(n):
            return self.read(_as_int("n", n))
        count = avail if (n < 0 or n > avail) else <int64_t>n
        out = PyBytes_FromStringAndSize(NULL, count)
        self._copy_out(<unsigned char*>PyBytes_AS_STRING(out), count)
        return out

    def read_into(self, buf):
        """Copy readable bytes into the writable buffer ``buf``; consume and return the count."""
        cdef unsigned char[::1] out
        mv = memoryview(buf)
        if mv.readonly:
            raise TypeError("read_into needs a writable buffer")
        out = mv.cast("B")
        cdef int64_t count = _min64(out.shape[0], self._nxt - self._read)
        if count:
            self._copy_out(&out[0], count)
        return count

    cdef void _copy_out(self, unsigned char* dst, int64_t n) noexcept:
        # Copy the first n readable bytes to dst and consume them.
        if n <= 0:
            return
        cdef int64_t p = self._read % self._size
        cdef int64_t first = self._size - p
        if n <= first:
            memcpy(dst, self._ring + p, n)
        else:
            memcpy(dst, self._ring + p, first)
            memcpy(dst + first, self._ring, n - first)
        self._read += n
        self._release_if_empty()

    def __repr__(self):
        return (f"<Assembler rcv_nxt={self.rcv_nxt} readable={self.readable} "
                f"window={self.window} ooo_bytes={self._ooo} ranges={self._count}>")
