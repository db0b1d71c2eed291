"""A small Python API for batch scripts inside Blender (``blender --background --python``).

    import blender_addon.api as sb            # or the installed add-on's package name
    sb.connect("tcp://127.0.0.1:5557")
    objs = sb.run("mesh_stats", objects=[bpy.data.objects["Suzanne"]], scale=2.0)

Everything blocks until done and raises `ShapeBridgeError` with a plain sentence on
failure. The same session serves the panel, so a script and the UI share the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bpy

from .ui import methods as _methods
from .ui.prefs import get_prefs
from .ui.state import SESSION, ShapeBridgeError, error_text

__all__ = ["ShapeBridgeError", "connect", "disconnect", "method_names", "run", "schema"]


def _ensure_registered() -> None:
    if not hasattr(bpy.types, "SHAPEBRIDGE_OT_run_method"):
        from . import register

        register()


def connect(address: str | None = None, *, timeout: float | None = None) -> dict[str, Any]:
    """Connect to a backend (default: the preferences' address); return its hello info
    (version, device, methods and their schemas). Registers the add-on if needed."""
    _ensure_registered()
    prefs = get_prefs()
    if address:
        prefs.address = address
    timeouts = prefs.timeouts()
    if timeout is not None:
        timeouts.connect = timeout
    try:
        info = SESSION.connect(
            prefs.address,
            server_public_key=prefs.server_public_key,
            client_secret_key=prefs.client_secret_key,
            client_public_key=prefs.client_public_key,
            timeouts=timeouts,
        )
    except Exception as exc:
        raise ShapeBridgeError(error_text(exc)) from None
    _methods.sync_methods(info.get("methods") or {})
    return info


def disconnect() -> None:
    """Close the connection."""
    SESSION.disconnect()


def method_names() -> list[str]:
    """Names of the methods the connected backend offers."""
    return sorted(SESSION.methods)


def schema(method: str) -> dict[str, Any]:
    """The parameter and input schema of a method (see `backend.methods.base.Method.schema`)."""
    found = SESSION.methods.get(method)
    if found is None:
        raise ShapeBridgeError(f"the backend offers no method '{method}'; it offers "
                               f"{', '.join(method_names()) or 'none (connect first)'}")
    return found


def run(
    method: str,
    objects: Sequence[Any] = (),
    *,
    timeout: float | None = None,
    **params: Any,
) -> list[bpy.types.Object]:
    """Run a method on objects/images and return the new objects (in "ShapeBridge").

    objects: datablocks assigned to the method's inputs in order (objects for mesh, points
        and camera inputs, images for image inputs); inputs left over come from the
        selection. params: method parameters; unnamed ones keep the backend's defaults.
    timeout: seconds to wait (default: the preferences' job timeout).
    """
    spec = schema(method)
    inputs = spec.get("inputs", [])
    if len(objects) > len(inputs):
        raise ShapeBridgeError(f"{method} takes {len(inputs)} input(s), got {len(objects)} objects")
    explicit = {i["name"]: obj for i, obj in zip(inputs, objects)}
    context = bpy.context
    try:
        sources = _methods.resolve_sources(context, spec, None, explicit)
        record = SESSION.submit(context, spec, sources, params)
    except Exception as exc:
        raise ShapeBridgeError(error_text(exc)) from None
    return SESSION.wait(record, timeout if timeout is not None else get_prefs().job_timeout)
