"""The inference engine: frames of any size through a U-Net checkpoint to class maps.

One :class:`Segmenter` holds one model on one device and turns raw frames
(n, y, x) uint8/uint16 into uint8 class maps (n, y, x), optionally with the
uint8-quantised foreground probability. The steps, all on the model's device:

1. raw frames travel as they are stored (uint8/uint16; through pinned memory and a
   non-blocking copy on CUDA) and are normalised there with
   :func:`crystalseg.models.prepare_batch`, exactly as in training. The intensity
   bounds are taken from the *whole* frame, so tiling never changes them;
2. frames are resized by ``resize`` when it is not 1 (the logits are resized back
   before the argmax), then padded by reflection to the encoder stride (32 for the
   default model);
3. frames larger than ``tile_size`` are cut into overlapping tiles whose logits are
   blended with a raised-cosine window, so no seam shows;
4. the network runs in batches under ``torch.inference_mode``; on CUDA in bf16 (fp16
   where bf16 is missing) autocast and channels-last; on the CPU in fp32 through ONNX
   Runtime when that is faster (:mod:`crystalseg.segment.onnx_backend`), else PyTorch
   channels-last, and in int8 on CPUs with VNNI where that is faster still and its
   masks agree with fp32 (:mod:`crystalseg.segment.int8`). Half precision is never
   chosen on the CPU: bf16 was measured ~200x slower than fp32 on our CPUs;
5. argmax on the device; only the uint8 class map (and probability) comes back.

The batch size comes from free GPU memory (one probe forward pass) or from a pixel
budget on the CPU, and halves on out-of-memory instead of crashing.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crystalseg.errors import CheckpointError, ConfigError, CrystalsegError
from crystalseg.models import ModelSpec, load_checkpoint, prepare_batch, read_checkpoint_meta
from crystalseg.models.checkpoint import default_checkpoint_path, resolve_checkpoint_dir

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: Frames up to this size (pixels a side) run whole; larger ones are tiled.
DEFAULT_TILE_SIZE = 1024
#: Overlap of neighbouring tiles of the default size, in pixels; the blend window ramps
#: over it. Other tile sizes overlap by an eighth of their size (at least 32 pixels).
DEFAULT_TILE_OVERLAP = 128
#: Foreground IoU that int8 masks must reach against float32 ones (calibration frames).
INT8_MIN_IOU = 0.995
#: Pixels per forward pass on the CPU (4 frames of 512 x 512): bigger batches gain nothing.
CPU_PIXELS_PER_BATCH = 2**20
#: Pixels of float input prepared at once, bounding host/device memory for big chunks.
PIXELS_PER_GROUP = 32 * 2**20
#: Largest batch ever chosen automatically on a GPU. Bigger batches gain nothing in
#: steady state and make the first pass slow (cuDNN autotuning at a huge batch, no
#: overlap): on an H200, 128 frames of 512x512 took 4.0 s cold at batch 256 and 0.27 s
#: at batch 32; warm, 518 vs 455 frames/s (1024x1024: 115 vs 118). bench_segment.py.
MAX_GPU_BATCH = 32
#: Fraction of free GPU memory the automatic batch size may fill.
GPU_MEMORY_FRACTION = 0.6

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class GpuMemoryError(CrystalsegError, RuntimeError):
    """A single tile does not fit in GPU memory."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return max(1, os.cpu_count() or 1)


#: Bounds of :attr:`EngineSettings.resize`.
MIN_RESIZE, MAX_RESIZE = 0.1, 4.0


