"""measure_run on real run stores: truth agreement, chunking, distributed, resume, export."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from crystalseg import store as store_module
from crystalseg.dims import FRAME_DIMS
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.export import export_particles
from crystalseg.measure import (
    EXCLUDED_REASONS,
    MeasureSettings,
    measure_mask_frame,
    measure_run,
    summarize_measurement,
)
from crystalseg.measure.distributions import weighted_quantile
from crystalseg.measure.results import PARTICLE_COLUMNS
from crystalseg.store import begin_stage, create_array, read_table, stage_info
from crystalseg.synth import SynthConfig, synthesize_run

FRAMES = 8
FPC = 2


def truth_mask(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:])


@pytest.fixture(scope="module")
def mixed_template(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("template") / "mixed.zarr"
    cfg = SynthConfig(frames=FRAMES, height=192, width=192, seed=7, scenario="mixed")
    synthesize_run(path, cfg, frames_per_chunk=FPC)
    store_mask(path, truth_mask(path))
    return path


@pytest.fixture
def mixed_run(mixed_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(mixed_template, path)
    return path


@pytest.fixture(scope="module")
def reference(mixed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """psd and particles of the mixed run measured in one process, one chunk at a time."""
    path = tmp_path_factory.mktemp("reference") / "run.zarr"
    shutil.copytree(mixed_template, path)
    psd = measure_run(path, scheduler="synchronous").load()
    return {"psd": psd, "particles": read_table(path, "particles")}


def assert_same_results(path: Path, reference: dict) -> None:
    psd = xr.open_zarr(str(path), group="psd").load()
    xr.testing.assert_identical(psd.drop_attrs(), reference["psd"].drop_attrs())
    assert psd.attrs["measure_settings"] == reference["psd"].attrs["measure_settings"]
    pd.testing.assert_frame_equal(read_table(path, "particles"), reference["particles"])


# --------------------------------------------------------------------------- accuracy


def test_clear_run_matches_truth_per_frame(tmp_path: Path, store_mask) -> None:
    path = tmp_path / "clear.zarr"
    cfg = SynthConfig(frames=5, height=384, width=384, seed=101, scenario="clear")
    synthesize_run(path, cfg, frames_per_chunk=2)
    store_mask(path, truth_mask(path))
    settings = MeasureSettings()
    psd = measure_run(path, settings=settings, scheduler="threads").load()
    truth = read_table(path, "truth/crystals")
    truth = truth[(truth["area_px"] >= settings.min_area_px) & ~truth["touches_edge"]]
    particles = read_table(path, "particles")
    assert psd.attrs["edge_treatment"] == "exclude"
    for t in range(cfg.frames):
        true_t = truth[truth["frame"] == t]
        assert len(true_t) >= 3
        count = int(psd["count_kept"][t])
        assert abs(count - len(true_t)) <= 0.1 * len(true_t)
        d50_true = weighted_quantile(true_t["ecd_um"].to_numpy(), 0.5)[0]
        assert float(psd["d50_number"][t]) == pytest.approx(d50_true, rel=0.05)
        # Edge exclusion agrees with the truth's touches_edge flag.
        rows = particles[particles["frame"] == t]
        assert (rows["excluded_reason"] == "edge").tolist() == rows["touches_edge"].tolist()


def test_measure_mask_frame_edge_exclusion_and_weights() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[0:10, 20:30] = 1  # touches the top edge
    mask[30:40, 30:50] = 1
    settings = MeasureSettings(min_area_px=4, bins=(0.5, 500.0, 30))
    table, dist = measure_mask_frame(mask, None, settings=settings, pixel_size_um=2.0)
    assert table["kept"].tolist() == [False, True]
    assert table["excluded_code"].tolist() == [1, 0]
    assert dist["count_kept"][1] == 1
    assert dist["count_edge"][1] == 1 and dist["count_detected"][1] == 2
    assert dist["d50_number"][1] == pytest.approx(math.sqrt(4 * 200 * 4.0 / math.pi))
    # 1 particle on 64 x 64 px of 2 µm: 1 / (0.128 mm)^2.
    assert dist["number_density"][1] == pytest.approx(1 / 0.128**2)

    ml = MeasureSettings(min_area_px=4, edge="miles-lantuejoul", bins=(0.5, 500.0, 30))
    table, dist = measure_mask_frame(mask, None, settings=ml)
    expected = 64 * 64 / ((64 - 10) * (64 - 20))
    assert table["weight"].tolist() == pytest.approx([0.0, expected])
    assert dist["number"][1] == pytest.approx(expected)

    keep = MeasureSettings(min_area_px=4, edge="keep", bins=(0.5, 500.0, 30))
    table, dist = measure_mask_frame(mask, None, settings=keep)
    assert table["kept"].all() and dist["count_kept"][1] == 2


def test_low_confidence_particles_are_excluded_only_with_a_probability() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:20, 10:20] = 1  # confident crystal
    mask[40:44, 40:50] = 1  # a doubtful speck
    prob = np.zeros((64, 64), dtype=np.uint8)
    prob[10:20, 10:20] = 250
    prob[40:44, 40:50] = 178  # 0.70
    settings = MeasureSettings(min_area_px=4, min_confidence=0.8)
    table, dist = measure_mask_frame(mask, None, probability=prob, settings=settings)
    assert table["confidence"].tolist() == pytest.approx([250 / 255, 178 / 255])
    assert table["kept"].tolist() == [True, False]
    assert table["excluded_code"].tolist() == [0, EXCLUDED_REASONS.index("low_confidence")]
    assert dist["count_kept"][1] == 1 and dist["count_detected"][1] == 2
    assert dist["d50_number"][1] == pytest.approx(math.sqrt(4 * 100 / math.pi))
    # A lower bar keeps both; without a probability (a mask made elsewhere) nothing is
    # filtered and the confidence is unknown.
    low = MeasureSettings(min_area_px=4, min_confidence=0.6)
    assert measure_mask_frame(mask, None, probability=prob, settings=low)[0]["kept"].all()
    table, _ = measure_mask_frame(mask, None, settings=settings)
    assert table["kept"].all() and table["confidence"].isna().all()


def test_a_stored_probability_feeds_the_confidence_filter(mixed_run: Path) -> None:
    mask = zarr.open_group(str(mixed_run), mode="r")["mask"][:]
    prob = np.where(mask > 0, 255, 0).astype(np.uint8)
    prob[1::2] = np.where(mask[1::2] > 0, 100, 0)  # every odd frame doubtful
    arr = create_array(
        mixed_run,
        "probability",
        dims=FRAME_DIMS,
        shape=mask.shape,
        dtype="uint8",
        chunks=(FPC, *mask.shape[1:]),
    )
    arr[:] = prob
    measure_run(mixed_run, scheduler="synchronous", overwrite=True)
    particles = read_table(mixed_run, "particles")
    odd = particles["frame"] % 2 == 1
    assert particles.loc[~odd, "confidence"].eq(1.0).all()
    assert particles.loc[odd, "confidence"].eq(100 / 255).all()
    inner = ~particles["touches_edge"]
    assert (particles.loc[odd & inner, "excluded_reason"] == "low_confidence").all()
    assert particles.loc[~odd & inner, "kept"].all()


# --------------------------------------------------------------------------- execution


def test_chunked_result_equals_single_chunk(mixed_run: Path, reference: dict) -> None:
    measure_run(mixed_run, scheduler="threads", num_workers=2, frames_per_chunk=FRAMES)
    assert zarr.open_group(str(mixed_run), mode="r")["psd/q0"].chunks[0] == FRAMES
    assert_same_results(mixed_run, reference)
    # The reference ran in chunks of FPC frames: several chunks, one result.
    assert reference["psd"]["q0"].encoding["chunks"][0] == FPC


def test_distributed_result_equals_local(mixed_run: Path, reference: dict) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        measure_run(mixed_run, client=client)
    assert_same_results(mixed_run, reference)


def test_resume_after_interruption(mixed_run: Path, reference: dict) -> None:
    calls: list[tuple[str, int, int]] = []

    class Stop(Exception):
        pass

    def stop_after_first_chunk(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        measure_run(mixed_run, scheduler="synchronous", progress=stop_after_first_chunk)
    info = stage_info(mixed_run)["measure"]
    assert info["status"] == "running"
    assert info["frames_done"] == FPC
    assert "particles" not in zarr.open_group(str(mixed_run), mode="r")

    calls.clear()
    measure_run(mixed_run, scheduler="threads", progress=lambda *a: calls.append(a))
    assert calls[0] == ("measure", FPC, FRAMES)  # the done chunk is not measured again
    assert calls[-1] == ("measure", FRAMES, FRAMES)
    assert len(calls) == FRAMES // FPC  # start + the three missing chunks
    assert stage_info(mixed_run)["measure"]["status"] == "finished"
    assert "_measure" not in zarr.open_group(str(mixed_run), mode="r")
    assert_same_results(mixed_run, reference)


def test_same_settings_do_nothing_other_settings_need_overwrite(mixed_run: Path) -> None:
    measure_run(mixed_run, scheduler="synchronous")
    calls: list[tuple] = []
    measure_run(mixed_run, scheduler="synchronous", progress=lambda *a: calls.append(a))
    assert calls == [("measure", FRAMES, FRAMES)]
    other = MeasureSettings(edge="keep")
    with pytest.raises(StageStateError, match="overwrite"):
        measure_run(mixed_run, settings=other, scheduler="synchronous")
    psd = measure_run(mixed_run, settings=other, overwrite=True, scheduler="synchronous")
    assert psd.attrs["edge_treatment"] == "keep"
    # the mask was made elsewhere (no probability): the confidence filter is recorded off
    applied = replace(other, min_confidence=None).to_dict()
    assert json.loads(psd.attrs["measure_settings"]) == applied
    assert stage_info(mixed_run)["measure"]["settings"]["measure"] == applied
    particles = read_table(mixed_run, "particles")
    assert particles["kept"].all()
    assert int(psd["count_edge"].sum()) > 0


def test_a_run_without_a_finished_mask_is_refused_with_the_way_on(
    mixed_template: Path, tmp_path: Path
) -> None:
    """measure_run only measures; segment_and_measure (tests/measure/test_stream.py)
    segments first."""
    path = tmp_path / "run.zarr"
    shutil.copytree(mixed_template, path)
    root = zarr.open_group(str(path), mode="r+")
    del root["mask"]
    # A leftover unfinished segment stage must not be taken for a finished mask.
    begin_stage(path, "segment", settings={"x": 1}, n_frames=FRAMES, frames_per_chunk=FPC)
    with pytest.raises(StageStateError, match=r"no finished mask.*'crystalseg segment "):
        measure_run(path, scheduler="synchronous")
    assert "measure" not in stage_info(path)


def test_empty_frames(mixed_run: Path, store_mask) -> None:
    mask = truth_mask(mixed_run)
    mask[:3] = 0
    store_mask(mixed_run, mask)
    psd = measure_run(mixed_run, scheduler="synchronous").load()
    assert psd["count_kept"][:3].values.tolist() == [0, 0, 0]
    assert psd["count_detected"][:3].values.tolist() == [0, 0, 0]
    assert np.isnan(psd["d50_number"][:3]).all()
    assert (psd["q0"][:3] == 0).all()
    assert (psd["count_kept"][3:] > 0).all()
    particles = read_table(mixed_run, "particles")
    assert particles["frame"].min() == 3
    assert list(particles.columns) == list(PARTICLE_COLUMNS)


def test_all_frames_empty(mixed_run: Path, tmp_path: Path, store_mask) -> None:
    store_mask(mixed_run, np.zeros_like(truth_mask(mixed_run)))
    psd = measure_run(mixed_run, scheduler="synchronous")
    assert int(psd["count_detected"].sum()) == 0
    assert len(read_table(mixed_run, "particles")) == 0
    summary = summarize_measurement(mixed_run)
    assert summary["particles"] == 0 and math.isnan(summary["d50_start"])
    out = export_particles(mixed_run, tmp_path / "empty.csv")
    header = out.read_text(encoding="utf-8-sig").strip().split(",")
    assert header[:5] == ["frame", "time_s", "label", "area_um2", "ecd_um"]
    assert len(header) == len(PARTICLE_COLUMNS) - 1  # equivalent_diameter_area left out


# --------------------------------------------------------------------------- outputs


def test_units_follow_the_pixel_size(mixed_run: Path, reference: dict) -> None:
    pixel = zarr.open_group(str(mixed_run), mode="r").attrs["pixel_size_um"]
    psd_um = reference["psd"]
    assert psd_um.attrs["pixel_size_um"] == pixel
    assert psd_um["d50_number"].attrs["units"] == "um"
    assert psd_um["size_bin"].attrs["units"] == "um"
    assert psd_um["number_density"].attrs["units"] == "mm-2"
    assert psd_um["q0"].attrs["long_name"]
    # Units of the particle columns live on their arrays.
    measure_run(mixed_run, scheduler="synchronous")
    group = zarr.open_group(str(mixed_run), mode="r", use_consolidated=False)
    assert group["particles/area"].attrs["units"] == "um2"
    assert group["particles/ecd"].attrs["units"] == "um"

    # The same mask without a calibration: sizes in px, µm values / pixel size.
    zarr.open_group(str(mixed_run), mode="r+").attrs["pixel_size_um"] = None
    psd_px = measure_run(mixed_run, scheduler="synchronous", overwrite=True).load()
    assert psd_px["d50_number"].attrs["units"] == "px"
    assert group["particles/area"].attrs["units"] == "px2"
    assert np.isnan(psd_px["number_density"]).all()
    px = read_table(mixed_run, "particles")
    um = reference["particles"]
    np.testing.assert_allclose(px["area"] * pixel**2, um["area"], rtol=1e-12)
    np.testing.assert_allclose(px["ecd"] * pixel, um["ecd"], rtol=1e-12)
    # Bins are in the size unit (1..1000 px now), so compare the quantiles themselves.
    np.testing.assert_allclose(
        psd_px["d50_number"] * pixel, psd_um["d50_number"], rtol=1e-12, equal_nan=True
    )


def test_psd_is_self_describing(reference: dict) -> None:
    psd = reference["psd"]
    assert psd["q0"].dims == ("time", "size_bin")
    assert psd["length_width"].dims == ("time", "length_bin", "width_bin")
    assert psd.sizes["size_bin"] == 60
    for name, var in psd.data_vars.items():
        assert "units" in var.attrs and "long_name" in var.attrs, name
    edges = MeasureSettings().bin_edges()
    np.testing.assert_allclose(psd["size_bin_lower"], edges[:-1])
    np.testing.assert_allclose(psd["size_bin_upper"], edges[1:])
    assert psd.attrs["size_column"] == "ecd" and psd.attrs["bins"] == [1.0, 1000.0, 60]
    # q0 integrates to the fraction of counted particles inside the bins.
    dlog = np.log10(edges[1:] / edges[:-1])
    inside = (psd["q0"] * dlog).sum("size_bin")
    has = psd["count_kept"] > 0
    np.testing.assert_allclose(inside[has], 1 - psd["fraction_outside_number"][has], rtol=1e-9)


def test_summary(mixed_run: Path) -> None:
    psd = measure_run(mixed_run, scheduler="synchronous").load()
    summary = summarize_measurement(mixed_run)
    assert summary["frames"] == FRAMES
    assert summary["particles"] == len(read_table(mixed_run, "particles"))
    assert summary["particles_counted"] == int(psd["count_kept"].sum())
    assert summary["d50_start"] == float(psd["d50_number"][0])
    assert summary["d50_end"] == float(psd["d50_number"][-1])
    assert summary["size_units"] == "um"
    assert "psd" in summary["psd"]


def test_exclusion_filters(mixed_run: Path) -> None:
    blurred = MeasureSettings(min_sharpness=1e9)
    psd = measure_run(mixed_run, settings=blurred, scheduler="synchronous")
    assert int(psd["count_kept"].sum()) == 0
    particles = read_table(mixed_run, "particles")
    reasons = set(particles["excluded_reason"])
    assert reasons == {"edge", "out_of_focus"}
    assert (particles.loc[~particles["touches_edge"], "excluded_reason"] == "out_of_focus").all()

    ml = MeasureSettings(edge="miles-lantuejoul")
    psd = measure_run(mixed_run, settings=ml, scheduler="synchronous", overwrite=True)
    particles = read_table(mixed_run, "particles")
    kept = particles[particles["kept"]]
    assert (kept["weight"] >= 1).all() and (kept["weight"] > 1).any()
    assert (psd["number"] >= psd["count_kept"]).all()


def test_settings_validate_and_round_trip() -> None:
    s = MeasureSettings(classes=["crystal"], bins=(2, 500, 40))  # type: ignore[arg-type]
    assert s.classes == ("crystal",) and s.bins == (2.0, 500.0, 40)
    assert MeasureSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    for bad in (
        {"min_area_px": 0},
        {"edge": "cut"},
        {"split": "magic"},
        {"bins": (10.0, 1.0, 5)},
        {"bins": (1.0, 10.0, 2.5)},
        {"size_column": "area"},
        {"min_sharpness": -1.0},
        {"min_confidence": 1.5},
        {"min_confidence": float("nan")},
        {"neck_ratio": 1.5},
        {"elongated_aspect_ratio": 0.5},
        {"classes": [""]},
        {"trim_boundary": "no"},
        {"join_occluded": 1},
    ):
        with pytest.raises(ConfigError):
            MeasureSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown"):
        MeasureSettings.from_dict({"colour": "red"})


def test_unknown_class_fails_early(mixed_run: Path) -> None:
    with pytest.raises(ConfigError, match="bubble"):
        measure_run(mixed_run, settings=MeasureSettings(classes=("bubble",)))


def test_process_pool_result_equals_synchronous(mixed_run: Path, reference: dict) -> None:
    measure_run(mixed_run, scheduler="processes", num_workers=2)
    assert_same_results(mixed_run, reference)


def _as_recorded_by_the_previous_release(path: Path) -> None:
    """Make the measure stage's record what the release before calibration records
    wrote: no ``calibration`` entry, and the confidence filter's value recorded even
    though the run has no probability to apply it."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = dict(group.attrs["provenance"])
    stage = dict(provenance["stages"]["measure"])
    settings = {k: v for k, v in stage["settings"].items() if k != "calibration"}
    settings["measure"] = {**settings["measure"], "min_confidence": 0.8}
    provenance["stages"] = {**provenance["stages"], "measure": {**stage, "settings": settings}}
    group.attrs["provenance"] = provenance
    store_module.consolidate(path)


