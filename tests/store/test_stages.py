"""The stage runner: nothing is lost (the data-loss cases of issue 29, each reproduced)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.demo import run_demo
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.importing import import_run
from crystalseg.measure import MeasureSettings, measure_run
from crystalseg.store import (
    begin_stage,
    create_array,
    open_run,
    read_table,
    recover_stages,
    stage_info,
)
from crystalseg.store.stages import NEXT_GROUP, OLD_GROUP, recover_replaced_store


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_importing_a_store_onto_itself_is_refused(measured_run: Path, digest) -> None:
    before = digest(measured_run)
    for source in (measured_run / "image", measured_run):
        result = _invoke("import", source, measured_run, "--overwrite", "--pixel-size", "0.65")
        assert result.exit_code == 1, result.output
        assert "lies inside the destination" in result.output
    assert digest(measured_run) == before  # frames, mask, psd, particles, truth: all kept
    with pytest.raises(ConfigError, match="lies inside the destination"):
        import_run(measured_run / "image", measured_run, overwrite=True)


def test_importing_a_plain_zarr_onto_itself_is_refused(tmp_path: Path, digest) -> None:
    raw = tmp_path / "raw.zarr"
    zarr.create_array(str(raw), shape=(3, 8, 8), dtype="uint8", chunks=(1, 8, 8))[:] = 7
    before = digest(raw)
    result = _invoke("import", raw, raw, "--overwrite")
    assert result.exit_code == 1 and "lies inside the destination" in result.output
    assert digest(raw) == before


def test_overwrite_never_replaces_a_zarr_that_is_not_a_run_store(tmp_path: Path, digest) -> None:
    other = tmp_path / "other.zarr"
    zarr.create_array(str(other), shape=(2, 4, 4), dtype="uint16", chunks=(1, 4, 4))[:] = 9
    tif = tmp_path / "x.tif"
    tifffile.imwrite(tif, np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
    before = digest(other)
    result = _invoke("import", tif, other, "--overwrite", "--interval", "1")
    assert result.exit_code == 1
    assert "a zarr store that is not a crystalseg run" in result.output
    assert digest(other) == before


def test_overwrite_replaces_a_run_store_only_when_the_new_one_is_complete(
    measured_run: Path, tmp_path: Path
) -> None:
    tif = tmp_path / "x.tif"
    tifffile.imwrite(tif, np.full((3, 16, 16), 5, np.uint8), photometric="minisblack")
    result = _invoke("import", tif, measured_run, "--overwrite", "--interval", "2")
    assert result.exit_code == 0, result.output
    ds = open_run(measured_run)
    assert ds["image"].shape == (3, 16, 16) and int(ds["image"].max()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr", "x.tif"]  # nothing beside


def test_a_failed_remeasure_keeps_the_previous_results(measured_run: Path, digest) -> None:
    old_psd = xr.open_zarr(str(measured_run), group="psd").load()
    old_particles = read_table(measured_run, "particles")
    other = MeasureSettings(edge="keep")

    class Stop(Exception):
        pass

    def stop_after_first_chunk(stage: str, done: int, total: int) -> None:
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        measure_run(
            measured_run,
            settings=other,
            overwrite=True,
            scheduler="synchronous",
            progress=stop_after_first_chunk,
        )
    # the previous results are still the results, whole and readable
    stages = stage_info(measured_run)
    assert stages["measure"]["status"] == "finished"
    assert stages["measure.next"]["status"] == "running" and stages["measure.next"]["frames_done"]
    xr.testing.assert_identical(xr.open_zarr(str(measured_run), group="psd").load(), old_psd)
    assert read_table(measured_run, "particles").equals(old_particles)

    # the same command again resumes the replacement; then the new results are in place
    measure_run(measured_run, settings=other, scheduler="synchronous")
    stages = stage_info(measured_run)
    assert "measure.next" not in stages and stages["measure"]["status"] == "finished"
    new_psd = xr.open_zarr(str(measured_run), group="psd")
    assert new_psd.attrs["edge_treatment"] == "keep"
    root = zarr.open_group(str(measured_run), mode="r")
    assert NEXT_GROUP not in root and OLD_GROUP not in root and "_measure" not in root
    assert "measure.next" not in root["_progress"]

    # an interrupted replacement that is not resumed (other settings asked) is dropped
    with pytest.raises(Stop):
        measure_run(
            measured_run,
            settings=MeasureSettings(min_area_px=20),
            overwrite=True,
            scheduler="synchronous",
            progress=stop_after_first_chunk,
        )
    assert "measure.next" in stage_info(measured_run)
    measure_run(measured_run, settings=other, scheduler="synchronous")  # the finished ones
    assert "measure.next" not in stage_info(measured_run)
    assert not (measured_run / NEXT_GROUP).exists()

    # equal to measuring from nothing with those settings
    fresh = measured_run.with_name("fresh.zarr")
    import shutil

    shutil.copytree(measured_run, fresh)
    measure_run(fresh, settings=other, overwrite=True, scheduler="synchronous")
    xr.testing.assert_identical(
        xr.open_zarr(str(fresh), group="psd").load().drop_attrs(), new_psd.load().drop_attrs()
    )
    assert read_table(fresh, "particles").equals(read_table(measured_run, "particles"))


def test_an_interrupted_swap_is_completed_by_the_next_writer(measured_run: Path) -> None:
    """Killed between the renames of a swap: psd already new, particles still old."""
    stage = begin_stage(
        measured_run,
        "measure",
        settings={"x": 1},
        n_frames=4,
        frames_per_chunk=2,
        replace=True,
        outputs=("psd", "particles"),
    )
    for name, value in (("psd/v", 1), ("particles/v", 2)):
        create_array(
            measured_run, stage.output(name), dims=("t",), shape=(1,), dtype="int8", chunks=(1,)
        )[:] = value
    stage.mark_done(0, 4)
    from crystalseg.store.stages import _update_stage

    _update_stage(measured_run, "measure.next", status="swapping")
    (measured_run / OLD_GROUP / "measure").mkdir(parents=True)
    (measured_run / "psd").rename(measured_run / OLD_GROUP / "measure" / "psd")
    (measured_run / NEXT_GROUP / "measure" / "psd").rename(measured_run / "psd")

    recover_stages(measured_run)
    root = zarr.open_group(str(measured_run), mode="r")
    assert int(root["psd/v"][0]) == 1 and int(root["particles/v"][0]) == 2
    assert stage_info(measured_run)["measure"]["settings"] == {"x": 1}
    assert NEXT_GROUP not in root and OLD_GROUP not in root


def test_an_interrupted_swap_of_whole_stores_is_completed(measured_run: Path) -> None:
    new = measured_run.with_name("r.zarr.crystalseg-new")
    old = measured_run.with_name("r.zarr.crystalseg-old")
    import shutil

    shutil.copytree(measured_run, new)
    json_path = new / "zarr.json"
    meta = json.loads(json_path.read_text())
    meta["attributes"]["marker"] = "new"
    json_path.write_text(json.dumps(meta))
    measured_run.rename(old)  # killed between the two renames
    recover_replaced_store(measured_run)
    assert json.loads((measured_run / "zarr.json").read_text())["attributes"]["marker"] == "new"
    assert not old.exists() and not new.exists()


def test_the_demo_never_replaces_a_run_it_did_not_make(measured_run: Path, digest) -> None:
    folder = measured_run.parent
    users = measured_run.rename(folder / "run.zarr")  # the name the demo writes
    before = digest(users)
    with pytest.raises(StageStateError, match="was not made by the demo"):
        run_demo(folder, overwrite=True)
    assert digest(users) == before
