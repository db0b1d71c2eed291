"""Baselines of paper 000, Table 1: R (retrieval by MDS of the chamfer matrix) and DAR
(deformation-aware retrieval with the deformation module pre-trained on random pairs).

R [Li et al. 2015]: the source-source chamfer matrix is embedded in 256-d by classical MDS
and an encoder (PointNet / image CNN, as ours) is regressed onto the source embeddings with
an L2 loss from the sources' own points or renders; retrieval = nearest source. R+DF
deforms the retrieved source with DF (the ``--sampling random_pairs`` checkpoint).
DAR [Uy et al. 2020]: the retrieval module is trained with DF frozen, on uniformly drawn
candidates, to match the fits of DF (our Eq. 2 loss stands in for the triplet loss of
[Uy 2020]; see the README); DAR+DF deforms with DF.
Both write ordinary checkpoints (`checkpoint`), carrying DF's deformation module, so the
evaluation treats them as any other (``:nodeform`` evaluates retrieval only).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from backend.core.metrics import chamfer_distance
from backend.methods.retrieval_deformation.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from backend.methods.retrieval_deformation.data import Targets, builtin_targets
from backend.methods.retrieval_deformation.joint import (
    deform_candidates,
    embedding_loss,
    recorded_fit_form,
    soft_retrieval,
)
from backend.methods.retrieval_deformation.model import make_encoder
from backend.methods.retrieval_deformation.train import (
    STATE_FILE,
    _inputs,
    read_state,
    refuse_other_state,
    write_state,
)

#: sigmoid(WEIGHT_LOGIT) ~ 1: R's retrieval distance becomes the plain Euclidean one.
WEIGHT_LOGIT = 30.0


def chamfer_matrix(points: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(S, S) symmetric squared chamfer (sum of both directional means) between shapes.

    points: (S, N, 3) float32 canonical-frame samples. Rows are computed in chunks.
    """
    s = points.shape[0]
    out = torch.empty(s, s, dtype=points.dtype, device=points.device)
    for i in range(s):
        for j0 in range(0, s, chunk):
            j1 = min(s, j0 + chunk)
            a = points[i:i + 1].expand(j1 - j0, -1, -1)
            out[i, j0:j1] = chamfer_distance(a, points[j0:j1]).chamfer
    return 0.5 * (out + out.T)


def classical_mds(squared: torch.Tensor, dim: int) -> torch.Tensor:
    """Classical MDS: (S, dim) coordinates whose squared Euclidean distances best match
    ``squared`` (S, S) (symmetric, zero diagonal). Dimensions beyond the positive
    eigenvalues (or S) are zero."""
    s = squared.shape[0]
    j = torch.eye(s, dtype=torch.float64) - 1.0 / s
    b = -0.5 * j @ squared.double().cpu() @ j
    vals, vecs = torch.linalg.eigh(b)
    vals, vecs = vals.flip(0)[:dim].clamp(min=0.0), vecs.flip(1)[:, :dim]
    coords = vecs * vals.sqrt()
    if coords.shape[1] < dim:
        coords = torch.cat([coords, torch.zeros(s, dim - coords.shape[1], dtype=coords.dtype)], 1)
    return coords.float()


def _sgd(params, train) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                           weight_decay=train["weight_decay"])


