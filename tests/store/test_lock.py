"""One writer at a time: the lock every writing stage holds (crystalseg.store.lock)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.errors import RunLockedError
from crystalseg.measure import MeasureSettings, measure_run
from crystalseg.store import read_lock, run_lock, set_calibration, stage_info
from crystalseg.store.lock import lock_path

HOLD = """
import sys
from crystalseg.store import run_lock
with run_lock(sys.argv[1], "measure"):
    print("holding", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(measured_run: Path):
    """Another process that holds the run's lock (as a running measurement would)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(measured_run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    yield proc
    if proc.poll() is None:
        proc.communicate("", timeout=30)


def test_a_second_writer_is_refused_with_the_holder(measured_run: Path, holder) -> None:
    expected = rf"'{measured_run}' is being measured by PID {holder.pid} on {socket.gethostname()}"
    with pytest.raises(RunLockedError, match=expected):
        set_calibration(measured_run, pixel_size_um=2.0)
    with pytest.raises(RunLockedError, match=expected):
        measure_run(measured_run, settings=MeasureSettings(edge="keep"), overwrite=True)
    result = CliRunner().invoke(cli, ["measure", str(measured_run), "--overwrite"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Error: run store" in result.output
    assert f"PID {holder.pid}" in result.output
    assert stage_info(measured_run)["measure"]["status"] == "finished"  # nothing touched

    holder.communicate("", timeout=30)  # the holder finishes: the lock is free again
    assert read_lock(measured_run) is None
    set_calibration(measured_run, pixel_size_um=2.0)


def test_the_lock_is_released_after_an_error(measured_run: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        measure_run(measured_run, settings=MeasureSettings(classes=("unknown",)), overwrite=True)
    assert not lock_path(measured_run).exists()
    assert read_lock(measured_run) is None


def test_a_stale_lock_of_a_dead_process_is_taken_over(
    measured_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "since": "then", "stage": "segment"}
    lock_path(measured_run).write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="crystalseg.store.lock"):
        set_calibration(measured_run, pixel_size_um=3.0)
    assert f"PID {dead.pid}" in caplog.text and "no longer runs" in caplog.text
    assert not lock_path(measured_run).exists()


def test_a_reused_process_id_does_not_hold_the_lock(measured_run: Path) -> None:
    # our own PID, but recorded with another start time: the writer died and its id was reused
    record = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": 1, "stage": "x"}
    lock_path(measured_run).write_text(json.dumps(record))
    set_calibration(measured_run, pixel_size_um=3.0)
    assert not lock_path(measured_run).exists()


def test_a_lock_from_another_host_names_the_file_to_remove(measured_run: Path) -> None:
    record = {"pid": 1, "host": "other-host", "since": "2026-01-01", "stage": "import"}
    lock_path(measured_run).write_text(json.dumps(record))
    with pytest.raises(RunLockedError, match=r"being imported by PID 1 on other-host.*delete"):
        set_calibration(measured_run, pixel_size_um=3.0)
    assert json.loads(lock_path(measured_run).read_text()) == record  # left alone


def test_reentrant_in_one_thread_refused_in_another(measured_run: Path) -> None:
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with run_lock(measured_run, "calibrate"):
                pass
        except RunLockedError as exc:
            errors.append(exc)

    with run_lock(measured_run, "measure"):
        with run_lock(measured_run, "segment"):  # a measurement that segments first
            assert read_lock(measured_run)["pid"] == os.getpid()
        assert lock_path(measured_run).exists()  # still held by the outer one
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])
    assert not lock_path(measured_run).exists()
