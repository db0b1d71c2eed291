"""bpy <-> numpy: the only place in the add-on that reads or writes Blender data as arrays.

Reading: meshes (vertices, triangles, world matrix), point sets, images (top row first)
and cameras (OpenCV K, R, t through `blender_addon.conventions`). Writing: meshes through
attribute layers (with colour attributes, shape keys and part vertex groups), empties,
cameras, and whole backend results (`apply_result`), built unlinked first and linked into
the "ShapeBridge" collection only when every piece was built, with one undo step.

Every function validates its arrays and raises `BridgeError` (a ValueError) with a sentence
the artist can act on.
"""

from .common import BridgeError
from .image import read_image
from .inputs import input_arrays
from .mesh import new_mesh, read_mesh, read_points
from .results import COLLECTION_NAME, apply_result

__all__ = [
    "BridgeError",
    "COLLECTION_NAME",
    "apply_result",
    "input_arrays",
    "new_mesh",
    "read_image",
    "read_mesh",
    "read_points",
]
