"""Make ``examples/fbrm_example.csv``: the export a focused-beam probe (FBRM) in the
same vessel might have written during a synthetic run, for trying the FBRM overlay.

It makes a ``crystalseg synth`` run (seed 11, 60 frames, one every 10 s), stores
its true mask as the segmentation, measures it and computes its kinetics, then
turns the image CLD's counts in FBRM's size classes into probe counts: scaled to
counts per second of a probe that sees ``--scale`` times more chords than one
frame holds, sampled every 20 s (the probe's own clock, starting 2026-03-14
09:00:00), with Poisson counting noise and a slow 5 % drift of the probe's
sensitivity. The CSV has the columns of a probe's trend export: ``Date Time``,
one column per class (``<10 um`` ... ``300-1000 um``) and ``Median No Wt (um)``,
which the reader leaves out.

    python examples/make_fbrm_example.py [--out examples/fbrm_example.csv]

Then: ``crystalseg.viz.kinetics.plot_fbrm_overlay(RUN, "examples/fbrm_example.csv")``
with RUN the run this script keeps (``--run``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from crystalseg.dims import FRAME_DIMS
from crystalseg.kinetics import kinetics_run, open_cld
from crystalseg.kinetics.cld import CLD_CLASS_NAMES
from crystalseg.measure.run import measure_run
from crystalseg.store import begin_stage, create_array
from crystalseg.synth import SynthConfig, synthesize_run


def store_true_mask(path: Path) -> None:
    """The run's true mask as its finished segmentation (no model needed)."""
    truth = np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:])
    n, h, w = truth.shape
    arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=truth.shape,
        dtype="uint8",
        chunks=(10, h, w),
        attrs={"codes": ["background", "crystal"]},
    )
    arr[:] = truth
    stage = begin_stage(path, "segment", settings={"truth": True}, n_frames=n, frames_per_chunk=10)
    stage.mark_done(0, n)
    stage.finish()


def probe_counts(run: Path, *, scale: float, every_s: float, seed: int) -> pd.DataFrame:
    """Probe counts per class every ``every_s`` seconds from the run's CLD."""
    cld = open_cld(run)
    seconds = np.asarray(cld["time"].values, dtype=np.float64)
    classes = np.asarray(cld["class_count"].values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, seconds[-1] + 1e-9, every_s)
    sensitivity = 1.0 + 0.05 * np.sin(2 * np.pi * times / (times[-1] or 1.0))
    rows = {}
    for k, name in enumerate(CLD_CLASS_NAMES):
        mean = np.interp(times, seconds, classes[:, k]) * scale * sensitivity
        rows[f"{name} um"] = rng.poisson(np.maximum(mean, 0.0)).astype(np.int64)
    table = pd.DataFrame(rows)
    stamps = pd.Timestamp("2026-03-14 09:00:00") + pd.to_timedelta(times, unit="s")
    table.insert(0, "Date Time", stamps.strftime("%Y-%m-%d %H:%M:%S"))
    median = np.interp(times, seconds, np.asarray(cld["median_number"].values, dtype=float))
    table["Median No Wt (um)"] = np.round(median, 2)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--out", type=Path, default=here / "fbrm_example.csv")
    parser.add_argument("--run", type=Path, default=Path("fbrm_example_run.zarr"))
    parser.add_argument("--scale", type=float, default=40.0)
    args = parser.parse_args()
    if not args.run.exists():
        cfg = SynthConfig(frames=60, height=384, width=384, seed=11, scenario="clear")
        synthesize_run(args.run, cfg, frames_per_chunk=10)
        store_true_mask(args.run)
        measure_run(args.run, scheduler="synchronous")
        kinetics_run(args.run)
    table = probe_counts(args.run, scale=args.scale, every_s=20.0, seed=11)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(table)} rows; run kept at {args.run}")


if __name__ == "__main__":
    main()
