"""Joint retrieval-deformation training and inference pieces (paper 000, Sec. 2.1).

- `retrieval_probabilities` / `soft_retrieval`: P_R (Eq. 1) and K candidates drawn from it;
- `embedding_loss` (Eq. 2) with the learned per-source sigma_k, `deformation_loss` (Eq. 4);
- `deform_candidates`: predict, project onto the joint null space, deform, fit (chamfer);
- `inner_deformation_optimization` (IDO): SGD on the projected part parameters of all
  candidates at once, each candidate stopping on its own when its fit stops improving;
  `IDOPool` runs it on shares of the candidates in worker processes (CPU training).

Fitting loss L_fit: squared chamfer, sum of both directional means (PyTorch3D's
convention, the authors' code).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, fields

import torch

from backend.core.metrics import chamfer_distance
from backend.methods.retrieval_deformation.deformation import (
    deform_points,
    project_parameters,
    symmetry_loss,
)
from backend.methods.retrieval_deformation.library import SourceBatch
from backend.methods.retrieval_deformation.model import DeformationModule

#: sigma_0 of Eq. 1: the authors' code divides the squared retrieval distance by 100.
SIGMA0 = 100.0
#: Scale applied to the chamfer fitting distances before the sigma_k division (the
#: authors' code multiplies them by 100 so they are O(1)).
FIT_SCALE = 100.0


def retrieval_probabilities(d2: torch.Tensor, sigma0: float = SIGMA0) -> torch.Tensor:
    """P_R over the given sources (Eq. 1): softmax(-d_R^2 / sigma_0) along the last axis.

    d2: (B, S) squared retrieval distances. Returns (B, S).
    """
    return torch.softmax(-d2 / sigma0, dim=-1)


#: Normalisations of the fit distribution in Eq. 2 (see `fit_probabilities`).
FIT_NORMALIZATIONS = ("candidates", "per_source")


def recorded_fit_form(train: dict) -> tuple[str, int]:
    """(normalization, sigma_power) of Eq. 2 that a checkpoint's training config records;
    a checkpoint from before session 15 records none and was trained with ("candidates", 1)."""
    return train.get("fit_normalization", "candidates"), int(train.get("sigma_power", 1))


def fit_probabilities(fit: torch.Tensor, sigma: torch.Tensor, scale: float = FIT_SCALE,
                      normalization: str = "candidates", sigma_power: int = 1) -> torch.Tensor:
    """p(s_k; t, S_t, d_fit, sigma_k) of Eq. 2, with T_k = sigma_k ** sigma_power.

    ``candidates``: softmax over k of -scale * d_fit(s_k) / T_k, a distribution over the
    K candidates in which sigma_k scales source k's own logit (a source with a wide sigma_k
    looks closer to every target).
    ``per_source``: Eq. 1 as printed, whose denominator keeps the numerator's sigma(s):
    exp(-scale d_fit(s_k) / T_k) / sum_j exp(-scale d_fit(s_j) / T_k), the softmax of all
    K fits at source k's temperature, read at k. sigma_k then sets how sharply source k's
    own probability follows the fit ranking, not how close it looks; the K values need not
    sum to 1.

    fit: (B, K) fitting losses (squared chamfer); sigma: (B, K) per-source sigma_k > 0.
    """
    if normalization not in FIT_NORMALIZATIONS:
        raise ValueError(f"unknown Eq. 2 normalization {normalization!r}; "
                         f"expected one of {FIT_NORMALIZATIONS}")
    temperature = sigma ** sigma_power
    if normalization == "candidates":
        return torch.softmax(-scale * fit / temperature, dim=-1)
    # (B, K, K): row k holds all K fits at temperature T_k; its diagonal is p_k.
    logits = -scale * fit[:, None, :] / temperature[:, :, None]
    return torch.softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1)


def soft_retrieval(
    d2: torch.Tensor, k: int, sigma0: float = SIGMA0, generator: torch.Generator | None = None,
    uniform: bool = False,
) -> torch.Tensor:
    """Sample K distinct candidates per target from P_R (or uniformly).

    d2: (B, S) squared retrieval distances to all sources. Returns (B, K) int64.
    """
    if k > d2.shape[1]:
        raise ValueError(f"cannot draw K={k} candidates from a library of {d2.shape[1]} sources")
    probs = torch.ones_like(d2) if uniform else retrieval_probabilities(d2.detach(), sigma0)
    # Underflowed rows (all zero) fall back to uniform.
    probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, torch.ones_like(probs))
    return torch.multinomial(probs, k, replacement=False, generator=generator)


def embedding_loss(d2: torch.Tensor, fit: torch.Tensor, sigma: torch.Tensor,
                   sigma0: float = SIGMA0, normalization: str = "candidates",
                   sigma_power: int = 1) -> torch.Tensor:
    """L_emb (Eq. 2), mean over targets.

    d2: (B, K) squared retrieval distances of the candidates (differentiable in R);
    fit: (B, K) post-deformation fitting losses (constants for this update);
    sigma: (B, K) learned sigma_k of the candidates (differentiable);
    normalization, sigma_power: the form of the fit distribution (`fit_probabilities`).
    """
    p_r = retrieval_probabilities(d2, sigma0)
    p_fit = fit_probabilities(fit.detach(), sigma, normalization=normalization,
                              sigma_power=sigma_power)
    return (p_r - p_fit).abs().sum(-1).mean()


def deformation_loss(d2: torch.Tensor, fit: torch.Tensor, sigma0: float = SIGMA0,
                     weighted: bool = True) -> torch.Tensor:
    """L_def (Eq. 4), mean over targets: sum_k P_R(s_k) L_fit(s_k) with P_R held fixed.

    d2: (B, K) squared retrieval distances (constants); fit: (B, K) differentiable fits.
    weighted=False: plain mean over the K pairs (deformation trained on random pairs).
    """
    if not weighted:
        return fit.mean()
    return (retrieval_probabilities(d2.detach(), sigma0) * fit).sum(-1).mean()


@dataclass
class Deformed:
    """Deformed candidates. points: (B, K, N, 3); params: (B, K, P, 6) projected
    parameters; fit: (B, K) squared chamfer to the target (None without target);
    symmetry: (B, K) symmetry loss, 0 for sources not flagged symmetric."""

    points: torch.Tensor
    params: torch.Tensor
    fit: torch.Tensor | None
    symmetry: torch.Tensor


def apply_parameters(params: torch.Tensor, sources: SourceBatch) -> torch.Tensor:
    """Project (M, P, 6) raw parameters and deform the (M, N, 3) source samples."""
    feasible = project_parameters(params, sources.projector)
    return feasible, deform_points(sources.points, sources.point_parts, sources.centers, feasible)


def deform_candidates(
    module: DeformationModule, target_code: torch.Tensor, candidates: torch.Tensor,
    sources: SourceBatch, target_points: torch.Tensor | None,
) -> Deformed:
    """Predict and apply the deformation of K candidates per target.

    target_code: (B, n3) E_D(target); candidates: (B, K) int64 source indices;
    sources: `SourceBatch` of the B*K candidates in row-major (b, k) order;
    target_points: (B, M, 3) ground-truth target points (canonical frame) or None.
    """
    b, k = candidates.shape
    p = sources.centers.shape[1]
    raw = module(target_code, candidates, p).reshape(b * k, p, 6)
    feasible, pts = apply_parameters(raw, sources)
    sym = symmetry_loss(pts) * sources.symmetric.to(pts.dtype)
    fit = None
    if target_points is not None:
        tgt = target_points[:, None].expand(-1, k, -1, -1).reshape(b * k, *target_points.shape[1:])
        fit = chamfer_distance(pts, tgt).chamfer.reshape(b, k)
    n = pts.shape[1]
    return Deformed(pts.reshape(b, k, n, 3), feasible.reshape(b, k, p, 6), fit, sym.reshape(b, k))


@dataclass
class IDOResult:
    """params: (M, P, 6) optimised feasible parameters; points: (M, N, 3) deformed;
    fit: (M,) final squared chamfer; iterations: (M,) int64 steps each candidate took."""

    params: torch.Tensor
    points: torch.Tensor
    fit: torch.Tensor
    iterations: torch.Tensor


def _select(batch: SourceBatch, mask: torch.Tensor) -> SourceBatch:
    """The candidates of ``batch`` where ``mask`` (M,) is True (or at the indices ``mask``)."""
    return SourceBatch(*(getattr(batch, f.name)[mask] for f in fields(SourceBatch)))


def inner_deformation_optimization(
    params: torch.Tensor, sources: SourceBatch, target_points: torch.Tensor,
    lr: float = 0.5, max_iters: int = 2000, tol: float = 1e-5, sync_every: int | None = None,
) -> IDOResult:
    """IDO: SGD on the part parameters of M candidates at once, against their targets.

    params: (M, P, 6) initial parameters (e.g. the network's projected prediction).
    sources: `SourceBatch` of the M candidates; target_points: (M, T, 3) target points.
    Each step projects the parameters onto the connectivity null space before deforming,
    so the result is feasible. Candidate m stops (its parameters freeze) at the first
    step where its chamfer changed by less than ``tol``. The summed loss gives each
    candidate the gradient of its own chamfer. Returns `IDOResult`.

    sync_every: how often (in steps) the host looks at which candidates stopped, to end
    the loop or compact the active set (default 1 on the CPU, 16 on CUDA, where each look
    waits for the device). Stopped candidates stay frozen in between, so the result does
    not depend on it; only up to ``sync_every - 1`` idle steps are added.
    """
    sync_every = sync_every or (16 if params.is_cuda else 1)
    x = params.detach().clone()
    iters = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    # Only the candidates still moving are computed: (idx, xs, sub, tgt) is the active
    # set, re-gathered when the host looks and some candidate has stopped.
    idx = torch.arange(x.shape[0], device=x.device)
    xs, sub, tgt = x.clone().requires_grad_(True), sources, target_points
    previous, moving = None, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.enable_grad():
        for step in range(max_iters):
            _, pts = apply_parameters(xs, sub)
            fit = chamfer_distance(pts, tgt).chamfer
            if previous is not None:
                moving = moving & ((previous - fit.detach()).abs() >= tol)
            look = (step + 1) % sync_every == 0
            if look:
                active = int(moving.sum())
                if active == 0:
                    break
            (grad,) = torch.autograd.grad(fit.sum(), xs)
            with torch.no_grad():
                xs -= lr * grad * moving[:, None, None]
            iters[idx] += moving
            previous = fit.detach()
            if look and active < len(moving):
                with torch.no_grad():
                    x[idx] = xs
                idx, previous, tgt = idx[moving], previous[moving], tgt[moving]
                sub = _select(sub, moving)
                xs = xs.detach()[moving].requires_grad_(True)
                moving = moving[moving]
    with torch.no_grad():
        x[idx] = xs.detach()
        feasible, pts = apply_parameters(x, sources)
        fit = chamfer_distance(pts, target_points).chamfer
    return IDOResult(feasible, pts, fit, iters)


def _ido_worker_init() -> None:
    torch.set_num_threads(1)


class IDOPool:
    """`inner_deformation_optimization` on CPU candidates shared among worker processes.

    Candidates are independent in IDO (each has its own chamfer, gradient and stopping
    step), so worker w takes candidates w, w + workers, ... (interleaved, since their
    iteration counts differ) and the results are put back in order: the iterations and fits
    of one call on all of them, parameters equal to float32 rounding (tested). The workers
    (spawned once, one thread each) live until `close`; use as a context manager. Python
    threads do not help here (measured: the search blocks shared over 2 threads made IDO
    1.5x slower), processes do (1.7x on 2 cores).
    """

    def __init__(self, workers: int):
        if workers < 2:
            raise ValueError(f"IDOPool needs at least 2 workers, got {workers}")
        self.workers = workers
        self._pool = multiprocessing.get_context("spawn").Pool(workers, _ido_worker_init)

    def __call__(self, params: torch.Tensor, sources: SourceBatch, target_points: torch.Tensor,
                 lr: float = 0.5, max_iters: int = 2000, tol: float = 1e-5) -> IDOResult:
        """As `inner_deformation_optimization` (same arguments and result)."""
        m = params.shape[0]
        shares = [torch.arange(w, m, self.workers) for w in range(self.workers)]
        shares = [idx for idx in shares if len(idx)]
        parts = self._pool.starmap(inner_deformation_optimization, [
            (params[idx], _select(sources, idx), target_points[idx], lr, max_iters, tol)
            for idx in shares])
        order = torch.cat(shares)
        out = []
        for name in ("params", "points", "fit", "iterations"):
            joined = torch.cat([getattr(p, name) for p in parts])
            value = torch.empty_like(joined)
            value[order] = joined
            out.append(value)
        return IDOResult(*out)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def __enter__(self) -> IDOPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
