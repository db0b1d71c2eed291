"""ShapeBridge Blender add-on: sidebar panel, operators and bridge to a ShapeBridge backend.

Layout: `protocol` (wire format, no bpy), `client` (socket I/O thread, no bpy), `bridge`
(the only bpy <-> numpy conversions), `ui` (preferences, panels, operators, session state),
`api` (a small Python API for batch scripts). This file imports no bpy at module level:
the backend imports `blender_addon.protocol`, which runs this file where bpy may not exist.
All imports inside the add-on are relative, because Blender's extension system installs it
under another package name (``bl_ext.<repo>.shapebridge``).
"""

bl_info = {
    "name": "ShapeBridge",
    "author": "ShapeBridge developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > ShapeBridge",
    "description": "Run learned 3D-shape methods on a local or remote ShapeBridge backend",
    "doc_url": "https://github.com/shapebridge/shapebridge/blob/main/docs/addon.md",
    "category": "3D View",
}


def register() -> None:
    """Register preferences, operators and panels (called by Blender when the add-on is enabled)."""
    from . import ui

    ui.register()


def unregister() -> None:
    """Stop jobs, the local backend and the timer; unregister every class the add-on added."""
    from . import ui

    ui.unregister()
