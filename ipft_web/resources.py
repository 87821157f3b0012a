"""Where static/, templates/ and bpf/ live: inside the installed package, or at the checkout's top."""
import os

# abspath, not resolve(): resolve() lstat()s every directory of the path at each start
_PKG = os.path.dirname(os.path.abspath(__file__))


def where(name: str) -> str:
    """Directory `name` ("static", "templates", "bpf", "data"), as a string (without pathlib, which
    the way to tracing does not import)."""
    installed = os.path.join(_PKG, name)
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(_PKG), name)


def path(name: str):
    """where(name) as a pathlib.Path."""
    from pathlib import Path
    return Path(where(name))
