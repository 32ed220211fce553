"""crystalseg export: CSV, xlsx and Parquet round trips on small real measured runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.dims import DEFAULT_CODES
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.export import (
    DUPLICATE_COLUMNS,
    ExportSettings,
    column_header,
    export_particles,
    export_run,
    round_significant,
)
from crystalseg.export import writers as export_writers
from crystalseg.measure import MeasureSettings, measure_run
from crystalseg.measure.results import particle_column_attrs
from crystalseg.store import read_run_attrs, read_table, set_calibration, write_table
from crystalseg.synth import SynthConfig, synthesize_run

FRAMES = 4
#: 6 significant digits: a value read back is within half a unit of the 6th digit.
RTOL = 5e-6


def _measured_run(path: Path, store_mask, *, calibrated: bool, model: bool) -> Path:
    """A crowded 4-frame synthetic run, its true mask standing as the segmentation
    (with the attributes segment writes for the bundled model when ``model``), measured."""
    cfg = SynthConfig(
        frames=FRAMES, height=128, width=128, seed=3, scenario="crowded", calibrated=calibrated
    )
    synthesize_run(path, cfg, frames_per_chunk=2)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    settings = MeasureSettings()
    if model:
        from crystalseg.models.checkpoint import default_checkpoint_path, read_checkpoint_meta
        from crystalseg.segment.engine import checkpoint_checksum
        from crystalseg.segment.run import mask_attrs

        directory = default_checkpoint_path()
        meta = read_checkpoint_meta(directory)
        checksum = checkpoint_checksum(meta)
        mask = zarr.open_array(str(path / "mask"), mode="r+")
        mask.attrs.update(
            mask_attrs(DEFAULT_CODES, checksum=checksum, checkpoint=directory, meta=meta)
        )
        # the truth mask comes without the model's probability: no confidence filter
        settings = MeasureSettings(min_confidence=None)
    measure_run(path, settings=settings, scheduler="synchronous")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("export") / "r.zarr"
    return _measured_run(path, store_mask, calibrated=True, model=True)


@pytest.fixture(scope="module")
def px_run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("px") / "p.zarr"
    return _measured_run(path, store_mask, calibrated=False, model=False)


@pytest.fixture(scope="module")
def psd(run: Path) -> xr.Dataset:
    with xr.open_zarr(str(run), group="psd", consolidated=None) as ds:
        return ds.drop_vars("length_width").load()


@pytest.fixture(scope="module")
def csv_files(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    result = export_run(run, tmp_path_factory.mktemp("csv"))
    return {p.stem.removeprefix("r_"): p for p in result.files}


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    return pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, na_values=[""], **kwargs)


def _per_frame(psd: xr.Dataset) -> list[str]:
    return [str(n) for n, v in psd.data_vars.items() if v.dims == ("time",)]


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("name", "units", "header"),
    [
        ("ecd", "um", "ecd_um"),
        ("area", "um2", "area_um2"),
        ("area", "px2", "area_px2"),
        ("number_density", "mm-2", "number_density_per_mm2"),
        ("time_s", "s", "time_s"),
        ("count_kept", "1", "count_kept"),
        ("sharpness", "1/px2", "sharpness_per_px2"),
        ("growth_rate", "um/s", "growth_rate_um_per_s"),
        ("odd", "m s-1", "odd_m_s_1"),  # a unit not in the table is kept, readable
    ],
)
def test_column_header_carries_the_unit_once(name: str, units: str, header: str) -> None:
    assert column_header(name, units) == header


def test_round_significant() -> None:
    x = np.array([123.4567, 0.000123456, -9.87654e7, 0.0, np.nan, np.inf])
    out = round_significant(x, 3)
    np.testing.assert_array_equal(out[:4], [123.0, 0.000123, -98800000.0, 0.0])
    assert np.isnan(out[4]) and out[5] == np.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"what": ("psd", "volume")}, "cannot export 'volume'"),
        ({"what": ()}, "cannot export nothing"),
        ({"format": "xls"}, "format 'xls' is unknown"),
        ({"sep": "|"}, "separator '\\|' is not supported"),
        ({"decimal": ","}, "both ','.*sep=';'"),
        ({"digits": 0}, "outside 1..17"),
        ({"digits": 6.5}, "whole number"),
    ],
)
def test_settings_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExportSettings(**kwargs)


# --------------------------------------------------------------------------- CSV


def test_csv_statistics_round_trip(csv_files: dict[str, Path], psd: xr.Dataset) -> None:
    path = csv_files["statistics"]
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"  # byte-order mark for Excel
    back = _read_csv(path)
    assert len(back) == FRAMES  # one row per frame
    assert back["frame"].tolist() == list(range(FRAMES))
    np.testing.assert_allclose(back["time_s"], psd["time"], rtol=RTOL)
    np.testing.assert_allclose(back["time_min"], psd["time"] / 60, rtol=RTOL)
    expected = {column_header(n, psd[n].attrs["units"]): n for n in _per_frame(psd)}
    assert set(back.columns) == {"frame", "time_s", "time_min", *expected}
    # interval bounds (<name>_lower, <name>_upper, when the measurement has them)
    # follow their statistic
    columns = list(back.columns)
    for i, header in enumerate(columns):
        for bound in ("_lower", "_upper"):
            if bound in header:
                base = header.replace(bound, "", 1)
                assert columns.index(base) < i <= columns.index(base) + 2, header
    bases = [c for c in columns if "_lower" not in c and "_upper" not in c]
    assert bases[:9] == [
        "frame",
        "time_s",
        "time_min",
        "count_kept",
        "number",
        "number_density_per_mm2",
        "d10_number_um",
        "d50_number_um",
        "d90_number_um",
    ]
    for header, name in expected.items():
        np.testing.assert_allclose(back[header], psd[name], rtol=RTOL, equal_nan=True)
    for header in ("d50_number_um", "d_4_3_um", "span_volume", "number_density_per_mm2"):
        assert header in back.columns
    assert back["count_kept"].sum() > 0


def test_csv_psd_is_a_long_table(csv_files: dict[str, Path], psd: xr.Dataset) -> None:
    back = _read_csv(csv_files["psd"])
    bins = psd.sizes["size_bin"]
    assert len(back) == FRAMES * bins
    assert list(back.columns[:6]) == [
        "frame",
        "time_s",
        "time_min",
        "size_bin_lower_um",
        "size_bin_centre_um",
        "size_bin_upper_um",
    ]
    for t in range(FRAMES):
        rows = back[back["frame"] == t]
        np.testing.assert_allclose(rows["q0"], psd["q0"][t], rtol=RTOL, atol=1e-300)
        np.testing.assert_allclose(rows["q3"], psd["q3"][t], rtol=RTOL, atol=1e-300)
        np.testing.assert_allclose(rows["size_bin_centre_um"], psd["size_bin"], rtol=RTOL)
        np.testing.assert_allclose(rows["size_bin_lower_um"], psd["size_bin_lower"], rtol=RTOL)
        np.testing.assert_allclose(rows["size_bin_upper_um"], psd["size_bin_upper"], rtol=RTOL)
        assert (rows["time_s"] == float(psd["time"][t])).all()


def test_csv_particles_round_trip(csv_files: dict[str, Path], run: Path) -> None:
    table = read_table(run, "particles")
    # the two diameter columns are one: the export keeps ecd
    np.testing.assert_array_equal(table["ecd"], table["equivalent_diameter_area"])
    back = _read_csv(csv_files["particles"])
    attrs = particle_column_attrs(read_run_attrs(run)["pixel_size_um"])
    headers = {c: column_header(c, a["units"]) for c, a in attrs.items()}
    expected = [headers[c] for c in table.columns if c not in DUPLICATE_COLUMNS]
    assert list(back.columns) == expected
    assert {"ecd_um", "area_um2", "feret_diameter_max_um", "centroid_x_px"} <= set(back.columns)
    assert len(back) == len(table) > 10
    for column in table.columns:
        if column in DUPLICATE_COLUMNS:
            continue
        got, want = back[headers[column]], table[column]
        if want.dtype == bool:
            assert got.tolist() == want.astype(int).tolist()  # 1/0
        elif not pd.api.types.is_numeric_dtype(want):
            assert got.fillna("").tolist() == want.tolist()
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, equal_nan=True)


def test_csv_with_semicolons_and_decimal_commas(
    run: Path, csv_files: dict[str, Path], tmp_path: Path
) -> None:
    settings = ExportSettings(what=("statistics", "particles"), sep=";", decimal=",")
    result = export_run(run, tmp_path, settings=settings)
    files = {p.stem.removeprefix("r_"): p for p in result.files}
    assert set(files) == {"statistics", "particles", "metadata"}
    text = files["statistics"].read_text(encoding="utf-8-sig")
    assert "0,166667" in text and "0.166667" not in text  # 10 s in minutes
    for name in ("statistics", "particles"):
        back = _read_csv(files[name], sep=";", decimal=",")
        same = _read_csv(csv_files[name])
        pd.testing.assert_frame_equal(back, same)


def test_csv_without_bom_and_with_fewer_digits(run: Path, tmp_path: Path) -> None:
    settings = ExportSettings(what=("statistics",), bom=False, digits=3)
    path = export_run(run, tmp_path, settings=settings).files[0]
    assert path.read_bytes()[:5] == b"frame"
    back = _read_csv(path)
    with xr.open_zarr(str(run), group="psd", consolidated=None) as psd:
        d50 = psd["d50_number"].values
    np.testing.assert_allclose(back["d50_number_um"], round_significant(d50, 3), equal_nan=True)


def test_csv_metadata(csv_files: dict[str, Path], run: Path) -> None:
    meta = _read_csv(csv_files["metadata"], dtype=str)
    assert list(meta.columns) == ["section", "key", "value"]
    rows = {(s, k): v for s, k, v in meta.itertuples(index=False)}
    assert float(rows["calibration", "pixel_size_um"]) == read_run_attrs(run)["pixel_size_um"]
    assert rows["columns_particles", "ecd_um"].endswith("[um]")


# --------------------------------------------------------------------------- xlsx


def test_xlsx_round_trip_and_metadata(
    run: Path, csv_files: dict[str, Path], psd: xr.Dataset, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    from crystalseg.models.checkpoint import default_checkpoint_path, read_checkpoint_meta
    from crystalseg.segment.engine import checkpoint_checksum

    result = export_run(run, tmp_path, settings=ExportSettings(format="xlsx"))
    assert result.files == (tmp_path / "r.xlsx",)
    assert "tracks not exported" in result.notes[0]
    book = load_workbook(result.files[0], read_only=True)
    assert book.sheetnames == ["statistics", "psd", "particles", "metadata"]
    for name in ("statistics", "psd", "particles"):
        rows = list(book[name].iter_rows(values_only=True))
        header, body = list(rows[0]), rows[1:]
        csv = _read_csv(csv_files[name])
        assert header == list(csv.columns)  # units in the headers
        sheet = pd.DataFrame(body, columns=header)
        assert len(sheet) == len(csv) == result.rows[name]
        for column in header:
            got, want = sheet[column], csv[column]
            if not pd.api.types.is_numeric_dtype(want):
                assert got.fillna("").tolist() == want.fillna("").tolist()
            else:  # the same 6 significant digits; a blank cell is NaN
                np.testing.assert_allclose(
                    got.astype(float), want.astype(float), rtol=1e-12, equal_nan=True
                )
    meta = {(s, k): v for s, k, v in list(book["metadata"].iter_rows(values_only=True))[1:]}
    directory = default_checkpoint_path()
    assert meta["export", "run"] == str(run.resolve())
    assert meta["calibration", "pixel_size_um"] == read_run_attrs(run)["pixel_size_um"]
    assert meta["model", "name"] == directory.name
    assert meta["model", "sha256"] == checkpoint_checksum(read_checkpoint_meta(directory))
    assert meta["measure_settings", "edge"] == json.dumps(psd.attrs["edge_treatment"])
    assert meta["export", "crystalseg_version"]
    assert meta["export", "exported_utc"].endswith("+00:00")
    reasons = read_table(run, "particles")["excluded_reason"].replace("", "counted")
    exclusions = {k: v for (s, k), v in meta.items() if s == "exclusions"}
    assert exclusions == reasons.value_counts().to_dict()
    assert exclusions["counted"] == int(psd["count_kept"].sum())


def test_output_is_a_folder_or_for_xlsx_a_workbook(run: Path, tmp_path: Path) -> None:
    stats = ExportSettings(what=("statistics",), format="xlsx")
    result = export_run(run, tmp_path / "sub" / "results.xlsx", settings=stats)
    assert result.files == (tmp_path / "sub" / "results.xlsx",)
    with pytest.raises(ConfigError, match=r"names a file.*give a folder, e.g. '.*results'"):
        export_run(run, tmp_path / "results.csv")
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(ConfigError, match="is a file; expected the folder"):
        export_run(run, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "mine"


def test_xlsx_refuses_tables_longer_than_a_sheet(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The psd table has 4 x 60 rows; pretend a sheet holds 100, as Excel holds 1,048,576.
    monkeypatch.setattr(export_writers, "EXCEL_MAX_ROWS", 100)
    with pytest.raises(ConfigError, match=r"psd table .* 240 rows, more than the 99"):
        export_run(run, tmp_path / "out", settings=ExportSettings(format="xlsx"))
    assert not (tmp_path / "out").exists()  # refused before anything is written


# --------------------------------------------------------------------------- Parquet


def test_parquet_keeps_units_in_field_metadata(run: Path, psd: xr.Dataset, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    result = export_run(run, tmp_path, settings=ExportSettings(format="parquet"))
    files = {p.stem.removeprefix("r_"): p for p in result.files}
    assert set(files) == {"statistics", "psd", "particles"}
    schema = pq.read_schema(files["particles"])
    assert schema.field("ecd_um").metadata[b"units"] == b"um"
    assert schema.field("area_um2").metadata[b"units"] == b"um2"
    assert schema.field("ecd_um").metadata[b"source"] == b"ecd"
    meta = json.loads(schema.metadata[b"crystalseg"])
    assert meta["calibration"]["pixel_size_um"] == read_run_attrs(run)["pixel_size_um"]
    # Parquet keeps full precision and the dtypes
    table = read_table(run, "particles")
    back = pd.read_parquet(files["particles"])
    assert back["kept"].dtype == bool
    np.testing.assert_array_equal(back["ecd_um"], table["ecd"])
    stats = pd.read_parquet(files["statistics"])
    np.testing.assert_array_equal(stats["d50_number_um"], psd["d50_number"])
    field = pq.read_schema(files["statistics"]).field("number_density_per_mm2")
    assert field.metadata[b"units"] == b"mm-2"


def test_export_particles_writes_one_file(run: Path, tmp_path: Path) -> None:
    pq_path = export_particles(run, tmp_path / "p.parquet")
    csv_path = export_particles(run, tmp_path / "p.txt", format="csv")
    back = pd.read_parquet(pq_path)
    text = _read_csv(csv_path)
    assert list(back.columns) == list(text.columns)
    np.testing.assert_allclose(text["ecd_um"], back["ecd_um"], rtol=RTOL)
    with pytest.raises(ConfigError, match="suffix"):
        export_particles(run, tmp_path / "p.xlsx")


# --------------------------------------------------------------------------- runs


def test_a_run_without_pixel_size_gets_px_headers(px_run: Path, tmp_path: Path) -> None:
    files = export_run(px_run, tmp_path).files
    stats = _read_csv(files[0])
    assert {"d50_number_px", "d_4_3_px", "number_density"} <= set(stats.columns)
    assert stats["number_density"].isna().all()
    assert not any(c.endswith(("_um", "_um2", "_per_mm2")) for c in stats.columns)
    assert {"size_bin_centre_px", "size_bin_lower_px"} <= set(_read_csv(files[1]).columns)
    assert {"ecd_px", "area_px2", "perimeter_px"} <= set(_read_csv(files[2]).columns)
    meta = _read_csv(files[3], dtype=str)
    assert "none (sizes in px)" in meta["value"].tolist()


def test_a_calibration_set_after_measuring_is_not_claimed(px_run: Path, tmp_path: Path) -> None:
    stale = shutil.copytree(px_run, tmp_path / "s.zarr")
    set_calibration(stale, pixel_size_um=2.0)
    result = export_run(stale, tmp_path / "out", settings=ExportSettings(what=("particles",)))
    assert "out of date (the pixel size changed" in result.notes[0]
    back = _read_csv(result.files[0])
    assert "ecd_px" in back.columns and "ecd_um" not in back.columns  # as measured
    meta = _read_csv(result.files[1], dtype=str)
    assert meta["value"].str.contains("out of date").any()


def test_tracks_are_exported_when_the_run_holds_them(run: Path, tmp_path: Path) -> None:
    with pytest.raises(StageStateError, match=r"cannot export tracks .* no tracks"):
        export_run(run, tmp_path, settings=ExportSettings(what=("tracks",)))
    tracked = shutil.copytree(run, tmp_path / "t.zarr")
    tracks = pd.DataFrame({"track": [0, 0, 1], "frame": [0, 1, 0], "length": [3.5, 4.0, 7.25]})
    units = {"track": {"units": "1"}, "frame": {"units": "1"}, "length": {"units": "um"}}
    write_table(tracked, "tracks", tracks, dim="point", column_attrs=units)
    result = export_run(tracked, tmp_path / "out", settings=ExportSettings(what=("tracks",)))
    back = _read_csv(result.files[0])
    assert list(back.columns) == ["track", "frame", "length_um"]
    assert back["length_um"].tolist() == [3.5, 4.0, 7.25]


# --------------------------------------------------------------------------- CLI


def test_cli_export(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["-q", "export", str(run), "-o", str(out), "--what", "statistics", "--sep", ";"]
    )
    assert res.exit_code == 0, res.output
    assert f"  {out / 'r_statistics.csv'}" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["r_metadata.csv", "r_statistics.csv"]
    assert "d50_number_um" in (out / "r_statistics.csv").read_text(encoding="utf-8-sig")


def test_cli_errors_are_one_line(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(run), "-o", str(tmp_path), "--what", "psd,volume"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: cannot export 'volume': expected one or more of statistics, psd, particles, "
        "tracks; e.g. what=('statistics', 'psd')"
    ]
    bare = tmp_path / "bare.zarr"
    synthesize_run(bare, SynthConfig(frames=2, height=64, width=64, seed=0))
    res = runner.invoke(cli, ["export", str(bare)])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1
    assert "has not been measured" in res.output
    assert list(tmp_path.glob("bare_*")) == []


def test_measure_export_writes_the_same_particle_table(px_run: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(px_run, tmp_path / "p.zarr")
    res = CliRunner().invoke(cli, ["-q", "measure", str(copy), "--export", "csv"])
    assert res.exit_code == 0, res.output
    written = tmp_path / "p_particles.csv"
    assert f"exported     {written}" in res.output
    same = export_run(px_run, tmp_path / "api", settings=ExportSettings(what=("particles",)))
    pd.testing.assert_frame_equal(_read_csv(written), _read_csv(same.files[0]))
