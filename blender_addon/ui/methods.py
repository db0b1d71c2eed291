"""Per-method settings and panels generated from the backend's parameter schemas.

After connecting, `sync_methods` builds for every published method a PropertyGroup class
(one property per parameter with its doc, bounds and enum items, plus one pointer per
input) attached to `bpy.types.Scene` as ``shapebridge_<method>``, and a sidebar panel
drawing it with a Run button. A class is rebuilt only when its schema changed, so values
survive reconnecting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import bpy
import numpy as np
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .state import SESSION, ShapeBridgeError

INPUT_PREFIX = "input_"
_INT32 = 2**31 - 1

# method name -> (schema json, PropertyGroup class, Panel class)
_REGISTERED: dict[str, tuple[str, type, type]] = {}


def settings_attr(method: str) -> str:
    """Name of the Scene pointer property holding a method's settings."""
    return f"shapebridge_{method}"


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def param_property(p: Mapping[str, Any]) -> Any:
    """The bpy property for one schema parameter ({name, type, default, doc, min, max, choices})."""
    kind, doc, name = p["type"], p.get("doc") or "", _label(p["name"])
    kw: dict[str, Any] = {"name": name, "description": doc}
    if kind in ("int", "float"):
        for bound in ("min", "max"):
            if p.get(bound) is not None:
                kw[bound] = p[bound]
        if kind == "int":
            kw = {k: (max(-_INT32, min(_INT32, int(v))) if k in ("min", "max") else v)
                  for k, v in kw.items()}
            return IntProperty(default=int(p["default"]), **kw)
        return FloatProperty(default=float(p["default"]), **kw)
    if kind == "bool":
        return BoolProperty(default=bool(p["default"]), **kw)
    if kind == "str":
        return StringProperty(default=str(p["default"] or ""), **kw)
    if kind == "enum":
        items = [(c, _label(str(c)), f"{doc}: {c}") for c in p["choices"]]
        return EnumProperty(items=items, default=str(p["default"]), **kw)
    raise ShapeBridgeError(f"parameter {p['name']!r} has type {kind!r}, which the panel cannot draw")


def _poll_for(kind: str):
    wanted = {"mesh": {"MESH"}, "points": {"MESH"}, "camera": {"CAMERA"}}[kind]
    return lambda _self, obj: obj.type in wanted


def input_property(spec: Mapping[str, Any]) -> Any:
    """The pointer property for one method input: an object (mesh, points, camera) or image."""
    doc = spec.get("doc") or ""
    desc = f"{doc}. Empty: taken from the selection" if doc else "Empty: taken from the selection"
    if spec["kind"] == "image":
        return PointerProperty(type=bpy.types.Image, name=_label(spec["name"]), description=desc)
    return PointerProperty(type=bpy.types.Object, name=_label(spec["name"]), description=desc,
                           poll=_poll_for(spec["kind"]))


def make_settings_class(schema: Mapping[str, Any]) -> type:
    """A PropertyGroup subclass for a method schema (parameters with ui=True, and inputs)."""
    ann: dict[str, Any] = {}
    for p in schema.get("params", []):
        if p.get("ui", True):
            ann[p["name"]] = param_property(p)
    for spec in schema.get("inputs", []):
        if spec["kind"] in ("mesh", "points", "camera", "image"):
            ann[INPUT_PREFIX + spec["name"]] = input_property(spec)
    name = f"SHAPEBRIDGE_PG_{schema['name']}"
    return type(name, (bpy.types.PropertyGroup,), {"__annotations__": ann, "__doc__": schema.get("description", "")})


def _float32_value(value: float) -> float:
    """A FloatProperty's value as the number the user typed.

    Blender stores float properties in float32, so 0.01 reads back as 0.009999999776.
    The shortest decimal that rounds to the same float32 (at most 9 significant digits)
    is the value that was set.
    """
    f32 = np.float32(value)
    for digits in range(6, 10):
        candidate = float(f"{f32:.{digits}g}")
        if np.float32(candidate) == f32:
            return candidate
    return float(f32)


