"""QC overlays: particle outlines drawn on the raw frames, to check a segmentation by eye.

The outlines come from the very instance labels that the measurement used: the
stored class mask of a frame is labelled again with the measurement settings
recorded in the store (:func:`crystalseg.measure.run.label_mask_frame`, the call
:func:`~crystalseg.measure.run.measure_mask_frame` makes), and each label is
matched to its row of the ``particles`` table by ``(frame, label)``. Whether a
particle was counted, why not, and its size are read from that row, never
measured again; a label set or pixel count that disagrees with the table (the
mask changed, or another crystalseg labelled it) is an error, not a silent
mismatch.

Besides the particles of the table, the overlay shows what the measurement
dropped before measuring: foreground pieces below ``min_area_px`` and pixels of
classes left out by ``classes``. They are drawn as excluded, with their reason
in the legend, so that everything the model found is accounted for. Boundary
class that the measurement left off a particle (the outer rim band that
``trim_boundary`` takes off) is part of no particle and is not drawn.

Two renderings:

* :func:`overlay_image`: an RGB array at the frame's resolution whose outline
  pixels are exactly the particles' inner boundary pixels
  (``skimage.segmentation.find_boundaries(mode="inner")``), for lossless PNGs
  and for tests.
* :func:`overlay_frame` and :func:`montage`: matplotlib figures with the
  outlines as vector contours along the pixel edges (crisp at any zoom), a
  title with frame index and time, and a legend or colour bar. A single frame
  is laid out in pixels around the frame at a whole-number zoom (never below
  1:1), its text measured to fit; legends too long for the width wrap. They use
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
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import zarr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Colormap, ListedColormap, LogNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy import ndimage as ndi
from skimage.measure import find_contours
from skimage.segmentation import find_boundaries

from crystalseg.classes import boundary_class
from crystalseg.dims import IMAGE, MASK, TIME
from crystalseg.errors import ConfigError, RunFormatError, StageStateError
from crystalseg.measure.instances import crystal_classes
from crystalseg.measure.results import PARTICLES_GROUP, STAGE, size_units
from crystalseg.measure.run import label_mask_frame, measured_mask_changed, read_mask_codes
from crystalseg.measure.settings import MeasureSettings
from crystalseg.store import (
    check_output_outside_run,
    file_written_whole,
    get_array,
    make_folder,
    read_run_attrs,
    stage_info,
)
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.viz.plots import frame_index

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

#: 8-connectivity of dropped pieces, as the measurement's labelling uses.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)

#: Percentiles of the raw intensities mapped to black and white.
GREY_PERCENTILES = (0.5, 99.5)

#: A single-frame figure shows the frame at an integer zoom (>= 1) that brings its
#: longer side nearest this many pixels: never below the native resolution.
_FRAME_TARGET_PX = 512
#: Pixels of frame per inch of text scale: the figure's dpi is the displayed frame's longer
#: side over this (clipped to _FRAME_DPI), so title and legend keep their size relative to
#: the frame when a browser shrinks a large frame to fit.
_FRAME_WIDTH_IN = 6.4
_FRAME_DPI = (100, 200)
#: Title and legend of a single-frame figure get at least this width, inches (a small or
#: narrow frame widens its figure rather than wrapping every word).
_FRAME_TEXT_MIN_IN = 4.8
#: Margin around a single-frame figure's content and gap before its colour bar, inches.
_FRAME_MARGIN_IN = 0.08
_COLORBAR_GAP_IN = 0.12
_COLORBAR_WIDTH_IN = 0.18
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
_SIZE_NAMES = {
    "ecd": "ECD",
    "feret_diameter_max": "length (max Feret)",
    "feret_diameter_min": "width (min Feret)",
    "axis_major_length": "major axis",
    "axis_minor_length": "minor axis",
}


# --------------------------------------------------------------------------- the run


class _MeasuredRun:
    """What the overlays need of a measured run, read once: settings, codes, row offsets."""

    def __init__(self, run: RunLike) -> None:
        path = run_path(run)
        read_run_attrs(path)  # exists, is a run store
        self.path = path
        self.name = path.name
        group = zarr.open_group(str(path), mode="r", use_consolidated=False)
        if MASK not in group:
            raise StageStateError(
                f"run '{path}' has no mask to outline; run 'crystalseg measure {path}' first "
                "(it segments the run)"
            )
        info = stage_info(path).get(STAGE)
        if info is None or info.get("status") != "finished" or PARTICLES_GROUP not in group:
            raise StageStateError(
                f"run '{path}' is not measured, so it has no particles to outline; "
                f"run 'crystalseg measure {path}' first"
            )
        self.image = get_array(group, IMAGE, path)
        self.mask = get_array(group, MASK, path)
        recorded = info.get("settings") or {}
        if measured_mask_changed(path):
            raise StageStateError(
                f"the mask of run '{path}' was made again after it was measured; "
                f"run 'crystalseg measure {path}' to measure the new mask"
            )
        self.settings = MeasureSettings.from_dict(recorded.get("measure") or {})
        self.codes = read_mask_codes(self.mask)
        self.measured_classes = crystal_classes(self.codes, classes=self.settings.classes)
        self.boundary_class = boundary_class(self.codes)
        self.pixel_size_um: float | None = read_run_attrs(path).get("pixel_size_um")
        self.size_units = size_units(self.pixel_size_um)
        self.time_s = np.asarray(get_array(group, TIME, path)[:], dtype=np.float64)
        self.n_frames = int(self.mask.shape[0])
        if int(self.image.shape[0]) != self.n_frames:
            raise RunFormatError(
                f"run '{path}' has {self.image.shape[0]} frames but a mask of {self.n_frames}; "
                f"run 'crystalseg measure {path} --overwrite' after segmenting it again"
            )
        table = group[PARTICLES_GROUP]
        if not isinstance(table, zarr.Group):
            raise RunFormatError(f"'{PARTICLES_GROUP}' in '{path}' is not a table group")
        self.table = table
        self.offsets = self._frame_offsets()

    def column(self, name: str) -> zarr.Array:
        node = self.table[name]
        if not isinstance(node, zarr.Array):
            raise RunFormatError(f"column '{name}' of the particles of '{self.path}' is missing")
        return node

    def _frame_offsets(self, block: int = 1 << 20) -> np.ndarray:
        """Start row of each frame in the table, shape (n_frames + 1,) (rows are in frame order)."""
        frame = self.column("frame")
        counts = np.zeros(self.n_frames, dtype=np.int64)
        last = -1
        for lo in range(0, int(frame.shape[0]), block):
            values = np.asarray(frame[lo : lo + block], dtype=np.int64)
            if len(values) == 0:
                continue
            if values[0] < last or np.any(np.diff(values) < 0) or values[-1] >= self.n_frames:
                raise RunFormatError(
                    f"the particles table of '{self.path}' is not in frame order; "
                    f"run 'crystalseg measure {self.path} --overwrite'"
                )
            last = int(values[-1])
            counts += np.bincount(values, minlength=self.n_frames)
        return np.concatenate([[0], np.cumsum(counts)])

    @cached_property
    def size_range(self) -> tuple[float, float]:
        """Smallest and largest positive size of the kept particles of the whole run."""
        kept, size = self.column("kept"), self.column(self.settings.size_column)
        lo, hi = math.inf, -math.inf
        block = 1 << 20
        for start in range(0, int(kept.shape[0]), block):
            k = np.asarray(kept[start : start + block], dtype=bool)
            s = np.asarray(size[start : start + block], dtype=np.float64)[k]
            s = s[np.isfinite(s) & (s > 0)]
            if len(s):
                lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        if not math.isfinite(lo):
            return 1.0, 10.0
        if hi <= lo * 1.01:
            return lo / 1.5, hi * 1.5
        return lo, hi

    @property
    def size_label(self) -> str:
        name = _SIZE_NAMES.get(self.settings.size_column, self.settings.size_column)
        unit = "µm" if self.size_units == "um" else self.size_units
        return f"{name} ({unit})"

    def frame(self, index: int) -> _Frame:
        """Raw frame, instance labels and the table's verdict on each of them."""
        image = np.asarray(self.image[index])
        mask = np.asarray(self.mask[index])
        labels = label_mask_frame(mask, settings=self.settings, codes=self.codes)
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        rows = {
            name: np.asarray(self.column(name)[lo:hi])
            for name in ("label", "area", "kept", "excluded_reason", self.settings.size_column)
        }
        n = int(labels.max(initial=0))
        ids = rows["label"].astype(np.int64)
        pixels = np.bincount(labels.ravel(), minlength=n + 1)
        scale = 1.0 if self.pixel_size_um is None else float(self.pixel_size_um) ** 2
        order = np.argsort(ids)
        if not (
            np.array_equal(ids[order], np.arange(1, n + 1))
            and np.allclose(pixels[ids] * scale, rows["area"].astype(np.float64), rtol=1e-6)
        ):
            raise StageStateError(
                f"frame {index} of '{self.path}' labels into {n} particles that do not match "
                f"its {hi - lo} rows in the particles table; run 'crystalseg measure "
                f"{self.path} --overwrite' to measure the mask as it is"
            )
        kept = np.zeros(n + 1, dtype=bool)
        kept[ids] = rows["kept"].astype(bool)
        size = np.full(n + 1, np.nan)
        size[ids] = rows[self.settings.size_column].astype(np.float64)
        reasons = Counter(str(r) for r in rows["excluded_reason"] if str(r))

        dropped, dropped_reasons = _dropped_pieces(
            mask,
            labels,
            measured=self.measured_classes,
            boundary=self.boundary_class,
            min_area_px=self.settings.min_area_px,
        )
        m = len(dropped_reasons)
        if m:
            reasons.update(dropped_reasons)
            labels = np.where(dropped > 0, dropped + n, labels).astype(np.int32)
            kept = np.concatenate([kept, np.zeros(m, dtype=bool)])
            size = np.concatenate([size, np.full(m, np.nan)])
        return _Frame(
            index=index,
            time_s=float(self.time_s[index]),
            image=image,
            labels=labels,
            kept=kept,
            size=size,
            reasons=dict(reasons),
        )


