"""Segmentation losses by name, built from segmentation_models_pytorch's losses."""

from __future__ import annotations

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
    target: np.ndarray, *, ref_area_px: float = 400.0, max_weight: float = 5.0, ring_px: int = 2
) -> np.ndarray:
    """Per-pixel loss weights that make small particles count as much as large ones.

    Each connected particle (any non-background class) of area A weighs
    ``clip(sqrt(ref_area_px / A), 1, max_weight)`` on its own pixels and on the
    background within ``ring_px`` of it, so that missing a small crystal and drawing
    it too fat both cost more; everything else weighs 1. With plain cross-entropy a
    5-px crystal is worth 5 pixels of a 2000-px one, and the model learns to skip it.

    Parameters
    ----------
    target : ndarray (B, H, W) or (H, W), integer class indices (0 background)

    Returns
    -------
    ndarray of float32, the shape of ``target``
    """
    target = np.asarray(target)
    if target.ndim == 2:
        return small_particle_weights(
            target[None], ref_area_px=ref_area_px, max_weight=max_weight, ring_px=ring_px
        )[0]
    out = np.ones(target.shape, dtype=np.float32)
    for b, frame in enumerate(target):
        labels, n = ndi.label(frame > 0)
        if n == 0:
            continue
        area = np.bincount(labels.ravel()).astype(np.float64)
        weight = np.clip(np.sqrt(ref_area_px / np.maximum(area, 1.0)), 1.0, max_weight)
        weight[0] = 1.0
        # every pixel takes the weight of its nearest particle when it lies within the ring
        dist, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
        nearest = labels[iy, ix]
        out[b] = np.where(dist <= ring_px, weight[nearest], 1.0)
    return out


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy weighted per pixel by :func:`small_particle_weights` of the target."""

    def __init__(self, **weights: float) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = small_particle_weights(target.detach().cpu().numpy(), **self.weights)  # type: ignore[arg-type]
        w_t = torch.from_numpy(w).to(logits.device)
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
