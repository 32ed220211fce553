"""Time import and measure of one run on a local S3 server (moto) beside the same on disk.

    python benchmarks/bench_s3.py [--frames 12] [--size 256]

Starts moto in server mode on 127.0.0.1 (dummy credentials), imports a synthetic
recording into ``s3://bench/run.zarr`` and into a local folder, stores its true mask as
the segmentation (no model: the figure is the store's cost, not the network's), measures
both, and prints JSON: seconds per stage on S3 and on disk (their ratio) and the HTTP
requests each stage sent. moto answers from memory in Python, so its latency is not a
real S3's (~10-50 ms a request): the request count is the figure that carries over.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    import fsspec
    import zarr

    fsspec.filesystem("s3").mkdir("bench")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _store_mask  # the fixture's helper: a mask as segment writes it

    from crystalseg.importing import import_run
    from crystalseg.measure import measure_run
    from crystalseg.store import run_path
    from crystalseg.synth import SynthConfig, synthesize_run

    requests = {"n": 0}
    import aiobotocore.endpoint as endpoint

    real_send = endpoint.AioEndpoint._send

    async def counted_send(self: Any, request: Any) -> Any:
        requests["n"] += 1
        return await real_send(self, request)

    endpoint.AioEndpoint._send = counted_send  # type: ignore[method-assign]

    result: dict[str, Any] = {"frames": args.frames, "size_px": args.size}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cfg = SynthConfig(frames=args.frames, height=args.size, width=args.size, seed=5)
        synthesize_run(work / "synth.zarr", cfg, frames_per_chunk=2)
        group = zarr.open_group(str(work / "synth.zarr"), mode="r")
        np.save(work / "frames.npy", np.asarray(group["image"][:]))
        truth = np.asarray(group["truth/mask"][:])
        for where, run in (("disk", str(work / "run.zarr")), ("s3", "s3://bench/run.zarr")):
            timings: dict[str, Any] = {}
            for stage, work_fn in (
                (
                    "import",
                    lambda run=run: import_run(
                        work / "frames.npy", run, interval_s=10.0, frames_per_chunk=2
                    ),
                ),
                ("mask", lambda run=run: _store_mask(run_path(run), truth, fpc=2)),
                ("measure", lambda run=run: measure_run(run, scheduler="synchronous")),
            ):
                before = requests["n"]
                start = time.perf_counter()
                work_fn()
                timings[stage] = {
                    "seconds": round(time.perf_counter() - start, 2),
                    "requests": requests["n"] - before,
                }
            result[where] = timings
    result["ratio_s3_to_disk"] = {
        stage: round(
            result["s3"][stage]["seconds"] / max(result["disk"][stage]["seconds"], 1e-9), 1
        )
        for stage in ("import", "mask", "measure")
    }
    result["load_average"] = os.getloadavg()[0]
    server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
