"""segment_and_measure on a run with no mask: segmentation streamed into measurement.

Every streamed result is compared with the two-pass path (segment the whole run,
then measure it) on a copy of the same run: the mask, ``psd`` and the particle
table must be identical, whatever the scheduler, the chunking, or where the run
was interrupted and resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import crystalseg.measure.run as measure_mod
import crystalseg.pipeline as pipeline
import crystalseg.segment.run as segment_mod
from crystalseg.errors import ConfigError
from crystalseg.measure import MeasureOptions
from crystalseg.pipeline import segment_and_measure
from crystalseg.segment import EngineSettings, Segmenter, segment_run
from crystalseg.store import read_table, stage_info
from crystalseg.synth import SynthConfig, synthesize_run

FRAMES = 8
FPC = 2
#: One thread and plain torch: the test machines are shared, and the mask must not
#: depend on a backend chosen by timing.
ENGINE = EngineSettings(device="cpu", backend="torch", threads=1)


class Stop(Exception):
    pass


def segment_measure(run: Path, *, model: object = None, stream: object = "auto", **options):
    """The main job as ``crystalseg measure`` runs it, with MeasureOptions as keywords."""
    return segment_and_measure(
        run,
        model=model,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        options=MeasureOptions(**options),
    )


@pytest.fixture(scope="module")
def model() -> Segmenter:
    """The bundled model on the CPU."""
    return Segmenter.from_checkpoint(None, settings=ENGINE)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run with no mask, in chunks of FPC frames."""
    path = tmp_path_factory.mktemp("template") / "run.zarr"
    cfg = SynthConfig(frames=FRAMES, height=96, width=128, seed=5, scenario="mixed")
    synthesize_run(path, cfg, frames_per_chunk=FPC)
    return path


