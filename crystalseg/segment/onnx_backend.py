"""ONNX Runtime on the CPU: export once, cache by checksum, verify, use when faster.

On the CPU the runtime decides the speed: on our 2-core machines ONNX Runtime ran
the default mobilenet_v2 U-Net 2-3x faster than PyTorch eager and close to the
machine's matmul peak. So a CPU engine exports its network to ONNX once, keeps the
file next to the checkpoint (``model-<sha256[:16]>.onnx``; in the user cache when the
checkpoint directory is read-only, e.g. the bundled model), checks the runtime's
logits against PyTorch on a random batch every time it loads the file, and times
both runtimes once per model and machine, remembering the faster in
``backend_choice.json`` in the user cache. Any failure falls back to PyTorch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from crystalseg.errors import ConfigError
from crystalseg.models import ModelSpec, prepare_batch
from crystalseg.models.checkpoint import shared_file_mode

log = logging.getLogger(__name__)

ONNX_OPSET = 17
#: Logits of ONNX Runtime and PyTorch must agree to ``atol + rtol * |torch|``.
PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-3
#: Input of the one-off speed comparison: one frame of 256 x 256.
TIMING_SHAPE = (1, 256, 256)
CHOICE_FILE = "backend_choice.json"
CACHE_ENV = "CRYSTALSEG_CACHE_DIR"

_choice_lock = threading.Lock()
_choices: dict[str, str] = {}


class OnnxUnavailableError(ConfigError):
    """ONNX Runtime cannot run this model here (not installed, export or parity failed)."""


def onnxruntime_available() -> bool:
    """True when the ``onnxruntime`` package is importable."""
    return importlib.util.find_spec("onnxruntime") is not None


def user_cache_dir() -> Path:
    """crystalseg's cache folder: ``$CRYSTALSEG_CACHE_DIR``, else the platform's user cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    if sys.platform == "win32":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "crystalseg"


def _writable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


def onnx_cache_path(checksum: str, checkpoint: Path | None = None, *, variant: str = "") -> Path:
    """Where the ONNX export of the weights with sha256 ``checksum`` lives.

    Next to the checkpoint when the file is already there or the directory is writable
    (and not inside the crystalseg package, where the bundled model lives), else in
    :func:`user_cache_dir` ``/onnx``. ``variant`` names a derived model (the int8 one:
    ``model-<sha256[:16]>-<variant>.onnx``).
    """
    name = f"model-{checksum[:16]}{'-' + variant if variant else ''}.onnx"
    if checkpoint is not None:
        near = Path(checkpoint) / name
        if near.is_file() or (_writable(Path(checkpoint)) and not _in_package(near)):
            return near
    return user_cache_dir() / "onnx" / name


def _in_package(path: Path) -> bool:
    """True inside the installed crystalseg package (the bundled model): never write there."""
    package = Path(__file__).resolve().parents[1]
    return path.resolve().is_relative_to(package)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a network's state dict, for models that come without a checkpoint."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(model: nn.Module, spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` to ONNX with dynamic batch, height and width; atomic write.

    Uses torch's TorchScript exporter (half a second for the default model) and falls
    back to the ``torch.export`` based one (slower, needs ``onnxscript``).

    Raises
    ------
    OnnxUnavailableError
        Neither exporter could export the network.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)
    net = net.float().eval()
    example = torch.zeros((2, spec.in_channels, 2 * spec.stride, 3 * spec.stride))
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net,
                    (example,),
                    str(tmp),
                    input_names=["frames"],
                    output_names=["logits"],
                    dynamic_axes={
                        "frames": {0: "batch", 2: "height", 3: "width"},
                        "logits": {0: "batch", 2: "height", 3: "width"},
                    },
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                )
        except Exception as legacy_exc:
            log.info("TorchScript ONNX export failed (%s); trying torch.export", legacy_exc)
            try:
                _export_dynamo(net, example, tmp)
            except Exception as exc:
                raise OnnxUnavailableError(
                    f"cannot export the '{spec.encoder}' U-Net to ONNX ({exc}); use --backend torch"
                ) from exc
        os.chmod(tmp, shared_file_mode())  # beside the checkpoint, readable as it is
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported ONNX model to %s", path)
    return path


def _export_dynamo(net: nn.Module, example: torch.Tensor, out: Path) -> None:
    big = 1 << 14
    dims = {
        0: torch.export.Dim("batch", min=1, max=big),
        2: 32 * torch.export.Dim("h32", min=1, max=big // 32),
        3: 32 * torch.export.Dim("w32", min=1, max=big // 32),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            input_names=["frames"],
            output_names=["logits"],
            dynamic_shapes={"x": dims},
            opset_version=max(ONNX_OPSET, 18),
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    program.save(str(out))


class OnnxRunner:
    """An ONNX Runtime CPU session: float32 (b, C, h, w) in, float32 logits out.

    Parameters
    ----------
    path : the ``.onnx`` file
    threads : intra-op threads (the cores to use)
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.path = Path(path)
        self.threads = int(threads)
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits (b, K, h, w) float32 of a normalised float32 batch (b, C, h, w)."""
        out = self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)


def parity_error(
    runner: Callable[[np.ndarray], np.ndarray],
    torch_forward: Callable[[torch.Tensor], torch.Tensor],
    spec: ModelSpec,
    *,
    seed: int = 0,
) -> float:
    """Largest ``|onnx - torch| / (atol + rtol * |torch|)`` on a random batch; <= 1 passes.

    The batch is two random uint8 frames of 2 x 3 strides, normalised as in training, so
    that the dynamic batch, height and width of the export are exercised.
    """
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (2, 2 * spec.stride, 3 * spec.stride), dtype=np.uint8)
    x = prepare_batch(torch.from_numpy(frames), spec)
    with torch.inference_mode():
        ref = torch_forward(x).float().cpu().numpy()
    got = runner(x.numpy())
    if got.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(got - ref) / (PARITY_ATOL + PARITY_RTOL * np.abs(ref))))


