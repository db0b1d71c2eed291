"""Operators `shapebridge.*`: every panel action, also usable from scripts.

Each operator turns add-on, bridge and client errors into ``self.report({'ERROR'}, ...)``
plus ``{'CANCELLED'}``, and keeps the message as the panel's "last error".
"""

from __future__ import annotations

import json

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from .. import bridge
from ..client import ClientError
from . import methods
from .prefs import get_prefs
from .state import SESSION, ShapeBridgeError, error_text

_ERRORS = (ShapeBridgeError, bridge.BridgeError, ClientError)


def _fail(op: bpy.types.Operator, exc: BaseException) -> set[str]:
    message = error_text(exc)
    SESSION.last_error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


def _poll_connected(cls, context) -> bool:
    if not SESSION.connected:
        cls.poll_message_set("Connect to a backend first")
        return False
    return True


class SHAPEBRIDGE_OT_connect(bpy.types.Operator):
    """Connect to the ShapeBridge backend at the address in the preferences"""

    bl_idname = "shapebridge.connect"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    address: StringProperty(name="Address", description="Overrides the preferences' address",
                            default="", options={"SKIP_SAVE"})

    def execute(self, context):
        prefs = get_prefs(context)
        if self.address:
            prefs.address = self.address
        try:
            info = SESSION.connect(
                prefs.address,
                server_public_key=prefs.server_public_key,
                client_secret_key=prefs.client_secret_key,
                client_public_key=prefs.client_public_key,
                timeouts=prefs.timeouts(),
            )
            methods.sync_methods(info.get("methods") or {})
        except _ERRORS as exc:
            return _fail(self, exc)
        n = len(info.get("methods") or {})
        self.report({"INFO"}, f"Connected to {prefs.address}: {info.get('device', '?')}, {n} methods")
        return {"FINISHED"}


class SHAPEBRIDGE_OT_disconnect(bpy.types.Operator):
    """Close the connection to the backend (running jobs are abandoned)"""

    bl_idname = "shapebridge.disconnect"
    bl_label = "Disconnect"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _poll_connected(cls, context)

    def execute(self, context):
        SESSION.disconnect()
        return {"FINISHED"}


class SHAPEBRIDGE_OT_start_local_backend(bpy.types.Operator):
    """Start a backend on this computer with the Python set in the preferences, then connect"""

    bl_idname = "shapebridge.start_local_backend"
    bl_label = "Start Local Backend"
    bl_options = {"REGISTER"}

    timeout: FloatProperty(name="Startup timeout", default=60.0, min=1.0, max=600.0,
                           description="Seconds to wait for the backend to listen")

    @classmethod
    def poll(cls, context):
        if SESSION.local_running:
            cls.poll_message_set("A local backend is already running")
            return False
        return True

    def execute(self, context):
        prefs = get_prefs(context)
        try:
            address = SESSION.start_local_backend(
                prefs.python, prefs.local_address, prefs.extra_args, prefs.workdir,
                startup_timeout=self.timeout,
            )
            prefs.address = address
        except (ShapeBridgeError, OSError) as exc:
            return _fail(self, exc)
        return bpy.ops.shapebridge.connect()


class SHAPEBRIDGE_OT_stop_local_backend(bpy.types.Operator):
    """Stop the backend this Blender started"""

    bl_idname = "shapebridge.stop_local_backend"
    bl_label = "Stop Local Backend"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not SESSION.local_running:
            cls.poll_message_set("No local backend was started from this Blender")
            return False
        return True

    def execute(self, context):
        SESSION.stop_local_backend()
        return {"FINISHED"}


