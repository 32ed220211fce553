"""The store's checks of what it reads and where outputs go: root attributes of the
wrong kind, calibrations outside physical limits, 0 frames, broken time axes, outputs
inside a store, and files written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalseg.errors import ConfigError, CrystalsegError, DamagedRunError
from crystalseg.store import (
    INTERVAL_S_LIMITS,
    PIXEL_SIZE_UM_LIMITS,
    check_calibration,
    check_output_outside_run,
    create_run,
    describe_run,
    file_written_whole,
    open_run,
    read_run_attrs,
    set_calibration,
)


def _run(path: Path, n: int = 3) -> Path:
    writer = create_run(
        path,
        shape=(n, 8, 8),
        dtype="uint8",
        time_s=np.arange(n, dtype=float),
        pixel_size_um=0.5,
        source={"format": "test"},
    )
    writer.write_frames(0, np.full((n, 8, 8), 3, np.uint8))
    writer.mark_done(0, n)
    writer.finish()
    return path


def _set_attr(path: Path, key: str, value: object) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"][key] = value
    (path / "zarr.json").write_text(json.dumps(meta, allow_nan=True))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (PIXEL_SIZE_UM_LIMITS[0], True),
        (PIXEL_SIZE_UM_LIMITS[1], True),
        (0.65, True),
        (1e-300, False),
        (1e300, False),
        (0.0, False),
        (-1.0, False),
        (float("nan"), False),
        (float("inf"), False),
        ("0.65", False),
        (True, False),
    ],
)
def test_pixel_size_limits(value: object, ok: bool) -> None:
    if ok:
        check_calibration(pixel_size_um=value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError, match=r"pixel size .* is outside the physical range"):
            check_calibration(pixel_size_um=value)  # type: ignore[arg-type]


def test_interval_limits() -> None:
    check_calibration(interval_s=INTERVAL_S_LIMITS[0])
    check_calibration(interval_s=INTERVAL_S_LIMITS[1])
    with pytest.raises(ConfigError, match=r"^--interval: frame interval 1e-09 s is outside"):
        check_calibration(interval_s=1e-9, what="--interval: ")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("provenance", [1, 2], r"attribute 'provenance' of type list; expected a mapping"),
        ("provenance", {"stages": "x"}, r"'provenance.stages' of type str"),
        ("provenance", {"stages": {"import": 3}}, r"'provenance.stages.import' of type int"),
        ("pixel_size_um", "abc", r"'pixel_size_um' = 'abc'; expected micrometres per pixel"),
        ("pixel_size_um", 1e-300, r"'pixel_size_um' = 1e-300"),
        ("crystalseg_format_version", "1", r"format version '1'; expected a whole number"),
        ("crystalseg_format_version", True, r"format version True"),
    ],
)
def test_root_attributes_of_the_wrong_kind_are_a_damaged_store(
    tmp_path: Path, key: str, value: object, match: str
) -> None:
    path = _run(tmp_path / "r.zarr")
    _set_attr(path, key, value)
    with pytest.raises(DamagedRunError, match=match):
        read_run_attrs(path)
    with pytest.raises(DamagedRunError, match=match):
        describe_run(path)


@pytest.mark.parametrize("value", ["zero point six five", 1e-300, [0.65]])
def test_calibrate_repairs_a_damaged_pixel_size_and_records_what_it_replaced(
    tmp_path: Path, value: object
) -> None:
    path = _run(tmp_path / "r.zarr")
    _set_attr(path, key="pixel_size_um", value=value)
    with pytest.raises(DamagedRunError, match=r"crystalseg calibrate .* --pixel-size UM"):
        describe_run(path)
    set_calibration(path, pixel_size_um=0.65)
    assert read_run_attrs(path)["pixel_size_um"] == 0.65
    record = read_run_attrs(path)["provenance"]["calibration"][-1]
    assert record["pixel_size_um"] == [value, 0.65]
    assert "repaired" in record
    with pytest.raises(DamagedRunError, match="'provenance' of type list"):
        # only the pixel size is repaired: other damage still needs the backup
        _set_attr(path, key="provenance", value=[1])
        set_calibration(path, pixel_size_um=0.7)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["provenance", "pixel_size_um", "crystalseg_format_version"]),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)
def test_any_root_attribute_reads_or_gives_a_crystalseg_error(
    tmp_path: Path, key: str, value: object
) -> None:
    path = tmp_path / "r.zarr"
    if not path.exists():
        _run(path)
        (tmp_path / "valid.json").write_text((path / "zarr.json").read_text())
    (path / "zarr.json").write_text((tmp_path / "valid.json").read_text())
    _set_attr(path, key, value)
    try:
        describe_run(path)
    except CrystalsegError:
        pass


def test_zero_frames_and_a_broken_time_axis(tmp_path: Path) -> None:
    path = _run(tmp_path / "r.zarr")
    zarr.open_array(path / "time", mode="r+")[1] = np.nan
    with pytest.raises(
        DamagedRunError, match=r"time axis that is not finite and increasing \(1 of"
    ):
        open_run(path)
    zarr.open_array(path / "time", mode="r+")[:] = [0, 2, 1]
    with pytest.raises(DamagedRunError, match=r"calibrate .* --interval SECONDS"):
        open_run(path)
    for name, shape in (("image", [0, 8, 8]), ("time", [0])):
        meta = json.loads((path / name / "zarr.json").read_text())
        meta["shape"] = shape
        (path / name / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(DamagedRunError, match=r"holds 0 frames \('image' has shape \(0, 8, 8\)\)"):
        describe_run(path)


def test_outputs_inside_a_store_are_refused(tmp_path: Path) -> None:
    path = _run(tmp_path / "r.zarr")
    check_output_outside_run(tmp_path / "r_plots")
    check_output_outside_run(tmp_path / "r.html")
    with pytest.raises(ConfigError, match=r"output '.*r.zarr' is the zarr store"):
        check_output_outside_run(path)
    with pytest.raises(ConfigError, match=r"'.*plots/a' lies inside the zarr store '.*r.zarr'"):
        check_output_outside_run(path / "plots" / "a")
    plain = zarr.open_group(tmp_path / "other.zarr", mode="w")  # any zarr, not only ours
    assert plain is not None
    with pytest.raises(ConfigError, match=r"lies inside the zarr store '.*other.zarr'"):
        check_output_outside_run(tmp_path / "other.zarr" / "x.png")


def test_a_file_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old")
    with pytest.raises(RuntimeError, match="cut short"):
        with file_written_whole(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("cut short")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    with file_written_whole(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
    with pytest.raises(ConfigError, match=r"output '.*' is a folder; expected a file name"):
        with file_written_whole(tmp_path):
            pass
