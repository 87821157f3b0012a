"""Two kinds of failure a user must see as one clear line, never a traceback."""


class UsageError(Exception):
    """The user's input is wrong (CLI exit 2, HTTP 400)."""


class EnvError(Exception):
    """This machine cannot do it: no root, no BPF, no bcc, no headers (CLI exit 2, HTTP 409)."""


class Cancelled(EnvError):
    """A start stopped by the user before it was done (what it had attached is detached)."""
