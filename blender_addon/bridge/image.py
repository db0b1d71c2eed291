"""Images: Blender image pixels as an (H, W, C) array with the TOP row first."""

from __future__ import annotations

import bpy
import numpy as np

from .common import BridgeError


def read_image(image: bpy.types.Image) -> np.ndarray:
    """Read an image datablock's pixels.

    Returns (H, W, C) float32, C = image.channels (usually 4, RGBA), values as Blender stores
    them (linear for float images, [0, 1] display-referred for 8-bit ones), TOP row first
    (Blender stores the bottom row first; the rows are flipped here).
    Raises BridgeError when the image has no pixel data (a missing file, say).
    """
    if image is None:
        raise BridgeError("no image was given; pick an image in the method's input field")
    width, height = (int(s) for s in image.size)
    channels = int(image.channels)
    if width == 0 or height == 0 or channels == 0:
        raise BridgeError(
            f"image '{image.name}' has no pixels (is its file missing?); "
            "reload it or pick another image"
        )
    flat = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    return np.ascontiguousarray(flat.reshape(height, width, channels)[::-1])

