"""Method registry: the one list of methods the server, the CLI and the Blender panel read.

A method module registers its `Method` subclass with `@register`. Importing this package
imports every built-in method module (cheap: heavy imports such as torch happen inside
`Method.load` / `infer`).
"""

from __future__ import annotations

import importlib

from backend.methods.base import Method

REGISTRY: dict[str, type[Method]] = {}

# Built-in method modules, imported on first use of the registry.
BUILTIN_MODULES = (
    "backend.methods.diagnostic",
    "backend.methods.retrieval_deformation.method",
    "backend.methods.feature_matching.method",
)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Method]]:
    """All registered methods by name (imports the built-in modules once)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(REGISTRY)
