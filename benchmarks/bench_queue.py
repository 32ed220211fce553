"""Time several runs measured by one command against one command per run.

Prints one JSON document. ``--runs`` synthetic runs (``crystalseg.synth``, no
mask) are segmented with the bundled model and measured, once as one command
(``crystalseg measure A.zarr B.zarr ...``: one process, the model loaded once)
and once as one command per run (a fresh process each, as a shell loop would
do), each on fresh copies of the runs. Both are real ``crystalseg`` processes,
so both figures include starting Python, the imports, loading the model and
choosing the CPU runtime; the difference is what the queue saves. The results
of the two must be equal (checked: the PSD count per frame of every run).

Reports the wall time of each, the ratio ``separate_s / queue_s``, and the
per-run seconds of the queue's ``--json`` documents (the first run includes the
model load).

    python benchmarks/bench_queue.py [--runs 4] [--n-frames 20] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr


def _crystalseg() -> list[str]:
    """The ``crystalseg`` command of this interpreter (and of ``PYTHONPATH``)."""
    return [sys.executable, "-c", "from crystalseg.cli import main; main()"]


def _make_runs(folder: Path, n_runs: int, n_frames: int, size: int) -> list[Path]:
    from crystalseg.synth import SynthConfig, synthesize_run

    folder.mkdir(parents=True)
    runs = []
    for i in range(n_runs):
        path = folder / f"run{i}.zarr"
        synthesize_run(path, SynthConfig(frames=n_frames, height=size, width=size, seed=100 + i))
        runs.append(path)
    return runs


def _copies(runs: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for run in runs:
        shutil.copytree(run, folder / run.name)
        out.append(folder / run.name)
    return out


def _timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--n-frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmp:
        base = _make_runs(Path(tmp) / "made", args.runs, args.n_frames, args.size)
        # warm the caches both modes share (ONNX export, runtime choice) outside the clock
        warm = _copies(base[:1], Path(tmp) / "warm")
        _timed([*_crystalseg(), "-q", "measure", str(warm[0])])

        queued = _copies(base, Path(tmp) / "queue")
        queue_s, out = _timed([*_crystalseg(), "-q", "measure", *map(str, queued), "--json"])
        documents = json.loads(out)

        separate = _copies(base, Path(tmp) / "separate")
        separate_s = 0.0
        per_command_s = []
        for run in separate:
            seconds, _ = _timed([*_crystalseg(), "-q", "measure", str(run)])
            per_command_s.append(round(seconds, 2))
            separate_s += seconds

        for a, b in zip(queued, separate, strict=True):
            ca = xr.open_zarr(a, group="psd")["count_kept"].values
            cb = xr.open_zarr(b, group="psd")["count_kept"].values
            np.testing.assert_array_equal(ca, cb)

    print(
        json.dumps(
            {
                "runs": args.runs,
                "frames_per_run": args.n_frames,
                "size": [args.size, args.size],
                "queue_s": round(queue_s, 2),
                "separate_s": round(separate_s, 2),
                "speedup": round(separate_s / queue_s, 3),
                "queue_run_s": [d["seconds"] for d in documents],
                "separate_command_s": per_command_s,
                "same_results": True,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
