from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef struct Range:
    int64_t start   # absolute stream position of the first byte
    int64_t end     # one past the last byte
    uint64_t stamp  # clock of the insert that last added to or duplicated it


cdef class Assembler:
    cdef bytearray _buf
    cdef unsigned char* _ring
    cdef object _rview
    cdef int64_t _cap
    cdef int64_t _size
    cdef int64_t _hint
    cdef uint32_t _isn
    cdef int64_t _read
    cdef int64_t _nxt
    cdef Range* _ranges
    cdef Py_ssize_t _count
    cdef Py_ssize_t _max_ranges
    cdef uint64_t _clock
    cdef int64_t _ooo
    cdef Py_ssize_t _refused
    cdef bint _has_dsack
    cdef int64_t _dsack_lo
    cdef int64_t _dsack_hi

    # For the TCP layer to cimport: insert without the Python-level checks.
    cdef int64_t insert_ptr(self, uint32_t seq, const unsigned char* data, int64_t n) noexcept
    cdef int _grow(self, int64_t need) noexcept
    cdef void _release_if_empty(self) noexcept
    cdef int _copy_in(self, const unsigned char* src, int64_t lo, int64_t hi) noexcept
    cdef void _copy_out(self, unsigned char* dst, int64_t n) noexcept
