"""Token authentication for every HTTP route and every Socket.IO connection.

The server prints a URL with a fresh token; opening it trades the token for an HttpOnly,
SameSite=Strict cookie and redirects to the same page without it, so it leaves the address bar.
API clients send `Authorization: Bearer TOKEN`; Socket.IO clients the cookie or auth={"token": ...}.
"""
from __future__ import annotations

import hmac
import re
import secrets

from flask import Response, jsonify, redirect, request

COOKIE = "ipft_web_auth"
MAX_TOKEN = 256
OPEN_PATHS = ("/login",)   # the token exchange itself (checks the token it is given)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token_value(token: str) -> str:
    """A user-chosen --token: long enough to resist guessing, and safe in a URL as it is."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]{16,%d}" % MAX_TOKEN, token):
        raise ValueError(f"the token must be 16 to {MAX_TOKEN} characters among A-Z a-z 0-9 . _ ~ -")
    return token


class Auth:
    def __init__(self, token: str, secure_cookie: bool = False):
        self.token = check_token_value(token)
        self.secure_cookie = secure_cookie

    def valid(self, candidate) -> bool:
        if not isinstance(candidate, str) or not candidate or len(candidate) > MAX_TOKEN:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def request_token(self, req) -> str | None:
        header = req.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        return req.cookies.get(COOKIE)

    def authorized(self, req) -> bool:
        return self.valid(self.request_token(req))

    def socket_authorized(self, req, auth) -> bool:
        if isinstance(auth, dict) and self.valid(auth.get("token")):
            return True
        return self.authorized(req)

    def set_cookie(self, resp: Response) -> Response:
        resp.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/", secure=self.secure_cookie)
        return resp

    # -- Flask wiring --------------------------------------------------------------------
    def install(self, app) -> None:
        app.before_request(self._before)
        app.add_url_rule("/login", "login", self._login, methods=["POST"])

    def _before(self):
        if request.path in OPEN_PATHS:
            return None
        if "token" in request.args and request.method == "GET" and not request.path.startswith("/api/"):
            return self._exchange()
        if self.authorized(request):
            return None
        return self.unauthorized()

    def _exchange(self):
        """GET /page?token=T: a valid token becomes the cookie, the address loses it."""
        if not self.valid(request.args.get("token")):
            return self.unauthorized("the token in this link is wrong (ipft-web prints a new one at each start)")
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        target = request.path
        if args:
            from urllib.parse import urlencode
            target += "?" + urlencode(args)
        return self.set_cookie(redirect(target, code=303))

    def _login(self):
        token = request.form.get("token", "") if request.mimetype == "application/x-www-form-urlencoded" else ""
        if not self.valid(token.strip()):
            return self.unauthorized("wrong token")
        return self.set_cookie(redirect("/", code=303))

    @staticmethod
    def unauthorized(message: str = "authentication required: open the URL ipft-web printed at start, "
                     "or send Authorization: Bearer TOKEN"):
        if request.path.startswith("/api/") or request.path.startswith("/socket.io") \
                or request.accept_mimetypes.best == "application/json":
            resp = jsonify(error=message)
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="ipft-web"'
            return resp
        return Response(LOGIN_PAGE.replace("{message}", _escape(message)), status=401,
                        mimetype="text/html")


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ipft-web: sign in</title></head>
<body>
<h1>ipft-web</h1>
<p>{message}</p>
<form method="post" action="/login">
<label>Token <input name="token" type="password" autocomplete="off" autofocus></label>
<button type="submit">Open</button>
</form>
</body></html>
"""