def _dropped_pieces(
    mask: np.ndarray,
    labels: np.ndarray,
    *,
    measured: Sequence[int],
    boundary: int | None,
    min_area_px: int,
) -> tuple[np.ndarray, list[str]]:
    """The particles the measurement dropped before measuring, and why.

    Parameters
    ----------
    mask : ndarray, shape (y, x), integer dtype
        Class index per pixel.
    labels : ndarray, shape (y, x), integer dtype
        The measurement's instance labels of ``mask`` (:func:`label_mask_frame`).
    measured : sequence of int
        The classes the measurement labelled (``crystal_classes(codes, classes=...)``).
    boundary : int or None
        The boundary class of the codes (:func:`crystalseg.classes.boundary_class`).
    min_area_px : int
        The measurement's ``min_area_px``.

    Returns
    -------
    pieces : ndarray of int32, shape (y, x)
        0 where nothing was dropped, 1..m one id per dropped particle.
    reasons : list of str
        Reason of each piece 1..m: ``"too_small"`` or ``"other_class"``.

    Notes
    -----
    Each 8-connected piece of foreground without a label is a candidate. One that
    holds a pixel of a measured class was a particle dropped under ``min_area_px``
    (the labelling labels every measured pixel, then drops small particles); one
    that holds a crystal class left out by ``classes`` is a crystal not measured.
    A piece of the boundary class alone that touches a particle is that particle's
    rim, not a particle: the outer band that ``trim_boundary`` takes off, or, with
    ``split`` "watershed" or "none", the rim that labelling never looks at. The
    boundary split grows every particle over all the foreground connected to it, so
    boundary alone touches a particle only where it was trimmed. Boundary alone
    that touches no particle is a crystal drawn all rim: below ``min_area_px`` it
    was dropped as too small, otherwise the split did not measure the boundary class.
    """
    pieces, m = ndi.label((mask > 0) & (labels == 0), structure=_STRUCTURE_8)
    if not m:
        return pieces.astype(np.int32), []

    def holds(where: np.ndarray) -> np.ndarray:
        """Per piece 1..m: whether any of its pixels is in ``where``."""
        return np.bincount(pieces[where], minlength=m + 1)[1:] > 0

    too_small = holds(np.isin(mask, measured))
    rim_only = np.zeros(m, dtype=bool)
    if boundary is not None:
        rim_only = ~holds(mask != boundary)
    rim = np.zeros(m, dtype=bool)
    if rim_only.any():
        rim = rim_only & holds(ndi.binary_dilation(labels > 0, structure=_STRUCTURE_8))
        area = np.bincount(pieces.ravel(), minlength=m + 1)[1:]
        too_small |= rim_only & ~rim & (area < min_area_px)
    lut = np.zeros(m + 1, dtype=np.int32)
    lut[1:][~rim] = np.arange(1, np.count_nonzero(~rim) + 1, dtype=np.int32)
    reasons = ["too_small" if f else "other_class" for f in too_small[~rim]]
    return lut[pieces], reasons


