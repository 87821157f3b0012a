"""Field scripts: small TOML files installed on the host, chosen by name (`ipft -s gso`, the
dashboard's picker). They only declare fields, never code, and are never uploaded through the
browser: the dashboard lists and loads them from the installed directories only.

    description = "GSO size, segments and type: where a super-packet is split"
    fields = ["skb->len", "shinfo->gso_size", "shinfo->gso_segs", "shinfo->gso_type"]
    chart = "shinfo->gso_segs"     # optional: the numeric field to chart along the journey

See docs/fields.md.
"""
from __future__ import annotations

import os
import re
try:
    import tomllib
except ImportError:  # Python 3.10 (Ubuntu 22.04): the same parser, from PyPI
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .. import resources
from ..errors import UsageError
from ..logs import get_logger
from .paths import MAX_FIELDS, parse_all

SYSTEM_DIR = Path("/etc/ipft-web/scripts")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
MAX_BYTES = 16 * 1024
KEYS = {"description", "fields", "chart"}


@dataclass
class Script:
    name: str
    description: str
    fields: list = field(default_factory=list)   # field spec strings
    chart: str | None = None
    path: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "fields": list(self.fields),
                "chart": self.chart}


def dirs() -> list[Path]:
    """Where installed scripts live, later ones overriding earlier ones by name."""
    return [resources.path("data") / "scripts", SYSTEM_DIR]


def parse_text(text: str, name: str, where: str) -> Script:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"script {where}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise UsageError(f"script {where}: unknown key {unknown[0]!r:.40}; keys: {', '.join(sorted(KEYS))}")
    desc = data.get("description", "")
    if not isinstance(desc, str) or len(desc) > 300:
        raise UsageError(f"script {where}: description must be a string of at most 300 characters")
    fields = data.get("fields")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise UsageError(f"script {where}: fields must be a non-empty list of strings like \"skb->len\"")
    if len(fields) > MAX_FIELDS:
        raise UsageError(f"script {where}: at most {MAX_FIELDS} fields, got {len(fields)}")
    try:
        specs = parse_all(fields)
    except UsageError as exc:
        raise UsageError(f"script {where}: {exc}") from None
    chart = data.get("chart")
    if chart is not None and (not isinstance(chart, str) or chart.replace(" ", "") not in {s.name for s in specs}):
        raise UsageError(f"script {where}: chart must be one of its fields")
    return Script(name=name, description=desc, fields=[f.strip() for f in fields],
                  chart=chart.replace(" ", "") if chart else None, path=where)


def load_file(path) -> Script:
    """A script file given on the command line (the terminal user is root already)."""
    p = Path(path)
    try:
        if not p.is_file():
            raise UsageError(f"script {str(path)[:200]}: no such file")
        if p.stat().st_size > MAX_BYTES:
            raise UsageError(f"script {str(path)[:200]}: larger than {MAX_BYTES} bytes")
        raw = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"script {str(path)[:200]}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"script {str(path)[:200]}: not UTF-8 text") from None
    name = p.stem if NAME_RE.fullmatch(p.stem) else "script"
    return parse_text(text, name, str(path)[:200])


def _installed_path(name: str) -> Path | None:
    found = None
    for d in dirs():
        p = d / f"{name}.toml"
        if p.is_file():
            found = p
    return found


def load(name) -> Script:
    """An installed script by name (the only way the web API can choose one)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError("script must be the name of an installed script (letters, digits, - and _)")
    p = _installed_path(name)
    if p is None:
        names = ", ".join(s.name for s in installed()) or "none"
        raise UsageError(f"no installed script {name!r}; installed: {names}")
    return load_file(p)


def installed() -> list[Script]:
    """Every valid installed script, by name; broken ones are skipped (logged)."""
    import logging
    seen: dict[str, Path] = {}
    for d in dirs():
        try:
            entries = sorted(d.glob("*.toml")) if d.is_dir() else []
        except OSError:
            entries = []
        for p in entries:
            if NAME_RE.fullmatch(p.stem):
                seen[p.stem] = p
    out = []
    for name, p in sorted(seen.items()):
        try:
            out.append(load_file(p))
        except UsageError as exc:
            logging.getLogger(__name__).warning("%s", exc)
    return out


def resolve_choice(name_or_path: str) -> Script:
    """CLI -s: an installed name, or a path to a file (contains a '/' or ends in .toml)."""
    if "/" in name_or_path or name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_file(name_or_path)
    return load(name_or_path)
