"""Run stores written by the previous release open, resume and re-measure.

The stores in ``tests/data/previous_release`` were written by the release before the
stage runner, the lock and the OME-Zarr metadata (see the README there). The tests copy
them, so the committed stores stay as that release wrote them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.store import describe_run, read_table

PREVIOUS = Path(__file__).parents[1] / "data" / "previous_release"


def crystalseg(*args: str) -> str:
    result = CliRunner().invoke(cli, ["-q", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    for name in ("measured.zarr", "interrupted.zarr"):
        shutil.copytree(PREVIOUS / name, tmp_path / name)
    return tmp_path


def test_a_measured_store_of_the_previous_release_opens_as_measured(stores: Path) -> None:
    info = describe_run(stores / "measured.zarr")
    assert info["frames"] == 4
    text = crystalseg("info", str(stores / "measured.zarr"))
    assert "measure      finished" in text
    table = read_table(stores / "measured.zarr", "particles")
    assert len(table) > 0
    assert set(table["frame"]) <= {0, 1, 2, 3}


def test_an_interrupted_segmentation_of_the_previous_release_resumes_to_the_same_mask(
    stores: Path,
) -> None:
    run = stores / "interrupted.zarr"
    assert "INCOMPLETE" in crystalseg("info", str(run))
    crystalseg("segment", str(run))
    assert "segment      finished" in crystalseg("info", str(run))
    resumed = zarr.open_array(run / "mask", mode="r")[:]
    # the same frames segmented whole by that release, with the same bundled model
    whole = zarr.open_array(stores / "measured.zarr" / "mask", mode="r")[:]
    np.testing.assert_array_equal(resumed, whole)


def test_a_store_of_the_previous_release_re_measures_to_the_same_particles(
    stores: Path,
) -> None:
    run = stores / "measured.zarr"
    before = read_table(run, "particles")
    crystalseg("measure", str(run), "--overwrite")
    after = read_table(run, "particles")
    assert after.groupby("frame").size().to_dict() == before.groupby("frame").size().to_dict()
    np.testing.assert_allclose(
        np.sort(after["area"].to_numpy()), np.sort(before["area"].to_numpy()), rtol=1e-6
    )
    # the re-measured store now carries this release's records and stays readable
    assert "measure      finished" in crystalseg("info", str(run))
