"""Find the rules tagged `ipft-web:<id>` in the kernel's tables (the tags are the source of truth).

iptables/ip6tables: `-t raw -S` lines with `--comment ipft-web:ID`, deleted by their exact spec
(`-A` -> `-D`). Both the nf_tables and, where its raw table is loaded, the legacy variant are read.
nft: `nft -a list table inet ipft_web` rules ending `comment "ipft-web:ID" # handle N`, deleted by handle.
Listing never creates a table or loads a module.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from ..errors import EnvError
from . import runner
from .render import NFT_TABLE, TAG_RE

_NFT_RULE = re.compile(r'^\s*(?P<text>.*\bcomment "' + TAG_RE.pattern + r'")\s*# handle (?P<handle>[0-9]+)$')
_NFT_CHAIN = re.compile(r"^\s*chain (?P<name>[A-Za-z0-9_]+) \{")
_NFT_HANDLE = re.compile(r"# handle [0-9]+$")
_GONE = ("No such file or directory", "does not exist", "Table does not exist")


@dataclass(frozen=True)
class Tagged:
    rule_id: str
    netns: str | None
    tool: str                 # the binary that lists/deletes it: iptables-nft, ip6tables-legacy, nft...
    chain: str
    text: str                 # the rule as the tool prints it
    delete_argv: tuple        # without the netns prefix

    @property
    def delete_text(self) -> str:
        return runner.text(runner.in_netns(self.netns, self.delete_argv))

    def to_dict(self) -> dict:
        return {"id": self.rule_id, "netns": self.netns, "tool": self.tool, "chain": self.chain,
                "rule": self.text, "remove_command": self.delete_text}


def _legacy_loaded(netns: str | None, family: str) -> bool:
    """Is the legacy (x_tables) raw table in use in that namespace? Reading it would load modules."""
    name = "/proc/net/ip_tables_names" if family == "ipv4" else "/proc/net/ip6_tables_names"
    if netns is None:
        try:
            with open(name) as f:
                return "raw" in f.read().split()
        except OSError:
            return False
    proc = runner.run(runner.in_netns(netns, ["cat", name]))
    return proc.returncode == 0 and "raw" in proc.stdout.split()


def iptables_binaries(netns: str | None) -> list[str]:
    out = []
    for family, base in (("ipv4", "iptables"), ("ipv6", "ip6tables")):
        variants = [b for b in (f"{base}-nft", f"{base}-legacy") if runner.which(b)]
        if not variants:
            if runner.which(base):
                out.append(base)
            continue
        for b in variants:
            if b.endswith("-legacy") and not _legacy_loaded(netns, family):
                continue
            out.append(b)
    return out


def _iptables_tagged(binary: str, netns: str | None) -> list[Tagged]:
    proc = runner.run(runner.in_netns(netns, [binary, "-t", "raw", "-S"]))
    if proc.returncode != 0:
        msg = runner.first_line(proc)
        if any(g in msg for g in _GONE):
            return []
        raise EnvError(f"cannot list the raw table with {binary}: {msg}")
    found = []
    for line in proc.stdout.splitlines():
        if not line.startswith("-A ") or "ipft-web:" not in line:
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for i, w in enumerate(words[:-1]):
            m = TAG_RE.fullmatch(words[i + 1]) if w == "--comment" else None
            if m:
                found.append(Tagged(m.group(1), netns, binary, words[1], line,
                                    (binary, "-t", "raw", "-D", *words[1:])))
                break
    return found


def nft_listing(netns: str | None) -> str | None:
    """`nft -a list table inet ipft_web` output, or None when the table (or nft) is absent."""
    if not runner.which("nft"):
        return None
    proc = runner.run(runner.in_netns(netns, ["nft", "-a", "list", "table", *NFT_TABLE]))
    if proc.returncode != 0:
        msg = runner.first_line(proc)
        if any(g in (proc.stderr or "") for g in _GONE):
            return None
        raise EnvError(f"cannot list table {' '.join(NFT_TABLE)} with nft: {msg}")
    return proc.stdout


def nft_rule_count(listing: str) -> int:
    """Rules (of any tag) in a table listing: lines with a handle that are not table/chain headers."""
    n = 0
    for line in listing.splitlines():
        s = line.strip()
        if _NFT_HANDLE.search(s) and not s.startswith(("table ", "chain ", "set ", "map ", "flowtable ")):
            n += 1
    return n


def nft_only_our_chains(listing: str) -> bool:
    names = {m.group("name") for m in map(_NFT_CHAIN.match, listing.splitlines()) if m}
    objects = [s for s in (ln.strip() for ln in listing.splitlines())
               if s.startswith(("set ", "map ", "flowtable ", "counter ", "quota ", "ct "))]
    return names <= {"prerouting", "output"} and not objects


def _nft_tagged(netns: str | None) -> list[Tagged]:
    listing = nft_listing(netns)
    if listing is None:
        return []
    found, chain = [], "?"
    for line in listing.splitlines():
        c = _NFT_CHAIN.match(line)
        if c:
            chain = c.group("name")
            continue
        m = _NFT_RULE.match(line)
        if m:
            found.append(Tagged(m.group(2), netns, "nft", chain, m.group("text").strip(),
                                ("nft", "delete", "rule", *NFT_TABLE, chain, "handle", m.group("handle"))))
    return found


def list_tagged(netns: str | None = None, tools=("iptables", "nft")) -> list[Tagged]:
    """Every ipft-web rule in network namespace `netns` (None: this one). A vanished netns has none."""
    if netns is not None and not os.path.exists(os.path.join("/run/netns", netns)):
        return []
    found: list[Tagged] = []
    if "iptables" in tools:
        for binary in iptables_binaries(netns):
            found += _iptables_tagged(binary, netns)
    if "nft" in tools:
        found += _nft_tagged(netns)
    return found
