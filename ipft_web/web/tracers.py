"""Which tracer the server runs: the real one (BCC), or, for tests only, a ReplayTracer.

IPFT_WEB_TRACER=replay:PATH (or the hidden --tracer option) selects the replay of a JSON Lines
recording; IPFT_WEB_REPLAY_SPEED (default 1, 0 = as fast as polled) and IPFT_WEB_REPLAY_REPEAT
(default 1) and IPFT_WEB_REPLAY_ATTACH (seconds the fake attach takes, default 0.4) tune it. It proves nothing about tracing and skips the root check.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class TracerChoice:
    kind: str                 # "bcc" | "replay"
    path: str | None = None   # replay recording
    speed: float = 1.0
    repeat: int = 1
    attach_seconds: float = 0.4

    @property
    def is_replay(self) -> bool:
        return self.kind == "replay"

    @property
    def label(self) -> str:
        return "replay" if self.is_replay else "bcc"


def parse(spec: str | None, speed=None, repeat=None, attach=None) -> TracerChoice:
    if not spec or spec in ("bcc", "real"):
        return TracerChoice("bcc")
    if not spec.startswith("replay:") or len(spec) == len("replay:"):
        raise UsageError(f"tracer must be 'bcc' or 'replay:PATH', got {spec[:60]!r}")
    path = spec[len("replay:"):]
    if not Path(path).is_file():
        raise UsageError(f"replay recording {path!r} is not a file")
    try:
        speed = float(os.environ.get("IPFT_WEB_REPLAY_SPEED", "1") if speed is None else speed)
        repeat = int(os.environ.get("IPFT_WEB_REPLAY_REPEAT", "1") if repeat is None else repeat)
        attach = float(os.environ.get("IPFT_WEB_REPLAY_ATTACH", "0.4") if attach is None else attach)
    except ValueError:
        raise UsageError("IPFT_WEB_REPLAY_SPEED and _ATTACH must be numbers, IPFT_WEB_REPLAY_REPEAT an integer") from None
    if not (0 <= speed <= 1000 and 1 <= repeat <= 100000 and 0 <= attach <= 600):
        raise UsageError("replay speed must be 0..1000, repeat 1..100000, attach 0..600 s")
    return TracerChoice("replay", str(Path(path).resolve()), speed, repeat, attach)


def from_env(spec: str | None = None, **replay) -> TracerChoice:
    return parse(spec if spec is not None else os.environ.get("IPFT_WEB_TRACER"), **replay)


def factory(choice: TracerChoice):
    """callable(config, on_journey, on_progress) -> an object with the Tracer interface."""
    if choice.is_replay:
        from ..replay import ReplayTracer

        def make_replay(config, on_journey, on_progress):
            return ReplayTracer(config, on_journey, on_progress, path=choice.path, speed=choice.speed,
                                repeat=choice.repeat, attach_seconds=choice.attach_seconds)
        return make_replay

    def make_real(config, on_journey, on_progress):
        from ..tracer import Tracer
        return Tracer(config, on_journey, on_progress)
    return make_real


def available_backends(choice: TracerChoice) -> list[str]:
    """Backends for the start page: "auto" first, then what the kernel supports."""
    if choice.is_replay:
        return ["auto"]
    try:
        from ..kernel import features
        found = list(features.available_backends())
    except Exception:  # not written yet, or the probe failed: "auto" still works
        found = []
    return ["auto"] + [b for b in found if b != "auto"]
