"""Flask blueprint `bp` for /api/marks (the web app registers it behind its authentication).

GET    /api/marks              active rules of this process, tools available, named netns, default mark
POST   /api/marks              apply a rule (JSON body: spec.KEYS plus optional "session") -> 201 rule
POST   /api/marks/preview      the commands a body would run, without running them
DELETE /api/marks/<id>         remove one rule
GET    /api/marks/leftovers    tagged rules nobody owns (a killed ipft), for the banner
DELETE /api/marks/leftovers    remove them

Errors: 400 {"error"} for bad input (nothing changed), 404 unknown id, 409 {"error"} when the machine
cannot do it. app.config["IPFT_MARKS_DEFAULT"]: (mark, mask) or a callable(session) -> (mark, mask)
or None, used when a body has no "mark". app.config["IPFT_MARKS_NAMESPACES"]: where to look for
leftovers, a list of netns names (None in it: this namespace); default this one and every named one.
"""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from ..config import U32, parse_u32
from ..errors import EnvError, UsageError
from ..logs import get_logger
from ..web.jsonbody import parse_object
from . import apply, cleanup, render, runner
from .registry import REGISTRY
from .spec import parse_spec

log = get_logger(__name__)
bp = Blueprint("marks", __name__)
MAX_BODY = 4096
_SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _error(status: int, message: str):
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


@bp.errorhandler(UsageError)
def _usage(exc):
    return _error(400, str(exc))


@bp.errorhandler(EnvError)
def _env(exc):
    return _error(409, str(exc))


@bp.errorhandler(Exception)
def _internal(exc):
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)
    log.exception("marks API failed")
    return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def _defaults(session):
    value = current_app.config.get("IPFT_MARKS_DEFAULT")
    if callable(value):
        value = value(session)
    if not value:
        return None, None
    mark, mask = value
    return mark, (U32 if mask is None else mask)


def _body() -> dict:
    """The JSON object of the request: at most MAX_BODY bytes, strict JSON (web/jsonbody.py)."""
    if not request.is_json:
        raise UsageError("send the rule as JSON (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise UsageError(f"request body is larger than {MAX_BODY} bytes")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise UsageError(f"request body is larger than {MAX_BODY} bytes")
    return parse_object(raw)


def _parse(data: dict):
    data = dict(data)
    session = data.pop("session", None)
    if session is not None and not (isinstance(session, str) and _SESSION.fullmatch(session)):
        raise UsageError("session must be an id of 1-64 letters, digits, _ or -")
    mark, mask = _defaults(session)
    return parse_spec(data, default_mark=mark, default_mask=mask), session


@bp.get("/api/marks")
def list_rules():
    session = request.args.get("session", "")
    mark, mask = _defaults(session if _SESSION.fullmatch(session) else None)
    default = None
    if mark is not None:
        default = {"mark": f"0x{parse_u32(mark, 'mark'):08x}",
                   "mask": f"0x{parse_u32(mask if mask is not None else U32, 'mask'):08x}"}
    return jsonify({
        "rules": [r.to_dict() for r in REGISTRY.list()],
        "tools": {name: runner.which(name) is not None for name in ("iptables", "ip6tables", "nft")},
        "netns": cleanup.named_netns(),
        "default": default,
    })


@bp.post("/api/marks")
def add_rule():
    spec, session = _parse(_body())
    rule = REGISTRY.add(spec, session=session)
    resp = jsonify(rule.to_dict())
    resp.status_code = 201
    return resp


@bp.post("/api/marks/preview")
def preview_rule():
    spec, _ = _parse(_body())
    tool, cmds = apply.preview(spec)
    return jsonify({"tool": tool, "spec": spec.to_dict(), "commands": [c.text for c in cmds]})


def _namespaces():
    spaces = current_app.config.get("IPFT_MARKS_NAMESPACES")
    return None if spaces is None else list(spaces)


@bp.get("/api/marks/leftovers")
def list_leftovers():
    return jsonify({"leftovers": [t.to_dict() for t in cleanup.find_leftovers(_namespaces())]})


@bp.delete("/api/marks/leftovers")
def delete_leftovers():
    return jsonify({"removed": cleanup.remove_leftovers(_namespaces())})


@bp.delete("/api/marks/<rule_id>")
def delete_rule(rule_id):
    if not render.ID_RE.fullmatch(rule_id):
        raise UsageError("rule id must look like 1a2b3c4d-1234")
    if REGISTRY.get(rule_id) is None:
        return _error(404, f"no active marking rule {rule_id}")
    try:
        done = REGISTRY.remove(rule_id)
    except KeyError:
        return _error(404, f"no active marking rule {rule_id}")
    return jsonify({"id": rule_id, "removed": True, "commands": done})
