"""Instance separation: today's rim-class split against the distance split, on held-out data.

Two steps, so that the model runs once and the post-processing many times:

``predict``
    Segments frames with a model (the bundled one, or ``--model``) and writes, per
    frame, one ``.npz`` with the class mask, the foreground probability and the true
    instance ids: ``dsb:train`` / ``dsb:test`` (the real images of
    ``../shared/data/dsb2018``) and ``SCENARIO:SEED:FRAMES`` (a ``crystalseg synth``
    run of 512² frames).
``score``
    Labels every cached frame with each method (``label_instances`` as the measurement
    calls it: least area 10 px, trimming, joining of occluded pieces, then the 0.8
    confidence filter of ``measure_mask_frame``) and prints JSON per group of frames:
    matched F1 at IoU 0.5 pooled over the group's frames (``f1``), its precision and
    recall, the over-split and merge rates, the median |relative error| of the
    per-frame count and number-weighted D50 (ECD) against the true instances measured
    with the same settings (synthetic frames: those with at least ``--min-true`` true
    crystals; real images: all), and the CPU time of the labelling per 512² frame
    (``ms_per_512``, the mean over the group's frames scaled by their pixel count).

Methods: ``hybrid`` (today's default: boundary-class markers split at their necks),
``boundary`` (boundary-class markers alone) and ``distance`` with a grid of
:class:`~crystalseg.measure.instances.DistanceSplit` settings (``--grid``), or the
defaults alone. The grid is to be judged on selection groups only (``dsb-train``,
selection seeds) and the chosen setting reported on the others (``dsb-test``, fresh
seeds); ``--select`` names the selection groups and adds, per method, the mean of
their pooled F1 (``selection_f1``), the criterion used.

Usage::

    python benchmarks/instances.py predict OUT_DIR [--model DIR] dsb:train needles:601:5 ...
    python benchmarks/instances.py score DIR [DIR ...] [--grid] [--select dsb-train ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from crystalseg.measure import EXCLUDED_REASONS, MeasureSettings, measure_mask_frame
from crystalseg.measure.instances import (
    DistanceSplit,
    filter_and_renumber,
    instance_scores,
    label_instances,
    truth_pieces,
)

log = logging.getLogger("benchmarks.instances")
DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"
CODES = ("background", "crystal", "boundary")
MIN_AREA = 10
#: The grid of the distance split studied with ``--grid``.
GRID = {
    "rim_weight": (0.5, 1.0),
    "min_depth_px": (1.0, 2.0),
    "neck_ratio": (0.7, 1.0),
    "smooth_px": (1.0,),
}


def predict(out: Path, model: str | None, sources: list[str], dsb: Path) -> None:
    """Segment the frames of ``sources`` and cache them in ``out`` (one npz a frame)."""
    import xarray as xr

    from crystalseg.segment import EngineSettings, load_segmenter
    from crystalseg.segment.run import AUTO_RESIZE_FRAMES
    from crystalseg.synth import SynthConfig, synthesize_run
    from crystalseg.train.data import read_image
    from crystalseg.train.masks import instance_labels, read_mask

    out.mkdir(parents=True, exist_ok=True)
    # As evaluate and measure do: one resize factor for all frames of a folder or run.
    base = load_segmenter(model, None, EngineSettings(resize="auto"))
    factors: dict[str, float] = {}

    def save_all(prefix: str, frames: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        pick = np.unique(
            np.linspace(0, len(frames) - 1, min(AUTO_RESIZE_FRAMES, len(frames))).astype(int)
        )
        seg = base.resolved([frames[int(k)][1] for k in pick])
        factors[prefix] = float(seg.settings.resize)
        for name, image, truth in frames:
            pred, prob = (a[0] for a in seg.predict(image[None], probability=True))
            np.savez_compressed(out / f"{name}.npz", pred=pred, prob=prob, truth=truth)

    for source in sources:
        if source.startswith("dsb:"):
            split = source[4:]
            frames = []
            for img in sorted((dsb / split).glob("*.png")):
                if not img.stem.endswith("_mask"):
                    m = img.with_name(img.stem + "_mask.png")
                    truth = instance_labels(read_mask(m), m.name)
                    frames.append((f"dsb-{split}-{img.stem}", read_image(img), truth))
            save_all(f"dsb-{split}", frames)
            continue
        scenario, seed, frames = source.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SynthConfig(
                frames=int(frames),
                height=512,
                width=512,
                seed=int(seed),
                scenario=scenario,
                calibrated=False,
            )
            path = synthesize_run(Path(tmp) / "run.zarr", cfg)
            ds, truth = xr.open_zarr(path), xr.open_zarr(path, group="truth")
            run = [
                (
                    f"synth-{scenario}-{seed}-{t}",
                    np.asarray(ds["image"][t].values),
                    np.asarray(truth["labels"][t].values),
                )
                for t in range(int(frames))
            ]
            save_all(f"{scenario}-{seed}", run)
    (out / "resize.json").write_text(json.dumps(factors, indent=1))


def group_of(name: str) -> str:
    """``dsb-train``, ``dsb-test`` or ``SCENARIO-SEED`` of a cached frame's name."""
    parts = name.split("-")
    return "-".join(parts[:2]) if parts[0] == "dsb" else "-".join(parts[1:3])


def methods(grid: bool) -> dict[str, dict]:
    """Method name -> keyword arguments of ``label_instances``."""
    out: dict[str, dict] = {"hybrid": {"split": "hybrid"}}
    if grid:
        out["boundary"] = {"split": "boundary"}
    combos = itertools.product(*GRID.values()) if grid else [None]
    for combo in combos:
        ds = (
            DistanceSplit()
            if combo is None
            else DistanceSplit(**dict(zip(GRID, combo, strict=True)))
        )
        name = "distance" if combo is None else "distance" + json.dumps(list(combo))
        out[name] = {"split": "distance", "distance": ds}
    return out


