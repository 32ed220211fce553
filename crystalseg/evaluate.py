"""How well a model measures a user's own annotated frames: ``crystalseg evaluate``.

The bundled model learned from synthetic runs only, and its held-out figures
(README, ``benchmarks/``) come from renderers, not from the user's microscope. Before
trusting its particle size distributions, a user annotates a few frames and asks how
the whole pipeline (segmentation, then the measurement at the settings they will use)
does on them. For every annotated frame this segments the image, measures it exactly as
``crystalseg measure`` would, and compares with the annotation:

- pixels: foreground IoU of the model's class mask;
- particles: matched F1 at IoU 0.5 (precision, recall, over-split and merge rates)
  of the particles the measurement counts (those dropped for low confidence left out);
- the size distribution: particle count and number-weighted D50 (ECD) against those of
  the annotation under the same filters (least area, frame edge), as relative errors;
- outlines: ``outline_offset_px``, how far the particles' outlines lie outside the
  annotated ones on average (:func:`~crystalseg.measure.instances.outline_offsets`;
  +0.5 means every particle drawn half a pixel too large all round, which biases every
  size upwards). Annotation conventions differ (the outer edge of a dark rim, or a line
  inside it), and a model follows the convention it was trained on: a consistent offset
  says to fine-tune on these frames (``crystalseg train``), which teaches it yours.

Annotations are what ``crystalseg train`` reads: image/mask pairs, folders, or
synthetic runs (their exact truth). A class mask gives one true particle per
connected region of its crystal classes, split along a boundary class if it has one,
so touching crystals must be annotated with a gap or a boundary between them; with
``instances=True`` each mask holds one integer id per crystal (0 background), as
Cellpose, napari or QuPath export them, and touching crystals stay apart.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from crystalseg.classes import boundary_class
from crystalseg.errors import CheckpointError, ConfigError, CrystalsegWarning, RunFormatError
from crystalseg.measure.run import label_mask_frame
from crystalseg.measure.scoring import score_frame, worse_sizes
from crystalseg.measure.settings import MeasureSettings
from crystalseg.store import crystalseg_version
from crystalseg.store.core import jsonable

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

#: Per-frame PSD bars of the clear synthetic scenes (issue 5): |count error| and |D50
#: error|; ``frames_within_bars`` reports the share of frames within both.
COUNT_BAR, D50_BAR = 0.10, 0.05

#: Summary figures of :meth:`Evaluation.comparison`, the model beside its baseline.
COMPARED_COLUMNS: tuple[str, ...] = (
    "f1_pooled",
    "count_error_median_abs",
    "d50_error_median_abs",
    "fg_iou_pooled",
    "precision_pooled",
    "recall_pooled",
)

#: Columns of :attr:`Evaluation.frames`, in order.
FRAME_COLUMNS: tuple[str, ...] = (
    "name",
    "fg_iou",
    "n_true",
    "n_measured",
    "count_error",
    "d50_true",
    "d50_measured",
    "d50_error",
    "precision",
    "recall",
    "f1",
    "over_split_rate",
    "merged_rate",
    "outline_offset_px",
    "matched",
    "pixel_size_um",
)


@dataclass(frozen=True)
class Evaluation:
    """Scores of a model on annotated frames.

    Attributes
    ----------
    frames : DataFrame
        One row per frame, columns :data:`FRAME_COLUMNS`: ``d50_*`` in µm where the
        frame's ``pixel_size_um`` is known, else px; errors relative ((measured -
        true) / true); ``outline_offset_px`` the mean over the frame's matched crystals.
    summary : dict
        Pooled foreground IoU, mean F1, median and mean count and D50 errors, mean
        outline offset (px, and µm with a pixel size), share of frames within the bars.
    settings : dict
        Model, measurement settings and annotation rule used (to record next to the
        scores).
    """

    frames: pd.DataFrame
    summary: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    baseline: Evaluation | None = None
    verdicts: tuple[str, ...] = ()

    def comparison(self) -> pd.DataFrame | None:
        """The model and its :attr:`baseline` side by side on the same frames: one row
        each (``model``, ``baseline``), columns :data:`COMPARED_COLUMNS`; None without a
        baseline."""
        if self.baseline is None:
            return None
        rows = {
            name: {c: self_or_base.summary.get(c) for c in COMPARED_COLUMNS}
            for name, self_or_base in (("model", self), ("baseline", self.baseline))
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``summary``, ``settings`` and ``frames`` (a list of rows); with a
        baseline also ``baseline`` (its ``to_dict``) and ``verdicts``."""
        rows = [jsonable(dict(row), strict=True) for row in self.frames.to_dict(orient="records")]
        summary = jsonable(dict(self.summary), strict=True)
        out: dict[str, Any] = {"summary": summary, "settings": self.settings, "frames": rows}
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
            out["verdicts"] = list(self.verdicts)
        return out

    def save(self, path: PathLike) -> Path:
        """Write the scores: ``.json`` (all of :meth:`to_dict`) or ``.csv`` (the frames).

        Raises
        ------
        ConfigError
            Another suffix.
        """
        return _write_scores(path, self.to_dict, lambda: self.frames)


