"""The registered method ``feature_matching``: deform a source mesh towards a target mesh.

Both meshes are normalised to the canonical unit cube, voxelised at 64^3 and encoded
to shape codes (optionally refined by auto-decoding); the source vertices follow the
implicit feature matching trajectory (Eq. 3-8) and come back as shape keys along it,
coloured by the target part hit by each vertex's correspondence (nearest target
surface point of the matched point).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.data.shapes import CATEGORIES
from backend.methods import register
from backend.methods.base import InputSpec, JobContext, Method, MethodResult, Output, param

__all__ = ["FeatureMatching", "FeatureMatchingConfig", "library_target", "part_colors"]

ZOO = Path(__file__).resolve().parents[2] / "zoo" / "feature_matching"

_PALETTE = np.array(
    [
        [0.90, 0.30, 0.24], [0.20, 0.55, 0.85], [0.30, 0.75, 0.35], [0.95, 0.75, 0.20],
        [0.60, 0.35, 0.75], [0.95, 0.50, 0.70], [0.15, 0.70, 0.70], [0.55, 0.40, 0.25],
        [0.70, 0.70, 0.70], [0.45, 0.65, 0.20], [0.85, 0.45, 0.10], [0.25, 0.30, 0.60],
    ],
    dtype=np.float32,
)


def library_target(spec: str, category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A library shape as the target.

    spec: "<category>:<seed>" (a built-in shape), "" (the first test shape of ``category``)
    or "<folder>:<name>" (source ``name`` of a library indexed by ``shapebridge library
    index``; the folder may itself contain ':').
    Returns vertices (V, 3) float64 canonical frame, faces (F, 3) int64 and face_parts (F,)
    int64 part labels (the semantic parts, or the user library's part indices).
    """
    from backend.data.shapes import generate_shape
    from backend.methods.feature_matching.data import category_seeds

    spec = spec.strip()
    if not spec:
        cat, seed = category, category_seeds(category, "test", 1)[0]
    else:
        cat, _, seed_text = spec.partition(":")
        if cat not in CATEGORIES or not seed_text.strip().isdigit():
            folder, _, name = spec.rpartition(":")
            if folder and (Path(folder).expanduser() / "manifest.json").is_file():
                return _user_library_shape(Path(folder).expanduser(), name.strip())
            raise ValueError(
                f"target_shape must be '<category>:<seed>' with a category of "
                f"{', '.join(CATEGORIES)} (e.g. 'chair:12') or '<library folder>:<shape name>' "
                f"for a library built by 'shapebridge library index', got {spec!r}"
            )
        seed = int(seed_text)
    shape = generate_shape(cat, seed)
    mesh = shape.mesh()
    labels = shape.part_label_ids()[mesh.face_parts]
    return (np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
            np.asarray(labels, np.int64))


