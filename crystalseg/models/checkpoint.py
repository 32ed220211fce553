"""Model checkpoints: the architecture spec, building the network, safe save and load.

A checkpoint is a directory holding two files::

    model.safetensors   the weights (safetensors: tensors only, no code)
    model.json          format version, crystalseg version, the ModelSpec, the sha256 of
                        the weights file, training settings, validation metrics per epoch
                        and a fingerprint of the training data

Loading never unpickles anything, so a checkpoint from a stranger cannot run code.
This module is shared by training and inference and imports nothing from either:
the inference engine needs only :class:`ModelSpec`, :func:`build_model`,
:func:`load_checkpoint` and :func:`prepare_batch` (the normalisation applied exactly
as in training).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from crystalseg.errors import CheckpointError, ConfigError
from crystalseg.store import crystalseg_version
from crystalseg.store.core import jsonable as store_jsonable

log = logging.getLogger(__name__)

#: Version of the checkpoint layout; bump when an older reader would misread a newer file.
FORMAT_VERSION = 1
FORMAT_NAME = "crystalseg-model"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"

#: The architecture of the shipped default model; ``unet_learner`` starts from it by default.
#: Change these two together with the bundled weights.
DEFAULT_ENCODER = "mobilenet_v2"
DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (128, 64, 32, 16, 16)
#: smp's own decoder width, used for every other encoder unless one is given.
SMP_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)

#: Intensity mean/std (on the 0..1 scale) used when a model starts from ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Weights files that hold a pickle; loading one could run arbitrary code.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")

_DEFAULT_DIR = Path(__file__).resolve().parent / "default"


# --------------------------------------------------------------------------------------
# Encoders


def encoder_names() -> list[str]:
    """Names of the smp encoders; any ``tu-<timm model>`` name is accepted as well."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


def check_encoder_name(name: str) -> str:
    """Return ``name`` if smp can build it, else raise ConfigError listing close names.

    Raises
    ------
    ConfigError
        The name is neither an smp encoder nor ``tu-`` followed by a timm model.
    """
    names = encoder_names()
    if name in names:
        return name
    if name.startswith("tu-"):
        import timm

        model = name[3:]
        if timm.is_model(model):
            return name
        close = difflib.get_close_matches(model, timm.list_models(), n=5, cutoff=0.6)
        hint = ", ".join(f"tu-{c}" for c in close) or "see timm.list_models()"
        raise ConfigError(f"unknown timm encoder '{name}'; close names: {hint}")
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = ", ".join(close) if close else "resnet34, mobilenet_v2, efficientnet-b0"
    raise ConfigError(
        f"unknown encoder '{name}'; close names: {hint} "
        "(any segmentation_models_pytorch encoder or 'tu-<timm model>' works)"
    )


def default_decoder_channels(encoder: str) -> tuple[int, ...]:
    """Slim decoder for the default encoder, smp's standard decoder for any other."""
    return DEFAULT_DECODER_CHANNELS if encoder == DEFAULT_ENCODER else SMP_DECODER_CHANNELS


# --------------------------------------------------------------------------------------
# The spec


