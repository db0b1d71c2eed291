"""Add-on preferences: backend address, CURVE keys, local backend command, timeouts."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from ..client import Timeouts
from .state import ADDON_ID

_DEFAULTS = Timeouts()


class ShapeBridgePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    address: StringProperty(
        name="Backend address",
        description="ZeroMQ address of the backend, e.g. tcp://127.0.0.1:5557 or "
        "tcp://gpu-server:5557 (a remote backend needs CURVE keys)",
        default="tcp://127.0.0.1:5557",
    )
    server_public_key: StringProperty(
        name="Server public key",
        description="Remote backends only: the server's public key (40 Z85 characters) or "
        "the path of its .key file from `shapebridge keys`",
        default="",
    )
    client_secret_key: StringProperty(
        name="Client secret key",
        description="Remote backends only: this machine's secret key (40 Z85 characters) or "
        "the path of its .key_secret file",
        default="",
        subtype="NONE",
    )
    client_public_key: StringProperty(
        name="Client public key",
        description="Remote backends only: this machine's public key (Z85 or a file); "
        "may stay empty when the secret key is a .key_secret file",
        default="",
    )
    python: StringProperty(
        name="Backend Python",
        description="Python executable of the environment where ShapeBridge's backend is "
        "installed (empty: the Python running Blender)",
        default="",
        subtype="FILE_PATH",
    )
    extra_args: StringProperty(
        name="Extra arguments",
        description="Extra arguments for `python -m backend serve`, e.g. --device cpu",
        default="",
    )
    workdir: StringProperty(
        name="Working folder",
        description="Folder the local backend starts in (e.g. the ShapeBridge checkout); "
        "empty: Blender's current folder",
        default="",
        subtype="DIR_PATH",
    )
    local_address: StringProperty(
        name="Local address",
        description="Address the local backend binds; tcp://127.0.0.1:* picks a free port",
        default="tcp://127.0.0.1:*",
    )
    connect_timeout: FloatProperty(
        name="Connect", description="Seconds to wait for the backend's hello",
        default=_DEFAULTS.connect, min=0.1, max=600.0, unit="TIME_ABSOLUTE",
    )
    request_timeout: FloatProperty(
        name="Accept", description="Seconds to wait for the backend to accept a job",
        default=_DEFAULTS.request, min=0.1, max=600.0, unit="TIME_ABSOLUTE",
    )
    inactivity_timeout: FloatProperty(
        name="Silence",
        description="Seconds of silence from the backend during a job before it counts as "
        "gone (the backend sends a heartbeat every second)",
        default=_DEFAULTS.inactivity, min=0.5, max=3600.0, unit="TIME_ABSOLUTE",
    )
    job_timeout: FloatProperty(
        name="Job (blocking)",
        description="Longest wait for a result when a run blocks (background mode, scripts)",
        default=600.0, min=1.0, max=86400.0, unit="TIME_ABSOLUTE",
    )
    show_advanced: BoolProperty(name="Show timeouts and keys", default=False)

    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.connect_timeout,
            request=self.request_timeout,
            inactivity=self.inactivity_timeout,
        )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "address", icon="URL")
        box = layout.box()
        box.label(text="Local backend", icon="CONSOLE")
        box.prop(self, "python")
        box.prop(self, "workdir")
        box.prop(self, "local_address")
        box.prop(self, "extra_args")
        layout.prop(self, "show_advanced", icon="PREFERENCES")
        if self.show_advanced:
            box = layout.box()
            box.label(text="Remote backend (CURVE encryption)", icon="LOCKED")
            box.prop(self, "server_public_key")
            box.prop(self, "client_secret_key")
            box.prop(self, "client_public_key")
            box = layout.box()
            box.label(text="Timeouts (seconds)", icon="TIME")
            row = box.row()
            row.prop(self, "connect_timeout")
            row.prop(self, "request_timeout")
            row = box.row()
            row.prop(self, "inactivity_timeout")
            row.prop(self, "job_timeout")


def get_prefs(context: bpy.types.Context | None = None) -> ShapeBridgePreferences:
    """The add-on's preferences; registers the add-on entry first if a script called
    `register()` directly instead of enabling the add-on."""
    context = context or bpy.context
    addons = context.preferences.addons
    entry = addons.get(ADDON_ID)
    if entry is None:
        entry = addons.new()
        entry.module = ADDON_ID
    return entry.preferences
