"""Time the measurement stage: one frame, a whole run, and memory against run length.

Prints one JSON document:

* ``frame``: a 1024 × 1024 frame with about 500 particles (ellipses and polygons
  drawn in random order, so some touch or overlap; ``bench_features.make_frame``)
  measured by ``measure_frame`` and by ``skimage.measure.regionprops_table`` with
  the same properties (frames/s of each and their ratio), and the whole
  per-frame pipeline from the class mask (``label_instances`` with each split
  method + ``measure_frame`` + distributions) against its scikit-image
  counterpart (``skimage.measure.label`` + ``regionprops_table``).
* ``run``: ``measure_run`` end to end on a 200-frame run of such frames (mask
  given, so no segmentation), frames/s with the local process pool and with
  threads.
* ``memory``: peak RSS of ``measure_run`` (threads, one process, measured in a
  fresh subprocess) on runs of 200 and 2,000 frames of 256 × 256 px with the
  same particle density; flat memory means the same peak for both.

``--accuracy`` instead evaluates the instance splitting on synthetic runs
against their ground truth (true class masks, and a 3-class version with the
inner boundary of every crystal as class "boundary"), per scenario: matched F1
at IoU 0.5 against the visible pieces of the crystals, over-split and merge
rates, count error, and the error of the number-based D50 and of the count
against the truth table (edge crystals excluded, same size limit).

    python benchmarks/bench_measure.py [--n-frames 200] [--workers N]
    python benchmarks/bench_measure.py --accuracy [--seeds 100-104]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import SKIMAGE_PROPERTIES, _time, make_frame

from crystalseg.classes import class_mask_from_labels
from crystalseg.dims import DEFAULT_CODES, FRAME_DIMS
from crystalseg.measure import (
    MeasureSettings,
    instance_scores,
    label_instances,
    measure_frame,
    measure_mask_frame,
    measure_run,
    weighted_quantile,
)
from crystalseg.measure.instances import truth_pieces
from crystalseg.store import begin_stage, create_array, create_run

# --------------------------------------------------------------------------- one frame


def bench_frame(repeat: int) -> dict:
    from skimage.measure import label as sk_label
    from skimage.measure import regionprops_table

    labels, image16 = make_frame(1024, 500, 0)
    mask = (labels > 0).astype(np.uint8)
    settings = MeasureSettings()

    def ours() -> object:
        return measure_frame(labels, image16, pixel_size_um=0.5)

    def reference() -> object:
        return regionprops_table(labels, image16, properties=SKIMAGE_PROPERTIES, spacing=(0.5, 0.5))

    def sk_pipeline() -> object:
        lab = sk_label(mask, connectivity=2)
        return regionprops_table(lab, image16, properties=SKIMAGE_PROPERTIES, spacing=(0.5, 0.5))

    t_ours = _time(ours, repeat)
    t_ref = _time(reference, max(1, repeat // 2))
    t_sk_pipe = _time(sk_pipeline, max(1, repeat // 2))
    splits = {}
    for split in ("none", "watershed"):
        t_lab = _time(lambda s=split: label_instances(mask, split=s, min_area_px=10), repeat)
        s_set = MeasureSettings(split=split)
        t_all = _time(
            lambda s=s_set: measure_mask_frame(mask, image16, settings=s, pixel_size_um=0.5),
            repeat,
        )
        splits[split] = {"label_instances_s": t_lab, "pipeline_s": t_all, "pipeline_fps": 1 / t_all}
    codes3 = ("background", "crystal", "boundary")
    mask3 = class_mask_from_labels(labels, codes3)
    t_lab3 = _time(lambda: label_instances(mask3, codes=codes3, min_area_px=10), repeat)
    splits["boundary"] = {"label_instances_s": t_lab3}
    return {
        "shape": list(labels.shape),
        "particles": int(len(np.unique(labels)) - 1),
        "measure_frame_s": t_ours,
        "measure_frame_fps": 1 / t_ours,
        "regionprops_table_s": t_ref,
        "regionprops_table_fps": 1 / t_ref,
        "speedup_features": t_ref / t_ours,
        "pipeline_from_mask": splits,
        "skimage_label_plus_regionprops_s": t_sk_pipe,
        "speedup_pipeline_watershed_vs_skimage_no_split": t_sk_pipe
        / splits["watershed"]["pipeline_s"],
        "settings": settings.to_dict(),
    }


# --------------------------------------------------------------------------- runs


def make_run(path: Path, frames: int, size: int, particles: int, *, distinct: int = 8) -> None:
    """A run store of ``frames`` frames with their class mask (frames cycle with shifts)."""
    pool = [make_frame(size, particles, seed) for seed in range(distinct)]
    images = [(img >> 8).astype(np.uint8) for _, img in pool]
    masks = [(lab > 0).astype(np.uint8) for lab, _ in pool]
    writer = create_run(
        path,
        shape=(frames, size, size),
        dtype="uint8",
        time_s=np.arange(frames, dtype=np.float64) * 5.0,
        pixel_size_um=0.5,
        source={"benchmark": True},
        overwrite=True,
    )
    fpc = writer.frames_per_chunk
    mask_arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=(frames, size, size),
        dtype="uint8",
        chunks=(fpc, size, size),
        attrs={"codes": list(DEFAULT_CODES)},
    )
    for start in range(0, frames, fpc):
        stop = min(start + fpc, frames)
        idx = [(t % distinct, 7 * (t // distinct)) for t in range(start, stop)]
        writer.write_frames(start, np.stack([np.roll(images[i], s, axis=1) for i, s in idx]))
        mask_arr[start:stop] = np.stack([np.roll(masks[i], s, axis=1) for i, s in idx])
        writer.mark_done(start, stop)
    writer.finish()
    stage = begin_stage(
        path, "segment", settings={"benchmark": True}, n_frames=frames, frames_per_chunk=fpc
    )
    stage.mark_done(0, frames)
    stage.finish()


def bench_run(frames: int, workers: int | None, tmp: Path) -> dict:
    path = tmp / "run1024.zarr"
    t0 = time.perf_counter()
    make_run(path, frames, 1024, 500)
    made = time.perf_counter() - t0
    out: dict = {"frames": frames, "shape": [1024, 1024], "make_run_s": made}
    for scheduler in ("processes", "threads"):
        t0 = time.perf_counter()
        measure_run(path, scheduler=scheduler, num_workers=workers, overwrite=True)
        dt = time.perf_counter() - t0
        out[scheduler] = {"s": dt, "frames_per_s": frames / dt}
    out["workers"] = workers or os.cpu_count()
    return out


def _proc_status_mib(field: str) -> float:
    """A memory figure of this process from /proc (Linux), in MiB; NaN elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _child_memory(path: str) -> None:
    """Run in a fresh process: measure a store with threads, print RSS figures.

    VmHWM (the peak RSS of this process image) rather than ru_maxrss, which
    Linux carries over from the parent across fork and exec.
    """
    base = _proc_status_mib("VmRSS")
    t0 = time.perf_counter()
    measure_run(path, scheduler="threads", overwrite=True)
    dt = time.perf_counter() - t0
    peak = _proc_status_mib("VmHWM")
    if peak != peak:  # not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "rss_before_mib": base, "s": dt}))