def _as_tuple(value: Any, kind: type) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise ConfigError(f"expected a sequence, got {value!r}")
    return tuple(kind(v) for v in value)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network and feed it exactly as in training.

    Attributes
    ----------
    encoder : str
        smp encoder name (``"resnet34"``, ``"mobilenet_v2"``, ``"tu-<timm model>"``).
    codes : tuple of str
        Class names; output channel ``i`` is class ``codes[i]``; ``codes[0]`` is background.
    in_channels : 1 or 3
        Channels the network reads. Grey frames are repeated for 3; RGB frames become grey
        (ITU-R BT.709 luma) for 1.
    decoder_channels : tuple of int
        U-Net decoder widths, one per encoder stage (5 stages: stride 32).
    mean, std : tuple of float, one per input channel
        Normalisation applied after scaling to 0..1: ``(x - mean) / std``.
    scaling : "dtype" or "percentile"
        How raw intensities reach 0..1. ``"dtype"``: divide by the dtype's maximum (255 for
        uint8, 65535 for uint16; floats are taken as already 0..1). ``"percentile"``: stretch
        each whole frame so ``percentiles`` map to 0 and 1 (then clip).
    percentiles : (low, high)
        Percentiles of the ``"percentile"`` rule.
    architecture : "unet"
    extra_heads : tuple of str
        Reserved for outputs beyond the class logits; format version 1 has none.
    """

    encoder: str
    codes: tuple[str, ...]
    in_channels: int = 1
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    scaling: Literal["dtype", "percentile"] = "dtype"
    percentiles: tuple[float, float] = (0.5, 99.5)
    architecture: Literal["unet"] = "unet"
    extra_heads: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.architecture != "unet":
            raise ConfigError(
                f"architecture '{self.architecture}' is not supported; this crystalseg "
                "builds 'unet' only"
            )
        check_encoder_name(self.encoder)
        set_(self, "codes", _as_tuple(self.codes, str))
        if len(self.codes) < 2 or len(set(self.codes)) != len(self.codes):
            raise ConfigError(
                f"codes {list(self.codes)} must name at least two distinct classes, "
                "background first, e.g. ['background', 'crystal']"
            )
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels}")
        set_(self, "decoder_channels", _as_tuple(self.decoder_channels, int))
        if not 1 <= len(self.decoder_channels) <= 5 or min(self.decoder_channels) < 1:
            raise ConfigError(
                f"decoder_channels {self.decoder_channels} must be 1-5 positive widths, "
                f"e.g. {SMP_DECODER_CHANNELS}"
            )
        for name in ("mean", "std"):
            values = _as_tuple(getattr(self, name), float)
            if len(values) == 1 and self.in_channels == 3:
                values = values * 3
            if len(values) != self.in_channels or not all(math.isfinite(v) for v in values):
                raise ConfigError(
                    f"{name} {values} needs one finite value per input channel ({self.in_channels})"
                )
            set_(self, name, values)
        if min(self.std) <= 0:
            raise ConfigError(f"std {self.std} must be positive")
        if self.scaling not in ("dtype", "percentile"):
            raise ConfigError(f"scaling must be 'dtype' or 'percentile', got {self.scaling!r}")
        set_(self, "percentiles", _as_tuple(self.percentiles, float))
        lo, hi = self.percentiles if len(self.percentiles) == 2 else (1.0, 0.0)
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles {self.percentiles} must be (low, high) in 0..100")
        set_(self, "extra_heads", _as_tuple(self.extra_heads, str))
        if self.extra_heads:
            raise ConfigError(
                f"extra heads {list(self.extra_heads)} need a newer crystalseg; "
                "this version builds class logits only"
            )

    @property
    def n_classes(self) -> int:
        """Number of output channels (classes)."""
        return len(self.codes)

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (pad to it)."""
        return 2 ** len(self.decoder_channels)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model spec fields {unknown}; upgrade crystalseg")
        missing = sorted({"encoder", "codes"} - set(data))
        if missing:
            raise ConfigError(f"model spec lacks {missing}")
        return cls(**dict(data))


# --------------------------------------------------------------------------------------
# Building the network and loading encoder weights


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised network for ``spec`` (no pretrained weights, no download).

    Returns
    -------
    nn.Module
        Maps float32 (B, in_channels, H, W), H and W multiples of ``spec.stride``, to
        class logits (B, n_classes, H, W).
    """
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=spec.encoder,
        encoder_depth=len(spec.decoder_channels),
        encoder_weights=None,
        decoder_channels=spec.decoder_channels,
        in_channels=spec.in_channels,
        classes=spec.n_classes,
    )


def _hf_cached_file(repo_id: str, filename: str, revision: str | None) -> str | None:
    """Path of a file already in the Hugging Face cache, never touching the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - smp depends on huggingface_hub
        return None
    for rev in (revision, None) if revision else (None,):
        found = try_to_load_from_cache(repo_id, filename, revision=rev)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def find_imagenet_weights(encoder: str) -> Path | None:
    """The locally cached ImageNet weights of ``encoder``, or None. Never downloads.

    Looks in the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), where smp and timm keep
    their weights, and in torch hub's ``checkpoints`` folder for timm encoders.
    """
    check_encoder_name(encoder)
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except Exception:
            cfg = None
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = _hf_cached_file(cfg.hf_hub_id, fname, None)
                if hit:
                    return Path(hit)
        if isinstance(cfg.url, str) and cfg.url:
            hub = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
            if hub.is_file():
                return hub
        return None
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder]["pretrained_settings"].get("imagenet")
    if not settings:
        return None
    hit = _hf_cached_file(settings["repo_id"], "model.safetensors", settings.get("revision"))
    return Path(hit) if hit else None


