"""The figures of a run's report, drawn once as PNG bytes for both renderers.

The plots of :mod:`crystalseg.viz.plots`, the overlays of
:mod:`crystalseg.viz.overlay` (with a scale bar on every frame, and frame titles
in the report's one time unit) and the kinetics figure of
:mod:`crystalseg.viz.kinetics`. A figure that cannot be drawn is left out with a
``figure_failed`` warning rather than failing the report.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crystalseg.dims import TIME
from crystalseg.errors import CrystalsegError
from crystalseg.store.location import RunPath
from crystalseg.viz.report_checks import ReportSettings, ReportWarning
from crystalseg.viz.report_meta import TimeUnit, format_time_in, times_s
from crystalseg.viz.scalebar import SCALE_BAR_GID, add_scale_bar

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its ``id``, caption and PNG bytes.

    ``native`` figures (single-frame overlays) keep their own pixel size: frame
    pixels 1:1 or larger; the others are cropped to their content at the report's dpi.
    """

    fig_id: str
    caption: str
    png: bytes
    native: bool = False


def png_bytes(fig: Figure, *, dpi: float, tight: bool) -> bytes:
    """PNG of ``fig`` at ``dpi``, cropped to its content when ``tight``; closes it.

    A figure laid out in pixels (the per-frame overlays) is saved untrimmed at its own
    dpi, so its frame lands on whole pixels, 1:1.
    """
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        engine = fig.get_layout_engine()
        if engine is not None:  # settle a constrained layout (fixed-aspect axes need passes)
            for _ in range(2):
                engine.execute(fig)
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return buffer.getvalue()


_FRAME_TITLE = re.compile(r"frame (\d+) · t = [^·:]*$")


def retime_titles(fig: Figure, times: np.ndarray, unit: TimeUnit) -> None:
    """Frame titles (``frame N · t = ...``) of an overlay figure in the report's time unit."""
    for ax in fig.axes:
        title = ax.get_title()
        found = _FRAME_TITLE.search(title)
        if found is not None and int(found.group(1)) < len(times):
            index = int(found.group(1))
            new = f"frame {index} · t = {format_time_in(times[index], unit)}"
            ax.set_title(title[: found.start()] + new, fontsize="medium")


def finish_overlay(
    fig: Figure, times: np.ndarray, unit: TimeUnit, *, pixel_size_um: float | None
) -> None:
    """An overlay or montage as the report shows it: frame titles in the report's time
    unit, and a scale bar on every frame that has none yet (an overlay may draw its own,
    an artist with ``gid`` :data:`SCALE_BAR_GID`)."""
    retime_titles(fig, times, unit)
    for ax in _frame_axes(fig):
        if any(a.get_gid() == SCALE_BAR_GID for a in ax.get_children()):
            continue
        image = ax.get_images()[0].get_array()
        if image is None:
            continue
        add_scale_bar(ax, pixel_size_um=pixel_size_um, width_px=image.shape[1])


def _frame_axes(fig: Figure) -> list[Axes]:
    """The axes of an overlay figure that show a frame (an image, no colour bar)."""
    return [ax for ax in fig.axes if ax.get_images() and _FRAME_TITLE.search(ax.get_title())]


def _figures(
    jobs: Sequence[tuple[str, str, Any]],
    settings: ReportSettings,
    problems: list[ReportWarning],
    *,
    native: frozenset[str] | set[str] = frozenset(),
) -> tuple[ReportFigure, ...]:
    """The figure of each job; those named in ``native`` keep their own dpi and size."""
    out = []
    for fig_id, caption, make in jobs:
        try:
            fig = make()
        except CrystalsegError as exc:
            log.warning("figure %s left out of the report: %s", fig_id, exc)
            problems.append(ReportWarning("figure_failed", f"Figure '{caption}' left out: {exc}"))
            continue
        if fig_id in native:
            png = png_bytes(fig, dpi=fig.dpi, tight=False)
        else:
            png = png_bytes(fig, dpi=settings.dpi, tight=True)
        out.append(ReportFigure(fig_id, caption, png, native=fig_id in native))
    return tuple(out)


def open_windows(run: RunPath) -> xr.Dataset | None:
    """Group ``psd_window`` of the run in memory, or None when it has none."""
    import xarray as xr

    if not (run / "psd_window" / "zarr.json").exists():
        return None
    with xr.open_zarr(str(run), group="psd_window", consolidated=False) as ds:
        return ds.load()


