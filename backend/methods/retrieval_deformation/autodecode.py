"""New sources join a trained model without retraining its networks.

The deformation module's global/part codes and the retrieval module's source embeddings,
weights and sigma_k are per-source rows of an auto-decoder (paper Sec. 2.2): for sources
the networks never saw, only those rows are optimised, with the target encoders and the
shared MLP frozen (evaluation mode, no gradient), on the checkpoint's own training targets.
Per step, K candidates per target are drawn uniformly from the new library (every source
gets fitted against every kind of target), the codes of D descend L_def (Eq. 4, unweighted)
plus the symmetry regulariser, then the rows of R descend L_emb (Eq. 2) on the same fits.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.methods.retrieval_deformation.checkpoint import JointModel, build_model
from backend.methods.retrieval_deformation.data import Targets
from backend.methods.retrieval_deformation.joint import (
    SIGMA0,
    deform_candidates,
    deformation_loss,
    embedding_loss,
    recorded_fit_form,
)
from backend.methods.retrieval_deformation.library import SourceLibrary


@dataclass
class FitConfig:
    """Auto-decoding of new source codes (our choices: the paper gives none for this)."""

    steps: int = 300
    """Optimisation steps (one batch of targets each)."""
    batch_size: int = 16
    k: int = 10
    """Candidates per target, drawn uniformly from the new library (at most its size)."""
    lr: float = 1e-2
    """Adam learning rate of the code rows."""
    symmetry_weight: float = 1.0
    sigma0: float = SIGMA0
    fit_normalization: str = "per_source"
    sigma_power: int = 2
    """Eq. 2's form (`joint.fit_probabilities`): the checkpoint's own, which
    `fit_library_checkpoint` reads from its training config (a checkpoint from before
    session 15 records none: it was trained with candidates, 1)."""
    seed: int = 0


def _init_rows(trained: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, ...) initial codes: the trained rows' mean plus 0.1 x their per-dimension spread."""
    mean, std = trained.mean(0), trained.std(0) if len(trained) > 1 else torch.ones_like(trained[0])
    noise = torch.randn((rows, *trained.shape[1:]), generator=generator)
    return mean + 0.1 * std * noise.to(trained.device)


