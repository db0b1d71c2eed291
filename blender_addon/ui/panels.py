"""Sidebar panels in the 3D View's "ShapeBridge" tab: backend status and jobs.

The per-method panels are generated from the backend's schemas in `methods`.
"""

from __future__ import annotations

import time

import bpy

from .methods import _wrap
from .prefs import get_prefs
from .state import SESSION

CATEGORY = "ShapeBridge"
_HAS_PROGRESS = "progress" in bpy.types.UILayout.bl_rna.functions  # Blender 4.0+

_STATE_ICONS = {
    "pending": "TIME", "queued": "SORTTIME", "running": "PLAY", "done": "CHECKMARK",
    "error": "ERROR", "cancelled": "CANCEL",
}


def _gib(nbytes) -> str:
    try:
        return f"{float(nbytes) / 2**30:.1f} GiB free"
    except (TypeError, ValueError):
        return ""


class SHAPEBRIDGE_PT_backend(bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "SHAPEBRIDGE_PT_backend"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 0

    def draw_header(self, context):
        self.layout.label(icon="LINKED" if SESSION.connected else "UNLINKED")

    def draw(self, context):
        layout = self.layout
        prefs = get_prefs(context)
        box = layout.box()
        if SESSION.connected:
            info = SESSION.server_info
            box.label(text="Connected", icon="CHECKMARK")
            box.label(text=SESSION.client.address, icon="URL")
            proto = ".".join(str(v) for v in info.get("protocol") or []) or "?"
            box.label(text=f"Version {info.get('version', '?')}", icon="INFO")
            box.label(text=f"Protocol {proto}", icon="BLANK1")
            device = info.get("gpu_name") or info.get("device") or "?"
            box.label(text=f"Device: {device}", icon="MEMORY")
            if info.get("free_memory"):
                box.label(text=_gib(info["free_memory"]), icon="BLANK1")
            names = sorted(SESSION.methods)
            box.label(text=f"Methods: {len(names)}", icon="MODIFIER")
            for line in _wrap(", ".join(names), context):
                box.label(text="   " + line)
            layout.operator("shapebridge.disconnect", icon="UNLINKED")
        else:
            box.label(text="Not connected", icon="UNLINKED")
            box.prop(prefs, "address", text="")
            row = layout.row()
            row.scale_y = 1.3
            row.operator("shapebridge.connect", icon="LINKED")
        row = layout.row(align=True)
        if SESSION.local_running:
            row.label(text=f"Local backend running (pid {SESSION.local_backend.pid})", icon="CONSOLE")
            row.operator("shapebridge.stop_local_backend", text="", icon="X")
        else:
            row.operator("shapebridge.start_local_backend", icon="CONSOLE")
        if SESSION.last_error:
            box = layout.box()
            box.alert = True
            lines = _wrap(SESSION.last_error, context)
            box.label(text=lines[0], icon="ERROR")
            for line in lines[1:]:
                box.label(text=line)
            box.operator("shapebridge.clear_jobs", text="Dismiss", icon="X")
        if not SESSION.connected:
            layout.label(text="Connect to see the methods", icon="INFO")


class SHAPEBRIDGE_PT_jobs(bpy.types.Panel):
    bl_label = "Jobs"
    bl_idname = "SHAPEBRIDGE_PT_jobs"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 1000

    def draw(self, context):
        layout = self.layout
        if not SESSION.jobs:
            layout.label(text="No jobs yet", icon="INFO")
            return
        now = time.monotonic()
        for record in reversed(list(SESSION.jobs.values())):
            box = layout.box()
            state = record.state
            row = box.row()
            row.label(text=f"{record.title}", icon=_STATE_ICONS.get(state, "QUESTION"))
            if record.active:
                row.operator("shapebridge.cancel_job", text="", icon="X").job_id = record.job_id
            future = record.future
            if record.active:
                text = f"{future.stage or state} {future.fraction:.0%}"
                if _HAS_PROGRESS:
                    box.progress(factor=future.fraction, type="BAR", text=text)
                else:
                    box.label(text=text, icon="SORTTIME")
                if future.message:
                    box.label(text=future.message)
            elif state == "done":
                seconds = (record.finished or now) - record.submitted
                box.label(text=f"Added {', '.join(record.objects) or 'nothing'} ({seconds:.1f} s)")
                for line in _wrap(record.warning, context) if record.warning else ():
                    box.label(text=line, icon="ERROR")
            elif state == "error":
                for line in _wrap(record.error, context):
                    box.label(text=line)
            else:
                box.label(text=state.capitalize())
        layout.operator("shapebridge.clear_jobs", icon="TRASH")


class SHAPEBRIDGE_PT_trajectory(bpy.types.Panel):
    """The 0-1 slider of a result with a trajectory (Match Shape): its shape keys follow
    the active object's ``shapebridge_t`` custom property."""

    bl_label = "Trajectory"
    bl_idname = "SHAPEBRIDGE_PT_trajectory"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 950

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and "shapebridge_t" in obj.keys()

    def draw(self, context):
        obj = context.active_object
        self.layout.label(text=obj.name, icon="SHAPEKEY_DATA")
        self.layout.prop(obj, '["shapebridge_t"]', text="t (source → target)", slider=True)


CLASSES = (SHAPEBRIDGE_PT_backend, SHAPEBRIDGE_PT_jobs, SHAPEBRIDGE_PT_trajectory)
