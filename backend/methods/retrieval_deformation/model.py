"""Networks of paper 000: target encoders, the auto-decoded structure-aware deformation
module and the retrieval embedding with per-source learned sigma.

Sizes are the paper's (n1 = n3 = 256 global source / target codes, n2 = 32 part codes,
part MLP 544-512-256-6) and the authors' code's (PointNet 3-64-64-64-128-1024 without
T-net, max-pool, then 1024 -> 256). The image encoder is a ResNet-18 layout trained from
scratch (no pretrained weights can be downloaded here); ``image_width`` scales it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from backend.methods.retrieval_deformation.deformation import PARAMS_PER_PART

#: `ModelConfig.source_embedding` values.
SOURCE_EMBEDDINGS = ("autodecode", "encoder")
#: ModelConfig fields that only the retrieval module reads.
RETRIEVAL_ONLY = ("embedding_dim", "sigma_start", "source_embedding")


@dataclass
class ModelConfig:
    """Architecture of the retrieval + deformation networks (paper defaults)."""

    target: str = "points"
    """Target kind: "points" (PointNet encoder) or "image" (ResNet-18 layout CNN)."""
    target_dim: int = 256
    """n3: target code size (deformation and retrieval encoders)."""
    global_dim: int = 256
    """n1: per-source global deformation code size (auto-decoded)."""
    part_dim: int = 32
    """n2: per-part deformation code size (auto-decoded)."""
    mlp_widths: tuple[int, ...] = (512, 256)
    """Hidden widths of the shared part MLP P (input n1+n2+n3, output 6)."""
    pointnet_widths: tuple[int, ...] = (64, 64, 64, 128, 1024)
    """PointNet per-point layer widths (no T-net)."""
    embedding_dim: int = 256
    """Retrieval space R dimension."""
    image_width: int = 64
    """Channels of the first ResNet stage (64 = ResNet-18)."""
    image_blocks: tuple[int, ...] = (2, 2, 2, 2)
    """Basic blocks per ResNet stage ((2, 2, 2, 2) = ResNet-18)."""
    sigma_start: float | None = 0.0
    """Logit u_s that every sigma_k = sigmoid(u_s) starts at (0: sigma_k = 0.5); None draws
    each from N(0, 1), the start before session 14 (see `RetrievalModule`)."""
    source_embedding: str = "autodecode"
    """How sources are placed in the retrieval space: "autodecode" (a free embedding per
    source, learned by L_emb; every checkpoint before session 27) or "encoder" (the source's
    own samples through the retrieval encoder E_R, as the authors' code does with
    ``--use_src_encoder_retrieval``; point targets only)."""

    def __post_init__(self) -> None:
        if self.source_embedding not in SOURCE_EMBEDDINGS:
            raise ValueError(f"source_embedding must be one of {SOURCE_EMBEDDINGS}, got "
                             f"{self.source_embedding!r}")
        if self.source_embedding == "encoder" and self.target != "points":
            raise ValueError("source_embedding='encoder' embeds a source's samples with the "
                             "target encoder, so it needs point targets; image targets use "
                             "'autodecode'")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ModelConfig:
        d = dict(d)
        for k in ("mlp_widths", "pointnet_widths", "image_blocks"):
            d[k] = tuple(d[k])
        return cls(**d)


class PointNetEncoder(nn.Module):
    """PointNet without T-net: shared per-point MLP, max-pool, linear to ``out_dim``.

    forward(points: (B, N, 3) float, canonical frame) -> (B, out_dim).
    """

    def __init__(self, out_dim: int, widths: tuple[int, ...]):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv1d(c, w, 1), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, out_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
        x = self.features(points.transpose(1, 2))
        return self.head(x.max(dim=2).values)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


class ImageEncoder(nn.Module):
    """ResNet (basic blocks) image encoder, randomly initialised, to ``out_dim``.

    forward(images: (B, 3, H, W) float in [0, 1]) -> (B, out_dim).
    """

    def __init__(self, out_dim: int, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, c = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for k in range(n):
                stages.append(_BasicBlock(c, cout, 2 if (k == 0 and i > 0) else 1))
                c = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, out_dim)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        x = self.stages(self.stem((images - self.mean) / self.std))
        return self.head(x.mean(dim=(2, 3)))


def make_encoder(config: ModelConfig, out_dim: int) -> nn.Module:
    """The target encoder for ``config.target`` ("points" or "image")."""
    if config.target == "points":
        return PointNetEncoder(out_dim, config.pointnet_widths)
    if config.target == "image":
        return ImageEncoder(out_dim, config.image_width, config.image_blocks)
    raise ValueError(f"target must be 'points' or 'image', got {config.target!r}")


class DeformationModule(nn.Module):
    """Structure-aware deformation network D (paper Sec. 2.2, Fig. 2 right).

    Per-source global codes (S, n1) and per-part codes (sum of part counts, n2) are
    auto-decoded parameters; the target encoder E_D gives t_D (n3); the shared MLP P maps
    [t_D, s_glob, s_part] to 6 raw parameters per part.
    part_offsets: (S + 1,) int64 first part-code row of each source.
    """

    def __init__(self, config: ModelConfig, part_offsets: torch.Tensor):
        super().__init__()
        self.config = config
        self.encoder = make_encoder(config, config.target_dim)
        num_sources = len(part_offsets) - 1
        self.register_buffer("part_offsets", part_offsets.to(torch.int64).clone())
        self.global_codes = nn.Parameter(torch.randn(num_sources, config.global_dim))
        self.part_codes = nn.Parameter(torch.randn(int(part_offsets[-1]), config.part_dim))
        layers, c = [], config.target_dim + config.global_dim + config.part_dim
        for w in config.mlp_widths:
            layers += [nn.Linear(c, w), nn.ReLU(inplace=True)]
            c = w
        last = nn.Linear(c, PARAMS_PER_PART)
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def part_code_rows(self, sources: torch.Tensor, max_parts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Part-code rows (M, P) int64 and mask (M, P) bool for sources (M,) int64."""
        start = self.part_offsets[sources]
        count = self.part_offsets[sources + 1] - start
        ar = torch.arange(max_parts, device=sources.device)
        mask = ar[None] < count[:, None]
        rows = torch.where(mask, start[:, None] + ar[None], torch.zeros_like(ar)[None])
        return rows, mask

    def forward(self, target_code: torch.Tensor, sources: torch.Tensor, max_parts: int) -> torch.Tensor:
        """Raw per-part parameters (before the connectivity projection).

        target_code: (B, n3) from ``self.encoder``; sources: (B, K) int64 source indices;
        max_parts: P, padding size. Returns (B, K, P, 6) float, zero on padded parts.
        """
        b, k = sources.shape
        flat = sources.reshape(-1)
        rows, mask = self.part_code_rows(flat, max_parts)
        glob = self.global_codes[flat][:, None].expand(-1, max_parts, -1)
        tcode = target_code[:, None, None].expand(-1, k, max_parts, -1).reshape(b * k, max_parts, -1)
        x = torch.cat([tcode, glob, self.part_codes[rows]], dim=-1)
        out = self.mlp(x) * mask[..., None]
        return out.reshape(b, k, max_parts, PARAMS_PER_PART)


