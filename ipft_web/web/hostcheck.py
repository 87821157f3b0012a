"""Outermost WSGI middleware: refuse requests whose Host header is not ours (DNS rebinding).

It wraps everything, Socket.IO's /socket.io endpoint included. Accepted: localhost, 127.0.0.0/8,
::1, the --host value and any --allow-host names, with or without a port.
"""
from __future__ import annotations

import ipaddress
import json

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def host_of(header: str) -> str | None:
    """The host part of a Host header, lowercased, without port or IPv6 brackets; None if malformed."""
    h = header.strip().lower()
    if not h or len(h) > 260:
        return None
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            return None
        rest = h[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return h[1:end]
    if h.count(":") == 1:
        h, port = h.split(":")
        if not port.isdigit():
            return None
    elif h.count(":") > 1:
        return None
    return h


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostCheck:
    def __init__(self, app, bind_host: str, allowed=()):
        self.app = app
        self.allowed = {h.strip("[]").lower() for h in (bind_host, *allowed) if h}
        self.allowed.discard("0.0.0.0")
        self.allowed.discard("::")

    def ok(self, header: str | None) -> bool:
        host = host_of(header or "")
        return host is not None and (is_loopback(host) or host in self.allowed)

    def __call__(self, environ, start_response):
        header = environ.get("HTTP_HOST")
        if self.ok(header):
            return self.app(environ, start_response)
        shown = (header or "")[:80]
        body = json.dumps({"error": f"Host header {shown!r} is not allowed (DNS rebinding protection);"
                                    " open ipft-web by the address it printed, or add --allow-host NAME"}).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body))),
                                         ("Cache-Control", "no-store")])
        return [body]
