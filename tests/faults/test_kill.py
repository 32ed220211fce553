"""kill -9 of real ``crystalseg`` commands (issue 29, "never lose a run").

Each test copies a prepared starting state, starts the real command in a
subprocess, kills it with SIGKILL (at a point where its progress record shows some
chunks done, or inside a given call), checks what it left, runs the same command
again and compares the result with an uninterrupted run's: arrays and tables, not
file bytes. The machinery is ``benchmarks/kill_resume.py``, which runs the same
trials many times over (its JSON is the figure; these tests are the checks).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kill_resume", ROOT / "benchmarks" / "kill_resume.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_resume"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


kr = _load_harness()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory):
    """Trials in one workspace; each scenario's uninterrupted result is made once."""
    root = kr.prepare_workspace(tmp_path_factory.mktemp("kill"), ["import", "import-replace"])
    return kr.Runner(root)


#: How a store may read after a kill (see kill_resume.Trial.after_kill).
READABLE = ("ok", "incomplete", "absent", "swapping", "replaced")


def assert_resumed(trial, *, lock: bool = True) -> None:
    """The kill landed, the store read as whole or clearly incomplete, the rerun took
    over the dead process's lock (saying so), finished, and gave the uninterrupted result."""
    assert trial.killed, trial
    if lock:  # a run store (training writes a model folder, which has no lock)
        assert trial.after_kill in READABLE, trial.after_kill
        assert trial.lock_left is not None, "the dead process held no lock"
        assert trial.lock_taken_over, trial.stderr
    assert trial.rerun_code[-1] == 0, trial.stderr
    assert trial.tracebacks == 0, trial.stderr
    assert trial.difference is None, trial.difference
    assert not trial.lost


# ----------------------------------------------------------------------------- import


def test_the_uninterrupted_import_holds_the_tiff_frames(runner) -> None:
    """The reference every import trial is compared with is itself right."""
    result, _ = runner.reference(kr.SCENARIOS["import"])
    np.testing.assert_array_equal(result["image"], kr.blob_frames(kr.FRAMES, kr.SIZE, seed=1))
    np.testing.assert_array_equal(result["time"], np.arange(kr.FRAMES) * 5.0)


def test_import_killed_halfway_resumes_identically(runner) -> None:
    half = kr.FRAMES // kr.FPC // 2
    trial = runner.trial(kr.SCENARIOS["import"], kr.KillPoint("chunks", count=half))
    assert trial.after_kill == "incomplete"  # one line: run the same command again
    assert half <= trial.done_at_kill < kr.FRAMES // kr.FPC
    assert_resumed(trial)


def test_import_killed_before_it_recorded_its_settings_resumes(runner) -> None:
    """Killed after the store and its progress record exist but before the stage's
    record: the rerun said 'already exists (made from other input); pass --overwrite'."""
    point = kr.KillIn("crystalseg.store.stages:_update_stage", "before")
    trial = runner.trial(kr.SCENARIOS["import"], point)
    assert trial.after_kill == "incomplete"
    assert_resumed(trial)


def test_import_killed_just_after_creating_the_store_resumes(runner) -> None:
    """Killed right after the store's group was made, before its attributes were
    written: the store was 'not a crystalseg run store', which neither a rerun nor
    --overwrite would touch."""
    point = kr.KillIn("zarr:open_group", "after", text="run.zarr")
    trial = runner.trial(kr.SCENARIOS["import"], point)
    assert_resumed(trial)


def test_a_lock_file_left_empty_by_a_kill_is_no_lock(runner) -> None:
    """Killed between creating the lock file and writing its holder into it: the next
    command said 'damaged lock file ... delete that file' instead of going on."""
    point = kr.KillIn("os:open", "after", text="crystalseg-lock")
    trial = runner.trial(kr.SCENARIOS["import"], point)
    assert trial.lock_left is None  # no lock without its holder's record
    assert_resumed(trial, lock=False)


def test_import_overwrite_killed_between_its_two_renames_is_completed(runner) -> None:
    """A store that replaces a finished run is written beside it and swapped in by two
    renames; killed between them, the run is nowhere under its name until the next
    writer completes the swap."""
    point = kr.KillIn("os:replace", "after", text=r"run\.zarr$")
    trial = runner.trial(kr.SCENARIOS["import-replace"], point)
    assert trial.after_kill == "swapping"
    assert_resumed(trial)


# ----------------------------------------------------------------------------- all stages


@pytest.fixture(scope="module")
def stage_runner(tmp_path_factory: pytest.TempPathFactory):
    root = kr.prepare_workspace(tmp_path_factory.mktemp("kill-stages"))
    return kr.Runner(root)


def _points(name: str) -> list:
    """Kill points of a stage: its start, middle and finish, and two drawn (seeded)."""
    scenario = kr.SCENARIOS[name]
    if not scenario.chunks:
        return [0.35, 0.6, 0.85]  # fractions of the uninterrupted run's duration
    rng = np.random.default_rng(sum(map(ord, name)))
    return [0, scenario.chunks // 2, scenario.chunks, *rng.integers(0, scenario.chunks + 1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "index"),
    [(name, i) for name in kr.SCENARIOS for i in range(len(_points(name)))],
)
def test_every_stage_killed_anywhere_resumes_identically(stage_runner, name, index) -> None:
    scenario = kr.SCENARIOS[name]
    value = _points(name)[index]
    if scenario.chunks:
        point = kr.KillPoint("chunks", count=int(value))
    else:
        _, duration = stage_runner.reference(scenario)
        point = kr.KillPoint("delay", seconds=value * duration)
    trial = stage_runner.trial(scenario, point, rerun=index)
    if not trial.killed:
        pytest.skip(f"the command ended before the kill point ({point.describe()})")
    # progress is marked under the lock; after the last chunk it may be released already
    held = point.kind == "chunks" and point.count < scenario.chunks
    assert_resumed(trial, lock=bool(scenario.store) and held)
    if scenario.before is not None:
        assert trial.before_intact in (True, None), "the finished results changed"
        if trial.after_kill != "swapping":
            assert trial.before_intact


@pytest.mark.slow
def test_measure_replacement_killed_in_its_swap_is_completed(stage_runner) -> None:
    """Killed after the first rename of the swap (the old psd moved aside): the store
    says 'swapping', and the next command completes the swap before anything else."""
    point = kr.KillIn("crystalseg.store.stages:move_tree", "after")
    trial = stage_runner.trial(kr.SCENARIOS["measure-replace"], point)
    assert trial.after_kill == "swapping"
    assert "completing the interrupted replacement" in trial.stderr
    assert_resumed(trial)


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_train_killed_between_the_last_weights_and_their_state_resumes_identically(
    stage_runner,
) -> None:
    """Killed after epoch 2's weights were written, before its optimizer state was: last/
    is swapped in whole, so --resume goes on from epoch 1's weights and state, with the
    batch-norm rule of the run (it ended 0.0023 away while the learner built on last/
    froze the statistics, as for any fine-tuned checkpoint)."""
    point = kr.KillIn("crystalseg.train.learner:_save_training_state", "before", nth=2)
    trial = stage_runner.trial(kr.SCENARIOS["train"], point)
    assert_resumed(trial, lock=False)


@pytest.mark.slow
def test_train_killed_in_its_first_save_goes_on_when_run_again(stage_runner) -> None:
    point = kr.KillIn("crystalseg.train.learner:_save_training_state", "before", nth=1)
    trial = stage_runner.trial(kr.SCENARIOS["train"], point)
    assert_resumed(trial, lock=False)