class RetrievalModule(nn.Module):
    """Retrieval embedding R: target encoder E_R and auto-decoded per-source embeddings.

    Distance (authors' "mahalanobis"): d_R^2(s, t) = sum_j (w_sj (e_t - e_s)_j)^2 with
    per-source weights w_s = sigmoid(v_s) + 1e-6. Per-source learned sigma_k =
    sigmoid(u_s) + 1e-6 scales the fitting distances in Eq. 2.

    Every sigma_k starts at the same value (``config.sigma_start``). Drawn at random, they
    act as random per-source temperatures in Eq. 2 and barely move in training (the shipped
    chair points checkpoint ends 0.996-correlated with its start): a source that starts with
    a small sigma_k looks like a bad fit to every target, and R learns never to retrieve it
    (a chair points run with that start put no source of the lower half of the sigma_k in
    any top 10 of 200 test targets; `benchmarks/results/rd_retrieval_gap/`).
    """

    def __init__(self, config: ModelConfig, num_sources: int):
        super().__init__()
        self.encoder = make_encoder(config, config.embedding_dim)
        self.source_embeddings = nn.Parameter(torch.randn(num_sources, config.embedding_dim))
        self.encodes_sources = config.source_embedding == "encoder"
        if self.encodes_sources:  # E_R(source samples), stored by `refresh_source_embeddings`
            self.source_embeddings.requires_grad_(False)
        self.source_weights = nn.Parameter(torch.randn(num_sources, config.embedding_dim))
        sigmas = torch.randn(num_sources)  # drawn either way: later seeded draws do not shift
        if config.sigma_start is not None:
            sigmas = torch.full((num_sources,), float(config.sigma_start))
        self.source_sigmas = nn.Parameter(sigmas)

    #: Above this many sources, a full scan uses the expanded (matrix product) form.
    EXPANDED_SCAN = 8192

    def _scan_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-source terms of the expanded scan: w^2 (S, D), w^2 e (S, D), sum w^2 e^2 (S,).
        Cached while gradients are off, until the parameters change in place or move."""
        key = tuple((p._version, p.data_ptr()) for p in (self.source_weights, self.source_embeddings))
        cache = getattr(self, "_scan_cache", None)
        if not torch.is_grad_enabled() and cache is not None and cache[0] == key:
            return cache[1]
        w2 = (torch.sigmoid(self.source_weights) + 1e-6).square()
        e = self.source_embeddings
        terms = (w2, w2 * e, (w2 * e.square()).sum(-1))
        if not torch.is_grad_enabled():
            self._scan_cache = (key, terms)
        return terms

    def sigma(self, sources: torch.Tensor) -> torch.Tensor:
        """Per-source sigma_k > 0 for source indices of any shape (same shape)."""
        return torch.sigmoid(self.source_sigmas[sources]) + 1e-6

    @torch.no_grad()
    def refresh_source_embeddings(self, points: torch.Tensor, chunk: int = 64) -> None:
        """``encoder`` mode: store E_R(samples) of every source (S, N, 3) as its embedding,
        with the encoder in eval mode (as targets are embedded at inference); the training
        step embeds its candidates afresh (`candidate_distances`), these serve the full scan."""
        if not self.encodes_sources:
            raise ValueError("refresh_source_embeddings needs source_embedding='encoder'")
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            for i in range(0, points.shape[0], chunk):
                self.source_embeddings[i:i + chunk] = self.encoder(points[i:i + chunk])
        finally:
            self.encoder.train(was_training)

    def candidate_distances(self, embedding: torch.Tensor, sources: torch.Tensor,
                            source_points: torch.Tensor) -> torch.Tensor:
        """d_R^2 of the (B, K) candidates ``sources`` for training, differentiable in the
        embeddings: in ``encoder`` mode the candidates' samples (B*K, N, 3), row-major, go
        through E_R now (the authors' ``get_source_latent_codes_encoder``); else the stored
        embeddings are used."""
        if not self.encodes_sources:
            return self.distances(embedding, sources)
        b, k = sources.shape
        return self.distances(embedding, sources, self.encoder(source_points).reshape(b, k, -1))

    def distances(self, embedding: torch.Tensor, sources: torch.Tensor | None = None,
                  source_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Squared retrieval distances d_R^2.

        embedding: (B, D) target embeddings from ``self.encoder``.
        sources: (B, K) int64 source indices, or None for all S sources.
        source_embeddings: (B, K, D) embeddings of ``sources`` to use instead of the stored.
        Returns (B, K) or (B, S) float.
        """
        if source_embeddings is not None:
            w = torch.sigmoid(self.source_weights[sources]) + 1e-6
            return ((embedding[:, None] - source_embeddings) * w).square().sum(-1)
        if sources is None and self.source_embeddings.shape[0] > self.EXPANDED_SCAN:
            # Large libraries: sum_j w^2 (t - e)^2 = t^2.w^2 - 2 t.(w^2 e) + e^2.w^2 as
            # matrix products, without the (B, S, D) difference tensor.
            w2, w2e, e2 = self._scan_terms()
            d2 = embedding.square() @ w2.T - 2.0 * embedding @ w2e.T
            return (d2 + e2[None]).clamp_min(0.0)
        if sources is None:
            e = self.source_embeddings[None]
            w = torch.sigmoid(self.source_weights)[None] + 1e-6
        else:
            e = self.source_embeddings[sources]
            w = torch.sigmoid(self.source_weights[sources]) + 1e-6
        return ((embedding[:, None] - e) * w).square().sum(-1)
