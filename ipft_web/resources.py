"""Where static/, templates/ and bpf/ live: inside the installed package, or at the checkout's top."""
import os
from pathlib import Path

# abspath, not resolve(): resolve() lstat()s every directory of the path at each start
_PKG = Path(os.path.dirname(os.path.abspath(__file__)))


def path(name: str) -> Path:
    """Directory `name` ("static", "templates", "bpf", "data")."""
    installed = _PKG / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name
