"""``shapebridge train retrieval_deformation``: joint training of retrieval and deformation.

Alternating updates per batch (paper Sec. 2.1): K candidates per target are drawn from
P_R (uniformly during the first ``warmup_epochs``, as the authors' code), the deformation
module is updated on L_def (Eq. 4) + symmetry with R fixed, then the retrieval module on
L_emb (Eq. 2) with D fixed, using the fits of the same candidates. TensorBoard scalars go
to ``--logdir`` (default ``OUT/tb``); the checkpoint (see `checkpoint`) to ``--out``.

Variants (``--sampling``): ``biased`` (Ours), ``uniform`` (Uniform Sampling ablation: the
same joint training, candidates drawn uniformly), ``random_pairs`` (DF: the deformation
module alone on random pairs, unweighted L_def; the pre-trained module of R+DF / DAR+DF).

``--init-deformation DF`` starts the deformation module (target encoder, MLP, global and
part codes) from a DF checkpoint over the same library, as the authors' joint trainings do
(``--init_deformation --model_init df_<category>_<target>``); ``--ido-in-training`` follows
their ``joint_with_icp.py --use_icp_pp --fitting_loss l2`` (``--ido-mode params``).

``--resume`` makes a long run (e.g. ``--ido-in-training`` on a CPU, ~3 h) survive being
killed: the state is saved every ``--state-every`` seconds and the same command goes on
from it, bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.methods.retrieval_deformation.checkpoint import (
    JointModel,
    build_model,
    save_checkpoint,
)
from backend.methods.retrieval_deformation.data import Targets, builtin_targets
from backend.methods.retrieval_deformation.joint import (
    FIT_NORMALIZATIONS,
    SIGMA0,
    IDOPool,
    deform_candidates,
    deformation_loss,
    embedding_loss,
    inner_deformation_optimization,
    soft_retrieval,
)
from backend.methods.retrieval_deformation.library import builtin_library
from backend.methods.retrieval_deformation.model import (
    RETRIEVAL_ONLY,
    SOURCE_EMBEDDINGS,
    ModelConfig,
)

SAMPLINGS = ("biased", "uniform", "random_pairs")
#: How IDO enters training (`TrainConfig.ido_mode`).
IDO_MODES = ("params", "fits")


@dataclass
class TrainConfig:
    """Training schedule and data (defaults: the paper and the authors' config)."""

    category: str = "chair"
    """Built-in category of sources and targets."""
    sources: int = 500
    """Library size (the authors' default ``num_sources``)."""
    targets: int = 2000
    """Training targets (train split, disjoint from the sources)."""
    epochs: int = 300
    batch_size: int = 16
    k: int = 10
    """K candidates sampled per target (soft retrieval)."""
    sigma0: float = SIGMA0
    fit_normalization: str = "per_source"
    """Eq. 2's fit distribution: per_source (Eq. 1 as printed, each source's own
    temperature in the denominator; the default since session 16) | candidates (a softmax
    over the K, the default before); `joint.fit_probabilities`."""
    sigma_power: int = 2
    """Eq. 2 divides the fits by sigma_k ** sigma_power (printed: sigma^2; 1 before
    session 16). Chair points, two seeds: 0.374 against 0.436 and 0.405 against 0.415 on
    the test split (`benchmarks/results/rd_gpu16/README.md`)."""
    lr: float = 1e-3
    """SGD learning rate of the networks and of the auto-decoded codes (authors' config)."""
    deformation_lr: float | None = None
    """SGD learning rate of the deformation module and its codes when it differs from ``lr``
    (None: ``lr``). ``--ido-mode params`` at the CPU config's lr 1e-2 diverges (the
    regression onto the IDO optimum grows tenfold a step); the authors train it at 1e-3."""
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 30
    """Epochs with uniformly random candidates before sampling from P_R."""
    sampling: str = "biased"
    """biased (Ours) | uniform (Uniform Sampling) | random_pairs (DF)."""
    symmetry_weight: float = 1.0
    """Weight of the bilateral symmetry regulariser on symmetric sources."""
    ido_in_training: bool = False
    """The paper's "Ours w/ IDO" training: IDO on every step's candidates (see ido_mode)."""
    ido_mode: str = "params"
    """params (the authors' ``joint_with_icp.py --fitting_loss l2``): the deformation module
    is regressed onto the IDO-optimised part parameters (squared L2, weighted by P_R over the
    K as Eq. 4), the retrieval module learns from the network's own fits. fits (sessions
    21-25): the deformation module keeps Eq. 4 and L_emb takes the IDO fits as d_fit."""
    init_deformation: str | None = None
    """DF checkpoint (``--sampling random_pairs``, same category, sources, seed and points)
    whose deformation module starts this training: the authors' joint trainings start from
    their DF (``--init_deformation``). None: from scratch."""
    ido_lr: float = 0.5
    ido_max_iters: int = 2000
    ido_tol: float = 1e-5
    n_points: int = 2048
    """Surface points per source and per target."""
    resolution: int = 128
    """Image targets: render resolution."""
    views: int = 8
    """Image targets: views per target (one drawn per step)."""
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many steps (None: run all epochs)."""


def tiny_configs(target: str) -> tuple[ModelConfig, TrainConfig]:
    """A seconds-long configuration for tests and smoke runs (paper-size point networks)."""
    model = ModelConfig(target=target, image_width=8, image_blocks=(1, 1, 1, 1))
    train = TrainConfig(sources=6, targets=4, epochs=1, batch_size=2, k=3, warmup_epochs=0,
                        n_points=256, resolution=32, views=1, ido_max_iters=5)
    return model, train


def cpu_configs(target: str) -> tuple[ModelConfig, TrainConfig]:
    """The CPU default: paper-size networks, reduced data and schedule, <= 60 min on one
    core for point targets (measured 1.35 s/step at 512 points, batch 16, K 10, one
    thread: 35 epochs x 62 steps ~ 49 min plus ~1 min of data).

    Image targets use the ResNet-18 layout at half width (32): the two full-width encoders
    (retrieval and deformation) hold 23M weights, 47 MB even in fp16, over the zoo's 25 MB
    per checkpoint; at width 32 the checkpoint is ~13 MB in fp16.

    Both target types train at SGD lr 1e-2 instead of the authors' 1e-3: the schedule is 2170
    steps against the paper's ~37k, and at 1e-3 the losses move too little in that budget.
    Images (chair): L_def 0.018 in the first epoch, 0.017 in the last; at 1e-2 it reaches
    0.009 and test chamfer 0.720 against 1.396 (x1e2, 200 targets; tables 0.635 against
    2.308). Points (chair): L_def 0.011 in the last epoch at 1e-3, 0.009 at 1e-2; test chamfer
    0.427 against 0.598, oracle (Table 2) 0.330 against 0.414. The baselines trained with
    this config get the same rate.
    """
    image = target == "image"
    model = ModelConfig(target=target, image_width=32 if image else 64)
    return model, TrainConfig(
        sources=200, targets=1000, epochs=35, warmup_epochs=4, n_points=512, resolution=64,
        views=4, lr=1e-2)


def _inputs(model: JointModel, targets: Targets, index: np.ndarray, rng: np.random.Generator,
            device: str) -> torch.Tensor:
    """Encoder inputs of the targets ``index``: points (B, N, 3) or images (B, 3, H, W)."""
    if model.config.target == "points":
        return torch.from_numpy(targets.points[index]).to(device)
    views = rng.integers(0, targets.images.shape[1], len(index))
    im = targets.images[index, views]  # (B, H, W, 3) uint8
    return torch.from_numpy(im).to(device).permute(0, 3, 1, 2).float() / 255.0


def train_step(model: JointModel, optimizers: dict, inputs: torch.Tensor, target_points: torch.Tensor,
               config: TrainConfig, uniform: bool, generator: torch.Generator,
               ido: IDOPool | None = None) -> dict[str, float]:
    """One alternating update (deformation, then retrieval) on a batch of B targets.

    inputs: encoder input (see `_inputs`); target_points: (B, N, 3) canonical frame.
    ido: worker processes for ``config.ido_in_training`` (default: IDO in this process).
    Returns the scalars logged for the step.
    """
    lib, dev = model.library, target_points.device
    with torch.no_grad():
        d2_all = model.retrieval.distances(model.retrieval.encoder(inputs))
    cand = soft_retrieval(d2_all, config.k, config.sigma0, generator, uniform=uniform)
    sources = lib.batch(cand.reshape(-1), dev)
    # Deformation update, retrieval fixed (Eq. 4 + symmetry).
    out = deform_candidates(model.deformation, model.deformation.encoder(inputs), cand, sources,
                            target_points)
    d2_c = torch.gather(d2_all, 1, cand)
    weighted = config.sampling != "random_pairs"
    loss_def = deformation_loss(d2_c, out.fit, config.sigma0, weighted=weighted)
    refined = None
    if config.ido_in_training:
        b, k = cand.shape
        tgt = target_points[:, None].expand(-1, k, -1, -1).reshape(b * k, -1, 3)
        refined = (ido or inner_deformation_optimization)(
            out.params.detach().reshape(b * k, -1, 6), sources, tgt,
            config.ido_lr, config.ido_max_iters, config.ido_tol)
    if refined is not None and config.ido_mode == "params":
        # The authors' "l2" fitting loss: per candidate the squared distance of the network's
        # (feasible) parameters to the IDO optimum, weighted over the K as Eq. 4.
        l2 = (out.params - refined.params.reshape(out.params.shape)).square().sum((-1, -2))
        loss_ido = deformation_loss(d2_c, l2, config.sigma0, weighted=weighted)
        loss = loss_ido + config.symmetry_weight * out.symmetry.mean()
    else:
        loss = loss_def + config.symmetry_weight * out.symmetry.mean()
    optimizers["deformation"].zero_grad()
    loss.backward()
    optimizers["deformation"].step()
    logs = {"loss_def": loss_def.item(), "symmetry": out.symmetry.mean().item(),
            "fit_mean": out.fit.mean().item()}
    if refined is not None:
        logs["ido_iters"] = float(refined.iterations.max())
        logs["ido_fit_mean"] = refined.fit.mean().item()
        if config.ido_mode == "params":
            logs["loss_ido_l2"] = loss_ido.item()
    if config.sampling == "random_pairs":
        return logs
    # Retrieval update, deformation fixed (Eq. 2).
    fit = out.fit.detach()
    if refined is not None and config.ido_mode == "fits":
        fit = refined.fit.reshape(cand.shape)
    d2 = model.retrieval.candidate_distances(model.retrieval.encoder(inputs), cand, sources.points)
    sigma = model.retrieval.sigma(cand)
    loss_emb = embedding_loss(d2, fit, sigma, config.sigma0, config.fit_normalization,
                              config.sigma_power)
    optimizers["retrieval"].zero_grad()
    loss_emb.backward()
    optimizers["retrieval"].step()
    logs.update(loss_emb=loss_emb.item(), sigma_mean=sigma.mean().item(), fit_used=fit.mean().item())
    return logs


def make_optimizers(model: JointModel, config: TrainConfig) -> dict:
    """SGD with momentum and weight decay for D (with its codes) and for R."""
    def sgd(params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    deformation_lr = config.lr if config.deformation_lr is None else config.deformation_lr
    return {"deformation": sgd(model.deformation.parameters(), deformation_lr),
            "retrieval": sgd(model.retrieval.parameters(), config.lr)}


def train(model_config: ModelConfig, config: TrainConfig, out: str | Path, logdir: str | Path | None = None,
          device: str = "cpu", data_dir: str | None = None, progress: bool = True,
          resume: bool = False, state_every_s: float = 600.0, ido_workers: int = 1) -> dict:
    """Build the library and targets, train, write the checkpoint to ``out``.

    resume: keep ``out/train_state.pt`` (weights, optimiser moments, every random stream and
    the position in the epoch) up to date, every ``state_every_s`` seconds and when
    ``max_steps`` stops the run, and start from it if it exists, so a killed training goes on
    where it was and ends with the weights an uninterrupted one would have. The file is
    removed once all epochs have run.
    ido_workers: with ``config.ido_in_training`` on the CPU, run IDO in that many worker
    processes (`IDOPool`, one core each; 1.7x on 2 cores). One IDO call gives the fits and
    iteration counts of one process and parameters equal to float32 rounding (~3e-8); over
    a run that rounding can move later steps slightly (table points, 34 steps: the same
    iteration counts but the last, 1162 against 1163), so a resumed run is bit-identical
    only with the same ``ido_workers``.
    Returns a summary: steps, seconds (all runs of a resumed training), last logged scalars.
    """
    from torch.utils.tensorboard import SummaryWriter

    if config.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {config.sampling!r}")
    if config.batch_size < 2:
        raise ValueError("batch_size must be at least 2 (the encoders use batch normalisation)")
    if ido_workers < 1:
        raise ValueError(f"ido_workers must be at least 1, got {ido_workers}")
    if config.ido_mode not in IDO_MODES:
        raise ValueError(f"ido_mode must be one of {IDO_MODES}, got {config.ido_mode!r}")
    start = time.perf_counter()
    library = builtin_library(config.category, config.sources, config.seed, config.n_points)
    targets = builtin_targets(
        config.category, "train", config.targets, seed=config.seed, skip=config.sources,
        n_points=config.n_points, images=model_config.target == "image",
        resolution=config.resolution, views=config.views, data_dir=data_dir,
    )
    model = build_model(model_config, library, config.seed).to(device)
    init_steps = None
    if config.init_deformation:
        init_doc = init_from_deformation(model, config.init_deformation)
        init_steps = (init_doc.get("summary") or {}).get("steps")
    model.deformation.train()
    model.retrieval.train()
    optimizers = make_optimizers(model, config)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    state_path = Path(out) / STATE_FILE
    position = {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0, "order": None}
    if resume and state_path.is_file():
        position = _load_state(state_path, model, optimizers, rng, generator, config, model_config)
        if progress:
            print(f"resumed {state_path} at epoch {position['epoch'] + 1} step {position['step']}",
                  flush=True)
    writer = SummaryWriter(str(logdir or Path(out) / "tb"), purge_step=position["step"] or None)
    step, logs, n = position["step"], {}, len(targets.points)
    before = position["seconds"]  # training seconds of earlier runs of a resumed training
    last_save = time.perf_counter()

    def elapsed() -> float:
        return before + time.perf_counter() - start

    def save_state(epoch: int, batch: int, order: np.ndarray) -> None:
        _save_state(state_path, model, optimizers, rng, generator, config, model_config,
                    {"epoch": epoch, "batch": batch, "step": step, "seconds": elapsed(),
                     "order": order.tolist()})

    stopped = False
    parallel = config.ido_in_training and ido_workers > 1 and torch.device(device).type == "cpu"
    ido = IDOPool(ido_workers) if parallel else None
    try:
        for epoch in range(position["epoch"], config.epochs):
            resumed_order = position["order"] if epoch == position["epoch"] else None
            order = np.asarray(resumed_order) if resumed_order is not None else rng.permutation(n)
            first = position["batch"] if epoch == position["epoch"] else 0
            if first == 0:  # encoder mode: the full scan's source embeddings, once an epoch
                model.refresh_source_embeddings()  # (resumed mid-epoch: the state has them)
            batches = range(0, n - config.batch_size + 1, config.batch_size)
            for i in range(first, len(batches)):
                index = order[batches[i]:batches[i] + config.batch_size]
                inputs = _inputs(model, targets, index, rng, device)
                pts = torch.from_numpy(targets.points[index]).to(device)
                uniform = config.sampling != "biased" or epoch < config.warmup_epochs
                logs = train_step(model, optimizers, inputs, pts, config, uniform, generator, ido)
                bad = sorted(k for k, v in logs.items() if not np.isfinite(v))
                if bad:
                    raise FloatingPointError(
                        f"training diverged at step {step + 1} (epoch {epoch + 1}): "
                        f"{', '.join(bad)} not finite; try a lower --lr or --deformation-lr (the "
                        f"CPU config trains at {config.lr:g}, the authors at 1e-3)")
                for key, value in logs.items():
                    writer.add_scalar(f"train/{key}", value, step)
                step += 1
                stopped = config.max_steps is not None and step >= config.max_steps
                if resume and (stopped or time.perf_counter() - last_save >= state_every_s):
                    save_state(epoch, i + 1, order)  # the next batch of this epoch
                    last_save = time.perf_counter()
                if stopped:
                    break
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs} step {step} ({elapsed():.0f} s) " +
                      " ".join(f"{k}={v:.4g}" for k, v in logs.items()), flush=True)
            if stopped:
                break
    finally:
        if ido is not None:
            ido.close()
    writer.close()
    model.refresh_source_embeddings()  # the stored embeddings of the final encoder
    seconds = elapsed()
    summary = {"steps": step, "seconds": round(seconds, 2), "device": str(device), "last": logs}
    if ido is not None:
        summary["ido_workers"] = ido_workers
    if position["step"]:
        summary["resumed_at_step"] = position["step"]
    if config.init_deformation:
        summary["init_deformation_steps"] = init_steps  # the DF training this one went on from
    save_checkpoint(model, out, {"train": dataclasses.asdict(config), "summary": summary})
    if not stopped:
        state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return summary


def init_from_deformation(model: JointModel, checkpoint: str | Path) -> dict:
    """Copy the deformation module of ``checkpoint`` (encoder, MLP, global and part codes)
    into ``model``; the two must share the library (same sources, in order, same samples)
    and the deformation network's config. Returns the checkpoint's config.json."""
    from backend.methods.retrieval_deformation.checkpoint import load_checkpoint

    df, doc = load_checkpoint(checkpoint, "cpu")
    ours, theirs = model.library, df.library
    if list(ours.names) != list(theirs.names) or not np.array_equal(ours.points, theirs.points):
        raise ValueError(f"--init-deformation {checkpoint}: its library is not this training's "
                         f"({len(theirs)} sources against {len(ours)}, or other shapes); train "
                         "the DF checkpoint with the same category, --sources, --seed and "
                         "--n-points")
    mine, other = model.config.to_json(), df.config.to_json()
    differ = sorted(k for k in set(mine) | set(other)
                    if k not in RETRIEVAL_ONLY and mine.get(k) != other.get(k))
    if differ:
        raise ValueError(f"--init-deformation {checkpoint}: its network config differs in "
                         f"{', '.join(differ)}")
    device = next(model.deformation.parameters()).device
    model.deformation.load_state_dict(df.deformation.to(device).state_dict())
    return doc


STATE_FILE = "train_state.pt"
"""Resumable state of an unfinished ``--resume`` training, in its checkpoint directory."""


def _save_state(path: Path, model: JointModel, optimizers: dict, rng: np.random.Generator,
                generator: torch.Generator, config: TrainConfig, model_config: ModelConfig,
                position: dict) -> None:
    """Write everything the next step depends on (`write_state`)."""
    write_state(path, {
        "deformation": model.deformation.state_dict(), "retrieval": model.retrieval.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
    }, {"position": position, "train": _resume_key(config), "model": model_config.to_json()},
        rng, generator)


def write_state(path: Path, tensors: dict, meta: dict, rng: np.random.Generator,
                generator: torch.Generator) -> None:
    """A resumable state: ``tensors`` (state dicts), ``meta`` (JSON) and the random streams
    (numpy, the torch generator, torch's global one), written atomically: a kill mid-write
    keeps the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**tensors, "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "meta": json.dumps({**meta, "numpy_rng": rng.bit_generator.state})}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_state(path: Path, rng: np.random.Generator,
               generator: torch.Generator) -> tuple[dict, dict]:
    """`write_state`'s file: (tensors, meta), with the random streams restored."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(state.pop("meta"))
    generator.set_state(state.pop("generator"))
    torch.set_rng_state(state.pop("torch_rng"))
    rng.bit_generator.state = meta.pop("numpy_rng")
    return state, meta


def refuse_other_state(path: Path, saved: dict, want: dict, what: str) -> None:
    """Raise if a state's recorded config ``saved`` is not ``want``, naming the keys that
    differ."""
    if saved != want:
        diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
        raise ValueError(f"cannot resume {path}: it was written by {what} (differs in "
                         f"{', '.join(diff)}); use another --out or delete the file")


def _resume_key(config: TrainConfig) -> dict:
    """The config a state must match to be resumed: all of it but the step limit (a run
    stopped by --max-steps can be extended)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "max_steps"}


