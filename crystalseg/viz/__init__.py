"""Figures, QC overlays and the HTML report, drawn from what ``measure`` wrote.

Nothing here recomputes a measurement or reads the store by hand: the figures and the
overlays read the run through :class:`crystalseg.measure.MeasuredRun` (``psd``,
``particles``, the labels of a frame exactly as measured) and only draw. Overlays
carry a scale bar (:func:`~crystalseg.viz.scalebar.add_scale_bar`).
All figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so they
work headless and in threads.
"""

from crystalseg.viz.overlay import montage, overlay_frame, overlay_image, write_overlays
from crystalseg.viz.plots import (
    open_results,
    plot_compare,
    plot_cumulative,
    plot_psd_curves,
    plot_psd_heatmap,
    plot_run,
    plot_runs,
    plot_shape,
    plot_statistics,
)
from crystalseg.viz.scalebar import add_scale_bar, scale_bar_length

__all__ = [
    "add_scale_bar",
    "montage",
    "open_results",
    "overlay_frame",
    "overlay_image",
    "plot_compare",
    "plot_cumulative",
    "plot_psd_curves",
    "plot_psd_heatmap",
    "plot_run",
    "plot_runs",
    "plot_shape",
    "plot_statistics",
    "scale_bar_length",
    "write_overlays",
]
