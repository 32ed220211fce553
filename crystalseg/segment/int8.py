"""int8 inference on the CPU: ONNX Runtime static quantization, used only where it pays.

CPUs with VNNI (AVX-512 VNNI or AVX-VNNI) multiply int8 numbers four times as fast as
float32 ones. So once the CPU engine runs a network in ONNX Runtime (see
:mod:`crystalseg.segment.onnx_backend`), it may also quantize that network statically
(QDQ format: int8 weights per output channel, uint8 activations whose ranges are
calibrated on :func:`calibration_frames`, synthetic frames of four scenarios) and run the
int8 model instead, provided that

- the CPU has VNNI (without it int8 gains little, and uint8 x int8 products can saturate);
- the int8 model's foreground masks agree with the float32 model's on the calibration
  frames to a foreground IoU of at least ``min_iou`` (0.995 by default);
- it runs at least :data:`INT8_MIN_SPEEDUP` times as fast, timed once per model and
  machine like the choice between PyTorch and ONNX Runtime.

The quantized model is kept next to the float32 export (``model-<sha256[:16]>-int8-
<recipe>.onnx``; the recipe names the calibration), and the measurements are remembered
in the user cache's ``backend_choice.json``, so the one-off cost (seconds for the bundled
model) is paid on the first use per model and machine. ``precision="int8"`` forces the
int8 model (no VNNI, speed or agreement test; a warning says when its masks agree less
than asked) and ``precision="fp32"`` forbids it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from crystalseg.models import ModelSpec, prepare_batch
from crystalseg.models.checkpoint import shared_file_mode
from crystalseg.segment.onnx_backend import (
    TIMING_SHAPE,
    OnnxRunner,
    OnnxUnavailableError,
    choice_key,
    onnx_cache_path,
    read_choices,
    remember_choice,
    time_forward,
)

log = logging.getLogger(__name__)

#: The int8 model must run at least this many times as fast as the float32 one to be
#: chosen automatically (timings on a shared machine vary by a few per cent).
INT8_MIN_SPEEDUP = 1.1
#: Names the calibration: its frames (scenarios, seeds, size, frames per run) and the
#: quantization settings below. Change it whenever either changes, so that cached int8
#: models and remembered choices made another way are not reused.
CALIBRATION_RECIPE = "synth1"
CALIBRATION_SCENARIOS: tuple[str, ...] = ("mixed", "crowded", "needles", "bubbles")
#: Frames of this many pixels a side, two per scenario (from the middle and the end of
#: a 12-frame run, where crystals are many and large).
CALIBRATION_SIZE = 256
_CALIBRATION_TIMES = (6, 11)

_lock = threading.Lock()
_memo: dict[str, dict[str, Any]] = {}


def cpu_has_vnni() -> bool:
    """True when the CPU reports AVX-512 VNNI or AVX-VNNI (Linux ``/proc/cpuinfo``).

    Elsewhere (macOS, Windows, ARM) this says False, so int8 is never chosen
    automatically there; ``precision="int8"`` still forces it.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_vnni", "avx_vnni"})
    return False


@functools.lru_cache(maxsize=1)
def _rendered_calibration() -> np.ndarray:
    from crystalseg.synth.render import SyntheticRun
    from crystalseg.synth.scenarios import SynthConfig

    frames = []
    for seed, scenario in enumerate(CALIBRATION_SCENARIOS):
        config = SynthConfig(
            frames=max(_CALIBRATION_TIMES) + 1,
            height=CALIBRATION_SIZE,
            width=CALIBRATION_SIZE,
            seed=seed,
            scenario=scenario,  # type: ignore[arg-type]
        )
        run = SyntheticRun(config)
        frames += [run.render(t).image for t in _CALIBRATION_TIMES]
    stack = np.stack(frames)
    stack.flags.writeable = False
    return stack


def calibration_frames() -> np.ndarray:
    """The calibration frames (8, 256, 256) uint8: synthetic runs of four scenarios.

    Rendered once per process (about a second). Synthetic rather than the user's run, so
    that one int8 model per checkpoint serves every run and its agreement is measured
    on frames with known content; how well it agrees on real images is measured by
    ``benchmarks/bench_segment.py`` (see docs/performance.md).
    """
    return _rendered_calibration()


