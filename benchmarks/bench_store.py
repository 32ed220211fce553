"""Import and lazy read of a run store, and the choice of compression codec.

Prints one JSON document. Each figure stands beside a baseline measured in the same
run:

- ``codecs``: write/read MB/s and compression ratio of candidate codecs on the same
  frames and chunking (baseline: no compression).
- ``import``: ``crystalseg import`` of a multi-page TIFF stack of 200 frames of
  1024x1024 (MB/s and peak RSS, each in a fresh process) against copying the TIFF
  file (disk speed) and against ``tifffile.imread`` of the whole stack (eager read).
- ``lazy_read``: the sum of every frame through ``open_run`` (dask, chunk by chunk)
  against the same sum after reading the TIFF eagerly with tifffile.
- ``memory_flat``: peak RSS of importing 50 vs 200 frames (should be about equal;
  the ~180 MB floor is the interpreter with numpy, zarr, dask and xarray loaded).

Usage: ``python benchmarks/bench_store.py [--n-frames 200] [--size 1024]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

MB = 1e6


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Frames that compress like real ones: synthetic crystallization renders, shifted in time."""
    from crystalseg.synth import SynthConfig, SyntheticRun

    run = SyntheticRun(SynthConfig(frames=8, height=size, width=size, seed=seed))
    base = [run.render(t).image for t in range(8)]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), dtype=base[0].dtype)
    for i in range(n):
        shift = rng.integers(-20, 20, size=2)
        out[i] = np.roll(base[i % 8], tuple(shift), axis=(0, 1))
    return out


def bench_codecs(frames: np.ndarray, workdir: Path) -> dict:
    candidates = {
        "none": None,
        "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "blosc-zstd1-bitshuffle": BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
        "blosc-zstd3-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
        "zstd1": ZstdCodec(level=1),
        "gzip1": GzipCodec(level=1),
    }
    fpc = 4
    raw = frames.nbytes
    results = {}
    for name, codec in candidates.items():
        path = workdir / f"codec-{name}.zarr"
        arr = zarr.create_array(
            str(path),
            shape=frames.shape,
            chunks=(fpc, *frames.shape[1:]),
            dtype=frames.dtype,
            compressors=codec,
            fill_value=0,
        )
        t0 = time.perf_counter()
        for s in range(0, frames.shape[0], fpc):
            arr[s : s + fpc] = frames[s : s + fpc]
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, frames.shape[0], fpc):
            _ = arr[s : s + fpc]
        t_read = time.perf_counter() - t0
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        results[name] = {
            "write_MB_s": raw / MB / t_write,
            "read_MB_s": raw / MB / t_read,
            "ratio": raw / stored,
        }
        shutil.rmtree(path)
    base = results["none"]
    for r in results.values():
        r["write_vs_none"] = r["write_MB_s"] / base["write_MB_s"]
        r["read_vs_none"] = r["read_MB_s"] / base["read_MB_s"]
    return results


_CHILD = r"""
import json, shutil, sys, time
import tifffile
from crystalseg.importing import import_run
from crystalseg.store import open_run
mode, src, dest = sys.argv[1:4]
t0 = time.perf_counter()  # modules are imported: time the work alone
if mode == "import":
    import_run(src, dest, interval_s=1.0, overwrite=True)
elif mode == "tifffile":
    tifffile.imread(src).sum(axis=(1, 2))
elif mode == "lazy_read":
    open_run(dest)["image"].data.sum(axis=(1, 2)).compute(scheduler="threads")
elif mode == "copy":
    shutil.copyfile(src, dest)
elapsed = time.perf_counter() - t0
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak
status = open("/proc/self/status").read()
peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"s": elapsed, "peak_rss_MB": peak_mb}))
"""


def child(mode: str, src: Path, dest: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(src), str(dest)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", dest="frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frames = make_frames(args.frames, args.size)
        raw_MB = frames.nbytes / MB
        codecs = bench_codecs(frames, work)

        tif = work / "stack.tif"
        tifffile.imwrite(tif, frames, photometric="minisblack")
        small = work / "small.tif"
        tifffile.imwrite(small, frames[:50], photometric="minisblack")
        del frames

        copy = child("copy", tif, work / "copy.tif")
        eager = child("tifffile", tif, work / "unused")
        imp = child("import", tif, work / "run.zarr")
        lazy = child("lazy_read", tif, work / "run.zarr")
        imp_small = child("import", small, work / "small.zarr")

    result = {
        "frames": args.frames,
        "frame_size": [args.size, args.size],
        "raw_MB": raw_MB,
        "codecs": codecs,
        "import": {
            "MB_s": raw_MB / imp["s"],
            "peak_rss_MB": imp["peak_rss_MB"],
            "baseline_file_copy_MB_s": raw_MB / copy["s"],
            "baseline_tifffile_imread_MB_s": raw_MB / eager["s"],
            "baseline_tifffile_imread_peak_rss_MB": eager["peak_rss_MB"],
            "vs_file_copy": copy["s"] / imp["s"],
        },
        "lazy_read": {
            "MB_s": raw_MB / lazy["s"],
            "peak_rss_MB": lazy["peak_rss_MB"],
            "vs_tifffile_imread": eager["s"] / lazy["s"],
        },
        "memory_flat": {
            "import_peak_rss_MB_50_frames": imp_small["peak_rss_MB"],
            "import_peak_rss_MB_all_frames": imp["peak_rss_MB"],
            "ratio": imp["peak_rss_MB"] / imp_small["peak_rss_MB"],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