def checked_resize(value: Any) -> float:
    """``value`` as a resize factor, or a ConfigError that says what is allowed."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and MIN_RESIZE <= value <= MAX_RESIZE):
        raise ConfigError(
            f"resize {value!r} must be a factor in {MIN_RESIZE}..{MAX_RESIZE} or 'auto' "
            "(e.g. 0.5 halves the frames before the model)"
        )
    return float(value)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs a model; nothing here changes which model runs.

    Attributes
    ----------
    device : "auto", "cpu", "cuda", "cuda:N" or "mps"
        "auto" takes CUDA, then Apple MPS, then the CPU.
    backend : "auto", "torch" or "onnx"
        "onnx" (ONNX Runtime) is for the CPU only; "auto" measures both once per model
        and machine and keeps the faster.
    batch_size : int or None
        Images (whole frames or tiles) per forward pass; None chooses from free GPU
        memory or a CPU pixel budget.
    tile_size : int
        Frames whose height or width exceeds this are tiled; a multiple of the encoder
        stride (32).
    tile_overlap : int or None
        Overlap of neighbouring tiles in pixels, at most half the tile size; None takes
        an eighth of the tile size, at least 32 (128 for the default tile).
    precision : "auto", "fp32", "bf16", "fp16" or "int8"
        "auto" is bf16 (fp16 where unsupported) on CUDA; on the CPU int8 (ONNX Runtime
        static quantization) where the CPU has VNNI, int8 is faster and its masks agree
        with fp32 to ``int8_min_iou``, else fp32; fp32 elsewhere. "int8" forces the
        int8 model on the CPU (its masks must still agree) and needs ONNX Runtime.
        Half precision on the CPU is refused.
    compile : bool
        Wrap the network in ``torch.compile`` (torch backend; pays off on long runs).
    threads : int or None
        CPU threads for PyTorch and ONNX Runtime; None uses every available core.
    tta : bool
        Test-time augmentation: average the class probabilities of the 8 flips and
        quarter turns of each frame (8x the inference time). On held-out synthetic runs it
        removed 20-30 % of the false detections and raised foreground IoU by 0.01-0.035.
    resize : float or "auto"
        Factor the frames are resized by before the model (0.5 halves them; area
        averaging down, bilinear up); the class scores are resized back (bilinear), so
        masks keep the frame's size. For crystals far larger (or smaller) in pixels
        than the model was trained on: the bundled model saw crystals of about 5-250 px
        with edges 1-3 px wide, and a recording at 4x that magnification (edges and
        blur 4x wider) segments far better at ``resize=0.25``-``0.5``. Tiles are cut
        after resizing (``tile_size`` counts model pixels). ``"auto"`` picks the factor
        with :func:`choose_resize` on the frames of each ``predict`` call; the run-level
        functions (``segment_run``, ``measure_run``) pick it once per run instead.
    int8_min_iou : float
        Foreground IoU in (0, 1] that the int8 model's masks must reach against the fp32
        model's on the calibration frames before int8 runs.
    """

    device: str = "auto"
    backend: Backend = "auto"
    batch_size: int | None = None
    tile_size: int = DEFAULT_TILE_SIZE
    tile_overlap: int | None = None
    precision: Precision = "auto"
    compile: bool = False
    threads: int | None = None
    tta: bool = False
    resize: float | Literal["auto"] = 1.0
    int8_min_iou: float = INT8_MIN_IOU

    def __post_init__(self) -> None:
        if self.resize != "auto":
            object.__setattr__(self, "resize", checked_resize(self.resize))
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ConfigError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or int(self.batch_size) != self.batch_size
            or self.batch_size < 1
        ):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if int(self.tile_size) != self.tile_size or self.tile_size < 64 or self.tile_size % 32:
            raise ConfigError(
                f"tile_size {self.tile_size} must be a multiple of 32 and at least 64, e.g. 1024"
            )
        overlap = self.tile_overlap
        if overlap is None:
            overlap = min(self.tile_size // 2, max(32, self.tile_size // 8))
            object.__setattr__(self, "tile_overlap", overlap)
        if not 0 <= overlap <= self.tile_size // 2:
            raise ConfigError(
                f"tile_overlap {self.tile_overlap} must lie in 0..{self.tile_size // 2} "
                f"(half the tile size {self.tile_size})"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads}")
        iou = self.int8_min_iou
        if isinstance(iou, bool) or not isinstance(iou, int | float) or not 0 < iou <= 1:
            raise ConfigError(f"int8_min_iou {iou!r} must be an IoU in (0, 1], e.g. 0.995")
        if self.precision == "int8" and self.backend == "torch":
            raise ConfigError(
                "precision int8 runs through ONNX Runtime, but backend 'torch' was asked "
                "for; use backend auto or onnx, or precision fp32"
            )


def select_device(device: str = "auto") -> torch.device:
    """The torch device for ``device``: "auto" takes CUDA, then MPS, then the CPU.

    Raises
    ------
    ConfigError
        An explicit device that this machine does not have.
    """
    EngineSettings(device=device)  # validates the name
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{device}' was asked for but torch sees no CUDA GPU (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA GPU(s) "
                "are visible; use --device cuda:0"
            )
        if dev.index is None:  # memory queries need an index
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "mps" and not _mps_available():
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available; use cpu")
    return dev


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The concrete precision for ``device``: never half precision on the CPU.

    "auto" on the CPU gives fp32 here; the engine may then take int8 (see
    :mod:`crystalseg.segment.int8`).

    Raises
    ------
    ConfigError
        bf16/fp16 asked for on the CPU, int8 on another device, or bf16 on a GPU that
        lacks it.
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(
                f"precision int8 runs on the CPU only (ONNX Runtime), but device is "
                f"'{device}'; use --precision auto there, or --device cpu"
            )
        return precision
    if precision != "fp32" and device.type == "cpu":
        raise ConfigError(
            f"precision {precision} on the CPU is refused: it ran ~200x slower than fp32 on "
            "the CPUs we measured; use --precision fp32 (the default there)"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16; use --precision fp16 or auto")
    return precision


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------
# Padding and tiling (pure functions of tensors; tested on their own)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right by reflection up to multiples of ``multiple``.

    Reflection needs a pad smaller than the side, so tiny frames are reflected again
    and again (as :func:`numpy.pad` with ``mode="reflect"`` does); a side of one pixel
    is repeated.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    while ph or pw:
        ch, cw = x.shape[-2:]
        sh = min(ph, ch - 1) if ch > 1 else 0
        sw = min(pw, cw - 1) if cw > 1 else 0
        if sh == 0 and sw == 0:  # a 1-pixel side: repeat it
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            break
        x = F.pad(x, (0, sw, 0, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x.squeeze(0) if squeeze else x


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap``.

    The last tile is aligned to the end, so it may overlap its neighbour by more.
    """
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def blend_window(length: int, overlap: int, *, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weights (length,) that are 1 inside and rise as a raised cosine over ``overlap``.

    Ends facing the frame border do not ramp (no neighbour shares them). Weights stay
    positive, so a pixel covered by one tile only keeps that tile's logits exactly.
    """
    w = torch.ones(length, dtype=torch.float32)
    o = min(overlap, length)
    if o > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(o, dtype=torch.float32) + 0.5) / o)
        if ramp_start:
            w[:o] = torch.minimum(w[:o], ramp)
        if ramp_end:
            w[-o:] = torch.minimum(w[-o:], ramp.flip(0))
    return w


def class_map(
    logits: torch.Tensor,
    mask: torch.Tensor,
    prob: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> None:
    """Write argmax over classes into ``mask`` and the foreground probability into ``prob``.

    Parameters
    ----------
    logits : Tensor (b, K, h, w) float
    mask : Tensor (b, h, w) uint8, written in place
    prob : Tensor (b, h, w) uint8 or None, written in place with ``round(255 * (1 - p0))``
    temperature : float
        The probability is that of ``logits / temperature`` (the checkpoint's
        calibration, :mod:`crystalseg.train.calibrate`); the class map is the argmax of
        ``logits`` itself, which a positive temperature would not change.

    ``argmax(1)`` over a handful of classes is a strided reduction that ran 30x slower on
    the CPU than the model's own output layer; comparing class planes one by one
    is elementwise and gives the same answer (ties go to the lower class, as argmax).
    """
    k = logits.shape[1]
    inverse_t = 1.0 / float(temperature)
    if k == 2:
        diff = logits[:, 1] - logits[:, 0]
        mask.copy_(diff > 0)
        if prob is not None:
            prob.copy_(torch.sigmoid(diff * inverse_t).mul_(255.0).round_())
        return
    background = logits[:, 0]
    best = background.clone()
    mask.zero_()
    for c in range(1, k):
        plane = logits[:, c]
        mask.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    if prob is not None:
        # 1 - p0 = 1 - 1 / (1 + sum_c>0 exp(l_c - l_0)): one exponential fewer than a
        # softmax, and an overflow to inf gives exactly 1
        rest = torch.zeros_like(best)
        for c in range(1, k):
            diff = torch.sub(logits[:, c], background)
            if inverse_t != 1.0:
                diff.mul_(inverse_t)
            rest += diff.exp_()
        prob.copy_(rest.add_(1.0).reciprocal_().neg_().add_(1.0).mul_(255.0).round_())


# --------------------------------------------------------------------------------------
# The engine


class Segmenter:
    """One network on one device: raw frames in, uint8 class maps out.

    Parameters
    ----------
    model : nn.Module
        Network built from ``spec``, on any device. The engine works on a copy, so the
        caller's model keeps its device, training mode and memory layout.
    spec : ModelSpec
        Its spec: codes, normalisation, stride.
    settings : EngineSettings
        Device, backend, batch and tile sizes, precision.
    checksum : str, optional
        sha256 of the weights; keys the ONNX cache and names the model in the outputs.
    checkpoint : path, optional
        Checkpoint directory the model came from; lets the engine be pickled (a worker
        loads the checkpoint again) and places the ONNX cache next to it.
    temperature : float
        The logits are divided by it where probabilities are computed (the
        checkpoint's ``calibration``; 1: as the network makes them). Class maps and
        :meth:`predict_logits` do not depend on it.

    Examples
    --------
    >>> seg = Segmenter.from_checkpoint("model_dir")          # doctest: +SKIP
    >>> mask = seg.predict(frames)                            # (n, y, x) uint8
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        settings: EngineSettings | None = None,
        checksum: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        temperature: float = 1.0,
    ) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        settings = settings or EngineSettings()
        self.requested_settings = settings
        self.spec = spec
        self.checksum = checksum
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = select_device(settings.device)
        self.precision: Precision = resolve_precision(settings.precision, self.device)
        if settings.tile_size % spec.stride:
            fit = max(spec.stride, settings.tile_size // spec.stride * spec.stride)
            raise ConfigError(
                f"tile_size {settings.tile_size} is not a multiple of the encoder stride "
                f"{spec.stride}; use {fit}"
            )
        if settings.backend == "onnx" and self.device.type != "cpu":
            raise ConfigError(
                f"backend 'onnx' runs on the CPU only, but device is '{self.device}'; "
                "pass --device cpu or --backend torch"
            )
        self.threads = settings.threads or available_cores()
        if self.device.type == "cpu" and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self._lock = threading.Lock()
        self._batch_cache: dict[tuple[int, int], int] = {}
        self._windows: dict[tuple[Any, ...], torch.Tensor] = {}
        self._pinned: dict[str, torch.Tensor] = {}

        # a copy: the caller's model (a learner's, say) keeps its device, mode and layout
        model = copy.deepcopy(model).float().eval().to(self.device)
        self._model = model.to(memory_format=torch.channels_last)
        self._module: nn.Module | Callable[..., torch.Tensor] = self._model
        self.backend: Literal["torch", "onnx"] = "torch"
        self._onnx: Any = None
        #: How fp32 or int8 was chosen on the CPU (None elsewhere); see describe().
        self.precision_choice: Any = None
        if self.device.type == "cpu" and settings.backend in ("auto", "onnx"):
            self._select_cpu_runtime(model, settings)
        if self.backend == "torch" and settings.compile:
            self._module = torch.compile(self._model)
        self.settings = replace(
            settings, device=self.device.type, backend=self.backend, precision=self.precision
        )
        log.info(
            "segmenter: %s on %s, backend %s, precision %s, %d threads",
            spec.encoder,
            self.device,
            self.backend,
            self.precision,
            self.threads,
        )

    def _select_cpu_runtime(self, model: nn.Module, settings: EngineSettings) -> None:
        """ONNX Runtime or PyTorch, then int8 or fp32, as measured on first use."""
        from crystalseg.segment.int8 import PrecisionChoice, cpu_has_vnni, select_cpu_precision
        from crystalseg.segment.onnx_backend import model_fingerprint, select_cpu_backend

        int8 = settings.precision == "int8"
        checksum = self.checksum or model_fingerprint(model)
        requested: Literal["auto", "onnx"] = (
            "onnx" if int8 or settings.backend == "onnx" else "auto"
        )
        self._onnx = select_cpu_backend(
            model,
            self.spec,
            requested=requested,
            checksum=checksum,
            checkpoint=self.checkpoint,
            threads=self.threads,
            torch_forward=self._torch_forward,
        )
        self.backend = "onnx" if self._onnx is not None else "torch"
        if self._onnx is None:
            return  # PyTorch was faster than ONNX Runtime here: fp32
        if settings.precision == "fp32":
            vnni = cpu_has_vnni()
            self.precision_choice = PrecisionChoice("fp32", "fp32", "fp32: asked for", vnni)
            return
        runner, self.precision_choice = select_cpu_precision(
            self._onnx,
            self.spec,
            requested="int8" if int8 else "auto",
            checksum=checksum,
            checkpoint=self.checkpoint,
            min_iou=settings.int8_min_iou,
        )
        if runner is not None:
            self._onnx = runner
            self.precision = "int8"

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        settings: EngineSettings | None = None,
    ) -> Segmenter:
        """Load a checkpoint directory (the bundled default model when ``path`` is None)."""
        directory = default_checkpoint_path() if path is None else resolve_checkpoint_dir(path)
        model, spec, meta = load_checkpoint(directory)
        return cls(
            model,
            spec,
            settings=settings,
            checksum=checkpoint_checksum(meta),
            checkpoint=directory,
            temperature=checkpoint_temperature(meta),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as "load this checkpoint" so that each dask worker loads it once."""
        if self.checkpoint is None or self.checksum is None:
            raise TypeError(
                "a Segmenter built from an in-memory model cannot be sent to other processes; "
                "save it with save_checkpoint and use Segmenter.from_checkpoint(DIR)"
            )
        return (load_segmenter, (str(self.checkpoint), self.checksum, self.requested_settings))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("crystalseg.Segmenter", self.checksum or id(self), asdict(self.settings))

    def describe(self) -> dict[str, Any]:
        """What ran, for provenance: device, backend, precision, batch and tile sizes."""
        return {
            "device": str(self.device),
            "device_name": _device_name(self.device),
            "backend": self.backend,
            "precision": self.precision,
            "batch_size": self.settings.batch_size,
            "batch_sizes_used": {f"{h}x{w}": b for (h, w), b in self._batch_cache.items()},
            "tile_size": self.settings.tile_size,
            "tile_overlap": self.settings.tile_overlap,
            "compile": self.settings.compile,
            "resize": self.settings.resize,
            **(
                {"precision_choice": self.precision_choice.describe()}
                if self.precision_choice is not None
                else {}
            ),
            "threads": self.threads,
            "temperature": self.temperature,
            "torch_version": torch.__version__,
        }

    @property
    def network(self) -> nn.Module:
        """The engine's own copy of the network: float32, eval mode, on its device
        (what :func:`~crystalseg.segment.onnx_backend.model_fingerprint` hashes when the
        engine has no checkpoint checksum)."""
        return self._model

    def load_weights(self, model: nn.Module) -> None:
        """Copy the weights of ``model`` (a network of this engine's spec) into the engine.

        Training validates every epoch through the engine that ``crystalseg segment``
        runs (:meth:`crystalseg.train.Learner.segmenter`); this refreshes the engine's
        copy of the network without building the engine again. The torch backend
        only: an ONNX engine runs the graph exported from the weights it was built with.

        Raises
        ------
        ConfigError
            The engine runs on ONNX Runtime.
        """
        if self._onnx is not None:
            raise ConfigError(
                "this engine runs an ONNX export of the weights it was built with; build a "
                "new Segmenter (or one with backend='torch') for other weights"
            )
        with self._lock, torch.no_grad():
            self._model.load_state_dict(model.state_dict())
        self.checksum = None  # other weights: the checkpoint's checksum no longer names them

    def with_resize(self, factor: float | Literal["auto"]) -> Segmenter:
        """This engine at another ``resize`` factor; it shares the loaded network."""
        factor = factor if factor == "auto" else checked_resize(factor)
        if factor == self.settings.resize:
            return self
        twin = object.__new__(Segmenter)  # not copy.copy: __reduce__ reloads the checkpoint
        twin.__dict__.update(self.__dict__)
        twin.requested_settings = replace(self.requested_settings, resize=factor)
        twin.settings = replace(self.settings, resize=factor)
        return twin

    def resolved(self, frames: Any) -> Segmenter:
        """This engine with ``resize="auto"`` replaced by :func:`choose_resize`'s factor
        for ``frames`` (itself when the factor is already a number)."""
        if self.settings.resize != "auto":
            return self
        return self.with_resize(choose_resize(self, frames).factor)

    # -- public prediction ----------------------------------------------------------

    @overload
    def predict(
        self, frames: np.ndarray | torch.Tensor, *, probability: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def predict(
        self, frames: np.ndarray | torch.Tensor, *, probability: Literal[True]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def predict(
        self, frames: np.ndarray | torch.Tensor, *, probability: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Class index per pixel for a stack of frames.

        Parameters
        ----------
        frames : ndarray (n, y, x) uint8 or uint16 (or (n, y, x, 3) RGB)
            Whole frames of any size.
        probability : bool
            Also return the foreground probability (1 - p(background)) as uint8,
            ``round(255 * p)``.

        Returns
        -------
        mask : ndarray (n, y, x) uint8
            Index into ``spec.codes``.
        prob : ndarray (n, y, x) uint8, only with ``probability=True``
        """
        raw = self._check_frames(frames)
        if self.settings.resize == "auto":
            twin = self.resolved(raw)
            return twin.predict(raw, probability=True) if probability else twin.predict(raw)
        with self._lock, torch.inference_mode():
            mask, prob = self._segment(raw, probability)
        return (mask, prob) if probability else mask

    def predict_logits(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Blended float32 logits (n, n_classes, y, x); for tests and calibration."""
        raw = self._check_frames(frames)
        if self.settings.resize == "auto":
            return self.resolved(raw).predict_logits(raw)
        with self._lock, torch.inference_mode():
            x = self._upload(raw)
            out = [self._logits(g).float().cpu() for g in self._groups(x)]
        return torch.cat(out).numpy()

    # -- internals ------------------------------------------------------------------

    def _check_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = (
            frames
            if isinstance(frames, torch.Tensor)
            else torch.from_numpy(_writable(np.ascontiguousarray(frames)))
        )
        if t.ndim == 2:
            t = t.unsqueeze(0)
        rgb = t.ndim == 4 and t.shape[-1] in (3, 4)
        if t.ndim != 3 and not rgb:
            raise ConfigError(
                f"frames of shape {tuple(t.shape)}; expected (n, y, x) or (n, y, x, 3)"
            )
        if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[2] == 0:
            raise ConfigError(f"frames of shape {tuple(t.shape)} hold no pixels")
        return t

    def _upload(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw frames onto the device at their stored width (pinned + non-blocking on CUDA).

        uint16 has few kernels on accelerators, so its bits travel as int16 and are
        widened to int32 there; :func:`~crystalseg.models.checkpoint.to_unit` scales int32
        like uint16 (by 65535).
        """
        if raw.dtype == torch.uint16 and self.device.type != "cpu":
            wide = self._upload(raw.contiguous().view(torch.int16))
            return wide.to(torch.int32).bitwise_and_(0xFFFF)
        if self.device.type != "cuda":
            return raw.to(self.device)
        key = f"in-{raw.dtype}"
        buf = self._pinned.get(key)
        if buf is None or buf.numel() < raw.numel():
            buf = torch.empty(raw.numel(), dtype=raw.dtype, pin_memory=True)
            self._pinned[key] = buf
        staged = buf[: raw.numel()].view(raw.shape)
        staged.copy_(raw)
        return staged.to(self.device, non_blocking=True)

    def _groups(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[1], x.shape[2]
        per = max(1, PIXELS_PER_GROUP // (h * w))
        return [x[i : i + per] for i in range(0, x.shape[0], per)]

    def _segment(self, raw: torch.Tensor, probability: bool) -> tuple[np.ndarray, Any]:
        x = self._upload(raw)
        n, h, w = x.shape[0], x.shape[1], x.shape[2]
        mask = torch.empty((n, h, w), dtype=torch.uint8, device=self.device)
        prob = (
            torch.empty((n, h, w), dtype=torch.uint8, device=self.device) if probability else None
        )
        i = 0
        for group in self._groups(x):
            j = i + group.shape[0]
            class_map(
                self._logits(group),
                mask[i:j],
                None if prob is None else prob[i:j],
                temperature=self.temperature,
            )
            i = j
        return self._download(mask, "mask"), (
            None if prob is None else self._download(prob, "prob")
        )

    def _download(self, t: torch.Tensor, name: str) -> np.ndarray:
        if self.device.type != "cuda":
            return t.cpu().numpy()
        buf = self._pinned.get(name)
        if buf is None or buf.numel() < t.numel():
            buf = torch.empty(t.numel(), dtype=t.dtype, pin_memory=True)
            self._pinned[name] = buf
        host = buf[: t.numel()].view(t.shape)
        host.copy_(t, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy().copy()

    def _logits(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw whole frames (b, y, x[, 3]) on the device to float32 logits (b, K, y, x)."""
        x = prepare_batch(raw, self.spec)
        factor = self.settings.resize
        if isinstance(factor, str):  # "auto" is resolved before (predict, resolved)
            raise ConfigError("resize 'auto' must be resolved first: use Segmenter.resolved")
        if factor == 1.0:
            return self._model_logits(x)
        h, w = x.shape[-2:]
        size = (max(1, round(h * factor)), max(1, round(w * factor)))
        small = F.interpolate(x, size=size, mode="area" if factor < 1 else "bilinear")
        logits = self._model_logits(small)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

    def _model_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (b, C, y, x) to float32 logits (b, K, y, x): pad, tile, run."""
        h, w = x.shape[-2:]
        tile = self.settings.tile_size
        x = pad_to_multiple(x, self.spec.stride)
        if h <= tile and w <= tile:
            return self._forward_batched(x)[..., :h, :w]
        return self._tiled(x)[..., :h, :w]

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Blend logits of overlapping tiles of padded frames x (b, C, H, W)."""
        b, _, hp, wp = x.shape
        tile, overlap = self.settings.tile_size, int(self.settings.tile_overlap or 0)
        th, tw = min(tile, hp), min(tile, wp)
        ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
        boxes = [(y0, x0) for y0 in ys for x0 in xs]
        tiles = torch.cat([x[:, :, y0 : y0 + th, x0 : x0 + tw] for y0, x0 in boxes])
        logits = self._forward_batched(tiles)
        acc = torch.zeros((b, self.spec.n_classes, hp, wp), dtype=torch.float32, device=x.device)
        weight = torch.zeros((hp, wp), dtype=torch.float32, device=x.device)
        for k, (y0, x0) in enumerate(boxes):
            win = self._window(th, tw, overlap, y0 > 0, y0 + th < hp, x0 > 0, x0 + tw < wp)
            acc[:, :, y0 : y0 + th, x0 : x0 + tw] += logits[k * b : (k + 1) * b] * win
            weight[y0 : y0 + th, x0 : x0 + tw] += win
        return acc / weight

    def _window(self, th: int, tw: int, overlap: int, *edges: bool) -> torch.Tensor:
        key = (th, tw, overlap, *edges)
        win = self._windows.get(key)
        if win is None:
            top, bottom, left, right = edges
            wy = blend_window(th, overlap, ramp_start=top, ramp_end=bottom)
            wx = blend_window(tw, overlap, ramp_start=left, ramp_end=right)
            win = (wy[:, None] * wx[None, :]).to(self.device)
            self._windows[key] = win
        return win

    def _forward_batched(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, h, w) float32 of N padded images, in batches; halves on OOM."""
        n, _, h, w = x.shape
        out = torch.empty((n, self.spec.n_classes, h, w), dtype=torch.float32, device=x.device)
        batch = self._batch_size(h, w)
        i = 0
        while i < n:
            j = min(n, i + batch)
            try:
                out[i:j] = self._forward(x[i:j])
            except torch.OutOfMemoryError as exc:
                if batch == 1:
                    raise GpuMemoryError(
                        f"one {h}x{w} image does not fit in the memory of {self.device}; "
                        f"pass a smaller --tile-size (now {self.settings.tile_size})"
                    ) from exc
                batch = max(1, batch // 2)
                self._batch_cache[(h, w)] = batch
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory at batch %d; retrying with batch %d", batch * 2, batch)
                continue
            i = j
        return out

    def _batch_size(self, h: int, w: int) -> int:
        if self.settings.batch_size is not None:
            return self._batch_cache.get((h, w), self.settings.batch_size)
        cached = self._batch_cache.get((h, w))
        if cached is None:
            if self.device.type == "cuda":
                cached = self._probe_gpu_batch(h, w)
            else:
                cached = max(1, min(16, CPU_PIXELS_PER_BATCH // (h * w)))
            self._batch_cache[(h, w)] = cached
        return cached

    def _probe_gpu_batch(self, h: int, w: int) -> int:
        """Batch that fills :data:`GPU_MEMORY_FRACTION` of free memory, from one probe pass."""
        dev = self.device
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        self._forward(torch.zeros((1, self.spec.in_channels, h, w), device=dev))
        torch.cuda.synchronize(dev)
        per_image = torch.cuda.max_memory_allocated(dev) - base
        per_image += 2 * self.spec.n_classes * h * w * 4  # float32 logits kept per image
        free, _ = torch.cuda.mem_get_info(dev)
        batch = int(GPU_MEMORY_FRACTION * free // max(per_image, 1))
        batch = 2 ** int(math.log2(max(1, min(MAX_GPU_BATCH, batch))))
        log.info(
            "batch size %d for %dx%d on %s (%.0f MiB per image)",
            batch,
            h,
            w,
            dev,
            per_image / 2**20,
        )
        return batch

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The PyTorch network on a normalised batch (b, C, h, w); float32 logits."""
        amp = _AMP_DTYPES.get(self.precision)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if amp is not None:
                with torch.autocast(device_type=self.device.type, dtype=amp):
                    y = self._module(x)
            else:
                y = self._module(x)
        return y.float()

    def _forward_once(self, x: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(x.contiguous().numpy()))
        return self._torch_forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (b, K, h, w) float32; with ``tta``, log of the mean class probability."""
        if not self.settings.tta:
            return self._forward_once(x)
        total: torch.Tensor | None = None
        for quarter_turns in range(4):
            for flip in (False, True):
                xt = torch.rot90(x, quarter_turns, (2, 3))
                xt = xt.flip(3) if flip else xt
                p = self._forward_once(xt.contiguous()).softmax(1)
                p = p.flip(3) if flip else p
                p = torch.rot90(p, -quarter_turns, (2, 3))
                total = p if total is None else total + p
        assert total is not None
        return (total / 8).clamp_min_(1e-7).log_()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        import platform

        return f"{platform.processor() or platform.machine()} ({available_cores()} cores)"
    return device.type


def _writable(array: np.ndarray) -> np.ndarray:
    """``array``, copied if read-only (zarr and synthetic frames may be; torch warns)."""
    return array if array.flags.writeable else array.copy()


def checkpoint_temperature(meta: dict[str, Any]) -> float:
    """The calibration temperature a checkpoint's ``model.json`` records (1.0 if none:
    checkpoints made before calibration, or trained without validation frames)."""
    calibration = meta.get("calibration") or {}
    value = calibration.get("temperature", 1.0)
    if not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise CheckpointError(
            f"model.json records calibration temperature {value!r}; expected a positive "
            "number. Remove its 'calibration' entry or calibrate the model again"
        )
    return float(value)


def checkpoint_checksum(meta: dict[str, Any]) -> str:
    """The sha256 of a checkpoint's weights, from its ``model.json``."""
    checksum = meta.get("weights", {}).get("sha256")
    if not isinstance(checksum, str) or not checksum:
        raise CheckpointError("checkpoint has no weights sha256 in model.json; re-save it")
    return checksum


_CACHE_LOCK = threading.Lock()
_SEGMENTERS: OrderedDict[tuple[str, str, EngineSettings], Segmenter] = OrderedDict()
#: Models kept loaded per process (oldest dropped first).
MAX_CACHED_SEGMENTERS = 4


def load_segmenter(
    path: str | os.PathLike[str] | None,
    checksum: str | None = None,
    settings: EngineSettings | None = None,
) -> Segmenter:
    """A :class:`Segmenter` for a checkpoint, loaded once per process and reused.

    The cache is keyed by checkpoint path, weights checksum and settings (both as asked
    and as resolved), so a dask worker that runs many chunks loads the model once.

    Raises
    ------
    CheckpointError
        The checkpoint's weights do not have ``checksum`` (it changed on disk).
    """
    settings = settings or EngineSettings()
    directory = default_checkpoint_path() if path is None else resolve_checkpoint_dir(path)
    key_path = str(directory.resolve())
    if checksum is None:
        checksum = checkpoint_checksum(read_checkpoint_meta(directory))
    with _CACHE_LOCK:
        key = (key_path, checksum, settings)
        hit = _SEGMENTERS.get(key)
        if hit is not None:
            _SEGMENTERS.move_to_end(key)
            return hit
        # the same model at another resize factor shares its network (auto chose on it)
        twin = next(
            (
                v
                for (p, c, s), v in _SEGMENTERS.items()
                if (p, c) == (key_path, checksum) and replace(s, resize=settings.resize) == settings
            ),
            None,
        )
        if twin is not None:
            seg = twin.with_resize(settings.resize)
        else:
            seg = Segmenter.from_checkpoint(directory, settings=settings)
        if seg.checksum != checksum:
            found = (seg.checksum or "?")[:12]
            raise CheckpointError(
                f"model '{directory}' changed on disk (sha256 {found}, expected "
                f"{checksum[:12]}); make every worker see the same checkpoint"
            )
        _SEGMENTERS[(key_path, checksum, seg.settings)] = seg
        _SEGMENTERS[key] = seg
        while len({id(v) for v in _SEGMENTERS.values()}) > MAX_CACHED_SEGMENTERS:
            _SEGMENTERS.popitem(last=False)
        return seg


#: Factors that :func:`choose_resize` tries, from full size down.
AUTO_RESIZE_FACTORS: tuple[float, ...] = (1.0, 0.7, 0.5, 0.35, 0.25)
#: How much more stable than full size a factor must be to be taken.
AUTO_RESIZE_MARGIN = 0.05
#: Below this foreground fraction at full size there is too little to judge by.
AUTO_RESIZE_MIN_FOREGROUND = 0.002
#: A factor whose foreground is not within these multiples of full size's is not taken.
AUTO_RESIZE_FOREGROUND_RANGE = (0.9, 3.0)
#: A factor at which the model is more than this many times as uncertain (mean class
#: entropy per pixel) as at full size is not taken.
AUTO_RESIZE_MAX_UNCERTAINTY = 2.0
#: No factor shrinks a frame's shorter side below this many pixels.
AUTO_RESIZE_MIN_SIDE = 64


@dataclass(frozen=True)
class ResizeChoice:
    """What :func:`choose_resize` chose, and the scores behind it.

    Attributes
    ----------
    factor : float
    stability : dict factor -> mean foreground IoU of its masks with those of the
        neighbouring factors (1 = a little more or less resizing changes nothing)
    foreground : dict factor -> foreground fraction of its masks
    uncertainty : dict factor -> mean entropy of the class probabilities per pixel (nats)
    frames : int
        How many frames it was chosen on.
    """

    factor: float
    stability: dict[float, float]
    foreground: dict[float, float]
    uncertainty: dict[float, float]
    frames: int

    def describe(self) -> str:
        """``resize 0.5 (mask stability across factors 1: 0.73, ...; entropy 1: 0.058, ...)``."""
        scores = ", ".join(f"{f:g}: {v:.2f}" for f, v in self.stability.items())
        unsure = ", ".join(f"{f:g}: {v:.3f}" for f, v in self.uncertainty.items())
        return f"resize {self.factor:g} (mask stability across factors {scores}; entropy {unsure})"


def choose_resize(
    segmenter: Segmenter,
    frames: Any,
    *,
    factors: tuple[float, ...] = AUTO_RESIZE_FACTORS,
    margin: float = AUTO_RESIZE_MARGIN,
) -> ResizeChoice:
    """The ``resize`` factor at which the model's masks of ``frames`` are most stable.

    ``frames`` (a stack (n, y, x[, 3]) or a list of frames of any sizes) are segmented
    at every factor, and each factor is scored by the mean foreground IoU of its masks
    with those of its neighbouring factors: at a scale the model knows, a little more
    or less resizing hardly changes the mask, while at one it does not know (crystals
    and edges several times larger than it was trained on), crystals fill in, break
    up or vanish from one factor to the next. A factor other than 1 is taken only if
    it beats full size by ``margin``, if its foreground stays within
    :data:`AUTO_RESIZE_FOREGROUND_RANGE` times that at full size (crystals that
    vanish, or background called crystal, mean the model is lost at that scale), if
    the model is at most :data:`AUTO_RESIZE_MAX_UNCERTAINTY` times as uncertain there
    as at full size (shrunk frames of crystals it knows give coarse masks that agree
    with each other, but it is unsure of them), and if full size finds at least
    :data:`AUTO_RESIZE_MIN_FOREGROUND` of the pixels to be crystal (nearly empty
    frames keep 1). Factors that would shrink a frame below
    :data:`AUTO_RESIZE_MIN_SIDE` pixels are not tried.

    Measured with the bundled model (``benchmarks/other_renderer.py --resize auto``,
    ``benchmarks/accuracy.py --resize auto``; README, known limits): it keeps 1 on
    synthetic runs and on the independent renderer's frames at their own scale, and
    shrinks frames drawn 2-4x larger, where it gains up to 0.46 foreground IoU.
    """
    if 1.0 not in factors or any(f > 1.0 for f in factors):
        raise ConfigError(f"factors {factors!r} must include 1 and go no higher (e.g. 1, 0.5)")
    tried = sorted(set(factors), reverse=True)  # neighbours are the next larger and smaller
    base = segmenter.with_resize(1.0) if segmenter.settings.resize == "auto" else segmenter
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if isinstance(frames, np.ndarray) and frames.ndim == 2:
        frames = frames[None]  # one frame, as predict takes it
    stack = [np.asarray(f) for f in frames]
    if not stack:
        raise ConfigError("choose_resize needs at least one frame")
    side = min(min(f.shape[:2]) for f in stack)
    tried = [f for f in tried if f == 1.0 or side * f >= AUTO_RESIZE_MIN_SIDE]
    masks: dict[float, list[np.ndarray]] = {}
    uncertainty: dict[float, float] = {}
    for f in tried:
        seg = base.with_resize(f)
        masks[f], entropy = [], []
        for frame in stack:  # one at a time: logits of large frames are large
            logits = torch.from_numpy(seg.predict_logits(frame[None]))
            log_p = torch.log_softmax(logits, dim=1)
            entropy.append(float(-(log_p.exp() * log_p).sum(1).mean()))
            mask = torch.empty((1, *logits.shape[2:]), dtype=torch.uint8)
            class_map(logits, mask)
            masks[f].append(mask[0].numpy() > 0)
        uncertainty[f] = float(np.mean(entropy))

    def iou(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        scores = []
        for x, y in zip(a, b, strict=True):
            union = np.count_nonzero(x | y)
            scores.append(1.0 if union == 0 else np.count_nonzero(x & y) / union)
        return float(np.mean(scores))

    stability = {}
    for i, f in enumerate(tried):
        near = [tried[j] for j in (i - 1, i + 1) if 0 <= j < len(tried)]
        stability[f] = float(np.mean([iou(masks[f], masks[g]) for g in near])) if near else 1.0
    foreground = {f: float(np.mean([m.mean() for m in masks[f]])) for f in tried}
    full = foreground[1.0]
    low, high = AUTO_RESIZE_FOREGROUND_RANGE
    allowed = [1.0]
    if full >= AUTO_RESIZE_MIN_FOREGROUND:
        allowed += [
            f
            for f in tried
            if f != 1.0
            and stability[f] >= stability[1.0] + margin
            and low * full <= foreground[f] <= high * full
            and uncertainty[f] <= AUTO_RESIZE_MAX_UNCERTAINTY * uncertainty[1.0]
        ]
    factor = max(allowed, key=lambda f: stability[f])
    return ResizeChoice(factor, stability, foreground, uncertainty, len(stack))


def clear_segmenter_cache() -> None:
    """Forget every cached :class:`Segmenter` (frees their models)."""
    with _CACHE_LOCK:
        _SEGMENTERS.clear()