def int8_cache_path(checksum: str, checkpoint: Path | None = None) -> Path:
    """Where the int8 model of the weights with sha256 ``checksum`` lives (beside the
    float32 export)."""
    return onnx_cache_path(checksum, checkpoint, variant=f"int8-{CALIBRATION_RECIPE}")


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    batches: list[np.ndarray],
) -> Path:
    """Statically quantize an ONNX model to int8 in QDQ format; atomic write.

    Parameters
    ----------
    fp32_path : the float32 model (input ``frames``)
    out_path : where the int8 model goes
    batches : normalised float32 inputs (b, C, h, w) whose activation ranges (min-max)
        set the uint8 scales

    Weights are int8 per output channel, activations uint8 (the fast pair on x86 with
    VNNI). Every operator ONNX Runtime can run in int8 is quantized: keeping the wide,
    low-channel layers near full resolution in float32 was measured slower on our
    machines (the conversions cost more than they save).

    Raises
    ------
    OnnxUnavailableError
        ONNX Runtime could not quantize the model.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[dict[str, np.ndarray]] = iter(
                {"frames": np.ascontiguousarray(b, dtype=np.float32)} for b in batches
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out.parent) as tmp:
        source = Path(fp32_path)
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and graph clean-up, as ONNX Runtime recommends
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception as exc:
            log.info("int8 pre-processing skipped (%s); quantizing the export as it is", exc)
        staged = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(source),
                str(staged),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:
            raise OnnxUnavailableError(
                f"ONNX Runtime cannot quantize this model to int8 ({exc}); use precision fp32"
            ) from exc
        os.chmod(staged, shared_file_mode())
        os.replace(staged, out)
    log.info("quantized %s to int8 at %s", fp32_path, out)
    return out


def foreground_iou(reference: np.ndarray, other: np.ndarray) -> float:
    """Foreground IoU of two logit stacks (b, K, h, w), pooled over all frames.

    Foreground is every class but the first (background); the masks are the argmax over
    classes. Two empty masks agree perfectly (1.0).
    """
    a = np.argmax(reference, axis=1) > 0
    b = np.argmax(other, axis=1) > 0
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


@dataclass(frozen=True)
class PrecisionChoice:
    """How the CPU engine chose between float32 and int8, for the provenance.

    Attributes
    ----------
    precision : "fp32" or "int8", what runs
    requested : "auto", "fp32" or "int8"
    reason : one line a user can read
    vnni : whether the CPU has VNNI
    agreement_iou : foreground IoU of int8 with fp32 masks on the calibration frames
        (None when not measured)
    min_iou : the agreement asked for
    seconds : seconds per :data:`~crystalseg.segment.onnx_backend.TIMING_SHAPE` frame
        of ``"fp32"`` and ``"int8"`` (empty when not timed)
    calibration : the calibration recipe, ``"synth1"``: see :func:`calibration_frames`
    int8_model : file name of the int8 model (None when none was made)
    """

    precision: Literal["fp32", "int8"]
    requested: Literal["auto", "fp32", "int8"]
    reason: str
    vnni: bool
    agreement_iou: float | None = None
    min_iou: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    calibration: str = CALIBRATION_RECIPE
    int8_model: str | None = None

    def describe(self) -> dict[str, Any]:
        """The choice as a JSON-ready dict."""
        return asdict(self)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _calibration_batches(spec: ModelSpec) -> list[np.ndarray]:
    frames = torch.from_numpy(calibration_frames().copy())
    x = prepare_batch(frames, spec).numpy()
    return [x[i : i + 1] for i in range(x.shape[0])]


def load_int8_runner(
    fp32: OnnxRunner, spec: ModelSpec, *, checksum: str, checkpoint: Path | None
) -> tuple[OnnxRunner, str]:
    """The int8 model of ``fp32``'s network (quantized now unless cached) and its sha256.

    A cached file that ONNX Runtime cannot open is quantized again once.

    Raises
    ------
    OnnxUnavailableError
        Quantization failed.
    """
    path = int8_cache_path(checksum, checkpoint)
    for attempt in (0, 1):
        if not path.is_file() or attempt:
            quantize_onnx(fp32.path, path, _calibration_batches(spec))
        try:
            return OnnxRunner(path, threads=fp32.threads), _file_sha256(path)
        except Exception as exc:
            if attempt:
                raise OnnxUnavailableError(
                    f"ONNX Runtime cannot open the int8 model {path} ({exc}); use precision fp32"
                ) from exc
            log.info("cached int8 model %s unusable (%s); quantizing again", path, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def measure_int8(fp32: OnnxRunner, int8: OnnxRunner, spec: ModelSpec) -> dict[str, Any]:
    """Agreement on the calibration frames and seconds per timing frame of both models."""
    batches = _calibration_batches(spec)
    x = np.concatenate(batches)
    iou = foreground_iou(fp32(x), int8(x))
    frames = np.random.default_rng(1).integers(0, 256, TIMING_SHAPE, dtype=np.uint8)
    xt = prepare_batch(torch.from_numpy(frames), spec).numpy()
    seconds = {"fp32": time_forward(lambda: fp32(xt)), "int8": time_forward(lambda: int8(xt))}
    return {"agreement_iou": iou, "seconds": seconds}


def select_cpu_precision(
    fp32: OnnxRunner,
    spec: ModelSpec,
    *,
    requested: Literal["auto", "int8"],
    checksum: str,
    checkpoint: Path | None,
    min_iou: float,
) -> tuple[OnnxRunner | None, PrecisionChoice]:
    """The int8 runner to use instead of ``fp32`` (or None), and why.

    ``"auto"`` takes int8 only on a CPU with VNNI, when its masks agree with float32 to
    ``min_iou`` on the calibration frames and it is :data:`INT8_MIN_SPEEDUP` times as
    fast; any failure falls back to float32. ``"int8"`` takes it regardless, with a
    ``UserWarning`` when the masks agree less than ``min_iou``.

    Raises
    ------
    OnnxUnavailableError
        Only with ``requested="int8"``: the model could not be quantized.
    """
    vnni = cpu_has_vnni()
    if requested == "auto" and not vnni:
        reason = "fp32: this CPU has no VNNI (AVX-512 VNNI or AVX-VNNI), where int8 gains little"
        log.info("CPU precision %s", reason)
        return None, PrecisionChoice("fp32", requested, reason, vnni, min_iou=min_iou)
    try:
        int8, sha = load_int8_runner(fp32, spec, checksum=checksum, checkpoint=checkpoint)
    except OnnxUnavailableError as exc:
        if requested == "int8":
            raise
        log.warning("int8 model unavailable, running fp32: %s", exc)
        reason = f"fp32: the int8 model could not be made ({exc})"
        return None, PrecisionChoice("fp32", requested, reason, vnni, min_iou=min_iou)
    key = f"{choice_key(checksum, fp32.threads)}|int8={CALIBRATION_RECIPE}"
    with _lock:
        record = _memo.get(key) or read_choices().get(key)
        if not (isinstance(record, dict) and record.get("int8_sha256") == sha):
            record = {**measure_int8(fp32, int8, spec), "int8_sha256": sha}
            remember_choice(key, record)
        _memo[key] = record
    iou = float(record["agreement_iou"])
    seconds = {k: float(v) for k, v in record["seconds"].items()}
    speedup = seconds["fp32"] / max(seconds["int8"], 1e-12)
    facts = {
        "vnni": vnni,
        "agreement_iou": iou,
        "min_iou": min_iou,
        "seconds": seconds,
        "int8_model": int8.path.name,
    }
    if requested == "int8":
        reason = f"int8: asked for (agreement IoU {iou:.4f}, {speedup:.2f}x fp32 speed)"
        if iou < min_iou:
            warnings.warn(
                f"int8 was asked for, but its masks agree with float32 only at foreground "
                f"IoU {iou:.4f} (< {min_iou}) on the calibration frames; expect masks that "
                "differ at crystal edges, or use precision fp32",
                UserWarning,
                stacklevel=4,
            )
    elif iou < min_iou:
        reason = (
            f"fp32: int8 masks agree with fp32 at foreground IoU {iou:.4f} < {min_iou} "
            "on the calibration frames"
        )
    elif speedup < INT8_MIN_SPEEDUP:
        reason = f"fp32: int8 ran only {speedup:.2f}x as fast (needs {INT8_MIN_SPEEDUP}x)"
    else:
        reason = f"int8: {speedup:.2f}x fp32 speed, agreement IoU {iou:.4f}"
    precision: Literal["fp32", "int8"] = "int8" if reason.startswith("int8") else "fp32"
    log.info("CPU precision %s", reason)
    choice = PrecisionChoice(precision, requested, reason, **facts)  # type: ignore[arg-type]
    return (int8 if precision == "int8" else None), choice


def forget_precision_choices() -> None:
    """Forget the in-process int8 choices (the file in the user cache stays)."""
    with _lock:
        _memo.clear()
