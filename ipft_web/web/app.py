"""The app factory: Flask + Flask-SocketIO, auth, Host check, security headers, API, pages, sockets."""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException

from .. import __version__, resources
from ..errors import EnvError, UsageError
from ..logs import get_logger
from . import api, auth as auth_mod, layers as layers_mod, offhub, pages, sockets, tracers
from .functions import FunctionCatalog, kernel_entries, recording_entries
from .hostcheck import HostCheck
from .sessions import SessionManager
from .store import Store

log = get_logger(__name__)

CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"


@dataclass
class Settings:
    token: str
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    async_mode: str = "threading"
    tracer: str | None = None            # None/"bcc" or "replay:PATH" (tests only)
    allow_hosts: list = field(default_factory=list)
    max_journeys: int = 20000
    keep_sessions: int = 50
    preload: bool = True                 # load the function list and backends in the background
    replay: dict = field(default_factory=dict)   # speed/repeat/attach for a replay tracer (else env)


class Context:
    """What the routes and the Socket.IO handlers share (app.extensions["ipft_web"])."""

    def __init__(self, settings, socketio, store, sessions, catalog, layers, choice, auth):
        self.settings = settings
        self.socketio = socketio
        self.store = store
        self.sessions = sessions
        self.catalog = catalog
        self.layers = layers
        self.choice = choice
        self.auth = auth
        self.version = __version__
        self._backends = None

    def backends(self) -> list[str]:
        return self._backends or ["auto"]

    def pause(self) -> None:
        self.socketio.sleep(0)

    def preload(self) -> None:
        def load():
            self.catalog.load()
            self._backends = tracers.available_backends(self.choice)
        offhub.run_off_hub(load)


def create_app(settings: Settings):
    choice = tracers.from_env(settings.tracer, **settings.replay)
    app = Flask(__name__, static_folder=str(resources.path("static")), static_url_path="/static",
                template_folder=str(resources.path("templates")))
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, JSON_SORT_KEYS=False, PROPAGATE_EXCEPTIONS=False,
                      SEND_FILE_MAX_AGE_DEFAULT=0, TRAP_HTTP_EXCEPTIONS=False)
    app.debug = False
    socketio = SocketIO(app, async_mode=settings.async_mode, logger=False, engineio_logger=False,
                        manage_session=False, max_http_buffer_size=64 * 1024, cors_allowed_origins=None)
    # outermost: after SocketIO wrapped app.wsgi_app, so /socket.io is covered too
    app.wsgi_app = HostCheck(app.wsgi_app, settings.host, settings.allow_hosts)

    auth = auth_mod.Auth(settings.token)
    store = Store(settings.data_dir)
    store.recover()
    manager = SessionManager(socketio, store, tracers.factory(choice), choice.label,
                             max_journeys=settings.max_journeys, keep_sessions=settings.keep_sessions)
    loader = (lambda: recording_entries(choice.path)) if choice.is_replay else kernel_entries
    ctx = Context(settings, socketio, store, manager, FunctionCatalog(loader), layers_mod.load(), choice, auth)
    app.extensions["ipft_web"] = ctx

    auth.install(app)
    app.after_request(_security_headers)
    _install_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    _register_marks(app, manager)
    sockets.register(socketio, auth, manager)
    if settings.preload:
        ctx.preload()
    return app, socketio


def _security_headers(resp):
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _wants_json() -> bool:
    return (request.path.startswith("/api/") or request.path.startswith("/socket.io")
            or request.accept_mimetypes.best == "application/json")


def _install_error_handlers(app) -> None:
    @app.errorhandler(UsageError)
    def usage(exc):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(EnvError)
    def env(exc):
        return jsonify(error=str(exc)), 409

    @app.errorhandler(HTTPException)
    def http(exc):
        message = {404: "not found", 405: "method not allowed", 413: "request body too large (64 KiB at most)",
                   400: "bad request"}.get(exc.code, exc.name.lower())
        if _wants_json():
            return jsonify(error=message), exc.code
        return f"{exc.code} {message}\n", exc.code, {"Content-Type": "text/plain; charset=utf-8"}

    @app.errorhandler(Exception)
    def internal(exc):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500


class SessionRules:
    """Marking rules handed to a session when it starts (POST /api/sessions "mark_rules"): made
    first (the dashboard's one-click "mark and trace"), removed when that session ends."""

    def __init__(self, manager, registry):
        self.manager = manager
        self.registry = registry

    def check_unowned(self, ids) -> None:
        self.registry.check_unowned(ids)

    def adopt(self, ids, sid: int) -> None:
        self.registry.adopt(ids, str(sid))
        live = self.manager.live
        if live is None or live.id != sid:   # it ended before it got them: its end hook has run
            self.registry.remove_session(str(sid))


def _register_marks(app, manager) -> None:
    """The mark-rules blueprint (/api/marks), if that part is installed; same auth as the rest.

    Its default mark is the session's (or the running one's); a session's rules go when it ends."""
    try:
        from ..marks.api import bp as marks_bp
        from ..marks.registry import REGISTRY
    except ImportError as exc:
        log.debug("no marks API: %s", exc)
        return
    except Exception as exc:  # a broken optional part must not take the dashboard down
        log.warning("marks API not loaded: %s", exc)
        return

    def default_mark(session):
        row = manager.session(int(session)) if session and str(session).isdigit() and len(str(session)) < 18 else None
        if row is None:
            row = manager.status()["active"]
        return (row["config"]["mark"], row["config"]["mask"]) if row else None

    app.config["IPFT_MARKS_DEFAULT"] = default_mark
    manager.on_end.append(lambda sid: REGISTRY.remove_session(str(sid)))
    app.config["IPFT_SESSION_RULES"] = SessionRules(manager, REGISTRY)
    app.register_blueprint(marks_bp)