def _load_state(path: Path, model: JointModel, optimizers: dict, rng: np.random.Generator,
                generator: torch.Generator, config: TrainConfig, model_config: ModelConfig) -> dict:
    state, meta = read_state(path, rng, generator)
    want = json.loads(json.dumps({"train": _resume_key(config), "model": model_config.to_json()}))
    for key in ("train", "model"):
        refuse_other_state(path, meta[key], want[key], f"a training with another {key} config")
    model.deformation.load_state_dict(state["deformation"])
    model.retrieval.load_state_dict(state["retrieval"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    return meta["position"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI of ``shapebridge train retrieval_deformation``."""
    d = TrainConfig()
    parser.add_argument("--target", choices=("points", "image"), default="points")
    parser.add_argument("--category", default=d.category, choices=("chair", "table", "cabinet", "airplane"))
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--logdir", default=None, help="TensorBoard directory (default OUT/tb)")
    parser.add_argument("--data", default=None, help="dataset directory (shapebridge data generate) "
                        "to read targets from instead of generating them")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    parser.add_argument("--cpu-config", action="store_true",
                        help="the CPU default (<= 60 min on one core, see cpu_configs)")
    parser.add_argument("--resume", action="store_true",
                        help="keep OUT/train_state.pt up to date (every --state-every seconds) and "
                        "go on from it if it exists: a killed run resumes where it was "
                        "(also --baseline dar)")
    parser.add_argument("--state-every", type=float, default=600.0, metavar="SECONDS",
                        help="--resume: seconds between state saves (default 600)")
    parser.add_argument("--sampling", choices=SAMPLINGS, default=None)
    parser.add_argument("--ido-in-training", action="store_true", default=None)
    parser.add_argument("--ido-mode", choices=IDO_MODES, default=None,
                        help="with --ido-in-training: params (default; the authors' code: the "
                        "deformation module regressed onto the IDO optimum) or fits (IDO fits "
                        "in L_emb, sessions 21-25)")
    parser.add_argument("--init-deformation", default=None, metavar="DF_CHECKPOINT",
                        help="start the deformation module from this DF checkpoint (trained "
                        "with --sampling random_pairs, same category, sources, seed and "
                        "points), as the authors' joint trainings do")
    parser.add_argument("--source-embedding", choices=SOURCE_EMBEDDINGS, default=None,
                        help="sources in the retrieval space: autodecode (default; a learned "
                        "embedding each) or encoder (their samples through the retrieval "
                        "encoder, the authors' --use_src_encoder_retrieval; point targets; "
                        "also for --baseline dar)")
    parser.add_argument("--ido-workers", type=int, default=1, metavar="N",
                        help="--ido-in-training on the CPU: run IDO in N worker processes, one "
                        "core each (default 1: in the training process)")
    parser.add_argument("--baseline", choices=("r", "dar"), default=None,
                        help="train the R or DAR baseline over the DF checkpoint given by "
                        "--deformation (same library and targets; steps default to DF's)")
    parser.add_argument("--deformation", default=None,
                        help="DF checkpoint (trained with --sampling random_pairs) for --baseline")
    for name in ("sources", "targets", "epochs", "batch_size", "k", "warmup_epochs", "n_points",
                 "resolution", "views", "seed", "max_steps", "sigma_power"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    for name in ("lr", "deformation_lr", "symmetry_weight", "sigma0"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    parser.add_argument("--fit-normalization", choices=FIT_NORMALIZATIONS, default=None,
                        help="Eq. 2's fit distribution (default per_source: the printed Eq. 1; "
                        "candidates: a softmax over the K, the default before session 16; see "
                        "joint.fit_probabilities); --sigma-power: 2 by default, as printed")
    parser.add_argument("--sigma-start", type=_sigma_start, default=None, metavar="U|random",
                        help="logit every per-source sigma_k starts at (default 0: 0.5); "
                        "'random': N(0, 1) per source, the start before session 14")


def _sigma_start(text: str) -> float | str:
    if text == "random":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'random', got {text!r}") from None


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """Model and train configs: paper defaults (or the tiny preset) overridden by flags."""
    if args.tiny:
        model, train_config = tiny_configs(args.target)
    elif getattr(args, "cpu_config", False):
        model, train_config = cpu_configs(args.target)
    else:
        model, train_config = ModelConfig(target=args.target), TrainConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    start = getattr(args, "sigma_start", None)
    if start is not None:
        model = dataclasses.replace(model, sigma_start=None if start == "random" else start)
    if getattr(args, "source_embedding", None):
        model = dataclasses.replace(model, source_embedding=args.source_embedding)
    return model, dataclasses.replace(train_config, **overrides)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "baseline", None):
        return _run_baseline(args)
    model, config = configs_from_args(args)
    summary = train(model, config, args.out, args.logdir, args.device, args.data,
                    resume=getattr(args, "resume", False),
                    state_every_s=getattr(args, "state_every", 600.0),
                    ido_workers=getattr(args, "ido_workers", 1))
    print(f"wrote {args.out} ({summary['steps']} steps in {summary['seconds']} s)")
    return 0


def _run_baseline(args: argparse.Namespace) -> int:
    from backend.methods.retrieval_deformation import baselines
    from backend.methods.retrieval_deformation.checkpoint import load_checkpoint

    if not args.deformation:
        raise ValueError("--baseline needs --deformation DF_CHECKPOINT (a checkpoint trained "
                         "with --sampling random_pairs)")
    _, doc = load_checkpoint(args.deformation, "cpu")
    steps = args.max_steps or int((doc.get("summary") or {}).get("steps", 0))
    if steps <= 0:
        raise ValueError("give --max-steps: the DF checkpoint records no step count")
    seed = args.seed or 0
    if args.baseline == "r":
        summary = baselines.train_r(args.deformation, args.out, steps, args.device, seed)
    else:
        summary = baselines.train_dar(args.deformation, args.out, steps, args.targets,
                                      args.device, seed,
                                      source_embedding=getattr(args, "source_embedding", None),
                                      resume=getattr(args, "resume", False),
                                      state_every_s=getattr(args, "state_every", 600.0))
    print(f"wrote {args.out} ({summary['baseline']}, {steps} steps in {summary['seconds']} s)")
    return 0
