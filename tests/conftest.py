"""Shared fixtures: small real run stores made by crystalseg's own writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from crystalseg.dims import DEFAULT_CODES, FRAME_DIMS
from crystalseg.store import begin_stage, create_array


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _store_mask(
    path: Path, mask: np.ndarray, *, fpc: int = 2, codes: tuple[str, ...] = DEFAULT_CODES
) -> None:
    """Store ``mask`` (time, y, x) as the run's finished segmentation, as segment would."""
    n, h, w = mask.shape
    arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=mask.shape,
        dtype="uint8",
        chunks=(fpc, h, w),
        attrs={"codes": list(codes)},
    )
    arr[:] = mask
    stage = begin_stage(path, "segment", settings={"truth": True}, n_frames=n, frames_per_chunk=fpc)
    stage.mark_done(0, n)
    stage.finish()


@pytest.fixture(scope="session")
def store_mask() -> Callable[..., None]:
    """``store_mask(path, mask, *, fpc=2, codes=DEFAULT_CODES)``: a mask from elsewhere
    (e.g. the synthetic truth) as the run's segmentation, so measuring needs no model."""
    return _store_mask


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is not available."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