class SHAPEBRIDGE_OT_run_method(bpy.types.Operator):
    """Send the method's inputs and parameters to the backend; the result appears in the
    "ShapeBridge" collection"""

    bl_idname = "shapebridge.run_method"
    bl_label = "Run Method"
    bl_options = {"REGISTER"}

    method: StringProperty(name="Method", description="Name of the backend method to run")
    params_json: StringProperty(
        name="Parameters (JSON)", default="", options={"SKIP_SAVE"},
        description="JSON object of parameters overriding the panel's values, "
        'e.g. {"scale": 2.0}; scripts can also set parameters hidden from the panel',
    )
    inputs_json: StringProperty(
        name="Inputs (JSON)", default="", options={"SKIP_SAVE"},
        description='JSON object naming the object (or image) per input, e.g. {"mesh": "Suzanne"}; '
        "inputs not named come from the panel's fields, then the selection",
    )
    wait: EnumProperty(
        name="Wait",
        items=[
            ("AUTO", "Auto", "Block in background mode (no timers there), else return at once"),
            ("BLOCK", "Block", "Wait for the result and add it before returning"),
            ("ASYNC", "Async", "Return at once; the result is added when it arrives"),
        ],
        default="AUTO",
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context):
        return _poll_connected(cls, context)

    @classmethod
    def description(cls, context, properties):
        schema = SESSION.methods.get(properties.method)
        return (schema or {}).get("description") or cls.__doc__

    def execute(self, context):
        try:
            schema = SESSION.methods.get(self.method)
            if schema is None:
                raise ShapeBridgeError(
                    f"the backend offers no method '{self.method}'; it offers "
                    f"{', '.join(sorted(SESSION.methods)) or 'none'}"
                )
            settings = getattr(context.scene, methods.settings_attr(self.method), None)
            params = methods.params_from_settings(settings, schema) if settings else {}
            params.update(_json_object(self.params_json, "parameters"))
            explicit = {k: _lookup(v) for k, v in _json_object(self.inputs_json, "inputs").items()}
            sources = methods.resolve_sources(context, schema, settings, explicit)
            record = SESSION.submit(context, schema, sources, params)
            block = self.wait == "BLOCK" or (self.wait == "AUTO" and bpy.app.background)
            if not block:
                self.report({"INFO"}, f"{record.title}: sent")
                return {"FINISHED"}
            objs = SESSION.wait(record, get_prefs(context).job_timeout)
        except _ERRORS as exc:
            return _fail(self, exc)
        self.report({"INFO"}, f"{record.title}: added {', '.join(o.name for o in objs)}")
        if record.warning:
            self.report({"WARNING"}, f"{record.title}: {record.warning}")
        return {"FINISHED"}


def _json_object(text: str, what: str) -> dict:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShapeBridgeError(f"the {what} JSON is not valid: {exc}") from None
    if not isinstance(value, dict):
        raise ShapeBridgeError(f"the {what} JSON must be an object like {{\"name\": value}}")
    return value


def _lookup(name: str):
    """An object or image by name, for inputs named in JSON."""
    found = bpy.data.objects.get(name) or bpy.data.images.get(name)
    if found is None:
        raise ShapeBridgeError(f"there is no object or image named '{name}'")
    return found


class SHAPEBRIDGE_OT_cancel_job(bpy.types.Operator):
    """Ask the backend to stop this job"""

    bl_idname = "shapebridge.cancel_job"
    bl_label = "Cancel Job"
    bl_options = {"REGISTER"}

    job_id: StringProperty(name="Job id")

    def execute(self, context):
        try:
            SESSION.cancel(self.job_id)
        except ShapeBridgeError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class SHAPEBRIDGE_OT_clear_jobs(bpy.types.Operator):
    """Remove finished jobs from the list (their objects stay) and clear the last error"""

    bl_idname = "shapebridge.clear_jobs"
    bl_label = "Clear Finished Jobs"
    bl_options = {"REGISTER"}

    def execute(self, context):
        SESSION.clear_finished()
        SESSION.last_error = ""
        return {"FINISHED"}


CLASSES = (
    SHAPEBRIDGE_OT_connect,
    SHAPEBRIDGE_OT_disconnect,
    SHAPEBRIDGE_OT_start_local_backend,
    SHAPEBRIDGE_OT_stop_local_backend,
    SHAPEBRIDGE_OT_run_method,
    SHAPEBRIDGE_OT_cancel_job,
    SHAPEBRIDGE_OT_clear_jobs,
)
