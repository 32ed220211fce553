"""The U-Net learner: one-cycle training, validation metrics, checkpoints, lr finder.

The notebook workflow::

    data = pairs("frames/", codes=["background", "crystal"])
    learner = unet_learner(data)          # starts from the bundled crystal model
    learner.fit_one_cycle(3, 1e-3)
    learner.save("model/")
    learner.predict(image)                # (H, W) class map
    learner.show_results()                # figure: image / truth / prediction

:func:`train_model` runs the same steps from a :class:`TrainSettings`, for the CLI.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from crystalseg.classes import boundary_class
from crystalseg.errors import CheckpointError, ConfigError
from crystalseg.measure.scoring import pool_particle_scores, score_frame, worse_sizes
from crystalseg.models.checkpoint import (
    DEFAULT_ENCODER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    META_FILE,
    ModelSpec,
    adapt_first_conv,
    build_model,
    default_checkpoint_path,
    default_decoder_channels,
    find_imagenet_weights,
    jsonable,
    load_checkpoint,
    load_encoder_weights,
    normalise,
    read_checkpoint_meta,
    save_checkpoint,
    update_checkpoint_meta,
)
from crystalseg.prefetch import prefetch
from crystalseg.segment.engine import EngineSettings, Segmenter, available_cores
from crystalseg.train.augment import AugmentSettings, make_augmenter
from crystalseg.train.calibrate import Calibration, calibrate_frames
from crystalseg.train.config import LearnerSettings, ScheduleSettings
from crystalseg.train.data import SegmentationData, read_image, to_channels
from crystalseg.train.losses import make_loss

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

STATE_TENSORS = "training_state.safetensors"
STATE_META = "training_state.json"
LAST_DIR = "last"
_PARTIAL = ".partial"  # last/ being written
_RETIRED = ".old"  # the previous last/ during the swap
STATE_FORMAT_VERSION = 1


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``name`` as a torch device; None: :func:`default_device`.

    Raises
    ------
    ConfigError
        CUDA asked for where there is none.
    """
    dev = torch.device(name) if name is not None else default_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    return dev


def default_batch_size(device: torch.device) -> int:
    """8 crops fit a 2-core laptop; a GPU takes 32 of 256x256."""
    return 32 if device.type == "cuda" else 8


#: Fewer optimizer steps than this in a whole schedule are warned about as too short
#: to learn a new look from.
SHORT_SCHEDULE_STEPS = 60


# --------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LRFindResult:
    """Outcome of :meth:`Learner.lr_find`.

    Attributes
    ----------
    lrs : tuple of float, the learning rate of each step (exponentially increasing)
    losses : tuple of float, the smoothed training loss at each step
    suggestion : float, learning rate at the steepest descent of the loss
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float

    def plot(self) -> Figure:
        """Loss against learning rate (log axis) with the suggestion marked."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggestion, color="tab:red", ls="--", label=f"{self.suggestion:.1e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        ax.legend()
        fig.tight_layout()
        return fig


def confusion_metrics(confusion: np.ndarray, codes: Sequence[str]) -> dict[str, Any]:
    """IoU and Dice per class from a (true, predicted) pixel confusion matrix (K, K).

    Classes absent from both truth and prediction get None. ``mean_iou`` is the mean IoU
    over classes 1..K-1 (all but background; the score that picks the best epoch);
    ``foreground_iou`` is the IoU of "any crystal class" against the background, which is
    what sizes and counts depend on (a boundary pixel called crystal is still foreground).
    """
    cm = confusion.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    iou: dict[str, float | None] = {}
    dice: dict[str, float | None] = {}
    for k, code in enumerate(codes):
        union = tp[k] + fp[k] + fn[k]
        iou[code] = None if union == 0 else float(tp[k] / union)
        dice[code] = None if union == 0 else float(2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]))
    fg = [v for c in codes[1:] if (v := iou[c]) is not None]
    fg_tp = cm[1:, 1:].sum()
    fg_union = fg_tp + cm[0, 1:].sum() + cm[1:, 0].sum()
    return {
        "iou": iou,
        "dice": dice,
        "mean_iou": float(np.mean(fg)) if fg else None,
        "foreground_iou": float(fg_tp / fg_union) if fg_union else None,
        "pixel_accuracy": float(tp.sum() / max(1.0, cm.sum())),
    }


# --------------------------------------------------------------------------------------
# Saving optimizer and scheduler state without pickle


def _save_training_state(
    out: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    info: Mapping[str, Any],
) -> None:
    from safetensors.torch import save

    from crystalseg.models.checkpoint import atomic_write_bytes

    osd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in osd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {
        "format_version": STATE_FORMAT_VERSION,
        **jsonable(dict(info)),
        "optimizer": {"param_groups": jsonable(osd["param_groups"]), "scalars": scalars},
        "scheduler": jsonable(scheduler.state_dict()),
        "scaler": jsonable(scaler.state_dict()) if scaler is not None else None,
    }
    atomic_write_bytes(out / STATE_TENSORS, save(tensors))
    atomic_write_bytes(out / STATE_META, (json.dumps(meta, indent=1) + "\n").encode())


