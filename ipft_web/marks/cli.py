"""`ipft --mark-rule SPEC`: marking rules that live exactly as long as the trace.

SPEC is comma-separated: bare words for the choices (rx, tx, ipv4, ipv6, tcp, udp, icmp, icmpv6, any,
iptables, nft) and key=value for the rest, with the keys of the web API:
    --mark-rule tx,icmp,dst=127.0.0.2
    --mark-rule direction=rx,proto=tcp,dport=443,iif=eth0,rate=100
    --mark-rule icmp,dst=10.0.0.2,netns=blue,tool=nft
The rule sets the traced mark (-m/--mask); it is removed when ipft ends (Ctrl-C, SIGTERM, --duration).
"""
from __future__ import annotations

import sys

from ..errors import UsageError

HELP = """add a marking rule for the duration of the trace (repeatable). SPEC: comma-separated words
(rx|tx, ipv4|ipv6, tcp|udp|icmp|icmpv6|any, iptables|nft) and key=value (direction, family, proto,
src, dst, sport, dport, iif, oif, netns, rate, tool), e.g. tx,icmp,dst=127.0.0.2 or
rx,tcp,dport=443,iif=eth0,rate=100. The rule sets -m/--mask."""

MAX_SPEC = 512


def vocabulary() -> tuple[dict, tuple]:
    """(bare word -> its key, the keys SPEC takes), from the rule vocabulary of marks.spec: imported
    only when a rule is given, not for every trace."""
    from .spec import DIRECTIONS, FAMILIES, KEYS, PROTOS, TOOLS
    words = {}
    for key, choices in (("direction", DIRECTIONS), ("family", FAMILIES), ("proto", PROTOS), ("tool", TOOLS)):
        for w in choices:
            if w not in ("both", "auto"):
                words[w] = key
    return words, tuple(k for k in KEYS if k not in ("mark", "mask"))


def add_arguments(parser) -> None:
    """Add --mark-rule to an argparse parser (dest: mark_rules, a list of strings or None)."""
    group = parser.add_argument_group("marking rules")
    group.add_argument("--mark-rule", dest="mark_rules", action="append", metavar="SPEC", help=HELP)


def parse_rule_text(text: str) -> dict:
    """'tx,icmp,dst=127.0.0.2' -> {"direction": "tx", "proto": "icmp", "dst": "127.0.0.2"}."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("--mark-rule needs a SPEC like tx,icmp,dst=127.0.0.2")
    if len(text) > MAX_SPEC:
        raise UsageError(f"--mark-rule SPEC is longer than {MAX_SPEC} characters")
    words, cli_keys = vocabulary()
    out: dict = {}
    for item in text.split(","):
        item = item.strip(" ")
        if not item:
            raise UsageError(f"--mark-rule {text!r:.60}: empty item (two commas?)")
        if "=" in item:
            key, value = item.split("=", 1)
            key = key.strip(" ").lower()
            if key in ("mark", "mask"):
                raise UsageError("--mark-rule sets the traced mark: give it with -m/--mask, not in SPEC")
            if key not in cli_keys:
                raise UsageError(f"--mark-rule: unknown key {key!r:.30} (keys: {', '.join(cli_keys)})")
        else:
            word = item.lower()
            if word == "both":
                raise UsageError("--mark-rule: say direction=both or family=both")
            if word not in words:
                raise UsageError(f"--mark-rule: unknown word {item!r:.30} (words: {', '.join(words)}; "
                                 f"or key=value)")
            key, value = words[word], word
        if key in out:
            raise UsageError(f"--mark-rule: {key} given twice")
        out[key] = value
    return out


class applied_rules:
    """Context manager: the --mark-rule rules applied while inside, removed on the way out.

    Constructing it validates every SPEC and picks the tool (UsageError / EnvError before anything is
    attached or applied); entering applies the rules (and removes what it applied if one fails);
    leaving removes them, whatever ended the block. `log(line)` reports each command (default stderr).
    """

    def __init__(self, args, mark, mask, log=None):
        self.log = log or (lambda line: (sys.stderr.write(f"ipft: {line}\n"), sys.stderr.flush()))
        self.specs = []
        self.rules: list = []
        texts = getattr(args, "mark_rules", None) or []
        if not texts:
            return   # the usual trace: no rule, and none of the rule machinery imported
        from . import runner
        from .render import choose_tool
        from .spec import parse_spec
        for text in texts:
            spec = parse_spec(parse_rule_text(text), default_mark=mark, default_mask=mask)
            choose_tool(spec)
            self.specs.append(spec)
        runner.require_root()

    def __enter__(self):
        if not self.specs:
            return self.rules
        from . import apply as _apply
        try:
            for spec in self.specs:
                rule = _apply.apply(spec)
                self.rules.append(rule)
                for c in rule.commands:
                    self.log(f"applied: {c.text}")
        except BaseException:
            self.remove()
            raise
        return self.rules

    def remove(self) -> None:
        if not self.rules:
            return
        from . import apply as _apply
        while self.rules:
            rule = self.rules.pop()
            try:
                for line in _apply.remove(rule):
                    self.log(f"removed: {line}")
            except Exception as exc:  # keep removing the others; say what is left
                self.log(f"could not remove marking rule {rule.tag}: {exc} (ipft-web --cleanup removes it)")

    def __exit__(self, *exc):
        self.remove()
        return False
