"""What the user asks for, validated once for the CLI and the web API alike."""
from __future__ import annotations

import re

from .errors import UsageError
from .records import record

BACKENDS = ("auto", "kprobe-multi", "fentry", "kprobe", "tracepoint")
MAX_REGEX = 512
U32 = 0xFFFFFFFF


def parse_u32(value, what: str) -> int:
    """An integer 0..2^32-1 given as int or as a decimal/0x-hex string."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a number, not a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"(0[xX][0-9a-fA-F]{1,8}|[0-9]{1,10})", text):
            raise UsageError(f"{what} must be a 32-bit number like 0xdeadbeef or 3735928559, got {value!r:.40}")
        n = int(text, 0) if text.lower().startswith("0x") else int(text, 10)
    else:
        raise UsageError(f"{what} must be a number or a string like \"0xdeadbeef\"")
    if not 0 <= n <= U32:
        raise UsageError(f"{what} must be between 0 and 0xffffffff, got {n}")
    return n


def compile_regex(pattern):
    """A user's function filter as a compiled regex (None = every function; a compiled one passes)."""
    if pattern is None or pattern == "":
        return None
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise UsageError("regex must be a string")
    if len(pattern) > MAX_REGEX:
        raise UsageError(f"regex is longer than {MAX_REGEX} characters")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"invalid regex {pattern!r:.60}: {exc}") from None
    if _nested_repeat(pattern):
        raise UsageError(f"regex {pattern!r:.60} repeats a repetition or a choice (like (a+)+ or (a|b)*): "
                         "that can take exponential time on every function name; write it without nesting")
    return compiled


try:   # the parser behind re.compile, to look at the pattern's structure (3.11: re._parser)
    from re import _parser as _re_parser
except ImportError:  # Python 3.10
    import sre_parse as _re_parser


def _nested_repeat(pattern: str) -> bool:
    """True when a repeat contains another repeat or alternatives: the shapes that backtrack
    exponentially (ReDoS). The regex runs on the server over thousands of names per keystroke."""
    try:
        return _risky(_re_parser.parse(pattern), False)
    except Exception:   # a parser we do not know: re.compile already accepted the pattern
        return False


def _risky(items, in_repeat: bool) -> bool:
    for op, av in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _lo, hi, sub = av
            many = hi > 1
            if (in_repeat and many) or _risky(sub, in_repeat or many):
                return True
        elif name == "BRANCH":
            if in_repeat or any(_risky(alt, in_repeat) for alt in av[1]):
                return True
        elif name in ("SUBPATTERN", "ATOMIC_GROUP", "ASSERT", "ASSERT_NOT"):
            if _risky(av[-1] if name != "ATOMIC_GROUP" else av, in_repeat):
                return True
        elif name == "GROUPREF_EXISTS":
            if any(b is not None and _risky(b, in_repeat) for b in av[1:]):
                return True
    return False


@record
class TraceConfig:
    """A packet matches when (skb->mark & mask) == (mark & mask)."""

    mark: int
    mask: int = U32
    regex: str | None = None
    backend: str = "auto"
    idle_timeout: float = 1.0
    vmlinux: str | None = None   # ELF with DWARF, for kernels without BTF
    fields: list | None = None   # field specs like "skb->len", "shinfo->gso_type" (docs/fields.md)
    script: str | None = None    # name of an installed field script; its fields come first

    def __post_init__(self):
        self.mark = parse_u32(self.mark, "mark")
        self.mask = parse_u32(self.mask, "mask")
        self.pattern = compile_regex(self.regex)
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {str(self.backend)[:40]!r}")
        if not (isinstance(self.idle_timeout, (int, float)) and 0.01 <= self.idle_timeout <= 3600):
            raise UsageError("idle timeout must be between 0.01 and 3600 seconds")
        if self.fields is not None and not isinstance(self.fields, (list, tuple)):
            raise UsageError("fields must be a list of strings like [\"skb->len\"]")
        if (self.script is None or self.script == "") and not self.fields:
            self.field_specs, self.fields = [], []   # no fields: the field machinery is not imported
            return
        from .fields import paths, scripts
        wanted = []
        if self.script is not None and self.script != "":
            wanted.extend(scripts.load(self.script).fields)
        if len(self.fields or []) > 4 * paths.MAX_FIELDS:
            raise UsageError(f"at most {paths.MAX_FIELDS} fields can be traced at once")
        wanted.extend(self.fields or [])
        specs, seen = [], set()
        for spec in (paths.parse(f) for f in wanted):   # a script's field given again is kept once
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
        if len(specs) > paths.MAX_FIELDS:
            raise UsageError(f"at most {paths.MAX_FIELDS} fields can be traced at once, got {len(specs)}")
        self.field_specs = specs          # the script's fields, then the user's, parsed
        self.fields = list(self.fields or [])

    def matches(self, name: str) -> bool:
        return self.pattern is None or self.pattern.search(name) is not None
