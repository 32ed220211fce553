"""A small measured run for the napari plugin (Qt set to its offscreen platform)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

# torch's compiler imports triton, whose LLVM segfaults a process that loaded Mesa's
# software OpenGL (llvmpipe, LLVM too) before it; the other way round is fine. Load it
# now, at collection, before any test opens a viewer (the segment tests import it later).
try:
    import torch._dynamo  # noqa: F401
except ImportError:  # pragma: no cover - torch is a dependency
    pass


@pytest.fixture
def measured_run(measured_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(measured_template, path)
    return path
