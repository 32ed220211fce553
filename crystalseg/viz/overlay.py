"""QC overlays: particle outlines drawn on the raw frames, to check a segmentation by eye.

The outlines come from the very instance labels that the measurement used, read
by :meth:`crystalseg.measure.MeasuredRun.frame`: the stored mask labelled again
with the recorded settings, each label matched to its row of the ``particles``
table (counted or not, why not, its size), never measured again. Besides the
particles of the table, the overlay shows what the measurement dropped before
measuring (foreground pieces below ``min_area_px``, classes left out by
``classes``), drawn as excluded with their reason in the legend, so that
everything the model found is accounted for. This module only draws.

Two renderings:

* :func:`overlay_image`: an RGB array at the frame's resolution whose outline
  pixels are exactly the particles' inner boundary pixels
  (``skimage.segmentation.find_boundaries(mode="inner")``), for lossless PNGs
  and for tests.
* :func:`overlay_frame` and :func:`montage`: matplotlib figures with the
  outlines as vector contours along the pixel edges (crisp at any zoom), a
  title with frame index and time, and a legend or colour bar. A single frame
  is laid out in pixels around the frame at a whole-number zoom (never below
  1:1), its text measured to fit (:mod:`crystalseg.viz.layout`); legends too long
  for the width wrap. Every frame has a scale bar, in µm when the run is calibrated
  and in px when it is not (:func:`crystalseg.viz.scalebar.add_scale_bar`). They use
  :class:`matplotlib.figure.Figure` directly, never pyplot, so they work
  headless and leave no global state.

Colours are colour-blind safe: kept and excluded are blue and vermillion of
the Okabe–Ito palette; sizes use viridis (cut before its palest yellow, which
vanishes on bright-field backgrounds), on a log scale shared by every frame of
the run so that one colour means one size throughout.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Colormap, ListedColormap, LogNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy import ndimage as ndi
from skimage.measure import find_contours
from skimage.segmentation import find_boundaries

from crystalseg.errors import ConfigError
from crystalseg.measure.reader import MeasuredFrame, MeasuredRun, frame_position
from crystalseg.store import check_output_outside_run, file_written_whole, make_folder
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.viz.layout import (
    COLORBAR_GAP_IN,
    COLORBAR_WIDTH_IN,
    fit_title,
    fitted_legend,
    frame_dpi,
    frame_zoom,
    layout_frame_figure,
    montage_columns,
)
from crystalseg.viz.scalebar import add_scale_bar

log = logging.getLogger(__name__)


ColorBy = Literal["size", "status"]

#: Outline colour of particles counted in the distributions (Okabe–Ito blue).
KEPT_COLOR = "#0072B2"
#: Outline colour of particles not counted (Okabe–Ito vermillion).
EXCLUDED_COLOR = "#D55E00"
#: Colour map of sizes: viridis up to 85 %, so the palest yellows do not vanish on bright fields.
SIZE_CMAP: Colormap = ListedColormap(
    colormaps["viridis"](np.linspace(0.0, 0.85, 256)),
    name="viridis_cut",
)

#: Percentiles of the raw intensities mapped to black and white.
GREY_PERCENTILES = (0.5, 99.5)

#: Title and legend of a single-frame figure get at least this width, inches (a small or
#: narrow frame widens its figure rather than wrapping every word).
_FRAME_TEXT_MIN_IN = 4.8
_PANEL_WIDTH_IN = 3.2
_MONTAGE_DPI = 150
#: Frames up to this size are drawn with nearest-neighbour interpolation (see _draw).
_NEAREST_MAX_PX = 640

_REASON_TEXT = {
    "edge": "touches edge",
    "out_of_focus": "out of focus",
    "larger_than_frame": "larger than frame",
    "low_confidence": "low confidence",
    "too_small": "below min area",
    "other_class": "class not measured",
}


# --------------------------------------------------------------------------- the run


def _measured(run: RunLike | MeasuredRun) -> MeasuredRun:
    return run if isinstance(run, MeasuredRun) else MeasuredRun(run)


def _check_color_by(color_by: str) -> None:
    if color_by not in ("size", "status"):
        raise ConfigError(f"color_by {color_by!r} is unknown; use 'size' or 'status'")


# --------------------------------------------------------------------------- frames


def parse_frames(text: str) -> tuple[int, ...]:
    """Frame indices from a comma-separated list such as ``"0,50,-1"`` or ``"0-9,-1"``.

    An entry is an index (negative counts from the end, ``-1`` the last frame) or an
    inclusive range ``first-last`` of two indices of the same sign (``10-19``,
    ``-5--1``), written as the report writes frame ranges.

    Raises
    ------
    ConfigError
        An entry is neither, a range runs backwards, or the list is empty.
    """
    frames: list[int] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        match = _FRAME_ENTRY.fullmatch(entry)
        first = int(match["first"]) if match else 0
        last = int(match["last"]) if match and match["last"] is not None else first
        if match is None or last < first or (first < 0) != (last < 0):
            frames = []
            break
        frames.extend(range(first, last + 1))
    if not frames:
        raise ConfigError(
            f"frames {text!r} is not a comma-separated list of frame indices or ranges; "
            "e.g. 0,50,-1 or 0-9,-1"
        )
    return tuple(frames)


_FRAME_ENTRY = re.compile(r"(?P<first>-?\d+)(?:\s*-\s*(?P<last>-?\d+))?")


def resolve_frames(frames: Sequence[int], n_frames: int) -> list[int]:
    """Frame indices as non-negative positions, negative ones counting from the end.

    Parameters
    ----------
    frames : sequence of int
        Indices into the run's frames; -1 is the last frame.
    n_frames : int
        Frames of the run.

    Returns
    -------
    list of int
        In the given order, duplicates removed.

    Raises
    ------
    ConfigError
        An index is not an integer or lies outside ``-n_frames .. n_frames - 1``.
    """
    out: list[int] = []
    for f in frames:
        index = frame_position(f, n_frames)
        if index not in out:
            out.append(index)
    return out


def sample_frames(n_frames: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over a run of ``n_frames``, first and last included."""
    if n < 1:
        raise ConfigError(f"the number of frames to sample must be >= 1, got {n}")
    return sorted({round(float(v)) for v in np.linspace(0, n_frames - 1, min(n, n_frames))})


