"""Figures, QC overlays and the HTML report, drawn from what ``measure`` wrote.

Nothing here recomputes a measurement: the figures read the run's ``psd`` and
``particles`` groups, and the overlays rebuild the instance labels from the stored
mask with the measurement's recorded settings, matched to the particle table by label.
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

__all__ = [
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
    "write_overlays",
]