@dataclass(frozen=True)
class _Frame:
    """One frame ready to draw.

    ``labels`` (y, x) holds the measured particles 1..n and then the dropped
    pieces n+1..n+m; ``kept`` and ``size`` are indexed by label (index 0, the
    background, is not kept; dropped pieces have no size).
    """

    index: int
    time_s: float
    image: np.ndarray
    labels: np.ndarray
    kept: np.ndarray
    size: np.ndarray
    reasons: dict[str, int]

    @cached_property
    def image_grey(self) -> np.ndarray:
        """The raw frame scaled to uint8 grey, shape (y, x)."""
        return _grey(self.image)

    @property
    def n_kept(self) -> int:
        return int(np.count_nonzero(self.kept))

    @property
    def n_excluded(self) -> int:
        return len(self.kept) - 1 - self.n_kept


def _measured(run: RunLike | _MeasuredRun) -> _MeasuredRun:
    return run if isinstance(run, _MeasuredRun) else _MeasuredRun(run)


def _check_color_by(color_by: str) -> None:
    if color_by not in ("size", "status"):
        raise ConfigError(f"color_by {color_by!r} is unknown; use 'size' or 'status'")


# --------------------------------------------------------------------------- frames


def parse_frames(text: str) -> tuple[int, ...]:
    """Frame indices from a comma-separated list such as ``"0,50,-1"`` (as the CLI takes them).

    Raises
    ------
    ConfigError
        An entry is not an integer, or the list is empty.
    """
    try:
        frames = tuple(int(f) for f in text.split(",") if f.strip())
    except ValueError:
        frames = ()
    if not frames:
        raise ConfigError(
            f"frames {text!r} is not a comma-separated list of frame indices; e.g. 0,50,-1"
        )
    return frames


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
        index = frame_index(f, n_frames)
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


