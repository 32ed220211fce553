"""Figures of the size distribution over time: heatmap, D-values, curves, cumulative, runs compared.

Each function takes the ``psd`` Dataset of a measured run
(:attr:`crystalseg.measure.MeasuredRun.psd`, or :func:`crystalseg.viz.plots.open_results`)
and only draws; see :mod:`crystalseg.viz.plots` for the conventions and for
:func:`~crystalseg.viz.plots.plot_run`, which writes them all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import ConfigError, CrystalsegWarning
from crystalseg.measure.reader import SIZE_NAMES
from crystalseg.viz.style import (
    EMPTY_COLOUR,
    OKABE_ITO,
    Basis,
    below_min_count,
    bin_edges,
    counted_per_frame,
    density_label,
    density_variable,
    figure_axes,
    has_particles,
    new_figure,
    pick_frames,
    plain_log_ticks,
    psd_settings,
    psd_time_s,
    require_psd,
    say_empty,
    sequence_colours,
    size_axis_label,
    size_units_text,
    time_edges,
    time_scale,
    time_spans,
)


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
    density_name = density_variable(basis)
    require_psd(psd, [density_name])
    fig, ax = figure_axes(ax)
    scale, unit = time_scale(psd_time_s(psd))
    t_edges = time_edges(psd_time_s(psd)) / scale
    lower, upper = bin_edges(psd)
    s_edges = np.r_[lower, upper[-1]]
    density = np.asarray(psd[density_name].transpose(TIME, SIZE_BIN).values, dtype=np.float64)
    has = has_particles(psd)
    values = np.ma.masked_array(density.T, mask=np.broadcast_to(~has, density.T.shape))

    ax.set_facecolor(EMPTY_COLOUR)
    ax.set_yscale("log")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(size_axis_label(psd))
    ax.set_title(f"{basis.capitalize()}-weighted size distribution over time")
    occupied = np.flatnonzero(np.nansum(np.where(has[:, None], density, 0.0), axis=0) > 0)
    if occupied.size == 0:
        ax.set_xlim(t_edges[0], t_edges[-1])
        ax.set_ylim(s_edges[0], s_edges[-1])
        say_empty(ax, "No particles were counted in any frame of this run")
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
    plain_log_ticks(ax)
    bar = fig.colorbar(mesh, ax=ax, pad=0.02)
    bar.set_label(density_label(basis))
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
    density_variable(basis)
    names = [f"d{q}_{basis}" for q in (10, 50, 90)]
    require_psd(psd, [*names, "count_kept"])
    fig, ax = figure_axes(ax)
    time_s = psd_time_s(psd)
    scale, unit = time_scale(time_s)
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
    ax.set_ylabel(f"{basis}-weighted {size_axis_label(psd)}")
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

    below = below_min_count(psd)
    min_count = psd_settings(psd).get("min_count", psd.attrs.get("min_count"))
    if below.any():
        for lo, hi in time_spans(t, below):
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
        say_empty(ax, "No particles were counted in any frame of this run")
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
    require_psd(psd, ["q3"])
    time_s = psd_time_s(psd)
    frame = pick_frames(time_s, [time])[0] if time is not None else last_counted_frame(psd)
    scale, unit = time_scale(time_s)
    lower, upper = bin_edges(psd)
    q3 = np.nan_to_num(np.asarray(psd["q3"].isel({TIME: frame}).values, dtype=np.float64))
    dlog = np.log10(upper) - np.log10(lower)
    cum = 100.0 * np.cumsum(q3 * dlog)
    if ax is None:
        fig = new_figure(figsize=(9.0, 4.0))
        left, right = fig.subplots(1, 2)
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
        left, right = ax, ax.twinx()
    left.bar(lower, q3, width=upper - lower, align="edge", color=OKABE_ITO[0], alpha=0.7)
    left.set_xscale("log")
    left.set_xlabel(size_axis_label(psd))
    left.set_ylabel("q3(x), volume density per log10 x")
    right.plot(upper, cum, color=OKABE_ITO[4], lw=1.8, label="Q3(x)")
    right.set_xscale("log")
    right.set_ylim(0.0, 102.0)
    right.set_xlabel(size_axis_label(psd))
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
        plain_log_ticks(axis)
    when = f"t = {time_s[frame] / scale:.4g} {unit}, n = {counted_per_frame(psd)[frame]:g}"
    left.set_title(f"q3: volume density distribution\n{when}")
    right.set_title(f"Q3: cumulative volume distribution\n{when}")
    right.legend(fontsize="small", loc="lower right")
    if not occupied.size:
        say_empty(left, "No particles were counted in this frame")
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
    density_name = density_variable(basis)
    require_psd(psd, [density_name])
    fig, ax = figure_axes(ax)
    time_s = psd_time_s(psd)
    scale, unit = time_scale(time_s)
    frames = pick_frames(time_s, times)
    lower, upper = bin_edges(psd)
    centres = np.asarray(psd[SIZE_BIN].values, dtype=np.float64)
    density = np.asarray(psd[density_name].transpose(TIME, SIZE_BIN).values, dtype=np.float64)
    has = has_particles(psd)
    counts = counted_per_frame(psd)
    colours = sequence_colours(len(frames))

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
    ax.set_xlabel(size_axis_label(psd))
    ax.set_ylabel(density_label(basis))
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
        say_empty(ax, "No particles were counted in the chosen frames")
    plain_log_ticks(ax)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=min(len(frames), 3),
        fontsize="small",
        frameon=False,
    )
    return fig


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
    density_variable(basis)
    runs = list(runs)
    if not runs:
        raise ConfigError("plot_compare needs at least one (name, psd) pair; pass the runs")
    d50_name = f"d50_{basis}"
    for name, psd in runs:
        require_psd(psd, [d50_name, "count_kept"], name=name)
    times = [psd_time_s(psd) for _, psd in runs]
    scale, unit = time_scale(np.concatenate(times))
    units = {size_units_text(psd) for _, psd in runs}
    if len(units) > 1:
        warnings.warn(
            f"the runs measure sizes in different units ({', '.join(sorted(units))}); their "
            "D50 are not comparable. Import the uncalibrated runs with --pixel-size and "
            "measure them again",
            CrystalsegWarning,
            stacklevel=2,
        )
    fig = new_figure(figsize=(7.0, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    styles = ("-", "--", ":", "-.")
    many = len(runs) <= 12
    for k, ((name, psd), t) in enumerate(zip(runs, times, strict=True)):
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        style = styles[(k // len(OKABE_ITO)) % len(styles)]
        marker = "o" if len(t) <= 60 and many else None
        label = name if len(units) == 1 else f"{name} ({size_units_text(psd)})"
        d50 = np.asarray(psd[d50_name].values, dtype=np.float64)
        count = np.asarray(psd["count_kept"].values, dtype=np.float64)
        kw: dict[str, Any] = {"color": colour, "ls": style, "lw": 1.6, "marker": marker, "ms": 3}
        top.plot(t / scale, d50, label=label, **kw)
        bottom.plot(t / scale, count, label=label, **kw)
    column = str(runs[0][1].attrs.get("size_column", "ecd"))
    size_name = SIZE_NAMES.get(column, column)
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


def last_counted_frame(psd: xr.Dataset) -> int:
    """Index of the last frame with counted particles (the last frame if there is none).

    The frame :func:`plot_run` shows in the shape figure: a run's last frames may
    be empty (crystals dissolved or left the field).
    """
    require_psd(psd, [])
    nonempty = np.flatnonzero(has_particles(psd))
    return int(nonempty[-1]) if nonempty.size else int(psd.sizes[TIME]) - 1


__all__ = [
    "last_counted_frame",
    "plot_compare",
    "plot_cumulative",
    "plot_psd_curves",
    "plot_psd_heatmap",
    "plot_statistics",
]
