"""Part-based procedural shapes with analytic signed distance, occupancy and meshing.

A :class:`Shape` is a list of :class:`Part` primitives (each with a rigid transform, a
semantic label and an instance id), semantic keypoints and style attributes. Everything
lives in the backend's canonical object frame: Y-up, right-handed, front facing +Z, the
bounding box centred at the origin with its longest side equal to 1.

Primitives (local frame, all sizes are lengths in the canonical frame's units):

========== ===================== ====================================================
name       params                local geometry
========== ===================== ====================================================
box        hx, hy, hz            axis-aligned box, half extents, centred
sphere     r                     sphere, centred
ellipsoid  rx, ry, rz            ellipsoid with semi-axes along x, y, z, centred
cylinder   r, h                  axis = local Y, radius r, y in [-h, h]
frustum    r0, r1, h             truncated cone, axis = local Y, radius r0 at y = -h
                                 and r1 at y = +h
capsule    r, h                  segment y in [-h, h] on local Y swept by radius r
========== ===================== ====================================================

The signed distance of every primitive is exact except the ellipsoid's, which uses the
standard first-order bound (exact on the surface and at the centre). The union's SDF is
the minimum over parts: exact outside the union, a lower bound on the depth inside.
Meshes are exact CSG unions of tessellated primitives computed with manifold3d (the
engine behind ``trimesh.boolean.union(engine="manifold")``, called directly to skip two
conversions); circles use enough segments that the tessellation stays within about
2e-4 of the analytic surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CATEGORIES: tuple[str, ...] = ("chair", "table", "cabinet", "airplane")

PART_LABELS: dict[str, tuple[str, ...]] = {
    "chair": ("seat", "back", "leg", "arm", "base", "caster", "runner", "cushion", "stretcher"),
    "table": ("top", "leg", "apron", "shelf", "pedestal", "trestle", "stretcher"),
    "cabinet": ("body", "door", "drawer", "handle", "leg", "plinth", "shelf", "top"),
    "airplane": ("fuselage", "wing", "engine", "tail_h", "tail_v"),
}

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "chair": (
        "seat_front_left", "seat_front_right", "seat_back_left", "seat_back_right",
        "back_top_left", "back_top_right",
        "leg_end_front_left", "leg_end_front_right", "leg_end_back_left", "leg_end_back_right",
        "arm_front_left", "arm_front_right", "seat_center",
    ),
    "table": (
        "top_front_left", "top_front_right", "top_back_left", "top_back_right", "top_center",
        "foot_front_left", "foot_front_right", "foot_back_left", "foot_back_right",
        "shelf_center",
    ),
    "cabinet": (
        "top_front_left", "top_front_right", "top_back_left", "top_back_right",
        "body_bottom_front_left", "body_bottom_front_right",
        "door_handle", "drawer_handle",
        "leg_end_front_left", "leg_end_front_right", "leg_end_back_left", "leg_end_back_right",
    ),
    "airplane": (
        "nose", "tail_end", "wing_tip_left", "wing_tip_right",
        "engine_front_left", "engine_front_right",
        "engine_outer_front_left", "engine_outer_front_right",
        "tail_h_tip_left", "tail_h_tip_right",
        "tail_v_top", "tail_v_top_left", "tail_v_top_right",
    ),
}

PRIMITIVE_PARAMS: dict[str, tuple[str, ...]] = {
    "box": ("hx", "hy", "hz"),
    "sphere": ("r",),
    "ellipsoid": ("rx", "ry", "rz"),
    "cylinder": ("r", "h"),
    "frustum": ("r0", "r1", "h"),
    "capsule": ("r", "h"),
}

#: Largest distance between a tessellated circle and the analytic one (canonical units).
MESH_TOLERANCE = 2e-4
#: Keypoints must satisfy ``|sdf| <= KEYPOINT_SDF_TOL`` after generation.
KEYPOINT_SDF_TOL = 1e-5


# --------------------------------------------------------------------------- transforms
def rot_x(angle: float) -> np.ndarray:
    """(3, 3) float64 rotation by ``angle`` radians about +X (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """(3, 3) float64 rotation by ``angle`` radians about +Y (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """(3, 3) float64 rotation by ``angle`` radians about +Z (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_transform(rotation: np.ndarray | None, translation) -> np.ndarray:
    """(4, 4) float64 rigid transform from a (3, 3) rotation (None = identity) and (3,) shift."""
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


# --------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Part:
    """One primitive of a shape.

    primitive: one of :data:`PRIMITIVE_PARAMS` (see the module docstring for geometry).
    params: primitive-local sizes, keys exactly ``PRIMITIVE_PARAMS[primitive]``.
    transform: (4, 4) float64, canonical frame <- primitive-local, rigid (no scale).
    label: semantic part label, one of ``PART_LABELS[category]``.
    instance: instance id, unique within the shape (equals the part's index).
    """

    primitive: str
    params: dict[str, float]
    transform: np.ndarray
    label: str
    instance: int

    def __post_init__(self) -> None:
        if self.primitive not in PRIMITIVE_PARAMS:
            raise ValueError(
                f"unknown primitive {self.primitive!r}; use one of {sorted(PRIMITIVE_PARAMS)}"
            )
        want = PRIMITIVE_PARAMS[self.primitive]
        if tuple(sorted(self.params)) != tuple(sorted(want)):
            raise ValueError(
                f"{self.primitive} needs params {want}, got {tuple(self.params)}"
            )
        if not all(math.isfinite(v) and v > 0 for v in self.params.values()):
            raise ValueError(f"{self.primitive} params must be finite and > 0: {self.params}")
        m = np.asarray(self.transform)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError("part transform must be a finite (4, 4) matrix")
        r = m[:3, :3]
        if not (np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.linalg.det(r) > 0
                and np.allclose(m[3], [0, 0, 0, 1])):
            raise ValueError("part transform must be rigid (rotation + translation, no scale)")

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) float64 rotation, canonical <- local."""
        return self.transform[:3, :3]

    @property
    def center(self) -> np.ndarray:
        """(3,) float64 origin of the primitive-local frame in the canonical frame."""
        return self.transform[:3, 3]

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) float64 canonical frame -> (N, 3) float64 primitive-local frame."""
        return (points - self.center) @ self.rotation

    def to_world(self, points) -> np.ndarray:
        """points: (N, 3) or (3,) primitive-local -> same shape, canonical frame, float64."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.center

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) float64 canonical frame -> (N,) float64 signed distance."""
        return primitive_sdf(self.primitive, self.params, self.to_local(points))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact axis-aligned bounds in the canonical frame: two (3,) float64 (lo, hi)."""
        return _part_bounds(self)


def primitive_sdf(primitive: str, params: dict[str, float], p: np.ndarray) -> np.ndarray:
    """Signed distance of one primitive.

    p: (N, 3) float64 points in the primitive-local frame. Returns (N,) float64, < 0 inside.
    """
    if primitive == "box":
        q = np.abs(p) - np.array([params["hx"], params["hy"], params["hz"]])
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        return outside + np.minimum(q.max(axis=1), 0.0)
    if primitive == "sphere":
        return np.linalg.norm(p, axis=1) - params["r"]
    if primitive == "ellipsoid":
        radii = np.array([params["rx"], params["ry"], params["rz"]])
        k0 = np.linalg.norm(p / radii, axis=1)
        k1 = np.linalg.norm(p / (radii * radii), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = k0 * (k0 - 1.0) / k1
        return np.where(k1 > 0, d, -radii.min())
    if primitive == "capsule":
        axis_point = np.zeros_like(p)
        axis_point[:, 1] = np.clip(p[:, 1], -params["h"], params["h"])
        return np.linalg.norm(p - axis_point, axis=1) - params["r"]
    if primitive == "cylinder":
        rho = np.hypot(p[:, 0], p[:, 2])
        dx = rho - params["r"]
        dy = np.abs(p[:, 1]) - params["h"]
        outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
        return outside + np.minimum(np.maximum(dx, dy), 0.0)
    if primitive == "frustum":
        return _frustum_sdf(p, params["r0"], params["r1"], params["h"])
    raise ValueError(f"unknown primitive {primitive!r}; use one of {sorted(PRIMITIVE_PARAMS)}")


def _frustum_sdf(p: np.ndarray, r0: float, r1: float, h: float) -> np.ndarray:
    """Exact SDF of a truncated cone: distance in the (rho, y) half plane to the trapezoid
    (0,-h) (r0,-h) (r1,h) (0,h), whose edge on the axis is interior after revolution."""
    rho = np.hypot(p[:, 0], p[:, 2])
    y = p[:, 1]
    # nearest cap (the one on the side of y): segment {(x, +-h), 0 <= x <= r_cap}
    r_cap = np.where(y < 0.0, r0, r1)
    cap_dx = np.maximum(rho - r_cap, 0.0)
    cap_dy = np.abs(y) - h
    d_cap2 = cap_dx * cap_dx + cap_dy * cap_dy
    # slanted side: segment (r0, -h) -> (r1, h)
    ex, ey = r1 - r0, 2.0 * h
    t = np.clip(((rho - r0) * ex + (y + h) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    sx = rho - (r0 + t * ex)
    sy = y - (-h + t * ey)
    d_side2 = sx * sx + sy * sy
    radius_at_y = r0 + (y + h) / (2.0 * h) * (r1 - r0)
    inside = (np.abs(y) < h) & (rho < radius_at_y)
    return np.where(inside, -1.0, 1.0) * np.sqrt(np.minimum(d_cap2, d_side2))


def _part_bounds(part: Part) -> tuple[np.ndarray, np.ndarray]:
    r, c, prm = part.rotation, part.center, part.params
    if part.primitive == "box":
        e = np.abs(r) @ np.array([prm["hx"], prm["hy"], prm["hz"]])
        return c - e, c + e
    if part.primitive == "sphere":
        return c - prm["r"], c + prm["r"]
    if part.primitive == "ellipsoid":
        e = np.sqrt(((r * np.array([prm["rx"], prm["ry"], prm["rz"]])) ** 2).sum(axis=1))
        return c - e, c + e
    axis = r[:, 1]
    radial = np.sqrt(np.clip(1.0 - axis * axis, 0.0, None))
    if part.primitive == "capsule":
        e = prm["h"] * np.abs(axis) + prm["r"]
        return c - e, c + e
    r_bottom, r_top = (
        (prm["r"], prm["r"]) if part.primitive == "cylinder" else (prm["r0"], prm["r1"])
    )
    bottom, top = c - prm["h"] * axis, c + prm["h"] * axis
    lo = np.minimum(bottom - r_bottom * radial, top - r_top * radial)
    hi = np.maximum(bottom + r_bottom * radial, top + r_top * radial)
    return lo, hi


def circle_segments(radius: float, tolerance: float = MESH_TOLERANCE) -> int:
    """Number of segments (a multiple of 8, 16..128) so a polygon inscribed in a circle of
    ``radius`` stays within ``tolerance`` of it (multiples of 8 put vertices at 0/45/90 deg)."""
    ratio = min(max(1.0 - tolerance / radius, -1.0), 1.0)
    n = math.ceil(math.pi / max(math.acos(ratio), 1e-6))
    return int(min(max(8 * math.ceil(n / 8), 16), 128))


def part_solid(part: Part):
    """The part as a tessellated ``manifold3d.Manifold`` in the canonical frame (circles
    within MESH_TOLERANCE of the analytic surface; vertices at 0/45/90 degrees)."""
    import manifold3d as mf

    prm = part.params
    y_from_z = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    pre = np.eye(4)
    if part.primitive == "box":
        solid = mf.Manifold.cube((2 * prm["hx"], 2 * prm["hy"], 2 * prm["hz"]), True)
    elif part.primitive == "sphere":
        solid = mf.Manifold.sphere(prm["r"], circle_segments(prm["r"]))
    elif part.primitive == "ellipsoid":
        radii = (prm["rx"], prm["ry"], prm["rz"])
        solid = mf.Manifold.sphere(1.0, circle_segments(max(radii))).scale(radii)
    elif part.primitive == "cylinder":
        n = circle_segments(prm["r"])
        solid = mf.Manifold.cylinder(2 * prm["h"], prm["r"], prm["r"], n, True)
        pre = y_from_z
    elif part.primitive == "frustum":
        n = circle_segments(max(prm["r0"], prm["r1"]))
        solid = mf.Manifold.cylinder(2 * prm["h"], prm["r0"], prm["r1"], n, True)
        pre = y_from_z
    else:  # capsule
        n = circle_segments(prm["r"])
        ball = mf.Manifold.sphere(prm["r"], n)
        solid = mf.Manifold.batch_hull(
            [ball.translate((0.0, prm["h"], 0.0)), ball.translate((0.0, -prm["h"], 0.0))]
        )
    return solid.transform((part.transform @ pre)[:3, :])


# --------------------------------------------------------------------------- shapes
@dataclass
class Mesh:
    """Watertight triangle mesh of a shape.

    vertices: (V, 3) float32, canonical frame.
    faces: (F, 3) int32, counter-clockwise seen from outside (outward normals).
    face_parts: (F,) int32 index into ``shape.parts`` of the part each face lies on.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_parts: np.ndarray


def _check_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)):
        raise ValueError("points contain NaN or infinite values; pass finite coordinates")
    return p