#: File types the scores are written to (:meth:`Evaluation.save`, :func:`save_comparison`).
SCORE_SUFFIXES = (".json", ".csv")


def _write_scores(
    path: PathLike, document: Callable[[], Any], table: Callable[[], pd.DataFrame]
) -> Path:
    """Write ``document()`` to a ``.json`` path or ``table()`` to a ``.csv`` one; any other
    suffix is a clear error."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise ConfigError(
            f"cannot write scores to '{p.name}': use a .json file (summary and frames) "
            "or a .csv file (one row per frame)"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        p.write_text(json.dumps(document(), indent=2) + "\n")
    else:
        table().to_csv(p, index=False)
    return p


def save_comparison(results: Mapping[float, Evaluation], path: PathLike) -> Path:
    """Write the scores of one model at several ``resize`` factors to one file.

    ``.json``: ``{"resize": {"0.5": Evaluation.to_dict(), ...}}``; ``.csv``: every
    factor's frames, with the factor in a first column ``resize``.

    Raises
    ------
    ConfigError
        Another suffix.
    """

    def document() -> dict[str, Any]:
        return {"resize": {f"{k:g}": ev.to_dict() for k, ev in results.items()}}

    def table() -> pd.DataFrame:
        tables = [ev.frames.assign(resize=k) for k, ev in results.items()]
        return pd.concat(tables, ignore_index=True)[["resize", *FRAME_COLUMNS]]

    return _write_scores(path, document, table)


def best_resize_factor(results: Mapping[float, Evaluation]) -> float | None:
    """The resize factor of the highest mean particle F1 among ``results`` (factor ->
    :class:`Evaluation`), or None when no factor has one (no crystals to match)."""
    scored = {k: r.summary["f1_mean"] for k, r in results.items()}
    scored = {k: v for k, v in scored.items() if v is not None}
    return max(scored, key=lambda k: scored[k]) if scored else None


def summarize_scores(
    frames: pd.DataFrame,
    *,
    pooled: tuple[int, int] | None = None,
    particles: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Summary of per-frame scores (see :class:`Evaluation`).

    ``pooled`` is (intersection, union) of the foreground over all frames;
    ``particles`` (matched, true, counted) particles over all frames, for the pooled
    matched F1, precision and recall (``f1_pooled``, ``precision_pooled``,
    ``recall_pooled``): a frame of 300 crystals weighs 300 times one of one, as when
    all the frames' particles are matched together.
    """

    def finite(col: str) -> np.ndarray:
        v = frames[col].to_numpy(dtype=float) if len(frames) else np.zeros(0)
        return v[np.isfinite(v)]

    def stat(v: np.ndarray, how: Callable[[np.ndarray], Any]) -> float | None:
        return float(how(v)) if len(v) else None

    count, d50 = finite("count_error"), finite("d50_error")
    both = frames[["count_error", "d50_error"]].to_numpy(dtype=float) if len(frames) else None
    out: dict[str, Any] = {
        "frames": len(frames),
        "fg_iou_pooled": (pooled[0] / pooled[1]) if pooled and pooled[1] else None,
        "f1_mean": stat(finite("f1"), np.mean),
        "precision_mean": stat(finite("precision"), np.mean),
        "recall_mean": stat(finite("recall"), np.mean),
        "count_error_median_abs": stat(np.abs(count), np.median),
        "count_error_mean": stat(count, np.mean),
        "d50_error_median_abs": stat(np.abs(d50), np.median),
        "d50_error_mean": stat(d50, np.mean),
        "frames_within_bars": None,
        "outline_offset_px": None,
        "matched_crystals": int(frames["matched"].sum()) if len(frames) else 0,
    }
    if both is not None:
        scored = np.isfinite(both[:, 0])
        if scored.any():
            ok = (np.abs(both[:, 0]) <= COUNT_BAR) & (np.abs(both[:, 1]) <= D50_BAR)
            out["frames_within_bars"] = float(ok[scored].mean())
    if out["matched_crystals"]:
        out["outline_offset_px"] = float(frames["_offset_sum"].sum() / out["matched_crystals"])
    if particles is not None:
        matched, n_true, n_pred = particles
        out["f1_pooled"] = 2 * matched / (n_true + n_pred) if n_true + n_pred else None
        out["precision_pooled"] = matched / n_pred if n_pred else None
        out["recall_pooled"] = matched / n_true if n_true else None
    return out


