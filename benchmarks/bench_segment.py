"""The segmentation engine against a naive loop, and against the machine's peak.

Prints one JSON document. Each figure stands beside a baseline measured in the same
run, on the same model (the default architecture: mobilenet_v2 U-Net with decoder
128-64-32-16-16; the bundled weights when present, else random ones; speed does not
depend on the weights):

- ``machine``: torch.mm fp32 throughput on the CPU (the peak to compare against);
  on CUDA also the bf16 matmul throughput.
- ``model``: GFLOP per frame at each size (``torch.utils.flop_counter.FlopCounterMode``).
- ``cpu_options``: forward-only frames/s at 512 x 512, batch 4, of PyTorch fp32 eager,
  PyTorch channels-last, and ONNX Runtime (``--compile`` adds ``torch.compile``).
- ``sizes``: for 512 x 512 and 1024 x 1024 frames in a run store, ``segment_run``
  (the engine, default settings) against a naive loop (one frame at a time, PyTorch
  fp32 eager, read → normalise → forward → argmax → write, no I/O overlap): frames/s,
  speed-up, achieved GFLOP/s and fraction of the matmul peak, and the fraction of the
  engine's wall time spent outside the network (I/O, normalisation, padding, argmax).
  On CUDA the engine runs on the GPU and reports the fraction of the bf16 peak.
- ``sizes.1024.cpu.engine_resize_0_5``: the engine with ``resize=0.5`` (the frames
  halved before the model, for crystals far larger in pixels than the model knows) on
  the same store, beside the engine at full size.
- ``sizes.1024.cpu.auto_resize``: the one-off cost of ``resize="auto"`` (the default
  of ``segment_run``): seconds to choose the factor for the run (its later frames
  segmented at five factors: up to six, here ``frames_judged``), also as the frames
  the engine segments in that time.
- ``peak_rss_mb``: peak resident memory of the process.

On CUDA the engine also runs with a fixed batch of 32 (``engine_batch_32``) beside the
automatic one; ``--cuda-only`` skips the CPU figures. ``cold_frames_per_s`` is the first
pass over the run, so only the automatic engine's is a first use: it runs first at each
frame size and pays the process's CUDA start (at 512) and cuDNN's autotuning for that
shape; the fixed-batch engine after it finds them done (H100, 512 x 512: 33 against
470 frames/s cold, both about 470 warm, both at batch 32).

Usage: ``python benchmarks/bench_segment.py [--frames-512 16] [--frames-1024 6] [--compile]
[--cuda-only]``
Keep it short on a 2-core machine: the defaults run in about two minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from crystalseg.errors import CheckpointError
from crystalseg.models import ModelSpec, build_model, prepare_batch, save_checkpoint
from crystalseg.models.checkpoint import default_checkpoint_path
from crystalseg.segment import EngineSettings, auto_resize, load_segmenter, segment_run
from crystalseg.segment.engine import available_cores, pad_to_multiple
from crystalseg.store import create_run


def matmul_gflops(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul (2 n^3 flops) on ``device`` in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_gflop(model: torch.nn.Module, size: int) -> float:
    """GFLOP of one forward pass on a (1, 1, size, size) frame."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_options(model: torch.nn.Module, spec: ModelSpec, ckpt: Path, compile_: bool) -> dict:
    """Forward-only frames/s of each CPU runtime at 512 x 512, batch 4."""
    x = torch.randn(4, 1, 512, 512)
    out: dict[str, float] = {}
    net = build_model(spec).eval()
    net.load_state_dict(model.state_dict())
    with torch.inference_mode():
        out["torch_fp32"] = 4 / best_time(lambda: net(x))
        cl = net.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        out["torch_channels_last"] = 4 / best_time(lambda: cl(xc))
        if compile_:
            comp = torch.compile(cl)
            t0 = time.perf_counter()
            comp(xc)
            out["torch_compile_seconds_to_compile"] = time.perf_counter() - t0
            out["torch_compile"] = 4 / best_time(lambda: comp(xc))
    try:
        seg = load_segmenter(ckpt, None, EngineSettings(device="cpu", backend="onnx"))
        xn = x.numpy()
        out["onnxruntime"] = 4 / best_time(lambda: seg._onnx(xn))
    except Exception as exc:
        out["onnxruntime_error"] = str(exc)  # type: ignore[assignment]
    return out


