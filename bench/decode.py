#!/usr/bin/env python3
"""How many events per second the Python side decodes and assembles (no kernel needed).

    .venv/bin/python bench/decode.py
"""
import ctypes
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ipft_web.events import EVENT, KIND_KPROBE  # noqa: E402
from ipft_web.journeys import Assembler  # noqa: E402
from ipft_web.tracer import Symbolizer, Tracer  # noqa: E402
from ipft_web.config import TraceConfig  # noqa: E402


def main(n: int = 200_000) -> None:
    out = []
    t = Tracer(TraceConfig(mark=1), out.append)
    t.assembler = Assembler(t._emit, free_traced=True)
    t.symbolize = Symbolizer([(0x1000 * i, f"func_{i}") for i in range(1, 2000)])
    t.kernel = type("K", (), {"symbol": staticmethod(lambda a: None)})()
    records = []
    for i in range(50):  # one packet: 50 hits through 50 functions
        records.append(EVENT.pack(0xFFFF0000, 1000 + i, 0x1000 * (i + 1), 0, 0, 84, 1, 1, 4026531840, 0,
                                  4, 1, KIND_KPROBE, 0, bytes([8, 0, 0, 0]), 7, 0, 0,
                                  bytes([127, 0, 0, 1]) + bytes(12), bytes([127, 0, 0, 2]) + bytes(12),
                                  b"lo".ljust(16, b"\0")))
    bufs = [ctypes.create_string_buffer(r, len(r)) for r in records]
    started = time.perf_counter()
    for k in range(n):
        b = bufs[k % 50]
        t._on_event(None, ctypes.addressof(b), len(records[0]))
    secs = time.perf_counter() - started
    print(f"{n} events in {secs:.2f} s: {n / secs:,.0f} events/s decoded and assembled")


if __name__ == "__main__":
    main()
