"""segment_run over a run store: outputs, resume, overwrite rules, dask, lazy variant."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from crystalseg.errors import StageStateError
from crystalseg.segment import (
    PROBABILITY,
    EngineSettings,
    Segmenter,
    predict_frames,
    segment_run,
)
from crystalseg.segment import engine as engine_mod
from crystalseg.store import open_run, stage_info

#: One thread: the CI machines are shared, and OpenMP threads that wait on a busy core
#: slow tiny models down a hundredfold.
SETTINGS = {"device": "cpu", "backend": "torch", "threads": 1}


class Interrupt(Exception):
    pass


@pytest.fixture
def frames(frames_factory):
    return frames_factory(10, 70, 90, seed=11)


@pytest.fixture
def run(tmp_path, frames, run_factory):
    return run_factory(tmp_path / "run.zarr", frames, frames_per_chunk=3)


def _count_frames(monkeypatch) -> list[int]:
    """Record how many frames every Segmenter.predict call gets."""
    seen: list[int] = []
    real = Segmenter.predict

    def predict(self, frames, **kw):
        seen.append(len(frames))
        return real(self, frames, **kw)

    monkeypatch.setattr(Segmenter, "predict", predict)
    return seen


def test_writes_mask_equal_to_engine(run, frames, checkpoint) -> None:
    calls: list[tuple[int, int]] = []
    mask = segment_run(run, checkpoint, **SETTINGS, progress=lambda d, n: calls.append((d, n)))
    assert isinstance(mask, xr.DataArray)
    assert mask.dims == ("time", "y", "x") and mask.dtype == np.uint8
    want = Segmenter.from_checkpoint(checkpoint, settings=EngineSettings(**SETTINGS)).predict(
        frames
    )
    np.testing.assert_array_equal(mask.values, want)
    assert calls == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]
    attrs = mask.attrs
    assert attrs["flag_values"] == [0, 1] and attrs["flag_meanings"] == "background crystal"
    assert len(attrs["model_sha256"]) == 64 and attrs["model_path"] == str(checkpoint)
    info = stage_info(run)["segment"]
    assert info["status"] == "finished"
    assert info["engine"]["backend"] == "torch"
    # the mask is chunked like the image, so parallel writers never share a chunk
    store = zarr.open_group(str(run), mode="r")
    assert store["mask"].chunks == store["image"].chunks
    assert PROBABILITY in store  # stored by default: measure's confidence filter needs it


def test_resume_after_interruption_gives_identical_mask(
    tmp_path, frames, run_factory, checkpoint, monkeypatch
) -> None:
    whole = run_factory(tmp_path / "whole.zarr", frames)
    broken = run_factory(tmp_path / "broken.zarr", frames)
    expected = segment_run(whole, checkpoint, **SETTINGS).values

    def stop_after_first_chunk(done: int, total: int) -> None:
        if done >= 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        segment_run(broken, checkpoint, **SETTINGS, progress=stop_after_first_chunk)
    info = stage_info(broken)["segment"]
    # the chunk being written when the run stopped may have landed too
    assert info["status"] == "running" and info["frames_done"] in (3, 6)
    open_run(broken)  # still a readable store
    seen = _count_frames(monkeypatch)
    mask = segment_run(broken, checkpoint, **SETTINGS)
    assert sum(seen) == 10 - info["frames_done"]  # finished chunks were not redone
    np.testing.assert_array_equal(mask.values, expected)
    assert stage_info(broken)["segment"]["status"] == "finished"


def test_overwrite_rules(run, checkpoint, other_checkpoint, monkeypatch) -> None:
    first = segment_run(run, checkpoint, **SETTINGS).values
    # same model and settings again: nothing to do
    seen = _count_frames(monkeypatch)
    again = segment_run(run, checkpoint, **SETTINGS, progress=lambda d, n: seen.append(-d))
    np.testing.assert_array_equal(again.values, first)
    assert seen == [-10]
    # another model needs --overwrite, and the message names the model that made the mask
    with pytest.raises(StageStateError, match=r"mask from model [0-9a-f]{12}.*--overwrite"):
        segment_run(run, other_checkpoint, **SETTINGS)
    # other settings of the same model need it too
    with pytest.raises(StageStateError, match=r"tile_size.*--overwrite"):
        segment_run(run, checkpoint, **SETTINGS, tile_size=64)
    np.testing.assert_array_equal(open_run(run)["mask"].values, first)  # untouched
    replaced = segment_run(run, other_checkpoint, **SETTINGS, overwrite=True)
    assert replaced.attrs["model_path"] == str(other_checkpoint)
    assert not np.array_equal(replaced.values, first)


def test_save_probability(run, frames, checkpoint) -> None:
    mask = segment_run(run, checkpoint, **SETTINGS)  # stored by default
    ds = open_run(run)
    raw = zarr.open_group(str(run), mode="r")[PROBABILITY][:]
    assert raw.dtype == np.uint8
    assert ds[PROBABILITY].dtype == np.uint8  # read as stored: no float64 copy of it
    np.testing.assert_array_equal(ds[PROBABILITY].values, raw)
    sure = (raw < 127) | (raw > 128)
    np.testing.assert_array_equal(mask.values[sure], (raw > 128)[sure])
    # a run that has the probability also satisfies one that does not ask for it
    again = segment_run(run, checkpoint, **SETTINGS, save_probability=False)
    np.testing.assert_array_equal(again.values, mask.values)
    assert PROBABILITY in open_run(run)


def test_probability_later_needs_overwrite(run, checkpoint) -> None:
    segment_run(run, checkpoint, **SETTINGS, save_probability=False)
    assert PROBABILITY not in open_run(run)
    segment_run(run, checkpoint, **SETTINGS)  # the default keeps that mask: nothing to do
    assert PROBABILITY not in open_run(run)
    with pytest.raises(StageStateError, match=r"save_probability.*--overwrite"):
        segment_run(run, checkpoint, **SETTINGS, save_probability=True)
    segment_run(run, checkpoint, **SETTINGS, save_probability=True, overwrite=True)
    assert PROBABILITY in open_run(run)


def test_distributed_two_workers_identical(tmp_path, frames, run_factory, checkpoint, monkeypatch):
    distributed = pytest.importorskip("distributed")
    local = segment_run(run_factory(tmp_path / "local.zarr", frames), checkpoint, **SETTINGS)
    engine_mod.clear_segmenter_cache()
    loads: list[int] = []
    real = Segmenter.from_checkpoint.__func__

    def counted(cls, *a, **k):
        loads.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(Segmenter, "from_checkpoint", classmethod(counted))
    target = run_factory(tmp_path / "dist.zarr", frames)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        progress: list[int] = []
        mask = segment_run(
            target, checkpoint, **SETTINGS, client=client, progress=lambda d, n: progress.append(d)
        )
    np.testing.assert_array_equal(mask.values, local.values)
    assert progress[-1] == 10 and sorted(progress) == progress
    assert len(loads) == 1  # one process: the model was loaded once and shared
    info = stage_info(target)["segment"]
    assert info["status"] == "finished"
    assert "scheduler" in info["engine"]  # the chunks ran on the cluster, not here


def test_predict_frames_is_lazy_and_equal(run, checkpoint) -> None:
    ds = open_run(run)
    lazy = predict_frames(ds["image"].data, checkpoint, **SETTINGS)
    assert lazy.dtype == np.uint8 and lazy.chunks == ds["image"].data.chunks
    direct = segment_run(run, checkpoint, **SETTINGS)
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), direct.values)
    prob = predict_frames(ds["image"].data, checkpoint, output="probability", **SETTINGS)
    assert prob.compute().dtype == np.uint8


def test_synthetic_run_segments(tmp_path, checkpoint) -> None:
    synth = pytest.importorskip("crystalseg.synth")
    path = tmp_path / "synth.zarr"
    synth.synthesize_run(
        path, synth.SynthConfig(frames=4, height=96, width=128, seed=1, dtype="uint16")
    )
    mask = segment_run(path, checkpoint, **SETTINGS)
    assert mask.shape == (4, 96, 128) and mask.dtype == np.uint8


@pytest.mark.slow
def test_distributed_worker_processes_identical(tmp_path, frames, run_factory, checkpoint):
    """Real worker processes: the engine travels as a checkpoint reference and is rebuilt."""
    distributed = pytest.importorskip("distributed")
    local = segment_run(run_factory(tmp_path / "local.zarr", frames), checkpoint, **SETTINGS)
    target = run_factory(tmp_path / "dist.zarr", frames)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        mask = segment_run(target, checkpoint, **SETTINGS, client=cluster.scheduler_address)
        lazy = predict_frames(open_run(target)["image"].data, checkpoint, **SETTINGS)
        np.testing.assert_array_equal(client.compute(lazy).result(), local.values)
    np.testing.assert_array_equal(mask.values, local.values)


def test_default_model_missing_is_actionable(run, tmp_path, monkeypatch) -> None:
    import crystalseg.models.checkpoint as ckpt
    from crystalseg.errors import CheckpointError

    monkeypatch.setattr(ckpt, "_DEFAULT_DIR", tmp_path / "no-model")  # a build without one
    with pytest.raises(CheckpointError, match="--model"):
        segment_run(run, **SETTINGS)
    assert "mask" not in zarr.open_group(str(run), mode="r")


def test_resize_is_a_setting_of_the_mask(run, checkpoint) -> None:
    """A mask made on resized frames keeps the frame size and is not taken for a plain one."""
    plain = segment_run(run, checkpoint, **SETTINGS).values
    with pytest.raises(StageStateError, match=r"other settings \(resize\); pass --overwrite"):
        segment_run(run, checkpoint, **SETTINGS, resize=0.5)
    half = segment_run(run, checkpoint, **SETTINGS, resize=0.5, overwrite=True)
    assert stage_info(run)["segment"]["settings"]["resize"] == 0.5
    assert half.shape == plain.shape and 0 < (half.values == plain).mean() < 1


def test_tta_is_a_setting_of_the_mask(run, checkpoint) -> None:
    """A mask made with test-time augmentation is not taken for a plain one, and back."""
    plain = segment_run(run, checkpoint, **SETTINGS).values
    with pytest.raises(StageStateError, match=r"other settings \(tta\); pass --overwrite"):
        segment_run(run, checkpoint, **SETTINGS, tta=True)
    tta = segment_run(run, checkpoint, **SETTINGS, tta=True, overwrite=True)
    assert stage_info(run)["segment"]["settings"]["tta"] is True
    assert tta.shape == plain.shape and 0 < (tta.values == plain).mean() < 1
    np.testing.assert_array_equal(segment_run(run, checkpoint, **SETTINGS, tta=True).values, tta)
    with pytest.raises(StageStateError, match=r"other settings \(tta\); pass --overwrite"):
        segment_run(run, checkpoint, **SETTINGS)


def test_a_mask_without_probability_is_measured_unfiltered_with_a_warning(run, checkpoint) -> None:
    """measure's default confidence filter needs the probability: a model's mask made
    without it is measured with the filter recorded off and a warning that says how to
    have it; segmenting again (which stores it by default) brings the filter back."""
    from crystalseg.errors import CrystalsegWarning
    from crystalseg.measure import MeasureSettings, measure_run

    segment_run(run, checkpoint, **SETTINGS, save_probability=False)
    with pytest.warns(CrystalsegWarning, match=r"confidence filter .* not applied.*--overwrite"):
        psd = measure_run(run, scheduler="synchronous")
    recorded = stage_info(run)["measure"]["settings"]["measure"]
    assert recorded["min_confidence"] is None
    assert '"min_confidence": null' in psd.attrs["measure_settings"]
    with pytest.warns(CrystalsegWarning):  # the same settings again: nothing to do
        measure_run(run, scheduler="synchronous")
    segment_run(run, checkpoint, **SETTINGS, overwrite=True)
    assert PROBABILITY in open_run(run)
    measure_run(run, scheduler="synchronous", overwrite=True)  # no warning now
    recorded = stage_info(run)["measure"]["settings"]["measure"]
    assert recorded["min_confidence"] == MeasureSettings().min_confidence == 0.8


def test_results_of_a_mask_made_again_are_out_of_date_until_measured(run, checkpoint) -> None:
    """After segment --overwrite the psd and particles describe the old mask: info says
    so, reading them warns, the overlay refuses; measure measures the new mask."""
    from crystalseg.cli.base import run_info
    from crystalseg.errors import CrystalsegWarning
    from crystalseg.measure import measure_run
    from crystalseg.measure.run import measured_mask_changed, measurement_outdated
    from crystalseg.summary import format_run_info
    from crystalseg.viz import open_results, overlay_image

    segment_run(run, checkpoint, **SETTINGS)
    measure_run(run, scheduler="synchronous")
    assert not measured_mask_changed(run) and measurement_outdated(run) is None
    open_results(run)  # no warning (warnings are errors here)
    segment_run(run, checkpoint, **SETTINGS, overwrite=True)
    assert measured_mask_changed(run)
    assert "OUT OF DATE: the mask was made again" in format_run_info(run_info(run))
    with pytest.warns(CrystalsegWarning, match="out of date: the mask.*crystalseg measure"):
        open_results(run)
    with pytest.raises(StageStateError, match="made again"):
        overlay_image(run, 0)
    measure_run(run, scheduler="synchronous")  # the new mask: measured without --overwrite
    assert not measured_mask_changed(run)
    assert "OUT OF DATE" not in format_run_info(run_info(run))
