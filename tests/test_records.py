"""ipft_web.records: what the warm-path modules use of @dataclass, behaving as @dataclass does."""
from __future__ import annotations

import dataclasses

import pytest

from ipft_web import records


def both(**kw):
    """The same declaration as a dataclass and as a record."""
    def declare(deco, fld):
        class Point:
            x: int
            y: str | None = None
            tags: list = fld(default_factory=list)

            @property
            def label(self):
                return f"{self.x}:{self.y}"
        return deco(**kw)(Point)
    return declare(dataclasses.dataclass, dataclasses.field), declare(records.record, records.field)


@pytest.mark.parametrize("kw", [{}, {"frozen": True}, {"slots": True}, {"frozen": True, "slots": True}])
def test_a_record_behaves_like_the_dataclass(kw):
    D, R = both(**kw)
    for cls in (D, R):
        a, b = cls(1), cls(1, "b", ["t"])
        assert (a.x, a.y, a.tags, a.label) == (1, None, [], "1:None")
        assert (b.x, b.y, b.tags) == (1, "b", ["t"])
        assert cls(1) == cls(1) and cls(1) != cls(2) and cls(1) != (1, None, [])
        assert cls(1).tags is not cls(1).tags, "a list per instance"
        assert cls(x=3, y="z").y == "z"
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            cls(1, nope=2)
    assert repr(R(1, "b")).replace("test_records.both.<locals>.declare.<locals>.", "") == \
        repr(D(1, "b")).replace("test_records.both.<locals>.declare.<locals>.", "")
    assert (D.__hash__ is None) == (R.__hash__ is None)
    if kw.get("frozen"):
        for cls in (D, R):
            with pytest.raises(TypeError):
                hash(cls(1, "b"))   # a list inside
        with pytest.raises(AttributeError):
            R(1).x = 2
        with pytest.raises(AttributeError):
            del R(1).x
    else:
        r = R(1)
        r.x = 5
        assert r.x == 5
    if kw.get("slots"):
        assert R.__slots__ == ("x", "y", "tags") and not hasattr(R(1), "__dict__")
        with pytest.raises(AttributeError):
            R(1).other = 1


def test_post_init_runs_last():
    @records.record
    class C:
        a: int
        b: int = 2

        def __post_init__(self):
            self.total = self.a + self.b
    assert C(1).total == 3 and C(1, 5).total == 6


def test_replace_and_fields():
    @records.record(frozen=True)
    class C:
        a: int
        b: str = "x"
    c = C(1)
    d = records.replace(c, b="y")
    assert (d.a, d.b, c.b) == (1, "y", "x") and records.fields(C) == ("a", "b")
    assert hash(C(1)) == hash(C(1)) and len({C(1), C(1), d}) == 2
    with pytest.raises(TypeError):
        records.replace(c, z=1)


def test_declarations_dataclass_would_refuse_are_refused():
    with pytest.raises(TypeError):
        @records.record
        class Bad:
            a: int = 1
            b: int

    @records.record
    class Base:
        a: int
    with pytest.raises(TypeError):
        @records.record
        class Child(Base):
            b: int


def test_the_warm_path_classes_are_records():
    from ipft_web import bpfobject, config, events, journeys, program
    from ipft_web.backends import AttachResult
    from ipft_web.kernel import catalog, snapshot
    for cls in (config.TraceConfig, events.RawEvent, journeys.Hit, catalog.CatalogEntry, snapshot.Snapshot,
                bpfobject.MapSpec, bpfobject.Image, program.ProgramSpec, program.Tracepoint, AttachResult):
        assert records.fields(cls), cls
    assert not hasattr(events.RawEvent(*([0] * 18)), "__dict__"), "per-event classes keep their slots"
