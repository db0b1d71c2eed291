"""Airplane family: capsule or ellipsoid fuselage along Z (nose +Z), swept wings with
dihedral, 0/1/2 engines per wing or two rear-mounted, conventional, T- or twin tail.
Fuselage length 1 before normalisation; left = -X."""

from __future__ import annotations

import math

import numpy as np

from backend.data.families.chair import draw_choice
from backend.data.shapes import Shape, ShapeBuilder, rot_x, rot_y, rot_z

_Y_TO_Z = rot_x(math.pi / 2)  # local +Y (a cylinder's axis) -> world +Z


def _wing_min_z(root, rot, span, half_t, chord, x_lo, x_hi) -> float:
    """Lowest z of the right wing box over the spanwise slab x_lo <= x <= x_hi (the left
    wing mirrors it); +inf if the slab misses the wing."""
    a = np.linspace(0.0, span, 201)
    local = np.stack(np.meshgrid(a, (-half_t, half_t), (-chord / 2, chord / 2),
                                 indexing="ij"), -1).reshape(-1, 3)
    world = root + local @ rot.T
    inside = (world[:, 0] >= x_lo - span / 200) & (world[:, 0] <= x_hi + span / 200)
    return float(world[inside, 2].min()) if inside.any() else math.inf


def build_airplane(rng: np.random.Generator, seed: int) -> Shape:
    """Draw one airplane from ``rng``; see docs/data.md for variants and keypoints."""
    b = ShapeBuilder("airplane")
    u = rng.uniform
    body = draw_choice(rng, ("capsule", "ellipsoid"), (0.5, 0.5))
    engines = draw_choice(rng, ("none", "one_per_wing", "two_per_wing", "rear"),
                      (0.2, 0.35, 0.25, 0.2))
    tail = draw_choice(rng, ("conventional", "t_tail", "twin"), (0.55, 0.25, 0.2))
    length = 1.0
    r_f = u(0.035, 0.075)

    def radius_at(z: float) -> float:
        """Fuselage radius at axial position z."""
        if body == "ellipsoid":
            return r_f * math.sqrt(max(0.0, 1.0 - (2.0 * z / length) ** 2))
        return r_f if abs(z) <= length / 2 - r_f else math.sqrt(
            max(0.0, r_f ** 2 - (abs(z) - (length / 2 - r_f)) ** 2))

    if body == "capsule":
        b.capsule("fuselage", (0.0, 0.0, 0.0), r_f, length / 2 - r_f, _Y_TO_Z)
    else:
        b.ellipsoid("fuselage", (0.0, 0.0, 0.0), (r_f, r_f, length / 2))
    b.keypoints["nose"] = (0.0, 0.0, length / 2)
    b.keypoints["tail_end"] = (0.0, 0.0, -length / 2)

    # ---- wings: box from the centre line to the tip, local +X spanwise
    span = length * u(0.35, 0.65)
    sweep = math.radians(u(0.0, 35.0))
    dihedral = math.radians(u(-4.0, 8.0))
    chord = min(length * u(0.08, 0.2), 1.8 * r_f / max(math.sin(sweep), 1e-3))
    w_half_t = length * u(0.006, 0.0125)
    mount = draw_choice(rng, ("low", "mid", "high"), (0.4, 0.3, 0.3))
    root = np.array([0.0, {"low": -0.55, "mid": 0.0, "high": 0.55}[mount] * r_f,
                     length * u(-0.06, 0.1)])
    wing_rot = {1: rot_y(sweep) @ rot_z(dihedral), -1: rot_y(-sweep) @ rot_z(-dihedral)}
    for sx, side in ((-1, "left"), (1, "right")):
        rot = wing_rot[sx]
        b.box("wing", root + rot @ (sx * span / 2, 0.0, 0.0), (span / 2, w_half_t, chord / 2), rot)
        b.keypoints[f"wing_tip_{side}"] = root + rot @ (sx * span, 0.0, 0.0)

    # ---- engines
    n_r, n_len = length * u(0.02, 0.04), length * u(0.1, 0.2)
    if engines in ("one_per_wing", "two_per_wing"):
        first = max(u(0.25, 0.45), (r_f + n_r + 0.02) / span)
        fractions = [first]
        if engines == "two_per_wing":
            fractions.append(min(first + (2 * n_r + 0.03) / span + u(0.0, 0.2), 0.85))
        gap, forward = n_r * u(0.3, 0.8), chord * u(0.2, 0.5)
        for sx, side in ((-1, "left"), (1, "right")):
            rot = wing_rot[sx]
            for k, f in enumerate(fractions):
                under = root + rot @ (sx * f * span, -w_half_t, 0.0)
                centre = under + (0.0, -(gap + n_r), forward)
                b.cylinder("engine", centre, n_r, n_len / 2, _Y_TO_Z)
                y_lo, y_hi = centre[1], under[1] + w_half_t
                z_lo, z_hi = under[2] - 0.2 * chord, centre[2] + 0.2 * n_len
                b.box("engine", (centre[0], (y_lo + y_hi) / 2, (z_lo + z_hi) / 2),
                      (n_r * 0.25, (y_hi - y_lo) / 2, (z_hi - z_lo) / 2))
                name = "engine_front" if k == 0 else "engine_outer_front"
                b.keypoints[f"{name}_{side}"] = centre + (0.0, 0.0, n_len / 2)
    elif engines == "rear":
        z_e = -length / 2 + length * u(0.2, 0.3)
        y_e = r_f * u(0.0, 0.4)
        stand_off = n_r * u(1.3, 1.8)
        x_e = radius_at(z_e) + stand_off
        # a far-back, swept wing can reach the nacelles: keep their front behind it (the
        # fuselage only narrows backwards, so the slab checked still covers them)
        z_clear = _wing_min_z(root, wing_rot[1], span, w_half_t, chord, x_e - n_r, x_e + n_r)
        if z_e + n_len / 2 > z_clear - 0.01 * length:
            z_e = z_clear - 0.01 * length - n_len / 2
            x_e = radius_at(z_e) + stand_off
        for sx, side in ((-1, "left"), (1, "right")):
            centre = np.array([sx * x_e, y_e, z_e])
            b.cylinder("engine", centre, n_r, n_len / 2, _Y_TO_Z)
            b.box("engine", (sx * x_e / 2, y_e, z_e - n_len * 0.1),
                  (x_e / 2, n_r * 0.25, n_len * 0.3))
            b.keypoints[f"engine_front_{side}"] = centre + (0.0, 0.0, n_len / 2)

    # ---- tail: horizontal stabiliser (two boxes) and vertical fin(s)
    h_span = length * u(0.12, 0.25)
    h_chord = length * u(0.06, 0.12)
    h_sweep = math.radians(u(0.0, 35.0))
    h_half_t = w_half_t * u(0.6, 0.8)
    v_h, v_chord = length * u(0.1, 0.2), length * u(0.08, 0.15)
    v_sweep = math.radians(u(10.0, 40.0))
    v_half_t = w_half_t * u(0.6, 0.8)
    rot_v = rot_x(-v_sweep)  # fin's local +Y leans back towards -Z
    margin = length * u(0.03, 0.08)

    def fin(base: np.ndarray, bottom: float, top: float) -> np.ndarray:
        """Add a fin whose local y spans [bottom, top] about ``base``; return its top centre."""
        b.box("tail_v", base + rot_v @ (0.0, (bottom + top) / 2, 0.0),
              (v_half_t, (top - bottom) / 2, v_chord / 2), rot_v)
        return base + rot_v @ (0.0, top, 0.0)

    # every fin point below its base lies ahead of z_v - (v_chord / 2) / cos(v_sweep), so
    # this placement keeps the fuselage's tail end uncovered
    z_v = -length / 2 + margin + v_chord / 2 / math.cos(v_sweep)
    fin_base = np.array([0.0, 0.3 * radius_at(z_v), z_v])
    if tail == "t_tail":
        top = fin(fin_base, 0.0, v_h)
        tail_root = top
        b.keypoints["tail_v_top"] = top + (0.0, h_half_t, 0.0)
    else:
        z_t = -length / 2 + margin + h_chord / (2 * math.cos(h_sweep))
        tail_root = np.array([0.0, 0.0, z_t])
    rot_h = {1: rot_y(h_sweep), -1: rot_y(-h_sweep)}
    for sx, side in ((-1, "left"), (1, "right")):
        rot = rot_h[sx]
        b.box("tail_h", tail_root + rot @ (sx * h_span / 2, 0.0, 0.0),
              (h_span / 2, h_half_t, h_chord / 2), rot)
        b.keypoints[f"tail_h_tip_{side}"] = tail_root + rot @ (sx * h_span, 0.0, 0.0)
    if tail == "conventional":
        b.keypoints["tail_v_top"] = fin(fin_base, 0.0, v_h)
    elif tail == "twin":
        v_h *= 0.7
        for sx, side in ((-1, "left"), (1, "right")):
            base = tail_root + rot_h[sx] @ (sx * 0.8 * h_span, 0.0, 0.0)
            b.keypoints[f"tail_v_top_{side}"] = fin(base, -0.3 * v_h, v_h)

    attributes = {
        "fuselage": body, "engines": engines, "tail": tail, "wing_mount": mount,
        "sweep_deg": round(math.degrees(sweep), 3),
        "dihedral_deg": round(math.degrees(dihedral), 3),
    }
    return b.build(seed, attributes)
