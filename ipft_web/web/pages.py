"""The HTML page (the dashboard is one page; all data comes from the API and Socket.IO)."""
from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template

from .. import resources

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    ctx = current_app.extensions["ipft_web"]
    static = resources.path("static")
    return render_template("index.html", version=ctx.version, replay=ctx.choice.is_replay,
                           marks_js=(static / "marks.js").is_file(), marks_css=(static / "marks.css").is_file())


@bp.get("/favicon.ico")
def favicon():
    return redirect("/static/favicon.svg", code=301)
