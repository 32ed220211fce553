"""Measurement on a dask.distributed cluster of separate processes started as a user
starts them (``dask scheduler``, ``dask worker``), including a worker killed mid-run;
and the example script for a managed cluster, run against a LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from crystalseg.measure import measure_run
from crystalseg.store import read_table, stage_info

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]


def _same_measurement(a: Path, b: Path) -> None:
    with (
        xr.open_zarr(str(a), group="psd", consolidated=None) as left,
        xr.open_zarr(str(b), group="psd", consolidated=None) as right,
    ):
        assert sorted(left.data_vars) == sorted(right.data_vars)
        for name in left.data_vars:
            xr.testing.assert_equal(left[name].load(), right[name].load())
    particles = read_table(a, "particles")
    assert len(particles) >= 5
    pd.testing.assert_frame_equal(particles, read_table(b, "particles"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    """A 12-frame synthetic run whose true mask stands as its segmentation, one frame a
    chunk (12 tasks, so a worker can die while others are still to do)."""
    from crystalseg.synth import SynthConfig, synthesize_run

    path = tmp_path_factory.mktemp("cluster") / "template.zarr"
    synthesize_run(path, SynthConfig(frames=12, height=160, width=192, seed=3), frames_per_chunk=1)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]), fpc=1)
    return path


def _copy(template: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(template, where)
    return where


def _dask(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """``dask <args>`` as a separate process (the CLI a user runs), logging to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two ``dask worker --nthreads 1 --no-nanny`` processes on
    127.0.0.1; yields the scheduler's address and the worker processes."""
    info = tmp_path / "scheduler.json"
    procs = [
        _dask(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(info),
            log=tmp_path / "scheduler.log",
        )
    ]
    workers = []
    try:
        end = time.monotonic() + 60
        while not info.exists() and time.monotonic() < end:
            time.sleep(0.2)
        assert info.exists(), (tmp_path / "scheduler.log").read_text()
        address = json.loads(info.read_text())["address"]
        for i in range(2):
            workers.append(
                _dask(
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    f"w{i}",
                    log=tmp_path / f"worker{i}.log",
                )
            )
            procs.append(workers[-1])
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck process
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_worker_killed_mid_measurement_results_identical(template, tmp_path, cluster) -> None:
    """Two separate worker processes; once two chunks are recorded, the worker that is
    busy with a chunk gets SIGKILL. The scheduler gives its chunks to the other one (or,
    should it give up, the same call again resumes): the results equal a local run."""
    address, workers = cluster
    local = _copy(template, tmp_path / "local.zarr")
    measure_run(local, scheduler="synchronous")
    target = _copy(template, tmp_path / "dist.zarr")
    killed: list[tuple[int, bool]] = []
    watcher = distributed.Client(address, timeout=60)
    pids = watcher.run(os.getpid)  # worker address -> process id
    assert sorted(pids.values()) == sorted(p.pid for p in workers)

    def progress(stage: str, done: int, total: int) -> None:
        if killed or done < 2:
            return
        busy = [a for a, keys in watcher.processing().items() if keys and a in pids]
        victim = busy[0] if busy else next(iter(pids))  # busy: it dies inside a chunk
        os.kill(pids[victim], signal.SIGKILL)
        killed.append((done, bool(busy)))

    try:
        try:
            measure_run(target, client=address, progress=progress)
        except distributed.client.FuturesCancelledError:  # pragma: no cover - see below
            pass
        except Exception as exc:  # the scheduler gave up on a chunk (KilledWorker)
            assert type(exc).__name__ == "KilledWorker", exc
        assert killed and killed[0][0] < 12, "no worker was killed while chunks were running"
        assert killed[0][1], "the killed worker held no chunk"
        assert sum(p.poll() is not None for p in workers) == 1
        if stage_info(target)["measure"]["status"] != "finished":
            measure_run(target, client=address)  # the same command again resumes
    finally:
        watcher.close()
    assert stage_info(target)["measure"]["status"] == "finished"
    _same_measurement(target, local)


@pytest.mark.slow
def test_example_script_runs_on_a_local_cluster(template, tmp_path, capsys) -> None:
    """examples/dask_cluster.py (what docs/cluster.md shows for a managed cluster), on a
    LocalCluster of two processes: the run is measured like a local one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dask_cluster", ROOT / "examples/dask_cluster.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    local = _copy(template, tmp_path / "local.zarr")
    measure_run(local, scheduler="synchronous")
    target = _copy(template, tmp_path / "example.zarr")
    example.main([str(target), "--workers", "2"])
    assert "measured 12 frames" in capsys.readouterr().out
    _same_measurement(target, local)
