"""Time crystalseg.measure.measure_frame against skimage.measure.regionprops_table.

One frame like a real run's (default 1024 × 1024 with about 500 particles:
ellipses and polygons of lognormal-ish size, drawn in random order so some
touch or overlap, on a blurred noisy background), measured by both with the
same properties. Prints JSON: seconds per frame and frames per second of each,
their ratio, per-part timings of measure_frame, and peak memory (tracemalloc)
of each.

    python benchmarks/bench_features.py [--size 1024] [--particles 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import skimage
from scipy import ndimage as ndi
from skimage.draw import ellipse, polygon
from skimage.measure import regionprops_table

from crystalseg.measure import features
from crystalseg.measure.features import REGIONPROPS_EQUIVALENTS, measure_frame

SKIMAGE_PROPERTIES = list(REGIONPROPS_EQUIVALENTS)


def make_frame(size: int, n_particles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int32) and a uint16 image of randomly placed ellipses and polygons."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(1, n_particles + 1):
        cy, cx = rng.uniform(0, size, 2)
        a = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))  # semi-length, px
        b = a / rng.uniform(1.0, 4.0)
        if rng.random() < 0.5:
            rr, cc = ellipse(cy, cx, a, b, shape=shape, rotation=rng.uniform(-np.pi, np.pi))
        else:
            k = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.5, 1.0, k) * a
            rot = rng.uniform(-np.pi, np.pi)
            py = rad * np.sin(ang)
            px = rad * np.cos(ang) * b / a
            rr, cc = polygon(
                cy + py * np.cos(rot) - px * np.sin(rot),
                cx + py * np.sin(rot) + px * np.cos(rot),
                shape=shape,
            )
        labels[rr, cc] = i
    image = np.where(labels > 0, 20000.0, 40000.0)
    image = ndi.gaussian_filter(image, 1.2) + rng.normal(0, 800, shape)
    return labels, np.clip(image, 0, 65535).astype(np.uint16)


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--particles", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels, image = make_frame(args.size, args.particles, args.seed)
    n_present = len(np.unique(labels)) - 1

    def ours() -> object:
        return measure_frame(labels, image, pixel_size_um=0.5)

    def reference() -> object:
        return regionprops_table(labels, image, properties=SKIMAGE_PROPERTIES, spacing=(0.5, 0.5))

    t_ours = _time(ours, args.repeat)
    t_ref = _time(reference, max(1, args.repeat // 2))

    geo = features.FrameGeometry(labels)

    def _fresh_perimeter() -> object:
        geo._border_cache = None  # include finding the boundary pixels
        return geo.perimeter()

    parts = {
        "runs_and_boundary": _time(lambda: features.FrameGeometry(labels), args.repeat),
        "moments_bbox": _time(geo.moment_features, args.repeat),
        "perimeter": _time(
            lambda: (setattr(geo, "_border_cache", None), geo.perimeter()), args.repeat
        ),
        "convex_hull_feret": _time(geo.hull_features, args.repeat),
        "intensity_mean": _time(lambda: geo.intensity_mean(image), args.repeat),
        "sharpness": _time(lambda: geo.sharpness(image), args.repeat),
    }
    parts["table_and_rest"] = max(0.0, t_ours - sum(parts.values()))

    result = {
        "benchmark": "measure_frame vs skimage.measure.regionprops_table",
        "frame": {
            "shape": list(labels.shape),
            "particles": n_present,
            "foreground_fraction": round(float((labels > 0).mean()), 3),
        },
        "properties_compared": SKIMAGE_PROPERTIES,
        "measure_frame": {
            "s_per_frame": t_ours,
            "frames_per_s": 1.0 / t_ours,
            "peak_mib": _peak_mib(ours),
        },
        "regionprops_table": {
            "s_per_frame": t_ref,
            "frames_per_s": 1.0 / t_ref,
            "peak_mib": _peak_mib(reference),
        },
        "speedup": t_ref / t_ours,
        "parts_s": parts,
        "versions": {
            "numpy": np.__version__,
            "scikit-image": skimage.__version__,
            "python": platform.python_version(),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
