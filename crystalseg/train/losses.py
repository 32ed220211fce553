"""Segmentation losses by name, built from segmentation_models_pytorch's losses."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from crystalseg.errors import ConfigError

LossName = Literal[
    "dice+ce", "ce", "dice", "focal", "dice+focal", "lovasz", "tversky", "dice+wce", "wce"
]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)


class SumLoss(nn.Module):
    """Sum of several losses of (logits (B, K, H, W), target (B, H, W) int64)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = self.losses[0](logits, target)
        for loss in self.losses[1:]:
            total = total + loss(logits, target)
        return total


class _FloatLogits(nn.Module):
    """Computes a loss in float32 whatever the autocast dtype of the logits."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), target)


def small_particle_weights(
    target: np.ndarray | torch.Tensor,
    *,
    ref_area_px: float = 400.0,
    max_weight: float = 5.0,
    ring_px: int = 2,
) -> np.ndarray | torch.Tensor:
    """Per-pixel loss weights that make small particles count as much as large ones.

    Each connected particle (any non-background class, 4-connected) of area A weighs
    ``clip(sqrt(ref_area_px / A), 1, max_weight)`` on its own pixels, and the
    background within ``ring_px`` of it (Euclidean) takes the largest weight of the
    particles that near, so that missing a small crystal and drawing it too fat both
    cost more; everything else weighs 1. With plain cross-entropy a 5-px crystal is
    worth 5 pixels of a 2000-px one, and the model learns to skip it.

    The particles are labelled on the CPU; the ring is a max filter that runs where
    ``target`` lies (on a GPU batch it costs next to nothing).

    Parameters
    ----------
    target : ndarray or Tensor (B, H, W) or (H, W), integer class indices (0 background)

    Returns
    -------
    float32 array of the shape and kind (ndarray or Tensor, same device) of ``target``
    """
    is_tensor = isinstance(target, torch.Tensor)
    t = target if isinstance(target, torch.Tensor) else torch.from_numpy(np.asarray(target))
    if t.ndim == 2:
        out = small_particle_weights(
            t[None], ref_area_px=ref_area_px, max_weight=max_weight, ring_px=ring_px
        )[0]
        return out if is_tensor else out.numpy()
    fg_t = t > 0
    fg = fg_t.cpu().numpy()
    structure = np.zeros((3, 3, 3), bool)  # 4-connected within a frame, never across frames
    structure[1] = ndi.generate_binary_structure(2, 1)
    labels, _ = ndi.label(fg, structure=structure)
    area = np.bincount(labels.ravel()).astype(np.float64)
    weight = np.clip(np.sqrt(ref_area_px / np.maximum(area, 1.0)), 1.0, max_weight)
    weight[0] = 1.0
    own = weight.astype(np.float32)[labels]
    if t.device.type == "cpu":
        ring = torch.from_numpy(disc_max_scipy(own, ring_px))
        own_t = torch.from_numpy(own)
    else:
        own_t = torch.from_numpy(own).to(t.device)
        ring = disc_max_torch(own_t, ring_px)
    out_t = torch.where(fg_t, own_t, ring)
    return out_t if is_tensor else out_t.cpu().numpy()


def disc_max_scipy(x: np.ndarray, r: int) -> np.ndarray:
    """Max of ``x`` (B, H, W) over a disc of radius ``r`` in each frame (CPU)."""
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ndi.maximum_filter(
        x, footprint=(yy**2 + xx**2 <= r * r)[None], mode="constant", cval=-np.inf
    )


def disc_max_torch(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`disc_max_scipy` on any device: a disc of radius ``r`` is the union of the
    centred rectangles ``|dx| <= a, |dy| <= isqrt(r^2 - a^2)``, so a max over each
    (separable max pools, cheap on a GPU) gives the max over the disc."""
    out = x[:, None]
    for a in range(r + 1):
        b = math.isqrt(r * r - a * a)
        pooled = nn.functional.max_pool2d(
            x[:, None], (2 * b + 1, 2 * a + 1), stride=1, padding=(b, a)
        )
        out = torch.maximum(out, pooled)
    return out[:, 0]


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy weighted per pixel by :func:`small_particle_weights` of the target."""

    def __init__(self, **weights: float) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w_t = small_particle_weights(target.detach(), **self.weights)  # type: ignore[arg-type]
        assert isinstance(w_t, torch.Tensor)
        ce = nn.functional.cross_entropy(logits, target, reduction="none")
        return (ce * w_t).sum() / w_t.sum()


def make_loss(name: LossName | str) -> nn.Module:
    """The loss called ``name`` for multiclass logits and integer class targets.

    ``"dice+ce"`` (the default of training) adds soft Dice, which counters the imbalance
    of few crystal pixels, to cross-entropy, which gives well-behaved gradients early on.
    ``"wce"`` is cross-entropy weighted up on small particles and the ring around them
    (:func:`small_particle_weights`), for recordings where small crystals matter.

    Raises
    ------
    ConfigError
        Unknown name.
    """
    from segmentation_models_pytorch import losses as L

    parts = {
        "ce": lambda: nn.CrossEntropyLoss(),
        "wce": lambda: WeightedCrossEntropy(),
        "dice": lambda: L.DiceLoss(mode="multiclass", from_logits=True),
        "focal": lambda: L.FocalLoss(mode="multiclass"),
        "lovasz": lambda: L.LovaszLoss(mode="multiclass"),
        "tversky": lambda: L.TverskyLoss(mode="multiclass", from_logits=True),
    }
    if name not in LOSS_NAMES:
        raise ConfigError(f"unknown loss '{name}'; choose one of {', '.join(LOSS_NAMES)}")
    built = [parts[p]() for p in name.split("+")]
    return _FloatLogits(built[0] if len(built) == 1 else SumLoss(*built))
