"""The accuracy rule of the statistics issue, frame by frame and window by window.

The rule: D50 and count accuracy are judged on frames (or pooled windows of
consecutive frames) holding at least 30 counted true crystals: median |relative
error| <= 5 % for the number-based D50 and <= 10 % for the count, 90th percentile
<= 10 % and <= 15 %. Frames with fewer crystals are judged by whether the truth lies
inside the stated 95 % interval.

For every synthetic scenario (fresh seeds: the default model trains on seeds >= 1000
and ``benchmarks/accuracy.py`` reports seeds 1 and 2) and for the independent
renderer of ``benchmarks/other_renderer.py`` (its five looks; independent frames,
stacked as a run), this writes the frames into a run store and runs the user's path:
``measure_run`` segments them with the bundled model (or ``--model``) and measures
them with default settings plus ``window`` (``--window`` frames), then compares with
the truth:

- truth per frame: the true crystals a measurement counts (whole, at least
  ``min_area_px``), their count and number-based D50 (ECD, px, the ECD of the true
  mask); per window: the same crystals pooled over the window's frames (a crystal
  counted once per frame, as the measurement counts it);
- ``frames`` / ``windows``: the share qualifying (>= 30 true crystals), the median and
  90th percentile |relative error| of count and D50 over those, and whether they
  pass the rule;
- ``interval``: over the frames with a stated D50 interval, the share whose interval
  holds the frame's true D50 (all frames, and those with < 30 true crystals); the
  frames below ``min_count`` (no D-value); the same for windows.

Baseline in the same run: the same figures for the true masks (``truth_mask``),
measured with the same settings, which separates the model's errors from those of
splitting and measuring.

Prints one JSON document. Usage::

    python benchmarks/accuracy_rule.py [--model DIR] [--n-frames 10] [--size 512]
        [--seeds 501] [--window 5] [--scenarios clear ...] [--looks bright-field ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from crystalseg.classes import class_mask_from_labels
from crystalseg.dims import FRAME_DIMS
from crystalseg.measure import MeasureSettings, measure_frame, measure_run
from crystalseg.measure.distributions import weighted_quantile
from crystalseg.measure.windows import WINDOW_GROUP, assign_windows
from crystalseg.store import create_array, create_run, read_table
from crystalseg.synth import SCENARIO_NAMES, SynthConfig, synthesize_run

sys.path.insert(0, str(Path(__file__).parent))
from other_renderer import LOOKS, render

LEAST = 30
BARS = {"d50": (0.05, 0.10), "count": (0.10, 0.15)}  # (median, p90) of |relative error|


def _truth_from_labels(labels: np.ndarray, min_area: int) -> list[np.ndarray]:
    """ECD (px) of the countable true crystals of every frame of ``labels`` (t, y, x)."""
    out = []
    for frame in labels:
        table = measure_frame(frame)
        keep = (table["area"] >= min_area) & ~table["touches_edge"]
        out.append(table.loc[keep, "ecd"].to_numpy())
    return out


def _truth_from_synth(path: Path, frames: int, min_area: int) -> list[np.ndarray]:
    """ECD (px) of the countable true crystals of every frame of a synthetic run, from
    its truth table (as ``benchmarks/accuracy.py`` takes them)."""
    crystals = read_table(path, "truth/crystals")
    crystals = crystals[(crystals["area_px"] >= min_area) & ~crystals["touches_edge"]]
    return [crystals.loc[crystals["frame"] == t, "ecd_px"].to_numpy() for t in range(frames)]


def _errors(measured_count, measured_d50, truth: list[np.ndarray]) -> dict:
    n_true = np.array([len(t) for t in truth])
    d50_true = np.array([weighted_quantile(t, 0.5)[0] if len(t) else np.nan for t in truth])
    ok = n_true >= LEAST
    out: dict = {"units": len(truth), "qualifying": int(ok.sum()), "share": float(ok.mean())}
    if ok.any():
        count_err = np.abs(measured_count[ok] - n_true[ok]) / n_true[ok]
        d50_err = np.abs(measured_d50[ok] - d50_true[ok]) / d50_true[ok]
        d50_err = np.where(np.isnan(d50_err), np.inf, d50_err)  # no D50: the worst
        for name, err in (("count", count_err), ("d50", d50_err)):
            median, p90 = float(np.median(err)), float(np.percentile(err, 90))
            out[f"{name}_median_abs"] = round(median, 4) if np.isfinite(median) else None
            out[f"{name}_p90_abs"] = round(p90, 4) if np.isfinite(p90) else None
            out[f"{name}_pass"] = bool(median <= BARS[name][0] and p90 <= BARS[name][1])
        out["pass"] = bool(out["count_pass"] and out["d50_pass"])
    return out, n_true, d50_true


def _coverage(ds: xr.Dataset, n_true: np.ndarray, d50_true: np.ndarray) -> dict:
    lower = ds["d50_number_lower"].values
    upper = ds["d50_number_upper"].values
    stated = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(d50_true)
    inside = (lower <= d50_true) & (d50_true <= upper)
    few = n_true < LEAST
    out = {
        "with_interval": int(stated.sum()),
        "below_min_count": int(np.asarray(ds["below_min_count"].values & (n_true > 0)).sum()),
    }
    if stated.any():
        out["coverage_all"] = round(float(inside[stated].mean()), 3)
    if (stated & few).any():
        out["coverage_below_30"] = round(float(inside[stated & few].mean()), 3)
        out["frames_below_30_with_interval"] = int((stated & few).sum())
    return out


def judge(path: Path, truth: list[np.ndarray], window: str) -> dict:
    """Frame- and window-level figures of a measured run against its true crystals."""
    psd = xr.open_zarr(path, group="psd").load()
    win = xr.open_zarr(path, group=WINDOW_GROUP).load()
    frames, n_true, d50_true = _errors(
        psd["count_kept"].values.astype(float), psd["d50_number"].values, truth
    )
    frames["interval"] = _coverage(psd, n_true, d50_true)
    index = assign_windows(psd["time"].values, window)
    pooled = [
        np.concatenate([truth[f] for f in np.flatnonzero(index == w)])
        for w in range(int(index.max()) + 1)
    ]
    windows, wn, wd = _errors(
        win["count_kept"].values.astype(float), win["d50_number"].values, pooled
    )
    windows["interval"] = _coverage(win, wn, wd)
    return {"frames": frames, "windows": windows}


def _store_mask(path: Path, mask: np.ndarray, codes: tuple[str, ...]) -> None:
    arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=mask.shape,
        dtype=np.uint8,
        chunks=(2, *mask.shape[1:]),
        attrs={"codes": list(codes), "flag_meanings": " ".join(codes)},
    )
    arr[:] = mask


def run_pair(
    image_run: Path,
    true_labels: np.ndarray,
    truth: list[np.ndarray],
    model,
    settings: MeasureSettings,
    codes,
    tmp: Path,
) -> dict:
    """Measure ``image_run`` with the model, and a copy with the true mask; judge both."""
    import shutil

    baseline = tmp / f"{image_run.stem}-truth.zarr"
    shutil.copytree(image_run, baseline)
    _store_mask(baseline, class_mask_from_labels(true_labels, codes), codes)
    measure_run(baseline, settings=settings, scheduler="threads", num_workers=2)
    measure_run(image_run, settings=settings, model=model, scheduler="threads", num_workers=2)
    return {
        "model": judge(image_run, truth, settings.window),
        "truth_mask": judge(baseline, truth, settings.window),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint DIR (default: bundled)")
    parser.add_argument("--n-frames", dest="frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[501])
    parser.add_argument("--window", default="5", help="frames (or seconds, '60s') per window")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIO_NAMES))
    parser.add_argument("--looks", nargs="*", default=list(LOOKS))
    args = parser.parse_args()
    from crystalseg.segment import EngineSettings, load_segmenter

    model = load_segmenter(args.model, None, EngineSettings())
    codes = tuple(model.spec.codes)
    settings = MeasureSettings(window=args.window)
    result: dict = {
        "rule": "frames/windows with >= 30 true crystals: median |rel err| <= 5 % D50, <= 10 % "
        "count; p90 <= 10 % and <= 15 %",
        "frames": args.frames,
        "size": args.size,
        "seeds": args.seeds,
        "window": settings.window,
        "min_count": settings.min_count,
        "scenarios": {},
        "other_renderer": {},
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for scenario in args.scenarios:
            for seed in args.seeds:
                cfg = SynthConfig(
                    frames=args.frames,
                    height=args.size,
                    width=args.size,
                    seed=seed,
                    scenario=scenario,
                    calibrated=False,
                )
                path = synthesize_run(tmp / f"{scenario}-{seed}.zarr", cfg)
                labels = np.asarray(xr.open_zarr(path, group="truth")["labels"].values)
                truth = _truth_from_synth(path, args.frames, settings.min_area_px)
                result["scenarios"][f"{scenario}/{seed}"] = run_pair(
                    path, labels, truth, model, settings, codes, tmp
                )
        for look in args.looks:
            pairs = [render(1000 + k, look, size=args.size) for k in range(args.frames)]
            images = np.stack([p[0] for p in pairs])
            labels = np.stack([p[1] for p in pairs])
            path = tmp / f"other-{look}.zarr"
            writer = create_run(
                path,
                shape=images.shape,
                dtype=np.uint8,
                time_s=np.arange(args.frames) * 10.0,
                pixel_size_um=None,
                source={"renderer": "benchmarks/other_renderer.py", "look": look},
            )
            writer.write_frames(0, images)
            writer.mark_done(0, args.frames)
            writer.finish()
            truth = _truth_from_labels(labels, settings.min_area_px)
            result["other_renderer"][look] = run_pair(
                path, labels, truth, model, settings, codes, tmp
            )
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
