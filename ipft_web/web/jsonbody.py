"""Request bodies as strict JSON objects: one parser for every POST route.

Strict: UTF-8, no NaN/Infinity, no key given twice, nesting that cannot exhaust the parser
(a RecursionError is a bad body like any other), and an object at the top. Every refusal is
a UsageError (HTTP 400) with one line.
"""
from __future__ import annotations

import json

from ..errors import UsageError


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise UsageError(f"field {str(key)!r:.40} is given twice")
        out[key] = value
    return out


def _refuse_constant(name):
    raise ValueError(name)   # NaN, Infinity


def parse_object(raw: bytes, what: str = "the request body") -> dict:
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UsageError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a JSON object")
    return data
