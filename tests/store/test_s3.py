"""Run stores on object storage: a real S3 server (moto in server mode on 127.0.0.1).

The same stages run on ``s3://bucket/run.zarr`` and on a local folder, and must give the
same arrays and tables; an interrupted or killed stage resumes to the same result; a
URL the tool cannot open is refused in one line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from crystalseg.errors import ConfigError, InputNotFoundError, StageStateError
from crystalseg.importing import import_run
from crystalseg.measure import MeasureSettings, measure_run
from crystalseg.store import (
    StageProgress,
    open_run,
    read_lock,
    read_table,
    recover_stages,
    run_path,
    stage_info,
)
from crystalseg.store.location import create_exclusive

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "crystalseg-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1, dummy credentials and its endpoint in
    the environment (as a user sets them: ``AWS_ENDPOINT_URL``), one bucket; its URL."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        patch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        patch.delenv(name, raising=False)
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
    yield endpoint
    patch.undo()
    server.stop()


@pytest.fixture
def bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A prefix of the bucket of its own for each test: ``s3://bucket/<test name>``."""
    return f"s3://{BUCKET}/{request.node.name}"


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 6-frame synthetic recording as a ``.npy`` stack, and its true mask."""
    from crystalseg.synth import SynthConfig, synthesize_run

    folder = tmp_path_factory.mktemp("recording")
    synth = folder / "synth.zarr"
    synthesize_run(synth, SynthConfig(frames=6, height=96, width=128, seed=5), frames_per_chunk=2)
    group = zarr.open_group(str(synth), mode="r")
    np.save(folder / "frames.npy", np.asarray(group["image"][:]))
    np.save(folder / "truth.npy", np.asarray(group["truth/mask"][:]))
    return folder / "frames.npy", folder / "truth.npy"


def _import(recording: tuple[Path, Path], dest: str | Path) -> str | Path:
    import_run(recording[0], dest, pixel_size_um=0.5, interval_s=10.0, frames_per_chunk=2)
    return dest


def _psd_equal(a: str | Path, b: str | Path) -> None:
    """The ``psd`` groups of two runs hold the same variables and values."""
    with (
        xr.open_zarr(str(a), group="psd", consolidated=None) as left,
        xr.open_zarr(str(b), group="psd", consolidated=None) as right,
    ):
        assert sorted(left.data_vars) == sorted(right.data_vars)
        assert left.sizes == right.sizes
        for name in left.data_vars:
            xr.testing.assert_equal(left[name].load(), right[name].load())


def _same_measurement(a: str | Path, b: str | Path) -> None:
    _psd_equal(a, b)
    left, right = read_table(a, "particles"), read_table(b, "particles")
    assert len(left) >= 5  # crystals were found: a comparison of two empty tables is weak
    pd.testing.assert_frame_equal(left, right)


# --------------------------------------------------------------------------- refusals


def test_url_of_unknown_protocol_is_refused_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"protocol 'xyz://', which no installed file system"):
        run_path("xyz://bucket/run.zarr")
    with pytest.raises(ConfigError, match=r"lost a slash.*'s3://bucket/run\.zarr'"):
        open_run("s3:/bucket/run.zarr")
    with pytest.raises(ConfigError, match="lost a slash") as caught:
        import_run(tmp_path / "none.npy", "s3:/bucket/run.zarr")
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no local folder "s3:" made for it


def test_url_whose_package_is_missing_names_it() -> None:
    try:
        import adlfs  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - an environment with Azure support
        pytest.skip("adlfs is installed here")
    with pytest.raises(ConfigError, match=r"needs the package adlfs .*pip install adlfs"):
        run_path("abfs://container/run.zarr")


def test_file_url_is_a_local_path(tmp_path) -> None:
    assert run_path(f"file://{tmp_path}/run.zarr") == tmp_path / "run.zarr"
    assert run_path(tmp_path / "run.zarr") == tmp_path / "run.zarr"


def test_missing_store_on_s3_says_so(bucket) -> None:
    with pytest.raises(InputNotFoundError, match=r"run store 's3://.*/none\.zarr' does not exist"):
        open_run(f"{bucket}/none.zarr")


# --------------------------------------------------------------------------- the lock


def test_lock_object_is_created_by_one_writer_only(bucket) -> None:
    """The conditional PUT (If-None-Match: *) the lock rests on: the second create of
    the same object is refused by the server."""
    target = run_path(f"{bucket}/.x.crystalseg-lock")
    assert create_exclusive(target, b"first")
    assert not create_exclusive(target, b"second")
    assert target.read_bytes() == b"first"


@pytest.mark.slow
def test_run_lock_on_s3_names_the_holder_and_is_released(bucket, recording) -> None:
    from crystalseg.errors import RunLockedError
    from crystalseg.store import run_lock

    url = _import(recording, f"{bucket}/run.zarr")
    assert read_lock(url) is None
    with run_lock(url, "measure"):
        holder = read_lock(url)
        assert holder is not None and holder["pid"] == os.getpid()
        assert holder["stage"] == "measure"
        code = f"""
            from crystalseg.store import run_lock
            with run_lock({str(url)!r}, "segment"):
                pass
        """
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert done.returncode != 0
        assert RunLockedError.__name__ in done.stderr
        assert f"is being measured by PID {os.getpid()}" in done.stderr
    assert read_lock(url) is None


# --------------------------------------------------------------------------- stages on S3


@pytest.mark.slow
def test_s3_import_equals_local(bucket, recording, tmp_path) -> None:
    """A recording imported to S3 reads back (through crystalseg and through plain
    xarray) as the same frames, times and calibration as the one imported to disk."""
    url = _import(recording, f"{bucket}/run.zarr")
    local = _import(recording, tmp_path / "run.zarr")
    remote_ds, local_ds = open_run(url), open_run(local)
    xr.testing.assert_equal(remote_ds["image"].load(), local_ds["image"].load())
    np.testing.assert_array_equal(remote_ds["time"].values, np.arange(6) * 10.0)
    assert remote_ds.attrs["pixel_size_um"] == 0.5
    assert stage_info(url)["import"]["status"] == "finished"
    plain = xr.open_zarr(str(url), consolidated=True)["image"].values  # no crystalseg code
    np.testing.assert_array_equal(plain, np.load(recording[0]))
    with pytest.raises(StageStateError, match="already exists"):
        _import(recording, url)  # a finished store is not overwritten without the word


@pytest.mark.slow
def test_s3_run_measures_like_local(bucket, recording, tmp_path, store_mask) -> None:
    """import -> (true mask as segmentation) -> measure on S3 equals the same on disk,
    and the measured run opens with plain xarray from its URL."""
    truth = np.load(recording[1])
    url = _import(recording, f"{bucket}/run.zarr")
    local = _import(recording, tmp_path / "run.zarr")
    for run in (url, local):
        store_mask(run_path(run), truth, fpc=2)
        measure_run(run, scheduler="synchronous")
    _same_measurement(url, local)
    assert stage_info(url)["measure"]["status"] == "finished"
    frames = xr.open_zarr(str(url), consolidated=True)["image"].values
    np.testing.assert_array_equal(frames, np.load(recording[0]))


@pytest.mark.slow
def test_s3_pipeline_import_segment_measure_export_equals_local(
    bucket, recording, tmp_path
) -> None:
    """The whole chain with the bundled model, on S3 and on disk; the report written
    beside the run on S3, the export both to a local folder and to S3."""
    import fsspec

    from crystalseg.export import export_run
    from crystalseg.segment import segment_run

    url = _import(recording, f"{bucket}/run.zarr")
    local = _import(recording, tmp_path / "run.zarr")
    masks = []
    for run in (url, local):
        masks.append(segment_run(run, device="cpu", backend="torch", threads=1).values)
        measure_run(run, scheduler="synchronous")
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].any()
    _same_measurement(url, local)
    from crystalseg.viz.report import write_report

    html, _ = write_report(url)  # beside the run, on S3
    assert str(html) == f"{bucket}/run_report.html"
    assert html.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    remote_out = export_run(url, f"{bucket}/exports")
    local_out = export_run(local, tmp_path / "exports")
    fs = fsspec.filesystem("s3")
    names = sorted(Path(str(p)).name for p in remote_out.files)
    assert names == sorted(p.name for p in local_out.files)
    for path in local_out.files:
        if path.name.endswith("_metadata.csv"):
            continue  # names the run's location
        assert fs.cat_file(f"{BUCKET}/{bucket.split('/')[-1]}/exports/{path.name}") == (
            path.read_bytes()
        ), path.name


class Interrupt(Exception):
    """Stands for a crash at a chunk boundary."""


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, chunks: int) -> None:
    """Make StageProgress.mark_done raise once ``chunks`` chunks were recorded."""
    real = StageProgress.mark_done
    count = {"n": 0}

    def mark_done(self: StageProgress, start: int, stop: int) -> None:
        if count["n"] == chunks:
            raise Interrupt(f"interrupted at frame {start}")
        count["n"] += 1
        real(self, start, stop)

    monkeypatch.setattr(StageProgress, "mark_done", mark_done)


@pytest.mark.slow
def test_s3_interrupted_measure_and_replacement_resume_identical(
    bucket, recording, tmp_path, store_mask, monkeypatch
) -> None:
    """A measurement interrupted after its first chunk resumes (the chunks done are kept)
    to the uninterrupted result; a replacement (other settings) interrupted inside the
    copy that swaps it into place is completed by the next writer."""
    truth = np.load(recording[1])
    url = _import(recording, f"{bucket}/run.zarr")
    local = _import(recording, tmp_path / "run.zarr")
    for run in (url, local):
        store_mask(run_path(run), truth, fpc=2)
    measure_run(local, scheduler="synchronous")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        with pytest.raises(Interrupt, match="interrupted at frame"):
            measure_run(url, scheduler="synchronous")
    info = stage_info(url)["measure"]
    assert info["status"] == "running" and info["frames_done"] == 2
    measure_run(url, scheduler="synchronous")
    _same_measurement(url, local)

    other = MeasureSettings(min_area_px=30)
    measure_run(local, settings=other, overwrite=True, scheduler="synchronous")
    import crystalseg.store.stages as stages

    real_copy = stages.copy_tree
    copies: list[str] = []

    def copy_then_fail(source, target) -> None:  # the second output's copy dies midway
        copies.append(str(target))
        real_copy(source, target)
        if len(copies) == 2:
            raise Interrupt("killed during the swap")

    with monkeypatch.context() as patch:
        patch.setattr(stages, "copy_tree", copy_then_fail)
        with pytest.raises(Interrupt, match="during the swap"):
            measure_run(url, settings=other, overwrite=True, scheduler="synchronous")
    assert stage_info(url)["measure.next"]["status"] == "swapping"
    from crystalseg.store import writing

    with writing(url, "measure"):  # what the next command does first
        pass
    assert "measure.next" not in stage_info(url)
    assert not run_path(f"{url}/_next").exists()
    _same_measurement(url, local)
    recover_stages(url)  # nothing left to do: changes nothing
    _same_measurement(url, local)


@pytest.mark.slow
def test_s3_import_overwrite_swaps_whole_store_and_recovers(bucket, recording, monkeypatch) -> None:
    """import --overwrite of a finished store on S3: the new store is written beside it
    and copied into place under a marker; killed inside that copy, the next writer
    completes it from the marker."""
    import crystalseg.store.stages as stages
    from crystalseg.store import creating

    url = f"{bucket}/run.zarr"
    _import(recording, url)  # 10 s between frames
    real_copy = stages.copy_tree

    def copy_then_fail(source, target) -> None:
        real_copy(source, target)
        raise Interrupt("killed during the copy")

    with monkeypatch.context() as patch:
        patch.setattr(stages, "copy_tree", copy_then_fail)
        with pytest.raises(Interrupt, match="during the copy"):
            import_run(recording[0], url, interval_s=20.0, frames_per_chunk=2, overwrite=True)
    marker = run_path(f"{bucket}/.run.zarr.crystalseg-swap")
    assert marker.read_text() == "copying"
    with creating(url, "import"):  # what the next command on this run does first
        pass
    assert not marker.exists()
    assert not run_path(f"{url}.crystalseg-new").exists()
    ds = open_run(url)
    np.testing.assert_array_equal(ds["time"].values, np.arange(6) * 20.0)
    np.testing.assert_array_equal(ds["image"].values, np.load(recording[0]))
    assert ds.attrs["pixel_size_um"] is None  # the new import's: none given this time


def _wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_s3_killed_measure_rerun_gives_identical_results(
    bucket, recording, tmp_path, store_mask
) -> None:
    """kill -9 of a process measuring a run on S3 once its first chunk is recorded; the
    same call again takes over the dead process's lock and ends with the local result."""
    truth = np.load(recording[1])
    url = _import(recording, f"{bucket}/run.zarr")
    local = _import(recording, tmp_path / "run.zarr")
    for run in (url, local):
        store_mask(run_path(run), truth, fpc=1)
    measure_run(local, scheduler="synchronous", frames_per_chunk=1)
    code = f"""
        import time
        from crystalseg.store import StageProgress
        from crystalseg.measure import measure_run
        real = StageProgress.mark_done
        def slow(self, start, stop):
            real(self, start, stop)
            time.sleep(2)  # room for the kill between chunks
        StageProgress.mark_done = slow
        measure_run({str(url)!r}, scheduler="synchronous", frames_per_chunk=1)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    try:

        def started() -> bool:
            info = stage_info(url).get("measure", {})
            return info.get("frames_done", 0) >= 1

        assert _wait_for(started, 120), "the measurement never recorded a chunk"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    info = stage_info(url)["measure"]
    assert info["status"] == "running" and 1 <= info["frames_done"] < 6
    assert read_lock(url)["pid"] == child.pid  # the dead process's lock is left behind
    measure_run(url, scheduler="synchronous", frames_per_chunk=1)
    assert stage_info(url)["measure"]["status"] == "finished"
    assert read_lock(url) is None
    _same_measurement(url, local)


@pytest.mark.slow
def test_stage_on_s3_refuses_a_second_settings_without_overwrite(
    bucket, recording, store_mask
) -> None:
    url = _import(recording, f"{bucket}/run.zarr")
    store_mask(run_path(url), np.load(recording[1]), fpc=2)
    measure_run(url, scheduler="synchronous")
    with pytest.raises(StageStateError, match="other settings"):
        measure_run(url, settings=MeasureSettings(min_area_px=30), scheduler="synchronous")


# --------------------------------------------------------------------------- the CLI


def test_cli_import_and_info_on_s3_and_a_bad_url(bucket, recording, tmp_path, monkeypatch) -> None:
    """``crystalseg import X s3://...`` writes to the bucket (not a local folder ``s3:``);
    a URL of an unknown protocol is one ``Error:`` line and a non-zero exit."""
    from click.testing import CliRunner

    from crystalseg.cli import cli as main

    monkeypatch.chdir(tmp_path)
    url = f"{bucket}/cli.zarr"
    runner = CliRunner()
    done = runner.invoke(
        main, ["import", str(recording[0]), url, "--pixel-size", "0.5", "--interval", "10"]
    )
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "s3:").exists()
    assert open_run(url).sizes["time"] == 6
    info = runner.invoke(main, ["info", url])
    assert info.exit_code == 0 and "6" in info.output, info.output
    bad = runner.invoke(main, ["import", str(recording[0]), "xyz://b/run.zarr", "--interval", "1"])
    assert bad.exit_code != 0
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), bad.output
    assert "protocol 'xyz://'" in lines[0]