def load_onnx_runner(
    model: nn.Module,
    spec: ModelSpec,
    *,
    checksum: str | None,
    checkpoint: Path | None,
    threads: int,
    torch_forward: Callable[[torch.Tensor], torch.Tensor],
) -> OnnxRunner:
    """Export (or reuse the cached export), open and verify an ONNX Runtime session.

    A cached file that fails the parity check is exported again once.

    Raises
    ------
    OnnxUnavailableError
        onnxruntime missing, export failed, or the outputs disagree with PyTorch.
    """
    if not onnxruntime_available():
        raise OnnxUnavailableError(
            "ONNX Runtime is not installed; pip install onnxruntime onnx, or use --backend torch"
        )
    checksum = checksum or model_fingerprint(model)
    path = onnx_cache_path(checksum, checkpoint)
    for attempt in (0, 1):
        if not path.is_file() or attempt:
            export_onnx(model, spec, path)
        try:
            runner = OnnxRunner(path, threads=threads)
            err = parity_error(runner, torch_forward, spec)
        except Exception as exc:
            log.info("cached ONNX model %s unusable (%s)", path, exc)
            err = float("inf")
        if err <= 1.0:
            return runner
        log.warning("ONNX model %s disagrees with PyTorch (error %.3g x tolerance)", path, err)
    raise OnnxUnavailableError(
        f"the ONNX export of this model disagrees with PyTorch beyond {PARITY_ATOL} "
        f"(+ relative {PARITY_RTOL}); use --backend torch"
    )


def choice_key(checksum: str, threads: int) -> str:
    """What a runtime choice depends on: weights, machine, CPU, threads, library versions."""
    import onnxruntime as ort

    return "|".join(
        [
            checksum,
            platform.machine(),
            _cpu_model(),
            f"threads={threads}",
            f"torch={torch.__version__}",
            f"ort={ort.__version__}",
        ]
    )


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def read_choices() -> dict[str, Any]:
    """The runtime choices remembered in the user cache (:data:`CHOICE_FILE`), by key."""
    path = user_cache_dir() / CHOICE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_choice(key: str, record: dict[str, Any]) -> None:
    """Store ``record`` under ``key`` in :data:`CHOICE_FILE` (atomic; nothing is stored
    when the cache is read-only)."""
    path = user_cache_dir() / CHOICE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = read_choices()
        data[key] = record
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{CHOICE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except OSError as exc:  # read-only home: remember in this process only
        log.debug("cannot remember the backend choice in %s: %s", path, exc)


def time_forward(fn: Callable[[], Any], *, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of ``fn()`` after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_backends(
    runner: OnnxRunner,
    torch_forward: Callable[[torch.Tensor], torch.Tensor],
    spec: ModelSpec,
) -> dict[str, float]:
    """Seconds per :data:`TIMING_SHAPE` frame for ``"torch"`` and ``"onnx"``."""
    frames = torch.from_numpy(
        np.random.default_rng(1).integers(0, 256, TIMING_SHAPE, dtype=np.uint8)
    )
    x = prepare_batch(frames, spec)
    xn = x.numpy()
    with torch.inference_mode():
        t_torch = time_forward(lambda: torch_forward(x))
    t_onnx = time_forward(lambda: runner(xn))
    return {"torch": t_torch, "onnx": t_onnx}


def select_cpu_backend(
    model: nn.Module,
    spec: ModelSpec,
    *,
    requested: Literal["auto", "onnx"],
    checksum: str | None,
    checkpoint: Path | None,
    threads: int,
    torch_forward: Callable[[torch.Tensor], torch.Tensor],
) -> OnnxRunner | None:
    """The ONNX Runtime runner to use on the CPU, or None for PyTorch.

    ``requested="onnx"`` insists (errors propagate); ``"auto"`` falls back to PyTorch on
    any failure and otherwise keeps whichever runtime was faster when first measured on
    this machine.

    Raises
    ------
    OnnxUnavailableError
        Only with ``requested="onnx"``: see :func:`load_onnx_runner`.
    """
    if requested == "auto" and not onnxruntime_available():
        log.info("onnxruntime not installed; running the CPU model in PyTorch")
        return None
    checksum = checksum or model_fingerprint(model)
    try:
        runner = load_onnx_runner(
            model,
            spec,
            checksum=checksum,
            checkpoint=checkpoint,
            threads=threads,
            torch_forward=torch_forward,
        )
    except OnnxUnavailableError as exc:
        if requested == "onnx":
            raise
        log.warning("ONNX Runtime unavailable for this model, using PyTorch: %s", exc)
        return None
    if requested == "onnx":
        return runner
    key = choice_key(checksum, threads)
    with _choice_lock:
        choice = _choices.get(key)
        if choice is None:
            stored = read_choices().get(key)
            if isinstance(stored, dict) and stored.get("backend") in ("torch", "onnx"):
                choice = str(stored["backend"])
            else:
                seconds = measure_backends(runner, torch_forward, spec)
                choice = min(seconds, key=lambda k: seconds[k])
                log.info(
                    "CPU backend: torch %.3f s, onnx %.3f s per %s frame; using %s",
                    seconds["torch"],
                    seconds["onnx"],
                    TIMING_SHAPE[1:],
                    choice,
                )
                remember_choice(key, {"backend": choice, "seconds": seconds})
            _choices[key] = choice
    return runner if choice == "onnx" else None


def forget_backend_choices() -> None:
    """Forget the in-process backend choices (the file in the user cache stays)."""
    with _choice_lock:
        _choices.clear()
