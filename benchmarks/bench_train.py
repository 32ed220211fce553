"""Training throughput (crops/s) at 256x256: the default encoder against resnet34.

Runs the real training step of ``crystalseg.train`` (random crops, kornia augmentation,
normalisation, forward, Dice+CE loss, backward, AdamW) for about ``--seconds`` per
encoder, in alternating rounds, on synthetic 512x512 pairs, and prints JSON: images/s
of each encoder (from the median step), the ratio of the default encoder to the
resnet34 baseline of the seed workflow, the share of time spent outside the model
(data + augmentation), and the peak memory.

With ``--validation`` it times ``Learner.validate`` instead, on the frames of synthetic
runs (true instances, so the particle F1 is computed too) with the bundled model:
seconds per frame with the particle matching in threads (up to 4, one fewer than the
cores) against in line (``workers=0``, the baseline), in alternating rounds; and the
particle matching alone, in one thread against in up to 4 (how much of it runs
outside the GIL).

    python benchmarks/bench_train.py [--seconds 30] [--batch-size 8] [--device cpu]
    python benchmarks/bench_train.py --validation [--rounds 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crystalseg.models import DEFAULT_ENCODER
from crystalseg.train import pairs, unet_learner


def write_pairs(folder: Path, n: int = 8, size: int = 512) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(25):
            cy, cx = rng.integers(0, size, 2)
            mask[
                ((yy - cy) / rng.uniform(5, 30)) ** 2 + ((xx - cx) / rng.uniform(5, 30)) ** 2 < 1
            ] = 255
        image = (90 + mask // 3 + rng.normal(0, 8, mask.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")


class Timed:
    """One encoder's learner and the wall time of each of its training steps."""

    def __init__(self, data, encoder: str, *, batch_size: int, device: str | None) -> None:
        self.learner = unet_learner(
            data, encoder=encoder, init="none", batch_size=batch_size, device=device, progress=False
        )
        self.encoder = encoder
        self.batch_size = batch_size
        self.optimizer = self.learner._optimizer(1e-3)
        self.scaler = self.learner._scaler()
        self.rng = np.random.default_rng(0)
        self.batches = self.learner._batches(self.rng)
        self.data_s: list[float] = []
        self.step_s: list[float] = []
        self.learner.model.train()
        self._sync = torch.cuda.synchronize if self.learner.device.type == "cuda" else None
        self.run(0.0, record=False)  # warm-up

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = self.learner._batches(self.rng)
            return next(self.batches)

    def run(self, seconds: float, *, record: bool = True) -> None:
        """Training steps for about ``seconds`` (at least one)."""
        t_end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            x, y = self._next()
            if self._sync:
                self._sync()
            t1 = time.perf_counter()
            self.learner._step(x, y, self.optimizer, self.scaler)
            if self._sync:
                self._sync()
            t2 = time.perf_counter()
            if record:
                self.data_s.append(t1 - t0)
                self.step_s.append(t2 - t0)
            if t2 >= t_end:
                return

    def result(self) -> dict:
        steps = np.asarray(self.step_s)
        return {
            "encoder": self.encoder,
            "decoder_channels": list(self.learner.spec.decoder_channels),
            "params_millions": round(
                sum(p.numel() for p in self.learner.model.parameters()) / 1e6, 2
            ),
            "steps": int(steps.size),
            # the median step is robust to other jobs sharing the machine
            "images_per_s": round(self.batch_size / float(np.median(steps)), 2),
            "images_per_s_best": round(self.batch_size / float(steps.min()), 2),
            "seconds_per_step_median": round(float(np.median(steps)), 3),
            "data_and_augment_fraction": round(sum(self.data_s) / float(steps.sum()), 3),
        }


def bench_validation(rounds: int, device: str | None) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from crystalseg.segment.engine import available_cores
    from crystalseg.synth import SynthConfig, synthesize_run
    from crystalseg.train.learner import frame_particle_scores, matching_threads

    workers = max(1, matching_threads())  # as validate() beside a GPU, at least one
    threads = min(4, available_cores())
    with tempfile.TemporaryDirectory() as tmp:
        for k, scenario in enumerate(("crowded", "mixed", "clear", "plates")):
            config = SynthConfig(frames=6, height=512, width=512, seed=9000 + k, scenario=scenario)
            synthesize_run(Path(tmp) / f"{scenario}.zarr", config)
        data = pairs(tmp, codes=["background", "crystal", "boundary"], valid_fraction=0.5, seed=0)
        learner = unet_learner(data, init="default", device=device, progress=False)
        frames = len(data.valid_items)
        learner.validate()  # warm-up: first reads, kernels
        times: dict[str, list[float]] = {"threads": [], "in_line": [], "match_1": [], "match_n": []}
        records = {}
        jobs = []
        engine = learner.segmenter()
        for item in data.valid_items:
            pred = engine.predict(data.load(item)[0][None])[0]
            jobs.append((pred, data.instance_truth(item)))
        for _ in range(rounds):
            for name, n in (("threads", workers), ("in_line", 0)):
                start = time.perf_counter()
                records[name] = learner.validate(workers=n)
                times[name].append((time.perf_counter() - start) / frames)
            # The particle matching alone, in one thread and in up to 4 (GIL released?).
            for name, n in (("match_1", 1), ("match_n", threads)):
                start = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    list(pool.map(lambda job: frame_particle_scores(*job, data.codes), jobs))
                times[name].append((time.perf_counter() - start) / frames)
    best = {k: min(v) for k, v in times.items()}
    return {
        "benchmark": "validation",
        "device": str(learner.device),
        "frames": frames,
        "frame_size": [512, 512],
        "cpu_cores": available_cores(),
        "workers": workers,
        "s_per_frame_threads": round(best["threads"], 4),
        "s_per_frame_in_line": round(best["in_line"], 4),
        "speedup": round(best["in_line"] / best["threads"], 2),
        "matching_s_per_frame_1_thread": round(best["match_1"], 4),
        "matching_threads": threads,
        "matching_s_per_frame_threads": round(best["match_n"], 4),
        "matching_speedup": round(best["match_1"] / best["match_n"], 2),
        "same_scores": records["threads"] == records["in_line"],
        "instance_f1": round(records["threads"].get("instance_f1", float("nan")), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validation", action="store_true", help="time Learner.validate instead")
    ap.add_argument("--rounds", type=int, default=3, help="--validation: rounds of each")
    ap.add_argument("--seconds", type=float, default=30.0, help="timed seconds per encoder")
    ap.add_argument("--round-seconds", type=float, default=5.0, help="length of one round")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--device", default=None)
    ap.add_argument("--encoders", default=f"{DEFAULT_ENCODER},resnet34")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.validation:
        print(json.dumps(bench_validation(args.rounds, args.device), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_pairs(Path(tmp))
        data = pairs(tmp, codes=["background", "crystal"], crop_size=args.crop_size, seed=0)
        timers = [
            Timed(data, enc, batch_size=args.batch_size, device=args.device)
            for enc in args.encoders.split(",")
        ]
        # alternate short rounds so that load from other jobs hits every encoder alike
        rounds = max(1, round(args.seconds / args.round_seconds))
        for _ in range(rounds):
            for timer in timers:
                timer.run(args.round_seconds)
        results = [t.result() for t in timers]
    by_name = {r["encoder"]: r for r in results}
    out = {
        "benchmark": "train_throughput",
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if "resnet34" in by_name and DEFAULT_ENCODER in by_name:
        out["default_vs_resnet34_speedup"] = round(
            by_name[DEFAULT_ENCODER]["images_per_s"] / by_name["resnet34"]["images_per_s"], 2
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