def plot_figures(
    run: RunPath,
    psd: xr.Dataset,
    particles: pd.DataFrame | None,
    settings: ReportSettings,
    problems: list[ReportWarning],
) -> tuple[ReportFigure, ...]:
    from crystalseg.viz import plots

    basis = settings.basis
    jobs: list[tuple[str, str, Any]] = [
        (
            "fig-psd-heatmap-number",
            "PSD over time, number basis (colour: density per log size)",
            lambda: plots.plot_psd_heatmap(psd, basis="number"),
        ),
        (
            "fig-psd-heatmap-volume",
            "PSD over time, volume basis (colour: density per log size)",
            lambda: plots.plot_psd_heatmap(psd, basis="volume"),
        ),
        (
            "fig-statistics",
            f"D10, D50, D90 ({basis} basis) and particle count over time",
            lambda: plots.plot_statistics(psd, basis=basis),
        ),
        (
            "fig-psd-curves",
            f"PSD curves at selected times ({basis} basis)",
            lambda: plots.plot_psd_curves(psd, basis=basis),
        ),
        (
            "fig-cumulative",
            "Volume density q3 and cumulative Q3 of the last frame with counted particles "
            "(ISO 9276-1), D10/D50/D90 with their 95 % intervals",
            lambda: plots.plot_cumulative(psd),
        ),
    ]
    windows = open_windows(run)
    if windows is not None:
        jobs.append(
            (
                "fig-window-statistics",
                f"D10, D50, D90 ({basis} basis) of pooled windows of "
                f"{windows.attrs.get('window')} (frames resampled whole for the intervals) "
                "and the particles pooled per window",
                lambda: plots.plot_statistics(windows, basis=basis),
            )
        )
    jobs.append(
        (
            "fig-shape",
            "Length (max Feret) against width (min Feret) of the particles of the last frame",
            lambda: plots.plot_shape(particles, psd, frame=-1),
        )
    )
    return _figures(jobs, settings, problems)


def overlay_figures(
    run: RunPath,
    psd: xr.Dataset,
    settings: ReportSettings,
    problems: list[ReportWarning],
    unit: TimeUnit,
) -> tuple[ReportFigure, ...]:
    from crystalseg.viz import overlay

    n = int(psd.sizes.get(TIME, 0))
    times = times_s(psd)
    pixel = psd.attrs.get("pixel_size_um")

    def finished(fig: Figure) -> Figure:
        finish_overlay(fig, times, unit, pixel_size_um=pixel)
        return fig

    frames = settings.overlay_frames if settings.overlay_frames is not None else (-1,)
    jobs: list[tuple[str, str, Any]] = []
    if settings.montage_n and n > 1:
        jobs.append(
            (
                "fig-montage",
                f"{min(settings.montage_n, n)} frames sampled over the run with the particle "
                "outlines",
                lambda: finished(
                    overlay.montage(run, n=settings.montage_n, color_by=settings.color_by)
                ),
            )
        )
    for frame in frames:
        index = frame % n if n else frame
        jobs.append(
            (
                f"fig-overlay-{index}",
                f"Frame {index} with the particle outlines (colour: "
                f"{'counted or excluded' if settings.color_by == 'status' else 'size'})",
                lambda frame=frame: finished(
                    overlay.overlay_frame(run, frame, color_by=settings.color_by)
                ),
            )
        )
    # Single frames at their own resolution (frame pixels 1:1), the montage at settings.dpi.
    native = {fig_id for fig_id, _, _ in jobs if fig_id.startswith("fig-overlay-")}
    return _figures(jobs, settings, problems, native=native)


def kinetics_content(run: RunPath, dpi: int) -> tuple[str | None, ReportFigure | None]:
    """The kinetics section's table and note (HTML, from :mod:`crystalseg.viz.kinetics`)
    and its figure, apart; (None, None) without kinetics."""
    from crystalseg.viz.kinetics import kinetics_section

    drawn: list[Figure] = []

    def keep(fig: Figure) -> str:
        drawn.append(fig)
        return ""

    body = kinetics_section(run, keep)
    if body is None:
        return None, None
    caption = (
        "Growth rate against size, births over time with the nucleation onset, the "
        "population growth rate over time, chord counts in FBRM size classes"
    )
    figure = None
    if drawn:
        figure = ReportFigure("fig-kinetics", caption, png_bytes(drawn[0], dpi=dpi, tight=True))
    return body, figure


__all__ = [
    "SCALE_BAR_GID",
    "ReportFigure",
    "finish_overlay",
    "kinetics_content",
    "open_windows",
    "overlay_figures",
    "plot_figures",
    "png_bytes",
    "retime_titles",
]