def make_store(path: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(size)
    writer = create_run(
        path,
        shape=(n, size, size),
        dtype="uint8",
        time_s=np.arange(n, dtype=float),
        pixel_size_um=1.0,
        source={"benchmark": True},
    )
    base = rng.integers(0, 256, (size, size), dtype=np.uint8)
    for start in range(0, n, writer.frames_per_chunk):
        stop = min(n, start + writer.frames_per_chunk)
        frames = np.stack([np.roll(base, 7 * t, axis=1) for t in range(start, stop)])
        writer.write_frames(start, frames)
        writer.mark_done(start, stop)
    writer.finish()
    return path


def naive_loop(path: Path, model: torch.nn.Module, spec: ModelSpec, device: str) -> float:
    """One frame at a time, fp32 eager, no overlap: frames/s."""
    group = zarr.open_group(str(path), mode="r+")
    image = group["image"]
    n, h, w = image.shape
    out = group.create_array(
        "naive_mask",
        shape=image.shape,
        chunks=image.chunks,
        dtype="uint8",
        overwrite=True,
        dimension_names=("time", "y", "x"),  # the store stays readable by open_run
    )
    net = model.to(device, memory_format=torch.contiguous_format).float().eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for t in range(n):
            frame = torch.from_numpy(np.asarray(image[t : t + 1])).to(device)
            x = pad_to_multiple(prepare_batch(frame, spec), spec.stride)
            logits = net(x)[..., :h, :w]
            out[t : t + 1] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def cpu_entry(
    store: Path, ckpt: Path, model: torch.nn.Module, spec: ModelSpec, gflop: float, machine: dict
) -> dict[str, Any]:
    """The CPU engine against the naive loop on ``store``."""
    engine = engine_run(store, ckpt, EngineSettings(device="cpu"))
    naive = naive_loop(store, copy.deepcopy(model), spec, "cpu")
    peak = machine["cpu_mm_fp32_gflops"]
    return {
        "engine": engine,
        "naive_frames_per_s": naive,
        "speedup": engine["frames_per_s"] / naive,
        "engine_gflops": engine["frames_per_s"] * gflop,
        "engine_fraction_of_mm_peak": engine["frames_per_s"] * gflop / peak,
        "naive_fraction_of_mm_peak": naive * gflop / peak,
    }


def auto_resize_cost(store: Path, ckpt: Path, cpu: dict[str, Any]) -> dict[str, Any]:
    """Seconds that choosing the resize factor for a run takes, on a warm engine."""
    seg = load_segmenter(ckpt, None, EngineSettings(device="cpu"))
    auto_resize(store, seg)  # warm: the first call pays the backend choice and compiles
    start = time.perf_counter()
    choice = auto_resize(store, seg)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "factor": choice.factor,
        "frames_judged": choice.frames,  # up to AUTO_RESIZE_FRAMES from the later half
        "equivalent_engine_frames": seconds * cpu["engine"]["frames_per_s"],
    }


