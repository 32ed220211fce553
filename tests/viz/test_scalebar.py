"""Scale bars: a 1-2-5 length in µm (px when uncalibrated) drawn exactly its pixels long."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crystalseg.errors import ConfigError
from crystalseg.viz.scalebar import add_scale_bar, scale_bar_length


@pytest.mark.parametrize(
    ("pixel_um", "width", "label", "length_px"),
    [
        (0.65, 512, "50 µm", 50 / 0.65),  # a fifth of 332.8 um is 66.6 um
        (2.0, 100, "20 µm", 10.0),  # 40 um of room
        (1.0, 1000, "200 µm", 200.0),  # exactly a fifth
        (0.1, 2048, "20 µm", 200.0),  # 41 um of room
        (None, 512, "100 px", 100.0),
        (None, 37, "5 px", 5.0),
    ],
)
def test_length_is_the_largest_1_2_5_number_in_a_fifth(
    pixel_um: float | None, width: int, label: str, length_px: float
) -> None:
    bar = scale_bar_length(pixel_um, width)
    assert bar.label == label
    assert bar.length_px == pytest.approx(length_px)
    assert bar.length_px <= 0.2 * width + 1e-9


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a positive number"):
        scale_bar_length(0.0, 100)
    with pytest.raises(ConfigError, match="not positive"):
        scale_bar_length(1.0, 0)


def test_bar_is_its_length_in_frame_pixels_on_the_canvas() -> None:
    """Drawn over a 200 x 100 px frame shown at 3x, a 10-px bar is 30 canvas pixels."""
    fig = Figure(figsize=(6, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(np.full((100, 200), 255, np.uint8), cmap="gray", vmin=0, vmax=255)
    ax.set_xlim(-0.5, 199.5)
    ax.set_ylim(99.5, -0.5)
    artist = add_scale_bar(ax, pixel_size_um=0.5, width_px=200)  # 20 um of room -> 20 um, 40 px
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    dark = rgba[..., :3].max(axis=2) < 60
    (rect,) = artist.size_bar.get_children()
    box = rect.get_window_extent()
    assert box.width == pytest.approx(40 * 3, abs=0.5)
    row = dark[rgba.shape[0] - round((box.y0 + box.y1) / 2)]
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
    assert abs(runs.max() - 120) <= 1