def train_r(df_checkpoint: str, out: str, steps: int, device: str = "cpu",
            seed: int = 0, progress: bool = True) -> dict:
    """The R baseline over DF's library (so R, R+DF and DF share sources and targets).

    Embeddings: MDS (256-d, the model's embedding size) of the library's chamfer matrix on
    its stored samples, scaled to unit RMS per dimension; the retrieval encoder (fresh,
    seeded) is regressed onto them (mean squared error)
    from the sources' points (point models) or renders (image models), ``steps`` SGD steps
    with DF's batch size and optimiser settings.
    """
    model, doc = load_checkpoint(df_checkpoint, device)
    train = dict(doc.get("train") or {})
    torch.manual_seed(seed)
    lib = model.library
    # R's sources sit at their MDS coordinates, stored as free embeddings
    model.config = dataclasses.replace(model.config, source_embedding="autodecode")
    start = time.perf_counter()
    pts = torch.from_numpy(lib.points).to(device)
    coords = classical_mds(chamfer_matrix(pts), model.config.embedding_dim).to(device)
    # One global scale so each dimension has RMS ~1 (retrieval by nearest neighbour does not
    # change): raw MDS coordinates are ~0.1 long while a fresh encoder outputs ~10, and the
    # L2 regression at the training learning rate diverges (NaN within 200 steps).
    coords = coords * (model.config.embedding_dim ** 0.5 / coords.norm(dim=1).mean().clamp_min(1e-12))
    r = model.retrieval
    r.encoder = make_encoder(model.config, model.config.embedding_dim).to(device)
    with torch.no_grad():
        r.source_embeddings.copy_(coords)
        r.source_weights.fill_(WEIGHT_LOGIT)
    sources = builtin_targets(
        train.get("category", "chair"), "train", len(lib), seed=int(train.get("seed", 0)),
        n_points=lib.points.shape[1], images=model.config.target == "image",
        resolution=int(train.get("resolution", 128)), views=int(train.get("views", 8)),
    ) if model.config.target == "image" else Targets(np.arange(len(lib)), lib.points, None)
    r.train()
    opt = _sgd(r.encoder.parameters(), train)
    rng = np.random.default_rng(seed)
    batch = min(int(train.get("batch_size", 16)), len(lib))
    loss = torch.zeros(())
    for step in range(steps):
        index = rng.choice(len(lib), batch, replace=False)
        pred = r.encoder(_inputs(model, sources, index, rng, device))
        loss = (pred - coords[torch.from_numpy(index).to(device)]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"R step {step + 1}/{steps} loss_l2={loss.item():.4g}", flush=True)
    summary = {"baseline": "R", "steps": steps, "seconds": round(time.perf_counter() - start, 2),
               "device": str(device), "last": {"loss_l2": loss.item()}}
    save_checkpoint(model.eval(), out, {"train": train, "baseline": summary,
                                        "deformation_from": str(df_checkpoint)})
    return summary