def _imagenet_missing_message(encoder: str) -> str:
    repo = "the timm weights"
    if not encoder.startswith("tu-"):
        from segmentation_models_pytorch.encoders import encoders

        settings = encoders[encoder]["pretrained_settings"].get("imagenet")
        if not settings:
            return (
                f"encoder '{encoder}' has no ImageNet weights; use --init none or a weights "
                "file (--encoder-weights PATH)"
            )
        repo = f"'{settings['repo_id']}'"
    return (
        f"ImageNet weights for encoder '{encoder}' are not on this machine and crystalseg never "
        f"downloads; fetch {repo} into the Hugging Face cache on a connected machine "
        "(huggingface_hub.hf_hub_download) and copy the cache here, pass a state-dict file "
        "with --encoder-weights PATH, or use --init none"
    )


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a plain state dict via the safe loader.

    ``.pth``/``.bin`` files go through ``torch.load(weights_only=True)``, which only rebuilds
    tensors and plain containers and refuses arbitrary objects; safetensors is preferred.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, or holds more than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist; check the path")
    if _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise CheckpointError(
                f"'{path}' is not a readable safetensors file ({exc}); re-export the weights"
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"'{path}' is not a plain state dict the safe loader accepts ({type(exc).__name__}); "
            "save the weights with safetensors.torch.save_file instead"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"'{path}' holds no state dict of tensors; save model.state_dict() instead"
        )
    return {str(k): v for k, v in obj.items()}


