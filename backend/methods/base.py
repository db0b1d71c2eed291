"""The method plugin interface: config dataclass -> parameter schema, inputs, outputs, infer.

A method is a subclass of `Method` with

- ``Config``: a dataclass whose defaults are the paper's values; each field documents
  itself through ``param(default, doc, ...)`` so the server can publish a schema and the
  Blender panel can draw it;
- ``inputs``: named input groups of a kind (mesh, points, image, camera) that arrive as
  arrays ``"<input>.<field>"`` and are validated by `blender_addon.protocol`;
- ``infer(inputs, config, ctx) -> MethodResult``: pure compute; reports progress and
  checks for cancellation through ``ctx``.

Outputs are `Output` records of a kind the Blender side knows how to build (see
``docs/protocol.md``: mesh, empties, camera).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from blender_addon.protocol import ErrorCode, ProtocolError, validate_inputs


class JobCancelled(Exception):
    """Raised inside a method by `JobContext.check_cancelled` when the client cancelled."""


def param(
    default: Any,
    doc: str,
    *,
    min: float | None = None,  # noqa: A002 - schema vocabulary
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    ui: bool = True,
) -> Any:
    """A config field with its documentation and bounds (read by `config_schema`).

    ui=False keeps a field out of the Blender panel (still settable by scripts).
    """
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "ui": ui}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}


def config_schema(config_cls: type) -> list[dict[str, Any]]:
    """Parameter schema of a config dataclass, as published in ``hello``.

    Each entry: name, type (bool|int|float|str|enum), default, doc, min, max, choices, ui.
    """
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        t = hints[f.name]
        meta = f.metadata
        choices = meta.get("choices")
        if isinstance(t, type) and issubclass(t, enum.Enum):
            choices = tuple(e.value for e in t)
            kind = "enum"
        elif choices:
            kind = "enum"
        else:
            kind = _TYPES.get(t)
            if kind is None:
                continue  # structured fields (lists, nested) are script-only
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, enum.Enum):
            default = default.value
        out.append(
            {
                "name": f.name,
                "type": kind,
                "default": default,
                "doc": meta.get("doc", ""),
                "min": meta.get("min"),
                "max": meta.get("max"),
                "choices": list(choices) if choices else None,
                "ui": meta.get("ui", True),
            }
        )
    return out


def make_config(config_cls: type, params: Mapping[str, Any]) -> Any:
    """Build a config from wire params, checking names, types and bounds (BAD_PARAMS)."""
    schema = {s["name"]: s for s in config_schema(config_cls)}
    unknown = sorted(set(params) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_PARAMS,
            f"unknown parameter(s) {', '.join(unknown)}; this method takes {', '.join(schema)}",
        )
    values = {}
    for name, value in params.items():
        s = schema.get(name)
        if s is None:
            values[name] = value  # structured field: passed through as is
            continue
        values[name] = _coerce(name, value, s)
    return config_cls(**values)


def _coerce(name: str, value: Any, s: Mapping[str, Any]) -> Any:
    kind = s["type"]
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "enum": isinstance(value, str),
    }[kind]
    if not ok:
        raise ProtocolError(
            ErrorCode.BAD_PARAMS, f"parameter {name!r} must be {kind}, got {type(value).__name__}"
        )
    if kind == "float":
        value = float(value)
        if not np.isfinite(value):
            raise ProtocolError(ErrorCode.BAD_PARAMS, f"parameter {name!r} must be finite")
    if kind in ("int", "float"):
        if s["min"] is not None and value < s["min"]:
            raise ProtocolError(ErrorCode.BAD_PARAMS, f"parameter {name!r} = {value} is below its minimum {s['min']}")
        if s["max"] is not None and value > s["max"]:
            raise ProtocolError(ErrorCode.BAD_PARAMS, f"parameter {name!r} = {value} is above its maximum {s['max']}")
    if kind == "enum" and value not in s["choices"]:
        raise ProtocolError(
            ErrorCode.BAD_PARAMS, f"parameter {name!r} = {value!r} is not one of {', '.join(s['choices'])}"
        )
    return value


@dataclass(frozen=True)
class InputSpec:
    """A named input of a method. kind: mesh | points | image | camera."""

    name: str
    kind: str
    doc: str = ""
    optional: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Output:
    """One result item the Blender side turns into scene data.

    name: unique within the result; arrays travel as ``"<name>.<field>"``.
    kind: "mesh" (vertices (V,3) f32, faces (F,3) i32, optional face_parts (F,) i32 with
        meta["part_labels"], shape_keys (K,V,3) f32 with meta["shape_key_names"],
        colors (V,4) f32 with meta["color_name"]), "empties" (positions (K,3) f32 with
        meta["names"]), "camera" (K, R, t, size as OpenCV, see conventions).
    meta: object name, placement (name of the input whose world transform the result
        takes), scores and anything else stored as custom properties.
    """

    name: str
    kind: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodResult:
    outputs: list[Output]
    scores: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class JobContext:
    """What a running method sees of its job: progress reporting and cancellation."""

    def __init__(
        self,
        job_id: str,
        report: Callable[[float, str, str, Mapping[str, np.ndarray] | None], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        device: str = "cpu",
    ):
        self.job_id = job_id
        self._report = report
        self._cancelled = cancelled or (lambda: False)
        self.device = device

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Report progress in [0, 1]; also a cancellation point."""
        self.check_cancelled()
        if self._report is not None:
            self._report(fraction, stage, message, preview)

    def check_cancelled(self) -> None:
        if self._cancelled():
            raise JobCancelled(self.job_id)


class Method:
    """Base class of a registered method. Subclasses set the class attributes and `infer`."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    paper: ClassVar[str] = ""
    Config: ClassVar[type]
    inputs: ClassVar[tuple[InputSpec, ...]]
    output_kinds: ClassVar[tuple[str, ...]]

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.loaded = False

    def load(self) -> None:
        """Load checkpoints (called once, lazily, on the worker thread)."""
        self.loaded = True

    def models(self) -> list[str]:
        """Names of the models (checkpoints) this method has loaded."""
        return []

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "title": cls.title,
            "description": cls.description,
            "paper": cls.paper,
            "params": config_schema(cls.Config),
            "inputs": [i.as_dict() for i in cls.inputs],
            "outputs": list(cls.output_kinds),
        }

    @classmethod
    def validate(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
        """Check inputs and params of a submit; return the config. Raises ProtocolError."""
        validate_inputs(arrays, [i.as_dict() for i in cls.inputs])
        return make_config(cls.Config, params)

    def infer(self, inputs: Mapping[str, np.ndarray], config: Any, ctx: JobContext) -> MethodResult:
        raise NotImplementedError