def _load_training_state(state_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimizer state dict, the rest of the JSON) from a ``last`` checkpoint directory."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((state_dir / STATE_META).read_text())
        tensors = load_file(str(state_dir / STATE_TENSORS), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the training state in '{state_dir}' ({exc}); start a new training "
            "instead of --resume"
        ) from exc
    if meta.get("format_version", 0) > STATE_FORMAT_VERSION:
        raise CheckpointError(
            f"training state in '{state_dir}' is from a newer crystalseg; upgrade to resume"
        )
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, st in meta["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}, meta


def find_resume_dir(path: PathLike) -> Path:
    """The directory holding the training state: ``path`` itself or ``path/last``.

    Raises
    ------
    CheckpointError
        Neither holds a training state.
    """
    p = Path(path)
    # a kill during the swap of last/ leaves the newest complete state beside it
    candidates = (p, p / LAST_DIR, p / f"{LAST_DIR}{_PARTIAL}", p / f"{LAST_DIR}{_RETIRED}")
    for cand in candidates:
        if (cand / STATE_META).is_file() and (cand / META_FILE).is_file():
            return cand
    raise CheckpointError(
        f"'{p}' holds no training state to resume ({LAST_DIR}/{STATE_META}); pass the output "
        "directory of an interrupted 'crystalseg train', or start without --resume"
    )


# --------------------------------------------------------------------------------------
# The learner


class Learner:
    """A U-Net, its data and its training state. Build with :func:`unet_learner`.

    Attributes
    ----------
    data : SegmentationData
    model : nn.Module
    spec : ModelSpec
    device : torch.device
    history : list of dict, one per finished epoch (losses, IoU/Dice per class, lr, time)
    lrs : list of float, the learning rate of every optimizer step taken
    output_dir : Path or None; best checkpoint there, last one (with state) in ``last/``

    Parameters
    ----------
    settings : LearnerSettings, optional
        Its ``loss``, ``augment`` and ``freeze_bn`` (None: False) are used here; the
        encoder and start weights are already in ``model`` (see :func:`unet_learner`).
    schedule : ScheduleSettings, optional
        Its ``device``, ``batch_size`` (None: the data's, else by device),
        ``weight_decay``, ``seed`` and ``amp``; default: the defaults with the data's seed.
    """

    def __init__(
        self,
        data: SegmentationData,
        model: nn.Module,
        spec: ModelSpec,
        settings: LearnerSettings | None = None,
        schedule: ScheduleSettings | None = None,
        *,
        output_dir: PathLike | None = None,
        progress: bool = True,
        init_info: Mapping[str, Any] | None = None,
    ) -> None:
        settings = settings or LearnerSettings()
        schedule = schedule or ScheduleSettings(seed=data.seed)
        device = resolve_device(schedule.device)
        self.data = data
        self.spec = spec
        self.device = device
        # channels-last: 3-5x faster training steps on the CPU (measured), faster on GPUs
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.loss_name = settings.loss
        self.loss_fn = make_loss(settings.loss).to(device)
        augment = settings.augment
        self.augment_settings = (
            AugmentSettings.preset(augment) if isinstance(augment, str) else augment
        )
        self.augmenter = make_augmenter(self.augment_settings)
        if self.augmenter is not None:
            self.augmenter = self.augmenter.to(device)
        self.batch_size = int(schedule.batch_size or data.batch_size or default_batch_size(device))
        self.weight_decay = float(schedule.weight_decay)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.seed = int(schedule.seed)
        #: least optimizer steps in an epoch (:data:`MIN_STEPS_PER_EPOCH`)
        self.min_steps_per_epoch = int(schedule.min_steps_per_epoch)
        self.amp = bool(schedule.amp) and device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.progress = progress
        self.init_info = dict(init_info or {})
        self.freeze_bn = bool(settings.freeze_bn)
        self.history: list[dict[str, Any]] = []
        self.lrs: list[float] = []
        #: extra provenance written into model.json under ``training["settings"]``
        self.settings: dict[str, Any] = {}
        #: the probability calibration of :meth:`calibrate` (recorded by :meth:`save`)
        self.calibration: Calibration | None = None
        #: validation of the starting weights (fine-tuning with particle truth), "epoch 0"
        self.start_validation: dict[str, Any] | None = None
        #: readings the best epoch measures worse than the starting model (sentences)
        self.worse_than_start: list[str] = []
        self.best_score: float | None = None
        #: mean validation IoU of the best epoch, which breaks ties of its particle F1
        self.best_tiebreak: float | None = None
        self._schedule: dict[str, Any] = {}
        self._stale = 0
        #: how :meth:`segmenter` runs the network; None: the engine's defaults on the
        #: learner's device, backend torch, the current torch threads
        self.engine_settings: EngineSettings | None = None
        self._engine: Segmenter | None = None

    # ---- helpers

    def _train_mode(self) -> None:
        """Training mode; with ``freeze_bn`` the batch-norm layers normalise with the
        statistics they start with and keep them (their scale and shift still learn)."""
        self.model.train()
        if self.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _optimizer(self, lr: float) -> torch.optim.AdamW:
        return torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.weight_decay)

    def _scaler(self) -> torch.amp.GradScaler | None:
        if self.amp and self.amp_dtype == torch.float16:
            return torch.amp.GradScaler("cuda")
        return None

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _batches(self, rng: np.random.Generator) -> Any:
        batches = self.data.train_batches(
            self.spec, rng, batch_size=self.batch_size, min_crops=self._min_crops()
        )
        if self.device.type == "cuda":
            # crops are cut on the CPU while the GPU trains on the previous batch
            batches = prefetch(((x.pin_memory(), y.pin_memory()) for x, y in batches), depth=3)
        for x, y in batches:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augmenter is not None:
                x, y = self.augmenter(x, y)
            x = normalise(x, self.spec).contiguous(memory_format=torch.channels_last)
            yield x, y

    def _step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
    ) -> float:
        with self._autocast():
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    def _min_crops(self) -> int:
        return self.min_steps_per_epoch * self.batch_size

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: the crops of the annotated area
        (:meth:`~crystalseg.train.data.SegmentationData.crop_counts`) in batches, at
        least :attr:`min_steps_per_epoch`."""
        n = self.data.epoch_crops(self._min_crops())
        return max(1, math.ceil(n / self.batch_size))

    def describe_schedule(self, epochs: int) -> tuple[str, bool]:
        """The line that states what a schedule of ``epochs`` will do, and whether it is
        too short to learn from (fewer than :data:`SHORT_SCHEDULE_STEPS` steps).

        It names the optimizer steps, the annotated area (px, and µm² where the frames
        record a pixel size), how many crops the area gave and whether the floor raised
        them, and how training is validated.
        """
        steps = self.steps_per_epoch()
        area = self.data.annotated_area()
        pixel = self.data.pixel_size_um()
        natural = int(self.data.crop_counts().sum())
        n_train = len(self.data.train_items)
        text = (
            f"{epochs} epochs x {steps} optimizer steps of {self.batch_size} crops "
            f"({self.data.crop_size} px) = {epochs * steps} steps, on {n_train} annotated "
            f"frame{'s' if n_train != 1 else ''} of {area:,} px"
        )
        if pixel is not None:
            text += f" ({area * pixel**2:,.0f} µm²)"
        if natural < self._min_crops():
            text += (
                f"; the area gives {natural} crops an epoch, raised to the floor of "
                f"{self.min_steps_per_epoch} steps"
            )
        valid = self.data.valid_items
        if not valid:
            text += "; no validation (the best epoch is the one of least training loss)"
        elif any(item.part is not None for item in valid):
            text += f"; validated on a held-out band of the same frame ({valid[0].name})"
        else:
            text += f"; validated on {len(valid)} held-out frame{'s' if len(valid) != 1 else ''}"
        return text, epochs * steps < SHORT_SCHEDULE_STEPS

    def _epoch_seed(self, epoch: int) -> None:
        # crops and augmentations of an epoch depend on (seed, epoch) only, so a resumed run
        # sees exactly the batches the uninterrupted run would have seen
        torch.manual_seed(self.seed * 1_000_003 + epoch)

    # ---- training

    def fit_one_cycle(
        self,
        epochs: int,
        lr_max: float = 1e-3,
        *,
        pct_start: float = 0.25,
        resume: PathLike | None = None,
        early_stop: int | None = None,
        max_minutes: float | None = None,
        on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train for ``epochs`` with AdamW and a one-cycle learning-rate schedule.

        The learning rate warms up from ``lr_max/25`` to ``lr_max`` over the first
        ``pct_start`` of the steps and anneals (cosine) to ``lr_max/25e4``. After each epoch
        the whole validation images are segmented and IoU/Dice per class logged; with an
        ``output_dir`` the best epoch is saved there and the last one, with optimizer and
        schedule, in ``output_dir/last``. Best means the highest particle score (matched F1
        - |count error| - |D50 error|, :func:`epoch_score`) where the validation frames
        have true instances (synthetic runs, instance masks), else the highest mean IoU
        of the crystal classes, else (no validation) the lowest training loss.

        Parameters
        ----------
        epochs : number of epochs of the whole schedule
        lr_max : peak learning rate
        pct_start : fraction of the steps spent warming up
        resume : output directory (or its ``last/``) of an interrupted run with the same
            ``epochs`` and ``lr_max``: training continues the same schedule from the epoch
            after the last saved one
        early_stop : stop after this many epochs without a better validation score
        max_minutes : stop after the first epoch that ends this many minutes after the
            start (a wall-clock budget, e.g. a lent GPU; the schedule is not shortened,
            so choose ``epochs`` to fit it and keep this as the safety net)
        on_epoch_end : called with each epoch's record; returning True stops training

        Returns
        -------
        list of dict
            :attr:`history`, one record per epoch.

        Raises
        ------
        ConfigError
            Bad arguments, or a resume whose schedule differs.
        """
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {epochs}")
        if not (math.isfinite(lr_max) and lr_max > 0):
            raise ConfigError(f"lr_max must be a positive number, got {lr_max}")
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        if early_stop is not None and early_stop < 1:
            raise ConfigError(f"early_stop must be at least 1 epoch, got {early_stop}")
        if max_minutes is not None and not max_minutes > 0:
            raise ConfigError(f"max_minutes must be positive, got {max_minutes}")
        started = time.perf_counter()
        self.calibration = None  # fitted again for the weights this training ends with
        steps = self.steps_per_epoch()
        total = max(2, epochs * steps)
        # very short schedules: keep at least one step in each phase (torch needs it)
        warmup = min(max(pct_start, 1.5 / total), (total - 0.5) / total)
        optimizer = self._optimizer(lr_max / 25)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr_max,
            total_steps=total,
            pct_start=warmup,
            div_factor=25.0,
            final_div_factor=1e4,
        )
        scaler = self._scaler()
        self._schedule = {
            "epochs": epochs,
            "lr_max": lr_max,
            "pct_start": pct_start,
            "steps_per_epoch": steps,
            "batch_size": self.batch_size,
        }
        start = 0
        #: epochs since the best one, saved with the state: early stopping counts on
        self._stale = 0
        if resume is not None:
            start = self._resume(Path(resume), optimizer, scheduler, scaler)
            if start >= epochs:
                log.info("training in '%s' already finished all %d epochs", resume, epochs)
                return self.history
            if early_stop is not None and self._stale >= early_stop:
                log.info("training in '%s' already stopped early", resume)
                return self.history
        schedule, short = self.describe_schedule(epochs)
        self._schedule["plan"] = schedule
        log.info("training: %s", schedule)
        if short:
            log.warning(
                "this schedule is too short to learn a new look: %s. Give more epochs "
                "(at least %d steps in all) or annotate more frames",
                schedule,
                SHORT_SCHEDULE_STEPS,
            )
        t_read = time.perf_counter()
        if n_read := self.data.preload(self.spec):
            log.info("read %d frames ahead in %.1f s", n_read, time.perf_counter() - t_read)
        if start == 0 and self.init_info.get("kind") in ("default", "checkpoint"):
            self._validate_start()
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            self._epoch_seed(epoch)
            rng = np.random.default_rng([self.seed, epoch])
            self._train_mode()
            losses = []
            bar = _progress(steps, f"epoch {epoch + 1}/{epochs}", self.progress)
            try:
                for x, y in self._batches(rng):
                    self.lrs.append(float(scheduler.get_last_lr()[0]))
                    loss = self._step(x, y, optimizer, scaler)
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"training loss became {loss} at epoch {epoch + 1}; lower the "
                            "learning rate (try learner.lr_find())"
                        )
                    scheduler.step()
                    losses.append(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            finally:
                bar.close()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "lr_max": lr_max,
            }
            record.update(self.validate())
            record["seconds"] = round(time.perf_counter() - t0, 2)
            self.history.append(record)
            score, _ = epoch_score(record)
            tiebreak = record.get("mean_iou")
            improved = (
                self.best_score is None
                or score > self.best_score
                or (
                    score == self.best_score
                    and tiebreak is not None
                    and (self.best_tiebreak is None or tiebreak > self.best_tiebreak)
                )
            )
            if improved:
                self.best_score, self.best_tiebreak = score, tiebreak
                self._stale = 0
            else:
                self._stale += 1
            _say(format_epoch(record, epochs), self.progress)
            if self.output_dir is not None:
                if improved:
                    self.save(self.output_dir)
                self._save_last(epoch + 1, optimizer, scheduler, scaler)
            if on_epoch_end is not None and on_epoch_end(record):
                log.info("stopped after epoch %d on request", epoch + 1)
                break
            if early_stop is not None and self._stale >= early_stop:
                log.info("early stop: no better validation score for %d epochs", self._stale)
                break
            if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
                log.info(
                    "stopped after epoch %d: the %g-minute limit is spent", epoch + 1, max_minutes
                )
                break
        self._finish()
        return self.history

    def _validate_start(self) -> None:
        """Validate the starting weights (fine-tuning) where the validation frames hold
        true instances, so that the end of training can say whether the sizes got worse
        than those of the model it started from."""
        if not self.data.valid_items:
            return
        record = {"epoch": 0, **self.validate()}
        if "particle_score" not in record:
            return
        self.start_validation = record
        _say("starting model, " + format_epoch(record), self.progress)

    def best_record(self) -> dict[str, Any] | None:
        """The history record of the best epoch, ranked as :meth:`fit_one_cycle` ranks
        them (the first of equals); None before any epoch."""
        if not self.history:
            return None

        def rank(record: dict[str, Any]) -> tuple[float, float]:
            tiebreak = record.get("mean_iou")
            return epoch_score(record)[0], -math.inf if tiebreak is None else tiebreak

        return max(self.history, key=rank)

    def _finish(self) -> None:
        """After the last epoch: compare the best epoch with the starting model, then
        calibrate the probabilities of the best weights on the validation frames and
        record both in the best checkpoint."""
        best = self.best_record()
        if best is not None and self.start_validation is not None:
            self.worse_than_start = compare_with_start(best, self.start_validation)
            for sentence in self.worse_than_start:
                log.warning("%s", sentence)
        if not self.data.valid_items:
            log.info("no validation frames: the probabilities are not calibrated (T = 1)")
            return
        saved = self.output_dir is not None and (self.output_dir / META_FILE).is_file()
        engine: Any = None
        if saved:
            assert self.output_dir is not None
            settings = EngineSettings(
                device=str(self.device), backend="torch", threads=torch.get_num_threads()
            )
            engine = Segmenter.from_checkpoint(self.output_dir, settings=settings)
        self.calibration = self.calibrate(engine)
        log.info("calibrated the probabilities: %s", self.calibration.describe())
        if saved:
            assert self.output_dir is not None
            update_checkpoint_meta(
                self.output_dir,
                {
                    "calibration": self.calibration.to_dict(),
                    "start_comparison": self.start_comparison(),
                },
            )

    def start_comparison(self) -> dict[str, Any] | None:
        """The starting model's validation beside the best epoch's, and the readings
        that got worse (None when the start was not validated)."""
        if self.start_validation is None:
            return None
        best = self.best_record() or {}
        keys = ("foreground_iou", "instance_f1", "count_error", "d50_error", "particle_score")
        return {
            "start": {k: self.start_validation.get(k) for k in keys},
            "best": {k: best.get(k) for k in keys},
            "best_epoch": best.get("epoch"),
            "worse": list(self.worse_than_start),
        }

    @torch.no_grad()
    def calibrate(self, engine: Any = None) -> Calibration:
        """Fit the temperature of the probabilities on the validation frames
        (:func:`~crystalseg.train.calibrate.calibrate_frames`).

        Parameters
        ----------
        engine : Segmenter, optional
            Whose network to calibrate (the best checkpoint's); default the learner's
            current weights through :meth:`segmenter`.

        Raises
        ------
        ConfigError
            No validation frames.
        """
        engine = engine or self.segmenter()
        frames = (self.data.load(item) for item in self.data.valid_items)
        return calibrate_frames(engine, frames, seed=self.seed)

    def _save_last(
        self,
        epochs_done: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        assert self.output_dir is not None
        # Weights and training state are written together beside ``last/`` and swapped in
        # whole: a kill between the two files must not pair one epoch's weights with
        # another epoch's state (measured: 2 of 8 random kills did, before).
        last = self.output_dir / LAST_DIR
        partial = self.output_dir / f"{LAST_DIR}{_PARTIAL}"
        if partial.exists():
            shutil.rmtree(partial)
        self.save(partial)
        info = {
            "epochs_done": epochs_done,
            **self._schedule,
            "history": self.history,
            "lrs": self.lrs,
            "best_score": self.best_score,
            "best_tiebreak": self.best_tiebreak,
            "stale": self._stale,
            "seed": self.seed,
        }
        _save_training_state(partial, optimizer, scheduler, scaler, info)
        retired = self.output_dir / f"{LAST_DIR}{_RETIRED}"
        if last.exists():
            if retired.exists():
                shutil.rmtree(retired)
            os.replace(last, retired)
        os.replace(partial, last)
        if retired.exists():
            shutil.rmtree(retired)

    def _resume(
        self,
        path: Path,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
    ) -> int:
        state_dir = find_resume_dir(path)
        model, spec, _ = load_checkpoint(state_dir)
        if spec != self.spec:
            raise ConfigError(
                f"the checkpoint in '{state_dir}' is a {spec.encoder} U-Net for codes "
                f"{list(spec.codes)}; this learner is {self.spec.encoder} for "
                f"{list(self.spec.codes)}. Resume with the same settings"
            )
        opt_state, meta = _load_training_state(state_dir)
        recorded = read_checkpoint_meta(state_dir)
        trained_on = recorded.get("data_fingerprint")
        if trained_on != self.data.fingerprint:
            log.warning(
                "the interrupted run in '%s' was trained on other data (fingerprint %s, now "
                "%s); resuming anyway",
                state_dir,
                trained_on,
                self.data.fingerprint,
            )
        for key in ("epochs", "lr_max", "steps_per_epoch", "batch_size", "pct_start"):
            if meta.get(key) != self._schedule[key]:
                raise ConfigError(
                    f"cannot resume: the interrupted run had {key}={meta.get(key)}, this one "
                    f"{self._schedule[key]}; resume with the same epochs, lr, batch size and data"
                )
        # the batch-norm rule goes on as it was: a learner built on last/ would freeze
        # the statistics by default (it fine-tunes a checkpoint), which a run from random
        # weights never did (measured: resumed weights 0.0023 from the uninterrupted run)
        recorded_bn = (recorded.get("training") or {}).get("freeze_bn")
        if recorded_bn is not None and bool(recorded_bn) != self.freeze_bn:
            log.info(
                "resuming with freeze_bn=%s, as the interrupted run trained", bool(recorded_bn)
            )
            self.freeze_bn = bool(recorded_bn)
        self.model.load_state_dict(model.state_dict())
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(meta["scheduler"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        self.history = list(meta.get("history", []))
        self.lrs = list(meta.get("lrs", []))
        self.best_score = meta.get("best_score")
        self.best_tiebreak = meta.get("best_tiebreak")
        self._stale = int(meta.get("stale", 0))
        self.seed = int(meta.get("seed", self.seed))
        done = int(meta["epochs_done"])
        log.info("resuming from '%s' after epoch %d of %d", state_dir, done, meta["epochs"])
        return done

    # ---- validation and prediction

    def segmenter(self) -> Segmenter:
        """The inference engine of ``crystalseg segment`` on the learner's current weights.

        Validation and :meth:`predict` run through it, so training scores the inference
        users run: intensity bounds of the whole frame, padding to the encoder stride,
        tiles blended over the engine's overlap, its precision (bf16 on CUDA). Built
        once and refreshed with the current weights at each call; it runs as
        :attr:`engine_settings` says (default: the learner's device, backend torch, as
        an ONNX export every epoch would cost more than the validation).
        """
        settings = self.engine_settings or EngineSettings(
            device=str(self.device), backend="torch", threads=torch.get_num_threads()
        )
        if self._engine is None or self._engine.requested_settings != settings:
            self._engine = Segmenter(self.model, self.spec, settings=settings)
        else:
            self._engine.load_weights(self.model)
        return self._engine

    @torch.no_grad()
    def validate(self, *, workers: int | None = None) -> dict[str, Any]:
        """Loss and IoU/Dice per class on the whole validation images (empty if none),
        segmented by :meth:`segmenter` as ``crystalseg segment`` would segment them.

        Where the validation frames have true instances (synthetic runs, instance masks),
        also the figures users read, of the particles that the measurement would count
        (default settings; no confidence filter, whose probabilities are calibrated only
        after training): ``instance_f1`` (pooled over frames; IoU 0.5 matching; 1.0 when
        the frames hold no crystal and the model finds none), ``count_error`` and
        ``d50_error`` (mean absolute relative errors of the count and the number-weighted
        D50 per frame) and ``particle_score`` (F1 - |count error| - |D50 error|,
        :func:`~crystalseg.measure.scoring.particle_score`), which then picks the best
        epoch: pixel IoU can rise while crystals are merged and sizes drift. Labelling,
        measuring and matching the particles is CPU work (about 50-100 ms a 512² frame):
        it runs in ``workers`` threads while the model goes on to the next frames
        (default: up to 4, one fewer than the cores, when the model runs on a GPU; in
        line, 0, on the CPU, where the model already uses every core).
        """
        if not self.data.valid_items:
            return {}
        if workers is None:
            workers = 0 if self.device.type == "cpu" else matching_threads()
        k = self.spec.n_classes
        confusion = torch.zeros((k, k), dtype=torch.int64)
        losses = []
        rows: list[dict[str, Any]] = []  # particle scores of the frames with true instances
        has_truth = False
        pending: deque[Any] = deque()  # frames being matched, at most 2 per thread
        pool = ThreadPoolExecutor(workers, "crystalseg-valid") if workers > 0 else None
        engine = self.segmenter()
        try:
            for item in self.data.valid_items:
                image, mask = self.data.load(item)
                logits = torch.from_numpy(engine.predict_logits(image[None])).to(self.device)
                yd = torch.from_numpy(mask.astype(np.int64)).to(self.device)[None]
                losses.append(float(self.loss_fn(logits, yd)))
                pred = logits.argmax(1)
                confusion += (
                    torch.bincount((yd * k + pred).ravel(), minlength=k * k).reshape(k, k).cpu()
                )
                truth = self.data.instance_truth(item)
                if truth is not None:
                    has_truth = True
                    args = (pred[0].to(torch.uint8).cpu().numpy(), truth, self.data.codes)
                    if pool is None:
                        rows.append(frame_particle_scores(*args))
                        continue
                    pending.append(pool.submit(frame_particle_scores, *args))
                    while len(pending) > 2 * workers:
                        rows.append(pending.popleft().result())
            while pending:
                rows.append(pending.popleft().result())
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        out = {"valid_loss": float(np.mean(losses))}
        out.update(confusion_metrics(confusion.numpy(), self.data.codes))
        if has_truth:  # every epoch then ranks by it, also where nothing is to be found
            out.update(pool_particle_scores(rows))
        return out

    @torch.no_grad()
    def predict(self, image: np.ndarray | PathLike) -> np.ndarray:
        """Class map (H, W) uint8 of one image (array (H, W[, 3]) or an image file).

        Grey or RGB as the model takes it (the rule of training), then segmented by
        :meth:`segmenter`, the engine of ``crystalseg segment``.
        """
        arr = read_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        if arr.ndim not in (2, 3):
            raise ConfigError(f"image of shape {arr.shape}; expected (H, W) or (H, W, 3)")
        arr = to_channels(arr, self.spec.in_channels)
        return self.segmenter().predict(arr[None])[0]

    def lr_find(
        self,
        *,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        stop_div: bool = True,
    ) -> LRFindResult:
        """Learning-rate range test: train with an exponentially rising lr, record the loss.

        The model is restored afterwards. The suggestion is the lr of the steepest descent of
        the smoothed loss before its minimum, a good ``lr_max`` for :meth:`fit_one_cycle`.
        """
        if not 0 < start_lr < end_lr or num_it < 5:
            raise ConfigError("lr_find needs 0 < start_lr < end_lr and num_it >= 5")
        saved = copy.deepcopy(self.model.state_dict())
        optimizer = self._optimizer(start_lr)
        scaler = self._scaler()
        gamma = (end_lr / start_lr) ** (1.0 / (num_it - 1))
        lrs: list[float] = []
        losses: list[float] = []
        avg, best, beta = 0.0, math.inf, 0.9
        torch.manual_seed(self.seed * 1_000_003 - 1)
        rng = np.random.default_rng([self.seed, 2**31])
        self._train_mode()
        bar = _progress(num_it, "lr find", self.progress)
        try:
            while len(lrs) < num_it:
                for x, y in self._batches(rng):
                    lr = start_lr * gamma ** len(lrs)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    loss = self._step(x, y, optimizer, scaler)
                    avg = beta * avg + (1 - beta) * loss
                    smooth = avg / (1 - beta ** (len(lrs) + 1))
                    lrs.append(lr)
                    losses.append(smooth)
                    bar.update(1)
                    best = min(best, smooth)
                    diverged = not math.isfinite(smooth) or smooth > 4 * best
                    if len(lrs) >= num_it or (stop_div and diverged and len(lrs) > 5):
                        break
                else:
                    continue
                break
        finally:
            bar.close()
            self.model.load_state_dict(saved)
        return LRFindResult(tuple(lrs), tuple(losses), _suggest_lr(lrs, losses))

    # ---- saving and showing

    def training_info(self) -> dict[str, Any]:
        """Settings recorded in the checkpoint JSON."""
        return {
            **self._schedule,
            "optimizer": "AdamW",
            "schedule": "one-cycle",
            "weight_decay": self.weight_decay,
            "loss": self.loss_name,
            "freeze_bn": self.freeze_bn,
            "augment": self.augment_settings.to_dict() if self.augment_settings else None,
            "init": self.init_info,
            "seed": self.seed,
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp else None,
            "epochs_done": len(self.history),
            "data": self.data.summary(),
            "settings": self.settings,
            "start_validation": self.start_validation,
        }

    def save(self, path: PathLike) -> Path:
        """Write the model as a checkpoint directory (model.safetensors + model.json)."""
        return save_checkpoint(
            path,
            self.model,
            self.spec,
            training=self.training_info(),
            metrics=self.history,
            data_fingerprint=self.data.fingerprint,
            calibration=None if self.calibration is None else self.calibration.to_dict(),
        )

    def show_results(self, n: int = 3) -> Figure:
        """Figure of ``n`` validation images (training images without validation):
        image, truth and prediction side by side, with the foreground IoU of each."""
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure

        items = list(self.data.valid_items or self.data.train_items)[: max(1, n)]
        k = self.spec.n_classes
        cmap = ListedColormap(
            ["black", "gold", "deepskyblue", "tomato", "limegreen", "orchid"][: max(2, k)]
        )
        fig = Figure(figsize=(9, 3 * len(items)))
        axes = fig.subplots(len(items), 3, squeeze=False)
        for row, item in zip(axes, items, strict=True):
            image, truth = self.data.load(item)
            pred = self.predict(image)
            cm = np.bincount(truth.astype(np.int64).ravel() * k + pred.ravel(), minlength=k * k)
            score = confusion_metrics(cm.reshape(k, k), self.data.codes)["foreground_iou"]
            shown = image if image.ndim == 2 else image[..., :3]
            row[0].imshow(shown, cmap="gray")
            row[0].set_title(item.name, fontsize=9)
            row[1].imshow(truth, cmap=cmap, vmin=0, vmax=cmap.N - 1, interpolation="nearest")
            row[1].set_title("truth", fontsize=9)
            row[2].imshow(pred, cmap=cmap, vmin=0, vmax=cmap.N - 1, interpolation="nearest")
            row[2].set_title(
                "prediction" + ("" if score is None else f" (IoU {score:.2f})"), fontsize=9
            )
            for ax in row:
                ax.set_axis_off()
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        return (
            f"Learner({self.spec.encoder} U-Net, codes={list(self.spec.codes)}, "
            f"init={self.init_info.get('kind', '?')}, device={self.device}, "
            f"batch {self.batch_size}, {len(self.history)} epochs done)"
        )


def matching_threads() -> int:
    """Threads that match validation particles beside a GPU: up to 4, one core left
    for the loop that feeds the GPU."""
    return min(4, available_cores() - 1)


def frame_particle_scores(
    pred: np.ndarray, truth: np.ndarray, codes: Sequence[str]
) -> dict[str, float | int]:
    """:func:`~crystalseg.measure.scoring.score_frame` of one validation frame: the
    particles counted as the measurement would count them (default settings, no
    confidence filter) against the true instances."""
    from crystalseg.measure import MeasureSettings

    settings = MeasureSettings(min_confidence=None)
    return score_frame(pred, truth, codes=tuple(codes), settings=settings)


def _suggest_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """lr at the steepest descent of the loss before its minimum (finite, positive)."""
    lr = np.asarray(lrs, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(loss)
    lr, loss = lr[ok], loss[ok]
    if lr.size < 3:
        return float(lr[0]) if lr.size else 1e-3
    end = int(np.argmin(loss))
    if end < 2:
        return float(lr[max(end, 0)] / 10 if lr[end] > 1e-6 else 1e-4)
    grad = np.gradient(loss[: end + 1], np.log10(lr[: end + 1]))
    skip = min(end // 10, 5)
    i = skip + int(np.argmin(grad[skip:]))
    return float(lr[i])


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _say(line: str, progress: bool) -> None:
    """Log an epoch's line; in a notebook or script where nothing listens to
    crystalseg's log (no handler configured) and progress is shown, print it too, as
    fastai's ``fit_one_cycle`` prints its table."""
    log.info(line)
    listened = logging.getLogger("crystalseg").hasHandlers() and log.isEnabledFor(logging.INFO)
    if progress and not listened:
        from tqdm.auto import tqdm

        tqdm.write(line)


def epoch_score(record: Mapping[str, Any]) -> tuple[float, str]:
    """The score that ranks an epoch (higher is better) and what it is.

    The validation particle score (matched F1 - |count error| - |D50 error|,
    :func:`~crystalseg.measure.scoring.particle_score`) where the validation frames hold
    true instances, else the mean validation IoU of the crystal classes, else (no
    validation frames) minus the training loss. Epochs of equal particle score (on a few
    annotated frames it is soon 1.0) are ranked by their mean IoU
    (:meth:`Learner.fit_one_cycle`). Records of earlier versions, with a particle F1
    but no particle score, rank by the F1.
    """
    if "particle_score" in record:
        return record["particle_score"], "validation particle score (F1 - |count| - |D50| error)"
    if "instance_f1" in record:
        return record["instance_f1"], "validation particle F1"
    if record.get("mean_iou") is not None:
        return record["mean_iou"], "validation mean IoU of the crystal classes"
    return -record["train_loss"], "training loss"


def compare_with_start(best: Mapping[str, Any], start: Mapping[str, Any]) -> list[str]:
    """Sentences for the readings that the best epoch measures worse than the starting
    model on the validation frames (:func:`~crystalseg.measure.scoring.worse_sizes`)."""

    def readings(record: Mapping[str, Any]) -> dict[str, float | None]:
        return {
            "d50_error": record.get("d50_error"),
            "count_error": record.get("count_error"),
            "f1": record.get("instance_f1"),
        }

    return worse_sizes(
        readings(best),
        readings(start),
        where=f"on the validation frames (epoch {best.get('epoch')} against epoch 0)",
    )


def format_epoch(record: dict[str, Any], epochs: int | None = None) -> str:
    """One line of an epoch's record: losses, validation IoU (and Dice) per class,
    particle F1, seconds; logged as training goes and printed again at its end."""
    head = f"epoch {record['epoch']}/{epochs}" if epochs else f"epoch {record['epoch']:>3}"
    parts = [head]
    if "train_loss" in record:
        parts.append(f"train loss {record['train_loss']:.4f}")
    if "valid_loss" in record:
        parts.append(f"valid loss {record['valid_loss']:.4f}")
        if record.get("foreground_iou") is not None:
            parts.append(f"foreground IoU {record['foreground_iou']:.3f}")
        dice = record.get("dice", {})
        for code, iou in record.get("iou", {}).items():
            if code != "background" and iou is not None:
                text = f"{code} IoU {iou:.3f}"
                if dice.get(code) is not None:
                    text += f" Dice {dice[code]:.3f}"
                parts.append(text)
        if "instance_f1" in record:
            parts.append(f"particle F1 {record['instance_f1']:.3f}")
        if "particle_score" in record:
            parts.append(f"count error {100 * record['count_error']:.1f} %")
            parts.append(f"D50 error {100 * record['d50_error']:.1f} %")
            parts.append(f"particle score {record['particle_score']:.3f}")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.0f} s")
    return "  ".join(parts)


# --------------------------------------------------------------------------------------
# Building a learner


def _spec_from_checkpoint(
    base: ModelSpec, data: SegmentationData, scaling: str | None
) -> ModelSpec:
    mean, std = base.mean, base.std
    if data.channels != base.in_channels:
        mean = (float(np.mean(mean)),) * data.channels
        std = (float(np.mean(std)),) * data.channels
    return ModelSpec(
        encoder=base.encoder,
        codes=data.codes,
        in_channels=data.channels,
        decoder_channels=base.decoder_channels,
        mean=mean,
        std=std,
        scaling=scaling or base.scaling,  # type: ignore[arg-type]
        percentiles=base.percentiles,
    )


def _head_rows(codes: Sequence[str], src_codes: Sequence[str]) -> list[int] | None:
    """Rows of the source class head for ``codes``: by name, and a boundary class (rim
    or contact) by role, so that a rim model starts a contact model; None when a class
    has no counterpart."""
    src_boundary = boundary_class(src_codes)
    rows = []
    for c in codes:
        if c in src_codes:
            rows.append(list(src_codes).index(c))
        elif src_boundary is not None and boundary_class([c]) is not None:
            rows.append(src_boundary)
        else:
            return None
    return rows


def _load_finetune(model: nn.Module, spec: ModelSpec, src: nn.Module, src_spec: ModelSpec) -> str:
    """Copy ``src`` weights into ``model``; the class head is mapped by code name."""
    target = model.state_dict()
    state = adapt_first_conv(src.state_dict(), target)
    head_note = "kept"
    if spec.codes != src_spec.codes:
        head = [k for k in state if k.startswith("segmentation_head.")]
        rows = _head_rows(spec.codes, src_spec.codes)
        if rows is not None:
            for key in head:
                state[key] = state[key][rows]
            head_note = f"rows {rows} of {list(src_spec.codes)}"
        else:
            for key in head:
                del state[key]
            head_note = f"new (checkpoint codes {list(src_spec.codes)})"
    usable = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return head_note


#: The keywords of :func:`unet_learner` that are fields of each settings group.
_LEARNER_FIELDS = frozenset(LearnerSettings.__dataclass_fields__)
_SCHEDULE_FIELDS = frozenset(ScheduleSettings.__dataclass_fields__)


def unet_learner(
    data: SegmentationData,
    settings: LearnerSettings | None = None,
    schedule: ScheduleSettings | None = None,
    *,
    output_dir: PathLike | None = None,
    progress: bool = True,
    **fields: Any,
) -> Learner:
    """A U-Net learner for ``data``.

    Parameters
    ----------
    data : from :func:`~crystalseg.train.data.pairs`
    settings : LearnerSettings, optional
        The network and how it learns: ``encoder``, ``init``, ``loss``,
        ``decoder_channels``, ``scaling``, ``augment``, ``freeze_bn`` (below).
    schedule : ScheduleSettings, optional
        Where and with what it learns: ``device`` (default CUDA when present, else the
        CPU), ``batch_size`` (default ``data.batch_size``, else 8 on a CPU and 32 on a
        GPU), ``weight_decay``, ``seed`` (default ``data.seed``; fixes initialisation,
        crops and augmentation) and ``amp`` (mixed precision on CUDA, bf16 where
        supported, else fp16; ignored on a CPU). Its epochs and lr are
        :meth:`Learner.fit_one_cycle`'s to take.
    output_dir : where :meth:`Learner.fit_one_cycle` writes best and last checkpoints
    progress : show tqdm progress bars
    **fields
        Fields of either group given one by one, for the notebook:
        ``unet_learner(data, encoder="resnet34", init="none", device="cpu")``; with a
        group given, they replace its fields.

    Notes
    -----
    The fields of :class:`LearnerSettings`:

    - ``encoder``: smp encoder name; the default is the architecture of the bundled
      model, so that training fine-tunes it.
    - ``init``: where the weights start. ``"default"``: the bundled crystal model; when
      this build ships none or ``encoder`` differs from it, a logged warning and local
      ImageNet weights if there are any, else ``"none"``. ``"imagenet"``: ImageNet
      encoder weights found locally (never downloaded; an error if absent); ``"none"``:
      random; a checkpoint directory: fine-tune it (its architecture is used; classes
      are matched by name); a ``.safetensors``/``.pth`` state-dict file: encoder weights.
    - ``loss``: one of ``LOSS_NAMES``.
    - ``decoder_channels``: decoder widths; default slim for the default encoder, smp's
      otherwise.
    - ``scaling``: intensity rule of the model (``"dtype"`` or ``"percentile"``);
      default the checkpoint's, else ``"dtype"``.
    - ``augment``: ``"default"``, ``"strong"``, ... ``"none"`` or :class:`AugmentSettings`.
    - ``freeze_bn``: keep the batch-norm statistics of the starting weights while
      training (the layers' scale and shift still learn). Default: when fine-tuning a
      crystal model (``init`` ``"default"`` or a checkpoint), whose statistics fit
      microscopy frames already and which small batches of a few frames would only make
      noisy: fine-tuning the bundled model for 3 epochs on 20, 40 and 80 frames of a
      look it never saw reached validation foreground IoU 0.886, 0.951 and 0.976 with
      them kept, 0.868, 0.931 and 0.961 without (``benchmarks/finetune.py``). From random
      weights they must be learned: never freeze them there.
    - ``min_steps_per_epoch`` (:class:`ScheduleSettings`): least optimizer steps in
      an epoch (:data:`MIN_STEPS_PER_EPOCH`).

    Raises
    ------
    ConfigError, CheckpointError
    """
    unknown = sorted(set(fields) - _LEARNER_FIELDS - _SCHEDULE_FIELDS)
    if unknown:
        raise ConfigError(
            f"unet_learner got unknown setting(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_LEARNER_FIELDS | _SCHEDULE_FIELDS))}"
        )
    own = {k: v for k, v in fields.items() if k in _LEARNER_FIELDS}
    timing = {k: v for k, v in fields.items() if k in _SCHEDULE_FIELDS}
    if settings is None:
        settings = LearnerSettings(**own)
    elif own:
        settings = replace(settings, **own)
    if schedule is None:
        schedule = ScheduleSettings(**{"seed": data.seed, **timing})
    elif timing:
        schedule = replace(schedule, **timing)
    encoder, init, decoder_channels, scaling = (
        settings.encoder,
        settings.init,
        settings.decoder_channels,
        settings.scaling,
    )
    resolve_device(schedule.device)  # no CUDA where there is none: said before the work
    seed = schedule.seed
    torch.manual_seed(seed)
    init_info: dict[str, Any]
    src_ckpt: Path | None = None
    encoder_file: Path | None = None
    kind = os.fspath(init) if isinstance(init, os.PathLike) else init
    if kind == "default":
        reason = None
        try:
            src_ckpt = default_checkpoint_path()
        except CheckpointError as exc:
            reason = str(exc)
        else:
            base = ModelSpec.from_dict(read_checkpoint_meta(src_ckpt)["spec"])
            dec = tuple(decoder_channels) if decoder_channels else base.decoder_channels
            if encoder != base.encoder or dec != base.decoder_channels:
                reason = (
                    f"the bundled model is a {base.encoder} U-Net with decoder "
                    f"{list(base.decoder_channels)}, not {encoder} {list(dec)} (drop the "
                    "encoder argument to fine-tune it)"
                )
                src_ckpt = None
        if reason is not None:
            # the next best start: ImageNet weights when this machine has them
            kind = "imagenet" if find_imagenet_weights(encoder) is not None else "none"
            log.warning(
                "%s; training starts from %s",
                reason,
                "local ImageNet encoder weights (init 'imagenet')"
                if kind == "imagenet"
                else "random weights (init 'none'), which needs many more epochs",
            )
    elif kind not in ("imagenet", "none"):
        p = Path(kind)
        if p.is_dir() or p.name == META_FILE or (p.parent / META_FILE).is_file():
            src_ckpt = p
            kind = "checkpoint"
        elif p.is_file():
            encoder_file, kind = p, "encoder_weights"
        else:
            raise CheckpointError(
                f"init '{p}' is neither 'default', 'imagenet', 'none', a checkpoint directory "
                "nor a weights file; check the path"
            )

    if src_ckpt is not None:
        src_model, src_spec, meta = load_checkpoint(src_ckpt)
        if kind == "checkpoint" and encoder not in (DEFAULT_ENCODER, src_spec.encoder):
            raise ConfigError(
                f"checkpoint '{src_ckpt}' is a {src_spec.encoder} U-Net, not {encoder}; drop "
                f"the encoder argument or pass encoder='{src_spec.encoder}'"
            )
        spec = _spec_from_checkpoint(src_spec, data, scaling)
        model = build_model(spec)
        head = _load_finetune(model, spec, src_model, src_spec)
        init_info = {
            "kind": "default" if kind == "default" else "checkpoint",
            "checkpoint": os.fspath(src_ckpt),
            "sha256": meta["weights"]["sha256"],
            "class_head": head,
        }
        log.info("fine-tuning %s (class head %s)", src_ckpt, head)
    else:
        imagenet = kind == "imagenet"
        mean = (
            (IMAGENET_MEAN if data.channels == 3 else (float(np.mean(IMAGENET_MEAN)),))
            if imagenet
            else (0.5,) * data.channels
        )
        std = (
            (IMAGENET_STD if data.channels == 3 else (float(np.mean(IMAGENET_STD)),))
            if imagenet
            else (0.25,) * data.channels
        )
        spec = ModelSpec(
            encoder=encoder,
            codes=data.codes,
            in_channels=data.channels,
            decoder_channels=tuple(decoder_channels or default_decoder_channels(encoder)),
            mean=mean,
            std=std,
            scaling=scaling or "dtype",
        )
        model = build_model(spec)
        if imagenet:
            load_encoder_weights(model, spec, "imagenet")
        elif encoder_file is not None:
            load_encoder_weights(model, spec, encoder_file)
        init_info = {"kind": kind}
        if encoder_file is not None:
            init_info["file"] = os.fspath(encoder_file)
    if settings.freeze_bn is None:
        settings = replace(settings, freeze_bn=src_ckpt is not None)
    elif settings.freeze_bn and kind == "none":
        raise ConfigError(
            "freeze_bn (--freeze-bn) keeps the batch-norm statistics of the starting weights, "
            "but they are random here (init 'none'); drop it or fine-tune a model (init "
            "'default' or a checkpoint)"
        )
    return Learner(
        data,
        model,
        spec,
        settings,
        schedule,
        output_dir=output_dir,
        progress=progress,
        init_info=init_info,
    )