def _size_norm(run: _MeasuredRun) -> LogNorm:
    lo, hi = run.size_range
    return LogNorm(vmin=lo, vmax=hi)


def _label_colors(frame: _Frame, color_by: ColorBy, norm: LogNorm | None) -> np.ndarray:
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
    frame: _Frame,
    *,
    color_by: ColorBy,
    norm: LogNorm | None,
    linewidth: float,
    title: str,
) -> None:
    # Our figures show frames up to ~640 px wide at about 1:1 or larger: nearest keeps the
    # noise as it is (a smoothing filter makes moiré of it); larger frames are shrunk, with
    # matplotlib's anti-aliasing.
    interpolation = "nearest" if max(frame.image.shape) <= _NEAREST_MAX_PX else "antialiased"
    ax.imshow(frame.image_grey, cmap="gray", vmin=0, vmax=255, interpolation=interpolation)
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


def _frame_title(run: _MeasuredRun, frame: _Frame) -> str:
    return f"frame {frame.index} · t = {format_time(frame.time_s)}"


def _add_colorbar(
    fig: Figure, run: _MeasuredRun, norm: LogNorm, ax: Any, *, cax: Axes | None = None
) -> None:
    mappable = ScalarMappable(norm=norm, cmap=SIZE_CMAP)
    if cax is not None:
        bar = fig.colorbar(mappable, cax=cax)
    else:
        bar = fig.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label(f"{run.size_label}, kept particles")
    lo, hi = run.size_range
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


