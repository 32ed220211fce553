"""Small real run stores for the stage-runner tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def measured_run(measured_template: Path, tmp_path: Path) -> Path:
    """A copy of the session's measured run (``tests/conftest.py``) as ``r.zarr``."""
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
