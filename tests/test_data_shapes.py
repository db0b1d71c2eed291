"""Procedural shape families: determinism, variety, exact geometry and samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from backend.data.samples import NEAR_SIGMAS, sample_shape, sample_surface
from backend.data.shapes import (
    CATEGORIES,
    KEYPOINT_NAMES,
    PART_LABELS,
    Mesh,
    Part,
    Shape,
    ShapeBuilder,
    generate_shape,
    make_transform,
    part_solid,
    rot_x,
    rot_y,
    rot_z,
)


# --------------------------------------------------------------------------- references
def mesh_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) unsigned distance from points (N, 3) to the triangles: brute force over all
    faces in float64 with Ericson's closest-point-on-triangle regions (robust to slivers)."""
    tri = vertices.astype(np.float64)[faces]
    a, ab, ac = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    out = np.empty(len(points))
    dot = lambda x, y: np.einsum("...i,...i->...", x, y)  # noqa: E731
    for s in range(0, len(points), 64):
        p = np.asarray(points[s:s + 64], dtype=np.float64)[:, None, :]
        ap, bp, cp = p - a, p - tri[:, 1], p - tri[:, 2]
        d1, d2, d3, d4, d5, d6 = (dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp),
                                  dot(ab, cp), dot(ac, cp))
        va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
        with np.errstate(divide="ignore", invalid="ignore"):
            denom = va + vb + vc
            v_in, w_in = vb / denom, vc / denom
            t_ab, t_ac = d1 / (d1 - d3), d2 / (d2 - d6)
            t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        zero = np.zeros_like(d1)
        conditions = [
            (d1 <= 0) & (d2 <= 0), (d3 >= 0) & (d4 <= d3), (d6 >= 0) & (d5 <= d6),
            (vc <= 0) & (d1 >= 0) & (d3 <= 0), (vb <= 0) & (d2 >= 0) & (d6 <= 0),
            (va <= 0) & (d4 >= d3) & (d5 >= d6),
        ]
        v = np.select(conditions, [zero, zero + 1, zero, t_ab, zero, 1 - t_bc], v_in)
        w = np.select(conditions, [zero, zero, zero + 1, zero, t_ac, t_bc], w_in)
        closest = a + v[..., None] * ab + w[..., None] * ac
        d = np.linalg.norm(p - closest, axis=-1)
        out[s:s + 64] = np.nanmin(np.where(np.isfinite(d), d, np.inf), axis=1)
    return out


