"""What the figures of a measured run share: colours, figure making, time and size axes.

Conventions (see :mod:`crystalseg.viz.plots`): time along x in s, min or h from the
first frame; sizes in µm or px on log axes; frames without counted particles are
gaps, never zeros; colour-blind safe colours (viridis, Okabe–Ito). The helpers take
the ``psd`` Dataset of :class:`crystalseg.measure.MeasuredRun` and only draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import ConfigError, CrystalsegWarning
from crystalseg.measure.reader import read_settings_json, size_label, unit_text
from crystalseg.store.location import RunPath

Basis = Literal["number", "volume"]

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
#: Figure sizes (inches) and dpi of the figures.


FIGSIZE = (7.0, 4.2)


SQUARE_FIGSIZE = (5.6, 5.4)


DPI = 150


DENSITY_VARIABLES = {"number": "q0", "volume": "q3"}


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A Figure with its own Agg canvas: no pyplot, no global backend, thread-safe."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_axes(ax: Axes | None, figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    """``(figure, ax)``: a new figure and axes if ``ax`` is None, else ``ax`` and its figure."""
    if ax is None:
        fig = new_figure(figsize)
        return fig, fig.add_subplot()
    root = ax.get_figure(root=True)
    if not isinstance(root, Figure):
        raise ConfigError("ax must belong to a matplotlib Figure")
    return root, ax


def settle_layout(fig: Figure) -> Figure:
    """Run a constrained layout to rest before the figure is drawn.

    One pass does not settle axes of fixed aspect (the square shape plot): its
    first draw can still cut the x label off. Two more passes do.
    """
    engine = fig.get_layout_engine()
    if engine is not None:
        for _ in range(2):
            engine.execute(fig)
    return fig


def density_variable(basis: str) -> str:
    """The psd variable of a basis: ``"q0"`` (number) or ``"q3"`` (volume)."""
    if basis not in DENSITY_VARIABLES:
        raise ConfigError(f"basis {basis!r} is unknown; use 'number' or 'volume'")
    return DENSITY_VARIABLES[basis]


def require_psd(psd: Any, names: Sequence[str], *, name: str | None = None) -> None:
    """Refuse anything but a psd Dataset holding the variables ``names``."""
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


def load_small(psd: xr.Dataset) -> xr.Dataset:
    """Load the per-frame variables once (not the large length × width histogram)."""
    small = psd.drop_vars("length_width", errors="ignore").load()
    if "length_width" in psd:
        small["length_width"] = psd["length_width"]
    return small


def psd_time_s(psd: xr.Dataset) -> np.ndarray:
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


def time_scale(time_s: np.ndarray) -> tuple[float, str]:
    """Seconds per displayed unit and the unit: s up to 10 min, min up to 3 h, then h."""
    span = float(np.nanmax(time_s) - np.nanmin(time_s)) if time_s.size else 0.0
    if span <= 600:
        return 1.0, "s"
    if span <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def time_edges(time_s: np.ndarray) -> np.ndarray:
    """Cell edges centred on each frame's time, shape (time + 1,)."""
    if len(time_s) == 1:
        half = 0.5
        return np.array([time_s[0] - half, time_s[0] + half])
    mid = (time_s[1:] + time_s[:-1]) / 2
    return np.r_[2 * time_s[0] - mid[0], mid, 2 * time_s[-1] - mid[-1]]


def bin_edges(psd: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
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


def has_particles(psd: xr.Dataset) -> np.ndarray:
    """Whether each frame has counted particles, shape (time,) bool."""
    for name in ("number", "count_kept"):
        if name in psd.variables:
            values = np.asarray(psd[name].values, dtype=np.float64)
            return np.nan_to_num(values) > 0
    density = np.asarray(psd["q0"].values, dtype=np.float64)
    return np.nansum(density, axis=1) > 0


def below_min_count(psd: xr.Dataset) -> np.ndarray:
    """Frames with counted particles but fewer than the minimum count, shape (time,) bool
    (none for runs measured before the minimum count existed)."""
    if "below_min_count" not in psd.variables:
        return np.zeros(psd.sizes[TIME], dtype=bool)
    return np.asarray(psd["below_min_count"].values, dtype=bool) & has_particles(psd)


def time_spans(t: np.ndarray, flags: np.ndarray) -> list[tuple[float, float]]:
    """Time spans (half way to the neighbouring frames) of the runs of True in ``flags``."""
    edges = time_edges(t)
    out = []
    padded = np.r_[False, flags, False].astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    stops = np.flatnonzero(np.diff(padded) == -1)
    for a, b in zip(starts, stops, strict=True):
        out.append((float(edges[a]), float(edges[b])))
    return out


def counted_per_frame(psd: xr.Dataset) -> np.ndarray:
    """Particles counted per frame (``count_kept``, else ``number``), shape (time,)."""
    name = "count_kept" if "count_kept" in psd.variables else "number"
    if name not in psd.variables:
        return np.full(psd.sizes[TIME], np.nan)
    return np.asarray(psd[name].values, dtype=np.float64)


def pick_frames(time_s: np.ndarray, times: Sequence[float] | None) -> list[int]:
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


def size_units_text(psd: xr.Dataset) -> str:
    """The printed unit of the psd's sizes: ``"µm"`` or ``"px"``."""
    unit = psd.attrs.get("size_units")
    if unit is None and SIZE_BIN in psd.coords:
        unit = psd[SIZE_BIN].attrs.get("units")
    return unit_text(unit)


def size_axis_label(psd: xr.Dataset) -> str:
    """Label of the psd's size axis (:func:`crystalseg.measure.size_label`): ``"ECD (µm)"``."""
    return size_label(
        str(psd.attrs.get("size_column", "ecd")),
        psd.attrs.get("size_units") or size_units_text(psd),
    )


def density_label(basis: str) -> str:
    """Axis label of the density q0 or q3."""
    sub = "0" if basis == "number" else "3"
    return f"$q_{sub}$: {basis} fraction per decade of size"


def psd_settings(psd: xr.Dataset) -> dict[str, Any]:
    """The measurement settings recorded in the psd's attributes ({} if none)."""
    return read_settings_json(psd)


def sequence_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` viridis colours from dark (early) to light (late), short of its palest yellow."""
    cmap = colormaps["viridis"]
    return [cmap(v) for v in (np.linspace(0.0, 0.8, n) if n > 1 else [0.0])]


def plain_log_ticks(ax: Axes) -> None:
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


def say_empty(ax: Axes, text: str) -> None:
    """A note in the middle of ``ax`` saying why it shows nothing."""
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


def run_name(path: RunPath) -> str:
    """The name of a run store for titles and folders: ``a.zarr`` -> ``a``."""
    name = (path.resolve() if isinstance(path, Path) else path).name
    return name[: -len(".zarr")] if name.endswith(".zarr") and len(name) > 5 else name
