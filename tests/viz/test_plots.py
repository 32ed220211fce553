"""Figures of measured runs: what they show equals what measure wrote, edge cases, files, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, PolyCollection, QuadMesh
from matplotlib.figure import Figure

from crystalseg.cli import cli
from crystalseg.errors import (
    ConfigError,
    CrystalsegWarning,
    InputNotFoundError,
    RunFormatError,
    StageStateError,
)
from crystalseg.measure import PARTICLE_COLUMNS, MeasureSettings, measure_run
from crystalseg.store import read_table
from crystalseg.synth import SynthConfig, synthesize_run
from crystalseg.viz.plots import (
    OKABE_ITO,
    RUN_FIGURES,
    default_plot_dir,
    last_counted_frame,
    open_results,
    plot_compare,
    plot_cumulative,
    plot_psd_curves,
    plot_psd_heatmap,
    plot_run,
    plot_runs,
    plot_shape,
    plot_statistics,
    run_names,
)

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<svg"}


def _measured_run(
    path: Path, store_mask, *, calibrated: bool, frames: int, size: int, seed: int
) -> Path:
    """A synthetic run whose true class mask stands in for segmentation, then measured."""
    cfg = SynthConfig(
        frames=frames, height=size, width=size, seed=seed, scenario="mixed", calibrated=calibrated
    )
    synthesize_run(path, cfg, frames_per_chunk=2)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    measure_run(path, settings=MeasureSettings(min_count=1), scheduler="synchronous")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    return _measured_run(
        tmp_path_factory.mktemp("plots") / "growth.zarr",
        store_mask,
        calibrated=True,
        frames=6,
        size=256,
        seed=3,
    )


@pytest.fixture(scope="module")
def px_run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    return _measured_run(
        tmp_path_factory.mktemp("plots_px") / "uncal.zarr",
        store_mask,
        calibrated=False,
        frames=3,
        size=128,
        seed=4,
    )


@pytest.fixture(scope="module")
def results(run: Path) -> tuple[xr.Dataset, pd.DataFrame]:
    psd, particles = open_results(run)
    assert particles is not None
    return psd.load(), particles


@pytest.fixture
def psd(results: tuple[xr.Dataset, pd.DataFrame]) -> xr.Dataset:
    return results[0].copy(deep=True)


def _empty_frames(psd: xr.Dataset, frames: list[int]) -> xr.Dataset:
    """The psd with ``frames`` made particle-free, as measure writes such frames."""
    out = psd.copy(deep=True)
    for name in out.data_vars:
        var = out[name]
        if name.startswith("d") and var.dims == ("time",):
            var[frames] = np.nan
        elif name in ("q0", "q3", "length_width", "count_kept", "number"):
            var[frames] = 0
    return out


def _mesh(ax: Axes) -> QuadMesh:
    meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    return meshes[0]


def _time_edges(t: np.ndarray) -> np.ndarray:
    mid = (t[1:] + t[:-1]) / 2
    return np.r_[t[0] - (mid[0] - t[0]), mid, t[-1] + (t[-1] - mid[-1])]


def _curve_lines(ax: Axes) -> list:
    return [line for line in ax.get_lines() if str(line.get_label()).startswith("t = ")]


# --------------------------------------------------------------------------- reading


def test_open_results_reads_what_measure_wrote(run: Path, results: tuple) -> None:
    psd, particles = results
    xr.testing.assert_identical(psd, xr.open_zarr(str(run), group="psd").load())
    pd.testing.assert_frame_equal(particles, read_table(run, "particles"))
    assert list(particles.columns) == list(PARTICLE_COLUMNS)

    last = psd.sizes["time"] - 1
    _, subset = open_results(run, columns=["frame", "feret_diameter_max"], frame=-1)
    assert subset is not None
    expected = particles.loc[particles["frame"] == last, ["frame", "feret_diameter_max"]]
    pd.testing.assert_frame_equal(subset, expected.reset_index(drop=True))
    assert len(subset) > 0


def test_open_results_errors(run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        open_results(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunFormatError, match="not a crystalseg run store"):
        open_results(tmp_path / "plain")
    raw = tmp_path / "raw.zarr"
    synthesize_run(raw, SynthConfig(frames=2, height=32, width=32, seed=1))
    with pytest.raises(StageStateError, match=r"not been measured; run 'crystalseg measure "):
        open_results(raw)
    with pytest.raises(ConfigError, match="no column"):
        open_results(run, columns=["nope"])
    with pytest.raises(ConfigError, match="out of range"):
        open_results(run, frame=99)


# --------------------------------------------------------------------------- heatmap


@pytest.mark.parametrize("basis", ["number", "volume"])
def test_heatmap_cells_are_frames_and_bins(psd: xr.Dataset, basis: str) -> None:
    fig = plot_psd_heatmap(psd, basis=basis)
    ax = fig.axes[0]
    mesh = _mesh(ax)
    coords = mesh.get_coordinates()  # (ny + 1, nx + 1, 2)
    t = psd["time"].values
    lower, upper = psd["size_bin_lower"].values, psd["size_bin_upper"].values
    np.testing.assert_allclose(coords[0, :, 0], _time_edges(t))
    np.testing.assert_allclose(coords[:, 0, 1], np.r_[lower, upper[-1]])
    density = psd["q0" if basis == "number" else "q3"].values
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(len(lower), len(t)), density.T)
    # Axis ranges: every frame's cell; the occupied bins plus one empty bin each side.
    occupied = np.flatnonzero(density.sum(axis=0) > 0)
    assert ax.get_xlim() == pytest.approx((t[0] - 5.0, t[-1] + 5.0))
    assert ax.get_ylim() == pytest.approx((lower[occupied[0] - 1], upper[occupied[-1] + 1]))
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "time (s)"
    assert ax.get_ylabel() == "ECD (µm)"
    assert (
        fig.axes[1].get_ylabel()
        == f"$q_{'0' if basis == 'number' else '3'}$: {basis} fraction per decade of size"
    )
    assert mesh.get_cmap().name == "viridis"
    assert isinstance(fig.canvas, FigureCanvasAgg)


def test_heatmap_empty_frames_are_gaps_and_long_runs_use_hours(psd: xr.Dataset) -> None:
    psd = _empty_frames(psd, [1, 4]).assign_coords(time=psd["time"] * 720.0)  # 0..10 h
    fig = plot_psd_heatmap(psd)
    ax = fig.axes[0]
    values = np.ma.asarray(_mesh(ax).get_array()).reshape(psd.sizes["size_bin"], -1)
    assert values.mask[:, [1, 4]].all()
    assert not values.mask[:, [0, 2, 3, 5]].any()
    assert ax.get_xlabel() == "time (h)"
    assert ax.get_xlim() == pytest.approx((-1.0, 11.0))  # half a 2 h interval each side
    assert "no particles counted" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_time_unit_minutes(psd: xr.Dataset) -> None:
    fig = plot_statistics(psd.assign_coords(time=psd["time"] * 60.0))  # 0..50 min
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (min)"
    np.testing.assert_allclose(ax.get_lines()[1].get_xdata(), psd["time"].values)


# --------------------------------------------------------------------------- statistics


def test_statistics_lines_are_the_d_values_and_count(psd: xr.Dataset) -> None:
    psd = _empty_frames(psd, [2])
    fig = plot_statistics(psd, basis="volume")
    ax, twin = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for q in (10, 50, 90):
        np.testing.assert_array_equal(lines[f"D{q}"].get_ydata(), psd[f"d{q}_volume"].values)
    assert np.isnan(lines["D50"].get_ydata()[2])  # a gap, not a zero
    (count,) = twin.get_lines()
    np.testing.assert_array_equal(count.get_ydata(), psd["count_kept"].values)
    assert count.get_ydata()[2] == 0
    assert ax.get_ylabel() == "volume-weighted ECD (µm)"
    assert twin.get_ylabel() == "crystals counted per frame"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["D90", "D50", "D10", "count", "95 % interval"]


# --------------------------------------------------------------------------- curves


def test_curves_one_per_time_at_the_nearest_frame(psd: xr.Dataset) -> None:
    fig = plot_psd_curves(psd, times=[0.0, 24.0, 41.0, 50.0])
    ax = fig.axes[0]
    lines = _curve_lines(ax)
    assert len(lines) == 4
    for line, frame in zip(lines, [0, 2, 4, 5], strict=True):
        np.testing.assert_array_equal(line.get_ydata(), psd["q0"].values[frame])
        np.testing.assert_array_equal(line.get_xdata(), psd["size_bin"].values)
        assert line.get_label().startswith(f"t = {psd['time'].values[frame]:g} s (n = ")
    assert ax.get_xscale() == "log"
    assert len(ax.get_legend().get_texts()) == 4
    # Default: start, middle (25 s -> frame 2 or 3), end.
    default = _curve_lines(plot_psd_curves(psd).axes[0])
    assert len(default) == 3
    np.testing.assert_array_equal(default[-1].get_ydata(), psd["q0"].values[-1])


def test_curves_times_outside_the_run_warn(psd: xr.Dataset) -> None:
    with pytest.warns(CrystalsegWarning, match="outside the run"):
        lines = _curve_lines(plot_psd_curves(psd, times=[0.0, 5000.0]).axes[0])
    np.testing.assert_array_equal(lines[1].get_ydata(), psd["q0"].values[-1])
    with pytest.raises(ConfigError, match="finite seconds"):
        plot_psd_curves(psd, times=[])


# --------------------------------------------------------------------------- shape


def test_shape_scatter_is_the_frames_counted_particles(results: tuple) -> None:
    psd, particles = results
    fig = plot_shape(particles, psd, frame=-1)
    ax = fig.axes[0]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    rows = particles[(particles["frame"] == psd.sizes["time"] - 1) & particles["kept"]]
    np.testing.assert_allclose(
        points.get_offsets(), rows[["feret_diameter_max", "feret_diameter_min"]].to_numpy()
    )
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx(ax.get_ylim())
    gids = {line.get_gid() for line in ax.get_lines()}
    assert {"aspect-1", "aspect-2", "aspect-5", "aspect-10"} <= gids
    ratio = next(line for line in ax.get_lines() if line.get_gid() == "aspect-2")
    np.testing.assert_allclose(ratio.get_xdata() / ratio.get_ydata(), 2.0)
    assert ax.get_xlabel() == "length, max Feret diameter (µm)"
    with pytest.raises(ConfigError, match="out of range"):
        plot_shape(particles, psd, frame=6)


def test_shape_falls_back_to_the_psd_histogram(psd: xr.Dataset) -> None:
    hist = np.zeros((psd.sizes["length_bin"], psd.sizes["width_bin"]))
    hist[30, 20] = 3.0
    psd["length_width"][1] = hist
    fig = plot_shape(None, psd, frame=1)
    ax = fig.axes[0]
    values = np.ma.asarray(_mesh(ax).get_array()).reshape(hist.shape)
    np.testing.assert_array_equal(values.filled(0.0), hist.T)  # x length, y width
    assert "elongated crystals (aspect ratio ≥ 2)" in ax.get_title()


# --------------------------------------------------------------------------- edge cases


def test_last_counted_frame(psd: xr.Dataset) -> None:
    assert last_counted_frame(psd) == 5
    assert last_counted_frame(_empty_frames(psd, [4, 5])) == 3
    assert last_counted_frame(_empty_frames(psd, list(range(6)))) == 5


def test_single_frame(psd: xr.Dataset, results: tuple) -> None:
    one = psd.isel(time=[3])
    ax = plot_psd_heatmap(one).axes[0]
    assert ax.get_xlim() == pytest.approx((29.5, 30.5))
    stats = plot_statistics(one).axes[0]
    assert stats.get_lines()[1].get_ydata()[0] == pytest.approx(float(psd["d50_number"][3]))
    assert len(_curve_lines(plot_psd_curves(one).axes[0])) == 1


def test_all_frames_empty_says_so(psd: xr.Dataset) -> None:
    empty = _empty_frames(psd, list(range(psd.sizes["time"])))
    particles = pd.DataFrame(
        {"frame": [], "feret_diameter_max": [], "feret_diameter_min": [], "kept": []}
    )
    figures = [
        plot_psd_heatmap(empty),
        plot_statistics(empty),
        plot_psd_curves(empty),
        plot_shape(particles, empty),
        plot_shape(None, empty),
    ]
    for fig in figures:
        notes = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "empty-note"]
        assert len(notes) == 1 and notes[0].startswith("No ")
        fig.canvas.draw()  # renders without errors


def test_draws_into_a_given_axes(psd: xr.Dataset) -> None:
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_statistics(psd, ax=right) is fig
    assert plot_psd_heatmap(psd, ax=left) is fig
    assert left.get_yscale() == "log" and right.get_lines()


def test_bad_basis_and_bad_psd(psd: xr.Dataset) -> None:
    with pytest.raises(ConfigError, match="'number' or 'volume'"):
        plot_psd_heatmap(psd, basis="mass")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lacks"):
        plot_statistics(psd.drop_vars("d50_number"))


# --------------------------------------------------------------------------- compare


def test_compare_one_line_per_run(results: tuple, px_run: Path) -> None:
    psd = results[0]
    later = psd.assign_coords(time=psd["time"] + 5.0)
    fig = plot_compare([("alpha", psd), ("beta", later)])
    top, bottom = fig.axes
    assert [line.get_label() for line in top.get_lines()] == ["alpha", "beta"]
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["alpha", "beta"]
    assert [line.get_color() for line in top.get_lines()] == list(OKABE_ITO[:2])
    np.testing.assert_array_equal(top.get_lines()[0].get_ydata(), psd["d50_number"].values)
    np.testing.assert_array_equal(bottom.get_lines()[1].get_ydata(), psd["count_kept"].values)
    np.testing.assert_allclose(bottom.get_lines()[1].get_xdata(), psd["time"].values + 5.0)
    assert top.get_ylabel() == "number D50, ECD (µm)"

    px = open_results(px_run)[0]
    assert px.attrs["size_units"] == "px"
    with pytest.warns(CrystalsegWarning, match="different units"):
        mixed = plot_compare([("cal", psd), ("uncal", px)])
    assert [t.get_text() for t in mixed.axes[0].get_legend().get_texts()] == [
        "cal (µm)",
        "uncal (px)",
    ]


def test_px_run_says_px(px_run: Path) -> None:
    psd, particles = open_results(px_run)
    assert plot_psd_heatmap(psd).axes[0].get_ylabel() == "ECD (px)"
    assert plot_shape(particles, psd).axes[0].get_ylabel() == "width, min Feret diameter (px)"


# --------------------------------------------------------------------------- files and CLI


def test_plot_run_writes_every_figure_in_every_format(run: Path, tmp_path: Path) -> None:
    paths = plot_run(run, tmp_path / "figs", formats=("png", "svg", "pdf"), basis="volume")
    expected = [tmp_path / "figs" / f"{f}.{x}" for f in RUN_FIGURES for x in ("png", "svg", "pdf")]
    assert paths == expected
    for path in paths:
        head = path.read_bytes()[:400]
        magic = MAGIC[path.suffix[1:]]
        assert head.startswith(magic) if path.suffix != ".svg" else magic in head, path
    with pytest.raises(ConfigError, match=r"\['jpg'\] unknown"):
        plot_run(run, tmp_path / "x", formats=("png", "jpg"))
    assert not (tmp_path / "x").exists()


def test_plot_runs_and_names(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "b" / "growth.zarr"
    shutil.copytree(run, other)
    assert run_names([run, other]) == [f"{run.parent.name}-growth", "b-growth"]
    assert run_names([tmp_path / "x.zarr", tmp_path / "y.zarr"]) == ["x", "y"]
    paths = plot_runs([run, other], tmp_path / "cmp", formats=("svg",))
    assert paths[0] == tmp_path / "cmp" / "compare.svg"
    assert len(paths) == 1 + 2 * len(RUN_FIGURES)
    assert (tmp_path / "cmp" / "b-growth" / "shape.svg").exists()
    assert default_plot_dir([other]) == (tmp_path / "b" / "growth_plots").resolve()
    assert default_plot_dir([run, other]) == run.parent.resolve() / "compare_plots"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", "plot", *args])
    return result.exit_code, result.output


def _assert_one_line_error(code: int, output: str, needle: str) -> None:
    lines = [line for line in output.strip().splitlines() if line]
    assert code == 1 and len(lines) == 1, output
    assert lines[0].startswith("Error: ") and needle in lines[0], output


def test_cli_plot(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    code, output = _cli(str(run), "-o", str(out), "--format", "png", "--times", "0,30")
    assert code == 0, output
    assert output.strip() == f"5 figure files (png) written to {out}"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{f}.{x}" for f in RUN_FIGURES for x in ("png",)
    )


def test_cli_plot_errors(run: Path, tmp_path: Path) -> None:
    _assert_one_line_error(*_cli(str(run), "-o", str(tmp_path), "--format", "gif"), "['gif']")
    _assert_one_line_error(*_cli(str(run), "--times", "0,soon"), "--times '0,soon'")
    _assert_one_line_error(*_cli(str(tmp_path / "no.zarr")), "does not exist")
    raw = tmp_path / "raw.zarr"
    synthesize_run(raw, SynthConfig(frames=2, height=32, width=32, seed=1))
    _assert_one_line_error(*_cli(str(raw)), f"run 'crystalseg measure {raw}' first")
    code, output = _cli()
    assert code == 2 and "Missing argument" in output


# --------------------------------------------------------------------------- layout


def _labels_inside_and_apart(fig: Figure) -> None:
    """Titles, axis labels and legends of ``fig``, once saved, lie inside it; no title or
    legend covers another axes (a colour bar, a neighbour)."""
    import io

    fig.savefig(io.BytesIO(), format="png", dpi=fig.dpi)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    covers: list = [*fig.legends]
    labels: list = [*fig.legends]
    for ax in fig.axes:
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        labels += [t for t in texts if t.get_text() and t.get_visible()]
        covers += [t for t in (ax.title, ax.get_legend()) if t is not None and t.get_visible()]
    for item in labels:
        bb = item.get_window_extent(renderer)
        assert bb.x0 >= -0.5 and bb.y0 >= -0.5, item
        assert bb.x1 <= box.x1 + 0.5 and bb.y1 <= box.y1 + 0.5, item
    for item in covers:
        bb = item.get_window_extent(renderer)
        owner = getattr(item, "axes", None)
        for ax in fig.axes:
            if ax is owner or (owner is not None and ax.bbox.bounds == owner.bbox.bounds):
                continue  # its own axes (and a twin sharing its box)
            other = ax.get_window_extent(renderer)
            overlap_w = min(bb.x1, other.x1) - max(bb.x0, other.x0)
            overlap_h = min(bb.y1, other.y1) - max(bb.y0, other.y0)
            assert overlap_w <= 1 or overlap_h <= 1, (item, ax)


def test_figures_keep_their_text_inside_and_apart(psd: xr.Dataset, results: tuple) -> None:
    particles = results[1]
    many = [(f"experiment_2024-05-{k:02d}_seeded_cooling", psd) for k in range(9)]
    gaps = _empty_frames(psd, [0, 1])
    figures = [
        plot_psd_heatmap(gaps),  # legend of the gaps between title and axes
        plot_statistics(psd, basis="volume"),
        plot_psd_curves(gaps, times=[0.0, 10.0, 30.0, 50.0]),
        plot_shape(particles, psd),
        plot_shape(None, psd, frame=-1),  # three title lines beside a colour bar
        plot_compare(many),  # nine long names: the legend goes under the axes
    ]
    for fig in figures:
        _labels_inside_and_apart(fig)
    legend = figures[-1].legends[0]
    assert len(legend.get_texts()) == 9 and legend.get_window_extent().y1 < (
        figures[-1].axes[1].get_window_extent().y0
    )


# --------------------------------------------------------------------------- intervals


def test_statistics_bands_and_frames_below_the_minimum_count(psd: xr.Dataset) -> None:
    psd = psd.copy(deep=True)
    psd["below_min_count"][:] = False
    psd["below_min_count"][1] = True
    psd["d50_number"][1] = np.nan
    psd["d50_number_lower"] = psd["d50_number"] * 0.9
    psd["d50_number_upper"] = psd["d50_number"] * 1.1
    fig = plot_statistics(psd)
    ax, twin = fig.axes
    # One band per D-value (the D50 one between its bounds; D10 and D90 of 1-2 particles
    # have no finite bound, so theirs are empty).
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3
    ys = np.concatenate([p.vertices[:, 1] for p in bands[1].get_paths()])
    assert ys.min() == pytest.approx(np.nanmin(psd["d50_number_lower"].values))
    assert ys.max() == pytest.approx(np.nanmax(psd["d50_number_upper"].values))
    (open_marks,) = [line for line in twin.get_lines() if line.get_gid() == "below-min-count"]
    np.testing.assert_allclose(open_marks.get_xdata(), psd["time"].values[[1]])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-2:] == ["95 % interval", "< 1 counted: no D-value"]
    # A run measured before intervals existed still plots, without bands.
    old = psd.drop_vars([v for v in psd.data_vars if v.endswith(("_lower", "_upper"))])
    old = old.drop_vars("below_min_count")
    legend = [t.get_text() for t in plot_statistics(old).axes[0].get_legend().get_texts()]
    assert legend == ["D90", "D50", "D10", "count"]


def test_cumulative_q3_beside_q3(psd: xr.Dataset) -> None:
    end = int(psd.sizes["time"]) - 1
    fig = plot_cumulative(psd, time=float(psd["time"][end]))
    left, right = fig.axes
    assert left.get_ylabel().startswith("q3(x)") and right.get_ylabel().startswith("Q3(x)")
    (q3_line,) = [line for line in right.get_lines() if line.get_label() == "Q3(x)"]
    expected = 100 * (1 - float(psd["fraction_outside_volume"][end]))
    assert q3_line.get_ydata()[-1] == pytest.approx(expected, abs=1e-6)
    d50 = float(psd["d50_volume"][end])
    assert any(line.get_xdata()[0] == pytest.approx(d50) for line in right.get_lines()[1:])
