"""Figures of a measured run: the PSD over time, its statistics, curves, shape, comparisons.

Every figure is drawn from what ``crystalseg measure`` wrote into the run store
(group ``psd``, dims (time, size_bin) and (time, length_bin, width_bin), and
group ``particles``, one row per particle per frame); nothing is measured again.
Figures are :class:`matplotlib.figure.Figure` objects made directly, with an Agg
canvas and no pyplot state, so they draw headless and in threads; each function
also draws into a given ``ax`` so that a report can compose them.

Conventions shared by the figures:

* time runs along x in seconds, or minutes or hours for longer runs (the axis
  label says which), measured from the first frame;
* sizes are in µm when the run has a pixel size and in px when it has none
  (the ``size_units`` attribute of ``psd``), on a logarithmic axis where the
  size bins are logarithmic;
* a frame in which no particle was counted has no size distribution: it is a
  gap in the heatmap (grey) and in the D-value lines, never a zero;
* colours are colour-blind safe: viridis for densities and sequences in time,
  the Okabe–Ito palette for categories (runs, statistics).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import ConfigError, CrystalsegWarning, RunFormatError, StageStateError
from crystalseg.measure.distributions import require_columns
from crystalseg.store import (
    check_output_outside_run,
    crystalseg_version,
    file_written_whole,
    make_folder,
    stage_info,
)
from crystalseg.store.location import RunLike, RunPath, run_path

log = logging.getLogger(__name__)

Basis = Literal["number", "volume"]
ImageFormat = Literal["png", "svg", "pdf"]

#: File formats :func:`plot_run` writes.
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
#: Names (file stems) of the single-run figures, in the order :func:`plot_run` writes them.
RUN_FIGURES: tuple[str, ...] = ("psd_heatmap", "statistics", "psd_curves", "cumulative", "shape")
#: File stem of the comparison figure of :func:`plot_runs`.
COMPARE_FIGURE = "compare"

#: Okabe & Ito (2008) colours, ordered for contrast on white (yellow last).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
#: Colour of frames without counted particles (drawn as gaps).
EMPTY_COLOUR = "0.88"
#: Columns of the particle table that :func:`plot_shape` reads.
SHAPE_COLUMNS: tuple[str, ...] = ("frame", "feret_diameter_max", "feret_diameter_min", "kept")

_MEASURE_STAGE = "measure"
_PSD_GROUP = "psd"
_PARTICLES_GROUP = "particles"
_FIGSIZE = (7.0, 4.2)
_SQUARE = (5.6, 5.4)
_DPI = 150
_DENSITY = {"number": "q0", "volume": "q3"}
_SIZE_NAMES = {
    "ecd": "ECD",
    "equivalent_diameter_area": "ECD",
    "feret_diameter_max": "max Feret diameter",
    "feret_diameter_min": "min Feret diameter",
    "axis_major_length": "major axis",
    "axis_minor_length": "minor axis",
}
_ASPECT_LINES = (1.0, 2.0, 5.0, 10.0)
_SCATTER_MAX = 3000  # above this many particles, plot_shape draws a 2-D histogram


# --------------------------------------------------------------------------- reading


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
    path = run_path(run)
    info = stage_info(path).get(_MEASURE_STAGE)
    if info is None:
        raise StageStateError(
            f"run '{path}' has not been measured; run 'crystalseg measure {path}' first"
        )
    if info.get("status") != "finished":
        done, total = info.get("frames_done", 0), info.get("frames_total", "?")
        raise StageStateError(
            f"the measurement of run '{path}' is unfinished ({done} of {total} frames); "
            f"run 'crystalseg measure {path}' again to finish it"
        )
    from crystalseg.measure.run import measurement_outdated

    outdated = measurement_outdated(path)
    if outdated is not None:
        warnings.warn(
            f"the results of run '{path}' are out of date: {outdated}; run "
            f"'crystalseg measure {path}' to measure it again",
            CrystalsegWarning,
            stacklevel=3,
        )
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if _PSD_GROUP not in root:
        raise RunFormatError(
            f"run '{path}' is marked measured but has no group '{_PSD_GROUP}'; "
            f"run 'crystalseg measure {path} --overwrite'"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="Failed to open Zarr")
        psd = xr.open_zarr(str(path), group=_PSD_GROUP, consolidated=None)
    particles = None
    node = root.get(_PARTICLES_GROUP)
    if isinstance(node, zarr.Group):
        particles = _read_particles(node, path, columns, frame, psd.sizes[TIME])
    return psd, particles


def _read_particles(
    group: zarr.Group,
    path: RunPath,
    columns: Sequence[str] | None,
    frame: int | None,
    n_frames: int,
) -> pd.DataFrame:
    """Columns (and optionally the rows of one frame) of the particle table."""
    order = group.attrs.asdict().get("columns")
    stored = [str(c) for c in order] if isinstance(order, list) else [n for n, _ in group.arrays()]
    wanted = stored if columns is None else list(columns)
    missing = [c for c in wanted if c not in stored]
    if missing:
        raise ConfigError(
            f"the particle table of '{path}' has no column(s) {missing}; choose from {stored}"
        )
    rows: slice | np.ndarray = slice(None)
    if frame is not None:
        index = frame_index(frame, n_frames)
        frames = np.asarray(_column(group, "frame", path)[:])
        if frames.size and np.all(frames[1:] >= frames[:-1]):
            lo, hi = np.searchsorted(frames, [index, index + 1])
            rows = slice(int(lo), int(hi))
        else:
            rows = np.flatnonzero(frames == index)
    data: dict[str, np.ndarray] = {}
    for name in wanted:
        arr = _column(group, name, path)
        values = np.asarray(
            arr[rows] if isinstance(rows, slice) else arr.get_orthogonal_selection(rows)
        )
        data[name] = values.astype(object) if values.dtype.kind in "TU" else values
    return pd.DataFrame(data)


def _column(group: zarr.Group, name: str, path: RunPath) -> zarr.Array:
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise RunFormatError(f"the particle table of '{path}' has no array '{name}'")
    return node


# --------------------------------------------------------------------------- figures


def plot_psd_heatmap(psd: xr.Dataset, *, basis: Basis = "number", ax: Axes | None = None) -> Figure:
    """The size distribution of every frame as one image: time × log size, colour = density.

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` of a measured run (:func:`open_results`); uses ``q0`` or
        ``q3`` (time, size_bin), the bin edges ``size_bin_lower`` and
        ``size_bin_upper``, and ``number`` or ``count_kept`` (time,) to tell
        empty frames.
    basis : {"number", "volume"}
        Number-weighted density q0 or volume-weighted q3.
    ax : Axes, optional
        Draw here (and the colour bar beside it); default a new figure.

    Returns
    -------
    Figure
        One cell per frame and size bin: x spans from half an interval before
        the first frame to half after the last (each frame's cell centred on
        its time), y spans the bins holding particles in any frame plus one
        empty bin on each side, logarithmic. Frames without counted particles
        are grey gaps.
    """
    density_name = _density_name(basis)
    _require(psd, [density_name])
    fig, ax = _figure_axes(ax)
    scale, unit = _time_scale(_time_s(psd))
    t_edges = _time_edges(_time_s(psd)) / scale
    lower, upper = _bin_edges(psd)
    s_edges = np.r_[lower, upper[-1]]
    density = np.asarray(psd[density_name].transpose(TIME, SIZE_BIN).values, dtype=np.float64)
    has = _has_particles(psd)
    values = np.ma.masked_array(density.T, mask=np.broadcast_to(~has, density.T.shape))

    ax.set_facecolor(EMPTY_COLOUR)
    ax.set_yscale("log")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(_size_label(psd))
    ax.set_title(f"{basis.capitalize()}-weighted size distribution over time")
    occupied = np.flatnonzero(np.nansum(np.where(has[:, None], density, 0.0), axis=0) > 0)
    if occupied.size == 0:
        ax.set_xlim(t_edges[0], t_edges[-1])
        ax.set_ylim(s_edges[0], s_edges[-1])
        _say_empty(ax, "No particles were counted in any frame of this run")
        return fig
    lo = max(int(occupied[0]) - 1, 0)
    hi = min(int(occupied[-1]) + 1, len(lower) - 1)
    shown = density[has][:, lo : hi + 1]
    vmax = float(np.nanmax(shown)) if shown.size else 1.0
    mesh = ax.pcolormesh(
        t_edges,
        s_edges,
        values,
        cmap="viridis",
        vmin=0.0,
        vmax=vmax if vmax > 0 else 1.0,
        shading="flat",
        rasterized=True,
    )
    ax.set_xlim(t_edges[0], t_edges[-1])
    ax.set_ylim(lower[lo], upper[hi])
    _plain_log_ticks(ax)
    bar = fig.colorbar(mesh, ax=ax, pad=0.02)
    bar.set_label(_density_label(basis))
    if not has.all():
        ax.legend(
            handles=[Patch(facecolor=EMPTY_COLOUR, edgecolor="0.5", label="no particles counted")],
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            frameon=False,
            fontsize="small",
            borderaxespad=0.1,
        )
        ax.set_title(ax.get_title(), loc="center", pad=20)
    return fig


def plot_statistics(psd: xr.Dataset, *, basis: Basis = "number", ax: Axes | None = None) -> Figure:
    """D10, D50 and D90 over time with their 95 % intervals, and the crystal count.

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` (or ``psd_window``) of a measured run; uses ``d10_<basis>``,
        ``d50_<basis>``, ``d90_<basis>`` and ``count_kept`` (time,), and where
        present their ``_lower``/``_upper`` bounds, ``count_kept_lower``/``_upper``
        and ``below_min_count`` (runs measured before intervals existed have none).
    basis : {"number", "volume"}
    ax : Axes, optional
        Draw here (the count goes on its twin axis); default a new figure.

    Returns
    -------
    Figure
        Lines labelled "D10", "D50", "D90" on the left axis, each with its 95 %
        interval shaded; "count" on the right with its interval. Frames without
        particles are gaps; frames below the minimum count (no D-value) are
        shaded grey and their counts drawn as open markers, and the minimum
        count is a dotted line on the count axis.
    """
    _density_name(basis)
    names = [f"d{q}_{basis}" for q in (10, 50, 90)]
    _require(psd, [*names, "count_kept"])
    fig, ax = _figure_axes(ax)
    time_s = _time_s(psd)
    scale, unit = _time_scale(time_s)
    t = time_s / scale
    d10, d50, d90 = (np.asarray(psd[n].values, dtype=np.float64) for n in names)
    count = np.asarray(psd["count_kept"].values, dtype=np.float64)
    marker = "o" if len(t) <= 100 else None
    colour = OKABE_ITO[0]
    has_bounds = all(f"{n}_{b}" in psd for n in names for b in ("lower", "upper"))

    if has_bounds:
        for name, alpha in ((names[0], 0.12), (names[1], 0.3), (names[2], 0.12)):
            lower = np.asarray(psd[f"{name}_lower"].values, dtype=np.float64)
            upper = np.asarray(psd[f"{name}_upper"].values, dtype=np.float64)
            ax.fill_between(t, lower, upper, color=colour, alpha=alpha, linewidth=0)
    else:
        ax.fill_between(t, d10, d90, color=colour, alpha=0.15, linewidth=0)
    ax.plot(t, d90, color=colour, lw=1.0, ls="--", marker=marker, ms=3, label="D90")
    ax.plot(t, d50, color=colour, lw=2.0, marker=marker, ms=4, label="D50")
    ax.plot(t, d10, color=colour, lw=1.0, ls=":", marker=marker, ms=3, label="D10")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(f"{basis}-weighted {_size_label(psd)}")
    finite = np.isfinite(np.r_[d10, d90])
    if finite.any():
        top = np.nanmax(d90)
        if has_bounds:
            upper90 = np.asarray(psd[f"{names[2]}_upper"].values, dtype=np.float64)
            if np.isfinite(upper90).any():
                top = max(top, min(np.nanmax(upper90), 2 * top))
        ax.set_ylim(0.0, float(top) * 1.1)
    ax.set_title(f"{basis.capitalize()}-weighted D10, D50, D90 and crystal count")
    ax.grid(True, alpha=0.3)

    below = _below_min_count(psd)
    min_count = _settings(psd).get("min_count", psd.attrs.get("min_count"))
    if below.any():
        for lo, hi in _spans(t, below):
            ax.axvspan(lo, hi, color=EMPTY_COLOUR, alpha=0.6, lw=0, zorder=0)

    twin = ax.twinx()
    count_colour = OKABE_ITO[1]
    if "count_kept_lower" in psd and "count_kept_upper" in psd:
        twin.fill_between(
            t,
            np.asarray(psd["count_kept_lower"].values, dtype=np.float64),
            np.asarray(psd["count_kept_upper"].values, dtype=np.float64),
            color=count_colour,
            alpha=0.15,
            linewidth=0,
        )
    twin.plot(
        t, count, color=count_colour, lw=1.2, marker="s" if marker else None, ms=3, label="count"
    )
    if below.any():
        twin.plot(
            t[below],
            count[below],
            ls="none",
            marker="s",
            ms=5,
            mfc="white",
            mec=count_colour,
            gid="below-min-count",
        )
    if min_count is not None and below.any():
        twin.axhline(float(min_count), color=count_colour, lw=0.8, ls=":", gid="min-count")
    twin.set_ylabel("crystals counted per frame", color=count_colour)
    twin.tick_params(axis="y", colors=count_colour)
    top_count = float(np.nanmax(count)) if count.size else 0.0
    if "count_kept_upper" in psd and count.size:
        top_count = max(top_count, float(np.nanmax(psd["count_kept_upper"].values)))
    twin.set_ylim(0.0, max(top_count, 1.0) * 1.1)
    if len(t) == 1:
        ax.set_xlim(t[0] - 0.5, t[0] + 0.5)
    handles: list[Any] = [*ax.get_lines(), twin.get_lines()[0]]
    if has_bounds:
        handles.append(Patch(color=colour, alpha=0.3, label="95 % interval"))
    if below.any():
        text = f"< {min_count:g} counted: no D-value" if min_count else "too few: no D-value"
        handles.append(Patch(color=EMPTY_COLOUR, label=text))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=min(len(handles), 4),
        fontsize="small",
        frameon=False,
    )
    if not finite.any():
        _say_empty(ax, "No particles were counted in any frame of this run")
    return fig


def plot_cumulative(
    psd: xr.Dataset, *, time: float | None = None, ax: Axes | None = None
) -> Figure:
    """Volume density q3 and cumulative Q3 of one frame, side by side (ISO 9276-1).

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` of a measured run; uses ``q3``, the bin edges and, when
        present, ``d10_volume``..``d90_volume`` with their bounds.
    time : float, optional
        Seconds since the first frame; the nearest frame is drawn (default the
        last frame with counted particles).
    ax : Axes, optional
        Draw q3 here and Q3 on its twin axis; default a new figure with two panels.

    Returns
    -------
    Figure
        Left: q3(x), the volume density per log10 size (bars over the bins).
        Right: Q3(x), the cumulative volume distribution in % at the upper bin
        edges, with D10, D50 and D90 (volume) marked and their 95 % intervals as
        horizontal bars.
    """
    _require(psd, ["q3"])
    time_s = _time_s(psd)
    frame = _pick_frames(time_s, [time])[0] if time is not None else last_counted_frame(psd)
    scale, unit = _time_scale(time_s)
    lower, upper = _bin_edges(psd)
    q3 = np.nan_to_num(np.asarray(psd["q3"].isel({TIME: frame}).values, dtype=np.float64))
    dlog = np.log10(upper) - np.log10(lower)
    cum = 100.0 * np.cumsum(q3 * dlog)
    if ax is None:
        fig = _new_figure(figsize=(9.0, 4.0))
        left, right = fig.subplots(1, 2)
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
        left, right = ax, ax.twinx()
    left.bar(lower, q3, width=upper - lower, align="edge", color=OKABE_ITO[0], alpha=0.7)
    left.set_xscale("log")
    left.set_xlabel(_size_label(psd))
    left.set_ylabel("q3(x), volume density per log10 x")
    right.plot(upper, cum, color=OKABE_ITO[4], lw=1.8, label="Q3(x)")
    right.set_xscale("log")
    right.set_ylim(0.0, 102.0)
    right.set_xlabel(_size_label(psd))
    right.set_ylabel("Q3(x), cumulative volume (%)")
    for q, style in ((10, ":"), (50, "-"), (90, "--")):
        name = f"d{q}_volume"
        if name not in psd:
            continue
        value = float(psd[name].values[frame])
        if not math.isfinite(value):
            continue
        right.axvline(value, color="0.3", lw=0.9, ls=style, label=f"D{q} = {value:.3g}")
        if f"{name}_lower" in psd:
            lo = float(psd[f"{name}_lower"].values[frame])
            hi = float(psd[f"{name}_upper"].values[frame])
            if math.isfinite(lo) and math.isfinite(hi):
                right.errorbar(
                    value,
                    q,
                    xerr=[[value - lo], [hi - value]],
                    fmt="o",
                    color="0.3",
                    ms=3,
                    capsize=3,
                )
    occupied = np.flatnonzero(q3 > 0)
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.25)
        if occupied.size:
            lo_i = max(int(occupied[0]) - 1, 0)
            hi_i = min(int(occupied[-1]) + 1, len(lower) - 1)
            axis.set_xlim(lower[lo_i], upper[hi_i])
        _plain_log_ticks(axis)
    when = f"t = {time_s[frame] / scale:.4g} {unit}, n = {_counts(psd)[frame]:g}"
    left.set_title(f"q3: volume density distribution\n{when}")
    right.set_title(f"Q3: cumulative volume distribution\n{when}")
    right.legend(fontsize="small", loc="lower right")
    if not occupied.size:
        _say_empty(left, "No particles were counted in this frame")
    return fig


def plot_psd_curves(
    psd: xr.Dataset,
    *,
    times: Sequence[float] | None = None,
    basis: Basis = "number",
    ax: Axes | None = None,
) -> Figure:
    """Size distributions of chosen frames, overlaid: how the PSD moved over the run.

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` of a measured run; uses ``q0`` or ``q3`` and ``count_kept``.
    times : sequence of float, optional
        Seconds since the first frame; each picks the nearest frame (times
        that pick the same frame give one curve). Default: the start, middle
        and end of the run.
    basis : {"number", "volume"}
    ax : Axes, optional

    Returns
    -------
    Figure
        One line per chosen frame (density at the bin centres, log size axis),
        coloured from early (dark) to late (light), legend with each frame's
        time and particle count. A frame without particles keeps its legend
        entry but draws no line.
    """
    density_name = _density_name(basis)
    _require(psd, [density_name])
    fig, ax = _figure_axes(ax)
    time_s = _time_s(psd)
    scale, unit = _time_scale(time_s)
    frames = _pick_frames(time_s, times)
    lower, upper = _bin_edges(psd)
    centres = np.asarray(psd[SIZE_BIN].values, dtype=np.float64)
    density = np.asarray(psd[density_name].transpose(TIME, SIZE_BIN).values, dtype=np.float64)
    has = _has_particles(psd)
    counts = _counts(psd)
    colours = _sequence_colours(len(frames))

    used = np.zeros(len(centres), dtype=bool)
    for colour, i in zip(colours, frames, strict=True):
        y = density[i] if has[i] else np.full(len(centres), np.nan)
        used |= np.nan_to_num(y) > 0
        n_text = f"n = {counts[i]:g}" if has[i] else "no particles counted"
        ax.plot(
            centres,
            y,
            color=colour,
            lw=1.8,
            marker="o",
            ms=2.5,
            label=f"t = {time_s[i] / scale:.4g} {unit} ({n_text})",
        )
    ax.set_xscale("log")
    ax.set_xlabel(_size_label(psd))
    ax.set_ylabel(_density_label(basis))
    ax.set_title(
        f"{basis.capitalize()}-weighted size distribution at "
        f"{len(frames)} time{'s' if len(frames) > 1 else ''}"
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.set_ylim(bottom=0.0)
    occupied = np.flatnonzero(used)
    if occupied.size:
        lo = max(int(occupied[0]) - 1, 0)
        hi = min(int(occupied[-1]) + 1, len(lower) - 1)
        ax.set_xlim(lower[lo], upper[hi])
    else:
        ax.set_xlim(lower[0], upper[-1])
        ax.set_ylim(0.0, 1.0)
        _say_empty(ax, "No particles were counted in the chosen frames")
    _plain_log_ticks(ax)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=min(len(frames), 3),
        fontsize="small",
        frameon=False,
    )
    return fig


def plot_shape(
    particles: pd.DataFrame | None,
    psd: xr.Dataset,
    *,
    frame: int = -1,
    ax: Axes | None = None,
) -> Figure:
    """Length (maximum Feret) against width (minimum Feret) of the crystals of one frame.

    Parameters
    ----------
    particles : DataFrame or None
        The particle table (all frames or only this one) with columns
        ``frame``, ``feret_diameter_max`` and ``feret_diameter_min`` (and
        ``kept``: only counted particles are drawn). None falls back to the
        psd's ``length_width`` histogram, which holds only elongated crystals.
    psd : Dataset
        Group ``psd`` of the same run (times, units, bins).
    frame : int
        Frame index, negative from the end (default the last frame).
    ax : Axes, optional

    Returns
    -------
    Figure
        A scatter (or, above a few thousand crystals, a 2-D histogram) on log
        axes with equal ranges, and dashed lines of constant aspect ratio
        1:1, 2:1, 5:1 and 10:1.
    """
    time_s = _time_s(psd)
    index = frame_index(frame, len(time_s))
    own = ax is None
    fig, ax = _figure_axes(ax, figsize=_SQUARE)
    scale, unit = _time_scale(time_s)
    units = _size_units(psd)
    when = f"frame {index}, t = {time_s[index] / scale:.4g} {unit}"
    ax.set_xlabel(f"length, max Feret diameter ({units})")
    ax.set_ylabel(f"width, min Feret diameter ({units})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_box_aspect(1.0)
    lower, upper = _bin_edges(psd)

    if particles is not None:
        require_columns(
            particles,
            ["frame", "feret_diameter_max", "feret_diameter_min"],
            "Pass the table from open_results(run)[1] (or None to use the psd's "
            "length-width histogram).",
        )
        rows = particles[particles["frame"].to_numpy() == index]
        if "kept" in rows:
            rows = rows[rows["kept"].to_numpy(dtype=bool)]
        length = rows["feret_diameter_max"].to_numpy(dtype=np.float64)
        width = rows["feret_diameter_min"].to_numpy(dtype=np.float64)
        ok = np.isfinite(length) & np.isfinite(width) & (length > 0) & (width > 0)
        length, width = length[ok], width[ok]
        ax.set_title(f"Crystal length vs width\n{when}, {len(length)} counted")
        if len(length) == 0:
            _square_limits(ax, lower[0], upper[-1])
            _aspect_lines(ax)
            _say_empty(ax, "No particles were counted in this frame")
            return _settle_layout(fig) if own else fig
        low, high = float(width.min()) / 1.5, float(length.max()) * 1.5
        if len(length) <= _SCATTER_MAX:
            ax.scatter(
                length,
                width,
                s=20,
                color=OKABE_ITO[0],
                alpha=0.7,
                edgecolors="none",
                label="counted crystals",
                rasterized=len(length) > 500,
            )
        else:
            edges = np.geomspace(low, high, 61)
            hist, _, _ = np.histogram2d(length, width, bins=(edges, edges))
            mesh = ax.pcolormesh(
                edges,
                edges,
                np.ma.masked_equal(hist.T, 0),
                cmap="viridis",
                rasterized=True,
            )
            _count_colorbar(fig, mesh, ax)
        _square_limits(ax, low, high)
    else:
        _require(psd, ["length_width"])
        hist = np.asarray(psd["length_width"].isel({TIME: index}).values, dtype=np.float64)
        ratio = _settings(psd).get("elongated_aspect_ratio", 2.0)
        n = float(np.nansum(hist))
        if own:  # room for a third title line above the square axes
            fig.set_size_inches(_SQUARE[0], _SQUARE[1] + 0.4)
        ax.set_title(
            # three short lines: the title must fit above a square axes beside a colour bar
            f"Crystal length vs width:\nelongated crystals (aspect ratio ≥ {ratio:g})\n"
            f"{when}, {n:.4g} counted"
        )
        edges = np.r_[lower, upper[-1]]
        occupied = np.flatnonzero(hist.sum(axis=1) + hist.sum(axis=0) > 0)
        if occupied.size == 0:
            _square_limits(ax, lower[0], upper[-1])
            _aspect_lines(ax)
            _say_empty(ax, "No elongated crystals in this frame")
            return _settle_layout(fig) if own else fig
        mesh = ax.pcolormesh(
            edges, edges, np.ma.masked_equal(hist.T, 0), cmap="viridis", rasterized=True
        )
        _count_colorbar(fig, mesh, ax)
        lo = max(int(occupied[0]) - 1, 0)
        hi = min(int(occupied[-1]) + 1, len(lower) - 1)
        _square_limits(ax, lower[lo], upper[hi])
    _aspect_lines(ax)
    return _settle_layout(fig) if own else fig


def plot_compare(runs: Sequence[tuple[str, xr.Dataset]], *, basis: Basis = "number") -> Figure:
    """Several runs on one figure: D50 (top) and crystal count (bottom) over time.

    Parameters
    ----------
    runs : sequence of (name, psd)
        The runs' names (legend) and ``psd`` Datasets, at least one.
    basis : {"number", "volume"}
        Basis of the D50.

    Returns
    -------
    Figure
        Two axes sharing the time axis, one line per run on each, one
        Okabe–Ito colour per run (line styles repeat the palette beyond eight
        runs); the legend names the runs.
    """
    _density_name(basis)
    runs = list(runs)
    if not runs:
        raise ConfigError("plot_compare needs at least one (name, psd) pair; pass the runs")
    d50_name = f"d50_{basis}"
    for name, psd in runs:
        _require(psd, [d50_name, "count_kept"], name=name)
    times = [_time_s(psd) for _, psd in runs]
    scale, unit = _time_scale(np.concatenate(times))
    units = {_size_units(psd) for _, psd in runs}
    if len(units) > 1:
        warnings.warn(
            f"the runs measure sizes in different units ({', '.join(sorted(units))}); their "
            "D50 are not comparable. Import the uncalibrated runs with --pixel-size and "
            "measure them again",
            CrystalsegWarning,
            stacklevel=2,
        )
    fig = _new_figure(figsize=(7.0, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    styles = ("-", "--", ":", "-.")
    many = len(runs) <= 12
    for k, ((name, psd), t) in enumerate(zip(runs, times, strict=True)):
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        style = styles[(k // len(OKABE_ITO)) % len(styles)]
        marker = "o" if len(t) <= 60 and many else None
        label = name if len(units) == 1 else f"{name} ({_size_units(psd)})"
        d50 = np.asarray(psd[d50_name].values, dtype=np.float64)
        count = np.asarray(psd["count_kept"].values, dtype=np.float64)
        kw: dict[str, Any] = {"color": colour, "ls": style, "lw": 1.6, "marker": marker, "ms": 3}
        top.plot(t / scale, d50, label=label, **kw)
        bottom.plot(t / scale, count, label=label, **kw)
    size_name = _SIZE_NAMES.get(str(runs[0][1].attrs.get("size_column", "ecd")), "size")
    unit_text = next(iter(units)) if len(units) == 1 else "µm or px"
    top.set_ylabel(f"{basis} D50, {size_name} ({unit_text})")
    top.set_ylim(bottom=0.0)
    bottom.set_ylabel("crystals counted per frame")
    bottom.set_ylim(bottom=0.0)
    bottom.set_xlabel(f"time ({unit})")
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    top.set_title(f"{len(runs)} runs: {basis}-weighted D50 and crystal count")
    if len(runs) <= 6:
        top.legend(fontsize="small", framealpha=0.85)
    else:
        # Below the axes, in as many columns as fit: beside them it would push under the title.
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        for ncols in (4, 3, 2, 1):
            legend = fig.legend(
                handles=top.get_lines(),
                loc="outside lower center",
                ncols=ncols,
                fontsize="small",
                frameon=False,
            )
            if ncols == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
                break
            legend.remove()
    return fig


# --------------------------------------------------------------------------- files


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
    list of Path (or UPath for a URL)
        ``out_dir/<figure>.<format>`` for each figure of :data:`RUN_FIGURES`
        (psd_heatmap, statistics, psd_curves, cumulative, shape) and each format,
        in that order; the cumulative figure shows the last of ``times`` (default
        the last frame with counted particles), the shape figure the last frame
        with counted particles.
    """
    fmts = _check_formats(formats)
    _density_name(basis)
    path = run_path(run)
    psd, _ = open_results(path, columns=())
    psd = _load_small(psd)
    time_s = _time_s(psd)
    # Fail (or warn) on bad times once, before writing anything; then pass frame times.
    at = [float(time_s[i]) for i in _pick_frames(time_s, times)] if times is not None else None
    shape_frame = last_counted_frame(psd)
    _, particles = open_results(path, columns=SHAPE_COLUMNS, frame=shape_frame)
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
    name = _run_name(path)
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
    list of Path (or UPath for a URL)
        ``out_dir/compare.<format>`` for each format, then each run's figures.
    """
    fmts = _check_formats(formats)
    _density_name(basis)
    paths = [run_path(r) for r in runs]
    if not paths:
        raise ConfigError("no runs to compare; pass at least one run store")
    names = run_names(paths)
    psds = [_load_small(open_results(p, columns=())[0]) for p in paths]
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


def last_counted_frame(psd: xr.Dataset) -> int:
    """Index of the last frame with counted particles (the last frame if there is none).

    The frame :func:`plot_run` shows in the shape figure: a run's last frames may
    be empty (crystals dissolved or left the field).
    """
    _require(psd, [])
    nonempty = np.flatnonzero(_has_particles(psd))
    return int(nonempty[-1]) if nonempty.size else int(psd.sizes[TIME]) - 1


def default_plot_dir(runs: Sequence[RunLike]) -> RunPath:
    """Where ``crystalseg plot`` writes without ``-o``.

    One run: ``<run>-plots`` next to the run (``runs/a.zarr`` → ``runs/a-plots``).
    Several: ``compare-plots`` next to the first run.
    """
    paths = [run_path(r, resolve=True) for r in runs]
    if not paths:
        raise ConfigError("no runs given; pass at least one run store")
    first = paths[0]
    if len(paths) == 1:
        return first.parent / f"{_run_name(first)}-plots"
    return first.parent / "compare-plots"


def run_names(runs: Sequence[RunLike]) -> list[str]:
    """Short, distinct names of run stores for legends and folders (``a.zarr`` → ``a``).

    Runs of the same name in different folders get their folder's name in front
    (``day1-run``, ``day2-run``), and a number if that is still not enough.
    """
    paths = [run_path(r, resolve=True) for r in runs]
    names = [_run_name(p) for p in paths]
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


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float] = _FIGSIZE) -> Figure:
    """A Figure with its own Agg canvas: no pyplot, no global backend, thread-safe."""
    fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_axes(ax: Axes | None, figsize: tuple[float, float] = _FIGSIZE) -> tuple[Figure, Axes]:
    if ax is None:
        fig = _new_figure(figsize)
        return fig, fig.add_subplot()
    root = ax.get_figure(root=True)
    if not isinstance(root, Figure):
        raise ConfigError("ax must belong to a matplotlib Figure")
    return root, ax


def _settle_layout(fig: Figure) -> Figure:
    """Run a constrained layout to rest before the figure is drawn.

    One pass does not settle axes of fixed aspect (the square shape plot): its
    first draw can still cut the x label off. Two more passes do.
    """
    engine = fig.get_layout_engine()
    if engine is not None:
        for _ in range(2):
            engine.execute(fig)
    return fig


def _save(fig: Figure, stem: RunPath, formats: Sequence[str]) -> list[RunPath]:
    """Save ``fig`` as ``stem.<format>`` for each format; reproducible metadata."""
    _settle_layout(fig)
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
            fig.savefig(tmp, format=fmt, dpi=_DPI, metadata=metadata[fmt])
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


def _density_name(basis: str) -> str:
    if basis not in _DENSITY:
        raise ConfigError(f"basis {basis!r} is unknown; use 'number' or 'volume'")
    return _DENSITY[basis]


def _require(psd: Any, names: Sequence[str], *, name: str | None = None) -> None:
    if not isinstance(psd, xr.Dataset):
        raise ConfigError(
            f"expected the psd Dataset of a measured run, got {type(psd).__name__}; "
            "pass open_results(run)[0]"
        )
    missing = [n for n in names if n not in psd.variables]
    if missing:
        which = f" of run '{name}'" if name else ""
        raise ConfigError(
            f"the psd{which} lacks {missing}; pass the Dataset from open_results(run)[0] "
            "(group 'psd' written by crystalseg measure)"
        )


def _load_small(psd: xr.Dataset) -> xr.Dataset:
    """Load the per-frame variables once (not the large length × width histogram)."""
    small = psd.drop_vars("length_width", errors="ignore").load()
    if "length_width" in psd:
        small["length_width"] = psd["length_width"]
    return small


def _time_s(psd: xr.Dataset) -> np.ndarray:
    """Times in seconds (as stored: since the run's first frame), shape (time,).

    A datetime64 time coordinate counts from the first frame shown.
    """
    if TIME not in psd.coords:
        raise ConfigError("the psd has no 'time' coordinate; pass open_results(run)[0]")
    t = np.asarray(psd[TIME].values)
    if t.size == 0:
        raise ConfigError("the psd has no frames to plot")
    if np.issubdtype(t.dtype, np.datetime64):
        return (t - t[0]) / np.timedelta64(1, "s")
    return t.astype(np.float64)


def _time_scale(time_s: np.ndarray) -> tuple[float, str]:
    """Seconds per displayed unit and the unit: s up to 10 min, min up to 3 h, then h."""
    span = float(np.nanmax(time_s) - np.nanmin(time_s)) if time_s.size else 0.0
    if span <= 600:
        return 1.0, "s"
    if span <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _time_edges(time_s: np.ndarray) -> np.ndarray:
    """Cell edges centred on each frame's time, shape (time + 1,)."""
    if len(time_s) == 1:
        half = 0.5
        return np.array([time_s[0] - half, time_s[0] + half])
    mid = (time_s[1:] + time_s[:-1]) / 2
    return np.r_[2 * time_s[0] - mid[0], mid, 2 * time_s[-1] - mid[-1]]


def _bin_edges(psd: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper size-bin edges, shape (size_bin,) each."""
    if "size_bin_lower" in psd.variables and "size_bin_upper" in psd.variables:
        lower = np.asarray(psd["size_bin_lower"].values, dtype=np.float64)
        upper = np.asarray(psd["size_bin_upper"].values, dtype=np.float64)
        return lower, upper
    if SIZE_BIN not in psd.coords:
        raise ConfigError("the psd has no 'size_bin' coordinate; pass open_results(run)[0]")
    centres = np.asarray(psd[SIZE_BIN].values, dtype=np.float64)
    if len(centres) == 1:
        return centres / math.sqrt(10), centres * math.sqrt(10)
    ratio = math.sqrt(centres[1] / centres[0])
    return centres / ratio, centres * ratio


def _has_particles(psd: xr.Dataset) -> np.ndarray:
    """Whether each frame has counted particles, shape (time,) bool."""
    for name in ("number", "count_kept"):
        if name in psd.variables:
            values = np.asarray(psd[name].values, dtype=np.float64)
            return np.nan_to_num(values) > 0
    density = np.asarray(psd["q0"].values, dtype=np.float64)
    return np.nansum(density, axis=1) > 0


def _below_min_count(psd: xr.Dataset) -> np.ndarray:
    """Frames with counted particles but fewer than the minimum count, shape (time,) bool
    (none for runs measured before the minimum count existed)."""
    if "below_min_count" not in psd.variables:
        return np.zeros(psd.sizes[TIME], dtype=bool)
    return np.asarray(psd["below_min_count"].values, dtype=bool) & _has_particles(psd)


def _spans(t: np.ndarray, flags: np.ndarray) -> list[tuple[float, float]]:
    """Time spans (half way to the neighbouring frames) of the runs of True in ``flags``."""
    edges = _time_edges(t)
    out = []
    padded = np.r_[False, flags, False].astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    stops = np.flatnonzero(np.diff(padded) == -1)
    for a, b in zip(starts, stops, strict=True):
        out.append((float(edges[a]), float(edges[b])))
    return out


def _counts(psd: xr.Dataset) -> np.ndarray:
    name = "count_kept" if "count_kept" in psd.variables else "number"
    if name not in psd.variables:
        return np.full(psd.sizes[TIME], np.nan)
    return np.asarray(psd[name].values, dtype=np.float64)


def frame_index(frame: int, n_frames: int) -> int:
    """A frame index as a position 0..n_frames-1; negative indices count from the end.

    Raises
    ------
    ConfigError
        ``frame`` is not an integer or lies outside ``-n_frames .. n_frames - 1``.
    """
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise ConfigError(f"frame index {frame!r} is not an integer; give e.g. 0, 50 or -1")
    if not -n_frames <= frame < n_frames:
        raise ConfigError(
            f"frame {frame} is out of range: the run has {n_frames} frames, so valid indices "
            f"are 0..{n_frames - 1} (or -{n_frames}..-1 counting from the end)"
        )
    return int(frame) % n_frames


def _pick_frames(time_s: np.ndarray, times: Sequence[float] | None) -> list[int]:
    """Frame indices nearest to ``times`` (seconds), in the given order, repeats dropped."""
    if times is None:
        wanted = [time_s[0], (time_s[0] + time_s[-1]) / 2, time_s[-1]]
    else:
        try:
            wanted = [float(t) for t in times]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"times must be numbers of seconds, got {times!r}") from exc
        if not wanted or not all(math.isfinite(t) for t in wanted):
            raise ConfigError(f"times must be finite seconds, e.g. 0,600,3600; got {times!r}")
        step = float(np.median(np.diff(time_s))) if len(time_s) > 1 else 0.0
        outside = [t for t in wanted if t < time_s[0] - step or t > time_s[-1] + step]
        if outside:
            warnings.warn(
                f"times {outside} s lie outside the run ({time_s[0]:g} to {time_s[-1]:g} s); "
                "the nearest frames are shown",
                CrystalsegWarning,
                stacklevel=3,
            )
    frames = [int(np.argmin(np.abs(time_s - t))) for t in wanted]
    return list(dict.fromkeys(frames))


def _size_units(psd: xr.Dataset) -> str:
    unit = psd.attrs.get("size_units")
    if unit is None and SIZE_BIN in psd.coords:
        unit = psd[SIZE_BIN].attrs.get("units")
    names = {"um": "µm", "µm": "µm", "micrometre": "µm", "px": "px"}
    return names.get(str(unit), str(unit or "px"))


def _size_label(psd: xr.Dataset) -> str:
    name = _SIZE_NAMES.get(str(psd.attrs.get("size_column", "ecd")), "size")
    return f"{name} ({_size_units(psd)})"


def _density_label(basis: str) -> str:
    sub = "0" if basis == "number" else "3"
    return f"$q_{sub}$: {basis} fraction per decade of size"


def _settings(psd: xr.Dataset) -> dict[str, Any]:
    import json

    raw = psd.attrs.get("measure_settings")
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return dict(raw) if isinstance(raw, dict) else {}


def _sequence_colours(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in (np.linspace(0.0, 0.8, n) if n > 1 else [0.0])]


def _square_limits(ax: Axes, low: float, high: float) -> None:
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    _plain_log_ticks(ax)


def _aspect_lines(ax: Axes) -> None:
    """Dashed lines width = length / r, labelled r:1 where they leave the axes."""
    low, high = ax.get_xlim()
    x = np.geomspace(low, high, 50)
    for r in _ASPECT_LINES:
        ax.plot(x, x / r, color="0.45", lw=0.8, ls="--", zorder=0.5, gid=f"aspect-{r:g}")
        x_text = high / 1.25
        if x_text / r > low * 1.3:
            ax.annotate(
                f"{r:g}:1",
                (x_text, x_text / r),
                fontsize="small",
                color="0.35",
                ha="right",
                va="bottom",
                rotation=45,
                rotation_mode="anchor",
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.legend(
        handles=[Line2D([], [], color="0.45", lw=0.8, ls="--", label="constant aspect ratio")],
        loc="upper left",
        fontsize="small",
        framealpha=0.85,
    )


def _count_colorbar(fig: Figure, mesh: QuadMesh, ax: Axes) -> None:
    """Colour bar of a 2-D histogram: whole crystals from 0 (not 0.9 to 1.1 when all are 1)."""
    counts: np.ma.MaskedArray = np.ma.asarray(mesh.get_array())
    mesh.set_clim(0.0, max(float(counts.max()), 1.0))
    bar = fig.colorbar(mesh, ax=ax, pad=0.02)
    bar.set_label("crystals per bin")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plain_log_ticks(ax: Axes) -> None:
    """Label the log axes of ``ax`` with plain numbers (20, not 2×10^1), denser when short.

    Call after the limits are set: the ticks depend on how many decades show.
    """
    for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or not 0 < low < high:
            continue
        decades = math.log10(high / low)
        if decades > 4:
            subs: tuple[float, ...] = (1.0,)
        elif decades > 1.5:
            subs = (1.0, 2.0, 5.0)
        elif decades > 0.8:
            subs = (1.0, 2.0, 3.0, 5.0)
        else:
            subs = tuple(float(k) for k in range(1, 10))
        axis.set_major_locator(LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _say_empty(ax: Axes, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize="large",
        color="0.25",
        bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round,pad=0.5"},
        gid="empty-note",
    )


def _run_name(path: RunPath) -> str:
    name = path.resolve().name
    return name[: -len(".zarr")] if name.endswith(".zarr") and len(name) > 5 else name


__all__ = [
    "COMPARE_FIGURE",
    "FORMATS",
    "OKABE_ITO",
    "RUN_FIGURES",
    "default_plot_dir",
    "last_counted_frame",
    "open_results",
    "plot_compare",
    "plot_psd_curves",
    "plot_psd_heatmap",
    "plot_run",
    "plot_runs",
    "plot_shape",
    "plot_statistics",
    "run_names",
]
