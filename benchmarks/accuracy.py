"""Accuracy of the whole pipeline against exact ground truth, per synthetic scenario.

For each scenario and held-out seed (the default model trains on seeds >= 1000),
this renders a run with ``synthesize_run``, segments it with ``segment_run`` (the
bundled model, or ``--model``), measures it with ``measure_run`` at default settings,
and compares with the truth stored in the run:

- pixels: foreground IoU (crystal + boundary vs background) of the model's mask;
  ``particle_iou``: the same for the pixels of the measured particles (after the
  split, the trimming of the boundary band and the size filter, before the
  confidence filter), i.e. of the outlines that the sizes come from;
  ``bubble_fp``: fraction of bubble-disc pixels (those no crystal covers) that the
  model calls crystal;
- instances: matched F1 at IoU 0.5 of the measured labels (less those dropped for
  low confidence) against the visible pieces of the true crystals, over-split and
  merge rates;
- detection: the fraction of whole true crystals of which the model finds at least
  half, by true area and by defocus blur (where small or blurred crystals are lost);
- outlines: ``outline_offset_px``, how far the model's outline lies outside the true
  one (mean and median over the countable true crystals that a measured particle
  matches at IoU >= 0.5: (particle area - crystal area) / crystal perimeter; positive
  means crystals drawn too large, which biases every size upwards), and
  ``ecd_ratio_by_true_ecd_px``, the median measured / true ECD of those crystals by
  their true ECD (small crystals carry the largest bias);
- PSD: per frame with at least ``--min-count`` true crystals, the relative error of
  the crystal count and of the number-weighted D50 (ECD) against the truth table
  (edge-cut crystals excluded on both sides, same minimum area), and
  ``d50_err_by_true_d50_px``, the median D50 error of those frames by their true D50
  (the early frames of a run hold only small crystals).

Baseline in the same run: the same measurement on the TRUE class mask, so the
figures separate the model's errors from those of splitting and measuring.

Prints one JSON document. Usage::

    python benchmarks/accuracy.py [--model DIR] [--seeds 1 2] [--n-frames 12] [--size 512] [--tta]
        [--resize F]
        [--split auto|hybrid|...] [--no-trim-boundary] [--min-confidence P (negative: off)]
        [--min-area PX]
        [--scenarios clear ...]

Besides the means over frames, each scenario reports ``fg_iou_pooled`` (intersection
over union summed over all frames, so that nearly empty early frames weigh less) and
``per_seed`` figures, to show how much the seeds differ, ``frames_within_bars``,
the fraction of frames whose count is within 10 % and D50 within 5 % of the truth
(``truth_mask_frames_within_bars``: the same for the true class mask, the ceiling that
splitting and measuring allow), and ``fg_recall_by_border_distance_px``, the share of
true crystal pixels the model finds at 0, 1, 2 and 3+ pixels from the frame border.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from crystalseg.classes import class_mask_from_labels
from crystalseg.evaluate import COUNT_BAR, D50_BAR
from crystalseg.measure import EXCLUDED_REASONS, MeasureSettings, measure_mask_frame
from crystalseg.measure.distributions import weighted_quantile
from crystalseg.measure.instances import (
    instance_scores,
    matched_areas,
    offsets_of_matches,
    truth_pieces,
)
from crystalseg.measure.run import label_mask_frame
from crystalseg.segment import EngineSettings, auto_resize, load_segmenter
from crystalseg.synth import SCENARIO_NAMES, SynthConfig, synthesize_run


def _countable(crystals, min_area: int):
    """The true crystals a measurement counts: whole ones of at least ``min_area`` px."""
    return crystals[(crystals["area_px"] >= min_area) & ~crystals["touches_edge"]]


def _truth_stats(kept) -> tuple[int, float]:
    """Count and number-weighted D50 (ECD) of the countable true crystals."""
    if len(kept) == 0:
        return 0, float("nan")
    return len(kept), float(weighted_quantile(kept["ecd_px"].to_numpy(), 0.5)[0])


def _bubble_mask(distractors, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, bool)
    for row in distractors.itertuples():
        out |= (yy - row.y_px) ** 2 + (xx - row.x_px) ** 2 <= (0.8 * row.radius_px) ** 2
    return out


#: Bin edges of the detection rates by true area (px) and by defocus blur (px).
AREA_BINS = (10, 25, 50, 100, 200, 500, np.inf)
BLUR_BINS = (0.0, 1.0, 2.0, 3.0, 4.0, np.inf)


def _detections(kept, labels: np.ndarray, fg_pred: np.ndarray) -> list:
    """(area, blur, found) of each countable true crystal: found when the model calls at
    least half of its visible pixels foreground."""
    area = np.bincount(labels.ravel())
    hit = np.bincount(labels.ravel(), weights=fg_pred.ravel(), minlength=len(area))
    out = []
    for row in kept.itertuples():
        if row.id < len(area) and area[row.id]:
            out.append((row.area_px, row.blur_px, bool(hit[row.id] >= 0.5 * area[row.id])))
    return out


#: Distances to the frame border (px) of ``fg_recall_by_border_distance_px``: 0, 1, 2, 3+.
BORDER_BINS = 4


def _border_recall(fg_true: np.ndarray, fg_pred: np.ndarray) -> np.ndarray:
    """(found, all) true foreground pixels by distance to the frame border, (2, BORDER_BINS)."""
    h, w = fg_true.shape
    dist = np.minimum.outer(
        np.minimum(np.arange(h), np.arange(h)[::-1]), np.minimum(np.arange(w), np.arange(w)[::-1])
    )
    bins = np.minimum(dist, BORDER_BINS - 1)[fg_true]
    return np.stack(
        [
            np.bincount(bins, weights=fg_pred[fg_true], minlength=BORDER_BINS),
            np.bincount(bins, minlength=BORDER_BINS),
        ]
    )


def _binned_recall(found: list, column: int, edges: tuple) -> dict:
    """Fraction of true crystals found per bin of one column: {"lo-hi": [rate, n]}."""
    out = {}
    values = np.array([f[column] for f in found], dtype=float)
    hits = np.array([f[2] for f in found], dtype=bool)
    for lo, hi in itertools.pairwise(edges):
        inside = (values >= lo) & (values < hi)
        if inside.any():
            out[f"{lo:g}-{hi:g}"] = [round(float(hits[inside].mean()), 3), int(inside.sum())]
    return out


#: True-size bins (px) of ``ecd_ratio_by_true_ecd_px`` (crystals) and
#: ``d50_err_by_true_d50_px`` (frames).
ECD_BINS = (0, 8, 12, 20, 40, np.inf)
D50_BINS = (0, 10, 15, 20, 30, np.inf)


def _binned_median(pairs: list[tuple[float, float]], edges: tuple) -> dict:
    """Median of the second value per bin of the first: {"lo-hi": [median, n]}."""
    key = np.array([p[0] for p in pairs], dtype=float)
    value = np.array([p[1] for p in pairs], dtype=float)
    out = {}
    for lo, hi in itertools.pairwise(edges):
        inside = (key >= lo) & (key < hi) & np.isfinite(value)
        if inside.any():
            out[f"{lo:g}-{hi:g}"] = [round(float(np.median(value[inside])), 4), int(inside.sum())]
    return out


def _seed_summary(rows: dict[str, list[float]]) -> dict[str, float | None]:
    """One seed's mean frame IoU and median |count| and |D50| errors."""
    iou, count, d50 = rows["fg_iou"], rows["count_err"], rows["d50_err"]
    return {
        "fg_iou": float(np.mean(iou)) if iou else None,
        "count_err_median_abs": float(np.median(count)) if count else None,
        "d50_err_median_abs": float(np.median(d50)) if d50 else None,
    }


