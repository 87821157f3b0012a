#!/usr/bin/env python3
"""How many events per second the Python side decodes and assembles (no kernel needed).

    .venv/bin/python bench/decode.py
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ipft_web.events import EVENT, KIND_FREE, KIND_KPROBE  # noqa: E402
from ipft_web.journeys import Assembler  # noqa: E402
from ipft_web.ringbuf import RingReader  # noqa: E402
from ipft_web.tracer import Symbolizer, Tracer  # noqa: E402
from ipft_web.config import TraceConfig  # noqa: E402


def main(n: int = 200_000) -> None:
    out = []
    t = Tracer(TraceConfig(mark=1), out.append)
    t.assembler = Assembler(t._emit, free_traced=True)
    t.symbolize = Symbolizer([(0x1000 * i, f"func_{i}") for i in range(1, 2000)])
    t.kernel = type("K", (), {"symbol": staticmethod(lambda a: None)})()
    records = []
    for i in range(50):  # one packet: 50 hits through 50 functions, the last one frees it
        records.append(EVENT.pack(0xFFFF0000, 1000 + i, 0x1000 * (i + 1), 0, 0, 84, 1, 1, 4026531840, 0,
                                  4, 1, KIND_FREE if i == 49 else KIND_KPROBE, 0, bytes([8, 0, 0, 0]), 7, 0, 0,
                                  bytes([127, 0, 0, 1]) + bytes(12), bytes([127, 0, 0, 2]) + bytes(12),
                                  b"lo".ljust(16, b"\0")))
    # the records laid out as the kernel's ring buffer holds them (header + event, 8-byte aligned),
    # read by the same RingReader the tracer uses: the whole user-space path but for the kernel
    page, per = 4096, 8 + ((len(records[0]) + 7) & ~7)
    size = 1 << (n * per - 1).bit_length()
    cons, data = bytearray(page), bytearray(page + 2 * size)
    for k in range(n):
        off = page + k * per
        struct.pack_into("@II", data, off, len(records[0]), 0)
        data[off + 8:off + 8 + len(records[0])] = records[k % 50]
    struct.pack_into("@Q", data, 0, n * per)
    reader = RingReader.over(cons, data, size, page)
    started = time.perf_counter()
    got = reader.consume(t._on_event)
    secs = time.perf_counter() - started
    assert got == n and t.errors == 0, (got, t.errors)
    print(f"{n} events in {secs:.2f} s: {n / secs:,.0f} events/s read, decoded and assembled "
          f"({len(out)} journeys emitted)")


if __name__ == "__main__":
    main()
