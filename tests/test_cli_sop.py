"""SOP files (``--config``), ``--json`` summaries, ``--min-area`` with units and the one
meaning of ``--frames``: what the command line records and prints."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
import tomllib
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from crystalseg.cli import cli
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.measure.settings import min_area_px_from_um2
from crystalseg.store import begin_stage, create_run, describe_run, record_request, stage_info
from crystalseg.viz.overlay import parse_frames

SOP = """\
# crystallization SOP 7: how runs of this process are measured and reported
[measure]
min-area = "20um2"
edge = "keep"
bins = [2, 500, 40]
min_count = 5

[report]
frames = [0, "2-3"]
montage = 0

[export]
what = ["statistics"]
sep = ";"
decimal = ","
"""


def invoke(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``crystalseg -q ARGS``."""
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def sop(tmp_path: Path) -> Path:
    path = tmp_path / "sop.toml"
    path.write_text(SOP, encoding="utf-8")
    return path


def _copy(template: Path, where: Path) -> Path:
    shutil.copytree(template, where)
    return where


def test_an_sop_file_reproduces_the_flags_and_is_recorded(
    measured_template: Path, tmp_path: Path, sop: Path
) -> None:
    """measure --config sop.toml records exactly the settings of the same options given
    as flags; the file (path, sha256, content) and the um2 -> px conversion go into the
    stage record; --json prints the summary as one document on stdout."""
    by_file = _copy(measured_template, tmp_path / "file.zarr")
    by_flags = _copy(measured_template, tmp_path / "flags.zarr")
    code, out, err = invoke("measure", str(by_file), "--config", str(sop), "--overwrite", "--json")
    assert code == 0, err
    flags = ["--min-area", "20um2", "--edge", "keep", "--bins", "2", "500", "40"]
    code, _, err = invoke("measure", str(by_flags), *flags, "--min-count", "5", "--overwrite")
    assert code == 0, err

    file_record, flag_record = stage_info(by_file)["measure"], stage_info(by_flags)["measure"]
    assert file_record["settings"] == flag_record["settings"]
    pixel = describe_run(by_file)["pixel_size_um"]
    measured = file_record["settings"]["measure"]
    assert measured["min_area_px"] == math.ceil(20 / pixel**2) != 10
    assert (measured["edge"], measured["bins"], measured["min_count"]) == ("keep", [2, 500, 40], 5)
    assert f"--min-area 20 um2 is {20 / pixel**2:.4g} px at {pixel:g} um/px" in err

    recorded = file_record["request"]["sop"]
    assert recorded["file"] == str(sop.resolve()) and recorded["section"] == "measure"
    assert recorded["sha256"] == hashlib.sha256(sop.read_bytes()).hexdigest()
    assert recorded["content"] == tomllib.loads(SOP) and recorded["overridden"] == []
    conversion = {
        "given": "20um2",
        "um2": 20.0,
        "pixel_size_um": pixel,
        "px": measured["min_area_px"],
    }
    assert file_record["request"]["min_area"] == conversion
    assert flag_record["request"] == {"min_area": conversion}  # no SOP file there

    summary = json.loads(out)
    assert summary["settings"] == measured and summary["min_area"] == conversion
    assert summary["particles"] == summary["particles_counted"] + sum(summary["excluded"].values())
    assert summary["frames"] == 4 and summary["edge_treatment"] == "keep"