def bench_memory(tmp: Path, frame_counts: tuple[int, ...]) -> dict:
    out = {}
    for frames in frame_counts:
        path = tmp / f"mem{frames}.zarr"
        make_run(path, frames, 256, 33)
        res = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(res.stdout.strip().splitlines()[-1])
        figures["frames_per_s"] = frames / figures["s"]
        out[str(frames)] = figures
        shutil.rmtree(path)
    peaks = [v["peak_rss_mib"] for v in out.values()]
    out["ratio_peak_longest_to_shortest"] = peaks[-1] / peaks[0]
    return out


# --------------------------------------------------------------------------- accuracy


def evaluate_accuracy(seeds: list[int], frames_at: tuple[int, ...], size: int) -> dict:
    from crystalseg.synth import SCENARIO_NAMES, SynthConfig, SyntheticRun

    settings = MeasureSettings(min_count=1)  # a D50 for every frame, however few crystals
    limit = settings.min_area_px
    methods = {
        "watershed": ("background", "crystal"),
        "boundary": ("background", "crystal", "boundary"),
    }
    result: dict = {
        "seeds": seeds,
        "frames": list(frames_at),
        "size": size,
        "min_area_px": limit,
        "scenarios": {},
    }
    for scenario in SCENARIO_NAMES:
        rows: dict[str, list[dict]] = {m: [] for m in methods}
        for seed in seeds:
            cfg = SynthConfig(
                frames=max(frames_at) + 1, height=size, width=size, seed=seed, scenario=scenario
            )
            run = SyntheticRun(cfg)
            for t in frames_at:
                frame = run.render_truth(t)
                labels = frame.labels
                pieces, piece_ids = truth_pieces(labels, limit)
                truth = frame.crystals
                truth = truth[(truth["area_px"] >= limit) & ~truth["touches_edge"]]
                d50_true = float(weighted_quantile(truth["ecd_px"].to_numpy(), 0.5)[0])
                for method, codes in methods.items():
                    mask = class_mask_from_labels(labels, codes)
                    pred = label_instances(mask, codes=codes, min_area_px=limit, split=method)
                    scores = instance_scores(pred, pieces, truth_ids=piece_ids)
                    _, dist = measure_mask_frame(mask, None, settings=settings, codes=codes)
                    n_meas = int(dist["count_kept"][1])
                    scores["count_error_vs_truth_table"] = (
                        (n_meas - len(truth)) / len(truth) if len(truth) else np.nan
                    )
                    d50 = float(dist["d50_number"][1])
                    scores["d50_error_vs_truth_table"] = d50 / d50_true - 1 if d50_true else np.nan
                    rows[method].append(scores)
        summary = {}
        for method, items in rows.items():
            agg = {}
            for key in (
                "f1",
                "over_split_rate",
                "merged_rate",
                "count_error",
                "count_error_vs_truth_table",
                "d50_error_vs_truth_table",
            ):
                vals = np.array([r[key] for r in items], dtype=float)
                agg[key] = float(np.nanmean(vals))
            for key in ("count_error_vs_truth_table", "d50_error_vs_truth_table"):
                vals = np.abs(np.array([r[key] for r in items], dtype=float))
                agg[f"abs_{key}_mean"] = float(np.nanmean(vals))
                agg[f"abs_{key}_max"] = float(np.nanmax(vals))
            agg["true_pieces"] = int(sum(r["n_true"] for r in items))
            summary[method] = agg
        result["scenarios"][scenario] = summary
    return result


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", dest="frames", type=int, default=200)
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--seeds", default="100-104")
    parser.add_argument("--accuracy-size", type=int, default=512)
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        _child_memory(args.child_memory)
        return
    if args.accuracy:
        lo, _, hi = args.seeds.partition("-")
        seeds = list(range(int(lo), int(hi or lo) + 1))
        result = evaluate_accuracy(seeds, (4, 9), args.accuracy_size)
        print(json.dumps(result, indent=2))
        return

    result: dict = {"benchmark": "crystalseg measure"}
    result["frame"] = bench_frame(args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench_measure_") as tmp:
        if not args.skip_run:
            result["run"] = bench_run(args.frames, args.workers, Path(tmp))
        result["memory"] = bench_memory(Path(tmp), tuple(args.memory_frames))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