def test_a_measurement_of_the_previous_release_is_kept_resumed_and_recalibrated(
    mixed_run: Path, reference: dict
) -> None:
    """Records without calibration: measure has nothing to do (no --overwrite error for
    the confidence filter it could not apply), an interrupted one resumes where it
    stopped, and calibrating marks it out of date so that measure redoes it."""
    from crystalseg.measure.run import measurement_outdated

    measure_run(mixed_run, scheduler="synchronous")
    _as_recorded_by_the_previous_release(mixed_run)
    calls: list[tuple] = []
    measure_run(mixed_run, scheduler="synchronous", progress=lambda *a: calls.append(a))
    assert calls == [("measure", FRAMES, FRAMES)]  # nothing to do

    store_module.set_calibration(mixed_run, pixel_size_um=2.0)
    assert "pixel size" in measurement_outdated(mixed_run)
    psd = measure_run(mixed_run, scheduler="synchronous")  # consolidated: no warning
    assert psd.attrs["pixel_size_um"] == 2.0 and measurement_outdated(mixed_run) is None
    store_module.set_calibration(mixed_run, pixel_size_um=2.0)  # the same: still measured
    calls.clear()
    measure_run(mixed_run, scheduler="synchronous", progress=lambda *a: calls.append(a))
    assert calls == [("measure", FRAMES, FRAMES)]


def test_an_interrupted_measurement_of_the_previous_release_resumes(
    mixed_run: Path, reference: dict
) -> None:
    class Stop(Exception):
        pass

    def stop_after_first_chunk(stage: str, done: int, total: int) -> None:
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        measure_run(mixed_run, scheduler="synchronous", progress=stop_after_first_chunk)
    _as_recorded_by_the_previous_release(mixed_run)
    calls: list[tuple] = []
    measure_run(mixed_run, scheduler="synchronous", progress=lambda *a: calls.append(a))
    assert calls[0] == ("measure", FPC, FRAMES)  # the done chunk is not measured again
    assert_same_results(mixed_run, reference)