def evaluate_model(
    data: PathLike | Sequence[PathLike | tuple[PathLike, PathLike]],
    *,
    model: Any = None,
    codes: Sequence[str] = ("background", "crystal"),
    mask_values: Any = None,
    instances: bool = False,
    settings: MeasureSettings | None = None,
    pixel_size_um: float | None = None,
    tta: bool = False,
    resize: float | Literal["auto"] = "auto",
    device: str = "auto",
    frame_step: int = 1,
    progress: Callable[[int, int], None] | None = None,
    baseline: Any = "auto",
) -> Evaluation:
    """Segment and measure annotated frames and compare with the annotation.

    With a baseline (by default the model a fine-tuned checkpoint started from, when
    its ``model.json`` records one that is still there with the same weights), the
    baseline is scored on the same frames with the same settings, and every reading the
    model measures worse than it is said plainly in :attr:`Evaluation.verdicts` and the
    log: fine-tuning can raise pixel IoU while merging crystals, and so make the sizes
    worse.

    Parameters
    ----------
    data : path or sequence
        What ``crystalseg train`` reads: ``[(image, mask), ...]``, a folder of
        ``X.png``/``X_mask.png`` pairs, a folder with ``images/`` and ``masks/``,
        synthetic run stores (their ``truth`` instances), or a folder of them.
    model : path, Segmenter or None
        Checkpoint directory or a loaded segmenter; None: the bundled model.
    codes : sequence of str
        Classes of the annotation masks, background first (a class named ``boundary``
        splits touching crystals as in training data); ignored with ``instances``.
    mask_values : optional
        How stored mask values map to ``codes`` (as ``crystalseg train
        --mask-values``); None: class indices, or 0/255 for two classes.
    instances : bool
        Masks hold one integer id per crystal (0 background) instead of classes.
    settings : MeasureSettings, optional
        The measurement to score (default: ``crystalseg measure``'s defaults).
    pixel_size_um : float, optional
        Micrometres per pixel of image files (D50 and offsets in µm too); synthetic
        runs carry their own.
    tta, resize, device : engine settings of the model (test-time augmentation, the
        factor frames are resized by before the model, device); see
        :class:`~crystalseg.segment.EngineSettings`. ``resize="auto"`` (as ``measure``)
        chooses one factor for all the frames, from up to six of them.
    frame_step : int
        Every n-th frame of run stores.
    progress : callable (done, total), optional
    baseline : "auto", path, Segmenter or None
        The model to score beside ``model``: ``"auto"`` the checkpoint's starting model
        (``training.init`` in its ``model.json``; the bundled model for a fine-tuning
        of it) where it is recorded and unchanged, None no baseline.

    Returns
    -------
    Evaluation

    Raises
    ------
    ConfigError, InputNotFoundError, UnsupportedInputError, MaskValueError,
    FrameMismatchError, RunFormatError
        Bad arguments or annotations, with what to fix.
    """
    from crystalseg.segment import EngineSettings, load_segmenter
    from crystalseg.segment.run import AUTO_RESIZE_FRAMES
    from crystalseg.train.data import discover_pairs, to_channels
    from crystalseg.train.masks import MaskRule

    settings = settings or MeasureSettings()
    if pixel_size_um is not None and not (
        isinstance(pixel_size_um, int | float)
        and math.isfinite(pixel_size_um)
        and pixel_size_um > 0
    ):
        raise ConfigError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
    rule = None if instances else MaskRule.from_user(tuple(codes), mask_values)
    items = discover_pairs(data, frame_step=frame_step)
    for item in items:
        if item.run is not None and item.mask_group != "truth":
            raise RunFormatError(
                f"run '{item.run.name}' has no annotation (no truth group), only a mask "
                "that a model made; evaluate needs annotated frames: image/mask pairs "
                "or synthetic runs"
            )
    if model is not None and hasattr(model, "predict") and hasattr(model, "spec"):
        seg = model
    else:
        seg = load_segmenter(model, None, EngineSettings(device=device, tta=tta, resize=resize))
    if getattr(seg, "checkpoint", None) is not None:
        _warn_if_trained_on(items, seg.checkpoint, rule, instances)
    model_codes = tuple(seg.spec.codes)
    rows: list[dict[str, Any]] = []
    inter = union = 0
    particles = np.zeros(3, np.int64)  # matched, true, counted
    runs: dict[Path, Any] = {}
    auto = getattr(seg, "settings", None) is not None and seg.settings.resize == "auto"
    sample: dict[int, tuple[np.ndarray, np.ndarray, float | None]] = {}
    if auto:  # one factor for all the frames, chosen on up to AUTO_RESIZE_FRAMES of them
        n = min(AUTO_RESIZE_FRAMES, len(items))
        for k in np.unique(np.linspace(0, len(items) - 1, n).astype(int)):
            sample[int(k)] = _annotated_frame(items[k], rule, instances, runs)
        seg = seg.resolved([image for image, _, _ in sample.values()])
    for k, item in enumerate(items):
        # the frames read to choose the factor are not read again
        read = sample.pop(k) if k in sample else _annotated_frame(item, rule, instances, runs)
        image, true_labels, pixel = read
        pixel = pixel_size_um if item.run is None else pixel
        mask, prob = (a[0] for a in seg.predict(image[None], probability=True))
        row = score_frame(
            mask,
            true_labels,
            image=to_channels(image, 1),
            probability=prob,
            codes=model_codes,
            settings=settings,
            pixel_size_um=pixel,
        )
        inter += int(row.pop("_inter"))
        union += int(row.pop("_union"))
        particles += [int(row.pop(k)) for k in ("_matched", "_true", "_pred")]
        rows.append(
            {"name": item.name, **row, "pixel_size_um": math.nan if pixel is None else pixel}
        )
        if progress is not None:
            progress(k + 1, len(items))
    frames = pd.DataFrame(rows, columns=[*FRAME_COLUMNS, "_offset_sum"])
    summary = summarize_scores(
        frames,
        pooled=(inter, union),
        particles=(int(particles[0]), int(particles[1]), int(particles[2])),
    )
    pixels = frames["pixel_size_um"].unique()
    if len(pixels) == 1 and np.isfinite(pixels[0]) and summary["outline_offset_px"] is not None:
        summary["outline_offset_um"] = summary["outline_offset_px"] * float(pixels[0])
    checkpoint = getattr(seg, "checkpoint", None)
    recorded = {
        "model_checkpoint": None if checkpoint is None else str(checkpoint),
        "model_sha256": getattr(seg, "checksum", None),
        "crystalseg_version": crystalseg_version(),
        "data": [str(d) for d in data] if isinstance(data, list | tuple) else str(data),
        "model": seg.describe() if hasattr(seg, "describe") else str(model),
        "model_codes": list(model_codes),
        "annotation": "instances" if instances or rule is None else rule.describe(),
        "annotation_codes": None if instances else list(codes),
        "measure_settings": settings.to_dict(),
        "pixel_size_um": pixel_size_um,
        "tta": tta,
        "resize": seg.settings.resize if hasattr(seg, "settings") else resize,
        **({"resize_chosen_by": "auto"} if auto else {}),
    }
    evaluation = Evaluation(frames.drop(columns="_offset_sum"), summary, recorded)
    if baseline is None:
        return evaluation
    base, started_from = _baseline_model(baseline, checkpoint)
    if base is None:
        return evaluation
    recorded["baseline"] = str(base) if not hasattr(base, "predict") else "a loaded segmenter"
    scored = evaluate_model(
        data,
        model=base,
        codes=codes,
        mask_values=mask_values,
        instances=instances,
        settings=settings,
        pixel_size_um=pixel_size_um,
        tta=tta,
        resize=resize,
        device=device,
        frame_step=frame_step,
        baseline=None,
    )
    verdicts = worse_sizes(
        _readings(summary),
        _readings(scored.summary),
        new_name="the fine-tuned model" if started_from else "the model",
        old_name="its starting model" if started_from else "the baseline model",
    )
    for sentence in verdicts:
        log.warning("%s", sentence)
    return replace(evaluation, baseline=scored, verdicts=tuple(verdicts))


