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
- ``cpu_precision``: the CPU engine at the network's pace, fp32 and int8 (ONNX Runtime
  static quantization, :mod:`crystalseg.segment.int8`). For 512 x 512 and 1024 x 1024
  stores: ``segment_run`` (the whole stage: read, normalise, network, class map,
  compress, write) against the bare network (``session.run`` alone, on the same
  pre-normalised, padded batches of the same size, read before the clock starts), for
  each precision, run interleaved ``--repeats`` times (medians and the min-max spread:
  the machine may be shared). ``engine_over_bare`` is the share of the network's pace
  that the engine keeps; ``int8_speedup`` int8 over fp32, for engine and bare network.
  ``agreement``: foreground masks of the int8 engine against the fp32 engine, and of
  both against the truth, on held-out synthetic frames (seeds never used for
  calibration) and on the shared real images (``--real``, scored only).
- ``peak_rss_mb``: peak resident memory of the process.

On CUDA the engine also runs with a fixed batch of 32 (``engine_batch_32``) beside the
automatic one; ``--cuda-only`` skips the CPU figures. ``cold_frames_per_s`` is the first
pass over the run, so only the automatic engine's is a first use: it runs first at each
frame size and pays the process's CUDA start (at 512) and cuDNN's autotuning for that
shape; the fixed-batch engine after it finds them done (H100, 512 x 512: 33 against
470 frames/s cold, both about 470 warm, both at batch 32).

Usage: ``python benchmarks/bench_segment.py [--frames-512 16] [--frames-1024 6] [--compile]
[--cuda-only] [--precision-only] [--repeats 3] [--real DIR]``
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
from crystalseg.segment.engine import (
    CPU_PIXELS_PER_BATCH,
    Segmenter,
    available_cores,
    pad_to_multiple,
)
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


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": float(np.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "runs": [round(v, 3) for v in values],
    }