@dataclass
class Shape:
    """A procedural part-based shape in the canonical frame (see module docstring).

    category: one of :data:`CATEGORIES`.
    seed: the generation seed (``generate_shape(category, seed)`` reproduces it).
    parts: the primitives; ``parts[i].instance == i``.
    keypoints: (K, 3) float32 canonical frame, K = len(KEYPOINT_NAMES[category]);
        NaN rows where the keypoint does not exist on this shape.
    keypoint_mask: (K,) bool, True where the keypoint exists.
    attributes: style/topology descriptors (str/bool/int/float values), see docs/data.md.
    """

    category: str
    seed: int
    parts: list[Part]
    keypoints: np.ndarray
    keypoint_mask: np.ndarray
    attributes: dict
    _mesh: Mesh | None = field(default=None, init=False, repr=False, compare=False)

    def part_sdf(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) canonical frame -> (N, P) float32 signed distance of each part."""
        p = _check_points(points)
        out = np.empty((len(p), len(self.parts)), dtype=np.float32)
        for j, part in enumerate(self.parts):
            out[:, j] = part.sdf(p)
        return out

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) canonical frame -> (N,) float32 signed distance of the union.

        Negative inside. Exact outside (minimum of exact part distances; the ellipsoid's
        is a close bound), inside a lower bound on the depth.
        """
        return self._sdf64(_check_points(points)).astype(np.float32)

    def _sdf64(self, p: np.ndarray) -> np.ndarray:
        d = np.full(len(p), np.inf)
        for part in self.parts:
            np.minimum(d, part.sdf(p), out=d)
        return d

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) canonical frame -> (N,) bool, True inside (``sdf < 0``)."""
        return self.sdf(points) < 0

    def occupancy_grid(self, resolution: int, half_extent: float = 0.5) -> np.ndarray:
        """(R, R, R) bool occupancy at the cell centres of [-h, h]^3 (h = ``half_extent``,
        default the unit cube), index [x, y, z].

        Each part is evaluated only on the cells inside its bounding box, so this costs
        far less than ``occupancy`` on all R^3 centres and gives identical values.
        """
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        if half_extent <= 0:
            raise ValueError(f"half_extent must be positive, got {half_extent}")
        h = float(half_extent)
        centres = 2 * h * ((np.arange(resolution) + 0.5) / resolution - 0.5)
        grid = np.zeros((resolution,) * 3, dtype=bool)
        for part in self.parts:
            lo, hi = part.bounds()
            i0 = np.clip(np.ceil((lo + h) / (2 * h) * resolution - 0.5).astype(int), 0, resolution)
            i1 = np.clip(np.floor((hi + h) / (2 * h) * resolution - 0.5).astype(int) + 1, 0,
                         resolution)
            if np.any(i1 <= i0):
                continue
            gx, gy, gz = np.meshgrid(
                centres[i0[0]:i1[0]], centres[i0[1]:i1[1]], centres[i0[2]:i1[2]], indexing="ij"
            )
            block = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
            inside = part.sdf(block).astype(np.float32) < 0
            grid[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] |= inside.reshape(gx.shape)
        return grid

    def part_label_ids(self) -> np.ndarray:
        """(P,) int32 label id (index into PART_LABELS[category]) of each part."""
        labels = PART_LABELS[self.category]
        return np.array([labels.index(p.label) for p in self.parts], dtype=np.int32)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact axis-aligned bounds of the union: two (3,) float64 (lo, hi)."""
        lows, highs = zip(*(p.bounds() for p in self.parts))
        return np.min(lows, axis=0), np.max(highs, axis=0)

    def mesh(self) -> Mesh:
        """Watertight mesh of the union of the parts (exact CSG, cached)."""
        if self._mesh is None:
            import manifold3d as mf

            solids = [part_solid(p) for p in self.parts]
            union = mf.Manifold.batch_boolean(solids, mf.OpType.Add)
            out = union.to_mesh()
            vertices = np.asarray(out.vert_properties, dtype=np.float32)[:, :3].copy()
            faces = np.asarray(out.tri_verts, dtype=np.int32).copy()
            centroids = vertices[faces].astype(np.float64).mean(axis=1)
            face_parts = np.abs(self.part_sdf(centroids)).argmin(axis=1).astype(np.int32)
            self._mesh = Mesh(vertices=vertices, faces=faces, face_parts=face_parts)
        return self._mesh


