"""Bind, then serve the app: eventlet's WSGI server or, with --async-mode threading, Werkzeug's
threaded one. The socket is bound first (so the URL is printed only once it works) and without
SO_REUSEPORT (eventlet's default), so a second ipft-web on the same port fails instead of silently
sharing it."""
from __future__ import annotations

import socket


def bind(host: str, port: int, async_mode: str):
    """The listening socket; OSError when the address cannot be had."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, addr = infos[0]
    if async_mode == "eventlet":
        import eventlet
        return eventlet.listen(addr, family, reuse_port=False)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app, sock, host: str, port: int, async_mode: str) -> None:
    """Blocks until interrupted (KeyboardInterrupt)."""
    if async_mode == "eventlet":
        import eventlet.wsgi
        eventlet.wsgi.server(sock, app, log_output=False, debug=False)
        return
    from werkzeug.serving import make_server
    server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    try:
        server.serve_forever()
    finally:
        server.server_close()
