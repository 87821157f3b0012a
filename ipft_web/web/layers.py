"""Kernel function -> network stack layer, from the rules in data/layers.json.

The same file is served to the browser (/api/layers), so the swimlane and the Chrome trace export
put a function in the same lane.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from .. import resources


class LayerTable:
    def __init__(self, data: dict):
        self.data = data
        self.layers = [dict(layer) for layer in data["layers"]]
        self.ids = [layer["id"] for layer in self.layers]
        self.default = data.get("default", "other")
        if self.default not in self.ids:
            raise ValueError(f"default layer {self.default!r} is not among the layers")
        self.rules = []
        for rule in data["rules"]:
            if rule["layer"] not in self.ids:
                raise ValueError(f"rule {rule['match']!r} names an unknown layer {rule['layer']!r}")
            self.rules.append((re.compile(rule["match"]), rule["layer"]))
        self.classify = functools.lru_cache(maxsize=8192)(self._classify)

    def _classify(self, func: str) -> str:
        for pattern, layer in self.rules:
            if pattern.search(func):
                return layer
        return self.default

    def label(self, layer_id: str) -> str:
        for layer in self.layers:
            if layer["id"] == layer_id:
                return layer["label"]
        return layer_id

    def as_dict(self) -> dict:
        return {"default": self.default, "layers": self.layers,
                "rules": [{"layer": layer, "match": p.pattern} for p, layer in self.rules]}


def default_path() -> Path:
    return resources.path("data") / "layers.json"


@functools.lru_cache(maxsize=4)
def load(path: str | None = None) -> LayerTable:
    with open(path or default_path(), encoding="utf-8") as f:
        return LayerTable(json.load(f))
