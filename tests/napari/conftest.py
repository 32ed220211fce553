"""A small measured run for the napari plugin (Qt set to its offscreen platform)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from crystalseg.synth import SynthConfig, synthesize_run

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

# torch's compiler imports triton, whose LLVM segfaults a process that loaded Mesa's
# software OpenGL (llvmpipe, LLVM too) before it; the other way round is fine. Load it
# now, at collection, before any test opens a viewer (the segment tests import it later).
try:
    import torch._dynamo  # noqa: F401
except ImportError:  # pragma: no cover - torch is a dependency
    pass

FRAMES = 4


@pytest.fixture(scope="session")
def measured_template(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    """A 4-frame synthetic run whose true mask stands as its segmentation, measured."""
    from crystalseg.measure import measure_run

    path = tmp_path_factory.mktemp("napari") / "run.zarr"
    synthesize_run(
        path, SynthConfig(frames=FRAMES, height=96, width=128, seed=5), frames_per_chunk=2
    )
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    measure_run(path, scheduler="synchronous")
    return path


@pytest.fixture
def measured_run(measured_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(measured_template, path)
    return path