def prepared_batches(store: Path, spec: ModelSpec) -> list[np.ndarray]:
    """The store's frames as the engine feeds them to the network: per image chunk, in
    batches of the CPU pixel budget, normalised and padded to the stride (float32)."""
    image = zarr.open_group(str(store), mode="r")["image"]
    n, h, w = image.shape
    fpc = int(image.chunks[0])
    batch = max(1, min(16, CPU_PIXELS_PER_BATCH // (h * w)))
    out = []
    for start in range(0, n, fpc):
        frames = torch.from_numpy(np.asarray(image[start : min(n, start + fpc)]))
        x = pad_to_multiple(prepare_batch(frames, spec), spec.stride)
        out += [x[i : i + batch].contiguous().numpy() for i in range(0, x.shape[0], batch)]
    return out


def bare_seconds(seg: Segmenter, batches: list[np.ndarray]) -> float:
    """Seconds of ONNX Runtime's ``session.run`` alone over ``batches``."""
    t0 = time.perf_counter()
    for x in batches:
        seg._onnx(x)
    return time.perf_counter() - t0


def cpu_network_pace(
    store: Path, ckpt: Path, spec: ModelSpec, repeats: int, engines: dict[str, Segmenter]
) -> dict[str, Any]:
    """Engine (segment_run) and bare network, fp32 and int8, interleaved: frames/s."""
    n = zarr.open_group(str(store), mode="r")["image"].shape[0]
    batches = prepared_batches(store, spec)
    times: dict[str, list[float]] = {f"{k}_{p}": [] for k in ("engine", "bare") for p in engines}
    for seg in engines.values():  # warm: first segment_run opens, allocates, settles
        segment_run(store, seg, overwrite=True)
        bare_seconds(seg, batches[:1])
    for _ in range(repeats):
        for p, seg in engines.items():
            t0 = time.perf_counter()
            segment_run(store, seg, overwrite=True)
            times[f"engine_{p}"].append(n / (time.perf_counter() - t0))
            times[f"bare_{p}"].append(n / bare_seconds(seg, batches))
    result: dict[str, Any] = {
        "frames": n,
        "batch_shapes": sorted({tuple(b.shape) for b in batches}),
        "frames_per_s": {k: _spread(v) for k, v in times.items()},
    }
    med = {k: float(np.median(v)) for k, v in times.items()}
    result["engine_over_bare"] = {p: med[f"engine_{p}"] / med[f"bare_{p}"] for p in engines}
    # the same ratio per interleaved repeat (engine and bare run back to back)
    result["engine_over_bare_per_repeat"] = {
        p: _spread([e / b for e, b in zip(times[f"engine_{p}"], times[f"bare_{p}"], strict=True)])
        for p in engines
    }
    if "int8" in engines:
        result["int8_speedup"] = {
            k: med[f"{k}_int8"] / med[f"{k}_fp32"] for k in ("engine", "bare")
        }
    return result


def _fg_iou(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))


def agreement(
    engines: dict[str, Segmenter], frames: list[np.ndarray], truths: list[np.ndarray]
) -> dict[str, Any]:
    """Foreground IoU (pooled over frames) of int8 with fp32, and of each with the truth."""
    inter = {k: 0 for k in ("int8_vs_fp32", "fp32_vs_truth", "int8_vs_truth")}
    union = dict.fromkeys(inter, 0)
    per_frame = []
    for frame, truth in zip(frames, truths, strict=True):
        m = {p: seg.predict(frame[None])[0] > 0 for p, seg in engines.items()}
        pairs = {
            "int8_vs_fp32": (m["int8"], m["fp32"]),
            "fp32_vs_truth": (m["fp32"], truth > 0),
            "int8_vs_truth": (m["int8"], truth > 0),
        }
        row = {}
        for k, (a, b) in pairs.items():
            i, u = _fg_iou(a, b)
            inter[k] += i
            union[k] += u
            row[k] = i / u if u else 1.0
        per_frame.append(row)
    iou = {k: inter[k] / union[k] if union[k] else 1.0 for k in inter}
    return {
        "frames": len(frames),
        "iou": iou,
        "int8_disagreement": 1 - iou["int8_vs_fp32"],
        "truth_iou_loss": iou["fp32_vs_truth"] - iou["int8_vs_truth"],
        "worst_frame_int8_vs_fp32": min(r["int8_vs_fp32"] for r in per_frame),
    }


def held_out_synth(size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One late frame of each scenario, at seeds far from the calibration's (0-3)."""
    from crystalseg.synth.render import SyntheticRun
    from crystalseg.synth.scenarios import SCENARIO_NAMES, SynthConfig

    frames, truths = [], []
    for k, scenario in enumerate(SCENARIO_NAMES):
        run = SyntheticRun(
            SynthConfig(frames=10, height=size, width=size, seed=7001 + k, scenario=scenario)
        )
        frame = run.render(9)
        frames.append(frame.image)
        truths.append(frame.class_mask)
    return frames, truths


def real_images(folder: Path, spec: ModelSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Image/mask pairs ``NAME.png`` / ``NAME_mask.png`` (scored only, never tuned on)."""
    from crystalseg.io.base import to_grey
    from crystalseg.train.data import read_image
    from crystalseg.train.masks import read_mask

    frames, truths = [], []
    for mask_path in sorted(folder.glob("*_mask.png")):
        image = read_image(mask_path.with_name(mask_path.name.replace("_mask", "")))
        if image.ndim == 3 and spec.in_channels == 1:
            image = to_grey(image[..., :3])
        frames.append(image)
        truths.append(read_mask(mask_path))
    return frames, truths


def cpu_precision(
    args: argparse.Namespace, tmp: Path, ckpt: Path, spec: ModelSpec
) -> dict[str, Any]:
    """The ``cpu_precision`` section: network pace and int8 agreement."""
    from crystalseg.segment.int8 import cpu_has_vnni

    settings = {
        p: EngineSettings(device="cpu", precision=p, resize=1.0)  # type: ignore[arg-type]
        for p in ("fp32", "int8")
    }
    t0 = time.perf_counter()
    engines = {"fp32": load_segmenter(ckpt, None, settings["fp32"])}
    try:
        engines["int8"] = load_segmenter(ckpt, None, settings["int8"])
    except Exception as exc:  # the agreement failed, or no ONNX Runtime quantization
        return {"int8_error": str(exc)}
    out: dict[str, Any] = {
        "vnni": cpu_has_vnni(),
        "seconds_to_load_both": time.perf_counter() - t0,
        "int8_choice": engines["int8"].describe().get("precision_choice"),
        "auto_chooses": load_segmenter(ckpt, None, EngineSettings(device="cpu")).precision,
    }
    for size, n in ((512, args.frames_512), (1024, args.frames_1024)):
        store = make_store(tmp / f"pace{size}.zarr", n, size)
        out[str(size)] = cpu_network_pace(store, ckpt, spec, args.repeats, engines)
    frames, truths = held_out_synth(512)
    out["agreement"] = {"held_out_synth_512": agreement(engines, frames, truths)}
    if args.real is not None and Path(args.real).is_dir():
        frames, truths = real_images(Path(args.real), spec)
        out["agreement"]["real"] = {"folder": str(args.real), **agreement(engines, frames, truths)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-512", type=int, default=16)
    parser.add_argument("--frames-1024", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU figures")
    parser.add_argument(
        "--precision-only",
        action="store_true",
        help="only the cpu_precision section (network pace, int8)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument(
        "--real",
        type=Path,
        default=Path("/work/shared/data/dsb2018/test"),
        help="folder of NAME.png / NAME_mask.png pairs scored for int8 agreement",
    )
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
            result["cpu_precision"] = cpu_precision(args, tmp, ckpt, spec)
            if not args.precision_only:
                result["cpu_options"] = cpu_options(model, spec, ckpt, args.compile)
        result["sizes"] = {}
        sizes = ((512, args.frames_512), (1024, args.frames_1024))
        for size, n in () if args.precision_only else sizes:
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