def train_dar(df_checkpoint: str, out: str, steps: int, targets: int | None = None,
              device: str = "cpu", seed: int = 0, progress: bool = True,
              source_embedding: str | None = None, resume: bool = False,
              state_every_s: float = 600.0, stop_at: int | None = None) -> dict | None:
    """The DAR baseline: DF's deformation module frozen, the retrieval module (fresh,
    seeded) trained with Eq. 2 on uniformly drawn candidates of DF's training targets.

    source_embedding: "encoder" embeds the sources with the retrieval encoder, as [Uy 2020]
    does (and as Ours trained with it); None keeps DF's config ("autodecode" by default).
    resume: keep ``out/train_state.pt`` (retrieval weights, optimiser moments, random
    streams, step) up to date every ``state_every_s`` seconds and go on from it if it
    exists, as `train.train` does (with encoder sources DAR takes ~2 h of one core).
    stop_at: stop after this many steps with the state saved and no checkpoint written
    (what a kill right after a save leaves; for tests). Returns the summary, or None when
    stopped so."""
    model, doc = load_checkpoint(df_checkpoint, device)
    train = dict(doc.get("train") or {})
    torch.manual_seed(seed)
    if source_embedding:
        model.config = dataclasses.replace(model.config, source_embedding=source_embedding)
    fresh = type(model.retrieval)(model.config, len(model.library)).to(device)
    model.retrieval = fresh
    data = builtin_targets(
        train.get("category", "chair"), "train", int(targets or train.get("targets", 2000)),
        seed=int(train.get("seed", 0)), skip=int(train.get("sources", len(model.library))),
        n_points=int(train.get("n_points", 2048)), images=model.config.target == "image",
        resolution=int(train.get("resolution", 128)), views=int(train.get("views", 8)),
    )
    model.deformation.eval()
    for p in model.deformation.parameters():
        p.requires_grad_(False)
    fresh.train()
    opt = _sgd(fresh.parameters(), train)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    k = min(int(train.get("k", 10)), len(model.library))
    batch = min(int(train.get("batch_size", 16)), len(data.points))
    sigma0 = float(train.get("sigma0", 100.0))
    form = recorded_fit_form(train)  # Eq. 2 as DF's training recorded it
    start, loss = time.perf_counter(), torch.zeros(())
    state_path = Path(out) / STATE_FILE
    key = {"deformation": str(df_checkpoint), "steps": steps, "targets": len(data.points),
           "seed": seed, "source_embedding": model.config.source_embedding}
    first, before = 0, 0.0
    if resume and state_path.is_file():
        first, before = _load_dar_state(state_path, fresh, opt, rng, gen, key)
        if progress:
            print(f"resumed {state_path} at step {first}", flush=True)
    last_save = time.perf_counter()

    def save_state(done: int) -> None:
        _save_dar_state(state_path, fresh, opt, rng, gen, key, done,
                        before + time.perf_counter() - start)

    for step in range(first, steps):
        index = rng.choice(len(data.points), batch, replace=False)
        inputs = _inputs(model, data, index, rng, device)
        tgt = torch.from_numpy(data.points[index]).to(device)
        cand = soft_retrieval(torch.zeros(batch, len(model.library), device=device), k, sigma0,
                              gen, uniform=True)
        sources = model.library.batch(cand.reshape(-1), device)
        with torch.no_grad():
            fit = deform_candidates(model.deformation, model.deformation.encoder(inputs), cand,
                                    sources, tgt).fit
        d2 = fresh.candidate_distances(fresh.encoder(inputs), cand, sources.points)
        loss = embedding_loss(d2, fit, fresh.sigma(cand), sigma0, *form)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"DAR step {step + 1}/{steps} loss_emb={loss.item():.4g}", flush=True)
        if step + 1 == stop_at:
            save_state(step + 1)
            return None
        if resume and time.perf_counter() - last_save >= state_every_s:
            save_state(step + 1)
            last_save = time.perf_counter()
    for p in model.deformation.parameters():
        p.requires_grad_(True)
    model.refresh_source_embeddings()  # encoder mode: the full scan at evaluation
    summary = {"baseline": "DAR", "steps": steps,
               "seconds": round(before + time.perf_counter() - start, 2),
               "device": str(device), "last": {"loss_emb": loss.item()}}
    if first:
        summary["resumed_at_step"] = first
    save_checkpoint(model.eval(), out, {"train": train, "baseline": summary,
                                        "deformation_from": str(df_checkpoint)})
    state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return summary


def _save_dar_state(path: Path, retrieval: torch.nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator, gen: torch.Generator, key: dict, step: int,
                    seconds: float) -> None:
    """Everything DAR's next step depends on (DF stays frozen), as `train.write_state`."""
    write_state(path, {"retrieval": retrieval.state_dict(), "optimizer": opt.state_dict()},
                {"step": step, "seconds": seconds, "key": key}, rng, gen)


def _load_dar_state(path: Path, retrieval: torch.nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator, gen: torch.Generator, key: dict) -> tuple[int, float]:
    """Restore `_save_dar_state`'s file into the fresh module; refuse one written by a DAR
    training with another DF, step count, target count, seed or source embedding."""
    state, meta = read_state(path, rng, gen)
    refuse_other_state(path, meta.get("key") or {}, key, "another DAR training")
    retrieval.load_state_dict(state["retrieval"])
    opt.load_state_dict(state["optimizer"])
    return int(meta["step"]), float(meta["seconds"])
