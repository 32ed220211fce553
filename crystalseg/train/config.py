"""The settings of training, grouped by concern: data, learner, schedule.

Each group is a frozen dataclass that checks itself when made, so a wrong value fails
before any image is read, in one line that names what is allowed:

- :class:`DataSettings`: which pairs, their classes and mask values, the validation
  split and the crops (read by :func:`~crystalseg.train.data.pairs`);
- :class:`LearnerSettings`: the network and how it learns (encoder, start weights,
  loss, augmentation, intensity scaling, batch-norm rule; read by
  :func:`~crystalseg.train.learner.unet_learner`);
- :class:`ScheduleSettings`: how long, how fast and where (epochs, learning rate,
  batch size, early stop, time budget, weight decay, seed, device).

:class:`~crystalseg.train.settings.TrainSettings` composes the three with the
run-level fields (output directory, resume, overwrite, progress, command line).
Messages name both the Python field and the ``crystalseg train`` option.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from crystalseg.classes import BOUNDARY_CODES
from crystalseg.errors import ConfigError
from crystalseg.models.checkpoint import DEFAULT_ENCODER
from crystalseg.train.augment import AUGMENT_PRESETS, AugmentPreset, AugmentSettings
from crystalseg.train.losses import LOSS_NAMES, LossName
from crystalseg.train.masks import MaskValues

PathLike = str | os.PathLike[str]
#: A training source: a folder, a run store, an image file, or an (image, mask) pair.
DataItem = Path | tuple[Path, Path]

InitName = Literal["default", "imagenet", "none"]
INIT_NAMES: tuple[str, ...] = get_args(InitName)
Scaling = Literal["dtype", "percentile"]
SCALINGS: tuple[str, ...] = get_args(Scaling)
Channels = Literal[1, 3]

#: Class names read as the background, and names of classes that are surely not it.
_BACKGROUND_NAMES = ("background", "bg", "back")
_FOREGROUND_NAMES = ("crystal", "crystals", "particle", "particles", *BOUNDARY_CODES)


def check_choice(value: Any, choices: Sequence[Any], name: str, option: str) -> None:
    """Refuse ``value`` outside ``choices`` in one line naming them all.

    Raises
    ------
    ConfigError
    """
    if value not in choices:
        raise ConfigError(
            f"{name} ({option}) must be one of {', '.join(map(str, choices))}; got {value!r}"
        )


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


def _data_items(paths: Any) -> tuple[DataItem, ...]:
    """``paths`` as a tuple of paths and (image, mask) pairs."""
    if isinstance(paths, (str, os.PathLike)):
        return (Path(paths),)
    items: list[DataItem] = []
    for p in paths:
        if isinstance(p, (tuple, list)):
            if len(p) != 2:
                raise ConfigError(f"a training pair is (image, mask); got {p!r}")
            items.append((Path(p[0]), Path(p[1])))
        else:
            items.append(Path(p))
    return tuple(items)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataSettings:
    """Which annotated frames to train on and how they are read, split and cropped.

    Attributes
    ----------
    paths : tuple
        Folders of ``X.png``/``X_mask.png`` pairs, folders with ``images/`` and
        ``masks/``, run stores with masks, folders of run stores, or (image, mask)
        pairs; a single path is taken as a tuple of one.
    codes : tuple of str
        Class names, background first (a comma-separated string is split).
    mask_values : None, sequence or mapping
        How stored mask values become classes (see :mod:`crystalseg.train.masks`);
        None: class indices as stored, or 0/255 for two classes.
    instances : bool
        Mask files hold one integer id per crystal (0 background); not with ``mask_values``.
    valid_fraction : float in [0, 1)
        Fraction held out for validation (whole runs for run stores).
    valid : tuple of str, optional
        Explicit validation samples (file names, stems or run paths); overrides the fraction.
    crop_size : int
        Side of the square training crops, a multiple of 32.
    crops_per_image : int, optional
        Crops drawn from each training image per epoch; None: about its area / crop area.
    foreground_bias : float in [0, 1]
        Probability that a crop is centred near a foreground pixel.
    channels : 1 or 3
        Channels fed to the model; colour images become grey by crystalseg's import rule.
    frame_step : int
        Use every n-th frame of run stores (consecutive frames are nearly identical).
    """

    paths: tuple[DataItem, ...]
    codes: tuple[str, ...] = ("background", "crystal")
    mask_values: MaskValues = None
    instances: bool = False
    valid_fraction: float = 0.2
    valid: tuple[str, ...] | None = None
    crop_size: int = 256
    crops_per_image: int | None = None
    foreground_bias: float = 0.25
    channels: Channels = 1
    frame_step: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "paths", _data_items(self.paths))
        if not self.paths:
            raise ConfigError("no training data given; pass a folder, pairs or run stores")
        codes = self.codes.split(",") if isinstance(self.codes, str) else self.codes
        set_(self, "codes", tuple(str(c).strip() for c in codes if str(c).strip()))
        if len(self.codes) < 2 or len(set(self.codes)) != len(self.codes):
            raise ConfigError(
                f"--codes {','.join(self.codes)} must name at least two distinct classes, "
                "background first, e.g. background,crystal"
            )
        _check_background_first(self.codes)
        if self.valid is not None:
            valid = [self.valid] if isinstance(self.valid, (str, os.PathLike)) else self.valid
            set_(self, "valid", tuple(os.fspath(v) for v in valid))
        if not _is_int(self.crop_size) or self.crop_size < 32 or self.crop_size % 32:
            raise ConfigError(
                f"crop_size (--crop-size) must be a multiple of 32, at least 32; got "
                f"{self.crop_size!r}"
            )
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(
                f"valid_fraction (--valid-fraction) must be in [0, 1), got {self.valid_fraction}"
            )
        if not 0.0 <= self.foreground_bias <= 1.0:
            raise ConfigError(
                f"foreground_bias (--foreground-bias) must be in [0, 1], got {self.foreground_bias}"
            )
        check_choice(self.channels, get_args(Channels), "channels", "--channels")
        if not _is_int(self.frame_step) or self.frame_step < 1:
            raise ConfigError(f"frame_step (--frame-step) must be >= 1, got {self.frame_step!r}")
        if self.crops_per_image is not None and (
            not _is_int(self.crops_per_image) or self.crops_per_image < 1
        ):
            raise ConfigError(
                f"crops_per_image (--crops-per-image) must be >= 1, got {self.crops_per_image!r}"
            )
        if self.instances and self.mask_values is not None:
            raise ConfigError(
                "instance masks hold crystal ids, not classes: drop mask_values (--mask-values)"
            )


@dataclass(frozen=True)
class LearnerSettings:
    """The network and how it learns; see :func:`~crystalseg.train.learner.unet_learner`.

    Attributes
    ----------
    encoder : str
        smp encoder name; the default is the architecture of the bundled model, so that
        training fine-tunes it.
    init : "default", "imagenet", "none" or a path
        Where the weights start: the bundled crystal model, local ImageNet encoder
        weights, random, a checkpoint directory (fine-tuned) or an encoder weights file.
    loss : one of ``LOSS_NAMES``
    decoder_channels : tuple of int, optional
        Decoder widths; default slim for the default encoder, smp's otherwise.
    scaling : "dtype", "percentile" or None
        Intensity rule of the model; None: the starting checkpoint's, else ``"dtype"``.
    augment : preset name, :class:`~crystalseg.train.augment.AugmentSettings` or None
    freeze_bn : bool or None
        Keep the batch-norm statistics of the starting weights; None: when fine-tuning
        a crystal model (``init`` ``"default"`` or a checkpoint).
    """

    encoder: str = DEFAULT_ENCODER
    init: InitName | Path = "default"
    loss: LossName = "dice+ce"
    decoder_channels: tuple[int, ...] | None = None
    scaling: Scaling | None = None
    augment: AugmentPreset | AugmentSettings | None = "default"
    freeze_bn: bool | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.init, os.PathLike):
            set_(self, "init", Path(self.init))
        elif self.init not in INIT_NAMES:
            if not isinstance(self.init, str) or not Path(self.init).exists():
                raise ConfigError(
                    f"init (--init) must be one of {', '.join(INIT_NAMES)}, a checkpoint "
                    f"folder or an encoder weights file; got {self.init!r}, which is none"
                )
            set_(self, "init", Path(self.init))
        check_choice(self.loss, LOSS_NAMES, "loss", "--loss")
        if self.scaling is not None:
            check_choice(self.scaling, SCALINGS, "scaling", "--scaling")
        if self.augment is not None and not isinstance(self.augment, AugmentSettings):
            check_choice(self.augment, AUGMENT_PRESETS, "augment", "--augment")
        if self.freeze_bn not in (None, True, False):
            raise ConfigError(
                f"freeze_bn must be True, False or None (auto), got {self.freeze_bn!r}"
            )
        if self.freeze_bn and self.init == "none":
            raise ConfigError(
                "freeze_bn (--freeze-bn) keeps the batch-norm statistics of the starting "
                "weights, but they are random here (init 'none'); drop it or fine-tune a "
                "model (init 'default' or a checkpoint)"
            )
        if self.decoder_channels is not None:
            try:
                widths = tuple(int(c) for c in self.decoder_channels)
            except (TypeError, ValueError):
                widths = ()
            if not widths or min(widths) < 1:
                raise ConfigError(
                    f"decoder_channels must be positive widths, e.g. (128, 64, 32, 16, 8); "
                    f"got {self.decoder_channels!r}"
                )
            set_(self, "decoder_channels", widths)


#: Least optimizer steps in one epoch, whatever the annotated area: half of one
#: annotated 1024² frame is 8 crops of 256², a single step at batch 8, and 3 epochs of
#: that (3 steps) learned nothing of a new look (issue 23: F1 0.00; 40 steps: 0.11).
MIN_STEPS_PER_EPOCH = 32


@dataclass(frozen=True)
class ScheduleSettings:
    """How long, how fast and where training runs.

    Attributes
    ----------
    epochs : int
        Length of the one-cycle schedule (0 with ``find_lr``: only find the lr).
    lr : float, optional
        Peak learning rate; None: 1e-3, or the finder's suggestion with ``find_lr``.
    find_lr : bool
        Run the learning-rate finder first.
    batch_size : int, optional
        Crops per batch; None: the data's, else 8 on a CPU and 32 on a GPU.
    early_stop : int, optional
        Stop after this many epochs without a better validation score.
    max_minutes : float, optional
        Stop after the first epoch that ends past this wall-clock budget.
    weight_decay : float
        AdamW weight decay.
    seed : int
        Fixes the split, the initialisation, the crops and the augmentation.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``, ``mps``; None: CUDA when present, else the CPU.
    amp : bool
        Mixed precision on CUDA (bf16 where supported, else fp16); ignored on a CPU.
    min_steps_per_epoch : int
        Least optimizer steps in an epoch: crops are drawn in proportion to the
        annotated area, and one or two annotated frames would otherwise give a step or
        two (:data:`MIN_STEPS_PER_EPOCH`, issue 23).
    """

    epochs: int = 3
    lr: float | None = None
    find_lr: bool = False
    batch_size: int | None = None
    early_stop: int | None = None
    max_minutes: float | None = None
    weight_decay: float = 1e-2
    seed: int = 0
    device: str | None = None
    amp: bool = True
    min_steps_per_epoch: int = MIN_STEPS_PER_EPOCH

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or self.epochs < 0:
            raise ConfigError(f"epochs (--epochs) must be an integer >= 0, got {self.epochs!r}")
        if self.epochs == 0 and not self.find_lr:
            raise ConfigError("epochs 0 (--epochs 0) trains nothing; give epochs or --find-lr")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr (--lr) must be a positive number, got {self.lr}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ConfigError(f"batch_size (--batch-size) must be >= 1, got {self.batch_size!r}")
        if self.early_stop is not None and (not _is_int(self.early_stop) or self.early_stop < 1):
            raise ConfigError(f"early_stop (--early-stop) must be >= 1, got {self.early_stop!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes (--max-minutes) must be > 0, got {self.max_minutes}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed (--seed) must be an integer >= 0, got {self.seed!r}")
        if not _is_int(self.min_steps_per_epoch) or self.min_steps_per_epoch < 1:
            raise ConfigError(
                "min_steps_per_epoch (--min-steps) must be an integer >= 1, got "
                f"{self.min_steps_per_epoch!r}"
            )


def mask_values_from_json(values: Any) -> MaskValues:
    """Mask values as recorded in JSON (mapping keys are text there) back to a rule."""
    if isinstance(values, Mapping):
        return {int(k): v for k, v in values.items()}
    if isinstance(values, list):
        return tuple(int(v) for v in values)
    return values