def evaluate(
    model: str | None,
    seeds: list[int],
    frames: int,
    size: int,
    min_count: int,
    tta: bool = False,
    settings: MeasureSettings | None = None,
    scenarios: tuple[str, ...] = SCENARIO_NAMES,
    resize: float | str = 1.0,
) -> dict:
    segmenter = load_segmenter(model, None, EngineSettings(tta=tta, resize=resize))
    codes = tuple(segmenter.spec.codes)
    settings = MeasureSettings() if settings is None else settings
    # Frames are judged from --min-count true crystals on (below the measurement's own
    # minimum count, which would leave them without a D50).
    settings = replace(settings, min_count=1)
    result: dict = {
        "model": segmenter.describe() if hasattr(segmenter, "describe") else str(model),
        "codes": list(codes),
        "seeds": seeds,
        "frames": frames,
        "size": size,
        "tta": tta,
        "resize": resize,
        "measure_settings": {
            k: v
            for k, v in settings.to_dict().items()
            if k in ("split", "trim_boundary", "min_confidence", "min_area_px", "edge")
        },
        "scenarios": {},
    }
    chosen: dict[str, list[float]] = {}  # resize factors auto chose, per scenario
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            pooled = np.zeros(2)  # foreground intersection, union over all frames
            pooled_particles = np.zeros(2)  # the same for the measured particles
            found: list[tuple[float, float, bool]] = []  # (area_px, blur_px, detected)
            offsets: list[float] = []  # outline offsets of matched crystals (px)
            sizes: list[tuple[float, float]] = []  # (true ECD, measured / true ECD), matched
            d50_by_size: list[tuple[float, float]] = []  # (true D50, D50 error) per frame
            border = np.zeros((2, BORDER_BINS))  # true fg pixels found, all, by border distance
            per_seed: dict[int, dict[str, list[float]]] = {}
            rows: dict[str, list[float]] = {
                k: []
                for k in (
                    "fg_iou",
                    "particle_iou",
                    "bubble_fp",
                    "f1",
                    "over_split",
                    "merged",
                    "count_err",
                    "d50_err",
                    "truth_mask_count_err",
                    "truth_mask_d50_err",
                )
            }
            for seed in seeds:
                cfg = SynthConfig(
                    frames=frames,
                    height=size,
                    width=size,
                    seed=seed,
                    scenario=scenario,
                    calibrated=False,
                )
                path = synthesize_run(Path(tmp) / f"{scenario}-{seed}.zarr", cfg)
                ds = xr.open_zarr(path)
                truth = xr.open_zarr(path, group="truth")
                from crystalseg.store import read_table

                crystals = read_table(path, "truth/crystals")
                distractors = read_table(path, "truth/distractors")
                run_seg = segmenter
                if segmenter.settings.resize == "auto":  # one factor a run, as segment_run
                    run_seg = segmenter.with_resize(auto_resize(path, segmenter).factor)
                    chosen.setdefault(scenario, []).append(run_seg.settings.resize)
                for t in range(frames):
                    image = ds["image"][t].values
                    true_labels = truth["labels"][t].values
                    pred, prob = (a[0] for a in run_seg.predict(image[None], probability=True))
                    fg_pred, fg_true = pred > 0, true_labels > 0
                    union = np.count_nonzero(fg_pred | fg_true)
                    seed_rows = per_seed.setdefault(
                        seed, {"fg_iou": [], "count_err": [], "d50_err": []}
                    )
                    border += _border_recall(fg_true, fg_pred)
                    if union:
                        inter = np.count_nonzero(fg_pred & fg_true)
                        pooled += inter, union
                        rows["fg_iou"].append(inter / union)
                        seed_rows["fg_iou"].append(inter / union)
                    # Bubble pixels that a crystal covers are crystal: only the rest count.
                    bubbles = _bubble_mask(distractors[distractors["frame"] == t], image.shape)
                    bubbles &= ~fg_true
                    if bubbles.any():
                        rows["bubble_fp"].append(float(fg_pred[bubbles].mean()))
                    countable = _countable(crystals[crystals["frame"] == t], settings.min_area_px)
                    found += _detections(countable, true_labels, fg_pred)
                    n_true, d50_true = _truth_stats(countable)
                    # The particles the measurement counts: its labels without those
                    # it drops for low confidence (edge-cut ones stay: truth has them).
                    labels = label_mask_frame(pred, settings=settings, codes=codes)
                    table, dist = measure_mask_frame(
                        pred, image, probability=prob, settings=settings, codes=codes, labels=labels
                    )
                    small = table.loc[
                        table["excluded_code"] == EXCLUDED_REASONS.index("too_small"), "label"
                    ]
                    measured = (labels > 0) & ~np.isin(labels, small.to_numpy())
                    union = np.count_nonzero(measured | fg_true)
                    if union:
                        inter = np.count_nonzero(measured & fg_true)
                        pooled_particles += inter, union
                        rows["particle_iou"].append(inter / union)
                    dropped = [EXCLUDED_REASONS.index(r) for r in ("low_confidence", "too_small")]
                    doubtful = table.loc[table["excluded_code"].isin(dropped), "label"]
                    labels[np.isin(labels, doubtful.to_numpy())] = 0
                    pieces, ids = truth_pieces(true_labels, settings.min_area_px)
                    scores = instance_scores(labels, pieces, truth_ids=ids)
                    rows["f1"].append(scores["f1"])
                    rows["over_split"].append(scores["over_split_rate"])
                    rows["merged"].append(scores["merged_rate"])
                    m = matched_areas(true_labels, labels, countable["id"].to_numpy())
                    offsets += list(offsets_of_matches(m))
                    sizes += list(
                        zip(
                            np.sqrt(4 * m["true_area"] / np.pi),
                            np.sqrt(m["area"] / m["true_area"]),
                            strict=True,
                        )
                    )
                    if n_true < min_count:
                        continue
                    truth_mask = class_mask_from_labels(true_labels, codes)
                    _, truth_dist = measure_mask_frame(
                        truth_mask, image, settings=settings, codes=codes
                    )
                    for prefix, frame_dist in (("", dist), ("truth_mask_", truth_dist)):
                        count = float(frame_dist["count_kept"][1])
                        d50 = float(frame_dist["d50_number"][1])
                        rows[f"{prefix}count_err"].append((count - n_true) / n_true)
                        rows[f"{prefix}d50_err"].append((d50 - d50_true) / d50_true)
                        if not prefix:
                            d50_by_size.append((d50_true, (d50 - d50_true) / d50_true))
                            seed_rows["count_err"].append(abs(count - n_true) / n_true)
                            seed_rows["d50_err"].append(abs(d50 - d50_true) / d50_true)
            summary = {}
            for key, values in rows.items():
                arr = np.asarray(values, dtype=float)
                if arr.size == 0:
                    continue
                if key.endswith("_err"):
                    # A frame where nothing was measured has no D50: it ranks as the worst.
                    undefined = np.isnan(arr)
                    median = float(np.median(np.where(undefined, np.inf, np.abs(arr))))
                    # None (JSON null) when most frames have no D50: Infinity is no JSON.
                    summary[key + "_median_abs"] = median if np.isfinite(median) else None
                    if not undefined.all():
                        summary[key + "_max_abs"] = float(np.nanmax(np.abs(arr)))
                        summary[key + "_mean"] = float(np.nanmean(arr))
                    summary[key + "_frames"] = int(arr.size)
                    summary[key + "_undefined_frames"] = int(undefined.sum())
                elif np.isfinite(arr).any():
                    # Frames with no crystal and no particle have no F1 (nor rates): skip them.
                    summary[key] = float(np.nanmean(arr))
            if pooled[1]:
                summary["fg_iou_pooled"] = float(pooled[0] / pooled[1])
            if pooled_particles[1]:
                summary["particle_iou_pooled"] = float(pooled_particles[0] / pooled_particles[1])
            summary["recall_by_area_px"] = _binned_recall(found, 0, AREA_BINS)
            summary["recall_by_blur_px"] = _binned_recall(found, 1, BLUR_BINS)
            if offsets:
                summary["outline_offset_px"] = {
                    "mean": float(np.mean(offsets)),
                    "median": float(np.median(offsets)),
                    "crystals": len(offsets),
                }
            if sizes:
                summary["ecd_ratio_by_true_ecd_px"] = _binned_median(sizes, ECD_BINS)
            if d50_by_size:
                summary["d50_err_by_true_d50_px"] = _binned_median(d50_by_size, D50_BINS)
            # The clear-scene bars hold per frame: count within 10 %, D50 within 5 %.
            for prefix in ("", "truth_mask_"):
                count_err = np.abs(rows[f"{prefix}count_err"])
                d50_err = np.abs(rows[f"{prefix}d50_err"])
                if count_err.size:
                    within = (count_err <= COUNT_BAR) & (d50_err <= D50_BAR)
                    summary[f"{prefix}frames_within_bars"] = float(within.mean())
            if border[1].any():
                summary["fg_recall_by_border_distance_px"] = {
                    (f"{k}" if k < BORDER_BINS - 1 else f"{k}+"): round(float(r), 3)
                    for k, r in enumerate(border[0] / np.maximum(border[1], 1))
                }
            summary["per_seed"] = {str(seed): _seed_summary(r) for seed, r in per_seed.items()}
            if scenario in chosen:
                summary["resize_chosen"] = chosen[scenario]
            result["scenarios"][scenario] = summary
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-frames", dest="frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (8 views)")
    parser.add_argument(
        "--resize",
        type=lambda v: v if v == "auto" else float(v),
        default=1.0,
        help="engine resize factor, or auto: one factor a run, chosen as segment_run does",
    )
    parser.add_argument("--split", default="auto", help="measurement split method")
    parser.add_argument(
        "--no-trim-boundary",
        action="store_true",
        help="measure the outlines as the model draws them (MeasureSettings.trim_boundary off)",
    )
    parser.add_argument(
        "--min-area",
        type=int,
        default=MeasureSettings.min_area_px,
        help="least particle area in px, for the measurement and the truth alike",
    )
    parser.add_argument(
        "--min-confidence", type=float, default=None, help="default: MeasureSettings'; <0 off"
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIO_NAMES, default=list(SCENARIO_NAMES)
    )
    args = parser.parse_args()
    confidence = (
        MeasureSettings.min_confidence if args.min_confidence is None else args.min_confidence
    )
    settings = MeasureSettings(
        split=args.split,
        trim_boundary=not args.no_trim_boundary,
        min_confidence=None if confidence < 0 else confidence,
        min_area_px=args.min_area,
    )
    result = evaluate(
        args.model,
        args.seeds,
        args.frames,
        args.size,
        args.min_count,
        args.tta,
        settings,
        tuple(args.scenarios),
        args.resize,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