def adapt_first_conv(
    src: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fit 3-channel input convolutions to a 1-channel model (and back), as smp does.

    RGB→grey sums the kernels over the colour axis (the response to a grey image is kept);
    grey→RGB spreads the kernel equally over the three channels.
    """
    out = dict(src)
    for key, value in src.items():
        want = target.get(key)
        if want is None or want.shape == value.shape or value.ndim != 4:
            continue
        if value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            if value.shape[1] == 3 and want.shape[1] == 1:
                out[key] = value.sum(dim=1, keepdim=True)
            elif value.shape[1] == 1 and want.shape[1] == 3:
                out[key] = value.repeat(1, 3, 1, 1) / 3.0
    return out


def load_encoder_weights(
    model: nn.Module, spec: ModelSpec, source: Literal["imagenet"] | str | os.PathLike[str]
) -> None:
    """Load pretrained encoder weights into ``model`` (built by :func:`build_model`), in place.

    Parameters
    ----------
    model : the network of ``spec``
    spec : its spec
    source : ``"imagenet"`` (found locally, never downloaded) or a path to a state-dict file
        of the encoder (keys of ``model.encoder``; a whole-model state dict with ``encoder.``
        prefixes works too). 3-channel input kernels are summed for a 1-channel model.

    Raises
    ------
    CheckpointError
        No local ImageNet weights, unreadable file, or weights that do not fit the encoder.
    """
    if str(source) == "imagenet":
        path = find_imagenet_weights(spec.encoder)
        if path is None:
            raise CheckpointError(_imagenet_missing_message(spec.encoder))
    else:
        path = Path(source)
    state = read_state_dict(path)
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    target = encoder.state_dict()
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if spec.encoder.startswith("tu-") and not any(k in target for k in state):
        # timm's own checkpoints name the backbone without smp's "model." prefix
        state = {f"model.{k}": v for k, v in state.items()}
    state = adapt_first_conv(state, target)
    usable = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    missing = [k for k in target if k not in usable]
    if not usable or len(missing) > 0.05 * len(target):
        raise CheckpointError(
            f"weights in '{path}' do not fit encoder '{spec.encoder}' ({len(missing)} of "
            f"{len(target)} tensors missing or of another shape); pass weights of that encoder"
        )
    encoder.load_state_dict(usable, strict=False)
    log.info("loaded encoder weights from %s (%d tensors)", path, len(usable))


# --------------------------------------------------------------------------------------
# Input preparation (shared by training and inference so both feed the model alike)

#: ITU-R BT.709 luma weights as in skimage.color.rgb2gray and crystalseg.io.base.to_grey.
_BT709 = (0.2125, 0.7154, 0.0721)


def intensity_bounds(frames: torch.Tensor, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame raw intensities that map to 0 and 1 under ``spec.scaling``.

    Parameters
    ----------
    frames : Tensor (B, H, W) or (B, H, W, 3), any integer or float dtype
        Whole frames: the percentile rule must see the whole frame, not a crop or tile.

    Returns
    -------
    lo, hi : Tensor (B,) float32
    """
    b = frames.shape[0]
    if spec.scaling == "dtype":
        top = _dtype_max(frames.dtype)
        lo = torch.zeros(b, dtype=torch.float32, device=frames.device)
        return lo, torch.full_like(lo, top)
    n = frames[0].numel()
    ranks = [min(n, max(1, round(pct / 100.0 * (n - 1)) + 1)) for pct in spec.percentiles]
    if frames.dtype in _HISTOGRAM_DTYPES and frames.device.type == "cpu":
        lo, hi = _ranked_values_by_histogram(frames.reshape(b, -1), ranks)
    else:
        flat = frames.reshape(b, -1).float()
        lo, hi = (torch.kthvalue(flat, k, dim=1).values for k in ranks)
    hi = torch.maximum(hi, lo + 1e-6)
    return lo, hi


def _dtype_max(dtype: torch.dtype) -> float:
    if dtype == torch.uint8:
        return 255.0
    if dtype in (torch.uint16, torch.int16, torch.int32):
        return 65535.0
    if dtype.is_floating_point:
        return 1.0
    raise ConfigError(f"frames of dtype {dtype} are not supported; use uint8, uint16 or float")


#: Integer dtypes whose order statistics come from a histogram (exact, and on the CPU
#: ~10x faster than ``kthvalue`` over a 512 x 512 frame).
_HISTOGRAM_DTYPES = (torch.uint8, torch.uint16)


def _ranked_values_by_histogram(
    flat: torch.Tensor, ranks: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``ranks``-th smallest values (1-based) of each row of integer ``flat`` (B, N)
    as float32 (B,): the same values as ``torch.kthvalue``."""
    bins = 256 if flat.dtype == torch.uint8 else 65536
    rows = flat.contiguous().numpy()  # numpy's bincount is fast for both widths
    found = np.stack(
        [np.searchsorted(np.cumsum(np.bincount(r, minlength=bins)), ranks) for r in rows]
    ).astype(np.float32)
    values = torch.from_numpy(found)
    return values[:, 0], values[:, 1]


def to_unit(
    frames: torch.Tensor,
    spec: ModelSpec,
    *,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw frames to float32 (B, in_channels, H, W) on the 0..1 scale (before mean/std).

    Parameters
    ----------
    frames : Tensor (B, H, W) grey or (B, H, W, 3) RGB
    lo, hi : Tensor (B,), optional
        Bounds from :func:`intensity_bounds` of the whole frames, when ``frames`` are crops.
    """
    if lo is None or hi is None:
        lo, hi = intensity_bounds(frames, spec)
    x = frames.float()
    shape = (-1,) + (1,) * (x.ndim - 1)
    x = ((x - lo.to(x.device).reshape(shape)) / (hi - lo).to(x.device).reshape(shape)).clamp_(0, 1)
    if x.ndim == 4 and x.shape[-1] in (3, 4):
        if spec.in_channels == 3:
            return x[..., :3].permute(0, 3, 1, 2).contiguous()
        w = torch.tensor(_BT709, dtype=x.dtype, device=x.device)
        x = (x[..., :3] * w).sum(-1)
    if x.ndim != 3:
        raise ConfigError(f"frames of shape {tuple(frames.shape)}; expected (B, H, W[, 3])")
    x = x.unsqueeze(1)
    return x.expand(-1, spec.in_channels, -1, -1).contiguous() if spec.in_channels == 3 else x


def normalise(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """``(x - mean) / std`` per channel on a (B, C, H, W) batch on the 0..1 scale."""
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean) / std


def prepare_batch(frames: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Whole raw frames (B, H, W[, 3]) to the network's normalised float32 (B, C, H, W)."""
    return normalise(to_unit(frames, spec), spec)


# --------------------------------------------------------------------------------------
# Save and load


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def jsonable(value: Any) -> Any:
    """``value`` in strict JSON types (NaN and infinity as None), as ``model.json`` and
    the training state hold them: :func:`crystalseg.store.core.jsonable` with
    ``strict=True``, the one conversion of the package."""
    return store_jsonable(value, strict=True)


def shared_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file (0o666 less the umask).

    ``tempfile.mkstemp`` makes files readable by their owner only; a checkpoint
    written through one keeps that mode unless set to this, so colleagues on a
    shared drive could not read a model trained there.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, then put it back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader sees the old file or the new one, never half of one: a crash while
    writing leaves the old file (and no temporary) behind. The file gets the mode
    of :func:`shared_file_mode`.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, shared_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path_dir: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    *,
    training: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    data_fingerprint: str,
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into directory ``path_dir``.

    The weights are written first and the JSON (holding their sha256) last, each by atomic
    rename, so a crash never leaves a JSON that vouches for other weights.

    Parameters
    ----------
    path_dir : directory, created if missing; existing checkpoint files are replaced
    model : network built from ``spec``
    spec : its spec
    training : settings used (epochs, lr, loss, batch and crop size, init, ...)
    metrics : one dict per epoch (losses, IoU and Dice per class, ...)
    data_fingerprint : hash identifying the training data
    calibration : the temperature that calibrates the probabilities and how it was
        fitted (:class:`crystalseg.train.calibrate.Calibration`); None: T = 1

    Returns
    -------
    Path of the directory.
    """
    from safetensors.torch import save

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    blob = save(state, metadata={"format": "pt", "crystalseg_format": str(FORMAT_VERSION)})
    weights = out / WEIGHTS_FILE
    atomic_write_bytes(weights, blob)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "crystalseg_version": crystalseg_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(blob).hexdigest()},
        "training": jsonable(dict(training)),
        "metrics": jsonable(list(metrics)),
        "data_fingerprint": str(data_fingerprint),
    }
    if calibration is not None:
        meta["calibration"] = jsonable(dict(calibration))
    text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(out / META_FILE, text.encode())
    return out


#: Keys of ``model.json`` that :func:`update_checkpoint_meta` never replaces: they
#: describe the weights, and only :func:`save_checkpoint` writes them with the weights.
WEIGHT_KEYS = ("format", "format_version", "spec", "weights")


def update_checkpoint_meta(path_dir: str | os.PathLike[str], entries: Mapping[str, Any]) -> Path:
    """Add or replace top-level ``entries`` of a checkpoint's ``model.json`` (e.g.
    ``calibration``, fitted after the weights were saved).

    The weights are untouched; the JSON is replaced atomically, so a crash leaves the
    old one.

    Raises
    ------
    CheckpointError
        No checkpoint there, or an entry that describes the weights.
    """
    out = resolve_checkpoint_dir(path_dir)
    bad = sorted(set(entries) & set(WEIGHT_KEYS))
    if bad:
        raise CheckpointError(
            f"cannot change {bad} of '{out}' without its weights; save the checkpoint again"
        )
    meta = read_checkpoint_meta(out)
    meta.update(jsonable(dict(entries)))
    text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(out / META_FILE, text.encode())
    return out


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors starts with a little-endian u64 header length and then ``{``."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= path.stat().st_size - 8


def _refuse_pickle(path: Path) -> CheckpointError:
    return CheckpointError(
        f"refusing to unpickle '{path}': pickle files can run code. If you trust it, convert "
        "it once with crystalseg.models.convert_state_dict(PATH, OUT_DIR, spec=...) and load "
        "OUT_DIR"
    )


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory meant by ``path`` (a directory, its model.json or weights).

    Raises
    ------
    CheckpointError
        Missing files, or a pickle file (refused).
    """
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES and (p.is_file() or not p.exists()):
        raise _refuse_pickle(p)
    if p.is_file() and p.name in (META_FILE, WEIGHTS_FILE):
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"model '{p}' does not exist; pass a checkpoint directory")
    if not p.is_dir():
        raise CheckpointError(
            f"'{p}' is not a crystalseg checkpoint; pass the directory holding "
            f"{META_FILE} and {WEIGHTS_FILE}"
        )
    meta = p / META_FILE
    if not meta.is_file():
        pickles = sorted(q.name for q in p.iterdir() if q.suffix.lower() in PICKLE_SUFFIXES)
        if pickles and not (p / WEIGHTS_FILE).exists():
            raise _refuse_pickle(p / pickles[0])
        raise CheckpointError(
            f"'{p}' holds no {META_FILE}; it is not a crystalseg checkpoint "
            "(save one with learner.save or crystalseg train)"
        )
    return p


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``model.json`` of a checkpoint, without touching the weights.

    Raises
    ------
    CheckpointError
        Missing or bad JSON, another format, or a newer format version.
    """
    p = resolve_checkpoint_dir(path)
    try:
        meta = json.loads((p / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"'{p / META_FILE}' is not valid JSON ({exc}); restore it from the original checkpoint"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"'{p / META_FILE}' is not a crystalseg model description; pass a checkpoint "
            "written by crystalseg"
        )
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or fmt < 1:
        raise CheckpointError(f"'{p / META_FILE}' has no valid format_version")
    if fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"model '{p}' has format version {fmt} (written by crystalseg "
            f"{meta.get('crystalseg_version', '?')}); this crystalseg {crystalseg_version()} "
            f"reads up to version {FORMAT_VERSION}. Upgrade: pip install -U crystalseg"
        )
    spec = meta.get("spec")
    if not isinstance(spec, dict):
        raise CheckpointError(f"'{p / META_FILE}' has no model spec")
    if spec.get("architecture", "unet") != "unet":
        raise CheckpointError(
            f"model '{p}' is a '{spec.get('architecture')}' network; this crystalseg builds "
            "'unet' only. Upgrade crystalseg or pass a U-Net checkpoint"
        )
    return meta


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Load a checkpoint safely: safetensors and JSON only, checksum verified.

    Parameters
    ----------
    path : checkpoint directory (or its ``model.json`` / ``model.safetensors``)
    device : where to put the network

    Returns
    -------
    model : nn.Module in eval mode
    spec : ModelSpec
    meta : dict, the whole ``model.json`` (training settings, metrics, fingerprint, ...)

    Raises
    ------
    CheckpointError
        Missing files, bad JSON, newer format, another architecture, a pickle file, a
        checksum mismatch, or weights that do not fit the spec.
    """
    from safetensors.torch import load_file

    p = resolve_checkpoint_dir(path)
    meta = read_checkpoint_meta(p)
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except ConfigError as exc:
        raise CheckpointError(f"model '{p}' has an unusable spec: {exc}") from exc
    weights = p / str(meta.get("weights", {}).get("file", WEIGHTS_FILE))
    if weights.suffix.lower() in PICKLE_SUFFIXES:
        raise _refuse_pickle(weights)
    if not weights.is_file():
        raise CheckpointError(
            f"model '{p}' lacks its weights file '{weights.name}'; copy the whole checkpoint "
            "directory"
        )
    if not _looks_like_safetensors(weights):
        with weights.open("rb") as fh:
            head = fh.read(2)
        if head[:1] == b"\x80" or head == b"PK":
            raise _refuse_pickle(weights)
        raise CheckpointError(f"'{weights}' is not a safetensors file; re-save the checkpoint")
    expected = meta.get("weights", {}).get("sha256")
    actual = _sha256(weights)
    if expected != actual:
        raise CheckpointError(
            f"weights '{weights}' do not match the sha256 in {META_FILE} (file changed or "
            "corrupted); copy the checkpoint again from its source"
        )
    model = build_model(spec)
    state = load_file(str(weights), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"weights in '{p}' do not fit the '{spec.encoder}' U-Net its {META_FILE} describes "
            f"({first}); the checkpoint is inconsistent, re-save it"
        ) from exc
    model.to(device).eval()
    return model, spec, meta


def default_checkpoint_path() -> Path:
    """Directory of the model bundled with crystalseg.

    Raises
    ------
    CheckpointError
        No default model ships in this build.
    """
    if not (_DEFAULT_DIR / META_FILE).is_file():
        raise CheckpointError(
            f"no default model ships in this build of crystalseg {crystalseg_version()}; "
            "train one with 'crystalseg train' and pass it with --model DIR"
        )
    return _DEFAULT_DIR


def convert_state_dict(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spec: ModelSpec,
) -> Path:
    """Convert a trusted pickled state dict (``.pth``) of a ``spec`` U-Net into a checkpoint.

    Uses ``torch.load(weights_only=True)``, which rebuilds tensors only; run it once where
    you trust the file, then share the safe checkpoint directory.
    """
    state = read_state_dict(src)
    model = build_model(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"'{src}' does not fit a '{spec.encoder}' U-Net with codes {list(spec.codes)}; "
            "pass the spec it was trained with"
        ) from exc
    return save_checkpoint(
        out_dir,
        model,
        spec,
        training={"converted_from": os.fspath(src)},
        metrics=[],
        data_fingerprint="unknown",
    )