def _readings(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The readings :func:`~crystalseg.measure.scoring.worse_sizes` compares."""
    return {
        "d50_error": summary.get("d50_error_median_abs"),
        "count_error": summary.get("count_error_median_abs"),
        "f1": summary.get("f1_pooled"),
    }


def _baseline_model(baseline: Any, checkpoint: Path | None) -> tuple[Any, bool]:
    """The baseline to score and whether it is the model's own start (``"auto"``)."""
    if baseline != "auto":
        return baseline, False
    if checkpoint is None:
        return None, False
    from crystalseg.models.checkpoint import default_checkpoint_path, read_checkpoint_meta

    init = read_checkpoint_meta(checkpoint).get("training", {}).get("init") or {}
    if init.get("kind") == "default":
        start = default_checkpoint_path()
    elif init.get("kind") == "checkpoint" and init.get("checkpoint"):
        start = Path(init["checkpoint"])
    else:
        return None, False  # trained from scratch, ImageNet, or an average
    try:
        sha = read_checkpoint_meta(start)["weights"]["sha256"]
    except CheckpointError:
        log.info("the starting model '%s' of '%s' is gone: not compared", start, checkpoint)
        return None, False
    if sha != init.get("sha256"):
        log.info(
            "the starting model '%s' of '%s' has other weights now: not compared", start, checkpoint
        )
        return None, False
    return start, True


def _warn_if_trained_on(items: Sequence[Any], checkpoint: Path, rule: Any, instances: bool) -> None:
    """Warn when ``items`` are the very data the checkpoint was trained on (the same
    data fingerprint): its scores there say little about frames it never saw."""
    from crystalseg.models.checkpoint import read_checkpoint_meta
    from crystalseg.train.data import data_fingerprint
    from crystalseg.train.masks import MaskRule

    meta = read_checkpoint_meta(checkpoint)
    recorded = meta.get("data_fingerprint")
    if not recorded:
        return
    if rule is None:  # instances: the fingerprint names the training codes
        rule = MaskRule.from_user(tuple(meta["spec"]["codes"]), None)
    if data_fingerprint(items, rule, instances) == recorded:
        warnings.warn(
            f"the model '{checkpoint}' was trained on these very frames (same data "
            "fingerprint), so its scores here are optimistic; score it on annotated "
            "frames it never saw",
            CrystalsegWarning,
            stacklevel=3,
        )


def _annotated_frame(
    item: Any, rule: Any, instances: bool, runs: dict[Path, Any]
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Image, true instance labels and pixel size (µm, runs only) of one item."""
    from crystalseg.train.data import check_pair_shapes, read_image
    from crystalseg.train.masks import instance_labels, read_mask

    if item.run is not None:
        if item.run not in runs:
            import xarray as xr

            ds = xr.open_zarr(item.run)
            truth = xr.open_zarr(item.run, group="truth")
            if "labels" not in truth:
                raise RunFormatError(f"run '{item.run.name}' has no true instances (truth/labels)")
            pixel = ds.attrs.get("pixel_size_um")
            runs[item.run] = (ds, truth, float(pixel) if pixel else None)
        ds, truth, pixel = runs[item.run]
        t = int(item.frame)
        return np.asarray(ds["image"][t].values), np.asarray(truth["labels"][t].values), pixel
    image = read_image(item.image)
    raw = read_mask(item.mask)
    check_pair_shapes(item, image, raw)
    if instances:
        return image, instance_labels(raw, item.mask.name), None
    classes = rule.apply(raw, name=item.mask.name)
    return image, _class_instances(classes, tuple(rule.codes)), None


def _class_instances(classes: np.ndarray, codes: tuple[str, ...]) -> np.ndarray:
    """True instances of an annotated class mask: its crystal regions, split along a
    boundary class if it has one (the measurement's boundary split, untrimmed)."""
    has_boundary = boundary_class(codes) is not None
    truth_settings = MeasureSettings(
        split="boundary" if has_boundary else "none",
        trim_boundary=False,
        join_occluded=False,
        min_area_px=1,
        min_confidence=None,
    )
    return label_mask_frame(classes, settings=truth_settings, codes=codes)


__all__ = [
    "COMPARED_COLUMNS",
    "COUNT_BAR",
    "D50_BAR",
    "FRAME_COLUMNS",
    "SCORE_SUFFIXES",
    "Evaluation",
    "best_resize_factor",
    "evaluate_model",
    "score_frame",
    "summarize_scores",
]
