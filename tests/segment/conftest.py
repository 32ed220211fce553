"""Fixtures of the segmentation tests: tiny random U-Nets saved as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crystalseg.models import ModelSpec, build_model, save_checkpoint
from crystalseg.segment.engine import clear_segmenter_cache
from crystalseg.store import create_run

CODES = ("background", "crystal")
TINY_DECODER = (16, 16, 16, 16, 16)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep ONNX exports and backend timings out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CRYSTALSEG_CACHE_DIR", str(tmp_path_factory.mktemp("crystalseg-cache")))
    yield
    mp.undo()
    clear_segmenter_cache()


def tiny_spec(**kw: object) -> ModelSpec:
    return ModelSpec(encoder="mobilenet_v2", codes=CODES, decoder_channels=TINY_DECODER, **kw)


def make_checkpoint(directory: Path, seed: int, spec: ModelSpec | None = None) -> Path:
    """A randomly initialised U-Net whose head is scaled so its classes are decisive."""
    spec = spec or tiny_spec()
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        head = model.segmentation_head[0]
        head.weight.mul_(40.0)
        head.bias.zero_()
    return save_checkpoint(
        directory, model, spec, training={"seed": seed}, metrics=[], data_fingerprint="test"
    )


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model-a"), seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model-b"), seed=1)


def blob_frames(n: int, h: int, w: int, *, seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    """Frames of smooth random blobs (crystal-like contrast), uint8 or uint16."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, h, w)), (0, 3, 3))
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-12)
    top = 255 if dtype == "uint8" else 65535
    return np.round(noise * top).astype(dtype)


def write_run(path: Path, frames: np.ndarray, *, frames_per_chunk: int = 3) -> Path:
    """A finished run store holding ``frames``."""
    writer = create_run(
        path,
        shape=frames.shape,
        dtype=frames.dtype,
        time_s=np.arange(frames.shape[0], dtype=float),
        pixel_size_um=1.0,
        source={"test": True},
        stage="import",
        frames_per_chunk=frames_per_chunk,
    )
    writer.write_frames(0, frames)
    writer.mark_done(0, frames.shape[0])
    writer.finish()
    return path


@pytest.fixture
def frames_factory():
    """``blob_frames(n, h, w, seed=0, dtype="uint8")``."""
    return blob_frames


@pytest.fixture
def run_factory():
    """``write_run(path, frames, frames_per_chunk=3)``."""
    return write_run


@pytest.fixture
def checkpoint_factory():
    """``make_checkpoint(directory, seed, spec=None)``."""
    return make_checkpoint


@pytest.fixture(scope="module")
def checkpoint_factory_module():
    """:func:`make_checkpoint`, for module-scoped fixtures."""
    return make_checkpoint


@pytest.fixture
def pointwise():
    """The :class:`Pointwise` model class."""
    return Pointwise


class Pointwise(nn.Module):
    """A 1x1 convolution: logits depend on each pixel alone, so tiling must be exact."""

    def __init__(self, weight: tuple[float, float] = (-8.0, 8.0), bias: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(weight).reshape(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([bias, -bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
