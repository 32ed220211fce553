"""Time ``segment_and_measure`` on a run with no mask: segment whole then measure, or stream.

Prints one JSON document. A synthetic run (``crystalseg.synth``, no mask) is
measured with the bundled model, once segmented whole before it is measured
(``stream=False``, the two-pass path) and once with each chunk measured while
the model segments the next (``stream=True``), each in a fresh process on a
fresh copy of the run, so that every figure includes the same work and the peak
memory is that mode's alone. The model is loaded and warmed up (one chunk)
before the clock starts in both; the clock stops when ``segment_and_measure`` returns.

Per mode: wall time, frames/s, when the last frame was segmented (``segment_s``,
from the progress callback), peak RSS of the process that runs the model
(``peak_rss_mib``, VmHWM) and the peak of the summed RSS of that process and its
measurement workers (``peak_rss_total_mib``, sampled every 20 ms with psutil;
ru_maxrss of the workers would carry the model process's figure over from the
fork). ``speedup`` is two-pass wall time over streaming wall
time, both measured in this run; ``bound_s`` is what perfect overlap would give
(the longer of the two stages of the two-pass run).

    python benchmarks/bench_stream.py [--n-frames 48] [--size 512] [--device cpu]
        [--frames-per-chunk 4] [--scheduler processes] [--workers N] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measure import _proc_status_mib

MODES = ("two_pass", "stream")


class TreeMemory:
    """Peak of the summed RSS of this process and its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mib = 0.0

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = self._me.memory_info().rss
            for proc in self._me.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # ended meanwhile
                    pass
            self.peak_mib = max(self.peak_mib, total / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_template(path: Path, frames: int, size: int, fpc: int, scenario: str) -> None:
    from crystalseg.synth import SynthConfig, synthesize_run

    cfg = SynthConfig(frames=frames, height=size, width=size, seed=11, scenario=scenario)
    synthesize_run(path, cfg, frames_per_chunk=fpc)


def child(args: argparse.Namespace) -> None:
    """One mode on a fresh copy of the template; prints one JSON line."""
    from crystalseg.measure import MeasureOptions
    from crystalseg.pipeline import segment_and_measure
    from crystalseg.segment import EngineSettings, Segmenter
    from crystalseg.store import open_run

    path = Path(args.child_path)
    engine = EngineSettings(device=args.device, threads=args.threads)
    seg = Segmenter.from_checkpoint(None, settings=engine)
    image = open_run(path)["image"]
    seg.predict(np.asarray(image[: args.frames_per_chunk].values))  # warm-up, not timed

    events: list[tuple[float, str, int]] = []
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        events.append((time.perf_counter() - t0, stage, done))

    with TreeMemory() as tree:
        segment_and_measure(
            path,
            model=seg,
            stream=args.child_mode == "stream",
            options=MeasureOptions(
                scheduler=args.scheduler, num_workers=args.workers, progress=progress
            ),
        )
        wall = time.perf_counter() - t0
    n = int(image.shape[0])
    segment_s = max(t for t, stage, _ in events if stage == "segment")
    measured = [t for t, stage, done in events if stage == "measure" and done > 0]
    peak = _proc_status_mib("VmHWM")
    if peak != peak:  # not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "wall_s": wall,
        "frames_per_s": n / wall,
        "segment_s": segment_s,
        "first_chunk_measured_s": min(measured) if measured else None,
        "peak_rss_mib": peak,
        "peak_rss_total_mib": tree.peak_mib,
        "engine": seg.describe(),
    }
    print(json.dumps(out))


def run_mode(args: argparse.Namespace, template: Path, mode: str, tmp: Path) -> dict:
    path = tmp / f"{mode}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(template, path)
    cmd = [
        sys.executable,
        __file__,
        "--child-mode",
        mode,
        "--child-path",
        str(path),
        "--device",
        args.device,
        "--scheduler",
        args.scheduler,
        "--frames-per-chunk",
        str(args.frames_per_chunk),
    ]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{mode} failed:\n{res.stderr[-4000:]}")
    shutil.rmtree(path)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", dest="frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames-per-chunk", type=int, default=4)
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU inference threads")
    parser.add_argument(
        "--scheduler", choices=("processes", "threads", "synchronous"), default="processes"
    )
    parser.add_argument("--workers", type=int, default=None, help="measurement workers")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode, alternating")
    parser.add_argument("--child-mode", choices=MODES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_mode:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp_dir:
        tmp = Path(tmp_dir)
        template = tmp / "template.zarr"
        t0 = time.perf_counter()
        make_template(template, args.frames, args.size, args.frames_per_chunk, args.scenario)
        make_run_s = time.perf_counter() - t0
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.repeat):
            for mode in MODES:
                runs[mode].append(run_mode(args, template, mode, tmp))

    result: dict = {
        "benchmark": "crystalseg measure on a run with no mask: two-pass vs streaming",
        "run": {
            "frames": args.frames,
            "shape": [args.size, args.size],
            "frames_per_chunk": args.frames_per_chunk,
            "scenario": args.scenario,
            "make_run_s": make_run_s,
        },
        "scheduler": args.scheduler,
        "workers": args.workers or os.cpu_count(),
        "engine": runs["stream"][0]["engine"],
    }
    for mode in MODES:
        items = runs[mode]
        median = {
            key: statistics.median(r[key] for r in items)
            for key in ("wall_s", "frames_per_s", "segment_s", "peak_rss_mib", "peak_rss_total_mib")
        }
        median["runs_wall_s"] = [r["wall_s"] for r in items]
        result[mode] = median
    two, stream = result["two_pass"], result["stream"]
    two["measure_s"] = two["wall_s"] - two["segment_s"]
    stream["first_chunk_measured_s"] = runs["stream"][0]["first_chunk_measured_s"]
    result["speedup"] = two["wall_s"] / stream["wall_s"]
    result["bound_s"] = max(two["segment_s"], two["measure_s"])
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
