"""Socket.IO handlers: authenticated connections receive the live session's events.

Browsers only listen ("status", "journeys", "ended"); starting and stopping go through the API.
"""
from __future__ import annotations

from flask import request
from flask_socketio import ConnectionRefusedError, emit


def register(socketio, auth, manager) -> None:
    @socketio.on("connect")
    def connect(data=None):
        if not auth.socket_authorized(request, data):
            raise ConnectionRefusedError("unauthorized: send the token (cookie, Bearer header or auth={token})")
        emit("status", manager.status())

    @socketio.on("status")
    def status(_data=None):
        return manager.status()