def truth_stats(truth: np.ndarray, settings: MeasureSettings) -> tuple[float, float]:
    """Count and number-weighted D50 of the true instances, measured as the particles."""
    true = filter_and_renumber(truth.astype(np.int64), MIN_AREA)
    _, dist = measure_mask_frame(
        (true > 0).astype(np.uint8),
        None,
        settings=settings,
        codes=("background", "crystal"),
        labels=true,
    )
    return float(dist["count_kept"][1]), float(dist["d50_number"][1])


def score_frame(frame: dict, kwargs: dict, settings: MeasureSettings) -> dict[str, float]:
    """Instance, count and D50 figures of one method on one cached frame."""
    pred, prob, truth = frame["pred"], frame["prob"], frame["truth"]
    start = time.process_time()
    labels = label_instances(pred, codes=CODES, min_area_px=MIN_AREA, keep_small=True, **kwargs)
    seconds = time.process_time() - start
    table, dist = measure_mask_frame(
        pred, None, probability=prob, settings=settings, codes=CODES, labels=labels
    )
    dropped = [EXCLUDED_REASONS.index(r) for r in ("low_confidence", "too_small")]
    doubtful = table.loc[table["excluded_code"].isin(dropped), "label"].to_numpy()
    counted = np.where(np.isin(labels, doubtful), 0, labels)
    pieces, ids = truth_pieces(truth, MIN_AREA)
    s = instance_scores(counted, pieces, truth_ids=ids)
    return {
        "matched": s["matched"],
        "n_pred": s["n_pred"],
        "n_true": s["n_true"],
        "over_split": s["over_split"],
        "merged": s["merged"],
        "count": float(dist["count_kept"][1]),
        "d50": float(dist["d50_number"][1]),
        "seconds_per_512": seconds * 512**2 / pred.size,
    }


def summarize(rows: list[dict], truths: list[tuple[float, float]], min_true: int) -> dict:
    """Pooled F1 and per-frame count / D50 errors of one method on one group."""
    tot = {k: sum(r[k] for r in rows) for k in ("matched", "n_pred", "n_true")}
    count_err, d50_err = [], []
    for r, (n_true, d50_true) in zip(rows, truths, strict=True):
        if n_true >= min_true and n_true > 0:
            count_err.append(abs(r["count"] - n_true) / n_true)
            d50_err.append(abs(r["d50"] - d50_true) / d50_true if r["count"] else np.inf)
    n_true = max(tot["n_true"], 1)
    return {
        "f1": 2 * tot["matched"] / max(tot["n_pred"] + tot["n_true"], 1),
        "precision": tot["matched"] / max(tot["n_pred"], 1),
        "recall": tot["matched"] / n_true,
        "over_split_rate": sum(r["over_split"] for r in rows) / n_true,
        "merged_rate": sum(r["merged"] for r in rows) / n_true,
        "count_err_median_abs": float(np.median(count_err)) if count_err else None,
        "d50_err_median_abs": float(np.median(d50_err)) if d50_err else None,
        "frames": len(rows),
        "frames_scored": len(count_err),
        "true_instances": tot["n_true"],
        "ms_per_512": 1000 * float(np.mean([r["seconds_per_512"] for r in rows])),
    }


def score(
    dirs: list[Path], grid: bool, select: list[str], min_true: int, groups: list[str]
) -> dict:
    settings = MeasureSettings(min_count=1)
    chosen = methods(grid)
    result: dict = {"min_true_synth": min_true, "selection_groups": select, "sets": {}}
    for folder in dirs:
        frames_by_group: dict[str, list[Path]] = defaultdict(list)
        for f in sorted(folder.glob("*.npz")):
            group = group_of(f.stem)
            if not groups or group in groups:
                frames_by_group[group].append(f)
        out: dict = {}
        for group, files in sorted(frames_by_group.items()):
            log.info("%s: %d frames", group, len(files))
            frames = [dict(np.load(f)) for f in files]
            truths = [truth_stats(fr["truth"], settings) for fr in frames]
            # Real images: every image; synthetic frames: those with enough crystals.
            floor = 1 if group.startswith("dsb") else min_true
            out[group] = {
                name: summarize([score_frame(fr, kw, settings) for fr in frames], truths, floor)
                for name, kw in chosen.items()
            }
        for name in chosen:
            picked = [out[g][name]["f1"] for g in select if g in out]
            if picked:
                out.setdefault("selection_f1", {})[name] = float(np.mean(picked))
        result["sets"][folder.name] = out
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("predict")
    p.add_argument("out", type=Path)
    p.add_argument("sources", nargs="+")
    p.add_argument("--model", default=None)
    p.add_argument("--dsb", type=Path, default=DSB)
    s = sub.add_parser("score")
    s.add_argument("dirs", type=Path, nargs="+")
    s.add_argument("--grid", action="store_true")
    s.add_argument("--select", nargs="*", default=[])
    s.add_argument("--min-true", type=int, default=30)
    s.add_argument("--groups", nargs="*", default=[], help="only these groups (default all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.step == "predict":
        predict(args.out, args.model, args.sources, args.dsb)
    else:
        print(
            json.dumps(
                score(args.dirs, args.grid, args.select, args.min_true, args.groups), indent=1
            )
        )


if __name__ == "__main__":
    main()
