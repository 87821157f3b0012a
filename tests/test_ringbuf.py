"""The ring buffer reader over buffers laid out as the kernel lays out a BPF ring buffer."""
import struct

import pytest

from ipft_web.ringbuf import BUSY, DISCARD, RingReader

PAGE = 4096
SIZE = 2 * PAGE


class FakeRing:
    """Consumer page + (producer page, data mapped twice), written the way the kernel writes them."""

    def __init__(self, size=SIZE):
        self.size = size
        self.cons = bytearray(PAGE)
        self.data = bytearray(PAGE + 2 * size)
        self.prod = 0

    def _write(self, pos, raw):
        for i, b in enumerate(raw):   # both copies of the data area, as the double mapping shows it
            o = (pos + i) % self.size
            self.data[PAGE + o] = b
            self.data[PAGE + self.size + o] = b

    def put(self, payload: bytes, flags: int = 0) -> int:
        pos = self.prod
        self._write(pos, struct.pack("@II", len(payload) | flags, 0) + payload)
        self.prod += (len(payload) + 8 + 7) & ~7
        struct.pack_into("@Q", self.data, 0, self.prod)
        return pos

    def commit(self, pos: int, length: int) -> None:
        self._write(pos, struct.pack("@I", length))

    @property
    def consumer(self) -> int:
        return struct.unpack_from("@Q", self.cons, 0)[0]

    def reader(self) -> RingReader:
        return RingReader.over(self.cons, self.data, self.size, PAGE)


def collect(out):
    return lambda buf, off, size: out.append(bytes(buf[off:off + size]))


def test_reads_records_in_order_and_moves_the_consumer():
    ring = FakeRing()
    payloads = [bytes([i]) * (i + 1) for i in range(20)]  # odd sizes: 8-byte alignment of records
    for p in payloads:
        ring.put(p)
    got = []
    r = ring.reader()
    assert r.pending() == ring.prod
    assert r.consume(collect(got)) == 20
    assert got == payloads
    assert ring.consumer == ring.prod and r.pending() == 0 and r.records == 20
    assert r.consume(collect(got)) == 0


def test_limit_leaves_the_rest_for_the_next_call():
    ring = FakeRing()
    for i in range(10):
        ring.put(bytes([i]) * 16)
    got = []
    r = ring.reader()
    assert r.consume(collect(got), limit=4) == 4
    assert ring.consumer == 4 * 24
    assert r.consume(collect(got), limit=100) == 6
    assert got == [bytes([i]) * 16 for i in range(10)]


def test_busy_record_stops_and_discarded_ones_are_skipped():
    ring = FakeRing()
    ring.put(b"a" * 8)
    ring.put(b"x" * 8, DISCARD)
    busy = ring.put(b"b" * 8, BUSY)
    ring.put(b"c" * 8)
    got = []
    r = ring.reader()
    assert r.consume(collect(got)) == 1 and got == [b"a" * 8]
    assert ring.consumer == busy          # stops at the record still being written
    ring.commit(busy, 8)
    assert r.consume(collect(got)) == 2 and got == [b"a" * 8, b"b" * 8, b"c" * 8]


def test_records_wrapping_around_the_end_are_whole():
    ring = FakeRing()
    got = []
    r = ring.reader()
    n = 0
    for round_ in range(5):   # fill most of the ring, drain, again: positions pass the end
        batch = [bytes([round_, i]) * 50 for i in range(70)]   # 100 bytes -> 112 per record
        for p in batch:
            ring.put(p)
        n += len(batch)
        assert r.consume(collect(got)) == len(batch)
    assert ring.prod > 3 * SIZE
    assert got == [bytes([k, i]) * 50 for k in range(5) for i in range(70)]
    assert r.records == n


def test_a_handler_that_raises_skips_only_its_record():
    ring = FakeRing()
    for p in (b"1" * 8, b"2" * 8, b"3" * 8):
        ring.put(p)
    seen = []

    def handle(buf, off, size):
        seen.append(bytes(buf[off:off + size]))
        if len(seen) == 2:
            raise RuntimeError("boom")

    r = ring.reader()
    with pytest.raises(RuntimeError):
        r.consume(handle)
    assert ring.consumer == 2 * 16        # past the record that raised, not replayed
    assert r.consume(handle) == 1 and seen == [b"1" * 8, b"2" * 8, b"3" * 8]


def test_size_must_be_a_power_of_two_pages():
    with pytest.raises(ValueError):
        RingReader(-1, 3 * PAGE, PAGE)


def test_tracer_poll_is_bounded_under_an_endless_flood(monkeypatch):
    """A producer faster than the consumer must not keep poll() forever (Ctrl-C, --duration)."""
    import time

    from ipft_web import tracer as tracer_mod
    from ipft_web.config import TraceConfig
    from ipft_web.journeys import Assembler

    class Endless:
        calls = 0

        def drain(self, limit):
            Endless.calls += 1
            return limit          # always a full chunk: more is always waiting

    t = tracer_mod.Tracer(TraceConfig(mark=1), lambda j: None)
    t.state, t.program, t.assembler = "tracing", Endless(), Assembler(lambda j: None)
    monkeypatch.setattr(tracer_mod.program, "lost_events", lambda bpf: 0)
    started = time.monotonic()
    t.poll(0)
    took = time.monotonic() - started
    assert Endless.calls >= 1
    assert took < tracer_mod.POLL_BUDGET_S + 1.0


def test_a_consumer_running_behind_does_not_time_out_journeys_early(monkeypatch):
    """Events 5 s old still waiting in the ring: their journeys stay open (idle is judged against the
    newest event read), and time out by the clock only once the ring is drained."""
    import time

    from ipft_web import tracer as tracer_mod
    from ipft_web.config import TraceConfig
    from ipft_web.journeys import Assembler, Hit

    out = []
    old = time.monotonic_ns() - 5_000_000_000

    class Behind:
        fed = 0
        pending = True

        def drain(self, limit):
            if not Behind.pending:
                return 0
            for _ in range(limit):   # one packet's hits, 1 us apart, all from 5 s ago
                Behind.fed += 1
                t.assembler.feed(Hit(skb=7, ts=old + Behind.fed * 1000, func=f"f{Behind.fed % 50}", kind="kprobe",
                                     cpu=0, len=84, mark=1, ifindex=1, dev="lo", netns=1))
            return limit

    t = tracer_mod.Tracer(TraceConfig(mark=1, idle_timeout=1.0), out.append)
    t.state, t.program, t.assembler = "tracing", Behind(), Assembler(out.append, idle_timeout=1.0)
    monkeypatch.setattr(tracer_mod.program, "lost_events", lambda bpf: 0)
    for _ in range(3):
        t.poll(0)
    assert out == [] and Behind.fed >= tracer_mod.POLL_CHUNK
    Behind.pending = False     # caught up: now the clock says the packet went quiet 5 s ago
    t.poll(0)
    assert len(out) == 1 and out[0]["end"] == "timeout" and len(out[0]["hits"]) == min(Behind.fed, 4096)
