"""The JSON API under /api (docs/api.md). The browser UI uses nothing else."""
from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from ..config import TraceConfig
from ..errors import UsageError
from ..output import Aggregate
from . import exports
from .functions import NotReady
from .jsonbody import parse_object
from .sessions import Busy
from .store import MAX_ID

bp = Blueprint("api", __name__, url_prefix="/api")
SESSION_FIELDS = {"mark", "mask", "regex", "backend", "fields", "script", "mark_rules"}
MAX_PAGE = 5000
MAX_SESSION_RULES = 16   # marking rules one session may be given (mark_rules)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def ctx():
    return current_app.extensions["ipft_web"]


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw):
        raise UsageError(f"{name} must be a non-negative integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise UsageError(f"{name} must be between {lo} and {hi}")
    return value


def _session_or_404(sid: int) -> dict:
    row = ctx().sessions.session(sid) if 0 < sid < MAX_ID else None
    if row is None:
        raise ApiError(404, f"no session {sid}")
    return row


def _json_body() -> dict:
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    return parse_object(request.get_data(cache=False), what="the body")


# -- server state ---------------------------------------------------------------------------
@bp.get("/status")
def status():
    c = ctx()
    out = c.sessions.status()
    out.update({"tracer_kind": c.choice.label, "backends": c.backends(), "max_journeys": c.sessions.max_journeys,
                "functions": c.catalog.state, "version": c.version})
    return jsonify(out)


@bp.get("/layers")
def layers():
    return jsonify(ctx().layers.as_dict())


@bp.get("/backends")
def backends():
    return jsonify(backends=ctx().backends())


@bp.get("/functions")
def functions():
    regex = request.args.get("regex", "")
    limit = _int_arg("limit", 50, 0, 5000)
    try:
        return jsonify(ctx().catalog.match(regex, limit))
    except NotReady as exc:
        raise ApiError(503, str(exc)) from None


# -- sessions -------------------------------------------------------------------------------
@bp.post("/sessions")
def start_session():
    body = _json_body()
    unknown = sorted(set(body) - SESSION_FIELDS)
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r}; expected {', '.join(sorted(SESSION_FIELDS))}")
    if "mark" not in body:
        raise UsageError("mark is required (e.g. \"0xdeadbeef\")")
    regex = body.get("regex")
    if regex is not None and not isinstance(regex, str):
        raise UsageError("regex must be a string")
    backend = body.get("backend", "auto")
    if not isinstance(backend, str):
        raise UsageError("backend must be a string")
    fields = body.get("fields")
    if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        raise UsageError("fields must be a list of strings like [\"skb->len\"]")
    script = body.get("script")
    if script is not None and not isinstance(script, str):
        raise UsageError("script must be the name of an installed field script")
    rules = body.get("mark_rules")
    if rules is not None and not (isinstance(rules, list) and len(rules) <= MAX_SESSION_RULES
                                  and all(isinstance(r, str) for r in rules)):
        raise UsageError(f"mark_rules must be a list of marking rule ids (at most {MAX_SESSION_RULES})")
    link = current_app.config.get("IPFT_SESSION_RULES")
    if rules and link is None:
        raise UsageError("this server has no marking rules (mark_rules)")
    config = TraceConfig(mark=body["mark"], mask=body.get("mask", 0xFFFFFFFF), regex=regex or None,
                         backend=backend, fields=fields or None, script=script or None)
    if rules:
        link.check_unowned(rules)
    if config.fields and not ctx().choice.is_replay:
        _check_fields(config)
    try:
        row = ctx().sessions.start(config)
    except Busy as exc:
        raise ApiError(409, str(exc)) from None
    if rules:
        link.adopt(rules, row["id"])
    resp = jsonify(id=row["id"], session=row)
    resp.status_code = 201
    resp.headers["Location"] = f"/api/sessions/{row['id']}"
    return resp


def _check_fields(config) -> None:
    """A field path the kernel's types do not have is a 400 now, not a session that fails later
    (when the kernel's types are loaded already: the server loads them at start-up)."""
    from ..kernel.view import KernelView
    from ..tracer import resolve_fields
    kernel = KernelView.cached(config.vmlinux)
    if kernel is not None:
        resolve_fields(config, kernel)


@bp.get("/scripts")
def list_scripts():
    """The installed field scripts (the start form's picker); scripts are never uploaded."""
    from ..fields import scripts
    return jsonify(scripts=[sc.as_dict() for sc in scripts.installed()])


@bp.get("/sessions")
def list_sessions():
    return jsonify(sessions=ctx().sessions.sessions())


@bp.get("/sessions/<int:sid>")
def get_session(sid):
    return jsonify(_session_or_404(sid))


@bp.post("/sessions/<int:sid>/stop")
def stop_session(sid):
    _session_or_404(sid)
    return jsonify(ctx().sessions.stop(sid))


@bp.delete("/sessions/<int:sid>")
def delete_session(sid):
    row = _session_or_404(sid)
    if row["state"] not in ("stopped", "error", "interrupted"):
        raise ApiError(409, f"session {sid} is {row['state']}; stop it first")
    ctx().store.delete_session(sid)
    return Response(status=204)


@bp.get("/sessions/<int:sid>/journeys")
def journeys(sid):
    _session_or_404(sid)
    after = _int_arg("after", 0, 0, MAX_ID)
    limit = _int_arg("limit", 1000, 1, MAX_PAGE)
    rows = ctx().store.journey_texts(sid, after, limit)
    nxt = rows[-1][0] if len(rows) == limit else None
    body = ('{"session":%d,"after":%d,"next_after":%s,"journeys":[' % (sid, after, "null" if nxt is None else nxt)
            + ",".join(text for _, text in rows) + "]}")
    return Response(body, mimetype="application/json")


@bp.get("/sessions/<int:sid>/aggregate")
def aggregate(sid):
    import json
    _session_or_404(sid)
    top = _int_arg("top", 50, 1, 1000)
    agg = Aggregate()
    for text in ctx().store.iter_journey_texts(sid):
        agg.add(json.loads(text))
    return jsonify(agg.as_dict(top))


@bp.get("/sessions/<int:sid>/export.jsonl")
def export_jsonl(sid):
    _session_or_404(sid)
    c = ctx()
    body = exports.jsonl(c.store.iter_journey_texts(sid), pause=c.pause)
    resp = Response(stream_with_context(body), mimetype="application/x-ndjson")
    resp.headers["Content-Disposition"] = f'attachment; filename="ipft-session-{sid}.jsonl"'
    return resp


@bp.get("/sessions/<int:sid>/export.trace.json")
def export_trace(sid):
    import json
    row = _session_or_404(sid)
    c = ctx()

    def journeys():
        return (json.loads(t) for t in c.store.iter_journey_texts(sid))
    body = exports.chrome_trace(journeys, c.layers, row, pause=c.pause)
    resp = Response(stream_with_context(body), mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="ipft-session-{sid}.trace.json"'
    return resp


# -- errors: one line of JSON, never a traceback --------------------------------------------
@bp.errorhandler(ApiError)
def _api_error(exc):
    return jsonify(error=str(exc)), exc.status