def engine_run(path: Path, ckpt: Path, settings: EngineSettings) -> dict[str, Any]:
    """segment_run on a warm engine: frames/s and the share of time outside the network."""
    seg = load_segmenter(ckpt, None, settings)
    model_seconds = [0.0]
    real = seg._forward

    def timed(x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = real(x)
        if seg.device.type == "cuda":
            torch.cuda.synchronize()
        model_seconds[0] += time.perf_counter() - t0
        return y

    n = zarr.open_group(str(path), mode="r")["image"].shape[0]
    # a cold pass first: batch-size probe, cuDNN autotuning and ONNX export are one-off
    # costs of a run; the figure is the warm engine's
    t0 = time.perf_counter()
    segment_run(path, seg, overwrite=True)
    cold = time.perf_counter() - t0
    seg._forward = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    try:
        segment_run(path, seg, overwrite=True)
    finally:
        del seg._forward
    total = time.perf_counter() - t0
    return {
        "frames_per_s": n / total,
        "cold_frames_per_s": n / cold,
        "outside_model_fraction": 1 - model_seconds[0] / total,
        "backend": seg.backend,
        "device": str(seg.device),
        "precision": seg.precision,
        "batch_sizes": {f"{h}x{w}": b for (h, w), b in seg._batch_cache.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-512", type=int, default=16)
    parser.add_argument("--frames-1024", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU figures")
    args = parser.parse_args()
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    tmp = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    try:
        try:
            ckpt = default_checkpoint_path()
            from crystalseg.models import load_checkpoint

            model, spec, _ = load_checkpoint(ckpt)
            weights = "bundled"
        except CheckpointError:
            spec = ModelSpec(encoder="mobilenet_v2", codes=("background", "crystal"))
            torch.manual_seed(0)
            model = build_model(spec).eval()
            ckpt = save_checkpoint(
                tmp / "model", model, spec, training={}, metrics=[], data_fingerprint="bench"
            )
            weights = "random"
        result: dict[str, Any] = {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": available_cores(),
                "torch": torch.__version__,
                "cpu_mm_fp32_gflops": matmul_gflops("cpu", torch.float32, 2048),
            },
            "model": {
                "encoder": spec.encoder,
                "decoder_channels": list(spec.decoder_channels),
                "weights": weights,
            },
        }
        if cuda:
            result["machine"]["gpu"] = torch.cuda.get_device_name()
            result["machine"]["gpu_mm_bf16_tflops"] = (
                matmul_gflops("cuda", torch.bfloat16, 8192, repeats=10) / 1e3
            )
        if not (args.cuda_only and cuda):
            result["cpu_options"] = cpu_options(model, spec, ckpt, args.compile)
        result["sizes"] = {}
        for size, n in ((512, args.frames_512), (1024, args.frames_1024)):
            gflop = model_gflop(build_model(spec).eval(), size)
            result["model"][f"gflop_per_frame_{size}"] = gflop
            entry: dict[str, Any] = {"frames": n}
            if not (args.cuda_only and cuda):
                store = make_store(tmp / f"run{size}.zarr", n, size)
                entry["cpu"] = cpu_entry(store, ckpt, model, spec, gflop, result["machine"])
                if size == 1024:
                    half = engine_run(store, ckpt, EngineSettings(device="cpu", resize=0.5))
                    entry["cpu"]["engine_resize_0_5"] = half
                    entry["cpu"]["resize_0_5_speedup"] = (
                        half["frames_per_s"] / entry["cpu"]["engine"]["frames_per_s"]
                    )
                    entry["cpu"]["auto_resize"] = auto_resize_cost(store, ckpt, entry["cpu"])
            if cuda:
                gpu_store = make_store(tmp / f"gpu{size}.zarr", 8 * n, size)
                gpu_engine = engine_run(gpu_store, ckpt, EngineSettings(device="cuda"))
                # the automatic batch (free memory, up to MAX_GPU_BATCH) against a fixed 32
                gpu_b32 = engine_run(gpu_store, ckpt, EngineSettings(device="cuda", batch_size=32))
                gpu_naive = naive_loop(gpu_store, copy.deepcopy(model), spec, "cuda")
                bf16 = result["machine"]["gpu_mm_bf16_tflops"] * 1e3
                entry["cuda"] = {
                    "frames": 8 * n,
                    "engine": gpu_engine,
                    "engine_batch_32": gpu_b32,
                    "naive_frames_per_s": gpu_naive,
                    "speedup": gpu_engine["frames_per_s"] / gpu_naive,
                    "engine_fraction_of_bf16_peak": gpu_engine["frames_per_s"] * gflop / bf16,
                }
            result["sizes"][str(size)] = entry
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["seconds"] = time.perf_counter() - started
        print(json.dumps(result, indent=2, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
