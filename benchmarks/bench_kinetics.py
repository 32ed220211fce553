"""Kinetics: speed and memory of tracking + kinetics, and accuracy against synthetic truth.

Prints one JSON document. Parts (choose with ``--parts``):

* ``scale``: tracking + growth + nucleation on a streamed particle table of
  ``--crystals`` crystals per frame (``simulate_frames``: no images, the table of
  a long run made frame by frame), at 200 and at ``--n-frames`` frames, each in its
  own process: frames/s, and peak memory (max RSS) beside the baseline of the
  same process that only makes the frames. The chord lengths, which need the
  masks, are timed per frame on a mask of the same crowding (``cld_s_per_frame``).
* ``linkers``: trackpy (what the stage uses) against laptrack on the same
  drift-corrected coordinates of a synthetic run's true-mask particles: MOTA,
  IDF1, identity switches per 100 tracks, seconds.
* ``accuracy``: ``crystalseg synth`` runs (fresh seeds) per scenario, measured on
  the true mask (stored as the segmentation) and, with ``--model``, on the bundled
  model's mask: tracking scores (particles matched to true crystals by overlap,
  IoU >= 0.5), population growth rate against the true rates of the tracked
  crystals, nucleation onset against the birth of the first nucleus seen being
  born in the field, birth count against the true nuclei first seen whole in the
  field (the same field and time, so it is the birth rate's error).

Example: ``python benchmarks/bench_kinetics.py --parts scale --n-frames 2000``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

FRAME_SHAPE = (1024, 1024)


# --------------------------------------------------------------------------- scale


def _scale_child(n_frames: int, crystals: int, baseline: bool) -> dict[str, Any]:
    from crystalseg.kinetics.accuracy import simulate_frames
    from crystalseg.kinetics.book import POINT_COLUMNS, TrackBook
    from crystalseg.kinetics.growth import GrowthSettings
    from crystalseg.kinetics.nucleation import NucleationSettings
    from crystalseg.kinetics.tracking import TrackSettings, link_stream

    frames = simulate_frames(
        n_frames=n_frames,
        crystals_per_frame=crystals,
        frame_shape=FRAME_SHAPE,
        drift_px=0.02,
        onset_frame=n_frames // 3,
        births_per_frame=0.05,
        seed=1,
    )
    start = time.perf_counter()
    rows_seen = 0
    if baseline:
        for table in frames:
            rows_seen += len(table)
    else:
        # the points go to disk as the stage writes them: a zarr array per column
        folder = tempfile.mkdtemp()
        store = zarr.open_group(folder, mode="w")
        sinks = {
            name: store.create_array(name, shape=(0,), chunks=(1 << 16,), dtype=dtype)
            for name, dtype in POINT_COLUMNS.items()
        }

        buffer: list[dict[str, np.ndarray]] = []

        def flush() -> None:
            for name, sink in sinks.items():
                sink.append(np.concatenate([b[name] for b in buffer]))
            buffer.clear()

        def write(points: dict[str, np.ndarray]) -> None:
            buffer.append(points)
            if sum(len(b["frame"]) for b in buffer) >= 1 << 16:
                flush()

        settings = TrackSettings()
        book = TrackBook(
            tracking=settings,
            growth=GrowthSettings(),
            nucleation=NucleationSettings(),
            time_s=np.arange(n_frames) * 10.0,
            frame_shape=FRAME_SHAPE,
            pixel_size_um=1.0,
            on_points=write,
        )
        for linked in link_stream(frames, settings=settings, pixel_size_um=1.0):
            book.add(linked)
        if buffer:
            flush()
        book.finish()
        rows_seen = int(sinks["track_id"].shape[0])
        shutil.rmtree(folder)
    seconds = time.perf_counter() - start
    return {
        "frames": n_frames,
        "rows": rows_seen,
        "seconds": round(seconds, 2),
        "frames_per_s": round(n_frames / seconds, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(n_frames: int, crystals: int, baseline: bool) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            json.dumps({"n_frames": n_frames, "crystals": crystals, "baseline": baseline}),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cld_seconds(crystals: int) -> float:
    from crystalseg.kinetics.cld import ChordSettings, frame_cld

    rng = np.random.default_rng(0)
    labels = np.zeros(FRAME_SHAPE, dtype=np.int32)
    yy, xx = np.mgrid[: FRAME_SHAPE[0], : FRAME_SHAPE[1]]
    for i in range(crystals):
        cy, cx = rng.uniform(20, FRAME_SHAPE[0] - 20, 2)
        r = rng.uniform(3, 15)
        box = (slice(int(cy - r), int(cy + r) + 1), slice(int(cx - r), int(cx + r) + 1))
        disc = (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2 <= r * r
        labels[box][disc] = i + 1
    start = time.perf_counter()
    for frame in range(3):
        frame_cld(
            labels,
            weights=np.ones(crystals + 1),
            settings=ChordSettings(),
            pixel_size_um=1.0,
            rng=np.random.default_rng(frame),
        )
    return (time.perf_counter() - start) / 3


def bench_scale(frames: int, crystals: int) -> dict[str, Any]:
    small, large = 200, frames
    result: dict[str, Any] = {"crystals_per_frame": crystals, "frame_shape": FRAME_SHAPE}
    for n in (small, large):
        result[f"kinetics_{n}"] = _child(n, crystals, baseline=False)
        result[f"baseline_{n}"] = _child(n, crystals, baseline=True)
    k_small, k_large = result[f"kinetics_{small}"], result[f"kinetics_{large}"]
    b_small, b_large = result[f"baseline_{small}"], result[f"baseline_{large}"]
    result["peak_memory_ratio_large_over_small"] = round(
        k_large["max_rss_mb"] / k_small["max_rss_mb"], 3
    )
    result["kinetics_memory_above_baseline_mb"] = {
        str(small): round(k_small["max_rss_mb"] - b_small["max_rss_mb"], 1),
        str(large): round(k_large["max_rss_mb"] - b_large["max_rss_mb"], 1),
    }
    result["frames_per_s_ratio_to_making_the_frames"] = round(
        k_large["frames_per_s"] / b_large["frames_per_s"], 4
    )
    result["cld_s_per_frame_1024"] = round(_cld_seconds(crystals), 3)
    return result


# --------------------------------------------------------------------------- synthetic runs


def _make_run(path: Path, scenario: str, seed: int, frames: int, size: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _store_mask

    from crystalseg.measure.run import measure_run
    from crystalseg.synth import SynthConfig, synthesize_run

    cfg = SynthConfig(frames=frames, height=size, width=size, seed=seed, scenario=scenario)
    synthesize_run(path, cfg, frames_per_chunk=10)
    _store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]), fpc=10)
    measure_run(path, scheduler="synchronous")


def _true_ids(path: Path, points: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """True id of every track point (by overlap of its particle with a true crystal)."""
    from crystalseg.kinetics.accuracy import match_by_overlap
    from crystalseg.measure.run import label_mask_frame, read_mask_codes
    from crystalseg.measure.settings import MeasureSettings
    from crystalseg.store import stage_info

    group = zarr.open_group(str(path), mode="r")
    mask, truth = group["mask"], group["truth/labels"]
    settings = MeasureSettings.from_dict(stage_info(path)["measure"]["settings"]["measure"])
    codes = read_mask_codes(mask)
    out = np.zeros(len(points), dtype=np.int64)
    n_truth, truth_ids = 0, set()
    frames = points["frame"].to_numpy()
    labels_col = points["label"].to_numpy()
    for t in range(mask.shape[0]):
        labels = label_mask_frame(np.asarray(mask[t]), settings=settings, codes=codes)
        true_labels = np.asarray(truth[t])
        label, true_id, present = match_by_overlap(labels, true_labels)
        # true crystals big enough to be measured at all
        _, area = np.unique(true_labels[true_labels > 0], return_counts=True)
        present = present[area >= settings.min_area_px]
        n_truth += len(present)
        truth_ids.update(present.tolist())
        rows = np.flatnonzero(frames == t)
        lookup = dict(zip(label.tolist(), true_id.tolist(), strict=True))
        out[rows] = [lookup.get(int(v), 0) for v in labels_col[rows]]
    return out, n_truth, len(truth_ids)


def _truth_kinetics(path: Path, points: pd.DataFrame, true_id: np.ndarray) -> dict[str, Any]:
    from crystalseg.store import read_table

    population = read_table(path, "truth/population").set_index("id")
    crystals = read_table(path, "truth/crystals")
    growth = read_table(path, "kinetics/track_growth")
    pairs = pd.DataFrame({"track": points["track_id"], "truth": true_id})
    pairs = pairs[pairs["truth"] > 0]
    majority = pairs.groupby("track")["truth"].agg(lambda v: v.value_counts().index[0])
    rate = growth["track_id"].map(majority).map(population["growth_um_s"] * 60)
    nuclei = population[(population["t_birth_s"] > 0) & (population["agglomerate"] == 0)]
    first = crystals.loc[crystals.groupby("id")["frame"].idxmin()]
    seen_born = first[
        (first["frame"] > 0) & ~first["touches_edge"].astype(bool) & first["id"].isin(nuclei.index)
    ]
    times = np.asarray(zarr.open_group(str(path), mode="r")["time"][:])
    return {
        "growth_truth_um_min": float(rate.mean()),
        "growth_truth_all_visible_um_min": float(
            population.loc[population.index.isin(crystals["id"]), "growth_um_s"].mean() * 60
        ),
        # the first nucleus that could be seen: born inside the field (nuclei born outside
        # it, which the population also holds, can never be seen being born)
        "onset_truth_s": float(nuclei.loc[seen_born["id"], "t_birth_s"].min())
        if len(seen_born)
        else math.nan,
        "onset_truth_any_nucleus_s": float(nuclei["t_birth_s"].min()) if len(nuclei) else math.nan,
        "births_truth_in_field": len(seen_born),
        "interval_s": float(np.median(np.diff(times))),
    }


def bench_accuracy(
    scenarios: list[str], frames: int, size: int, seed: int, model: bool
) -> dict[str, Any]:
    from crystalseg.kinetics.accuracy import tracking_scores
    from crystalseg.kinetics.run import kinetics_run, read_tracks
    from crystalseg.measure.run import MeasureOptions
    from crystalseg.pipeline import segment_and_measure

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, scenario in enumerate(scenarios):
            path = Path(tmp) / f"{scenario}.zarr"
            _make_run(path, scenario, seed + k, frames, size)
            masks = {"true_mask": path}
            if model:
                model_path = Path(tmp) / f"{scenario}_model.zarr"
                shutil.copytree(path, model_path)
                shutil.rmtree(model_path / "mask")
                shutil.rmtree(model_path / "particles")
                shutil.rmtree(model_path / "psd")
                _forget_stages(model_path)
                start = time.perf_counter()
                segment_and_measure(model_path, options=MeasureOptions(scheduler="synchronous"))
                masks["model_mask"] = model_path
                results.setdefault(scenario, {})["model_segment_measure_s"] = round(
                    time.perf_counter() - start, 1
                )
            for name, run in masks.items():
                start = time.perf_counter()
                summary = kinetics_run(run)
                seconds = time.perf_counter() - start
                points, _ = read_tracks(run)
                true_id, n_truth, n_truth_tracks = _true_ids(run, points)
                scores = tracking_scores(
                    points["frame"].to_numpy(),
                    points["track_id"].to_numpy(),
                    true_id,
                    n_truth_detections=n_truth,
                    n_truth_tracks=n_truth_tracks,
                )
                truth = _truth_kinetics(run, points, true_id)
                results.setdefault(scenario, {})[name] = {
                    "seed": seed + k,
                    "kinetics_s": round(seconds, 1),
                    **{k2: round(v, 4) if isinstance(v, float) else v for k2, v in scores.items()},
                    "growth_um_min": _interval(summary, "length_rate"),
                    "growth_tracks_fitted": summary["n_tracks_fitted"],
                    "growth_error": round(
                        summary["length_rate"] / truth["growth_truth_um_min"] - 1, 4
                    ),
                    "onset_s": [
                        summary["onset_s"],
                        summary["onset_low_s"],
                        summary["onset_high_s"],
                    ],
                    "onset_error_frames": round(
                        (summary["onset_s"] - truth["onset_truth_s"]) / truth["interval_s"], 2
                    ),
                    "births": summary["births"],
                    "birth_rate_per_mm2_min": _interval(summary, "rate_per_mm2_min"),
                    "birth_count_error": round(
                        summary["births"] / max(truth["births_truth_in_field"], 1) - 1, 4
                    ),
                    "secondary_ratio": _interval(summary, "secondary_ratio"),
                    "origins": summary["origins"],
                    "fates": summary["fates"],
                    "truth": truth,
                }
    return results


def _forget_stages(path: Path) -> None:
    from crystalseg.store import PROVENANCE_KEY, consolidate

    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = dict(group.attrs[PROVENANCE_KEY])
    stages = {k: v for k, v in provenance["stages"].items() if k in ("synth", "import")}
    group.attrs[PROVENANCE_KEY] = {**provenance, "stages": stages}
    for name in ("segment", "measure", "kinetics"):
        shutil.rmtree(path / "_progress" / name, ignore_errors=True)
    consolidate(path)


def _interval(summary: dict[str, Any], key: str) -> list[float]:
    return [round(float(summary[f"{key}{s}"]), 4) for s in ("", "_low", "_high")]


# --------------------------------------------------------------------------- linkers


def bench_linkers(frames: int, size: int, seed: int, scenario: str) -> dict[str, Any]:
    from laptrack import LapTrack

    from crystalseg.kinetics.accuracy import tracking_scores
    from crystalseg.kinetics.run import kinetics_run, read_tracks
    from crystalseg.kinetics.tracking import TrackSettings

    settings = TrackSettings()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.zarr"
        _make_run(path, scenario, seed, frames, size)
        start = time.perf_counter()
        kinetics_run(path)
        stage_s = time.perf_counter() - start
        points, _ = read_tracks(path)
        true_id, n_truth, n_tracks = _true_ids(path, points)
        # the same coordinates for both linkers: drift removed, size coordinate
        pixel = float(zarr.open_group(str(path), mode="r").attrs["pixel_size_um"])
        coords = pd.DataFrame(
            {
                "frame": points["frame"],
                "x": points["x_px"] - points["drift_x_px"],
                "y": points["y_px"] - points["drift_y_px"],
                "s": settings.size_weight_px * np.log(np.maximum(points["ecd"] / pixel, 1.0)),
            }
        )
        out: dict[str, Any] = {"scenario": scenario, "frames": frames, "size": size}
        import trackpy

        trackpy.quiet()
        start = time.perf_counter()
        linked = trackpy.link(
            coords.copy(),
            search_range=settings.search_range_px,
            memory=settings.memory,
            pos_columns=["x", "y", "s"],
        )
        tp_s = time.perf_counter() - start
        out["trackpy"] = {
            "seconds": round(tp_s, 2),
            **tracking_scores(
                points["frame"].to_numpy(),
                linked["particle"].to_numpy(),
                true_id,
                n_truth_detections=n_truth,
                n_truth_tracks=n_tracks,
            ),
        }
        cutoff = settings.search_range_px**2
        lap = LapTrack(
            cutoff=cutoff,
            gap_closing_cutoff=cutoff,
            gap_closing_max_frame_count=settings.memory + 1,
            splitting_cutoff=False,
            merging_cutoff=False,
        )
        start = time.perf_counter()
        track_df, _, _ = lap.predict_dataframe(
            coords.reset_index(drop=True),
            coordinate_cols=["x", "y", "s"],
            frame_col="frame",
            only_coordinate_cols=False,
        )
        lap_s = time.perf_counter() - start
        track_df = track_df.sort_index()
        out["laptrack"] = {
            "seconds": round(lap_s, 2),
            **tracking_scores(
                points["frame"].to_numpy(),
                track_df["track_id"].to_numpy(),
                true_id,
                n_truth_detections=n_truth,
                n_truth_tracks=n_tracks,
            ),
        }
        out["stage_s"] = round(stage_s, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="scale,linkers,accuracy")
    parser.add_argument(
        "--n-frames", dest="frames", type=int, default=2000, help="frames of the scale run"
    )
    parser.add_argument("--crystals", type=int, default=300)
    parser.add_argument("--run-frames", type=int, default=40, help="frames of the synth runs")
    parser.add_argument("--run-size", type=int, default=384)
    parser.add_argument("--scenarios", default="clear,crowded,needles")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--model", action="store_true", help="also on the bundled model's mask")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_scale_child(**json.loads(args.child))))
        return
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {}
    if "scale" in parts:
        report["scale"] = bench_scale(args.frames, args.crystals)
    if "linkers" in parts:
        report["linkers"] = bench_linkers(args.run_frames, args.run_size, args.seed, "crowded")
    if "accuracy" in parts:
        report["accuracy"] = bench_accuracy(
            args.scenarios.split(","), args.run_frames, args.run_size, args.seed, args.model
        )
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
