"""Table family: round or rectangular tops; four-leg, pedestal or trestle bases; optional
apron and lower shelf; coffee, dining and bar heights. Metres, front +Z, left = -X."""

from __future__ import annotations

import math

import numpy as np

from backend.data.families.chair import CORNER_NAMES, draw_choice
from backend.data.shapes import Shape, ShapeBuilder, rot_y

_SIGNS = ((-1, 1), (1, 1), (-1, -1), (1, -1))  # (x, z) signs in CORNER_NAMES order


def build_table(rng: np.random.Generator, seed: int) -> Shape:
    """Draw one table from ``rng``; see docs/data.md for variants and keypoints."""
    b = ShapeBuilder("table")
    u = rng.uniform
    top_shape = draw_choice(rng, ("rect", "round"), (0.6, 0.4))
    height_class = draw_choice(rng, ("coffee", "dining", "bar"), (0.3, 0.5, 0.2))
    if top_shape == "round":
        base = draw_choice(rng, ("four_legs", "pedestal"), (0.5, 0.5))
    else:
        base = draw_choice(rng, ("four_legs", "pedestal", "trestle"), (0.55, 0.15, 0.3))
    height = {"coffee": u(0.36, 0.48), "dining": u(0.70, 0.78), "bar": u(0.95, 1.08)}[
        height_class]
    top_t = u(0.02, 0.06)
    y_under = height - top_t

    # ---- top; half sizes (hx, hz) of the region the base must stay within
    if top_shape == "rect":
        width = {"coffee": u(0.6, 1.3), "dining": u(0.8, 1.9), "bar": u(0.5, 1.2)}[
            height_class]
        if base == "pedestal":
            width = min(width, 1.1)
        depth = max(0.45, width * u(0.4, 1.0))
        b.box_span("top", (-width / 2, y_under, -depth / 2), (width / 2, height, depth / 2))
        hx, hz = width / 2, depth / 2
        for name, (sx, sz) in zip(CORNER_NAMES, _SIGNS):
            b.keypoints[f"top_{name}"] = (sx * hx, height, sz * hz)
    else:
        radius = u(0.25, 0.4) if height_class == "bar" else u(0.3, 0.6)
        b.cylinder("top", (0.0, height - top_t / 2, 0.0), radius, top_t / 2)
        hx = hz = radius / math.sqrt(2.0)
        for name, (sx, sz) in zip(CORNER_NAMES, _SIGNS):
            b.keypoints[f"top_{name}"] = (sx * hx, height, sz * hz)
    b.keypoints["top_center"] = (0.0, height, 0.0)
    y_leg_top = y_under + top_t / 2

    leg_style, apron, shelf, foot = None, False, False, None
    if base == "four_legs":
        leg_style = draw_choice(rng, ("square", "round", "tapered"), (0.4, 0.35, 0.25))
        lt = u(0.015, 0.045)
        if top_shape == "rect":
            xs, zs = hx - u(0.02, 0.12) - lt, hz - u(0.02, 0.1) - lt
        else:
            xs = zs = hx * u(0.7, 0.95) - lt
        taper = u(0.45, 0.8)
        for name, (sx, sz) in zip(CORNER_NAMES, _SIGNS):
            c = (sx * xs, y_leg_top / 2, sz * zs)
            if leg_style == "square":
                b.box("leg", c, (lt, y_leg_top / 2, lt))
            elif leg_style == "round":
                b.cylinder("leg", c, lt, y_leg_top / 2)
            else:
                b.frustum("leg", c, lt * taper, lt, y_leg_top / 2)
            b.keypoints[f"foot_{name}"] = (sx * xs, 0.0, sz * zs)
        apron = bool(rng.random() < 0.5)
        if apron:
            ah, at = u(0.04, 0.12), min(u(0.008, 0.015), lt * 0.8)
            y0 = y_under - ah
            b.box_span("apron", (-xs, y0, zs - at), (xs, y_leg_top, zs + at))
            b.box_span("apron", (-xs, y0, -zs - at), (xs, y_leg_top, -zs + at))
            b.box_span("apron", (xs - at, y0, -zs), (xs + at, y_leg_top, zs))
            b.box_span("apron", (-xs - at, y0, -zs), (-xs + at, y_leg_top, zs))
        shelf = bool(rng.random() < 0.35)
        if shelf:
            y_shelf = u(0.08, 0.3) * height
            st = u(0.012, 0.025)
            b.box_span("shelf", (-xs, y_shelf - st, -zs), (xs, y_shelf, zs))
            b.keypoints["shelf_center"] = (0.0, y_shelf, 0.0)
    elif base == "pedestal":
        foot = draw_choice(rng, ("disc", "cross"), (0.5, 0.5))
        col_r = u(0.035, 0.09)
        reach = max(u(0.55, 0.85) * min(hx, hz) * math.sqrt(2.0), col_r * 2.5)
        foot_t = u(0.02, 0.05)
        if rng.random() < 0.5:
            b.cylinder("pedestal", (0.0, y_leg_top / 2, 0.0), col_r, y_leg_top / 2)
        else:
            b.frustum("pedestal", (0.0, y_leg_top / 2, 0.0), col_r * u(1.2, 2.0), col_r,
                      y_leg_top / 2)
        diagonals = [math.atan2(sx, sz) for sx, sz in _SIGNS]
        if foot == "disc":
            b.cylinder("pedestal", (0.0, foot_t / 2, 0.0), reach, foot_t / 2)
        else:
            arm_w = u(0.02, 0.04)
            for a in diagonals:
                direction = np.array([math.sin(a), 0.0, math.cos(a)])
                b.box("pedestal", direction * reach / 2 + (0.0, foot_t / 2, 0.0),
                      (reach / 2, foot_t / 2, arm_w), rot_y(a - math.pi / 2))
        for name, a in zip(CORNER_NAMES, diagonals):
            b.keypoints[f"foot_{name}"] = (reach * math.sin(a), 0.0, reach * math.cos(a))
    else:  # trestle: two end frames joined by a stretcher
        xt = hx - u(0.08, 0.25) * hx
        up_x, up_z = u(0.015, 0.035), u(0.03, 0.08)
        foot_len = hz * u(0.6, 0.9)
        foot_h = u(0.04, 0.08)
        for sx in (-1.0, 1.0):
            b.box_span("trestle", (sx * xt - up_x, foot_h / 2, -up_z),
                       (sx * xt + up_x, y_leg_top, up_z))
            b.box_span("trestle", (sx * xt - up_x * 1.4, 0.0, -foot_len),
                       (sx * xt + up_x * 1.4, foot_h, foot_len))
            b.box_span("trestle", (sx * xt - up_x * 1.4, y_under - foot_h * 0.8, -foot_len),
                       (sx * xt + up_x * 1.4, y_leg_top, foot_len))
        for name, (sx, sz) in zip(CORNER_NAMES, _SIGNS):
            b.keypoints[f"foot_{name}"] = (sx * xt, 0.0, sz * foot_len)
        shelf = bool(rng.random() < 0.35)
        if shelf:  # a low shelf joins the two frames; no stretcher then
            y_shelf = max(u(0.1, 0.3) * height, foot_h + 0.03)
            st = u(0.012, 0.025)
            b.box_span("shelf", (-xt, y_shelf - st, -hz * 0.5), (xt, y_shelf, hz * 0.5))
            b.keypoints["shelf_center"] = (0.0, y_shelf, 0.0)
        else:
            y_str, s = u(0.15, 0.5) * height, u(0.015, 0.03)
            b.box_span("stretcher", (-xt, y_str - s, -s), (xt, y_str + s, s))

    attributes = {
        "top": top_shape, "height_class": height_class, "base": base, "legs": leg_style,
        "apron": apron, "shelf": shelf, "pedestal_foot": foot,
    }
    return b.build(seed, attributes)