def _wrap_label(text: str, width: int) -> str:
    """``text`` in lines of about ``width`` characters, broken after commas where it can."""
    pieces = [p + "," for p in text.split(", ")]
    pieces[-1] = pieces[-1][:-1]
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] += " " + piece
        else:
            lines.extend(textwrap.wrap(piece, width, break_long_words=False) or [piece])
    return "\n".join(lines)


def _fitted_legend(
    place: Callable[[list[Line2D], int], Legend],
    handles: list[Line2D],
    max_width_px: float,
    renderer: RendererBase,
) -> Legend:
    """A legend no wider than ``max_width_px``: one row, else one column, else wrapped labels.

    ``place(handles, ncols)`` draws the legend; a legend that does not fit is
    removed before the next try. The narrowest try is kept when none fits.
    """
    labels = [str(h.get_label()) for h in handles]
    tries: list[tuple[int | None, int]] = [(None, len(handles))]
    if len(handles) > 1:
        tries.append((None, 1))
    longest = max(len(text) for text in labels)
    tries += [(width, 1) for width in range(longest - 4, 11, -4)]
    legend = None
    for width, ncols in tries:
        if legend is not None:
            legend.remove()
        for handle, text in zip(handles, labels, strict=True):
            handle.set_label(text if width is None else _wrap_label(text, width))
        legend = place(handles, ncols)
        if legend.get_window_extent(renderer).width <= max_width_px:
            break
    assert legend is not None
    return legend


def _fit_title(text: Text, max_width_px: float, renderer: RendererBase) -> None:
    """Break a title ``"run: what"`` after the run name, then shrink it, until it fits."""
    if text.get_window_extent(renderer).width <= max_width_px:
        return
    text.set_text(text.get_text().replace(": ", ":\n", 1))
    width = text.get_window_extent(renderer).width
    if width > max_width_px:
        text.set_fontsize(max(5.0, float(text.get_fontsize()) * max_width_px / width))


def _montage_columns(n: int, frame_aspect: float) -> int:
    """Columns of a grid of ``n`` frames (width / height ``frame_aspect``) nearest a square.

    Ties go to more columns, so square frames get ``ceil(sqrt(n))`` columns.
    """
    return min(
        range(1, n + 1),
        key=lambda c: (round(abs(math.log(c * frame_aspect / math.ceil(n / c))), 9), -c),
    )


def _frame_zoom(height: int, width: int) -> int:
    """Integer zoom of a frame in its own figure: >= 1, longer side nearest _FRAME_TARGET_PX."""
    return max(1, round(_FRAME_TARGET_PX / max(height, width)))


def _frame_dpi(longer_side_px: int) -> int:
    lo, hi = _FRAME_DPI
    return int(min(hi, max(lo, round(longer_side_px / _FRAME_WIDTH_IN))))


