"""The library entry point of ``crystalseg train``: validated settings in, a trained model out.

The CLI parses its options into a :class:`TrainSettings` and calls :func:`train_model`;
notebooks can do the same, or use :func:`~crystalseg.train.learner.unet_learner`
directly for the fastai-like workflow.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crystalseg.classes import BOUNDARY_CODES
from crystalseg.errors import CheckpointError, ConfigError, StageStateError
from crystalseg.models.checkpoint import DEFAULT_ENCODER, META_FILE, jsonable, read_checkpoint_meta
from crystalseg.store import check_output_folder
from crystalseg.train.augment import AUGMENT_PRESETS
from crystalseg.train.data import PathLike, SegmentationData
from crystalseg.train.learner import (
    LAST_DIR,
    MIN_STEPS_PER_EPOCH,
    STATE_META,
    Learner,
    LRFindResult,
    find_resume_dir,
    unet_learner,
)
from crystalseg.train.losses import LOSS_NAMES

log = logging.getLogger(__name__)


#: Class names read as the background, and names of classes that are surely not it.
_BACKGROUND_NAMES = ("background", "bg", "back")
_FOREGROUND_NAMES = ("crystal", "crystals", "particle", "particles", *BOUNDARY_CODES)


def _check_background_first(codes: tuple[str, ...]) -> None:
    """Refuse codes whose first class is surely not the background: mask value 0 is
    the first class, so a crystal class there trains the background as crystal."""
    names = [c.strip().lower() for c in codes]
    misplaced = [c for c, n in zip(codes[1:], names[1:], strict=True) if n in _BACKGROUND_NAMES]
    if misplaced or names[0] in _FOREGROUND_NAMES:
        rest = ",".join(c for c, n in zip(codes, names, strict=True) if n not in _BACKGROUND_NAMES)
        raise ConfigError(
            f"--codes {','.join(codes)}: the first class must be the background (mask "
            f"value 0), e.g. --codes background,{rest}"
        )


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``crystalseg train`` needs; validated on construction.

    Attributes
    ----------
    data : tuple of paths (folders, run stores); see :func:`~crystalseg.train.data.pairs`
    codes : class names, background first
    output_dir : where best (``DIR``) and last (``DIR/last``) checkpoints go; None: nowhere
    encoder, init, loss, decoder_channels, scaling, augment : see :func:`unet_learner`
    epochs : length of the one-cycle schedule (0 with ``find_lr``: only find the lr)
    lr : peak learning rate; None: 1e-3, or the finder's suggestion with ``find_lr``
    crop_size, batch_size, valid_fraction, valid, mask_values, instances, crops_per_image,
    foreground_bias, channels, frame_step : see :func:`~crystalseg.train.data.pairs`
    find_lr : run the learning-rate finder first
    resume : continue an interrupted run from its output directory
    early_stop : stop after this many epochs without a better validation score
    max_minutes : stop after the first epoch that ends past this wall-clock budget
    overwrite : replace a checkpoint already in ``output_dir``
    device, seed, weight_decay, progress, freeze_bn, min_steps_per_epoch : see
        :func:`unet_learner`
    command : the command line that asked for this training, recorded in model.json
    """

    data: tuple[Path, ...]
    codes: tuple[str, ...] = ("background", "crystal")
    output_dir: Path | None = None
    encoder: str = DEFAULT_ENCODER
    init: str = "default"
    epochs: int = 3
    lr: float | None = None
    loss: str = "dice+ce"
    crop_size: int = 256
    batch_size: int | None = None
    valid_fraction: float = 0.2
    valid: tuple[str, ...] | None = None
    mask_values: tuple[int, ...] | Mapping[int, int | str] | None = None
    instances: bool = False
    crops_per_image: int | None = None
    foreground_bias: float = 0.25
    channels: int = 1
    frame_step: int = 1
    decoder_channels: tuple[int, ...] | None = None
    scaling: str | None = None
    augment: str = "default"
    find_lr: bool = False
    resume: Path | None = None
    early_stop: int | None = None
    max_minutes: float | None = None
    overwrite: bool = False
    device: str | None = None
    seed: int = 0
    weight_decay: float = 1e-2
    progress: bool = True
    freeze_bn: bool | None = None
    min_steps_per_epoch: int = MIN_STEPS_PER_EPOCH
    command: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        data = (self.data,) if isinstance(self.data, (str, os.PathLike)) else self.data
        set_(self, "data", tuple(Path(p) for p in data))
        if not self.data:
            raise ConfigError("no training data given; pass a folder, pairs or run stores")
        codes = self.codes.split(",") if isinstance(self.codes, str) else self.codes
        set_(self, "codes", tuple(c.strip() for c in codes if c.strip()))
        if len(self.codes) < 2 or len(set(self.codes)) != len(self.codes):
            raise ConfigError(
                f"--codes {','.join(self.codes)} must name at least two distinct classes, "
                "background first, e.g. background,crystal"
            )
        _check_background_first(self.codes)
        for name in ("output_dir", "resume"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Path(value))
        if self.resume is not None and self.output_dir is None:
            set_(self, "output_dir", self.resume)
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"--epochs must be a non-negative integer, got {self.epochs}")
        if self.epochs == 0 and not self.find_lr:
            raise ConfigError("--epochs 0 trains nothing; give epochs or --find-lr")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSS_NAMES)}, got {self.loss}")
        if self.crop_size < 32 or self.crop_size % 32:
            raise ConfigError(f"--crop-size must be a multiple of 32, got {self.crop_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.channels not in (1, 3):
            raise ConfigError(f"--channels must be 1 or 3, got {self.channels}")
        if self.crops_per_image is not None and self.crops_per_image < 1:
            raise ConfigError(f"--crops-per-image must be >= 1, got {self.crops_per_image}")
        if not 0.0 <= self.foreground_bias <= 1.0:
            raise ConfigError(f"--foreground-bias must be in [0, 1], got {self.foreground_bias}")
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(
                f"--augment must be one of {', '.join(AUGMENT_PRESETS)}, got {self.augment}"
            )
        if self.scaling not in (None, "dtype", "percentile"):
            raise ConfigError(f"--scaling must be dtype or percentile, got {self.scaling}")
        if self.early_stop is not None and self.early_stop < 1:
            raise ConfigError(f"--early-stop must be at least 1, got {self.early_stop}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.freeze_bn not in (None, True, False):
            raise ConfigError(
                f"freeze_bn must be True, False or None (auto), got {self.freeze_bn!r}"
            )
        if self.freeze_bn and self.init == "none":
            raise ConfigError(
                "--freeze-bn keeps the batch-norm statistics of the starting model, but "
                "--init none starts from random weights; drop --freeze-bn or fine-tune a "
                "model (--init default or a checkpoint)"
            )
        if not isinstance(self.min_steps_per_epoch, int) or self.min_steps_per_epoch < 1:
            raise ConfigError(
                f"--min-steps must be a positive integer, got {self.min_steps_per_epoch!r}"
            )
        if self.decoder_channels is not None:
            set_(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if self.valid is not None:
            set_(self, "valid", tuple(str(v) for v in self.valid))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded next to the model."""
        return {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` did.

    Attributes
    ----------
    output_dir : Path or None
    best_checkpoint, last_checkpoint : Path or None (None without an output directory)
    history : tuple of dict, one per epoch (losses, IoU/Dice per class)
    lr : the peak learning rate used (None when only the finder ran)
    lr_find : LRFindResult or None
    best_score : best validation particle F1 (synthetic runs), else mean IoU of the crystal
        classes, else minus the training loss
    learner : the trained Learner
    """

    output_dir: Path | None
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    history: tuple[dict[str, Any], ...]
    lr: float | None
    lr_find: LRFindResult | None
    best_score: float | None
    learner: Learner


def settings_data(
    s: TrainSettings,
    items: Sequence[PathLike] | None = None,
    *,
    valid_fraction: float | None = None,
) -> SegmentationData:
    """The training data of ``s`` (or of ``items`` read the same way; with another
    ``valid_fraction``, the split is by that fraction instead of ``s.valid``)."""
    from crystalseg.train.data import pairs

    return pairs(
        list(s.data if items is None else items),
        codes=s.codes,
        mask_values=s.mask_values,
        instances=s.instances,
        valid_fraction=s.valid_fraction if valid_fraction is None else valid_fraction,
        valid=s.valid if valid_fraction is None else None,
        crop_size=s.crop_size,
        batch_size=s.batch_size,
        crops_per_image=s.crops_per_image,
        foreground_bias=s.foreground_bias,
        channels=s.channels,  # type: ignore[arg-type]
        frame_step=s.frame_step,
        seed=s.seed,
    )


def settings_learner(
    s: TrainSettings,
    data: SegmentationData,
    *,
    init: str | Path | None = None,
    output_dir: Path | None = None,
    progress: bool | None = None,
) -> Learner:
    """The learner of ``s`` on ``data`` (``init`` and ``progress`` default to the settings')."""
    return unet_learner(
        data,
        s.encoder,
        init=s.init if init is None else init,
        loss=s.loss,  # type: ignore[arg-type]
        decoder_channels=s.decoder_channels,
        scaling=s.scaling,  # type: ignore[arg-type]
        augment=s.augment,  # type: ignore[arg-type]
        device=s.device,
        weight_decay=s.weight_decay,
        output_dir=output_dir,
        seed=s.seed,
        progress=s.progress if progress is None else progress,
        freeze_bn=s.freeze_bn,
        min_steps_per_epoch=s.min_steps_per_epoch,
    )


def _restart_if_killed_in_first_save(s: TrainSettings) -> TrainSettings:
    """A training killed while it saved its first epoch left a model but no complete
    training state (only ``last.partial``): ``resume`` then starts it over."""
    if s.resume is None:
        return s
    try:
        find_resume_dir(s.resume)
    except CheckpointError:
        if not (Path(s.resume) / f"{LAST_DIR}.partial").exists():
            raise
        log.warning(
            "'%s' holds no complete training state: the training was stopped while it saved "
            "its first epoch; starting it over",
            s.resume,
        )
        # from where the interrupted run started (``--resume`` does not say it again)
        try:
            recorded = read_checkpoint_meta(s.resume).get("training", {}).get("settings", {})
        except CheckpointError:
            recorded = {}
        init = recorded.get("init", s.init)
        return replace(s, resume=None, overwrite=True, init=init)
    return s


def train_model(settings: TrainSettings) -> TrainResult:
    """Train a U-Net as ``crystalseg train`` does: data, learner, optional lr finder, fit.

    Raises
    ------
    StageStateError
        ``output_dir`` already holds a model and neither resume nor overwrite was asked.
    CrystalsegError
        Any bad data, settings or checkpoint.
    """
    s = _restart_if_killed_in_first_save(settings)
    out = s.output_dir
    if out is not None and s.resume is None and (out / META_FILE).exists() and not s.overwrite:
        raise StageStateError(
            f"'{out}' already holds a model; add --resume to continue "
            "its training, --overwrite to replace it, or choose another -o"
        )
    if out is not None:
        check_output_folder(out)  # a read-only or full disk fails now, not after training
    data = settings_data(s)
    log.info("%r", data)
    init: str | Path = s.init
    if s.resume is not None:
        init = find_resume_dir(s.resume)
    learner = settings_learner(s, data, init=init, output_dir=out)
    if s.resume is not None:
        # record where the interrupted run started from, not its own last checkpoint
        first = read_checkpoint_meta(init).get("training", {}).get("init")
        learner.init_info = dict(first or learner.init_info)
    learner.settings = s.to_dict()
    found = None
    lr = s.lr
    if s.find_lr:
        found = learner.lr_find()
        log.info("lr finder suggests %.2e", found.suggestion)
        if lr is not None:
            log.warning(
                "training at the given --lr %.2e, not the finder's %.2e (leave out --lr to use it)",
                lr,
                found.suggestion,
            )
        lr = lr or found.suggestion
    if s.epochs > 0:
        lr = lr or 1e-3
        if s.resume is not None:
            prev = json.loads((find_resume_dir(s.resume) / STATE_META).read_text())
            lr = s.lr or float(prev["lr_max"])
        learner.fit_one_cycle(
            s.epochs, lr, resume=s.resume, early_stop=s.early_stop, max_minutes=s.max_minutes
        )
    best = last = None
    if out is not None and s.epochs > 0:
        best = out if (out / META_FILE).exists() else None
        last = out / LAST_DIR if (out / LAST_DIR / META_FILE).exists() else None
    return TrainResult(
        output_dir=out,
        best_checkpoint=best,
        last_checkpoint=last,
        history=tuple(learner.history),
        lr=lr if s.epochs > 0 else None,
        lr_find=found,
        best_score=learner.best_score,
        learner=learner,
    )