# --------------------------------------------------------------------------- building
class ShapeBuilder:
    """Collects parts and keypoints in free units, then normalises them into a Shape.

    Family generators call :meth:`add` (or the primitive shortcuts) with any consistent
    length unit (metres), set ``keypoints[name] = (3,) point`` for the keypoints that exist,
    and finish with :meth:`build`.
    """

    def __init__(self, category: str) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; use one of {CATEGORIES}")
        self.category = category
        self.parts: list[Part] = []
        self.keypoints: dict[str, np.ndarray] = {}

    def add(self, primitive: str, params: dict[str, float], label: str, center,
            rotation: np.ndarray | None = None) -> Part:
        """Add one part; ``center``: (3,) local origin, ``rotation``: (3, 3) or None."""
        if label not in PART_LABELS[self.category]:
            raise ValueError(
                f"label {label!r} is not a {self.category} part; use {PART_LABELS[self.category]}"
            )
        part = Part(primitive, {k: float(v) for k, v in params.items()},
                    make_transform(rotation, center), label, len(self.parts))
        self.parts.append(part)
        return part

    def box(self, label: str, center, half, rotation=None) -> Part:
        """Box with (3,) half extents ``half``."""
        return self.add("box", dict(zip(("hx", "hy", "hz"), half)), label, center, rotation)

    def box_span(self, label: str, lo, hi) -> Part:
        """Axis-aligned box spanning the corners ``lo`` and ``hi`` ((3,) each)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        return self.box(label, (lo + hi) / 2, (hi - lo) / 2)

    def cylinder(self, label: str, center, r: float, h: float, rotation=None) -> Part:
        """Cylinder of radius ``r`` and half height ``h`` along the local Y axis."""
        return self.add("cylinder", {"r": r, "h": h}, label, center, rotation)

    def frustum(self, label: str, center, r0: float, r1: float, h: float, rotation=None) -> Part:
        """Truncated cone, radius ``r0`` at local y = -h and ``r1`` at y = +h."""
        return self.add("frustum", {"r0": r0, "r1": r1, "h": h}, label, center, rotation)

    def capsule(self, label: str, center, r: float, h: float, rotation=None) -> Part:
        """Capsule of radius ``r`` around the segment y in [-h, h] of the local Y axis."""
        return self.add("capsule", {"r": r, "h": h}, label, center, rotation)

    def sphere(self, label: str, center, r: float) -> Part:
        """Sphere of radius ``r``."""
        return self.add("sphere", {"r": r}, label, center)

    def ellipsoid(self, label: str, center, radii, rotation=None) -> Part:
        """Ellipsoid with (3,) semi-axes ``radii`` along local x, y, z."""
        return self.add("ellipsoid", dict(zip(("rx", "ry", "rz"), radii)), label, center,
                        rotation)

    def build(self, seed: int, attributes: dict) -> Shape:
        """Normalise (bbox centred, longest side 1) and return the Shape.

        Raises RuntimeError if a keypoint does not lie on the union's surface, which is a
        bug in the family generator, never a user error.
        """
        names = KEYPOINT_NAMES[self.category]
        unknown = set(self.keypoints) - set(names)
        if unknown:
            raise ValueError(f"unknown {self.category} keypoints {sorted(unknown)}")
        lows, highs = zip(*(p.bounds() for p in self.parts))
        lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
        centre, scale = (lo + hi) / 2.0, 1.0 / float(np.max(hi - lo))
        parts = []
        for p in self.parts:
            m = p.transform.copy()
            m[:3, 3] = (m[:3, 3] - centre) * scale
            params = {k: v * scale for k, v in p.params.items()}
            parts.append(Part(p.primitive, params, m, p.label, p.instance))
        keypoints = np.full((len(names), 3), np.nan)
        mask = np.zeros(len(names), dtype=bool)
        for i, name in enumerate(names):
            if name in self.keypoints:
                keypoints[i] = (np.asarray(self.keypoints[name], float) - centre) * scale
                mask[i] = True
        shape = Shape(self.category, int(seed), parts, keypoints.astype(np.float32), mask,
                      dict(attributes))
        if mask.any():
            d = shape._sdf64(keypoints[mask])
            if np.max(np.abs(d)) > KEYPOINT_SDF_TOL:
                bad = [n for n, v in zip(np.array(names)[mask], d) if abs(v) > KEYPOINT_SDF_TOL]
                raise RuntimeError(
                    f"{self.category} seed {seed}: keypoints {bad} are off the surface "
                    f"(sdf {d[np.abs(d) > KEYPOINT_SDF_TOL]}); generator bug"
                )
        return shape


def generate_shape(category: str, seed: int) -> Shape:
    """Generate the procedural shape ``seed`` of ``category`` (deterministic by seed)."""
    from backend.data.families import FAMILIES

    if category not in FAMILIES:
        raise ValueError(f"unknown category {category!r}; use one of {CATEGORIES}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), CATEGORIES.index(category)])
    return FAMILIES[category](rng, int(seed))
