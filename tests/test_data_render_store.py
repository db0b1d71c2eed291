"""Renders, cameras, the dataset store and its generation (backend.data.render/store/generate)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.bench.results import previous_results, write_results
from backend.data.generate import GenerateConfig, build_index, generate_dataset, split_of
from backend.data.render import (
    RenderConfig,
    opencv_to_pytorch3d,
    orbit_cameras,
    project_points,
    rasterize,
    render_mesh,
)
from backend.data.shapes import generate_shape
from backend.data.store import DatasetReader
from tests.conftest import assert_close

TINY = GenerateConfig("chair", count=3, seed=7, shard_size=1,
                      render=RenderConfig(resolution=32, views=2))


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if
            p.is_file()}


@pytest.fixture(scope="module")
def chair():
    return generate_shape("chair", 3)


@pytest.fixture(scope="module")
def chair_renders(chair):
    mesh = chair.mesh()
    config = RenderConfig(resolution=128, views=4)
    return render_mesh(mesh.vertices, mesh.faces, mesh.face_parts, chair.part_label_ids(),
                       config, seed=11)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "a"
    generate_dataset(out, TINY, workers=1, progress=False)
    return out


# ------------------------------------------------------------------ cameras and renders
def naive_silhouette(vertices, faces, K, R, t, resolution) -> np.ndarray:
    """(H, W) bool: pixel centres covered by a projected triangle, one triangle at a time."""
    uv, _ = project_points(vertices, K[None], R[None], t[None])
    uv = uv[0]
    centres = np.arange(resolution) + 0.5
    mask = np.zeros((resolution, resolution), dtype=bool)
    for a, b, c in uv[faces]:
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int)
        cols = np.arange(max(lo[0], 0), min(hi[0], resolution))
        rows = np.arange(max(lo[1], 0), min(hi[1], resolution))
        if len(cols) == 0 or len(rows) == 0:
            continue
        px, py = np.meshgrid(centres[cols], centres[rows])

        def edge(p, q, px=px, py=py):
            return (q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0])

        e0, e1, e2 = edge(a, b), edge(b, c), edge(c, a)
        inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
        mask[rows[:, None], cols[None, :]] |= inside
    return mask


def test_silhouette_matches_mesh_projected_with_stored_cameras(chair, chair_renders):
    mesh = chair.mesh()
    r = chair_renders
    for v in range(r.mask.shape[0]):
        ref = naive_silhouette(mesh.vertices, mesh.faces, r.K[v], r.R[v], r.t[v], 128)
        iou = (ref & r.mask[v]).sum() / (ref | r.mask[v]).sum()
        assert iou >= 0.98, f"view {v}: IoU {iou:.4f}"


def test_opencv_to_pytorch3d_round_trip():
    from pytorch3d.renderer import PerspectiveCameras

    rng = np.random.default_rng(0)
    az, el = rng.uniform(0, 360, 5), rng.uniform(-10, 40, 5)
    R, t = orbit_cameras(az, el, rng.uniform(2.0, 3.0, 5))
    K = np.repeat(np.array([[150.0, 0, 60.0], [0, 140.0, 66.0], [0, 0, 1]], np.float32)[None],
                  5, axis=0)
    p = opencv_to_pytorch3d(K, R, t, 128)
    cams = PerspectiveCameras(
        R=torch.tensor(p["p3d_R"]), T=torch.tensor(p["p3d_T"]),
        focal_length=torch.tensor(p["p3d_focal_length"]),
        principal_point=torch.tensor(p["p3d_principal_point"]),
        in_ndc=True, image_size=torch.tensor([[128, 128]] * 5),
    )
    pts = rng.uniform(-0.5, 0.5, (200, 3)).astype(np.float32)
    screen = cams.transform_points_screen(torch.tensor(pts)[None].expand(5, -1, -1))
    uv, z = project_points(pts, K, R, t)
    # well under the required half pixel: the two projections are the same camera
    assert_close(screen[..., :2].numpy(), uv, rtol=0, atol=1e-3, name="PyTorch3D vs OpenCV px")
    # and the OpenCV camera really looks at the origin from the documented orbit position
    centre = -np.einsum("vji,vj->vi", R, t)
    a, e = np.radians(az), np.radians(el)
    expected = np.stack([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)], -1)
    direction = centre / np.linalg.norm(centre, axis=1, keepdims=True)
    assert_close(direction, expected, rtol=0, atol=1e-5, name="orbit")
    uv0, _ = project_points(np.zeros((1, 3)), K, R, t)
    assert_close(uv0[:, 0], K[:, :2, 2], rtol=0, atol=1e-3, name="origin at principal point")


def test_azimuth_zero_sees_the_front():
    R, t = orbit_cameras(np.array([0.0, 90.0]), np.array([0.0, 0.0]), np.array([2.0, 2.0]))
    uv, z = project_points(np.array([[0, 0, 0.5], [0, 0, -0.5], [0.5, 0, 0], [0, 0.4, 0]]),
                           np.repeat(np.eye(3)[None], 2, 0), R, t)
    assert z[0, 0] < z[0, 1]  # the front (+Z) is nearer to the azimuth-0 camera
    assert z[1, 2] < z[1, 0]  # azimuth 90 looks from +X
    assert uv[0, 3, 1] < 0  # +Y is up in the image (v decreases)


def test_depth_is_camera_z_of_the_surface_and_normals_match_sdf(chair, chair_renders):
    r = chair_renders
    for v in range(r.mask.shape[0]):
        rows, cols = np.nonzero(r.mask[v])
        z = r.depth[v][rows, cols].astype(np.float64)
        assert np.all(z > 0) and np.all(r.depth[v][~r.mask[v]] == 0)
        pix = np.stack([cols + 0.5, rows + 0.5, np.ones_like(z)], axis=1)
        x_cam = (np.linalg.inv(r.K[v]) @ pix.T).T * z[:, None]
        x_world = (x_cam - r.t[v]) @ r.R[v]  # R^T (x_cam - t)
        d = np.abs(chair.sdf(x_world))
        assert np.median(d) < 1e-3 and np.quantile(d, 0.99) < 5e-3, (np.median(d), d.max())
        # normals: unit, toward the camera, and along the SDF gradient
        n = r.normals[v][rows, cols].astype(np.float64)
        assert_close(np.linalg.norm(n, axis=1), np.ones(len(n)), rtol=0, atol=2e-3,
                     name="unit normals")
        eps = 1e-4
        grad = np.stack([
            chair.sdf(x_world + eps * np.eye(3)[k]) - chair.sdf(x_world - eps * np.eye(3)[k])
            for k in range(3)
        ], axis=1).astype(np.float64)
        grad /= np.linalg.norm(grad, axis=1, keepdims=True) + 1e-12
        agree = (np.abs((n * grad).sum(1)) > 0.9).mean()
        assert agree > 0.9, f"view {v}: normals agree with the SDF gradient at {agree:.2%}"


def test_keypoints_project_inside_the_silhouette(chair, chair_renders):
    r = chair_renders
    kp = chair.keypoints[chair.keypoint_mask]
    assert len(kp) > 0
    uv, z = project_points(kp, r.K, r.R, r.t)
    for v in range(r.mask.shape[0]):
        rows, cols = np.nonzero(r.mask[v])
        assert np.all(uv[v, :, 0] >= cols.min() - 1) and np.all(uv[v, :, 0] <= cols.max() + 2)
        assert np.all(uv[v, :, 1] >= rows.min() - 1) and np.all(uv[v, :, 1] <= rows.max() + 2)
        px = np.clip(uv[v].astype(int), 0, 127)
        visible = np.abs(r.depth[v][px[:, 1], px[:, 0]] - z[v]) < 0.02
        # a visible keypoint lies on the silhouette or within a pixel of its edge
        dilated = r.mask[v].copy()
        dilated[1:] |= r.mask[v][:-1]
        dilated[:-1] |= r.mask[v][1:]
        dilated[:, 1:] |= dilated[:, :-1].copy()
        dilated[:, :-1] |= dilated[:, 1:].copy()
        assert np.all(dilated[px[visible, 1], px[visible, 0]])


def test_tiled_rasterisation_equals_one_naive_call(chair):
    mesh = chair.mesh()
    verts = torch.as_tensor(mesh.vertices)
    faces = torch.as_tensor(mesh.faces.astype(np.int64))
    R, t = orbit_cameras(np.array([10.0, 200.0]), np.array([5.0, 35.0]), np.array([2.6, 2.6]))
    K = np.repeat(np.array([[170.0, 0, 64.0], [0, 170.0, 64.0], [0, 0, 1]], np.float32)[None],
                  2, axis=0)
    f_tiled, z_tiled, b_tiled = rasterize(verts, faces, K, R, t, 128, tile_size=16)
    f_naive, z_naive, b_naive = rasterize(verts, faces, K, R, t, 128, tile_size=None)
    same = (f_tiled == f_naive).float().mean().item()
    assert same > 0.999, same  # identical up to exact ties between coplanar faces
    hit = (f_naive >= 0) & (f_tiled >= 0)
    assert_close(z_tiled[hit].numpy(), z_naive[hit].numpy(), rtol=0, atol=1e-5, name="zbuf")


def test_renders_are_seeded(chair):
    mesh = chair.mesh()
    config = RenderConfig(resolution=32, views=3, azimuth_mode="uniform")
    args = (mesh.vertices, mesh.faces, mesh.face_parts, chair.part_label_ids(), config)
    a, b, c = render_mesh(*args, seed=1), render_mesh(*args, seed=1), render_mesh(*args, seed=2)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.azimuth, b.azimuth)
    assert not np.array_equal(a.azimuth, c.azimuth)
    lo, hi = config.elevation_range_deg
    assert np.all((a.elevation >= lo) & (a.elevation <= hi))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_renders_match_cpu(chair, chair_renders):
    mesh = chair.mesh()
    config = RenderConfig(resolution=128, views=4)
    gpu = render_mesh(mesh.vertices, mesh.faces, mesh.face_parts, chair.part_label_ids(),
                      config, seed=11, device="cuda")
    iou = (gpu.mask & chair_renders.mask).sum() / (gpu.mask | chair_renders.mask).sum()
    assert iou > 0.995, iou
    both = gpu.mask & chair_renders.mask
    assert_close(gpu.depth[both], chair_renders.depth[both], rtol=0, atol=1e-4, name="depth")
    assert np.array_equal(gpu.K, chair_renders.K) and np.array_equal(gpu.R, chair_renders.R)


def test_render_rejects_bad_meshes():
    v = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="face indices"):
        render_mesh(v, np.array([[0, 1, 3]]), np.zeros(1), np.zeros(1), RenderConfig(), 0)
    with pytest.raises(ValueError, match="no faces"):
        render_mesh(v, np.zeros((0, 3)), np.zeros(0), np.zeros(1), RenderConfig(), 0)


# ------------------------------------------------------------------ store and generation
def test_same_seed_gives_identical_bytes_across_worker_counts(tiny_dataset, tmp_path):
    other = tmp_path / "b"
    generate_dataset(other, TINY, workers=2, progress=False)
    a, b = files_of(tiny_dataset), files_of(other)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    changed = tmp_path / "c"
    generate_dataset(changed, GenerateConfig("chair", 3, 8, 1, TINY.render), workers=1,
                     progress=False)
    assert files_of(changed)["shards/shard-00000/keypoints.npy"] != a[
        "shards/shard-00000/keypoints.npy"]


def test_resume_writes_only_the_missing_shard(tiny_dataset, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(tiny_dataset, out)
    shutil.rmtree(out / "shards" / "shard-00002")
    (out / "shards" / ".tmp-shard-00002-999").mkdir()  # debris of a killed writer
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.npy")}
    report = generate_dataset(out, TINY, workers=1, progress=False)
    assert report == {"written": [2], "skipped": [0, 1]}
    assert all(p.stat().st_mtime_ns == m for p, m in before.items())
    assert files_of(out) == files_of(tiny_dataset)


def test_resume_refuses_another_config(tiny_dataset, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(tiny_dataset, out)
    with pytest.raises(ValueError, match="another config"):
        generate_dataset(out, GenerateConfig("chair", 3, 99, 1, TINY.render), workers=1,
                         progress=False)


def test_reader_returns_memmap_views(tiny_dataset):
    reader = DatasetReader(tiny_dataset)
    assert len(reader) == 3
    item = reader[1]
    for name, spec in reader.fields.items():
        if spec["kind"] == "fixed":
            a = item[name]
            assert isinstance(a, np.memmap), name
            assert not a.flags.writeable and not a.flags.owndata, name
            assert list(a.shape) == spec["shape"] and a.dtype.str == spec["dtype"], name
    rgb = reader.renders(1)["rgb"]
    assert rgb.shape == (2, 32, 32, 3) and rgb.dtype == np.uint8
    # the memmap row is the shape regenerated from its stored seed
    shape = generate_shape("chair", item["seed"])
    assert np.array_equal(item["keypoints"], shape.keypoints, equal_nan=True)
    mesh = reader.mesh(1)
    assert np.array_equal(mesh["faces"], shape.mesh().faces)
    assert isinstance(mesh["vertices"], np.memmap)
    assert np.array_equal(reader.ragged(1, "part_label_ids"), shape.part_label_ids())
    assert reader.meta(1)["attributes"] == json.loads(json.dumps(shape.attributes))
    assert sorted(np.concatenate([reader.split(s) for s in ("train", "val", "test")])) == [0, 1, 2]
    with pytest.raises(IndexError):
        reader[3]


def test_reader_refuses_incomplete_and_foreign_dirs(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="not a ShapeBridge dataset"):
        DatasetReader(tmp_path)
    out = tmp_path / "partial"
    shutil.copytree(tiny_dataset, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="incomplete"):
        DatasetReader(out)


def test_splits_are_stable_and_80_10_10():
    small = build_index(GenerateConfig("chair", 50, seed=3))
    large = build_index(GenerateConfig("chair", 4000, seed=3, shard_size=100))
    assert np.array_equal(small["seed"], large["seed"][:50])
    assert np.array_equal(small["split"], large["split"][:50])
    frac = np.bincount(large["split"], minlength=3) / len(large)
    assert_close(frac, [0.8, 0.1, 0.1], rtol=0, atol=0.03, name="split fractions")
    assert large["shard"][-1] == 39 and large["row"][-1] == 99
    assert split_of(int(large["seed"][7])) == large["split"][7]


def test_write_results_json_and_markdown(tmp_path):
    rows = [{"variant": "ours", "category": "chair", "metric": "seconds", "value": 1.5, "n": 4},
            {"variant": "naive/ours", "metric": "ratio", "value": 3.25}]
    path = tmp_path / "bench_x.json"
    table = write_results("x", "bench", rows, str(path), "X bench")
    doc = json.loads(path.read_text())
    assert doc["name"] == "x" and doc["kind"] == "bench" and doc["rows"] == rows
    assert {"commit", "device", "created", "command"} <= set(doc)
    md = path.with_suffix(".md").read_text()
    assert table in md and "| naive/ours |  |" in table
    with pytest.raises(ValueError, match="metric"):
        write_results("x", "bench", [{"value": 1.0}], None, "bad")
    # what a later run appending to the file reads back: the rows and each joined command
    write_results("x", "bench", rows, str(path), "X bench", "run a ;; run b")
    assert previous_results(path) == (rows, ["run a", "run b"])
    assert previous_results(tmp_path / "absent.json") == ([], []) and previous_results(None) == ([], [])
    path.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="bench_x.json is not a results file"):
        previous_results(path)