def _layout_frame_figure(
    fig: Figure, ax: Axes, cax: Axes | None, image_px: tuple[int, int]
) -> None:
    """Size ``fig`` around its frame axes shown at exactly ``image_px`` (width, height) pixels.

    The title above, the legend below (both centred on the frame) and the colour
    bar on the right get the room they need, measured with the renderer, plus a
    thin margin; the figure grows to fit them and is a whole number of pixels.
    """
    dpi = fig.dpi
    img_w, img_h = image_px
    margin = round(_FRAME_MARGIN_IN * dpi)
    gap = round(_COLORBAR_GAP_IN * dpi)
    bar_w = round(_COLORBAR_WIDTH_IN * dpi)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]

    def place(w_px: float, h_px: float, x0: float, y0: float) -> None:
        ax.set_position((x0 / w_px, y0 / h_px, img_w / w_px, img_h / h_px))
        if cax is not None:
            bar_h = 0.85 * img_h
            cax.set_position(
                (
                    (x0 + img_w + gap) / w_px,
                    (y0 + (img_h - bar_h) / 2) / h_px,
                    bar_w / w_px,
                    bar_h / h_px,
                )
            )

    # Measure with the frame at its final pixel size in a roomy canvas.
    room = 6 * dpi
    fig.set_size_inches((img_w + 2 * room) / dpi, (img_h + 2 * room) / dpi)
    place(img_w + 2 * room, img_h + 2 * room, room, room)
    box = ax.bbox
    tight = ax.get_tightbbox(renderer)
    assert tight is not None
    left = max(0.0, box.x0 - tight.x0)
    right = max(0.0, tight.x1 - box.x1)
    below = max(0.0, box.y0 - tight.y0)
    above = max(0.0, tight.y1 - box.y1)
    if cax is not None:
        bar_tight = cax.get_tightbbox(renderer)
        assert bar_tight is not None
        right = max(right, bar_tight.x1 - box.x1)
    left, right, below, above = (math.ceil(v) + margin for v in (left, right, below, above))
    width, height = left + img_w + right, below + img_h + above
    # Agg makes a canvas of int(size * dpi) pixels: nudge up so that rounding never loses one.
    w_px, h_px = width + 0.01, height + 0.01
    fig.set_size_inches(w_px / dpi, h_px / dpi)
    place(w_px, h_px, left, below)


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
    rgb = np.repeat(data.image_grey[:, :, None], 3, axis=2)
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
    run: _MeasuredRun, index: int, *, color_by: ColorBy, ax: Axes | None = None
) -> Figure:
    data = run.frame(index)
    norm = _size_norm(run) if color_by == "size" else None
    title = f"{run.name}: {_frame_title(run, data)}"
    if norm is not None:
        handles = [Line2D([], [], color=EXCLUDED_COLOR, lw=2, label=f"excluded: {data.n_excluded}")]
    else:
        handles = _status_handles(data.n_kept, data.reasons)
    if ax is not None:
        # The caller's figure and layout: draw, with the legend under the axes.
        fig: Figure = ax.get_figure()  # type: ignore[assignment]
        _draw(ax, data, color_by=color_by, norm=norm, linewidth=1.2, title=title)
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
    zoom = _frame_zoom(h, w)
    img_w, img_h = w * zoom, h * zoom
    dpi = _frame_dpi(max(img_w, img_h))
    fig = Figure(figsize=(img_w / dpi, img_h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _draw(ax, data, color_by=color_by, norm=norm, linewidth=1.2, title=title)
    cax = None
    if norm is not None:
        cax = fig.add_axes((0.0, 0.0, 0.05, 1.0))
        _add_colorbar(fig, run, norm, ax, cax=cax)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    bar_px = (_COLORBAR_GAP_IN + _COLORBAR_WIDTH_IN + 0.6) * dpi if cax is not None else 0.0
    text_px = max(img_w + bar_px, _FRAME_TEXT_MIN_IN * dpi)
    _fit_title(ax.title, text_px, renderer)
    target = ax

    def place(items: list[Line2D], ncols: int) -> Legend:
        return target.legend(
            handles=items,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncols=ncols,
            frameon=False,
        )

    _fitted_legend(place, handles, text_px, renderer)
    _layout_frame_figure(fig, ax, cax, (img_w, img_h))
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
    run: _MeasuredRun, *, n: int, frames: Sequence[int] | None, color_by: ColorBy
) -> Figure:
    chosen = (
        resolve_frames(frames, run.n_frames)
        if frames is not None
        else sample_frames(run.n_frames, n)
    )
    if not chosen:
        raise ConfigError("no frames to show in the montage; give at least one")
    h, w = (int(v) for v in run.image.shape[1:])
    cols = _montage_columns(len(chosen), w / h)
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
        )
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    _fit_title(
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

    _fitted_legend(place, handles, fig.bbox.width - 0.2 * fig.dpi, renderer)
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
