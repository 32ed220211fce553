"""The kinetics stage on a real synthetic run store (true mask stored as its segmentation)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from crystalseg.cli import cli
from crystalseg.errors import StageStateError
from crystalseg.kinetics.accuracy import match_frames
from crystalseg.kinetics.run import (
    KineticsSettings,
    kinetics_run,
    open_cld,
    read_kinetics,
    read_tracks,
)
from crystalseg.kinetics.tracking import TrackSettings
from crystalseg.measure import MeasureSettings
from crystalseg.measure.run import measure_run
from crystalseg.store import read_table, stage_info
from crystalseg.synth import SynthConfig, synthesize_run

FRAMES, FPC = 24, 8


@pytest.fixture(scope="module")
def measured_template(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("kinetics") / "run.zarr"
    cfg = SynthConfig(frames=FRAMES, height=256, width=256, seed=5, scenario="mixed")
    synthesize_run(path, cfg, frames_per_chunk=FPC)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]), fpc=FPC)
    measure_run(path, scheduler="synchronous")
    return path


@pytest.fixture(scope="module")
def finished(measured_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("finished") / "run.zarr"
    shutil.copytree(measured_template, path)
    kinetics_run(path)
    return path


@pytest.fixture
def measured(measured_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(measured_template, path)
    return path


def test_outputs_follow_the_truth(finished: Path) -> None:
    summary = read_kinetics(finished)
    points, tracks = read_tracks(finished)
    particles = read_table(finished, "particles")
    assert len(points) == len(particles)
    assert set(tracks["origin"]) <= {"present", "entered", "split", "appeared"}
    assert summary["n_tracks"] == len(tracks) == points["track_id"].nunique()
    # tracks do not jump between true crystals (the true mask)
    truth = read_table(finished, "truth/crystals")
    true_id = match_frames(
        points,
        pd.DataFrame(
            {
                "frame": truth["frame"],
                "x_px": truth["centroid_x_px"],
                "y_px": truth["centroid_y_px"],
                "id": truth["id"],
            }
        ),
        max_distance_px=4.0,
    )
    matched = pd.DataFrame({"track": points["track_id"], "truth": true_id})[true_id > 0]
    assert (matched.groupby("track")["truth"].nunique() == 1).mean() > 0.9
    # growth rate of each fitted track against the truth of its crystal
    growth = read_table(finished, "kinetics/track_growth")
    population = read_table(finished, "truth/population").set_index("id")
    truth_of_track = matched.groupby("track")["truth"].first()
    true_rate = growth["track_id"].map(truth_of_track).map(population["growth_um_s"] * 60)
    assert len(growth) >= 3
    assert summary["length_rate"] == pytest.approx(true_rate.mean(), rel=0.1)
    assert summary["growth_units"] == "um/min"


def test_particle_table_gets_the_track_ids(finished: Path) -> None:
    points, tracks = read_tracks(finished)
    particles = read_table(finished, "particles")
    assert particles.columns[-1] == "track_id"
    np.testing.assert_array_equal(particles["track_id"], points["track_id"])
    np.testing.assert_array_equal(particles["label"], points["label"])
    assert (particles["track_id"] >= 0).all()
    # each track's rows are one particle per frame
    assert not particles.duplicated(["track_id", "frame"]).any()
    ds = xr.open_zarr(str(finished), group="particles")
    assert ds["track_id"].dims == ("particle",)
    assert ds["track_id"].encoding["chunks"] == ds["frame"].encoding["chunks"]
    assert int(ds["track_id"].max()) == len(tracks) - 1


def test_exported_particles_carry_the_track_ids(finished: Path, tmp_path: Path) -> None:
    from crystalseg.export import ExportSettings, export_run

    result = export_run(finished, tmp_path, settings=ExportSettings(what=("particles",)))
    exported = pd.read_csv(result.files[0], encoding="utf-8-sig")
    particles = read_table(finished, "particles")
    np.testing.assert_array_equal(exported["track_id"], particles["track_id"])


def test_cld_is_a_labelled_dataset(finished: Path) -> None:
    cld = open_cld(finished)
    assert cld["count"].dims == ("time", "chord_bin")
    assert cld.sizes["time"] == FRAMES
    assert np.isfinite(cld["count"].values).all()
    assert int(cld["n_chords"].sum()) > 100 * FRAMES
    direct = xr.open_zarr(str(finished), group="cld")
    np.testing.assert_array_equal(direct["class_count"].values, cld["class_count"].values)


def test_same_settings_is_finished_and_other_settings_refused(finished: Path) -> None:
    before = stage_info(finished)["kinetics"]["finished"]
    kinetics_run(finished)
    assert stage_info(finished)["kinetics"]["finished"] == before
    other = KineticsSettings(tracking=TrackSettings(memory=0))
    with pytest.raises(StageStateError, match=r"kinetics of other settings \(tracking\)"):
        kinetics_run(finished, settings=other)


@pytest.mark.slow
def test_replacement_and_out_of_date(measured: Path) -> None:
    kinetics_run(measured)
    first = read_kinetics(measured)
    kinetics_run(
        measured, settings=KineticsSettings(tracking=TrackSettings(memory=0)), overwrite=True
    )
    assert stage_info(measured)["kinetics"]["settings"]["kinetics"]["tracking"]["memory"] == 0
    assert not (measured / "_next").exists()
    # a new measurement makes the kinetics out of date: computed again without overwrite
    measure_run(
        measured, settings=MeasureSettings(min_area_px=8), scheduler="synchronous", overwrite=True
    )
    kinetics_run(measured, settings=KineticsSettings(tracking=TrackSettings(memory=0)))
    record = stage_info(measured)["kinetics"]["settings"]["measurement"]
    assert record["settings"]["measure"]["min_area_px"] == 8
    assert read_kinetics(measured)["n_tracks"] > 0
    assert first["n_tracks"] > 0


@pytest.mark.slow
def test_interrupted_run_resumes_with_the_same_chords(measured: Path, finished: Path) -> None:
    class Stop(Exception):
        pass

    def stop_after_first_chunk(done: int, total: int) -> None:
        if done > FPC:
            raise Stop

    with pytest.raises(Stop):
        kinetics_run(measured, progress=stop_after_first_chunk)
    done = np.asarray(zarr.open_group(str(measured), mode="r")["_progress/kinetics"][:])
    assert done[:FPC].all() and not done.all()
    kinetics_run(measured)
    np.testing.assert_array_equal(
        open_cld(measured)["count"].values, open_cld(finished)["count"].values
    )
    assert read_kinetics(measured) == read_kinetics(finished)


def test_unmeasured_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.zarr"
    synthesize_run(path, SynthConfig(frames=2, height=32, width=32, seed=1, scenario="clear"))
    with pytest.raises(StageStateError, match="has no finished measurement"):
        kinetics_run(path)
    result = CliRunner().invoke(cli, ["kinetics", str(path)])
    assert result.exit_code != 0
    assert "Error: run" in result.output and "crystalseg measure" in result.output


def test_cli_prints_the_rates(finished: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "kinetics", str(finished)])
    assert result.exit_code == 0, result.output
    summary = read_kinetics(finished)
    assert f"{summary['n_tracks']} tracks" in result.output
    assert f"growth rate (length): {summary['length_rate']:.3g} um/min" in result.output


@pytest.mark.slow
def test_report_has_a_kinetics_section(finished: Path) -> None:
    from crystalseg.viz.report import render_report

    text, _ = render_report(finished)
    section = text[text.index("<section id='kinetics'>") : text.index("<section id='plots'>")]
    summary = read_kinetics(finished)
    assert f"{summary['length_rate']:.3g} µm/min (95 % " in section
    assert "Nucleation onset" in section and "id='fig-kinetics'" in section


def test_measure_then_kinetics_in_one_call(measured: Path) -> None:
    from crystalseg.measure.run import MeasureOptions
    from crystalseg.pipeline import segment_and_measure

    segment_and_measure(
        measured, options=MeasureOptions(scheduler="synchronous"), kinetics=KineticsSettings()
    )
    summary = read_kinetics(measured)
    points, _ = read_tracks(measured)
    assert summary["n_tracks"] == points["track_id"].nunique() > 0
    assert "track_id" in read_table(measured, "particles")


def test_kinetics_figures(finished: Path, measured: Path, tmp_path: Path) -> None:
    from crystalseg.viz.kinetics import plot_tracks, write_kinetics_figures

    example = Path(__file__).resolve().parents[2] / "examples" / "fbrm_example.csv"
    written = write_kinetics_figures(finished, tmp_path / "figs", fbrm=example)
    assert [p.name for p in written] == ["kinetics.png", "tracks.png", "cld.png", "fbrm.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    assert write_kinetics_figures(measured, tmp_path / "none") == []  # no kinetics yet
    points, _ = read_tracks(finished)
    fig = plot_tracks(finished, frame=FRAMES - 1, last=5)
    shown = points.loc[points["frame"] == FRAMES - 1, "track_id"].nunique()
    assert len(fig.axes[0].lines) == 2 * shown  # a path and a dot per track
    assert fig.axes[0].get_title().startswith(f"Frame {FRAMES - 1}: {shown} tracks")


def test_cli_measure_kinetics_and_plot_with_a_probe(measured: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "measure", str(measured), "--kinetics"])
    assert result.exit_code == 0, result.output
    summary = read_kinetics(measured)
    assert f"{summary['n_tracks']} tracks" in result.output
    example = Path(__file__).resolve().parents[2] / "examples" / "fbrm_example.csv"
    out = tmp_path / "figs"
    args = ["-q", "plot", str(measured), "-o", str(out), "--fbrm", str(example)]
    result = CliRunner().invoke(cli, [*args, "--fbrm-offset", "-30"])
    assert result.exit_code == 0, result.output
    assert {"tracks.png", "cld.png", "fbrm.png", "kinetics.png"} <= {p.name for p in out.iterdir()}
    bad = tmp_path / "bad.csv"
    bad.write_text("Time (s),Mean\n0,1\n")
    result = CliRunner().invoke(
        cli, ["-q", "plot", str(measured), "-o", str(out), "--fbrm", str(bad)]
    )
    assert result.exit_code != 0
    assert (
        "Error: FBRM file" in result.output and "no column that names a chord bin" in result.output
    )
