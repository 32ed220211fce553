"""Scale bars for images of frames: µm when the run is calibrated, px when it is not.

:func:`add_scale_bar` draws a bar into an axes that shows a frame in its pixel
coordinates (``imshow`` of the frame, as the QC overlays and the report's montage
do). The bar is drawn in data coordinates, so it stays exactly ``length_px`` frame
pixels long whatever the zoom. Its length is the largest 1-2-5 number (1, 2, 5, 10,
20, ... µm) that fits in a fifth of the frame's width (:func:`scale_bar_length`).

matplotlib's own :class:`~mpl_toolkits.axes_grid1.anchored_artists.AnchoredSizeBar`
draws it: it ships with matplotlib (no extra dependency, unlike the
``matplotlib-scalebar`` package, which would do the same job here) and takes its
length in data units, which is what makes the length in pixels exact and testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.font_manager import FontProperties
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from crystalseg.errors import ConfigError

#: The bar spans at most this fraction of the frame's width.
SCALE_BAR_FRACTION = 0.2

#: ``gid`` of a scale bar's artist: an axes that has one gets no second bar.
SCALE_BAR_GID = "scale-bar"
#: Colours of the bar and its label, and of the box behind them (readable on
#: bright-field frames, which are mostly light, and on dark ones).
SCALE_BAR_COLOR = "black"
SCALE_BAR_BOX = "white"


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar's length in the world and on the frame.

    Attributes
    ----------
    length : float
        In ``units``: a 1-2-5 number (1, 2, 5, 10, 20, 50, ...).
    units : {"µm", "px"}
    length_px : float
        The same length in frame pixels (``length / pixel_size_um`` when calibrated).
    """

    length: float
    units: str
    length_px: float

    @property
    def label(self) -> str:
        """``"50 µm"``, ``"20 px"``."""
        return f"{self.length:g} {self.units}"


def scale_bar_length(
    pixel_size_um: float | None, width_px: int, *, fraction: float = SCALE_BAR_FRACTION
) -> ScaleBar:
    """The scale bar of a frame ``width_px`` pixels wide.

    Parameters
    ----------
    pixel_size_um : float or None
        Micrometres per pixel; None gives a bar in pixels.
    width_px : int
        Width of the frame in pixels.
    fraction : float
        Longest bar as a fraction of the width (0 < fraction <= 1).

    Returns
    -------
    ScaleBar
        The largest 1-2-5 length not longer than ``fraction`` of the width (at least
        1 µm or 1 px, and at most the frame's width when even that is too long).

    Raises
    ------
    ConfigError
        A pixel size that is not a positive number, a width < 1, a fraction outside (0, 1].

    Examples
    --------
    >>> scale_bar_length(0.65, 512).label  # 512 px = 333 um; a fifth is 66 um
    '50 µm'
    >>> scale_bar_length(None, 512).label
    '100 px'
    """
    if pixel_size_um is not None and not (
        math.isfinite(float(pixel_size_um)) and float(pixel_size_um) > 0
    ):
        raise ConfigError(
            f"pixel size {pixel_size_um!r} um is not a positive number; give the run's "
            "micrometres per pixel, or None for a bar in pixels"
        )
    if width_px < 1:
        raise ConfigError(f"frame width {width_px} px is not positive; give the frame's width")
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction {fraction!r} is outside (0, 1]; e.g. 0.2")
    scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
    room = fraction * width_px * scale
    exponent = math.floor(math.log10(room)) if room >= 1 else 0
    candidates = [
        m * 10.0**e for e in range(exponent - 1, exponent + 1) for m in (1, 2, 5) if e >= 0
    ]
    fitting = [c for c in candidates if c <= room * (1 + 1e-9)]
    length = max(fitting) if fitting else 1.0
    return ScaleBar(
        length=length,
        units="px" if pixel_size_um is None else "µm",
        length_px=min(length / scale, float(width_px)),
    )


def add_scale_bar(
    ax: Axes,
    *,
    pixel_size_um: float | None,
    width_px: int,
    loc: str = "lower right",
    fontsize: float | str = "small",
) -> AnchoredSizeBar:
    """Draw a scale bar into ``ax``, an axes showing a frame in its pixel coordinates.

    Parameters
    ----------
    ax : Axes
        Shows the frame with one data unit per frame pixel (``imshow`` of the frame).
    pixel_size_um : float or None
        The run's micrometres per pixel; None draws the bar in px.
    width_px : int
        Width of the frame in pixels (the bar's length follows from it, see
        :func:`scale_bar_length`).
    loc : str
        Corner of the axes (matplotlib's legend locations).
    fontsize : float or str
        Size of the label.

    Returns
    -------
    AnchoredSizeBar
        The artist added to ``ax`` (``gid`` ``"scale-bar"``); its bar is
        ``scale_bar_length(...).length_px`` data units, i.e. frame pixels, long.
    """
    bar = scale_bar_length(pixel_size_um, width_px)
    artist = AnchoredSizeBar(
        ax.transData,
        bar.length_px,
        bar.label,
        loc,
        pad=0.3,
        borderpad=0.5,
        sep=2,
        frameon=True,
        size_vertical=max(1.0, 0.012 * width_px),
        color=SCALE_BAR_COLOR,
        fontproperties=FontProperties(size=fontsize),
    )
    artist.patch.set_facecolor(SCALE_BAR_BOX)
    artist.patch.set_alpha(0.75)
    artist.patch.set_edgecolor("none")
    artist.set_gid(SCALE_BAR_GID)
    ax.add_artist(artist)
    return artist


__all__ = [
    "SCALE_BAR_FRACTION",
    "SCALE_BAR_GID",
    "ScaleBar",
    "add_scale_bar",
    "scale_bar_length",
]