@pytest.fixture(scope="module")
def two_pass(template: Path, model: Segmenter, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run segmented whole and then measured, one chunk at a time."""
    path = tmp_path_factory.mktemp("two_pass") / "run.zarr"
    shutil.copytree(template, path)
    calls: list[tuple[str, int, int]] = []
    psd = segment_measure(
        path, model=model, stream=False, scheduler="synchronous", progress=_record(calls)
    )
    stages = [stage for stage, _, _ in calls]
    assert stages.index("measure") > max(i for i, s in enumerate(stages) if s == "segment")
    assert int(psd["count_detected"].sum()) > 0
    return {
        "psd": psd.load(),
        "particles": read_table(path, "particles"),
        "mask": np.asarray(zarr.open_group(str(path), mode="r")["mask"][:]),
    }


@pytest.fixture
def run(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(template, path)
    return path


def _record(calls: list[tuple[str, int, int]]) -> Any:
    return lambda stage, done, total: calls.append((stage, done, total))


def _stream_until(run: Path, model: Segmenter, stop_stage: str, *, at_end: bool) -> None:
    """Stream-measure ``run`` and interrupt it once ``stop_stage`` reports progress:
    its first chunk (``at_end`` False) or its last (True)."""

    def stop(stage: str, done: int, total: int) -> None:
        if stage == stop_stage and (done == total if at_end else done > 0):
            raise Stop

    with pytest.raises(Stop):
        segment_measure(run, model=model, stream=True, scheduler="synchronous", progress=stop)


def assert_same_as_two_pass(path: Path, reference: dict) -> None:
    """Mask, psd and particles equal the two-pass ones; the results name the final mask."""
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    np.testing.assert_array_equal(group["mask"][:], reference["mask"])
    psd = xr.open_zarr(str(path), group="psd").load()
    xr.testing.assert_identical(psd.drop_attrs(), reference["psd"].drop_attrs())
    ref_attrs = dict(reference["psd"].attrs)
    attrs = dict(psd.attrs)
    ref_mask, mask = json.loads(ref_attrs.pop("mask")), json.loads(attrs.pop("mask"))
    assert attrs == ref_attrs
    assert mask["model_sha256"] == ref_mask["model_sha256"]
    pd.testing.assert_frame_equal(read_table(path, "particles"), reference["particles"])
    stages = stage_info(path)
    assert stages["segment"]["status"] == "finished"
    assert stages["measure"]["status"] == "finished"
    # psd, the particle table and the stage record name the mask as it is, finished.
    finished = {
        "model_sha256": mask["model_sha256"],
        "segment_started": stages["segment"]["started"],
        "segment_finished": stages["segment"]["finished"],
    }
    assert mask == finished
    assert stages["measure"]["settings"]["mask"] == finished
    assert group["particles"].attrs["mask"] == finished
    assert "_measure" not in group


def _count_predicted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Frames given to the model, call by call."""
    seen: list[int] = []
    real = Segmenter.predict

    def predict(self, frames, **kw):  # type: ignore[no-untyped-def]
        seen.append(len(frames))
        return real(self, frames, **kw)

    monkeypatch.setattr(Segmenter, "predict", predict)
    return seen


# --------------------------------------------------------------------------- equality


def test_streamed_equals_two_pass_and_overlaps(run: Path, model: Segmenter, two_pass: dict) -> None:
    calls: list[tuple[str, int, int]] = []
    segment_measure(run, model=model, stream=True, scheduler="synchronous", progress=_record(calls))
    assert_same_as_two_pass(run, two_pass)
    # Chunks were measured before the segmentation reached the last frame.
    first_measured = calls.index(("measure", FPC, FRAMES))
    assert calls.index(("segment", FRAMES, FRAMES)) > first_measured
    assert calls[-1] == ("measure", FRAMES, FRAMES)
    seg = [d for s, d, _ in calls if s == "segment"]
    meas = [d for s, d, _ in calls if s == "measure"]
    assert seg == [0, 2, 4, 6, 8] and meas == [0, 2, 4, 6, 8]


def test_streamed_on_worker_processes_equals_two_pass(
    run: Path, model: Segmenter, two_pass: dict
) -> None:
    calls: list[tuple[str, int, int]] = []
    segment_measure(
        run, model=model, stream=True, scheduler="processes", num_workers=2, progress=_record(calls)
    )
    assert_same_as_two_pass(run, two_pass)
    measured = [d for s, d, _ in calls if s == "measure"]
    assert measured[0] == 0 and measured[-1] == FRAMES and measured == sorted(measured)


def test_measurement_chunks_other_than_the_mask_chunks(
    run: Path, model: Segmenter, two_pass: dict
) -> None:
    """A chunk of 3 frames is measured once both mask chunks it overlaps are stored."""
    segment_measure(run, model=model, stream=True, scheduler="threads", frames_per_chunk=3)
    assert zarr.open_group(str(run), mode="r")["psd/q0"].chunks[0] == 3
    assert_same_as_two_pass(run, two_pass)


# --------------------------------------------------------------------------- resume


def test_resume_after_interruption_while_both_run(
    run: Path, model: Segmenter, two_pass: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stream_until(run, model, "measure", at_end=False)
    stages = stage_info(run)
    assert stages["segment"]["status"] == "running" and stages["measure"]["status"] == "running"
    segmented = stages["segment"]["frames_done"]
    assert stages["measure"]["frames_done"] == FPC and FPC < segmented < FRAMES
    assert "particles" not in zarr.open_group(str(run), mode="r")

    predicted = _count_predicted(monkeypatch)
    calls: list[tuple[str, int, int]] = []
    segment_measure(run, model=model, stream=True, scheduler="threads", progress=_record(calls))
    assert sum(predicted) == FRAMES - segmented  # stored chunks are not segmented again
    assert calls[0] in (("segment", segmented, FRAMES), ("measure", FPC, FRAMES))
    assert ("measure", FPC, FRAMES) in calls  # ... nor measured again
    assert ("measure", 0, FRAMES) not in calls
    assert_same_as_two_pass(run, two_pass)


def test_resume_two_pass_after_the_mask_was_finished_elsewhere(
    run: Path, model: Segmenter, two_pass: dict
) -> None:
    """Streamed, stopped, then `crystalseg segment`, then measure: nothing is redone."""

    _stream_until(run, model, "measure", at_end=False)
    segment_run(run, model)
    assert stage_info(run)["segment"]["status"] == "finished"
    calls: list[tuple[str, int, int]] = []
    segment_measure(run, model=model, scheduler="synchronous", progress=_record(calls))
    assert calls[0] == ("measure", FPC, FRAMES)  # the chunk measured while streaming is kept
    assert_same_as_two_pass(run, two_pass)


def test_resume_after_the_last_chunk_before_the_stages_finish(
    run: Path, model: Segmenter, two_pass: dict
) -> None:
    """Stopped with every chunk segmented but neither stage marked finished."""

    _stream_until(run, model, "segment", at_end=True)
    stages = stage_info(run)
    assert stages["segment"]["status"] == "running"
    assert stages["segment"]["frames_done"] == FRAMES
    calls: list[tuple[str, int, int]] = []
    segment_measure(run, model=model, stream=True, scheduler="synchronous", progress=_record(calls))
    assert calls[0] == ("segment", FRAMES, FRAMES)
    assert_same_as_two_pass(run, two_pass)


def test_failing_chunk_leaves_a_resumable_store(
    run: Path, model: Segmenter, two_pass: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = measure_mod._measure_chunk

    def flaky(job: Any) -> int:
        if job.start == 4:
            raise Stop
        return real(job)

    monkeypatch.setattr(measure_mod, "_measure_chunk", flaky)
    with pytest.raises(Stop):
        segment_measure(run, model=model, stream=True, scheduler="threads", num_workers=2)
    stages = stage_info(run)
    assert stages["measure"]["status"] == "running"
    assert 0 < stages["measure"]["frames_done"] < FRAMES
    monkeypatch.setattr(measure_mod, "_measure_chunk", real)
    segment_measure(run, model=model, stream=True, scheduler="threads", num_workers=2)
    assert_same_as_two_pass(run, two_pass)


# --------------------------------------------------------------------------- choosing


def test_auto_streams_only_when_the_model_is_on_a_gpu(
    template: Path,
    tmp_path: Path,
    model: Segmenter,
    two_pass: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert pipeline._wants_stream("auto", model) is False  # the model is on the CPU
    assert pipeline._wants_stream(True, model) is True
    monkeypatch.setattr(segment_mod, "inference_device", lambda model=None, **kw: "cuda")
    assert pipeline._wants_stream("auto", model) is True
    assert pipeline._wants_stream(False, model) is False
    path = tmp_path / "gpu.zarr"
    shutil.copytree(template, path)
    calls: list[tuple[str, int, int]] = []
    segment_measure(path, model=model, scheduler="synchronous", progress=_record(calls))
    stages = [stage for stage, _, _ in calls]
    assert stages != sorted(stages, key=["segment", "measure"].index)  # interleaved
    assert_same_as_two_pass(path, two_pass)


@pytest.mark.gpu
def test_auto_streams_on_the_gpu_and_equals_two_pass(template: Path, tmp_path: Path) -> None:
    gpu = Segmenter.from_checkpoint(None, settings=EngineSettings(device="cuda"))
    paths = {}
    orders = {}
    for mode in ("two_pass", "auto"):
        paths[mode] = tmp_path / f"{mode}.zarr"
        shutil.copytree(template, paths[mode])
        calls: list[tuple[str, int, int]] = []
        segment_measure(
            paths[mode],
            model=gpu,
            stream=False if mode == "two_pass" else "auto",
            scheduler="threads",
            progress=_record(calls),
        )
        orders[mode] = [stage for stage, _, _ in calls]
    assert orders["two_pass"] == sorted(orders["two_pass"], key=["segment", "measure"].index)
    assert orders["auto"] != sorted(orders["auto"], key=["segment", "measure"].index)
    reference = {
        "psd": xr.open_zarr(str(paths["two_pass"]), group="psd").load(),
        "particles": read_table(paths["two_pass"], "particles"),
        "mask": np.asarray(zarr.open_group(str(paths["two_pass"]), mode="r")["mask"][:]),
    }
    assert_same_as_two_pass(paths["auto"], reference)


def test_stream_option_is_checked(run: Path) -> None:
    with pytest.raises(ConfigError, match="stream"):
        segment_measure(run, stream="yes")  # type: ignore[arg-type]
    assert "mask" not in zarr.open_group(str(run), mode="r")
