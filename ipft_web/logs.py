"""Loggers for the modules on the way to tracing, that import logging only when they must.

    log = logs.get_logger(__name__)      # then log.debug/info/warning/error/exception as with logging
    logs.configure(logs.INFO, "ipft: %(message)s")   # the CLI's logging.basicConfig()

Where logging is loaded (the dashboard, tests, a program using ipft_web), every call goes to the
logging logger of that name, as `logging.getLogger(name)` would. Where it is not and the CLI has
configured its level and format, a record is written to stderr in that format without loading it:
logging imports traceback, linecache, tokenize, textwrap, string, weakref, about 0.2 s of every
`ipft` start under emulation (tests/test_startup.py). A record with exc_info loads logging.
"""
from __future__ import annotations

import sys

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}

_config: dict = {}   # level, format: set by configure()


def configure(level: int, fmt: str) -> None:
    """logging.basicConfig(level=level, format=fmt) for a program (the CLI): applied to logging
    if it is loaded now or later, and used for the records written while it is not."""
    _config.update(level=level, format=fmt, applied=False)
    if "logging" in sys.modules:
        _apply(sys.modules["logging"])


def _apply(logging) -> None:
    if _config and not _config["applied"]:
        _config["applied"] = True
        logging.basicConfig(level=_config["level"], format=_config["format"])


def _logging():
    import logging
    _apply(logging)
    return logging


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _log(self, level: int, msg, args, exc_info=None, **kw) -> None:
        if _config and exc_info is None and not kw and "logging" not in sys.modules:
            if level >= _config["level"]:
                if len(args) == 1 and isinstance(args[0], dict) and args[0]:
                    args = args[0]   # as logging does: log.info("%(n)d", {"n": 1})
                text = str(msg) % args if args else str(msg)
                sys.stderr.write(_config["format"] % {"message": text, "levelname": _NAMES.get(level, str(level)),
                                                      "name": self.name} + "\n")
            return
        _logging().getLogger(self.name).log(level, msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg, *args, **kw) -> None:
        self._log(DEBUG, msg, args, **kw)

    def info(self, msg, *args, **kw) -> None:
        self._log(INFO, msg, args, **kw)

    def warning(self, msg, *args, **kw) -> None:
        self._log(WARNING, msg, args, **kw)

    def error(self, msg, *args, **kw) -> None:
        self._log(ERROR, msg, args, **kw)

    def exception(self, msg, *args, exc_info=True, **kw) -> None:
        self._log(ERROR, msg, args, exc_info=exc_info, **kw)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802  (logging's name)
        if _config and "logging" not in sys.modules:
            return level >= _config["level"]
        return _logging().getLogger(self.name).isEnabledFor(level)


def get_logger(name: str) -> Logger:
    return Logger(name)
