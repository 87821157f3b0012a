"""Record classes for the modules on the way to tracing: @dataclass's declarations, without dataclasses.

    @record                       class with __init__ (fields in order, defaults), __repr__, __eq__
    @record(frozen=True)          ... and no assignment after __init__; hashable
    @record(slots=True)           ... with __slots__ (the per-event classes)
    field(default_factory=list)   a default made per instance
    replace(obj, **changes)       a copy with some fields changed (through __init__)

A field is an annotated class attribute; a value given to it is its default. `__post_init__` is
called at the end of __init__ when the class has one. That is all these modules use of dataclasses.

Why: importing dataclasses imports inspect, ast, dis, opcode, copy and importlib.machinery, and
@dataclass builds each class's methods with several exec() calls: together about 0.4 s of every
`ipft` start under emulation, where a module costs 20-30 ms to import (tests/test_startup.py keeps
them off the way). Here each class costs one exec().
"""
from __future__ import annotations

_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def field(*, default_factory):
    """A default made for each instance by calling `default_factory()`."""
    return _Factory(default_factory)


def record(cls=None, /, *, frozen: bool = False, slots: bool = False):
    def wrap(c):
        return _make(c, frozen, slots)
    return wrap if cls is None else wrap(cls)


def _make(cls, frozen: bool, slots: bool):
    if any(hasattr(b, "__record_fields__") for b in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: records do not inherit fields")
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults = {}
    seen_default = False
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if value is _MISSING:
            if seen_default:
                raise TypeError(f"{cls.__name__}: field {name} without a default follows one with a default")
        else:
            defaults[name] = value
            seen_default = True
    env = {"_MISSING": _MISSING, "_cls": None}
    params, body = [], []
    if frozen and not slots:   # straight into the instance's dict: object.__setattr__ per field is slower
        body.append("_record_dict = self.__dict__")
        setter = "_record_dict[{n!r}] = {v}"
    elif frozen:
        setter = "object.__setattr__(self, {n!r}, {v})"
    else:
        setter = "self.{n} = {v}"
    for name in names:
        value = defaults.get(name, _MISSING)
        if value is _MISSING:
            params.append(name)
            body.append(setter.format(n=name, v=name))
        elif isinstance(value, _Factory):
            env[f"_f_{name}"] = value.make
            params.append(f"{name}=_MISSING")
            body.append(setter.format(n=name, v=f"_f_{name}() if {name} is _MISSING else {name}"))
        else:
            env[f"_d_{name}"] = value
            params.append(f"{name}=_d_{name}")
            body.append(setter.format(n=name, v=name))
    if "__post_init__" in cls.__dict__:
        body.append("self.__post_init__()")
    values = "".join(f"self.{n}, " for n in names)
    fields_repr = ", ".join(f"{n}={{self.{n}!r}}" for n in names)
    src = [
        f"def __init__(self, {', '.join(params)}):" if params else "def __init__(self):",
        *("    " + line for line in (body or ["pass"])),
        "def __repr__(self):",
        f"    return f\"{{type(self).__qualname__}}({fields_repr})\"",
        "def __eq__(self, other):",
        "    if other.__class__ is not self.__class__:",
        "        return NotImplemented",
        f"    return ({values}) == ({''.join(f'other.{n}, ' for n in names)})",
    ]
    if frozen:
        src += [
            "def __setattr__(self, name, value):",
            "    raise AttributeError(f'cannot assign to field {name!r} of a frozen record')",
            "def __delattr__(self, name):",
            "    raise AttributeError(f'cannot delete field {name!r} of a frozen record')",
            "def __hash__(self):",
            f"    return hash(({values}))",
        ]
    exec("\n".join(src), env)   # noqa: S102  (our own text, built from the class's field names)
    if slots:
        ns = {k: v for k, v in cls.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")}
        ns["__slots__"] = tuple(names)
        ns["__qualname__"] = cls.__qualname__
        cls = type(cls)(cls.__name__, cls.__bases__, ns)
    else:
        for name, value in defaults.items():
            if isinstance(value, _Factory):
                delattr(cls, name)
    for method in ("__init__", "__repr__", "__eq__") + (("__setattr__", "__delattr__", "__hash__") if frozen else ()):
        fn = env[method]
        fn.__qualname__ = f"{cls.__qualname__}.{method}"
        setattr(cls, method, fn)
    if not frozen:
        cls.__hash__ = None   # like @dataclass: equal by value, so not hashable
    cls.__record_fields__ = tuple(names)
    cls.__match_args__ = tuple(names)
    return cls


def replace(obj, **changes):
    """A new record like `obj` with `changes` (field name -> value), made through __init__."""
    names = obj.__record_fields__
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    return type(obj)(**{n: changes[n] if n in changes else getattr(obj, n) for n in names})


def fields(obj_or_cls) -> tuple:
    """The field names, in order."""
    return obj_or_cls.__record_fields__