def params_from_settings(settings: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values of a settings PropertyGroup as the backend expects them."""
    out: dict[str, Any] = {}
    casts = {"int": int, "float": _float32_value, "bool": bool, "str": str, "enum": str}
    for p in schema.get("params", []):
        if p.get("ui", True) and hasattr(settings, p["name"]):
            out[p["name"]] = casts[p["type"]](getattr(settings, p["name"]))
    return out


def _candidates(context: bpy.types.Context, kind: str) -> list:
    """Selection-derived sources for an input kind, the active object first."""
    selected = list(getattr(context, "selected_objects", None) or [])
    active = getattr(context, "active_object", None)
    ordered = ([active] if active is not None and active in selected else []) + sorted(
        (o for o in selected if o is not active), key=lambda o: o.name
    )
    if active is not None and active not in ordered:
        ordered.insert(0, active)
    if kind in ("mesh", "points"):
        return [o for o in ordered if o.type == "MESH"]
    if kind == "camera":
        cams = [o for o in ordered if o.type == "CAMERA"]
        scene_cam = context.scene.camera
        return cams + ([scene_cam] if scene_cam is not None and scene_cam not in cams else [])
    if kind == "image":
        return [o.data for o in ordered
                if o.type == "EMPTY" and o.empty_display_type == "IMAGE" and o.data is not None]
    return []


def resolve_sources(
    context: bpy.types.Context,
    schema: Mapping[str, Any],
    settings: Any = None,
    explicit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pick the datablock for each input: `explicit` (name -> object/image), then the
    settings' pointer, then the selection (active object first), never the same twice.

    Raises ShapeBridgeError naming the missing input and what to select.
    """
    explicit = dict(explicit or {})
    used: set[int] = set()
    chosen: dict[str, Any] = {}
    title = schema.get("title") or schema["name"]
    for spec in schema.get("inputs", []):
        name, kind = spec["name"], spec["kind"]
        source = explicit.get(name)
        if source is None and settings is not None:
            source = getattr(settings, INPUT_PREFIX + name, None)
        if source is None:
            source = next((c for c in _candidates(context, kind) if id(c) not in used), None)
        if source is None and not spec.get("optional"):
            where = "pick an image in the panel or select an image empty" if kind == "image" \
                else f"select a {kind if kind != 'points' else 'mesh'} object"
            raise ShapeBridgeError(f"{title} needs a {kind} for '{name}' ({spec.get('doc') or name}); {where}")
        if source is not None:
            used.add(id(source))
        chosen[name] = source
    return chosen


def _run_panel_draw(self, context: bpy.types.Context) -> None:
    schema = SESSION.methods.get(self.method_name)
    layout = self.layout
    if schema is None:
        layout.label(text="Not offered by the connected backend", icon="INFO")
        return
    settings = getattr(context.scene, settings_attr(self.method_name), None)
    if schema.get("description"):
        for line in _wrap(schema["description"], context):
            layout.label(text=line)
    if schema.get("paper"):
        layout.label(text=f"Paper: {schema['paper']}", icon="TEXT")
    col = layout.column(align=True)
    col.label(text="Inputs", icon="IMPORT")
    for spec in schema.get("inputs", []):
        prop = INPUT_PREFIX + spec["name"]
        if settings is not None and hasattr(settings, prop):
            col.prop(settings, prop, text=_label(spec["name"]))
    try:
        picked = resolve_sources(context, schema, settings)
        summary = ", ".join(f"{k}: {v.name}" for k, v in picked.items() if v is not None)
        col.label(text=summary or "no inputs", icon="CHECKMARK")
        ready = True
    except ShapeBridgeError as exc:
        for line in _wrap(str(exc), context):
            col.label(text=line, icon="INFO")
        ready = False
    params = [p for p in schema.get("params", []) if p.get("ui", True)]
    if params and settings is not None:
        col = layout.column()
        col.label(text="Parameters", icon="PREFERENCES")
        for p in params:
            if p["type"] == "enum":  # label above: the sidebar is too narrow for both
                col.label(text=_label(p["name"]))
                col.prop(settings, p["name"], text="")
            else:
                col.prop(settings, p["name"])
    row = layout.row()
    row.scale_y = 1.4
    row.enabled = ready and SESSION.connected
    op = row.operator("shapebridge.run_method", text=f"Run {schema.get('title') or schema['name']}",
                      icon="PLAY")
    op.method = schema["name"]


def _wrap(text: str, context: bpy.types.Context, min_chars: int = 16) -> list[str]:
    import textwrap

    width = getattr(getattr(context, "region", None), "width", 300) or 300
    chars = max(min_chars, int((width - 50) / 7))
    return textwrap.wrap(text, chars) or [""]


def make_panel_class(schema: Mapping[str, Any], order: int) -> type:
    """A sidebar panel class for one method."""
    name = schema["name"]
    return type(
        f"SHAPEBRIDGE_PT_method_{name}",
        (bpy.types.Panel,),
        {
            "bl_label": schema.get("title") or name,
            "bl_space_type": "VIEW_3D",
            "bl_region_type": "UI",
            "bl_category": "ShapeBridge",
            "bl_order": 10 + order,
            "method_name": name,
            "draw": _run_panel_draw,
        },
    )


def sync_methods(schemas: Mapping[str, Mapping[str, Any]]) -> None:
    """Register settings and panel classes for the given schemas; drop stale ones."""
    for name in [n for n in _REGISTERED if n not in schemas]:
        _unregister_method(name)
    for order, (name, schema) in enumerate(sorted(schemas.items())):
        key = json.dumps(schema, sort_keys=True, default=str)
        if name in _REGISTERED and _REGISTERED[name][0] == key:
            continue
        if name in _REGISTERED:
            _unregister_method(name)
        pg = make_settings_class(schema)
        panel = make_panel_class(schema, order)
        bpy.utils.register_class(pg)
        setattr(bpy.types.Scene, settings_attr(name), PointerProperty(type=pg))
        bpy.utils.register_class(panel)
        _REGISTERED[name] = (key, pg, panel)


def _unregister_method(name: str) -> None:
    _key, pg, panel = _REGISTERED.pop(name)
    bpy.utils.unregister_class(panel)
    if hasattr(bpy.types.Scene, settings_attr(name)):
        delattr(bpy.types.Scene, settings_attr(name))
    bpy.utils.unregister_class(pg)


def unregister_all() -> None:
    for name in list(_REGISTERED):
        _unregister_method(name)


def settings_class(method: str) -> type | None:
    """The registered PropertyGroup class of a method (None before connecting)."""
    entry = _REGISTERED.get(method)
    return entry[1] if entry else None
