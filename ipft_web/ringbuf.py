"""The BPF ring buffer read straight from its mmap'ed pages, in bounded batches.

Why not BCC's ring_buffer_poll/consume: they call a Python function through ctypes per record
(most of the per-event cost in Python), and libbpf's drain loop keeps going for as long as new
records arrive, so under a sustained marked flood it never returns: no Ctrl-C, no --duration, a
frozen dashboard. Here every call takes at most `limit` records and then returns.

Layout (kernel/bpf/ringbuf.c, the same as libbpf reads): page 0 holds the consumer position
(read-write for us), page 1 the producer position, then the data area of `size` bytes mapped
twice in a row, so a record that wraps around the end is still contiguous. Each record starts
with an 8-byte header: u32 length with a BUSY bit (being written) and a DISCARD bit, and u32
page offset; the data follows; records are 8-byte aligned.

Positions and headers are read with native-size struct formats, which copy aligned 8/4-byte
words with single loads; x86-64 keeps loads in order, as the kernel's acquire/release pairs need.
"""
from __future__ import annotations

import mmap
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8

_POS = struct.Struct("@Q")
_LEN = struct.Struct("@I")

# records between two stores of the consumer position inside one batch: gives the producer room
# back while a long batch is decoded
RELEASE_EVERY = 1024


class RingReader:
    """Reads one BPF_MAP_TYPE_RINGBUF map. `handle(buf, offset, size)` is called per record."""

    def __init__(self, map_fd: int, size: int, page: int = mmap.PAGESIZE):
        if size <= 0 or size & (size - 1) or size % page:
            raise ValueError(f"ring buffer size {size} is not a power-of-2 multiple of the page size")
        cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._setup(cons, data, size, page)
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    @classmethod
    def over(cls, cons, data, size: int, page: int) -> "RingReader":
        """A reader over ready-made buffers laid out like the kernel's (tests, benchmarks)."""
        self = cls.__new__(cls)
        self._setup(cons, data, size, page)
        self._epoll = None
        return self

    def _setup(self, cons, data, size, page) -> None:
        self._cons = cons
        self._data = data
        self.size = size
        self._page = page
        self._mask = size - 1
        self.records = 0

    def wait(self, timeout_ms: int) -> bool:
        """Sleep until the kernel says there is data, or `timeout_ms` passed; True if there is."""
        if self._epoll is None:
            return self.pending() > 0
        try:
            return bool(self._epoll.poll(max(timeout_ms, 0) / 1000.0))
        except InterruptedError:
            return False

    def pending(self) -> int:
        """Bytes written by the producer that we have not consumed yet."""
        return _POS.unpack_from(self._data, 0)[0] - _POS.unpack_from(self._cons, 0)[0]

    def consume(self, handle, limit: int = 1 << 62) -> int:
        """Hand at most `limit` committed records to `handle`; returns how many it handed."""
        data, cons_page, page, mask = self._data, self._cons, self._page, self._mask
        cons = _POS.unpack_from(cons_page, 0)[0]
        prod = _POS.unpack_from(data, 0)[0]
        n = 0
        try:
            while n < limit:
                if cons >= prod:
                    prod = _POS.unpack_from(data, 0)[0]   # more may have come while we read
                    if cons >= prod:
                        break
                off = page + (cons & mask)
                hdr = _LEN.unpack_from(data, off)[0]
                if hdr & BUSY:        # reserved, not committed yet: the rest waits for the next call
                    break
                length = hdr & ~(BUSY | DISCARD)
                cons += (length + HEADER + 7) & ~7   # first: a handler that raises skips its record
                if not hdr & DISCARD:
                    handle(data, off + HEADER, length)
                    n += 1
                    if not n % RELEASE_EVERY:
                        _POS.pack_into(cons_page, 0, cons)
        finally:
            _POS.pack_into(cons_page, 0, cons)
            self.records += n
        return n

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        for m in (self._cons, self._data):
            try:
                m.close()
            except (BufferError, ValueError):
                pass
