"""The `retrieval_deformation` Method: retrieve part-segmented sources for a target (points,
mesh or image) and deform their parts to fit it (paper 000)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.methods import register
from backend.methods.base import InputSpec, JobContext, Method, MethodResult, param

#: Shipped checkpoints: ``ZOO / f"{category}_{target}"``.
ZOO = Path(__file__).resolve().parents[2] / "zoo" / "retrieval_deformation"


@dataclass
class RetrievalDeformationConfig:
    library: str = param("builtin:chair", "Source library: builtin:<category> or the folder of an "
                         "indexed library (shapebridge library index)")
    top_k: int = param(5, "Candidates returned, best first", min=1, max=50)
    ido: bool = param(True, "Inner deformation optimisation after the network's prediction "
                      "(point and mesh targets only)")
    ido_max_iters: int = param(2000, "IDO: most SGD iterations (each candidate stops earlier "
                               "once its chamfer changes by less than ido_tol)", min=1,
                               max=10000, ui=False)
    ido_lr: float = param(0.5, "IDO: SGD learning rate", min=1e-6, max=100.0, ui=False)
    ido_tol: float = param(1e-5, "IDO: stop when the chamfer changes by less", min=0.0, max=1.0, ui=False)
    n_points: int = param(2048, "Points sampled on the target", min=16, max=100000, ui=False)
    checkpoint: str = param("", "Checkpoint folder (empty: the shipped one for the library's "
                            "category and the target kind)", ui=False)
    untrained_sources: int = param(50, "Built-in sources used when no checkpoint exists", min=1,
                                   max=5000, ui=False)
    seed: int = param(0, "Seed of the point sampling and of an untrained model", min=0, max=2**31 - 1,
                      ui=False)


@register
class RetrievalDeformation(Method):
    name = "retrieval_deformation"
    title = "Retrieve & Deform"
    description = ("Retrieve part-segmented sources for a scan, mesh or image and deform their "
                   "parts to fit it")
    paper = "Uy et al., Joint Learning of 3D Shape Retrieval and Deformation, CVPR 2021"
    Config = RetrievalDeformationConfig
    inputs = (
        InputSpec("mesh", "mesh", "target mesh (sampled to points)", optional=True),
        InputSpec("points", "points", "target point cloud", optional=True),
        InputSpec("image", "image", "target image", optional=True),
    )
    output_kinds = ("mesh",)

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._models: dict = {}

    def models(self) -> list[str]:
        return sorted(str(k[0]) for k in self._models if k[0])

    def infer(self, inputs, config: RetrievalDeformationConfig, ctx: JobContext) -> MethodResult:
        from backend.methods.retrieval_deformation.inference import run_inference

        return run_inference(self, inputs, config, ctx)

    def model_for(self, config: RetrievalDeformationConfig, target: str):
        """(JointModel, checkpoint path or None, image resolution) for a config (cached)."""
        from backend.methods.retrieval_deformation.inference import resolve_model

        key = (config.checkpoint, config.library, target, config.untrained_sources, config.seed)
        if key not in self._models:
            self._models[key] = resolve_model(config, target, self.device, ZOO)
        return self._models[key]
