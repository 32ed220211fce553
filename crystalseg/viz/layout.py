"""Layout of frame figures: frames at whole-number zooms, text measured to fit around them.

The overlays (:mod:`crystalseg.viz.overlay`) lay a single frame out in pixels: the
frame at an integer zoom (never below 1:1), the figure's dpi chosen so that saving
at ``fig.dpi`` gives exactly that, the title, legend and colour bar measured with
the renderer and fitted around it. A montage puts frames in a grid nearest a square.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text

#: A single-frame figure shows the frame at an integer zoom (>= 1) that brings its
#: longer side nearest this many pixels: never below the native resolution.
FRAME_TARGET_PX = 512
#: Pixels of frame per inch of text scale: the figure's dpi is the displayed frame's longer
#: side over this (clipped to FRAME_DPI), so title and legend keep their size relative to
#: the frame when a browser shrinks a large frame to fit.
FRAME_WIDTH_IN = 6.4
FRAME_DPI = (100, 200)
#: Margin around a single-frame figure's content and gap before its colour bar, inches.
FRAME_MARGIN_IN = 0.08
COLORBAR_GAP_IN = 0.12
COLORBAR_WIDTH_IN = 0.18


def wrap_label(text: str, width: int) -> str:
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


def fitted_legend(
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
            handle.set_label(text if width is None else wrap_label(text, width))
        legend = place(handles, ncols)
        if legend.get_window_extent(renderer).width <= max_width_px:
            break
    assert legend is not None
    return legend


def fit_title(text: Text, max_width_px: float, renderer: RendererBase) -> None:
    """Break a title ``"run: what"`` after the run name, then shrink it, until it fits."""
    if text.get_window_extent(renderer).width <= max_width_px:
        return
    text.set_text(text.get_text().replace(": ", ":\n", 1))
    width = text.get_window_extent(renderer).width
    if width > max_width_px:
        text.set_fontsize(max(5.0, float(text.get_fontsize()) * max_width_px / width))


def montage_columns(n: int, frame_aspect: float) -> int:
    """Columns of a grid of ``n`` frames (width / height ``frame_aspect``) nearest a square.

    Ties go to more columns, so square frames get ``ceil(sqrt(n))`` columns.
    """
    return min(
        range(1, n + 1),
        key=lambda c: (round(abs(math.log(c * frame_aspect / math.ceil(n / c))), 9), -c),
    )


def frame_zoom(height: int, width: int) -> int:
    """Integer zoom of a frame in its own figure: >= 1, longer side nearest FRAME_TARGET_PX."""
    return max(1, round(FRAME_TARGET_PX / max(height, width)))


def frame_dpi(longer_side_px: int) -> int:
    """Dpi of a single-frame figure whose displayed frame is ``longer_side_px`` long."""
    lo, hi = FRAME_DPI
    return int(min(hi, max(lo, round(longer_side_px / FRAME_WIDTH_IN))))


def layout_frame_figure(fig: Figure, ax: Axes, cax: Axes | None, image_px: tuple[int, int]) -> None:
    """Size ``fig`` around its frame axes shown at exactly ``image_px`` (width, height) pixels.

    The title above, the legend below (both centred on the frame) and the colour
    bar on the right get the room they need, measured with the renderer, plus a
    thin margin; the figure grows to fit them and is a whole number of pixels.
    """
    dpi = fig.dpi
    img_w, img_h = image_px
    margin = round(FRAME_MARGIN_IN * dpi)
    gap = round(COLORBAR_GAP_IN * dpi)
    bar_w = round(COLORBAR_WIDTH_IN * dpi)
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


__all__ = [
    "COLORBAR_GAP_IN",
    "COLORBAR_WIDTH_IN",
    "FRAME_DPI",
    "FRAME_MARGIN_IN",
    "FRAME_TARGET_PX",
    "FRAME_WIDTH_IN",
    "fit_title",
    "fitted_legend",
    "frame_dpi",
    "frame_zoom",
    "layout_frame_figure",
    "montage_columns",
    "wrap_label",
]
