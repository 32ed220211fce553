"""The library entry point of ``crystalseg train``: validated settings in, a trained model out.

The CLI parses its options into a :class:`TrainSettings` (the groups of
:mod:`crystalseg.train.config`, built from flat options by
:meth:`TrainSettings.from_flat`) and calls :func:`train_model`;
notebooks can do the same, or use :func:`~crystalseg.train.learner.unet_learner`
directly for the fastai-like workflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crystalseg.errors import CheckpointError, ConfigError, StageStateError
from crystalseg.models.checkpoint import META_FILE, jsonable, read_checkpoint_meta
from crystalseg.store import check_output_folder
from crystalseg.train.augment import AugmentSettings
from crystalseg.train.config import (
    INIT_NAMES,
    DataSettings,
    LearnerSettings,
    ScheduleSettings,
    mask_values_from_json,
)
from crystalseg.train.data import PathLike, SegmentationData, pairs
from crystalseg.train.learner import (
    LAST_DIR,
    STATE_META,
    Learner,
    LRFindResult,
    find_resume_dir,
    unet_learner,
)

log = logging.getLogger(__name__)


#: The fields of a flat settings dict (``crystalseg train``'s options, and what
#: ``model.json`` records under ``training.settings``) and the group each belongs to.
FLAT_FIELDS: dict[str, str] = {
    "data": "data",
    "codes": "data",
    "output_dir": "",
    "encoder": "learner",
    "init": "learner",
    "epochs": "schedule",
    "lr": "schedule",
    "loss": "learner",
    "crop_size": "data",
    "batch_size": "schedule",
    "valid_fraction": "data",
    "valid": "data",
    "mask_values": "data",
    "instances": "data",
    "crops_per_image": "data",
    "foreground_bias": "data",
    "channels": "data",
    "frame_step": "data",
    "decoder_channels": "learner",
    "scaling": "learner",
    "augment": "learner",
    "find_lr": "schedule",
    "resume": "",
    "early_stop": "schedule",
    "max_minutes": "schedule",
    "overwrite": "",
    "device": "schedule",
    "seed": "schedule",
    "weight_decay": "schedule",
    "progress": "",
    "freeze_bn": "learner",
    "command": "",
    "amp": "schedule",
    "min_steps_per_epoch": "schedule",
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``crystalseg train`` needs, grouped; validated on construction.

    Build it from the groups, or from flat keywords with :meth:`from_flat`::

        TrainSettings(DataSettings(("frames/",)), schedule=ScheduleSettings(epochs=5))
        TrainSettings.from_flat(data=("frames/",), epochs=5, init="none")

    Attributes
    ----------
    data : DataSettings
        Which pairs, their classes, the validation split and the crops.
    learner : LearnerSettings
        Encoder, start weights, loss, augmentation, scaling, batch-norm rule.
    schedule : ScheduleSettings
        Epochs, learning rate, batch size, early stop, time budget, seed, device.
    output_dir : Path or None
        Where best (``DIR``) and last (``DIR/last``) checkpoints go; None: nowhere
        (with ``resume``: the resumed folder).
    resume : Path or None
        Continue the interrupted training in this output directory.
    overwrite : bool
        Replace a checkpoint already in ``output_dir``.
    progress : bool
        Show progress bars.
    command : str or None
        The command line that asked for this training, recorded in model.json.
    """

    data: DataSettings
    learner: LearnerSettings = field(default_factory=LearnerSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    output_dir: Path | None = None
    resume: Path | None = None
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        for name, kind in (
            ("data", DataSettings),
            ("learner", LearnerSettings),
            ("schedule", ScheduleSettings),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"TrainSettings.{name} must be a {kind.__name__}, got "
                    f"{type(getattr(self, name)).__name__}; flat keywords go through "
                    "TrainSettings.from_flat"
                )
        for name in ("output_dir", "resume"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.resume is not None and self.output_dir is None:
            object.__setattr__(self, "output_dir", self.resume)

    @classmethod
    def from_flat(cls, **values: Any) -> TrainSettings:
        """Settings from flat keywords, the names of ``crystalseg train``'s options
        (``data`` the paths, ``codes``, ``epochs``, ``init``...; see :data:`FLAT_FIELDS`).

        Raises
        ------
        ConfigError
            An unknown name (the known ones listed) or a bad value.
        """
        unknown = sorted(set(values) - set(FLAT_FIELDS))
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(FLAT_FIELDS)}"
            )
        groups: dict[str, dict[str, Any]] = {"data": {}, "learner": {}, "schedule": {}, "": {}}
        for name, value in values.items():
            groups[FLAT_FIELDS[name]]["paths" if name == "data" else name] = value
        if "paths" not in groups["data"]:
            raise ConfigError("no training data given; pass a folder, pairs or run stores")
        return cls(
            DataSettings(**groups["data"]),
            LearnerSettings(**groups["learner"]),
            ScheduleSettings(**groups["schedule"]),
            **groups[""],
        )

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> TrainSettings:
        """The settings a ``model.json`` recorded (``training.settings``, flat as
        :meth:`to_dict` writes it, by this and earlier versions): names this version
        does not know are left out, JSON forms read back (mask value keys, an
        ``init`` path that need not exist here).

        Raises
        ------
        ConfigError
            A recorded value this version refuses.
        """
        values = {k: v for k, v in recorded.items() if k in FLAT_FIELDS}
        dropped = sorted(set(recorded) - set(values))
        if dropped:
            log.info("recorded training settings not used here: %s", ", ".join(dropped))
        if values.get("mask_values") is not None:
            values["mask_values"] = mask_values_from_json(values["mask_values"])
        init = values.get("init")
        if isinstance(init, str) and init not in INIT_NAMES:
            values["init"] = Path(init)
        if isinstance(values.get("augment"), Mapping):
            values["augment"] = AugmentSettings(**values["augment"])
        return cls.from_flat(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded next to the model: one flat mapping, the form
        earlier versions wrote and read (``crystalseg train --resume`` reads it)."""
        out: dict[str, Any] = {}
        for name, group in FLAT_FIELDS.items():
            owner = getattr(self, group) if group else self
            value = getattr(owner, "paths" if name == "data" else name)
            out[name] = value.to_dict() if isinstance(value, AugmentSettings) else jsonable(value)
        return out


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
    ``valid_fraction``, the split is by that fraction instead of ``s.data.valid``)."""
    data = s.data if items is None else replace(s.data, paths=tuple(map(Path, items)))
    if valid_fraction is not None:
        data = replace(data, valid_fraction=valid_fraction, valid=None)
    return pairs(data, batch_size=s.schedule.batch_size, seed=s.schedule.seed)


def settings_learner(
    s: TrainSettings,
    data: SegmentationData,
    *,
    init: str | Path | None = None,
    output_dir: Path | None = None,
    progress: bool | None = None,
) -> Learner:
    """The learner of ``s`` on ``data`` (``init`` and ``progress`` default to the settings')."""
    learner = s.learner if init is None else replace(s.learner, init=init)  # type: ignore[arg-type]
    return unet_learner(
        data,
        learner,
        s.schedule,
        output_dir=output_dir,
        progress=s.progress if progress is None else progress,
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
        init = recorded.get("init", s.learner.init)
        if isinstance(init, str) and init not in INIT_NAMES:
            init = Path(init)
        learner = replace(s.learner, init=init)
        return replace(s, resume=None, overwrite=True, learner=learner)
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
    init: str | Path = s.learner.init
    if s.resume is not None:
        init = find_resume_dir(s.resume)
    learner = settings_learner(s, data, init=init, output_dir=out)
    if s.resume is not None:
        # record where the interrupted run started from, not its own last checkpoint
        first = read_checkpoint_meta(init).get("training", {}).get("init")
        learner.init_info = dict(first or learner.init_info)
    learner.settings = s.to_dict()
    found = None
    sched = s.schedule
    lr = sched.lr
    if sched.find_lr:
        found = learner.lr_find()
        log.info("lr finder suggests %.2e", found.suggestion)
        if lr is not None:
            log.warning(
                "training at the given --lr %.2e, not the finder's %.2e (leave out --lr to use it)",
                lr,
                found.suggestion,
            )
        lr = lr or found.suggestion
    if sched.epochs > 0:
        lr = lr or 1e-3
        if s.resume is not None:
            prev = json.loads((find_resume_dir(s.resume) / STATE_META).read_text())
            lr = sched.lr or float(prev["lr_max"])
        learner.fit_one_cycle(
            sched.epochs,
            lr,
            resume=s.resume,
            early_stop=sched.early_stop,
            max_minutes=sched.max_minutes,
        )
    best = last = None
    if out is not None and sched.epochs > 0:
        best = out if (out / META_FILE).exists() else None
        last = out / LAST_DIR if (out / LAST_DIR / META_FILE).exists() else None
    return TrainResult(
        output_dir=out,
        best_checkpoint=best,
        last_checkpoint=last,
        history=tuple(learner.history),
        lr=lr if sched.epochs > 0 else None,
        lr_find=found,
        best_score=learner.best_score,
        learner=learner,
    )
