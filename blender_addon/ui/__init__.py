"""The add-on's Blender side: preferences, operators, sidebar panels and the timer drain.

`register` adds the static classes and a persistent `bpy.app.timers` function that drains
the client's callback queue on the main thread; per-method settings and panels are added
after connecting (`methods.sync_methods`). `unregister` stops the timer, closes the
client, stops a local backend and removes everything it registered.
"""

from __future__ import annotations

import bpy

from . import candidates, methods, operators, panels, prefs, state

_CLASSES = (prefs.ShapeBridgePreferences, *operators.CLASSES, *panels.CLASSES,
            *candidates.CLASSES)
_added_addon_entry = False


def register() -> None:
    global _added_addon_entry
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    # A script that calls register() directly (not via Preferences > Add-ons) has no add-on
    # entry, so there would be no preferences; add one and remove it again on unregister.
    addons = bpy.context.preferences.addons
    _added_addon_entry = addons.get(state.ADDON_ID) is None
    prefs.get_prefs(bpy.context)
    if not bpy.app.timers.is_registered(state.timer):
        bpy.app.timers.register(state.timer, first_interval=0.1, persistent=True)


def unregister() -> None:
    global _added_addon_entry
    if bpy.app.timers.is_registered(state.timer):
        bpy.app.timers.unregister(state.timer)
    state.SESSION.shutdown()
    methods.unregister_all()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    if _added_addon_entry:
        entry = bpy.context.preferences.addons.get(state.ADDON_ID)
        if entry is not None:
            bpy.context.preferences.addons.remove(entry)
        _added_addon_entry = False
