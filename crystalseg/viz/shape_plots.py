"""The shape figure of a frame: crystal length (max Feret) against width (min Feret).

Drawn from the particle table of a measured run (or, without it, from the psd's
length × width histogram of elongated crystals); it only draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from crystalseg.dims import TIME
from crystalseg.measure.distributions import require_columns
from crystalseg.measure.reader import frame_position, size_label
from crystalseg.viz.style import (
    OKABE_ITO,
    SQUARE_FIGSIZE,
    bin_edges,
    figure_axes,
    plain_log_ticks,
    psd_settings,
    psd_time_s,
    require_psd,
    say_empty,
    settle_layout,
    size_units_text,
    time_scale,
)

#: Columns of the particle table that :func:`plot_shape` reads.
SHAPE_COLUMNS: tuple[str, ...] = ("frame", "feret_diameter_max", "feret_diameter_min", "kept")


_ASPECT_LINES = (1.0, 2.0, 5.0, 10.0)


_SCATTER_MAX = 3000  # above this many particles, plot_shape draws a 2-D histogram


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
    time_s = psd_time_s(psd)
    index = frame_position(frame, len(time_s))
    own = ax is None
    fig, ax = figure_axes(ax, figsize=SQUARE_FIGSIZE)
    scale, unit = time_scale(time_s)
    units = size_units_text(psd)
    when = f"frame {index}, t = {time_s[index] / scale:.4g} {unit}"
    ax.set_xlabel(size_label("feret_diameter_max", units))
    ax.set_ylabel(size_label("feret_diameter_min", units))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_box_aspect(1.0)
    lower, upper = bin_edges(psd)

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
            say_empty(ax, "No particles were counted in this frame")
            return settle_layout(fig) if own else fig
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
        require_psd(psd, ["length_width"])
        hist = np.asarray(psd["length_width"].isel({TIME: index}).values, dtype=np.float64)
        ratio = psd_settings(psd).get("elongated_aspect_ratio", 2.0)
        n = float(np.nansum(hist))
        if own:  # room for a third title line above the square axes
            fig.set_size_inches(SQUARE_FIGSIZE[0], SQUARE_FIGSIZE[1] + 0.4)
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
            say_empty(ax, "No elongated crystals in this frame")
            return settle_layout(fig) if own else fig
        mesh = ax.pcolormesh(
            edges, edges, np.ma.masked_equal(hist.T, 0), cmap="viridis", rasterized=True
        )
        _count_colorbar(fig, mesh, ax)
        lo = max(int(occupied[0]) - 1, 0)
        hi = min(int(occupied[-1]) + 1, len(lower) - 1)
        _square_limits(ax, lower[lo], upper[hi])
    _aspect_lines(ax)
    return settle_layout(fig) if own else fig


def _square_limits(ax: Axes, low: float, high: float) -> None:
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    plain_log_ticks(ax)


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


__all__ = ["SHAPE_COLUMNS", "plot_shape"]
