"""Stepping through ranked alternatives of one result ("Retrieve & Deform" candidates).

A candidate is a top-level result object carrying the custom property ``shapebridge_rank``
(from its output's meta ``rank``); the candidates of one job (``shapebridge_job``) form a
group. Exactly one candidate of a group is shown at a time (the others hidden in the view
layer and in renders, with their children); "Keep" deletes the other candidates of the
group. Each operator is one undo step.
"""

from __future__ import annotations

import bpy
from bpy.props import IntProperty, StringProperty

from .panels import CATEGORY

RANK = "shapebridge_rank"
JOB = "shapebridge_job"


def candidate_groups(scene: bpy.types.Scene) -> dict[str, list[bpy.types.Object]]:
    """Job id -> that job's candidate objects in the scene, best rank first."""
    groups: dict[str, list[bpy.types.Object]] = {}
    for obj in scene.objects:
        if obj.parent is None and RANK in obj.keys():
            groups.setdefault(str(obj.get(JOB, "")), []).append(obj)
    for objs in groups.values():
        objs.sort(key=lambda o: (int(o[RANK]), o.name))
    return groups


def _root(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    while obj is not None and obj.parent is not None:
        obj = obj.parent
    return obj


def find_group(context: bpy.types.Context, job: str = "") -> tuple[str, list[bpy.types.Object]]:
    """The group named by ``job``; else the active object's group; else the only group.

    Raises ValueError naming what to select when no group can be chosen.
    """
    groups = candidate_groups(context.scene)
    if job:
        if job not in groups:
            raise ValueError(f"no candidates of job '{job}' are left in the scene")
        return job, groups[job]
    root = _root(getattr(context, "active_object", None))
    if root is not None and RANK in root.keys():
        key = str(root.get(JOB, ""))
        return key, groups[key]
    if len(groups) == 1:
        return next(iter(groups.items()))
    if not groups:
        raise ValueError("the scene has no result candidates; run Retrieve & Deform first")
    raise ValueError("several results have candidates; select one of the candidates first")


def current_index(objs: list[bpy.types.Object], view_layer: bpy.types.ViewLayer) -> int:
    """Index of the first candidate shown in the view layer (0 when all are hidden)."""
    for i, obj in enumerate(objs):
        if not obj.hide_get(view_layer=view_layer):
            return i
    return 0


def _family(obj: bpy.types.Object) -> list[bpy.types.Object]:
    return [obj, *obj.children_recursive]


def show_candidate(objs: list[bpy.types.Object], index: int,
                   view_layer: bpy.types.ViewLayer) -> bpy.types.Object:
    """Show candidate ``index`` (with its children), hide the others; make it active."""
    for i, root in enumerate(objs):
        for obj in _family(root):
            obj.hide_set(i != index, view_layer=view_layer)
            obj.hide_render = i != index
    shown = objs[index]
    for obj in view_layer.objects:
        if obj.select_get(view_layer=view_layer):
            obj.select_set(False, view_layer=view_layer)
    shown.select_set(True, view_layer=view_layer)
    view_layer.objects.active = shown
    return shown


def _group_or_report(op: bpy.types.Operator, context) -> list | None:
    """The candidate roots of the operator's job, or None after reporting why there are none."""
    try:
        return find_group(context, op.job)[1]
    except ValueError as exc:
        op.report({"ERROR"}, str(exc))
        return None


class SHAPEBRIDGE_OT_step_candidate(bpy.types.Operator):
    """Show the next (or previous) candidate of a result and hide the others"""

    bl_idname = "shapebridge.step_candidate"
    bl_label = "Step Candidate"
    bl_options = {"REGISTER", "UNDO"}

    direction: IntProperty(name="Direction", default=1, min=-1, max=1,
                           description="+1: next candidate, -1: previous (wraps around)")
    job: StringProperty(name="Job", default="", options={"SKIP_SAVE"},
                        description="Job whose candidates to step (empty: the active object's)")

    def execute(self, context):
        objs = _group_or_report(self, context)
        if objs is None:
            return {"CANCELLED"}
        index = (current_index(objs, context.view_layer) + self.direction) % len(objs)
        shown = show_candidate(objs, index, context.view_layer)
        self.report({"INFO"}, f"candidate {index + 1} of {len(objs)}: {shown.name}")
        return {"FINISHED"}


class SHAPEBRIDGE_OT_keep_candidate(bpy.types.Operator):
    """Keep the shown candidate of a result and delete the others"""

    bl_idname = "shapebridge.keep_candidate"
    bl_label = "Keep Candidate"
    bl_options = {"REGISTER", "UNDO"}

    job: StringProperty(name="Job", default="", options={"SKIP_SAVE"},
                        description="Job whose candidates to reduce (empty: the active object's)")

    def execute(self, context):
        objs = _group_or_report(self, context)
        if objs is None:
            return {"CANCELLED"}
        index = current_index(objs, context.view_layer)
        kept = show_candidate(objs, index, context.view_layer)
        for i, root in enumerate(objs):
            if i == index:
                continue
            for obj in reversed(_family(root)):
                data = obj.data
                bpy.data.objects.remove(obj, do_unlink=True)
                if isinstance(data, bpy.types.Mesh) and data.users == 0:
                    bpy.data.meshes.remove(data)
        self.report({"INFO"}, f"kept {kept.name}; deleted {len(objs) - 1} other candidate(s)")
        return {"FINISHED"}


class SHAPEBRIDGE_PT_candidates(bpy.types.Panel):
    bl_label = "Candidates"
    bl_idname = "SHAPEBRIDGE_PT_candidates"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_order = 900

    @classmethod
    def poll(cls, context):
        return bool(candidate_groups(context.scene))

    def draw(self, context):
        layout = self.layout
        for job, objs in candidate_groups(context.scene).items():
            index = current_index(objs, context.view_layer)
            shown = objs[index]
            box = layout.box()
            method = shown.get("shapebridge_method", "result")
            box.label(text=f"{method}: candidate {index + 1} of {len(objs)}", icon="OUTLINER")
            box.label(text=shown.name, icon="OBJECT_DATA")
            if "shapebridge_source_name" in shown.keys():
                box.label(text=f"Source: {shown['shapebridge_source_name']}")
            for key, text in (("shapebridge_fit_chamfer_l2sq", "Fit (chamfer)"),
                              ("shapebridge_retrieval_distance", "Retrieval distance")):
                if key in shown.keys():
                    box.label(text=f"{text}: {float(shown[key]):.4g}")
            row = box.row(align=True)
            op = row.operator("shapebridge.step_candidate", text="Previous", icon="TRIA_LEFT")
            op.direction, op.job = -1, job
            op = row.operator("shapebridge.step_candidate", text="Next", icon="TRIA_RIGHT")
            op.direction, op.job = 1, job
            box.operator("shapebridge.keep_candidate", text="Keep", icon="CHECKMARK").job = job


CLASSES = (SHAPEBRIDGE_OT_step_candidate, SHAPEBRIDGE_OT_keep_candidate,
           SHAPEBRIDGE_PT_candidates)
