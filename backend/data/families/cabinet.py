"""Cabinet family: closed body with 0-4 doors and 0-4 drawers (knob or bar handles), or
an open-shelf carcass; optional legs or plinth and top slab. Metres, front +Z, left = -X."""

from __future__ import annotations

import numpy as np

from backend.data.families.chair import CORNER_NAMES, draw_choice
from backend.data.shapes import Shape, ShapeBuilder

_SIGNS = ((-1, 1), (1, 1), (-1, -1), (1, -1))


def _handle(b: ShapeBuilder, style: str, x: float, y: float, z_face: float, size: tuple,
            vertical: bool, length: float) -> np.ndarray:
    """Add a knob or bar handle on a front panel whose front face is at ``z_face``;
    returns its front-most point (the handle keypoint)."""
    if style == "knob":
        knob_r, stem = size
        b.cylinder("handle", (x, y, z_face + stem / 2 - 0.002), knob_r * 0.45, stem / 2 + 0.002,
                   np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]))
        b.sphere("handle", (x, y, z_face + stem), knob_r)
        return np.array([x, y, z_face + stem + knob_r])
    bar_t, stand = size
    along = np.array([0.0, 1.0, 0.0]) if vertical else np.array([1.0, 0.0, 0.0])
    z_bar = z_face + stand + bar_t
    half = np.array([bar_t, bar_t, bar_t]) + along * (length / 2 - bar_t)
    b.box("handle", (x, y, z_bar), half)
    for s in (-1.0, 1.0):
        c = np.array([x, y, z_face + (stand + bar_t) / 2]) + along * s * (length / 2 - bar_t)
        b.box("handle", c, (bar_t * 0.8, bar_t * 0.8, (stand + bar_t) / 2 + 0.002))
    return np.array([x, y, z_bar + bar_t])


