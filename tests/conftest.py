"""Shared fixtures: small real run stores made by crystalseg's own writers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``where``; the reason it cannot, or None."""
    import subprocess

    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stderr.strip() or f"mount exited {done.returncode}" if done.returncode else None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) to fill up: writes there fail with ENOSPC.

    Needs the right to mount (root, or CAP_SYS_ADMIN in a container); skipped otherwise.
    """
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    why = _mount_tmpfs(disk, "2m")
    if why:
        pytest.skip(f"cannot mount a small tmpfs to fill ({why}); needs root or CAP_SYS_ADMIN")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill_disk(disk: Path, *, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until fewer than ``leave`` bytes are free; its path."""
    import os

    filler = disk / "filler.bin"
    stat = os.statvfs(disk)
    with open(filler, "wb", buffering=0) as fh:
        try:
            fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
            while leave == 0:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.fixture(scope="session")
def fill_disk() -> Callable[..., Path]:
    """``fill_disk(disk, *, leave=0)``: fill ``disk`` with one file until fewer than
    ``leave`` bytes are free; returns the file (delete it to free the space)."""
    return _fill_disk


@pytest.fixture
def read_only_copy(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``read_only_copy(*paths)``: a folder holding copies of ``paths`` that no one may
    write to, by a real mechanism: a tmpfs remounted read-only (EROFS) where mounting is
    allowed, else (not root) the folder's write permission removed (EACCES). Root with no
    right to mount is skipped: chmod does not stop root."""
    import os
    import shutil
    import stat
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = _mount_tmpfs(folder, "64m") is None
    if not mounted and os.geteuid() == 0:
        pytest.skip("root ignores chmod and may not mount a read-only tmpfs here")

    def copy(*paths: Path) -> Path:
        for path in paths:
            target = folder / path.name
            if path.is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copy2(path, target)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        return folder

    yield copy
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture(scope="session")
def measured_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame synthetic run (96 x 128 px) whose true mask stands as its
    segmentation, measured: no model needed. Copy it before writing into it."""
    import zarr

    from crystalseg.measure import measure_run
    from crystalseg.synth import SynthConfig, synthesize_run

    path = tmp_path_factory.mktemp("measured") / "template.zarr"
    synthesize_run(path, SynthConfig(frames=4, height=96, width=128, seed=5), frames_per_chunk=2)
    _store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    measure_run(path, scheduler="synchronous")
    return path
