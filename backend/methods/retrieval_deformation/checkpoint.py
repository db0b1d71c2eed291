"""Checkpoint directory of a trained retrieval + deformation model.

Layout: ``model.pt`` (state dicts only, loaded with ``weights_only=True``),
``config.json`` (ModelConfig, TrainConfig, library description, training summary) and
``library/`` (the `SourceLibrary` the auto-decoded codes belong to).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.methods.retrieval_deformation.library import SourceLibrary
from backend.methods.retrieval_deformation.model import (
    DeformationModule,
    ModelConfig,
    RetrievalModule,
)


@dataclass
class JointModel:
    """A library with its deformation module D and retrieval module R."""

    config: ModelConfig
    library: SourceLibrary
    deformation: DeformationModule
    retrieval: RetrievalModule

    def to(self, device: str | torch.device) -> JointModel:
        self.deformation.to(device)
        self.retrieval.to(device)
        return self

    def eval(self) -> JointModel:
        self.deformation.eval()
        self.retrieval.eval()
        return self

    def refresh_source_embeddings(self) -> None:
        """With ``source_embedding='encoder'``, store E_R of every library source's samples
        as its retrieval embedding (`RetrievalModule.refresh_source_embeddings`); else
        nothing (the embeddings are learned rows)."""
        if self.retrieval.encodes_sources:
            device = self.retrieval.source_embeddings.device
            self.retrieval.refresh_source_embeddings(
                torch.from_numpy(self.library.points).to(device))


def build_model(config: ModelConfig, library: SourceLibrary, seed: int = 0) -> JointModel:
    """Randomly initialised (seeded) modules for ``library``."""
    torch.manual_seed(seed)
    counts = torch.tensor([library.num_parts(s) for s in range(len(library))], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return JointModel(config, library, DeformationModule(config, offsets), RetrievalModule(config, len(library)))


def save_checkpoint(model: JointModel, directory: str | Path, extra: dict) -> Path:
    """Write ``model`` into ``directory`` (see the module docstring)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    model.library.save(root / "library")
    torch.save(
        {"deformation": model.deformation.state_dict(), "retrieval": model.retrieval.state_dict()},
        root / "model.pt",
    )
    doc = {"format": "shapebridge-retrieval-deformation", "version": 1,
           "model": model.config.to_json(), **extra}
    (root / "config.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return root


def load_checkpoint(directory: str | Path, device: str = "cpu") -> tuple[JointModel, dict]:
    """Read a checkpoint directory; returns the model (eval mode) and its config.json."""
    root = Path(directory)
    path = root / "config.json"
    if not path.is_file():
        raise ValueError(f"{root} is not a retrieval_deformation checkpoint (no config.json)")
    doc = json.loads(path.read_text())
    model = build_model(ModelConfig.from_json(doc["model"]), SourceLibrary.load(root / "library"))
    state = torch.load(root / "model.pt", map_location="cpu", weights_only=True)
    model.deformation.load_state_dict(state["deformation"])
    model.retrieval.load_state_dict(state["retrieval"])
    return model.to(device).eval(), doc


def export_fp16(source: str | Path, destination: str | Path) -> Path:
    """Copy a checkpoint directory with its floating-point weights stored in fp16.

    ``load_checkpoint`` reads them back into the fp32 modules, so only storage changes
    (about half the size of ``model.pt``). config.json records ``"storage": "fp16"``.
    """
    import shutil

    src, dst = Path(source), Path(destination)
    if not (src / "config.json").is_file():
        raise ValueError(f"{src} is not a retrieval_deformation checkpoint (no config.json)")
    if dst.exists():
        raise ValueError(f"{dst} exists; export into a new directory")
    dst.mkdir(parents=True)
    shutil.copytree(src / "library", dst / "library")
    state = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    half = {name: {k: v.half() if v.is_floating_point() else v for k, v in part.items()}
            for name, part in state.items()}
    torch.save(half, dst / "model.pt")
    doc = json.loads((src / "config.json").read_text())
    doc["storage"] = "fp16"
    (dst / "config.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return dst