def build_cabinet(rng: np.random.Generator, seed: int) -> Shape:
    """Draw one cabinet from ``rng``; see docs/data.md for variants and keypoints."""
    b = ShapeBuilder("cabinet")
    u = rng.uniform
    variant = draw_choice(rng, ("closed", "open_shelves"), (0.8, 0.2))
    support = draw_choice(rng, ("none", "legs", "plinth"), (0.35, 0.35, 0.3))
    width, body_h, depth = u(0.4, 1.6), u(0.4, 1.9), u(0.3, 0.65)
    y0 = {"none": 0.0, "legs": u(0.06, 0.18), "plinth": u(0.05, 0.12)}[support]
    y1 = y0 + body_h
    hx, hz = width / 2, depth / 2

    n_doors = n_drawers = n_shelves = 0
    handle_style = None
    if variant == "closed":
        b.box_span("body", (-hx, y0, -hz), (hx, y1, hz))
        n_drawers, n_doors = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        handle_style = draw_choice(rng, ("knob", "bar"), (0.5, 0.5))
        margin, gap, panel_t = u(0.01, 0.03), u(0.006, 0.012), u(0.015, 0.025)
        z_face = hz + panel_t / 2
        size = ((u(0.01, 0.018), u(0.015, 0.03)) if handle_style == "knob"
                else (u(0.005, 0.009), u(0.015, 0.03)))
        front_lo, front_hi = y0 + margin, y1 - margin
        drawer_h = 0.0
        if n_drawers:
            share = 1.0 if n_doors == 0 else min(0.6, n_drawers * u(0.12, 0.2) / body_h + 0.1)
            drawer_h = (front_hi - front_lo) * share / n_drawers
        for i in range(n_drawers):  # stacked full-width rows from the top
            top = front_hi - i * drawer_h
            lo, hi = top - drawer_h + gap / 2, top - gap / 2
            b.box_span("drawer", (-hx + margin, lo, hz - panel_t / 2),
                       (hx - margin, hi, z_face))
            length = min(u(0.08, 0.25), (width - 2 * margin) * 0.6)
            point = _handle(b, handle_style, 0.0, (lo + hi) / 2, z_face, size, False, length)
            if i == 0:
                b.keypoints["drawer_handle"] = point
        door_top = front_hi - n_drawers * drawer_h
        door_w = (width - 2 * margin) / max(n_doors, 1)
        for i in range(n_doors):  # side by side, handles near the meeting edges
            x0 = -hx + margin + i * door_w
            lo_x, hi_x = x0 + gap / 2, x0 + door_w - gap / 2
            b.box_span("door", (lo_x, front_lo, hz - panel_t / 2), (hi_x, door_top - gap / 2,
                                                                     z_face))
            centre_x = (lo_x + hi_x) / 2
            hx_handle = (hi_x - 0.05) if centre_x <= 1e-9 else (lo_x + 0.05)
            if n_doors == 1:
                hx_handle = hi_x - 0.05
            door_hgt = door_top - gap / 2 - front_lo
            y_handle = front_lo + door_hgt * (0.5 if door_hgt < 0.8 else 0.62)
            length = min(u(0.1, 0.3), door_hgt * 0.5)
            point = _handle(b, handle_style, hx_handle, y_handle, z_face, size, True, length)
            if i == 0:
                b.keypoints["door_handle"] = point
    else:  # open carcass: two sides, bottom, top, back and shelves
        bt = u(0.015, 0.03)
        for sx in (-1.0, 1.0):
            b.box_span("body", (sx * hx - (sx > 0) * bt, y0, -hz), (sx * hx + (sx < 0) * bt, y1, hz))
        b.box_span("body", (-hx + bt / 2, y0, -hz), (hx - bt / 2, y0 + bt, hz))
        b.box_span("body", (-hx + bt / 2, y1 - bt, -hz), (hx - bt / 2, y1, hz))
        b.box_span("body", (-hx + bt / 2, y0 + bt / 2, -hz), (hx - bt / 2, y1 - bt / 2,
                                                                -hz + bt * 0.6))
        n_shelves = int(rng.integers(1, 5))
        setback = u(0.0, 0.04)
        pitch = (body_h - 2 * bt) / (n_shelves + 1)
        for i in range(n_shelves):
            y = y0 + bt + pitch * (i + 1)
            b.box_span("shelf", (-hx + bt / 2, y - bt / 2, -hz + bt / 2),
                       (hx - bt / 2, y + bt / 2, hz - setback))

    top_slab = bool(rng.random() < 0.3)
    y_top, tx, tz = y1, hx, hz
    if top_slab:
        over, slab_t = u(0.005, 0.03), u(0.02, 0.04)
        tx, tz, y_top = hx + over, hz + over + 0.025, y1 + slab_t
        b.box_span("top", (-tx, y1 - 0.005, -hz - over), (tx, y_top, tz))
        b.keypoints.update({f"top_{n}": (sx * tx, y_top, (tz if sz > 0 else -hz - over))
                            for n, (sx, sz) in zip(CORNER_NAMES, _SIGNS)})
    else:
        b.keypoints.update({f"top_{n}": (sx * tx, y_top, sz * tz)
                            for n, (sx, sz) in zip(CORNER_NAMES, _SIGNS)})
    b.keypoints["body_bottom_front_left"] = (-hx, y0, hz)
    b.keypoints["body_bottom_front_right"] = (hx, y0, hz)

    leg_style = None
    if support == "legs":
        leg_style = draw_choice(rng, ("square", "round"), (0.5, 0.5))
        lt, inset = u(0.015, 0.03), u(0.01, 0.05)
        xs, zs = hx - inset - lt, hz - inset - lt
        for name, (sx, sz) in zip(CORNER_NAMES, _SIGNS):
            c = (sx * xs, (y0 + 0.01) / 2, sz * zs)
            if leg_style == "square":
                b.box("leg", c, (lt, (y0 + 0.01) / 2, lt))
            else:
                b.cylinder("leg", c, lt, (y0 + 0.01) / 2)
            b.keypoints[f"leg_end_{name}"] = (sx * xs, 0.0, sz * zs)
    elif support == "plinth":
        inset = u(0.02, 0.06)
        b.box_span("plinth", (-hx + inset, 0.0, -hz + inset), (hx - inset, y0 + 0.01, hz - inset))

    attributes = {
        "variant": variant, "n_doors": n_doors, "n_drawers": n_drawers, "handle": handle_style,
        "support": support, "legs": leg_style, "top_slab": top_slab, "n_shelves": n_shelves,
    }
    return b.build(seed, attributes)
