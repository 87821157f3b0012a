"""Where static/, templates/ and bpf/ live: inside the installed package, or at the checkout's top."""
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """Directory `name` ("static", "templates", "bpf", "data")."""
    installed = _PKG / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name