def _user_library_shape(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from backend.methods.retrieval_deformation.library import SourceLibrary

    library = SourceLibrary.load(folder)
    if name not in library.names:
        shown = ", ".join(library.names[:8]) + (", ..." if len(library) > 8 else "")
        raise ValueError(f"library {folder} has no shape named {name!r}; it has {shown}")
    v, f, parts = library.mesh(library.names.index(name))
    return np.asarray(v, np.float64), np.asarray(f, np.int64), np.asarray(parts, np.int64)


def part_colors(labels: np.ndarray) -> np.ndarray:
    """RGBA colour per label: labels (V,) int >= 0 -> (V, 4) float32 (palette cycled)."""
    rgb = _PALETTE[np.asarray(labels) % len(_PALETTE)]
    return np.concatenate([rgb, np.ones((len(rgb), 1), np.float32)], axis=1)


@dataclass
class FeatureMatchingConfig:
    category: str = param("chair", "Category whose network matches the shapes", choices=CATEGORIES)
    steps: int = param(50, "Latent interpolation steps (paper: 50, dt = 0.02)", min=1, max=1000)
    gn_iterations: int = param(3, "Gauss-Newton iterations per step (paper: N = 3)", min=1, max=20)
    reg_lambda: float = param(0.01, "Displacement penalty lambda (paper: 0.01)", min=0.0, max=10.0)
    layer: int = param(3, "Matched feature layer (paper: 3)", min=1, max=6)
    fine_layer: int = param(6, "Finer layer added with weight eta; 0 for none (paper: 6)", min=0, max=6)
    eta: float = param(0.1, "Weight eta of the finer layer (paper: 0.1)", min=0.0, max=10.0)
    shape_keys: int = param(11, "Shape keys recorded along the trajectory, t = 0 to 1", min=2, max=101)
    code_from: str = param("encoder", "Shape codes: voxel encoder, or encoder refined by auto-decoding",
                           choices=("encoder", "autodecode"))
    autodecode_steps: int = param(300, "Adam steps of auto-decoding", min=0, max=10000, ui=False)
    input_frame: str = param("blender", "Frame of the input vertices (Blender object-local, or canonical)",
                             choices=("blender", "canonical"), ui=False)
    target_shape: str = param("", "Library target used when no target mesh is selected: "
                              "'<category>:<seed>' (built-in), '<library folder>:<shape name>' "
                              "(shapebridge library index), empty: the category's first test shape")
    seed: int = param(0, "Seed of the random network used when no checkpoint exists", ui=False)


@register
class FeatureMatching(Method):
    name = "feature_matching"
    title = "Match Shape (implicit feature matching)"
    description = (
        "Deforms the source mesh towards the target by matching IM-Net features along a "
        "latent interpolation; shape keys along the trajectory, target part colours"
    )
    paper = "Chen et al., Deep Implicit Feature Matching / Neural Feature Matching in Implicit 3D Representations, ICML 2021"
    Config = FeatureMatchingConfig
    inputs = (
        InputSpec("source", "mesh", "the mesh to deform (active object)"),
        InputSpec("target", "mesh", "the shape to match (optional face_parts colour the result); "
                  "without it, the library shape of target_shape", optional=True),
    )
    output_kinds = ("mesh",)

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._models: dict[str, Any] = {}

    def models(self) -> list[str]:
        return sorted(f"feature_matching/{c}" for c, (_, meta) in self._models.items() if meta)

    def _model(self, category: str, seed: int) -> tuple[Any, str | None]:
        """(model, warning): the category's checkpoint, or a seeded random network."""
        import torch

        from backend.methods.feature_matching.model import PRESETS, ImplicitModel, load_checkpoint

        if category not in self._models:
            path = ZOO / f"{category}.pt"
            if path.is_file():
                self._models[category] = load_checkpoint(path, self.device)
            else:
                torch.manual_seed(seed)
                model = ImplicitModel(PRESETS["cpu"]).to(self.device).eval()
                self._models[category] = (model, None)
        model, meta = self._models[category]
        warning = None
        if meta is None:
            warning = (
                f"no checkpoint loaded: {ZOO / (category + '.pt')} does not exist, so an "
                "untrained, randomly initialised network was used and the result is not "
                f"meaningful; run 'shapebridge train feature_matching --category {category}'"
            )
            self._models.pop(category)  # a checkpoint trained later is picked up next time
        return model, warning

    def infer(self, inputs, config: FeatureMatchingConfig, ctx: JobContext) -> MethodResult:
        import torch

        from backend.data.loaders import connected_component_parts
        from backend.methods.feature_matching.data import cell_centers, sample_cells, voxelize_mesh
        from backend.methods.feature_matching.matching import (
            MatchConfig,
            decoder_field,
            match_points,
            nearest_surface_points,
        )
        from backend.methods.feature_matching.model import auto_decode
        from blender_addon.conventions import (
            blender_local_to_canonical,
            canonical_to_blender_local,
            normalize_to_unit_cube,
        )

        if config.fine_layer == config.layer:
            raise ValueError("fine_layer equals layer; pick another layer or 0 for none")
        ctx.progress(0.0, "loading")
        model, warning = self._model(config.category, config.seed)
        dev = self.device

        def canonical(prefix: str):
            v = np.asarray(inputs[f"{prefix}.vertices"], dtype=np.float64)
            if config.input_frame == "blender":
                return blender_local_to_canonical(v)
            return normalize_to_unit_cube(v)

        src_v, src_tf = canonical("source")
        src_f = np.asarray(inputs["source.faces"], dtype=np.int64)
        tgt_parts = inputs.get("target.face_parts")
        if "target.vertices" in inputs:
            tgt_v, _ = canonical("target")
            tgt_f = np.asarray(inputs["target.faces"], dtype=np.int64)
        else:
            tgt_v, tgt_f, tgt_parts = library_target(config.target_shape, config.category)
            tgt_v, _ = normalize_to_unit_cube(tgt_v)

        ctx.progress(0.05, "encoding")
        rng = np.random.default_rng(config.seed)
        codes = []
        with torch.no_grad():
            for v, f in ((src_v, src_f), (tgt_v, tgt_f)):
                vox = voxelize_mesh(v, f, 64, model.config.grid_half_extent)
                code = model.encoder(torch.from_numpy(vox)[None].to(dev))[0]
                codes.append((code, vox))
        fits = []
        if config.code_from == "autodecode":
            ctx.progress(0.1, "auto-decoding")
            refined = []
            for code, vox in codes:
                idx = sample_cells(vox, 32768, rng)
                pts = cell_centers(idx, 64, model.config.grid_half_extent).to(dev)
                occ = torch.from_numpy(vox.reshape(-1)[idx]).to(dev)
                z, loss = auto_decode(model.decoder, pts, occ, code, config.autodecode_steps)
                refined.append((z, vox))
                fits.append(loss)
            codes = refined

        layers, weights = [config.layer], [1.0]
        if config.fine_layer:
            layers.append(config.fine_layer)
            weights.append(config.eta)
        field = decoder_field(model.decoder, layers, weights)
        match = MatchConfig(steps=config.steps, gn_iterations=config.gn_iterations,
                            reg_lambda=config.reg_lambda)
        # key times on the step grid, without repeats (fewer keys when steps < shape_keys - 1)
        times = np.unique(np.round(np.linspace(0.0, 1.0, config.shape_keys) * config.steps))
        times = times / config.steps
        points = torch.from_numpy(src_v).float().to(dev)
        result = match_points(field, points, codes[0][0], codes[1][0], match, times,
                              progress=lambda fr: ctx.progress(0.15 + 0.75 * fr, "matching"))

        ctx.progress(0.9, "correspondences")
        final = result.points.cpu().double().numpy()
        closest, face = nearest_surface_points(final, tgt_v, tgt_f)
        if tgt_parts is None or len(tgt_parts) != len(tgt_f):
            tgt_parts = connected_component_parts(tgt_v, tgt_f)
        labels = np.asarray(tgt_parts)[face]

        traj = result.trajectory.cpu().double().numpy()
        if config.input_frame == "blender":
            keys = np.stack([canonical_to_blender_local(k, src_tf) for k in traj])
        else:
            keys = np.stack([src_tf.invert(k) for k in traj])
        arrays = {
            "vertices": np.ascontiguousarray(inputs["source.vertices"], dtype=np.float32),
            "faces": np.ascontiguousarray(src_f, dtype=np.int32),
            "shape_keys": keys.astype(np.float32),
            "colors": part_colors(labels),
        }
        meta = {
            "object_name": "MatchShape",
            "placement": "source",
            "shape_key_names": [f"t={t:.2f}" for t in result.times],
            "shape_key_times": [float(t) for t in result.times],
            "trajectory_slider": True,
            "color_name": "target_parts",
        }
        scores = {
            "mean_displacement": float(np.linalg.norm(final - src_v, axis=1).mean()),
            "mean_distance_to_target": float(np.linalg.norm(final - closest, axis=1).mean()),
        }
        if fits:
            scores["autodecode_mse_source"], scores["autodecode_mse_target"] = fits
        info: dict[str, Any] = {
            "layers": layers,
            "layer_weights": weights,
            "correspondences": "nearest target surface point of each matched vertex",
        }
        if warning:
            info["warning"] = warning
        ctx.progress(1.0, "done")
        return MethodResult(outputs=[Output("result", "mesh", arrays, meta)], scores=scores, info=info)
