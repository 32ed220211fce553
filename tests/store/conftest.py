"""Small real run stores for the stage-runner tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from crystalseg.synth import SynthConfig, synthesize_run

FRAMES = 4


@pytest.fixture(scope="module")
def measured_template(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    """A 4-frame synthetic run whose true mask stands as its segmentation, measured."""
    from crystalseg.measure import measure_run

    path = tmp_path_factory.mktemp("template") / "r.zarr"
    synthesize_run(
        path, SynthConfig(frames=FRAMES, height=96, width=96, seed=3), frames_per_chunk=2
    )
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    measure_run(path, scheduler="synchronous")
    return path


@pytest.fixture
def measured_run(measured_template: Path, tmp_path: Path) -> Path:
    import shutil

    path = tmp_path / "r.zarr"
    shutil.copytree(measured_template, path)
    return path


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file of a store with its bytes: equal digests, identical stores."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def digest() -> Callable[[Path], dict[str, bytes]]:
    return tree_digest
