"""Inference: target preparation, retrieval of the top-k sources, their deformation (and
IDO), and the mesh outputs of the `retrieval_deformation` method."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.core.metrics import chamfer_distance
from backend.data.samples import sample_surface
from backend.data.shapes import Mesh
from backend.methods.base import JobContext, MethodResult, Output
from backend.methods.retrieval_deformation.autodecode import fitted_checkpoint_dir
from backend.methods.retrieval_deformation.checkpoint import (
    JointModel,
    build_model,
    load_checkpoint,
)
from backend.methods.retrieval_deformation.deformation import deform_points
from backend.methods.retrieval_deformation.joint import (
    deform_candidates,
    inner_deformation_optimization,
)
from backend.methods.retrieval_deformation.library import SourceLibrary, builtin_library
from backend.methods.retrieval_deformation.model import ModelConfig
from blender_addon.conventions import (
    blender_local_to_canonical,
    canonical_to_blender_local,
    canonical_to_blender_points,
)

CATEGORIES = ("chair", "table", "cabinet", "airplane")


@dataclass
class Retrieved:
    """Top-k result for B targets. sources: (B, k) int64 library indices, best first;
    distance: (B, k) squared retrieval distances; params: (B, k, P, 6) feasible part
    parameters; fit: (B, k) squared chamfer to the target points (None without them)."""

    sources: torch.Tensor
    distance: torch.Tensor
    params: torch.Tensor
    fit: torch.Tensor | None


@torch.no_grad()
def retrieve_and_deform(
    model: JointModel, inputs: torch.Tensor, target_points: torch.Tensor | None, k: int,
    ido: bool = False, ido_lr: float = 0.5, ido_max_iters: int = 2000, ido_tol: float = 1e-5,
    sources: torch.Tensor | None = None, deform: bool = True,
) -> Retrieved:
    """Retrieve the k nearest sources in R for each target and deform them with D (+ IDO).

    inputs: encoder input, (B, N, 3) points or (B, 3, H, W) images in [0, 1].
    target_points: (B, M, 3) canonical target points for the fit (and IDO), or None.
    sources: optional (B, k) int64 candidates to deform instead of retrieving them.
    deform: False keeps the sources undeformed (retrieval-only baselines; no IDO).
    With a target, the k candidates are re-ordered by their fit (best first).
    """
    if sources is None:
        d2 = model.retrieval.distances(model.retrieval.encoder(inputs))
        k = min(k, d2.shape[1])
        dist, sources = torch.topk(d2, k, dim=1, largest=False)
    else:
        dist = model.retrieval.distances(model.retrieval.encoder(inputs), sources)
    b, k = sources.shape
    batch = model.library.batch(sources.reshape(-1), inputs.device)
    if deform:
        out = deform_candidates(model.deformation, model.deformation.encoder(inputs), sources,
                                batch, target_points)
        params, fit = out.params, out.fit
    else:
        params = torch.zeros(b, k, *batch.centers.shape[1:2], 6, device=inputs.device)
        fit = None
        if target_points is not None:
            tgt = target_points[:, None].expand(-1, k, -1, -1).reshape(b * k, -1, 3)
            fit = chamfer_distance(batch.points, tgt).chamfer.reshape(b, k)
    if deform and ido and target_points is not None:
        tgt = target_points[:, None].expand(-1, k, -1, -1).reshape(b * k, -1, 3)
        res = inner_deformation_optimization(params.reshape(b * k, -1, 6), batch, tgt, ido_lr,
                                             ido_max_iters, ido_tol)
        params, fit = res.params.reshape(params.shape), res.fit.reshape(b, k)
    if fit is not None:
        order = torch.argsort(fit, dim=1)
        sources, dist, fit = (torch.gather(x, 1, order) for x in (sources, dist, fit))
        params = params[torch.arange(b, device=order.device)[:, None], order]
    return Retrieved(sources, dist, params, fit)


def deformed_mesh(library: SourceLibrary, s: int, params: np.ndarray) -> tuple[np.ndarray, ...]:
    """Source ``s``'s mesh deformed by its part parameters.

    params: (P', 6) float feasible parameters (P' >= the source's part count; padding
    ignored). Vertices shared by faces of several parts are split so each part moves
    rigidly with its own box. Returns vertices (V', 3) float32 canonical frame, faces
    (F, 3) int32, face_parts (F,) int32.
    """
    v, f, fp = library.mesh(s)
    corner_parts = np.repeat(fp, 3)
    key = f.reshape(-1).astype(np.int64) * (int(fp.max()) + 1) + corner_parts
    uniq, inverse = np.unique(key, return_inverse=True)
    nparts = int(fp.max()) + 1
    vert, vpart = uniq // nparts, uniq % nparts
    n = library.num_parts(s)
    pts = torch.from_numpy(v[vert][None].astype(np.float32))
    out = deform_points(
        pts, torch.from_numpy(vpart[None]),
        torch.from_numpy(library.ragged("centers", s)[None]),
        torch.from_numpy(np.asarray(params[:n], np.float32)[None]),
    )[0].numpy()
    return out, inverse.reshape(-1, 3).astype(np.int32), fp.astype(np.int32)


def resample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) points -> (n, 3): a random subset, or all plus random repeats when N < n."""
    if len(points) >= n:
        return points[rng.choice(len(points), n, replace=False)]
    return np.concatenate([points, points[rng.choice(len(points), n - len(points))]])


def image_tensor(pixels: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W, C) uint8 or float [0, 1] image, C in 1, 3, 4 -> (1, 3, R, R) float in [0, 1].

    Alpha is composited over white; the image is resized to a square R x R.
    """
    im = pixels.astype(np.float32) / (255.0 if pixels.dtype == np.uint8 else 1.0)
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    elif im.shape[2] == 4:
        im = im[..., :3] * im[..., 3:] + (1.0 - im[..., 3:])
    t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].clamp(0.0, 1.0)
    return torch.nn.functional.interpolate(t, size=(resolution, resolution), mode="bilinear",
                                           align_corners=False, antialias=True)


def resolve_model(config, target: str, device: str, zoo: Path) -> tuple[JointModel, str | None, int]:
    """Model for a config: its checkpoint, the zoo's, or an untrained seeded model."""
    path = Path(config.checkpoint) if config.checkpoint else None
    category = None
    if config.library.startswith("builtin:"):
        category = config.library.split(":", 1)[1]
        if category not in CATEGORIES:
            raise ValueError(f"unknown built-in library {config.library!r}; use builtin:"
                             f"{', builtin:'.join(CATEGORIES)} or an indexed library folder")
        if path is None and (zoo / f"{category}_{target}" / "config.json").is_file():
            path = zoo / f"{category}_{target}"
    elif not Path(config.library).is_dir():
        raise ValueError(f"library {config.library!r} is neither builtin:<category> nor a folder")
    elif path is None and (fitted_checkpoint_dir(config.library, target) / "config.json").is_file():
        path = fitted_checkpoint_dir(config.library, target)
    if path is not None:
        model, doc = load_checkpoint(path, device)
        if model.config.target != target:
            raise ValueError(f"checkpoint {path} was trained for {model.config.target} targets, "
                             f"not {target}; pick a matching checkpoint")
        if category is None and model.library.names != SourceLibrary.load(config.library).names:
            raise ValueError(
                f"checkpoint {path} has no codes for the sources of {config.library}; fit them "
                f"with `shapebridge library index DIR --out {config.library} --checkpoint {path}`")
        return model, str(path), int(doc.get("train", {}).get("resolution", 128))
    library = (builtin_library(category, config.untrained_sources, config.seed, 2048)
               if category else SourceLibrary.load(config.library))
    model = build_model(ModelConfig(target=target), library, config.seed).to(device).eval()
    return model, None, 128


def _target(inputs, config, rng):
    kinds = [k for k in ("mesh", "points", "image") if any(n.startswith(k + ".") for n in inputs)]
    if len(kinds) != 1:
        raise ValueError("give exactly one target: a mesh, a point cloud or an image "
                         f"(got {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    if kind == "image":
        return kind, None, None
    if kind == "mesh":
        v, f = inputs["mesh.vertices"], inputs["mesh.faces"]
        canon, transform = blender_local_to_canonical(v.astype(np.float64))
        mesh = Mesh(canon.astype(np.float32), f.astype(np.int32), np.zeros(len(f), np.int32))
        pts, _, _ = sample_surface(mesh, config.n_points, rng)
    else:
        canon, transform = blender_local_to_canonical(inputs["points.points"].astype(np.float64))
        pts = resample(canon, config.n_points, rng)
    if not np.isfinite(pts).all():
        raise ValueError(f"the target {kind} has non-finite coordinates")
    return kind, pts.astype(np.float32), transform


def run_inference(method, inputs, config, ctx: JobContext) -> MethodResult:
    """The body of `RetrievalDeformation.infer` (see the method's docs)."""
    rng = np.random.default_rng(config.seed)
    kind, pts, transform = _target(inputs, config, rng)
    target = "image" if kind == "image" else "points"
    ctx.progress(0.05, "loading", "loading the model and the library")
    model, checkpoint, resolution = method.model_for(config, target)
    device = next(model.deformation.parameters()).device
    if target == "image":
        enc_in = image_tensor(inputs["image.pixels"], resolution).to(device)
        tgt = None
    else:
        tgt = torch.from_numpy(pts[None]).to(device)
        enc_in = tgt
    ctx.progress(0.2, "retrieving", f"retrieving from {len(model.library)} sources")
    res = retrieve_and_deform(model, enc_in, tgt, config.top_k, config.ido and tgt is not None,
                              config.ido_lr, config.ido_max_iters, config.ido_tol)
    ctx.progress(0.8, "meshing", "deforming the candidate meshes")
    outputs = []
    lib = model.library
    for rank in range(res.sources.shape[1]):
        s = int(res.sources[0, rank])
        v, f, fp = deformed_mesh(lib, s, res.params[0, rank].cpu().numpy())
        v = (canonical_to_blender_points(v) if transform is None
             else canonical_to_blender_local(v, transform))
        meta = {"object_name": f"Retrieved_{rank + 1}", "part_labels": lib.part_labels[s],
                "parts_as_children": True, "hidden": rank > 0,
                "source_name": lib.names[s], "rank": rank + 1,
                "retrieval_distance": float(res.distance[0, rank])}
        if transform is not None:
            meta["placement"] = kind
        if res.fit is not None:
            meta["fit_chamfer_l2sq"] = float(res.fit[0, rank])
        outputs.append(Output(f"candidate_{rank + 1}", "mesh", {
            "vertices": np.ascontiguousarray(v, np.float32),
            "faces": np.ascontiguousarray(f, np.int32),
            "face_parts": np.ascontiguousarray(fp, np.int32),
        }, meta))
    scores = {"retrieval_distance": float(res.distance[0, 0])}
    if res.fit is not None:
        scores["fit_chamfer_l2sq"] = float(res.fit[0, 0])
    info = {"checkpoint": checkpoint, "sources": len(lib), "ido": bool(config.ido and tgt is not None)}
    if checkpoint is None:
        info["warning"] = ("no checkpoint is loaded: the retrieval and deformation networks are "
                           "untrained (randomly initialised), so results are not meaningful; "
                           "train one with `shapebridge train retrieval_deformation`")
    ctx.progress(1.0, "done")
    return MethodResult(outputs, scores, info)