def test_sop_keys_are_checked_before_any_work(measured_template: Path, tmp_path: Path) -> None:
    def refused(text: str, command: str = "measure") -> str:
        path = tmp_path / "bad.toml"
        path.write_text(text, encoding="utf-8")
        code, _, err = invoke(command, str(measured_template), "--config", str(path))
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        return err

    err = refused("[measure]\nmin_aera = 12\n")
    assert "'min_aera' is no option of crystalseg measure (did you mean 'min-area'?)" in err
    assert "valid keys: bins, edge, export," in err
    assert "did you mean 'edge'?" in refused("egde = 'keep'\n")  # a flat file: one command
    assert "[mesure] names no crystalseg command (did you mean 'measure'?)" in refused(
        "[mesure]\nedge = 'keep'\n"
    )
    assert "has no [segment] table (it has [measure])" in refused("[measure]\n", "segment")
    assert "edge = 'sideways'" in refused("[measure]\nedge = 'sideways'\n")
    assert "not valid TOML" in refused("[measure\n")
    assert "key 'edge' stands outside the command tables" in refused("edge = 1\n[measure]\n")
    assert stage_info(measured_template)["measure"].get("request") is None


def test_export_records_its_sop_and_flags_win(
    measured_template: Path, tmp_path: Path, sop: Path
) -> None:
    out = tmp_path / "out"
    code, _, err = invoke(
        "export", str(measured_template), "--config", str(sop), "--sep", "tab", "-o", str(out)
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "template_metadata.csv",
        "template_statistics.csv",
    ]
    table = pd.read_csv(
        out / "template_statistics.csv", sep="\t", decimal=",", encoding="utf-8-sig"
    )
    assert (
        len(table) == 4 and "d50_number_um" in table.columns
    )  # the file's decimal, the flag's sep
    meta = pd.read_csv(out / "template_metadata.csv", sep="\t", encoding="utf-8-sig", header=None)
    rows = {(s, k): v for s, k, v in meta.itertuples(index=False)}
    assert rows[("sop", "sha256")] == hashlib.sha256(sop.read_bytes()).hexdigest()
    assert rows[("sop", "file")] == str(sop.resolve())
    assert json.loads(rows[("sop", "content")]) == tomllib.loads(SOP)
    assert rows[("sop", "overridden_by_flags")] == "sep"


def test_report_from_an_sop_prints_json(measured_template: Path, tmp_path: Path, sop: Path) -> None:
    out = tmp_path / "r.html"
    code, stdout, err = invoke(
        "report", str(measured_template), "--config", str(sop), "-o", str(out), "--json"
    )
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["report"] == str(out) and all(
        set(w) == {"code", "message", "frames"} for w in doc["warnings"]
    )
    html = out.read_text(encoding="utf-8")
    assert hashlib.sha256(sop.read_bytes()).hexdigest() in html  # the SOP, with the settings
    for frame in (0, 2, 3):  # frames = [0, "2-3"]
        assert f"fig-overlay-{frame}" in html
    assert "fig-overlay-1" not in html and "fig-montage" not in html


def test_min_area_units(tmp_path: Path) -> None:
    """um2 needs a pixel size: without one the error says how to give it; a fraction of
    a pixel or no number is a usage error of the option."""
    path = tmp_path / "raw.zarr"
    writer = create_run(
        path,
        shape=(2, 32, 32),
        dtype=np.uint8,
        time_s=np.arange(2.0),
        pixel_size_um=None,
        source={},
    )
    writer.write_frames(0, np.zeros((2, 32, 32), np.uint8))
    writer.mark_done(0, 2)
    writer.finish()
    code, _, err = invoke("measure", str(path), "--min-area", "20um2")
    assert_one_line_error(code, err, "--min-area 20um2", "--min-area 12px", "calibrate")
    assert "mask" not in describe_run(path)["arrays"]  # refused before segmenting
    for bad in ("12.5px", "0", "big", "-3um2"):
        result = CliRunner().invoke(cli, ["-q", "measure", str(path), "--min-area", bad])
        assert result.exit_code == 2 and "'--min-area'" in result.output, result.output
    code, _, err = invoke("evaluate", str(tmp_path / "pairs"), "--min-area", "20 µm²")
    assert_one_line_error(code, err, "pass --pixel-size UM of the images")


@pytest.mark.parametrize(
    ("area", "pixel", "px"), [(20, 0.5, 80), (20, 0.65, 48), (0.01, 1.0, 1), (12.25, 0.35, 100)]
)
def test_min_area_px_from_um2(area: float, pixel: float, px: int) -> None:
    assert min_area_px_from_um2(area, pixel) == px


