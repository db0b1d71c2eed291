"""Chair family: four legs / swivel base / sled runners, solid or slatted backs, arms,
cushion, stretchers; built in metres, seat front towards +Z, left = -X."""

from __future__ import annotations

import math

import numpy as np

from backend.data.shapes import Shape, ShapeBuilder, rot_x, rot_y

#: Corner suffixes of the four-fold keypoints, in keypoint order (left = -X, front = +Z).
CORNER_NAMES = ("front_left", "front_right", "back_left", "back_right")


def draw_choice(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    """One of ``options`` drawn with probabilities ``p`` (shared by all families)."""
    return str(options[rng.choice(len(options), p=p)])


def build_chair(rng: np.random.Generator, seed: int) -> Shape:
    """Draw one chair from ``rng``; see docs/data.md for variants and keypoints."""
    b = ShapeBuilder("chair")
    u = rng.uniform
    base = draw_choice(rng, ("four_legs", "swivel", "sled"), (0.5, 0.25, 0.25))
    back_style = draw_choice(rng, ("solid", "slats_vertical", "slats_horizontal"), (0.4, 0.3, 0.3))
    arms = bool(rng.random() < 0.4)
    cushion = bool(rng.random() < 0.35)

    w, d = u(0.38, 0.62), u(0.36, 0.58)
    seat_t = u(0.025, 0.08)
    seat_top = u(0.38, 0.55)
    seat_y0 = seat_top - seat_t
    b.box_span("seat", (-w / 2, seat_y0, -d / 2), (w / 2, seat_top, d / 2))

    # ---- back, in a frame pivoting about the line where its front face meets the seat top
    back_h, back_t = u(0.25, 0.6), u(0.02, 0.06)
    bw = w if arms else w * u(0.8, 1.0)
    tilt = math.radians(u(0.0, 20.0))
    pivot = np.array([0.0, seat_top, -d / 2 + back_t])
    r_back = rot_x(-tilt)  # local +Y (up the back) leans towards -Z

    def back_box(lo, hi) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        b.box("back", pivot + r_back @ ((lo + hi) / 2), (hi - lo) / 2, r_back)

    overlap = 0.6 * seat_t
    n_slats = 0
    if back_style == "solid":
        back_box((-bw / 2, -overlap, -back_t), (bw / 2, back_h, 0.0))
    else:
        stile = u(0.025, 0.05)
        rail = u(0.04, 0.09)
        for sx in (-1.0, 1.0):
            back_box((sx * bw / 2 - (sx > 0) * stile, -overlap, -back_t),
                     (sx * bw / 2 + (sx < 0) * stile, back_h, 0.0))
        back_box((-bw / 2, back_h - rail, -back_t), (bw / 2, back_h, 0.0))
        inner = bw / 2 - stile
        slat_t = back_t * u(0.5, 0.8)
        z_lo, z_hi = -back_t / 2 - slat_t / 2, -back_t / 2 + slat_t / 2
        if back_style == "slats_vertical":
            n_slats = int(rng.integers(2, 6))
            pitch = 2 * inner / (n_slats + 1)
            slat_w = min(u(0.015, 0.05), pitch - 0.025)
            for i in range(n_slats):
                x = -inner + pitch * (i + 1)
                back_box((x - slat_w / 2, -overlap, z_lo), (x + slat_w / 2, back_h - rail / 2, z_hi))
        else:
            n_slats = int(rng.integers(1, 4))
            free = back_h - rail
            pitch = free / (n_slats + 1)
            slat_h = min(u(0.03, 0.08), pitch - 0.025)
            for i in range(n_slats):
                y = pitch * (i + 1)
                back_box((-inner - stile / 2, y - slat_h / 2, z_lo),
                         (inner + stile / 2, y + slat_h / 2, z_hi))
    for sx, side in ((-1.0, "left"), (1.0, "right")):
        b.keypoints[f"back_top_{side}"] = pivot + r_back @ np.array([sx * bw / 2, back_h, 0.0])
        b.keypoints[f"seat_front_{side}"] = (sx * w / 2, seat_top, d / 2)
        b.keypoints[f"seat_back_{side}"] = (sx * w / 2, seat_top, pivot[2])

    # ---- arms: armrest from the back to the front, on a post standing on the seat
    if arms:
        arm_h = min(u(0.16, 0.26), back_h - 0.05)
        arm_w, arm_t = u(0.03, 0.07), u(0.02, 0.04)
        y_top = seat_top + arm_h
        z_front = d / 2 - u(0.0, 0.05)
        z_back = pivot[2] - arm_h * math.tan(tilt) - 0.5 * back_t
        post = u(0.012, 0.025)
        z_post = z_front - u(0.01, 0.04) - post
        round_post = bool(rng.random() < 0.5)
        for sx, side in ((-1.0, "left"), (1.0, "right")):
            xa = sx * (w / 2 - arm_w / 2)
            b.box_span("arm", (xa - arm_w / 2, y_top - arm_t, z_back),
                       (xa + arm_w / 2, y_top, z_front))
            y0, y1 = seat_top - seat_t / 2, y_top - arm_t / 2
            xp = sx * (w / 2 - max(post, arm_w / 2))
            if round_post:
                b.cylinder("arm", (xp, (y0 + y1) / 2, z_post), post, (y1 - y0) / 2)
            else:
                b.box("arm", (xp, (y0 + y1) / 2, z_post), (post, (y1 - y0) / 2, post))
            b.keypoints[f"arm_front_{side}"] = (xa, y_top - arm_t / 2, z_front)

    # ---- cushion
    top = seat_top
    if cushion:
        inset, cush_t = u(0.015, 0.03), u(0.03, 0.07)
        b.box_span("cushion", (-w / 2 + inset, seat_top - 0.005, pivot[2] + 0.002),
                   (w / 2 - inset, seat_top + cush_t, d / 2 - inset))
        top = seat_top + cush_t
    b.keypoints["seat_center"] = (0.0, top, 0.0)

    # ---- base
    leg_style, casters, n_spokes, stretchers = None, False, 0, False
    if base == "four_legs":
        leg_style = draw_choice(rng, ("square", "round", "tapered"), (0.4, 0.35, 0.25))
        lt, inset = u(0.012, 0.03), u(0.0, 0.04)
        y1 = seat_y0 + seat_t / 2
        xs, zs = w / 2 - inset - lt, d / 2 - inset - lt
        taper = u(0.45, 0.8)
        for name, (sx, sz) in zip(CORNER_NAMES, ((-1, 1), (1, 1), (-1, -1), (1, -1))):
            c = (sx * xs, y1 / 2, sz * zs)
            if leg_style == "square":
                b.box("leg", c, (lt, y1 / 2, lt))
            elif leg_style == "round":
                b.cylinder("leg", c, lt, y1 / 2)
            else:
                b.frustum("leg", c, lt * taper, lt, y1 / 2)
            b.keypoints[f"leg_end_{name}"] = (sx * xs, 0.0, sz * zs)
        stretchers = bool(rng.random() < 0.4)
        if stretchers:
            ys, st = u(0.08, 0.25), lt * u(0.4, 0.6)
            for sx in (-1, 1):
                b.box_span("stretcher", (sx * xs - st, ys - st, -zs), (sx * xs + st, ys + st, zs))
            b.box_span("stretcher", (-xs, ys - st, -st), (xs, ys + st, st))
    elif base == "swivel":
        casters = bool(rng.random() < 0.6)
        n_spokes = 5 if rng.random() < 0.8 else 4
        reach = u(0.22, 0.33)
        sw, sh = u(0.012, 0.02), u(0.012, 0.02)
        r_cast = u(0.022, 0.035)
        y_spoke = (1.8 * r_cast if casters else 0.0) + sh
        hub_r = u(0.04, 0.07)
        b.cylinder("base", (0.0, y_spoke, 0.0), hub_r, sh)
        col_r = u(0.02, 0.04)
        y0, y1 = y_spoke, seat_y0 + seat_t / 2
        b.cylinder("base", (0.0, (y0 + y1) / 2, 0.0), col_r, (y1 - y0) / 2)
        plate = u(0.06, 0.12)
        b.box("base", (0.0, seat_y0 - 0.01, 0.0), (plate, 0.015, plate))
        # spoke k points at angle a_k from +Z towards +X; which spoke marks which corner
        if n_spokes == 5:
            angles = [2 * math.pi * k / 5 for k in range(5)]
            corner_of = {4: "front_left", 1: "front_right", 3: "back_left", 2: "back_right"}
        else:
            angles = [math.pi / 4 + math.pi / 2 * k for k in range(4)]
            corner_of = {3: "front_left", 0: "front_right", 2: "back_left", 1: "back_right"}
        for k, a in enumerate(angles):
            direction = np.array([math.sin(a), 0.0, math.cos(a)])
            rot = rot_y(a - math.pi / 2)  # local +X along the spoke
            b.box("base", direction * reach / 2 + (0.0, y_spoke, 0.0), (reach / 2, sh, sw), rot)
            if casters:
                c = direction * (reach - r_cast) + (0.0, r_cast, 0.0)
                b.sphere("caster", c, r_cast)
                foot = (c[0], 0.0, c[2])
            else:
                foot = (direction[0] * reach, 0.0, direction[2] * reach)
            if k in corner_of:
                b.keypoints[f"leg_end_{corner_of[k]}"] = foot
    else:  # sled runners
        xr = w / 2 - u(0.0, 0.04)
        rail_r = u(0.01, 0.02)
        length = d * u(0.9, 1.15)
        round_rail = bool(rng.random() < 0.5)
        z_post = min(length / 2, d / 2) - u(0.02, 0.06)
        y1 = seat_y0 + seat_t / 2
        for sx in (-1.0, 1.0):
            if round_rail:
                b.cylinder("runner", (sx * xr, rail_r, 0.0), rail_r, length / 2, rot_x(math.pi / 2))
            else:
                b.box("runner", (sx * xr, rail_r, 0.0), (rail_r, rail_r, length / 2))
            for sz in (-1.0, 1.0):
                b.cylinder("runner", (sx * xr, y1 / 2, sz * z_post), rail_r, y1 / 2)
        for name, (sx, sz) in zip(CORNER_NAMES, ((-1, 1), (1, 1), (-1, -1), (1, -1))):
            b.keypoints[f"leg_end_{name}"] = (sx * xr, 0.0, sz * length / 2)

    attributes = {
        "base": base, "back": back_style, "arms": arms, "cushion": cushion,
        "legs": leg_style, "stretchers": stretchers, "casters": casters,
        "n_spokes": n_spokes, "n_slats": n_slats, "tilt_deg": round(math.degrees(tilt), 3),
    }
    return b.build(seed, attributes)