def winding_inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) bool: generalised winding number > 0.5 (solid angles, Van Oosterom-Strackee)."""
    tri = vertices.astype(np.float64)[faces]
    out = np.empty(len(points), dtype=bool)
    for s in range(0, len(points), 64):
        p = points[s:s + 64, None, None, :].astype(np.float64)
        v = tri[None] - p  # (n, F, 3, 3)
        a, b, c = v[:, :, 0], v[:, :, 1], v[:, :, 2]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("nfi,nfi->nf", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("nfi,nfi->nf", a, b) * lc
               + np.einsum("nfi,nfi->nf", b, c) * la + np.einsum("nfi,nfi->nf", c, a) * lb)
        out[s:s + 64] = np.arctan2(det, den).sum(axis=1) / (2 * math.pi) > 0.5
    return out


def shape_bytes(shape: Shape) -> bytes:
    chunks = [shape.category.encode(), repr(sorted(shape.attributes.items())).encode(),
              shape.keypoints.tobytes(), shape.keypoint_mask.tobytes()]
    for p in shape.parts:
        chunks += [p.primitive.encode(), repr(sorted(p.params.items())).encode(),
                   p.transform.tobytes(), p.label.encode(), str(p.instance).encode()]
    return b"|".join(chunks)


def n_components(mesh: Mesh) -> int:
    e = mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = len(mesh.vertices)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[0]


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("category", CATEGORIES)
def test_same_seed_same_bytes_different_seed_differs(category):
    a, b = generate_shape(category, 7), generate_shape(category, 7)
    assert shape_bytes(a) == shape_bytes(b)
    ma, mb = a.mesh(), b.mesh()
    for name in ("vertices", "faces", "face_parts"):
        assert getattr(ma, name).tobytes() == getattr(mb, name).tobytes()
    sa = sample_shape(a, 3, 512, 512, 512)
    sb = sample_shape(b, 3, 512, 512, 512)
    for name in sa.__dataclass_fields__:
        assert getattr(sa, name).tobytes() == getattr(sb, name).tobytes(), name
    assert sample_shape(a, 4, 512, 512, 512).surface_points.tobytes() != sa.surface_points.tobytes()
    assert len({shape_bytes(generate_shape(category, s)) for s in range(5)}) == 5


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown category"):
        generate_shape("sofa", 0)
    with pytest.raises(ValueError, match="non-negative"):
        generate_shape("chair", -1)
    shape = generate_shape("chair", 0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        shape.sdf(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        shape.occupancy(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="rigid"):
        Part("box", {"hx": 1, "hy": 1, "hz": 1}, np.diag([2.0, 1, 1, 1]), "seat", 0)
    with pytest.raises(ValueError, match="needs params"):
        Part("sphere", {"hx": 1.0}, np.eye(4), "seat", 0)
    with pytest.raises(ValueError, match="not a chair part"):
        ShapeBuilder("chair").sphere("wing", (0, 0, 0), 1.0)


# --------------------------------------------------------------------------- variety
VARIANTS = {
    "chair": {"base": {"four_legs", "swivel", "sled"},
              "back": {"solid", "slats_vertical", "slats_horizontal"},
              "arms": {True, False}, "cushion": {True, False}, "casters": {True, False},
              "legs": {"square", "round", "tapered", None}, "n_spokes": {0, 4, 5},
              "stretchers": {True, False}},
    "table": {"top": {"rect", "round"}, "base": {"four_legs", "pedestal", "trestle"},
              "height_class": {"coffee", "dining", "bar"}, "apron": {True, False},
              "shelf": {True, False}, "pedestal_foot": {"disc", "cross", None}},
    "cabinet": {"variant": {"closed", "open_shelves"}, "n_doors": set(range(5)),
                "n_drawers": set(range(5)), "handle": {"knob", "bar", None},
                "support": {"none", "legs", "plinth"}, "top_slab": {True, False}},
    "airplane": {"fuselage": {"capsule", "ellipsoid"},
                 "engines": {"none", "one_per_wing", "two_per_wing", "rear"},
                 "tail": {"conventional", "t_tail", "twin"},
                 "wing_mount": {"low", "mid", "high"}},
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_topological_variant_appears(category):
    seen: dict[str, set] = {k: set() for k in VARIANTS[category]}
    for seed in range(40):
        attrs = generate_shape(category, seed).attributes
        for k in seen:
            seen[k].add(attrs[k])
    assert seen == VARIANTS[category]


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("category", CATEGORIES)
def test_mesh_watertight_connected_normalised_volume(category):
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        shape = generate_shape(category, seed)
        lo, hi = shape.bounds()
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-12)
        assert abs(np.max(hi - lo) - 1.0) < 1e-12
        mesh = shape.mesh()
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
        assert n_components(mesh) == 1  # no floating part
        assert len(mesh.face_parts) == len(mesh.faces)
        assert set(np.unique(mesh.face_parts)) <= set(range(len(shape.parts)))
        # stratified Monte-Carlo volume of the analytic union inside its bounds
        n = 56
        cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
        pts = lo + (cells + rng.random(cells.shape)) / n * (hi - lo)
        mc_volume = shape.occupancy(pts).mean() * np.prod(hi - lo)
        assert abs(tm.volume - mc_volume) / mc_volume < 0.03, (seed, tm.volume, mc_volume)


@pytest.mark.parametrize("category", CATEGORIES)
def test_occupancy_agrees_with_mesh_winding(category):
    shape = generate_shape(category, 2)
    mesh = shape.mesh()
    rng = np.random.default_rng(1)
    lo, hi = shape.bounds()
    uniform = rng.uniform(-0.55, 0.55, (1500, 3))
    in_bounds = rng.uniform(lo, hi, (1500, 3))
    for pts in (uniform, in_bounds):
        agree = shape.occupancy(pts) == winding_inside(mesh.vertices, mesh.faces, pts)
        assert agree.mean() >= 0.995, agree.mean()


@pytest.mark.parametrize("category", CATEGORIES)
def test_sdf_sign_and_distance_match_mesh(category):
    shape = generate_shape(category, 3)
    mesh = shape.mesh()
    rng = np.random.default_rng(2)
    pts = np.concatenate([rng.uniform(-0.55, 0.55, (2000, 3)),
                          sample_surface(mesh, 2000, rng)[0] + rng.normal(0, 0.02, (2000, 3))])
    sdf = shape.sdf(pts).astype(np.float64)
    assert np.array_equal(sdf < 0, shape.occupancy(pts))
    dist = mesh_distance(mesh.vertices, mesh.faces, pts)
    outside = sdf > 0
    err = np.abs(sdf[outside] - dist[outside])
    assert np.quantile(err, 0.95) < 1e-3 and np.median(err) < 3e-4, np.quantile(err, 0.95)
    # inside, the union's min of part distances never exceeds the depth (plus tessellation)
    assert np.all(-sdf[~outside] <= dist[~outside] + 2e-3)


PRIMITIVE_CASES = [
    ("box", {"hx": 0.2, "hy": 0.05, "hz": 0.12}),
    ("sphere", {"r": 0.15}),
    ("cylinder", {"r": 0.1, "h": 0.2}),
    ("frustum", {"r0": 0.18, "r1": 0.05, "h": 0.12}),
    ("frustum", {"r0": 0.04, "r1": 0.15, "h": 0.2}),
    ("capsule", {"r": 0.07, "h": 0.15}),
    ("ellipsoid", {"rx": 0.1, "ry": 0.25, "rz": 0.15}),
]


@pytest.mark.parametrize(("primitive", "params"), PRIMITIVE_CASES)
def test_primitive_sdf_bounds_and_mesh_agree(primitive, params):
    rotation = rot_z(0.4) @ rot_y(-0.9) @ rot_x(0.3)
    part = Part(primitive, params, make_transform(rotation, (0.05, -0.02, 0.03)), "seat", 0)
    solid = part_solid(part).to_mesh()
    vertices = np.asarray(solid.vert_properties)[:, :3]
    faces = np.asarray(solid.tri_verts).astype(np.int64)
    lo, hi = part.bounds()
    np.testing.assert_allclose(vertices.min(0), lo, atol=2e-3)
    np.testing.assert_allclose(vertices.max(0), hi, atol=2e-3)
    assert np.all(vertices.min(0) >= lo - 1e-6) and np.all(vertices.max(0) <= hi + 1e-6)
    rng = np.random.default_rng(5)
    pts = rng.uniform(lo - 0.1, hi + 0.1, (2000, 3))
    sdf = part.sdf(pts)
    dist = mesh_distance(vertices, faces, pts)
    near_surface = np.abs(sdf) < 2e-3  # tessellation band: sign may legitimately differ
    inside = winding_inside(vertices, faces, pts)
    assert np.array_equal((sdf < 0)[~near_surface], inside[~near_surface])
    if primitive == "ellipsoid":  # first-order bound: exact on the surface, close near it
        close = np.abs(sdf) < 0.02
        np.testing.assert_allclose(np.abs(sdf[close]), dist[close], atol=3e-3, rtol=0.25)
    else:
        np.testing.assert_allclose(np.abs(sdf), dist, atol=2e-3)


def test_occupancy_grid_matches_naive_occupancy():
    for category in CATEGORIES:
        shape = generate_shape(category, 4)
        for res, h in ((7, 0.5), (32, 0.5), (32, 0.625), (9, 0.3)):
            c = 2 * h * ((np.arange(res) + 0.5) / res - 0.5)
            grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
            naive = shape.occupancy(grid).reshape(res, res, res)
            assert np.array_equal(shape.occupancy_grid(res, h), naive)
        # a wider grid leaves empty cells all around the shape's unit cube
        wide = shape.occupancy_grid(32, 0.625)
        assert wide.any() and not wide[:3].any() and not wide[-3:].any()
    with pytest.raises(ValueError, match="half_extent"):
        generate_shape("chair", 4).occupancy_grid(8, 0.0)


# --------------------------------------------------------------------------- keypoints
@pytest.mark.parametrize("category", CATEGORIES)
def test_keypoints_on_surface_and_masks_follow_topology(category):
    names = KEYPOINT_NAMES[category]
    assert 8 <= len(names) <= 16 and len(set(names)) == len(names)
    for seed in range(8):
        shape = generate_shape(category, seed)
        kp, mask = shape.keypoints, shape.keypoint_mask
        assert kp.shape == (len(names), 3) and kp.dtype == np.float32 and mask.dtype == bool
        assert np.all(np.isnan(kp[~mask])) and np.all(np.isfinite(kp[mask]))
        present = kp[mask].astype(np.float64)
        assert np.all(np.abs(shape.sdf(present)) <= 1e-4)
        mesh = shape.mesh()
        assert np.all(mesh_distance(mesh.vertices, mesh.faces, present) <= 1e-3)
        has = dict(zip(names, mask))
        a = shape.attributes
        if category == "chair":
            assert has["arm_front_left"] == has["arm_front_right"] == a["arms"]
            assert sum(mask) == 13 - 2 * (not a["arms"])
        elif category == "table":
            assert has["shelf_center"] == a["shelf"] and sum(mask) == 9 + a["shelf"]
        elif category == "cabinet":
            assert has["door_handle"] == (a["n_doors"] > 0)
            assert has["drawer_handle"] == (a["n_drawers"] > 0)
            assert has["leg_end_front_left"] == (a["support"] == "legs")
        else:
            assert has["engine_front_left"] == (a["engines"] != "none")
            assert has["engine_outer_front_right"] == (a["engines"] == "two_per_wing")
            assert has["tail_v_top"] == (a["tail"] != "twin") != has["tail_v_top_left"]


def test_rear_engines_clear_a_far_back_swept_wing():
    # this training seed used to put the nacelles' fronts inside a wing swept back past them
    shape = generate_shape("airplane", 337684439646788785)
    assert shape.attributes["engines"] == "rear" and shape.attributes["sweep_deg"] > 30
    names = KEYPOINT_NAMES["airplane"]
    fronts = shape.keypoints[[names.index("engine_front_left"),
                              names.index("engine_front_right")]]
    wing_z = [p.transform[2, 3] for p in shape.parts if p.label == "wing"]
    assert np.all(fronts[:, 2] < min(wing_z))
    assert np.all(np.abs(shape.sdf(fronts.astype(np.float64))) <= 1e-4)


# --------------------------------------------------------------------------- samples
@pytest.mark.parametrize("category", CATEGORIES)
def test_samples_exact_and_on_outer_surface(category):
    shape = generate_shape(category, 5)
    s = sample_shape(shape, 0, n_surface=3000, n_uniform=2000, n_near=2000)
    mesh = shape.mesh()
    n_parts = len(shape.parts)
    assert s.surface_points.shape == (3000, 3) and s.surface_points.dtype == np.float32
    assert s.surface_labels.dtype == np.int32 and s.surface_instances.dtype == np.int32
    assert s.voxels32.shape == (32,) * 3 and s.voxels64.shape == (64,) * 3
    np.testing.assert_allclose(np.linalg.norm(s.surface_normals, axis=1), 1, atol=1e-5)
    assert np.all(mesh_distance(mesh.vertices, mesh.faces, s.surface_points[:800]) < 1e-5)
    assert np.all(np.abs(shape.sdf(s.surface_points)) < 1e-3)
    # outer surface only: stepping out along the normal leaves, stepping in enters
    p, n = s.surface_points.astype(np.float64), s.surface_normals.astype(np.float64)
    assert (shape.sdf(p + 1e-3 * n) > 0).mean() > 0.995
    assert (shape.sdf(p - 1e-3 * n) < 0).mean() > 0.995
    # labels and instances are those of the part whose surface is nearest
    nearest = np.abs(shape.part_sdf(p)).argmin(axis=1)
    assert (s.surface_instances == nearest).mean() > 0.98
    assert (s.surface_labels == shape.part_label_ids()[nearest]).mean() > 0.98
    assert set(np.unique(s.surface_instances)) <= set(range(n_parts))
    assert s.surface_labels.max() < len(PART_LABELS[category])
    # uniform / near SDF are the analytic values; near points hug the surface
    assert np.all(np.abs(s.uniform_points) <= 0.55)
    assert np.array_equal(s.uniform_sdf, shape.sdf(s.uniform_points))
    assert np.array_equal(s.near_sdf, shape.sdf(s.near_points))
    assert np.quantile(np.abs(s.near_sdf), 0.9) < 2.5 * max(NEAR_SIGMAS)
    assert 0.2 < (s.near_sdf < 0).mean() < 0.8
    assert np.array_equal(s.voxels32, shape.occupancy_grid(32))
    assert s.voxels64.sum() > 0


# --------------------------------------------------------------------------- retrieval
def test_nearest_train_shape_is_still_clearly_different():
    """60 train + 10 test chairs: a test chair's nearest train chair (chamfer) must stay
    clearly apart, relative both to typical pairs and to the sampling noise floor."""
    n_query, n_tree = 2048, 4096

    def cloud(seed: int, draw: int = 0):
        pts, _, _ = sample_surface(generate_shape("chair", seed).mesh(), n_tree,
                                   np.random.default_rng(draw))
        return pts[:n_query], cKDTree(pts)

    def chamfer(a, b) -> float:  # symmetric mean L2 (unsquared), canonical units
        return 0.5 * (b[1].query(a[0])[0].mean() + a[1].query(b[0])[0].mean())

    train = [cloud(s) for s in range(60)]
    test = [cloud(s) for s in range(1000, 1010)]
    pairwise = np.array([chamfer(train[i], train[j]) for i in range(60) for j in range(i)])
    nearest = np.array([min(chamfer(t, x) for x in train) for t in test])
    floor = np.median([chamfer(cloud(s, 1), cloud(s, 2)) for s in range(3)])
    assert np.median(nearest) > 0.3 * np.median(pairwise), (nearest, np.median(pairwise))
    assert nearest.min() > 1.5 * floor, (nearest.min(), floor)