@given(st.floats(0.1, 1e4), st.floats(0.05, 20))
def test_min_area_px_keeps_exactly_the_particles_of_that_area(area: float, pixel: float) -> None:
    px = min_area_px_from_um2(area, pixel)
    assert px * pixel**2 >= area * (1 - 1e-9)  # the least kept particle is large enough
    assert px == 1 or (px - 1) * pixel**2 < area  # and one pixel less is not


def test_min_area_px_from_um2_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="pixel size must be a number > 0"):
        min_area_px_from_um2(20, 0)


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("0,50,-1", (0, 50, -1)),
        ("0-3,-1", (0, 1, 2, 3, -1)),
        ("-3--1", (-3, -2, -1)),
        ("2 - 4", (2, 3, 4)),
    ],
)
def test_frames_are_indices_and_inclusive_ranges(text: str, frames: tuple[int, ...]) -> None:
    assert parse_frames(text) == frames


@pytest.mark.parametrize("text", ["", "0,last", "3-1", "-2-1", "1.5"])
def test_frames_that_are_no_list_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a comma-separated list of frame indices or ranges"):
        parse_frames(text)


def test_synth_frames_is_now_n_frames(tmp_path: Path) -> None:
    code, _, err = invoke("synth", str(tmp_path / "s.zarr"), "--frames", "3")
    assert_one_line_error(code, err, "--frames is a list of frame indices", "--n-frames 3")
    assert not (tmp_path / "s.zarr").exists()


def test_a_request_is_kept_until_the_stage_starts_again(
    measured_template: Path, tmp_path: Path
) -> None:
    path = _copy(measured_template, tmp_path / "r.zarr")
    record_request(path, "segment", {"sop": {"sha256": "ab"}})
    record_request(path, "segment", {"min_area": 3})
    assert stage_info(path)["segment"]["request"] == {"sop": {"sha256": "ab"}, "min_area": 3}
    begin_stage(path, "segment", settings={"other": True}, n_frames=4, frames_per_chunk=2)
    assert "request" not in stage_info(path)["segment"]  # it described the old mask
    with pytest.raises(StageStateError, match=r"stage 'segment' .* has not finished"):
        record_request(path, "segment", {"sop": {}})


@pytest.mark.parametrize("command", ["segment", "measure", "report", "export"])
def test_the_example_sop_sets_only_options_of_each_command(command: str) -> None:
    """examples/sop.toml (the one docs/guide.md shows) holds valid keys and values."""
    from crystalseg.cli.sop import read_sop

    example = Path(__file__).resolve().parents[1] / "examples" / "sop.toml"
    sop = read_sop(example, cli.commands[command], set(cli.commands))
    assert sop["values"] and sop["record"]["section"] == command
    options = {o.name: o for o in cli.commands[command].params}
    for name, value in sop["values"].items():
        options[name].type_cast_value(click.Context(cli.commands[command]), value)


def test_report_meta_from_the_sop_and_the_command_line_add_up(
    measured_template: Path, tmp_path: Path
) -> None:
    sop = tmp_path / "sop.toml"
    sop.write_text('[report]\nmontage = 0\nmeta = ["instrument=probe 2"]\n', encoding="utf-8")
    out = tmp_path / "r.html"
    args = ["report", str(measured_template), "--config", str(sop), "-o", str(out), "--json"]
    code, stdout, err = invoke(*args, "--meta", "batch=B-7")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["pdf"] is None and set(doc["sha256"]) == {str(out)}
    header = out.read_text(encoding="utf-8").split("</header>")[0]
    assert "<td>B-7</td>" in header and "<td>probe 2</td>" in header
    code, _, err = invoke(*args, "--meta", "instrument=probe 3")
    assert code != 0 and "--meta 'instrument' is given twice" in err
