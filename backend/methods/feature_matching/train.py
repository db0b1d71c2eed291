"""``shapebridge train feature_matching``: coarse-to-fine IM-Net training on built-in shapes.

One network per category (as the paper). Phases fit occupancy at the 16^3, 32^3 and 64^3
sample sets of `data` in turn (IM-Net's progressive scheme), Adam with learning rate
5e-5 and beta1 = 0.5 (IM-Net), mean squared error of the soft-clipped output (IM-Net's
released loss; ``--loss l1`` gives the |F - s| of the paper's Sec. 2.1). Writes the
checkpoint and a model card (``<out>.md`` + ``<out>.json``).

Two schedules (`SCHEDULES`): "paper" (IM-Net's batch and learning rate; GPU) and "cpu"
(the default checkpoints: fewer shapes and points per step and a larger learning rate, so
that one category trains in under an hour on 2 CPU cores). A training step costs about
as much in the 64^3 voxel encoder (per shape) as in the decoder (per point), so the CPU
schedule shrinks both.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from backend.bench.results import git_commit
from backend.data.shapes import CATEGORIES, generate_shape
from backend.methods.feature_matching.data import (
    RESOLUTIONS,
    SAMPLE_COUNTS,
    build_training_set,
    category_seeds,
    cell_centers,
    subvoxel_points,
)
from backend.methods.feature_matching.model import (
    PRESETS,
    ImplicitModel,
    ModelConfig,
    save_checkpoint,
)

__all__ = [
    "DEFAULT_ZOO",
    "SCHEDULES",
    "TrainConfig",
    "add_arguments",
    "reconstruction_iou",
    "run",
    "train",
    "write_model_card",
]

DEFAULT_ZOO = Path(__file__).resolve().parents[2] / "zoo" / "feature_matching"
"""Where shipped checkpoints live: ``backend/zoo/feature_matching/<category>.pt``."""


SCHEDULES: dict[str, dict] = {
    # IM-Net (IM-NET-pytorch): 32 shapes x 4096 points per step, Adam 5e-5; phase lengths
    # are ours (IM-Net counts epochs of its 35k-shape ShapeNet sets). GPU.
    "paper": {"preset": "paper", "phase_iterations": (4000, 4000, 8000), "batch_shapes": 32,
              "points_per_shape": 4096, "lr": 5e-5},
    # Default checkpoints on 2 CPU cores (< 60 min): 8 x 2048 points per step (1/8 of the
    # paper's work per step), 3600 steps, lr 2e-4 to converge in that many steps.
    "cpu": {"preset": "cpu", "phase_iterations": (800, 1000, 1800), "batch_shapes": 8,
            "points_per_shape": 2048, "lr": 2e-4},
}
"""Named training schedules; `TrainConfig.from_schedule` applies one."""


@dataclass
class TrainConfig:
    """Training settings; optimiser values are IM-Net's (paper 001 follows IM-Net)."""

    category: str = "chair"
    """Built-in category; one network per category."""
    preset: str = "paper"
    """Network size: "paper" (IM-Net widths, GPU), "cpu" (default checkpoints), "tiny"."""
    shapes: int = 1000
    """Training shapes (train split of the built-in data, dataset seed ``data_seed``)."""
    data_seed: int = 0
    """Seed of the built-in dataset whose train split is used."""
    phase_iterations: tuple[int, int, int] = (4000, 4000, 8000)
    """Optimiser steps at the 16^3, 32^3 and 64^3 sample sets."""
    batch_shapes: int = 32
    """Shapes per step (IM-Net: 32)."""
    points_per_shape: int = 4096
    """Sample cells per shape per step (random subset of the phase's sample set)."""
    lr: float = 5e-5
    """Adam learning rate (IM-Net)."""
    beta1: float = 0.5
    """Adam beta1 (IM-Net)."""
    loss: str = "mse"
    """"mse" (IM-Net code) or "l1" (paper Sec. 2.1)."""
    device: str = "cpu"
    """Torch device, e.g. "cpu" or "cuda"."""
    seed: int = 0
    """Seed of initialisation, sampling and batching."""
    log_every: int = 100
    """Steps between loss log lines."""
    counts: tuple[int, int, int] = SAMPLE_COUNTS
    """Cells stored per shape at each resolution."""
    frame_scale: float | None = None
    """`ModelConfig.frame_scale` of the network (None: the preset's)."""
    sampling: str = "imnet"
    """Training points: "imnet" (IM-Net's point sampling: one exact-label point per cell
    from a 256^3 grid, thin parts kept; `data.subvoxel_samples`; the default since session
    26) or "center" (occupancy at the cells' centres, the checkpoints trained before)."""
    extra: dict = field(default_factory=dict)
    """Free-form notes copied into the model card."""

    @classmethod
    def from_schedule(cls, schedule: str, **overrides) -> TrainConfig:
        """The config of a named schedule of `SCHEDULES`, with ``overrides`` (None = keep)."""
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
        values = {**SCHEDULES[schedule], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values, extra={"schedule": schedule})

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; choose from {', '.join(CATEGORIES)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {self.loss!r}")
        if len(self.phase_iterations) != 3 or min(self.phase_iterations) < 0:
            raise ValueError("phase_iterations needs three non-negative step counts (16, 32, 64)")
        if self.shapes < 1 or self.batch_shapes < 1 or self.points_per_shape < 1:
            raise ValueError("shapes, batch_shapes and points_per_shape must be positive")
        if self.sampling not in ("center", "imnet"):
            raise ValueError(f"sampling must be 'center' or 'imnet', got {self.sampling!r}")
        self.model_config()  # raises on a bad frame_scale

    def model_config(self) -> ModelConfig:
        """The network's config: the preset's, with ``frame_scale`` when given."""
        preset = PRESETS[self.preset]
        return preset if self.frame_scale is None else replace(preset, frame_scale=self.frame_scale)


def train(
    config: TrainConfig, log: Callable[[str], None] | None = print
) -> tuple[ImplicitModel, dict]:
    """Train one category's network; returns (model in eval mode, training record).

    The record has per-phase final losses, the loss history (step, phase, loss),
    wall time and data description (for the model card).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    seeds = category_seeds(config.category, "train", config.shapes, config.data_seed)
    model_config = config.model_config()
    extent = model_config.grid_half_extent
    data = build_training_set(config.category, seeds, config.counts, seed=config.seed,
                              half_extent=extent, sampling=config.sampling)
    data_s = time.perf_counter() - t0
    model = ImplicitModel(model_config).to(config.device)
    tf32 = config.device.startswith("cuda")
    if tf32:
        # TF32 matrix products on the GPU's tensor cores (the decoder is ~3 GFLOP per point
        # batch of 4096); the checkpoint is still fp32 and recorded with "tf32" below.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # fused: one kernel over all parameters (the per-tensor Adam was ~10% of a CPU step)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, 0.999),
                           fused=True)
    voxels = torch.from_numpy(data.voxels)
    history: list[tuple[int, int, float]] = []
    phase_loss: list[float | None] = []
    step = 0
    model.train()
    t_train = time.perf_counter()
    for phase, (res, iters) in enumerate(zip(RESOLUTIONS, config.phase_iterations, strict=True)):
        cells = torch.from_numpy(data.cells[phase])
        fine = torch.from_numpy(data.points[phase]) if data.points is not None else None
        occ = torch.from_numpy(data.occupancy[phase])
        n = cells.shape[1]
        k = min(config.points_per_shape, n)
        running: list[float] = []
        for _ in range(iters):
            b = rng.choice(len(seeds), min(config.batch_shapes, len(seeds)), replace=False)
            b_t = torch.from_numpy(b)
            pick = torch.from_numpy(np.stack([rng.choice(n, k, replace=False) for _ in b]))
            target = torch.gather(occ[b_t], 1, pick).float().to(config.device)
            if fine is None:
                points = cell_centers(torch.gather(cells[b_t].long(), 1, pick), res, extent)
            else:
                points = subvoxel_points(fine[b_t[:, None], pick], half_extent=extent)
            points = points.to(config.device)
            pred = model(voxels[b_t].to(config.device), points)
            err = pred - target
            loss = (err * err).mean() if config.loss == "mse" else err.abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running.append(loss.item())
            if step % config.log_every == 0:
                history.append((step, res, float(np.mean(running[-config.log_every:]))))
                if log:
                    log(f"step {step} res {res}^3 loss {history[-1][2]:.5f}")
        phase_loss.append(float(np.mean(running[-100:])) if running else None)
    model.eval()
    train_s = time.perf_counter() - t_train
    iou = reconstruction_iou(model, config.category, 16, config.data_seed, device=config.device)
    record = {
        "category": config.category,
        "config": {**asdict(config), "phase_iterations": list(config.phase_iterations),
                   "counts": list(config.counts)},
        "model": model.config.to_dict(),
        "phase_final_loss": dict(zip([f"{r}^3" for r in RESOLUTIONS], phase_loss, strict=True)),
        "history": history,
        "steps": step,
        "data": f"{len(seeds)} built-in '{config.category}' shapes, train split of dataset seed "
                f"{config.data_seed}",
        "data_seconds": data_s,
        "train_seconds": train_s,
        "steps_per_second": step / max(train_s, 1e-9),
        "val_iou_32": iou,
        "val_iou_shapes": 16,
        "device": torch.cuda.get_device_name(0) if config.device.startswith("cuda")
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "commit": git_commit(),
        "tf32": tf32,
    }
    return model, record


def reconstruction_iou(
    model: ImplicitModel, category: str, count: int = 16, data_seed: int = 0,
    resolution: int = 32, device: str = "cpu",
) -> float:
    """Mean IoU of the decoded occupancy (F > 0.5) against the exact occupancy at the cell
    centres of an R^3 grid, over the first ``count`` validation shapes of the category
    (codes from the 64^3 voxel encoder): the model card's reconstruction check."""
    seeds = category_seeds(category, "val", count, data_seed)
    pts = cell_centers(torch.arange(resolution**3), resolution).to(device)
    ious = []
    model.eval()
    with torch.no_grad():
        for s in seeds:
            shape = generate_shape(category, s)
            vox = model.shape_voxels(shape)[None].to(device)
            pred = (model.decoder(pts, model.encoder(vox)[0]) > 0.5).cpu().numpy()
            gt = shape.occupancy_grid(resolution).reshape(-1)
            union = np.logical_or(pred, gt).sum()
            ious.append(np.logical_and(pred, gt).sum() / union if union else 1.0)
    return float(np.mean(ious))


def write_model_card(path: Path, record: dict) -> None:
    """Write ``<path>.json`` (the full record) and ``<path>.md`` (a readable summary)."""
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# feature_matching: {record['category']}",
        "",
        "IM-Net occupancy network (paper 001, implicit feature matching).",
        "",
        f"- data: {record['data']}",
        f"- network: {record['model']}",
        f"- steps: {record['steps']} (16^3/32^3/64^3: {record['config']['phase_iterations']}), "
        f"lr {record['config']['lr']}, batch {record['config']['batch_shapes']} shapes x "
        f"{record['config']['points_per_shape']} points, loss {record['config']['loss']}, "
        f"sampling {record['config'].get('sampling', 'center')}",
        f"- final loss per phase: {record['phase_final_loss']}",
        f"- training time: {record['train_seconds']:.0f} s on {record['device']} "
        f"(+ {record['data_seconds']:.0f} s data), {record['steps_per_second']:.2f} steps/s, "
        f"schedule {record['config']['extra'].get('schedule', 'custom')}",
        f"- commit: {record['commit']}",
    ]
    if "val_iou_32" in record:
        lines.append(f"- reconstruction IoU (32^3, first {record['val_iou_shapes']} val shapes, "
                     f"F > 0.5): {record['val_iou_32']:.3f}")
    lines += [
        f"- evaluate: `shapebridge eval feature_matching --categories {record['category']} "
        f"--json benchmarks/results/feature_matching.json`",
        "",
    ]
    path.with_suffix(".md").write_text("\n".join(lines))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shapebridge train feature_matching``."""
    d = TrainConfig()
    parser.add_argument("--category", default=d.category, choices=CATEGORIES)
    parser.add_argument("--schedule", default=None, choices=tuple(SCHEDULES),
                        help="paper (IM-Net sizes, GPU) or cpu (default checkpoints, < 1 h on "
                             "2 cores); default: paper on CUDA, cpu otherwise")
    parser.add_argument("--preset", default=None, choices=tuple(PRESETS),
                        help="network size (default: the schedule's): paper, cpu, tiny")
    parser.add_argument("--shapes", type=int, default=d.shapes, help="training shapes")
    parser.add_argument("--data-seed", type=int, default=d.data_seed)
    parser.add_argument("--iterations", default=None,
                        help="steps of the 16^3,32^3,64^3 phases, e.g. 4000,4000,8000 "
                             "(default: the schedule's)")
    parser.add_argument("--batch", type=int, default=None, help="shapes per step")
    parser.add_argument("--points", type=int, default=None, help="points per shape per step")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--loss", default=d.loss, choices=("mse", "l1"))
    parser.add_argument("--frame-scale", type=float, default=None,
                        help="scale of the shapes' unit cube inside the network's grid, in (0, 1] "
                        "(default: the preset's; < 1 leaves an empty margin around every shape)")
    parser.add_argument("--sampling", default=None, choices=("center", "imnet"),
                        help="training points: IM-Net's sampling (one exact-label point per "
                             "cell from a 256^3 grid; the default) or cell centres (the "
                             "checkpoints trained before session 26)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (e.g. 1 to leave a core free)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--out", default=None,
                        help="checkpoint path (default backend/zoo/feature_matching/<category>.pt)")


def run(args: argparse.Namespace) -> int:
    """Train and write the checkpoint and its model card; returns the exit status."""
    iters = None
    if args.iterations is not None:
        try:
            iters = tuple(int(s) for s in str(args.iterations).split(","))
        except ValueError:
            iters = ()
        if len(iters) != 3:
            print(f"--iterations must be three comma-separated integers, got {args.iterations!r}")
            return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"--threads must be a positive integer, got {args.threads}")
            return 2
        torch.set_num_threads(args.threads)
    schedule = args.schedule or ("paper" if args.device.startswith("cuda") else "cpu")
    config = TrainConfig.from_schedule(
        schedule, category=args.category, preset=args.preset, shapes=args.shapes,
        data_seed=args.data_seed, phase_iterations=iters, batch_shapes=args.batch,
        points_per_shape=args.points, lr=args.lr, loss=args.loss, device=args.device,
        seed=args.seed, log_every=args.log_every, frame_scale=args.frame_scale,
        sampling=args.sampling,
    )
    model, record = train(config)
    out = Path(args.out) if args.out else DEFAULT_ZOO / f"{config.category}.pt"
    save_checkpoint(out, model, record)
    write_model_card(out, record)
    print(f"wrote {out} and its model card {out.with_suffix('.md')}")
    return 0