def format_time(seconds: float) -> str:
    """A time since the first frame for a title: ``45 s``, ``12.5 min``, ``3 h 05 min``."""
    if not math.isfinite(seconds):
        return "t unknown"
    if abs(seconds) < 120:
        return f"{seconds:.0f} s" if float(seconds).is_integer() else f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    hours, rest = divmod(round(float(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min"


# --------------------------------------------------------------------------- drawing


def _grey(image: np.ndarray) -> np.ndarray:
    """Raw frame scaled by its percentiles to uint8 (y, x)."""
    values = image.astype(np.float32)
    lo, hi = np.percentile(values, GREY_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _size_range(run: MeasuredRun) -> tuple[float, float]:
    """The run's range of counted sizes, widened when narrow; (1, 10) when none was counted."""
    found = run.size_range
    if found is None:
        return 1.0, 10.0
    lo, hi = found
    if hi <= lo * 1.01:
        return lo / 1.5, hi * 1.5
    return lo, hi


def _size_norm(run: MeasuredRun) -> LogNorm:
    lo, hi = _size_range(run)
    return LogNorm(vmin=lo, vmax=hi)


def _label_colors(frame: MeasuredFrame, color_by: ColorBy, norm: LogNorm | None) -> np.ndarray:
    """RGB in 0..1 of every label's outline, shape (n_labels + 1, 3)."""
    colors = np.empty((len(frame.kept), 3))
    colors[:] = to_rgb(EXCLUDED_COLOR)
    if color_by == "size":
        assert norm is not None
        kept = np.flatnonzero(frame.kept)
        if len(kept):
            colors[kept] = SIZE_CMAP(norm(np.clip(frame.size[kept], norm.vmin, norm.vmax)))[:, :3]
    else:
        colors[frame.kept] = to_rgb(KEPT_COLOR)
    return colors


def _contours(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Outline polylines (x, y) along the pixel edges of every label: [(label, vertices)]."""
    out = []
    for i, where in enumerate(ndi.find_objects(labels), start=1):
        if where is None:
            continue
        crop = np.pad(labels[where] == i, 1).astype(np.float32)
        for c in find_contours(crop, 0.5):
            y = c[:, 0] + where[0].start - 1
            x = c[:, 1] + where[1].start - 1
            out.append((i, np.column_stack([x, y])))
    return out


def _draw(
    ax: Axes,
    frame: MeasuredFrame,
    *,
    color_by: ColorBy,
    norm: LogNorm | None,
    linewidth: float,
    title: str,
    pixel_size_um: float | None,
    bar_fontsize: str = "small",
) -> None:
    # Our figures show frames up to ~640 px wide at about 1:1 or larger: nearest keeps the
    # noise as it is (a smoothing filter makes moiré of it); larger frames are shrunk, with
    # matplotlib's anti-aliasing.
    interpolation = "nearest" if max(frame.image.shape) <= _NEAREST_MAX_PX else "antialiased"
    ax.imshow(_grey(frame.image), cmap="gray", vmin=0, vmax=255, interpolation=interpolation)
    colors = _label_colors(frame, color_by, norm)
    lines = _contours(frame.labels)
    if lines:
        ax.add_collection(
            LineCollection(
                [v for _, v in lines],
                colors=colors[[i for i, _ in lines]],
                linewidths=linewidth,
                capstyle="round",
                joinstyle="round",
            )
        )
    ax.set_xlim(-0.5, frame.image.shape[1] - 0.5)
    ax.set_ylim(frame.image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="medium")
    add_scale_bar(
        ax, pixel_size_um=pixel_size_um, width_px=frame.image.shape[1], fontsize=bar_fontsize
    )


def _status_handles(kept: int | None, reasons: dict[str, int] | None) -> list[Line2D]:
    """Legend entries: kept and excluded, with counts and reasons when given."""
    kept_text, excl_text = "kept (counted)", "excluded"
    if kept is not None and reasons is not None:
        kept_text = f"kept: {kept}"
        why = ", ".join(
            f"{n} {_REASON_TEXT.get(r, r)}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])
        )
        excl_text = f"excluded: {sum(reasons.values())}" + (f" ({why})" if why else "")
    return [
        Line2D([], [], color=KEPT_COLOR, lw=2, label=kept_text),
        Line2D([], [], color=EXCLUDED_COLOR, lw=2, label=excl_text),
    ]


def _frame_title(run: MeasuredRun, frame: MeasuredFrame) -> str:
    return f"frame {frame.index} · t = {format_time(frame.time_s)}"


def _add_colorbar(
    fig: Figure, run: MeasuredRun, norm: LogNorm, ax: Any, *, cax: Axes | None = None
) -> None:
    mappable = ScalarMappable(norm=norm, cmap=SIZE_CMAP)
    if cax is not None:
        bar = fig.colorbar(mappable, cax=cax)
    else:
        bar = fig.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label(f"{run.size_label}, kept particles")
    lo, hi = _size_range(run)
    # Sizes read as plain numbers on a 1-2-5 series rather than as powers of ten.
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10.0**e <= hi
    ]
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    if len(ticks) >= 2:
        bar.set_ticks(ticks)
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        bar.ax.yaxis.set_minor_formatter(plain)
    bar.ax.yaxis.set_major_formatter(plain)


# --------------------------------------------------------------------------- public API


def overlay_image(run: RunLike, frame: int, *, color_by: ColorBy = "status") -> np.ndarray:
    """One frame with its particle outlines burnt in, at full resolution.

    Parameters
    ----------
    run : path of a measured run store
    frame : int
        Frame index; negative counts from the end.
    color_by : {"status", "size"}
        "status": kept particles in :data:`KEPT_COLOR`, excluded ones (and the
        pieces dropped before measuring) in :data:`EXCLUDED_COLOR`; "size":
        kept particles coloured by their size on the run's log scale
        (:data:`SIZE_CMAP`), excluded ones in :data:`EXCLUDED_COLOR`.

    Returns
    -------
    ndarray of uint8, shape (y, x, 3)
        The raw frame in grey (scaled between its 0.5 and 99.5 percentiles);
        outline pixels, the inner boundary of every particle
        (``find_boundaries(labels, mode="inner")``: particle pixels with a
        4-neighbour of another label or the background), in the particle's colour.
        No scale bar is burnt in (every other pixel is the frame's own);
        :func:`overlay_frame`, :func:`montage` and :func:`write_overlays` draw one.

    Raises
    ------
    StageStateError
        The run has no mask or no finished measurement, or its mask no longer
        matches the particles table.
    ConfigError
        Frame out of range, unknown ``color_by``.
    """
    _check_color_by(color_by)
    measured = _measured(run)
    (index,) = resolve_frames([frame], measured.n_frames)
    data = measured.frame(index)
    norm = _size_norm(measured) if color_by == "size" else None
    colors = (_label_colors(data, color_by, norm) * 255.0 + 0.5).astype(np.uint8)
    rgb = np.repeat(_grey(data.image)[:, :, None], 3, axis=2)
    edge = find_boundaries(data.labels, mode="inner") & (data.labels > 0)
    rgb[edge] = colors[data.labels[edge]]
    return rgb


def overlay_frame(
    run: RunLike,
    frame: int,
    *,
    color_by: ColorBy = "size",
    ax: Axes | None = None,
) -> Figure:
    """A figure of one frame with its particle outlines, to check the segmentation.

    Parameters
    ----------
    run : path of a measured run store
    frame : int
        Frame index; negative counts from the end.
    color_by : {"size", "status"}
        "size": kept particles coloured by the measured size (the measurement's
        ``size_column``, log scale shared by the whole run, colour bar in µm or
        px), excluded ones in :data:`EXCLUDED_COLOR`; "status": kept and
        excluded in two colours, with a legend giving counts and reasons.
    ax : matplotlib Axes, optional
        Draw into this axes (its figure gets the colour bar or legend); default
        a new :class:`~matplotlib.figure.Figure`.

    Returns
    -------
    Figure
        The raw frame in grey (percentile-scaled), outlines along the pixel
        edges of each particle, title with frame index and time. A new figure
        is laid out in pixels: saved at ``fig.dpi`` (``savefig``'s default) the
        frame fills ``zoom * x`` by ``zoom * y`` pixels, ``zoom`` the whole
        number >= 1 that brings its longer side nearest 512, with the title,
        the legend (wrapped when long) and the colour bar fitted around it.

    Raises
    ------
    StageStateError, ConfigError
        As :func:`overlay_image`.
    """
    _check_color_by(color_by)
    measured = _measured(run)
    (index,) = resolve_frames([frame], measured.n_frames)
    return _overlay_figure(measured, index, color_by=color_by, ax=ax)


def _overlay_figure(
    run: MeasuredRun, index: int, *, color_by: ColorBy, ax: Axes | None = None
) -> Figure:
    data = run.frame(index)
    norm = _size_norm(run) if color_by == "size" else None
    title = f"{run.name}: {_frame_title(run, data)}"
    pixel = run.calibration.pixel_size_um
    if norm is not None:
        handles = [Line2D([], [], color=EXCLUDED_COLOR, lw=2, label=f"excluded: {data.n_excluded}")]
    else:
        handles = _status_handles(data.n_kept, data.reasons)
    if ax is not None:
        # The caller's figure and layout: draw, with the legend under the axes.
        fig: Figure = ax.get_figure()  # type: ignore[assignment]
        _draw(
            ax, data, color_by=color_by, norm=norm, linewidth=1.2, title=title, pixel_size_um=pixel
        )
        if norm is not None:
            _add_colorbar(fig, run, norm, ax)
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncols=len(handles),
            frameon=False,
        )
        return fig

    # Our own figure, laid out in pixels: the frame at an integer zoom (>= 1:1), dpi set so
    # that saving at fig.dpi gives exactly that, and the text measured to fit around it.
    h, w = data.image.shape
    zoom = frame_zoom(h, w)
    img_w, img_h = w * zoom, h * zoom
    dpi = frame_dpi(max(img_w, img_h))
    fig = Figure(figsize=(img_w / dpi, img_h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _draw(ax, data, color_by=color_by, norm=norm, linewidth=1.2, title=title, pixel_size_um=pixel)
    cax = None
    if norm is not None:
        cax = fig.add_axes((0.0, 0.0, 0.05, 1.0))
        _add_colorbar(fig, run, norm, ax, cax=cax)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    bar_px = (COLORBAR_GAP_IN + COLORBAR_WIDTH_IN + 0.6) * dpi if cax is not None else 0.0
    text_px = max(img_w + bar_px, _FRAME_TEXT_MIN_IN * dpi)
    fit_title(ax.title, text_px, renderer)
    target = ax

    def place(items: list[Line2D], ncols: int) -> Legend:
        return target.legend(
            handles=items,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncols=ncols,
            frameon=False,
        )

    fitted_legend(place, handles, text_px, renderer)
    layout_frame_figure(fig, ax, cax, (img_w, img_h))
    return fig


def montage(
    run: RunLike,
    *,
    n: int = 9,
    frames: Sequence[int] | None = None,
    color_by: ColorBy = "status",
) -> Figure:
    """A grid of overlays of frames sampled over a run, for a look at a long run.

    Parameters
    ----------
    run : path of a measured run store
    n : int
        Frames to show, spread evenly over the run from the first to the last
        (fewer when the run is shorter); ignored when ``frames`` is given.
    frames : sequence of int, optional
        The frames to show instead (negative count from the end).
    color_by : {"status", "size"}
        As in :func:`overlay_frame`; one legend or colour bar for all panels.

    Returns
    -------
    Figure
        One axes per frame (plus the colour bar's with ``color_by="size"``),
        each titled with its frame index and time.
    """
    _check_color_by(color_by)
    measured = _measured(run)
    return _montage(measured, n=n, frames=frames, color_by=color_by)


def _montage(
    run: MeasuredRun, *, n: int, frames: Sequence[int] | None, color_by: ColorBy
) -> Figure:
    chosen = (
        resolve_frames(frames, run.n_frames)
        if frames is not None
        else sample_frames(run.n_frames, n)
    )
    if not chosen:
        raise ConfigError("no frames to show in the montage; give at least one")
    h, w = run.calibration.frame_shape_px
    cols = montage_columns(len(chosen), w / h)
    rows = math.ceil(len(chosen) / cols)
    # Panels of about equal area whatever the frame's shape; wide enough for their titles.
    panel_w = _PANEL_WIDTH_IN * min(2.0, max(0.6, math.sqrt(w / h)))
    panel_h = panel_w * h / w
    extra = 1.2 if color_by == "size" else 0.0
    fig = Figure(
        figsize=(cols * panel_w + extra, rows * (panel_h + 0.3) + 0.8),
        dpi=_MONTAGE_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[len(chosen) :]:
        ax.remove()
    axes = axes[: len(chosen)]
    norm = _size_norm(run) if color_by == "size" else None
    kept = 0
    reasons: Counter[str] = Counter()
    for ax, index in zip(axes, chosen, strict=True):
        data = run.frame(index)
        kept += data.n_kept
        reasons.update(data.reasons)
        _draw(
            ax,
            data,
            color_by=color_by,
            norm=norm,
            linewidth=0.8,
            title=_frame_title(run, data),
            pixel_size_um=run.calibration.pixel_size_um,
            bar_fontsize="x-small",
        )
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fit_title(
        fig.suptitle(f"{run.name}: {len(chosen)} of {run.n_frames} frames"),
        fig.bbox.width - 0.2 * fig.dpi,
        renderer,
    )
    if norm is not None:
        _add_colorbar(fig, run, norm, axes)
        handles = [Line2D([], [], color=EXCLUDED_COLOR, lw=2, label="excluded")]
    else:
        handles = _status_handles(kept, dict(reasons))
        handles[0].set_label(f"kept: {kept} in these frames")

    def place(items: list[Line2D], ncols: int) -> Legend:
        return fig.legend(handles=items, loc="outside lower center", ncols=ncols, frameon=False)

    fitted_legend(place, handles, fig.bbox.width - 0.2 * fig.dpi, renderer)
    return fig


def write_overlays(
    run: RunLike,
    out_dir: RunLike,
    *,
    frames: Sequence[int] | None = None,
    color_by: ColorBy = "status",
    montage_n: int = 9,
) -> list[RunPath]:
    """Write a PNG overlay per frame and a montage of the run into a folder.

    Parameters
    ----------
    run : path of a measured run store
    out_dir : folder to write into (created)
    frames : sequence of int, optional
        Frames to write (negative count from the end); default the first,
        middle and last.
    color_by : {"status", "size"}
        As in :func:`overlay_frame`.
    montage_n : int
        Frames in ``montage.png`` (spread over the run); 0 writes no montage.

    Returns
    -------
    list of Path
        ``frame_NNNNN.png`` for each frame, in the given order, then
        ``montage.png``. Frame PNGs show the frame at (at least) its full
        resolution, each frame pixel a whole number of PNG pixels (see
        :func:`overlay_frame`).

    Raises
    ------
    StageStateError
        The run has no mask or no finished measurement.
    ConfigError
        A frame out of range (the message gives the valid range), unknown
        ``color_by``, negative ``montage_n``.
    """
    _check_color_by(color_by)
    if isinstance(montage_n, bool) or not isinstance(montage_n, int) or montage_n < 0:
        raise ConfigError(f"montage_n must be an integer >= 0 (0: no montage), got {montage_n!r}")
    out = run_path(out_dir)
    check_output_outside_run(out)
    measured = _measured(run)
    n = measured.n_frames
    chosen = resolve_frames([0, n // 2, n - 1] if frames is None else frames, n)
    make_folder(out)
    written = []
    for index in chosen:
        fig = _overlay_figure(measured, index, color_by=color_by)
        path = out / f"frame_{index:05d}.png"
        with file_written_whole(path) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
        written.append(path)
        log.info("wrote %s", path)
    if montage_n:
        path = out / "montage.png"
        fig = _montage(measured, n=montage_n, frames=None, color_by=color_by)
        with file_written_whole(path) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
        written.append(path)
        log.info("wrote %s", path)
    return written


__all__ = [
    "EXCLUDED_COLOR",
    "KEPT_COLOR",
    "SIZE_CMAP",
    "ColorBy",
    "format_time",
    "montage",
    "overlay_frame",
    "overlay_image",
    "parse_frames",
    "resolve_frames",
    "sample_frames",
    "write_overlays",
]
