"""IM-Net occupancy network: voxel encoder -> shape code, MLP decoder, implicit features.

Decoder (Chen & Zhang 2019, as used by paper 001, Eq. 1-2):
``F(x; z) = W_7 o s o W_6 o ... o s o W_1 (x (+) z)`` with s = LeakyReLU(0.02), widths
(3 + 256)-1024-1024-1024-512-256-128-1 and IM-Net's soft clip of the output to [0, 1]
(slope 0.01 outside). The implicit feature of layer l is
``Phi^(l)(x; z) = s(W_l ... s(W_1 (x (+) z)))`` (after the activation), l = 1..6.

`ImplicitDecoder.features_and_jacobian` returns features of chosen layers and their
Jacobian with respect to the query point for all points at once, propagated
analytically (forward mode) through the MLP: J_l = diag(s'(a_l)) W_l J_{l-1}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "PRESETS",
    "ImplicitDecoder",
    "ImplicitModel",
    "ModelConfig",
    "VoxelEncoder",
    "auto_decode",
    "export_fp16",
    "load_checkpoint",
    "save_checkpoint",
    "soft_clip",
]


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the IM-Net encoder and decoder (defaults: the paper's)."""

    code_dim: int = 256
    """Length k of the shape code z."""
    widths: tuple[int, ...] = (1024, 1024, 1024, 512, 256, 128)
    """Widths w_1..w_{L-1} of the hidden layers; the output layer has width 1."""
    encoder_channels: int = 32
    """Base channel count of the 3D-conv voxel encoder (doubles at each of 4 stages)."""
    negative_slope: float = 0.02
    """Slope of the LeakyReLU for negative inputs (IM-Net: 0.02)."""
    code_activation: str = "sigmoid"
    """Last op of the voxel encoder: "sigmoid" (IM-Net: codes in (0, 1), every preset) or
    "none" (tried in the session-2 probes: no faster start)."""
    xyz_gain: float = 1.0
    """Factor on the initial weights of the first layer's x, y, z inputs. Coordinates
    span [-0.5, 0.5] (variance 1/12 each) while the code has k entries in (0, 1), so with
    equal weight scales the position term of layer 1 is ~sqrt(4k/3) times smaller than the
    code term (13x for k = 128) and the decoder ignores x for many steps."""
    frame_scale: float = 1.0
    """The network sees canonical points scaled by this factor: the shapes' unit cube
    [-0.5, 0.5]^3 becomes [-s/2, s/2]^3 inside the grid [-0.5, 0.5]^3 that the training
    samples and the encoder's voxels cover, so every shape keeps a margin of (1 - s)/2 of
    empty, trained space. IM-Net's authors normalise each shape to a unit bounding-box
    diagonal for this reason (their sampling rarely reaches the cube border). With s = 1
    (every checkpoint before session 25) a chair's leg tips and back top lie on the
    border, where the features were never trained and matched points drift (README,
    "Session 25"). Callers keep canonical coordinates; voxels and training cells are taken
    over the canonical half-extent `grid_half_extent` = 0.5 / s."""
    init: str = "imnet"
    """Decoder initialisation: "imnet" (N(0, 0.02) weights, zero biases: IM-NET-pytorch) or
    "kaiming" (He-normal hidden layers for the LeakyReLU, N(0, 0.02) output layer). At
    width 256 IM-Net's init scales activations by ~0.3 per layer. He init alone did not
    leave the empty-shape loss in the probes; with ``xyz_gain`` 10 it does (README,
    "Session 2"), so the CPU preset uses both."""

    def __post_init__(self) -> None:
        if self.code_dim < 1 or self.encoder_channels < 1:
            raise ValueError("code_dim and encoder_channels must be positive integers")
        if self.code_activation not in ("sigmoid", "none"):
            raise ValueError(f"code_activation must be 'sigmoid' or 'none', got {self.code_activation!r}")
        if self.init not in ("imnet", "kaiming"):
            raise ValueError(f"init must be 'imnet' or 'kaiming', got {self.init!r}")
        if not 0.0 < self.frame_scale <= 1.0:
            raise ValueError(f"frame_scale must be in (0, 1], got {self.frame_scale}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def grid_half_extent(self) -> float:
        """Half side, in canonical coordinates, of the cube the network's 64^3 voxels and
        training cells cover: 0.5 / frame_scale."""
        return 0.5 / self.frame_scale

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


PRESETS: dict[str, ModelConfig] = {
    # The paper's network (IM-Net widths, 32 encoder channels): GPU training. Both trained
    # presets keep a margin around the shapes (frame_scale 0.8, about IM-Net's unit
    # diagonal for a chair; README, session 25).
    "paper": ModelConfig(frame_scale=0.8),
    # Same depth, narrower: the default checkpoints trainable on a CPU in < 1 hour. He init
    # and a 10x stronger position input (see `ModelConfig.xyz_gain`): with IM-Net's init
    # the first 600 steps of 16^3/32^3 stay at the empty-shape loss (README, session 2).
    "cpu": ModelConfig(code_dim=128, widths=(256, 256, 256, 128, 64, 32), encoder_channels=16,
                       init="kaiming", xyz_gain=10.0, frame_scale=0.8),
    # Tests and smoke runs.
    "tiny": ModelConfig(code_dim=16, widths=(32, 32, 32, 16, 16, 8), encoder_channels=4),
}


def soft_clip(y: torch.Tensor) -> torch.Tensor:
    """IM-Net's output clip: identity on [0, 1], slope 0.01 outside (keeps a gradient)."""
    return torch.maximum(torch.minimum(y, 0.01 * y + 0.99), 0.01 * y)


class ImplicitDecoder(nn.Module):
    """Latent-coded occupancy MLP ``F(x; z)`` of Eq. 1 with features ``Phi^(l)`` of Eq. 2."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dims = (3 + config.code_dim, *config.widths, 1)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        for i, lin in enumerate(self.linears):  # IM-Net init: N(0, 0.02) weights, zero biases
            if config.init == "kaiming" and i < len(self.linears) - 1:
                nn.init.kaiming_normal_(lin.weight, a=config.negative_slope,
                                        nonlinearity="leaky_relu")
            else:
                nn.init.normal_(lin.weight, 0.0, 0.02)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.linears[0].weight[:, :3] *= config.xyz_gain
        self.slope = config.negative_slope

    @property
    def num_feature_layers(self) -> int:
        """Number of hidden layers L - 1 (6 for IM-Net): valid feature layers are 1..L-1."""
        return len(self.linears) - 1

    def _xyz_weight(self) -> torch.Tensor:
        """(w_1, 3) weights of the canonical x, y, z inputs of layer 1: the layer's position
        weights times ``frame_scale`` (the network's frame, see `ModelConfig.frame_scale`)."""
        return self.linears[0].weight[:, :3] * self.config.frame_scale

    def _first_layer(self, points: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        # W_1 (s x (+) z) + b_1 without materialising the concatenation per point.
        w = self.linears[0].weight
        code_term = codes @ w[:, 3:].T + self.linears[0].bias
        return points @ self._xyz_weight().T + code_term.unsqueeze(-2)

    def _check(self, points: torch.Tensor, codes: torch.Tensor) -> None:
        if points.shape[-1] != 3 or points.ndim not in (2, 3):
            raise ValueError(f"points must be (N, 3) or (B, N, 3), got {tuple(points.shape)}")
        k = self.config.code_dim
        if codes.shape[-1] != k or codes.ndim != points.ndim - 1:
            raise ValueError(
                f"codes must be ({k},) for (N, 3) points or (B, {k}) for (B, N, 3) points, "
                f"got {tuple(codes.shape)} for points {tuple(points.shape)}"
            )

    def logits(self, points: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The output layer before the soft clip (its gradient does not vanish where the
        clip flattens F). Shapes as `forward`."""
        self._check(points, codes)
        h = nn.functional.leaky_relu(self._first_layer(points, codes), self.slope)
        for lin in self.linears[1:-1]:
            h = nn.functional.leaky_relu(lin(h), self.slope)
        return self.linears[-1](h).squeeze(-1)

    def forward(self, points: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Occupancy probability F(x; z), soft-clipped to [0, 1].

        points: (B, N, 3) or (N, 3) float, canonical frame (unit cube).
        codes: (B, k) or (k,) float shape codes.
        Returns (B, N) or (N,) float.
        """
        return soft_clip(self.logits(points, codes))

    def _check_layers(self, layers: Sequence[int]) -> None:
        bad = [layer for layer in layers if not 1 <= layer <= self.num_feature_layers]
        if not layers or bad:
            raise ValueError(
                f"feature layers must be in 1..{self.num_feature_layers}, got {list(layers)}"
            )

    def features(
        self, points: torch.Tensor, codes: torch.Tensor, layers: Sequence[int]
    ) -> list[torch.Tensor]:
        """Implicit features Phi^(l)(x; z) (Eq. 2) of each requested layer.

        points: (N, 3) or (B, N, 3) float, canonical frame; codes: (k,) or (B, k).
        layers: 1-based layer indices in 1..L-1.
        Returns one (N, w_l) (or (B, N, w_l)) tensor per entry of ``layers``, in order.
        """
        self._check(points, codes)
        self._check_layers(layers)
        out: dict[int, torch.Tensor] = {}
        h = nn.functional.leaky_relu(self._first_layer(points, codes), self.slope)
        out[1] = h
        for i in range(2, max(layers) + 1):
            h = nn.functional.leaky_relu(self.linears[i - 1](h), self.slope)
            out[i] = h
        return [out[layer] for layer in layers]

    def features_and_jacobian(
        self,
        points: torch.Tensor,
        code: torch.Tensor,
        layers: Sequence[int],
        weights: Sequence[float] | None = None,
        with_jacobian: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted, concatenated features and their Jacobian w.r.t. the points, batched.

        points: (N, 3) float, canonical frame. code: (k,) float, one shape code.
        layers: 1-based layers whose features are concatenated, e.g. (3, 6).
        weights: one factor per layer (e.g. (1.0, 0.1) for layer 3 + eta x layer 6).
        Returns features (N, C) with C = sum of the layers' widths and, with
        ``with_jacobian``, the Jacobian (N, C, 3) d features / d points, computed in
        forward mode through the MLP for all points at once (no autograd).
        """
        if points.ndim != 2 or code.ndim != 1:
            raise ValueError(
                f"points must be (N, 3) and code (k,), got {tuple(points.shape)}, {tuple(code.shape)}"
            )
        self._check(points, code)
        self._check_layers(layers)
        weights = [1.0] * len(layers) if weights is None else list(weights)
        if len(weights) != len(layers):
            raise ValueError(f"{len(weights)} weights given for {len(layers)} layers")
        wanted = {layer: w for layer, w in zip(layers, weights, strict=True)}
        feats, jacs = [], []
        pre = self._first_layer(points, code)
        h = pre
        # jt: (N, 3, w) = transpose of the Jacobian of the current layer's features.
        jt = self._xyz_weight().T.unsqueeze(0) if with_jacobian else None
        for i in range(1, max(layers) + 1):
            if i > 1:
                lin = self.linears[i - 1]
                pre = lin(h)
                if jt is not None:
                    jt = jt @ lin.weight.T
            h = nn.functional.leaky_relu(pre, self.slope)
            if jt is not None:
                slope = 1.0 - (1.0 - self.slope) * (pre <= 0).to(pre.dtype)  # LeakyReLU'
                jt = jt * slope.unsqueeze(1)
            if i in wanted:
                feats.append(h * wanted[i])
                if jt is not None:
                    jacs.append(jt.transpose(1, 2) * wanted[i])
        features = torch.cat(feats, dim=1)
        jacobian = torch.cat(jacs, dim=1) if with_jacobian else None
        return features, jacobian


class VoxelEncoder(nn.Module):
    """IM-Net 3D-conv encoder: (B, 64, 64, 64) occupancy -> (B, k) code in (0, 1).

    Four stride-2 4^3 convolutions (c, 2c, 4c, 8c channels, instance norm, LeakyReLU
    0.02) take 64^3 to 4^3; a 4^3 valid convolution maps to k channels; sigmoid.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, s = config.encoder_channels, config.negative_slope
        layers: list[nn.Module] = []
        cin = 1
        for cout in (c, 2 * c, 4 * c, 8 * c):
            layers += [
                nn.Conv3d(cin, cout, 4, stride=2, padding=1, bias=False),
                nn.InstanceNorm3d(cout),
                nn.LeakyReLU(s),
            ]
            cin = cout
        layers.append(nn.Conv3d(cin, config.code_dim, 4, stride=1, padding=0, bias=True))
        self.net = nn.Sequential(*layers)
        self.sigmoid = config.code_activation == "sigmoid"
        for m in self.net:
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """voxels: (B, 64, 64, 64) bool or float occupancy, index [x, y, z] of cell centres
        of the network's grid ([-h, h]^3 canonical, h = `ModelConfig.grid_half_extent`).
        Returns (B, k) float codes."""
        if voxels.ndim != 4 or tuple(voxels.shape[1:]) != (64, 64, 64):
            raise ValueError(f"voxels must be (B, 64, 64, 64), got {tuple(voxels.shape)}")
        x = voxels.to(self.net[0].weight.dtype).unsqueeze(1)
        code = self.net(x).flatten(1)
        return torch.sigmoid(code) if self.sigmoid else code


class ImplicitModel(nn.Module):
    """Encoder + decoder of one category (the paper trains one network per category)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VoxelEncoder(config)
        self.decoder = ImplicitDecoder(config)

    def forward(self, voxels: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """voxels: (B, 64, 64, 64); points: (B, N, 3) canonical frame. Returns (B, N)."""
        return self.decoder(points, self.encoder(voxels))

    def shape_voxels(self, shape) -> torch.Tensor:
        """(64, 64, 64) bool occupancy of a built-in `Shape` on this network's grid (the
        encoder's input; `ModelConfig.grid_half_extent`)."""
        return torch.from_numpy(shape.occupancy_grid(64, self.config.grid_half_extent))


def save_checkpoint(path: str | Path, model: ImplicitModel, meta: dict[str, Any]) -> None:
    """Write the model's config, weights and ``meta`` (category, training record) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.config.to_dict(), "state_dict": state, "meta": meta}, path)


def export_fp16(source: str | Path, destination: str | Path) -> Path:
    """Copy a checkpoint with its floating-point weights stored in fp16.

    `load_checkpoint` reads them back into the fp32 model, so only storage changes (half
    the size); the meta records ``"storage": "fp16"``.
    """
    src, dst = Path(source), Path(destination)
    if dst.resolve() == src.resolve():
        raise ValueError(f"export into another file than {src}")
    blob = torch.load(src, map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v.half() if v.is_floating_point() else v
                          for k, v in blob["state_dict"].items()}
    blob["meta"] = {**blob["meta"], "storage": "fp16"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, dst)
    return dst


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[ImplicitModel, dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint`; returns (model in eval mode, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no feature_matching checkpoint at {path}; train one with "
            "'shapebridge train feature_matching --category <name>'"
        )
    blob = torch.load(path, map_location=device, weights_only=True)
    model = ImplicitModel(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob["meta"]


def auto_decode(
    decoder: ImplicitDecoder,
    points: torch.Tensor,
    occupancy: torch.Tensor,
    init: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-2,
) -> tuple[torch.Tensor, float]:
    """Fit a shape code to occupancy samples with the decoder frozen (auto-decoding).

    For meshes outside the training set: minimise the mean squared error of
    F(x; z) against the samples' occupancy over z alone, with Adam.
    points: (N, 3) float, canonical frame. occupancy: (N,) float or bool in {0, 1}.
    init: (k,) starting code (e.g. the encoder's code of the mesh's voxels).
    Returns (code (k,) detached, final loss).
    """
    if points.ndim != 2 or points.shape[1] != 3 or occupancy.shape != points.shape[:1]:
        raise ValueError(
            f"points must be (N, 3) and occupancy (N,), got {tuple(points.shape)}, "
            f"{tuple(occupancy.shape)}"
        )
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    target = occupancy.to(points.dtype)
    code = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([code], lr=lr)
    loss = torch.tensor(float("nan"))
    for p in decoder.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = ((decoder(points, code) - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            loss = ((decoder(points, code) - target) ** 2).mean()
    finally:
        for p in decoder.parameters():
            p.requires_grad_(True)
    return code.detach(), float(loss)
