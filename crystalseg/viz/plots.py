"""Figures of a measured run: the PSD over time, its statistics, curves, shape, comparisons.

Every figure is drawn from what ``crystalseg measure`` wrote into the run store,
read by :class:`crystalseg.measure.MeasuredRun` (group ``psd``, dims (time,
size_bin) and (time, length_bin, width_bin), and group ``particles``, one row per
particle per frame); nothing is measured again. Figures are
:class:`matplotlib.figure.Figure` objects made directly, with an Agg canvas and no
pyplot state, so they draw headless and in threads; each function also draws into a
given ``ax`` so that a report can compose them. The figures live by job in
:mod:`crystalseg.viz.psd_plots` (distributions over time, runs compared) and
:mod:`crystalseg.viz.shape_plots` (length against width), on the conventions of
:mod:`crystalseg.viz.style`; this module reads the run and writes the files.

Conventions shared by the figures:

* time runs along x in seconds, or minutes or hours for longer runs (the axis
  label says which), measured from the first frame;
* sizes are in µm when the run has a pixel size and in px when it has none
  (the ``size_units`` attribute of ``psd``), on a logarithmic axis where the
  size bins are logarithmic, labelled as :func:`crystalseg.measure.size_label` says;
* a frame in which no particle was counted has no size distribution: it is a
  gap in the heatmap (grey) and in the D-value lines, never a zero;
* colours are colour-blind safe: viridis for densities and sequences in time,
  the Okabe–Ito palette for categories (runs, statistics).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from crystalseg.errors import ConfigError, CrystalsegWarning
from crystalseg.measure.reader import MeasuredRun, frame_position
from crystalseg.store import (
    check_output_outside_run,
    crystalseg_version,
    file_written_whole,
    make_folder,
)
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.viz.psd_plots import (
    last_counted_frame,
    plot_compare,
    plot_cumulative,
    plot_psd_curves,
    plot_psd_heatmap,
    plot_statistics,
)
from crystalseg.viz.shape_plots import SHAPE_COLUMNS, plot_shape
from crystalseg.viz.style import (
    DPI,
    OKABE_ITO,
    Basis,
    density_variable,
    load_small,
    pick_frames,
    psd_time_s,
    run_name,
    settle_layout,
)

#: A frame index as a position (negative counts from the end); kept under its old name.
frame_index = frame_position

log = logging.getLogger(__name__)

ImageFormat = Literal["png", "svg", "pdf"]
#: File formats :func:`plot_run` writes.
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
#: Names (file stems) of the single-run figures, in the order :func:`plot_run` writes them.
RUN_FIGURES: tuple[str, ...] = ("psd_heatmap", "statistics", "psd_curves", "cumulative", "shape")
#: File stem of the comparison figure of :func:`plot_runs`.
COMPARE_FIGURE = "compare"


def open_results(
    run: RunLike,
    *,
    columns: Sequence[str] | None = None,
    frame: int | None = None,
) -> tuple[xr.Dataset, pd.DataFrame | None]:
    """The measurement results of a run store, as ``crystalseg measure`` wrote them.

    Parameters
    ----------
    run : path of the run store
    columns : sequence of str, optional
        Columns of the particle table to read (default: all); reading only the
        ones a figure needs keeps memory low on long runs.
    frame : int, optional
        Read only the particles of this frame (index into ``psd.time``,
        negative from the end); default all frames.

    Returns
    -------
    psd : Dataset
        Group ``psd``, opened lazily: dims (time, size_bin) and
        (time, length_bin, width_bin), attrs with the measurement settings.
    particles : DataFrame or None
        The particle table (one row per particle per frame, columns of
        :data:`crystalseg.measure.PARTICLE_COLUMNS`), None when the store holds
        none.

    Raises
    ------
    InputNotFoundError, RunFormatError
        No such path, or not a run store.
    StageStateError
        The run has not been measured, or its measurement is unfinished.
    """
    measured = measured_run(run)
    particles = None
    if measured.has_particles:
        particles = measured.particles(columns=columns, frames=frame)
    return measured.psd, particles


def measured_run(run: RunLike | MeasuredRun) -> MeasuredRun:
    """``run`` opened by :class:`~crystalseg.measure.MeasuredRun`, with a
    :class:`~crystalseg.errors.CrystalsegWarning` when its results are out of date
    (the figures still show them, as measured)."""
    measured = run if isinstance(run, MeasuredRun) else MeasuredRun(run)
    if measured.outdated is not None:
        warnings.warn(
            f"the results of run '{measured.path}' are out of date: {measured.outdated}; run "
            f"'crystalseg measure {measured.path}' to measure it again",
            CrystalsegWarning,
            stacklevel=3,
        )
    return measured


def plot_run(
    run: RunLike,
    out_dir: RunLike,
    *,
    formats: Sequence[str] = ("png",),
    basis: Basis = "number",
    times: Sequence[float] | None = None,
) -> list[RunPath]:
    """Write every single-run figure of a measured run, in each format.

    Parameters
    ----------
    run : path of the measured run store
    out_dir : folder for the figures (created)
    formats : sequence of {"png", "svg", "pdf"}
    basis : {"number", "volume"}
    times : sequence of float, optional
        Seconds of the PSD curves (default start, middle and end).

    Returns
    -------
    list of Path
        ``out_dir/<figure>.<format>`` for each figure of :data:`RUN_FIGURES`
        (psd_heatmap, statistics, psd_curves, cumulative, shape) and each format,
        in that order; the cumulative figure shows the last of ``times`` (default
        the last frame with counted particles), the shape figure the last frame
        with counted particles.
    """
    fmts = _check_formats(formats)
    density_variable(basis)
    path = run_path(run)
    measured = measured_run(path)
    psd = load_small(measured.psd)
    time_s = psd_time_s(psd)
    # Fail (or warn) on bad times once, before writing anything; then pass frame times.
    at = [float(time_s[i]) for i in pick_frames(time_s, times)] if times is not None else None
    shape_frame = last_counted_frame(psd)
    particles = None
    if measured.has_particles:
        particles = measured.particles(columns=SHAPE_COLUMNS, frames=shape_frame)
    figures = {
        "psd_heatmap": lambda: plot_psd_heatmap(psd, basis=basis),
        "statistics": lambda: plot_statistics(psd, basis=basis),
        "psd_curves": lambda: plot_psd_curves(psd, times=at, basis=basis),
        "cumulative": lambda: plot_cumulative(psd, time=None if at is None else at[-1]),
        "shape": lambda: plot_shape(particles, psd, frame=shape_frame),
    }
    out = run_path(out_dir)
    check_output_outside_run(out)
    make_folder(out)
    name = run_name(path)
    written: list[RunPath] = []
    for stem in RUN_FIGURES:
        fig = figures[stem]()
        fig.suptitle(name, fontsize="small", color="0.35", x=0.01, ha="left")
        written += _save(fig, out / stem, fmts)
    log.info("wrote %d figure files of %s to %s", len(written), path, out)
    return written


def plot_runs(
    runs: Sequence[RunLike],
    out_dir: RunLike,
    *,
    formats: Sequence[str] = ("png",),
    basis: Basis = "number",
    times: Sequence[float] | None = None,
    each: bool = True,
) -> list[RunPath]:
    """Compare several measured runs in one figure, and write each run's own figures.

    Parameters
    ----------
    runs : paths of measured run stores (at least one)
    out_dir : folder for the figures (created)
    formats, basis, times : as in :func:`plot_run`
    each : also write each run's figures into ``out_dir/<run name>/``

    Returns
    -------
    list of Path
        ``out_dir/compare.<format>`` for each format, then each run's figures.
    """
    fmts = _check_formats(formats)
    density_variable(basis)
    paths = [run_path(r) for r in runs]
    if not paths:
        raise ConfigError("no runs to compare; pass at least one run store")
    names = run_names(paths)
    psds = [load_small(measured_run(p).psd) for p in paths]
    out = run_path(out_dir)
    check_output_outside_run(out)
    make_folder(out)
    written = _save(
        plot_compare(list(zip(names, psds, strict=True)), basis=basis), out / COMPARE_FIGURE, fmts
    )
    if each:
        for name, p in zip(names, paths, strict=True):
            written += plot_run(p, out / name, formats=fmts, basis=basis, times=times)
    return written


def default_plot_dir(runs: Sequence[RunLike]) -> RunPath:
    """Where ``crystalseg plot`` writes without ``-o``.

    One run: ``<run>_plots`` next to the run (``runs/a.zarr`` → ``runs/a_plots``).
    Several: ``compare_plots`` next to the first run. The same style as the other
    outputs beside a run: ``<run>_overlays/``, ``<run>_report.html``.
    """
    paths = [run_path(r, resolve=True) for r in runs]
    if not paths:
        raise ConfigError("no runs given; pass at least one run store")
    first = paths[0]
    if len(paths) == 1:
        return first.parent / f"{run_name(first)}_plots"
    return first.parent / "compare_plots"


def run_names(runs: Sequence[RunLike]) -> list[str]:
    """Short, distinct names of run stores for legends and folders (``a.zarr`` → ``a``).

    Runs of the same name in different folders get their folder's name in front
    (``day1-run``, ``day2-run``), and a number if that is still not enough.
    """
    paths = [run_path(r, resolve=True) for r in runs]
    names = [run_name(p) for p in paths]
    if len(set(names)) < len(names):
        names = [
            f"{p.parent.name}-{n}" if names.count(n) > 1 else n
            for p, n in zip(paths, names, strict=True)
        ]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}-{seen[n]}")
    return out


def _save(fig: Figure, stem: RunPath, formats: Sequence[str]) -> list[RunPath]:
    """Save ``fig`` as ``stem.<format>`` for each format; reproducible metadata."""
    settle_layout(fig)
    paths = []
    creator = f"crystalseg {crystalseg_version()}"
    metadata: dict[str, dict[str, Any]] = {
        "png": {"Software": creator},
        "svg": {"Date": None, "Creator": creator},
        "pdf": {"CreationDate": None, "Creator": creator},
    }
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        with file_written_whole(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata[fmt])
        paths.append(target)
    return paths


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [formats]
    fmts = tuple(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in formats))
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise ConfigError(
            f"figure format(s) {unknown or list(formats)} unknown; use {', '.join(FORMATS)} "
            "(e.g. --format png,svg)"
        )
    return fmts


__all__ = [
    "COMPARE_FIGURE",
    "FORMATS",
    "OKABE_ITO",
    "RUN_FIGURES",
    "SHAPE_COLUMNS",
    "default_plot_dir",
    "frame_index",
    "last_counted_frame",
    "measured_run",
    "open_results",
    "plot_compare",
    "plot_cumulative",
    "plot_psd_curves",
    "plot_psd_heatmap",
    "plot_run",
    "plot_runs",
    "plot_shape",
    "plot_statistics",
    "run_names",
]