def model_for_library(model: JointModel, library: SourceLibrary, seed: int = 0) -> JointModel:
    """A model for ``library`` sharing copies of ``model``'s trained networks; its per-source
    rows initialised from the statistics of the trained rows (see `_init_rows`)."""
    new = build_model(model.config, library, seed)
    device = next(model.deformation.parameters()).device
    new.to(device)
    d_old, d_new = model.deformation, new.deformation
    d_new.encoder.load_state_dict(d_old.encoder.state_dict())
    d_new.mlp.load_state_dict(d_old.mlp.state_dict())
    new.retrieval.encoder.load_state_dict(model.retrieval.encoder.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("global_codes", "part_codes"):
            old = getattr(d_old, name)
            getattr(d_new, name).copy_(_init_rows(old, len(getattr(d_new, name)), g))
        for name in ("source_embeddings", "source_weights", "source_sigmas"):
            old = getattr(model.retrieval, name)
            getattr(new.retrieval, name).copy_(_init_rows(old, len(getattr(new.retrieval, name)), g))
    new.refresh_source_embeddings()  # encoder mode: E_R(new samples), nothing to fit
    return new


def code_parameters(model: JointModel) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The auto-decoded rows: (D's global and part codes, R's embeddings (unless E_R gives
    them), weights, sigmas)."""
    d, r = model.deformation, model.retrieval
    rows = [r.source_weights, r.source_sigmas]
    if not r.encodes_sources:  # else E_R gives the embeddings (`model_for_library`)
        rows.insert(0, r.source_embeddings)
    return [d.global_codes, d.part_codes], rows


def _freeze_networks(model: JointModel) -> None:
    model.eval()
    codes = {id(p) for group in code_parameters(model) for p in group}
    for module in (model.deformation, model.retrieval):
        for p in module.parameters():
            p.requires_grad_(id(p) in codes)


def _encoder_inputs(model: JointModel, targets: Targets, index: np.ndarray,
                    rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    if model.config.target == "points":
        return torch.from_numpy(targets.points[index]).to(device)
    if targets.images is None:
        raise ValueError("image-target models need rendered targets to fit new sources")
    views = rng.integers(0, targets.images.shape[1], len(index))
    return torch.from_numpy(targets.images[index, views]).to(device).permute(0, 3, 1, 2).float() / 255.0


def code_losses(model: JointModel, inputs: torch.Tensor, target_points: torch.Tensor,
                candidates: torch.Tensor, config: FitConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_def + symmetry, L_emb) of candidates (B, K) int64 for B targets.

    inputs: encoder input, (B, N, 3) points or (B, 3, H, W) images in [0, 1];
    target_points: (B, N, 3) float32 canonical frame. L_emb uses the detached fits.
    """
    sources = model.library.batch(candidates.reshape(-1), target_points.device)
    with torch.no_grad():
        t_d = model.deformation.encoder(inputs)
        e_t = model.retrieval.encoder(inputs)
    out = deform_candidates(model.deformation, t_d, candidates, sources, target_points)
    d2 = model.retrieval.distances(e_t, candidates)
    loss_def = deformation_loss(d2.detach(), out.fit, config.sigma0, weighted=False)
    loss_d = loss_def + config.symmetry_weight * out.symmetry.mean()
    loss_emb = embedding_loss(d2, out.fit.detach(), model.retrieval.sigma(candidates), config.sigma0,
                              config.fit_normalization, config.sigma_power)
    return loss_d, loss_emb


def fit_source_codes(model: JointModel, library: SourceLibrary, targets: Targets,
                     config: FitConfig | None = None, progress: bool = False
                     ) -> tuple[JointModel, dict]:
    """A model for ``library`` with ``model``'s frozen networks and auto-decoded codes.

    targets: training targets of ``model``'s category (points (T, N, 3) float32 canonical
    frame; images (T, V, H, W, 3) uint8 for image models). ``model`` is not modified.
    Returns the new model (evaluation mode) and a summary (steps, seconds, first and last
    losses).
    """
    config = config or FitConfig()
    if len(targets.points) < 2:
        raise ValueError("fitting new source codes needs at least 2 targets")
    new = model_for_library(model, library, config.seed)
    _freeze_networks(new)
    d_params, r_params = code_parameters(new)
    opt_d = torch.optim.Adam(d_params, lr=config.lr)
    opt_r = torch.optim.Adam(r_params, lr=config.lr)
    device = next(new.deformation.parameters()).device
    rng = np.random.default_rng(config.seed)
    k = min(config.k, len(library))
    batch = min(config.batch_size, len(targets.points))
    start, history = time.perf_counter(), []
    for step in range(config.steps):
        index = rng.choice(len(targets.points), batch, replace=False)
        cand = torch.from_numpy(np.stack([rng.choice(len(library), k, replace=False)
                                          for _ in range(batch)])).to(device)
        inputs = _encoder_inputs(new, targets, index, rng, device)
        pts = torch.from_numpy(targets.points[index]).to(device)
        loss_d, loss_emb = code_losses(new, inputs, pts, cand, config)
        opt_d.zero_grad()
        opt_r.zero_grad()
        (loss_d + loss_emb).backward()  # disjoint parameters: each optimiser sees its own loss
        opt_d.step()
        opt_r.step()
        history.append((loss_d.item(), loss_emb.item()))
        if progress and (step + 1) % max(1, config.steps // 10) == 0:
            print(f"fit codes step {step + 1}/{config.steps} loss_def={history[-1][0]:.4g} "
                  f"loss_emb={history[-1][1]:.4g}", flush=True)
    for p in new.deformation.parameters():
        p.requires_grad_(True)
    for p in new.retrieval.parameters():
        p.requires_grad_(True)
    new.retrieval.source_embeddings.requires_grad_(not new.retrieval.encodes_sources)
    summary = {"steps": config.steps, "seconds": round(time.perf_counter() - start, 2),
               "first": history[0] if history else None, "last": history[-1] if history else None,
               "config": dataclasses.asdict(config)}
    return new.eval(), summary


def fitted_checkpoint_dir(library_dir: str | Path, target: str) -> Path:
    """Where `fit_library_checkpoint` stores a library's fitted model for a target kind."""
    return Path(library_dir) / f"checkpoint_{target}"


def fit_library_checkpoint(checkpoint: str | Path, library_dir: str | Path,
                           config: FitConfig | None = None, targets: int = 200,
                           device: str = "cpu", progress: bool = True) -> Path:
    """Fit the codes of the stored library ``library_dir`` for a trained checkpoint and
    save the result as a checkpoint in `fitted_checkpoint_dir` (used by the method when
    that library is chosen). targets: how many of the checkpoint's training targets."""
    from backend.methods.retrieval_deformation.checkpoint import load_checkpoint, save_checkpoint
    from backend.methods.retrieval_deformation.data import builtin_targets

    model, doc = load_checkpoint(checkpoint, device)
    train = doc.get("train") or {}
    if "category" not in train:
        raise ValueError(f"checkpoint {checkpoint} does not say which category it was trained "
                         "on (config.json has no train.category)")
    data = builtin_targets(
        train["category"], "train", targets, seed=int(train.get("seed", 0)),
        skip=int(train.get("sources", 0)), n_points=int(train.get("n_points", 2048)),
        images=model.config.target == "image", resolution=int(train.get("resolution", 128)),
        views=int(train.get("views", 8)),
    )
    library = SourceLibrary.load(library_dir)
    normalization, power = recorded_fit_form(train)
    config = dataclasses.replace(config or FitConfig(), fit_normalization=normalization,
                                 sigma_power=power)
    fitted, summary = fit_source_codes(model, library, data, config, progress)
    out = fitted_checkpoint_dir(library_dir, model.config.target)
    save_checkpoint(fitted, out, {"train": train, "fitted_from": str(checkpoint),
                                  "fit": summary})
    return out
