"""Apply a validated rule (argument lists, optionally inside a netns) and remove it again by its tag."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..errors import EnvError
from . import listing, runner
from .owner import new_rule_id
from .render import ID_RE, NFT_TABLE, Command, choose_tool, render, tag
from .spec import MarkSpec


@dataclass
class AppliedRule:
    id: str
    spec: MarkSpec
    tool: str
    commands: list[Command]
    session: str | None = None
    created: float = field(default_factory=time.time)
    remove_commands: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return tag(self.id)

    def to_dict(self) -> dict:
        return {"id": self.id, "tag": self.tag, "tool": self.tool, "netns": self.spec.netns,
                "session": self.session, "created": self.created, "spec": self.spec.to_dict(),
                "commands": [c.text for c in self.commands], "remove_commands": list(self.remove_commands)}


def preview(spec: MarkSpec, rule_id: str | None = None) -> tuple[str, list[Command]]:
    """(tool, commands) without running anything; a hand-run copy is tagged with owner pid 0."""
    tool = choose_tool(spec)
    return tool, render(spec, rule_id or new_rule_id(pid=0), tool)


def apply(spec: MarkSpec, rule_id: str | None = None, session: str | None = None) -> AppliedRule:
    """Create the rule; on any failure remove what was created and raise EnvError."""
    runner.require_root()
    rule_id = rule_id or new_rule_id()
    tool = choose_tool(spec)
    cmds = render(spec, rule_id, tool)
    if spec.netns and not os.path.exists(os.path.join("/run/netns", spec.netns)):
        raise EnvError(f"network namespace {spec.netns!r} disappeared")
    rule = AppliedRule(rule_id, spec, tool, cmds, session)
    try:
        if tool == "nft":
            with runner.nft_lock():
                for c in cmds:
                    runner.check(c.argv)
        else:
            for c in cmds:
                runner.check(c.argv)
    except BaseException:
        try:
            remove_tag(rule_id, spec.netns)
        except EnvError:
            pass
        raise
    rule.remove_commands = [t.delete_text for t in listing.list_tagged(spec.netns, (_kind(tool),))
                            if t.rule_id == rule_id]
    return rule


def _kind(tool: str) -> str:
    return "nft" if tool == "nft" else "iptables"


def delete_tagged(items) -> list[str]:
    """Delete listed rules (listing.Tagged); drop `table inet ipft_web` where it became empty.

    Returns the command lines run. A rule already gone is not an error.
    """
    done: list[str] = []
    errors: list[str] = []
    nft_spaces = set()
    for t in items:
        if t.tool == "nft":
            nft_spaces.add(t.netns)
            continue
        _delete_one(t, done, errors)
    for netns in nft_spaces:
        with runner.nft_lock():
            for t in items:
                if t.tool == "nft" and t.netns == netns:
                    _delete_one(t, done, errors)
            _drop_empty_table(netns, done, errors)
    if errors:
        raise EnvError("; ".join(errors))
    return done


def _delete_one(t, done, errors) -> None:
    argv = runner.in_netns(t.netns, t.delete_argv)
    proc = runner.run(argv)
    if proc.returncode == 0:
        done.append(runner.text(argv))
        return
    msg = runner.first_line(proc)
    # gone meanwhile (removed by hand, netns deleted): nothing left to do
    if t.netns and not os.path.exists(os.path.join("/run/netns", t.netns)):
        return
    if any(s in (proc.stderr or "") for s in ("No such file or directory", "Bad rule", "does a matching rule exist")):
        return
    errors.append(f"`{runner.text(argv)}` failed: {msg}")


def _drop_empty_table(netns, done, errors) -> None:
    try:
        text = listing.nft_listing(netns)
    except EnvError as exc:
        errors.append(str(exc))
        return
    if text is None or listing.nft_rule_count(text) or not listing.nft_only_our_chains(text):
        return
    argv = runner.in_netns(netns, ["nft", "delete", "table", *NFT_TABLE])
    proc = runner.run(argv)
    if proc.returncode == 0:
        done.append(runner.text(argv))
    elif "No such file or directory" not in (proc.stderr or ""):
        errors.append(f"`{runner.text(argv)}` failed: {runner.first_line(proc)}")


def remove_tag(rule_id: str, netns: str | None) -> list[str]:
    """Remove every rule tagged ipft-web:<rule_id> in `netns` (any tool). Returns the commands run."""
    if not ID_RE.fullmatch(rule_id):
        raise ValueError(f"bad rule id {rule_id!r}")
    return delete_tagged([t for t in listing.list_tagged(netns) if t.rule_id == rule_id])


def remove(rule: AppliedRule) -> list[str]:
    runner.require_root()
    return remove_tag(rule.id, rule.spec.netns)
