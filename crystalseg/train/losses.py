"""Segmentation losses by name, built from segmentation_models_pytorch's losses."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from crystalseg.errors import ConfigError

LossName = Literal["dice+ce", "ce", "dice", "focal", "dice+focal", "lovasz", "tversky"]
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


def make_loss(name: LossName | str) -> nn.Module:
    """The loss called ``name`` for multiclass logits and integer class targets.

    ``"dice+ce"`` (the default of training) adds soft Dice, which counters the imbalance
    of few crystal pixels, to cross-entropy, which gives well-behaved gradients early on.

    Raises
    ------
    ConfigError
        Unknown name.
    """
    from segmentation_models_pytorch import losses as L

    parts = {
        "ce": lambda: nn.CrossEntropyLoss(),
        "dice": lambda: L.DiceLoss(mode="multiclass", from_logits=True),
        "focal": lambda: L.FocalLoss(mode="multiclass"),
        "lovasz": lambda: L.LovaszLoss(mode="multiclass"),
        "tversky": lambda: L.TverskyLoss(mode="multiclass", from_logits=True),
    }
    if name not in LOSS_NAMES:
        raise ConfigError(f"unknown loss '{name}'; choose one of {', '.join(LOSS_NAMES)}")
    built = [parts[p]() for p in name.split("+")]
    return _FloatLogits(built[0] if len(built) == 1 else SumLoss(*built))
