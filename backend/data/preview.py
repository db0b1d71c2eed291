"""Contact sheet of a dataset: per shape, its mesh coloured by part with its keypoints,
and a few of its stored RGB renders.

The part view re-renders the stored mesh through the stored OpenCV camera of view 0
(intrinsics scaled to the tile size) and projects the stored keypoints through the same
camera, so a misplaced dot or a view that does not match render 0 shows a camera bug.
Keypoints are labelled by their id (index into the manifest's ``keypoint_names``); a
filled dot is visible, a ring is hidden behind the surface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.data.render import project_points, render_part_colours
from backend.data.store import DatasetReader, read_manifest

PART_SIZE = 192
THUMB_SIZE = 96
CAPTION = 16
PAD = 6


def dataset_dirs(root: str | Path) -> list[Path]:
    """``root`` if it is a dataset, else its sub-directories that are (``--category all``)."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    subs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()) if (
        root.is_dir()
    ) else []
    if not subs:
        raise ValueError(
            f"{root} holds no dataset (no manifest.json in it or its sub-directories)"
        )
    for p in subs:
        read_manifest(p)
    return subs


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def shape_tile(reader: DatasetReader, i: int, thumbs: int = 4):
    """One PIL image: part-coloured view 0 with keypoints, 2x2 stored renders, caption."""
    from PIL import Image, ImageDraw

    cams = reader.renders(i)
    res = cams["rgb"].shape[1]
    scale = PART_SIZE / res
    K = np.array(cams["K"][:1], dtype=np.float32)
    K[:, :2] *= scale  # same camera at the tile's resolution
    R = np.array(cams["R"][:1])
    t = np.array(cams["t"][:1])
    mesh = reader.mesh(i)
    labels = reader.ragged(i, "part_label_ids")
    rgb, depth = render_part_colours(
        mesh["vertices"], mesh["faces"], mesh["face_parts"], labels, K, R, t, PART_SIZE
    )
    part = Image.fromarray(rgb[0])
    draw = ImageDraw.Draw(part)
    font = _font(11)
    kp = np.asarray(reader.field(i, "keypoints"))
    present = np.asarray(reader.field(i, "keypoint_mask"))
    if present.any():
        uv, z = project_points(kp[present], K, R, t)
        for k, (u, v), zk in zip(np.flatnonzero(present), uv[0], z[0]):
            col, row = int(u), int(v)
            inside = 0 <= col < PART_SIZE and 0 <= row < PART_SIZE
            visible = inside and (depth[0, row, col] == 0 or zk <= depth[0, row, col] + 0.01)
            box = (u - 3, v - 3, u + 3, v + 3)
            if visible:
                draw.ellipse(box, fill=(20, 20, 20), outline=(255, 255, 255))
            else:
                draw.ellipse(box, outline=(20, 20, 20), width=1)
            draw.text((u + 4, v - 6), str(k), fill=(0, 0, 0), font=font)

    n = min(thumbs, cams["rgb"].shape[0])
    tile = Image.new("RGB", (PART_SIZE + 2 * THUMB_SIZE, PART_SIZE + CAPTION), "white")
    tile.paste(part, (0, CAPTION))
    for j in range(n):
        thumb = Image.fromarray(np.asarray(cams["rgb"][j])).resize(
            (THUMB_SIZE, THUMB_SIZE), Image.BILINEAR
        )
        tile.paste(thumb, (PART_SIZE + (j % 2) * THUMB_SIZE, CAPTION + (j // 2) * THUMB_SIZE))
    split = reader[i]["split"]
    caption = f"{reader.category} #{i} ({split})  views 0-{n - 1}"
    ImageDraw.Draw(tile).text((2, 1), caption, fill=(0, 0, 0), font=_font(12))
    return tile


def contact_sheet(roots: list[str | Path], count: int = 16, columns: int = 2):
    """PIL image of ``count`` shapes taken in turn from each dataset directory in ``roots``
    (the first shapes of each), ``columns`` tiles per row."""
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    readers = [DatasetReader(r) for r in roots]
    picks: list[tuple[DatasetReader, int]] = []
    k = 0
    while len(picks) < count and k < max(len(r) for r in readers):
        picks += [(r, k) for r in readers if k < len(r)][: count - len(picks)]
        k += 1
    picks.sort(key=lambda p: readers.index(p[0]))  # group by category
    tiles = [shape_tile(r, i) for r, i in picks]
    from PIL import Image

    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (w + PAD) + PAD, rows * (h + PAD) + PAD), (200, 200, 200))
    for j, tile in enumerate(tiles):
        sheet.paste(tile, (PAD + (j % columns) * (w + PAD), PAD + (j // columns) * (h + PAD)))
    return sheet


def write_preview(root: str | Path, out: str | Path, count: int = 16, columns: int = 2) -> Path:
    """Write the contact sheet of the dataset(s) at ``root`` to the PNG ``out``."""
    sheet = contact_sheet(dataset_dirs(root), count, columns)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out
