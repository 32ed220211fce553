"""What the OME-Zarr metadata costs when a stage finishes.

``write_ome_metadata`` copies the mask into the label image ``labels/mask/0`` when
the mask changed (OME-Zarr paths may not point out of their group, so the label image
needs its own array); every later call only rewrites metadata. Prints one JSON
document with, on the same store:

- ``write_mask_s``: writing the mask itself, chunk by chunk (the baseline: what
  segment writes anyway, without the model);
- ``first_call_s``: ``write_ome_metadata`` with the copy, and its ratio to the baseline;
- ``later_call_s``: a call with the mask unchanged (metadata only);
- ``label_bytes`` against ``mask_bytes`` on disk.

Usage: ``python benchmarks/bench_ome.py [--n-frames 64] [--size 1024]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", dest="frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    from crystalseg import store
    from crystalseg.dims import FRAME_DIMS
    from crystalseg.store.ome import write_ome_metadata
    from crystalseg.synth import SynthConfig, synthesize_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.zarr"
        synthesize_run(
            path, SynthConfig(frames=args.frames, height=args.size, width=args.size, seed=1)
        )
        truth = store.get_array(store.core._open_group(path), "truth/mask", path)
        fpc = int(truth.chunks[0])
        start = time.perf_counter()
        mask = store.create_array(
            path,
            "mask",
            dims=FRAME_DIMS,
            shape=truth.shape,
            dtype="uint8",
            chunks=truth.chunks,
            attrs={"codes": ["background", "crystal"]},
        )
        for lo in range(0, truth.shape[0], fpc):
            mask[lo : lo + fpc] = np.asarray(truth[lo : lo + fpc])
        write_mask = time.perf_counter() - start
        start = time.perf_counter()
        write_ome_metadata(path)
        first = time.perf_counter() - start
        start = time.perf_counter()
        write_ome_metadata(path)
        later = time.perf_counter() - start
        result = {
            "frames": args.frames,
            "size": args.size,
            "write_mask_s": round(write_mask, 3),
            "first_call_s": round(first, 3),
            "first_call_over_write_mask": round(first / write_mask, 2),
            "later_call_s": round(later, 3),
            "mask_bytes": _bytes(path / "mask"),
            "label_bytes": _bytes(path / "labels" / "mask"),
            "image_bytes": _bytes(path / "image"),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
