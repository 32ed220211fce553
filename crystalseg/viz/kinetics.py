"""Figures and the report section of a run's kinetics (growth, nucleation, CLD).

:func:`plot_kinetics` draws four panels from the groups that ``crystalseg
kinetics`` wrote: growth rate against size (the size-dependence test), the birth
rate over time with the nucleation onset and its interval, the population growth
rate over time, and the chord counts in FBRM's size classes over time.
:func:`plot_tracks` draws the track paths of the last frames on a frame,
:func:`plot_cld` the chord length distribution over time, and
:func:`plot_fbrm_overlay` a probe's counts (:mod:`crystalseg.kinetics.fbrm`)
beside the image CLD's, class by class, on one time axis.
:func:`write_kinetics_figures` writes them all (what ``crystalseg plot`` adds for
a run with kinetics). :func:`kinetics_section` is the report's Kinetics section
(None when the run has no kinetics).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crystalseg.dims import IMAGE
from crystalseg.errors import ConfigError
from crystalseg.kinetics.cld import CLD_CLASS_NAMES
from crystalseg.kinetics.fbrm import FbrmCounts, read_fbrm_csv
from crystalseg.kinetics.run import TRACKS_GROUP, open_cld, read_kinetics
from crystalseg.store import (
    check_output_outside_run,
    crystalseg_version,
    file_written_whole,
    get_array,
    make_folder,
    read_table,
    stage_info,
)
from crystalseg.store.core import open_group
from crystalseg.store.location import RunLike, RunPath, run_path

#: Figures of :func:`write_kinetics_figures`, in order (``fbrm`` only with a probe file).
KINETICS_FIGURES: tuple[str, ...] = ("kinetics", "tracks", "cld", "fbrm")


def has_kinetics(run: RunLike) -> bool:
    """Whether the run has finished kinetics."""
    return (stage_info(run_path(run)).get("kinetics") or {}).get("status") == "finished"


def _errorbar(ax: Any, x: np.ndarray, table: Any, key: str, **kw: Any) -> None:
    y = table[key].to_numpy(dtype=float)
    low = table[f"{key}_low"].to_numpy(dtype=float)
    high = table[f"{key}_high"].to_numpy(dtype=float)
    ok = np.isfinite(y)
    err = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
    ax.errorbar(x[ok], y[ok], yerr=err[:, ok], fmt="o-", capsize=3, **kw)


def plot_kinetics(run: RunLike) -> Figure:
    """Growth against size, births over time, growth over time and CLD classes.

    Parameters
    ----------
    run : path of a run with kinetics (``crystalseg kinetics RUN``)

    Returns
    -------
    Figure
    """
    summary = read_kinetics(run)
    run = run_path(run)
    unit = summary.get("growth_units", "um/min").replace("um", "µm")
    by_size = read_table(run, "kinetics/growth_by_size")
    over_time = read_table(run, "kinetics/growth_over_time")
    births = read_table(run, "kinetics/births_over_time")
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)

    ax = axes[0, 0]
    size = by_size[by_size["n_tracks"] > 0]
    centre = np.sqrt(np.maximum(size["size_low"], 1.0) * np.minimum(size["size_high"], 1e4))
    if len(size):
        _errorbar(ax, centre.to_numpy(), size, "length_rate", color="#0072B2")
        ax.axhline(summary["length_rate"], color="0.4", lw=1, ls="--", label="population")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no track long enough for a rate", ha="center", transform=ax.transAxes)
    ax.set_xlabel(f"mean length of the track ({unit.split('/')[0]})")
    ax.set_ylabel(f"growth rate dL/dt ({unit})")
    slope = summary.get("size_slope", math.nan)
    verdict = "size-dependent" if summary.get("size_dependent") else "no size dependence found"
    ax.set_title(f"Growth against size: {verdict} (slope {slope:.2g}/min)", fontsize=9)

    ax = axes[0, 1]
    t_mid = 0.5 * (births["t_start_s"] + births["t_end_s"]).to_numpy() / 60
    _errorbar(ax, t_mid, births, "rate_per_mm2_min", color="#D55E00")
    onset = summary.get("onset_s", math.nan)
    if onset == onset:
        ax.axvspan(summary["onset_low_s"] / 60, summary["onset_high_s"] / 60, color="0.85")
        ax.axvline(onset / 60, color="k", lw=1, label=f"onset {onset:.0f} s")
        ax.legend(fontsize=8)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("births per mm² per min")
    ax.set_title("Nucleation: new crystals in the field", fontsize=9)

    ax = axes[1, 0]
    t_mid = 0.5 * (over_time["t_start_s"] + over_time["t_end_s"]).to_numpy() / 60
    _errorbar(ax, t_mid, over_time, "length_rate", color="#009E73")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("time (min)")
    ax.set_ylabel(f"growth rate dL/dt ({unit})")
    ax.set_title("Population growth rate over time (95 % intervals)", fontsize=9)

    ax = axes[1, 1]
    cld = open_cld(run)
    counts = np.asarray(cld["class_count"].values, dtype=float)
    minutes = np.asarray(cld["time"].values, dtype=float) / 60
    if np.isfinite(counts).any():
        for k, name in enumerate(CLD_CLASS_NAMES):
            ax.plot(minutes, counts[:, k], label=f"{name} µm")
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no pixel size: no FBRM classes", ha="center", transform=ax.transAxes)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("chords per frame (weighted)")
    ax.set_title("Chord counts in FBRM size classes", fontsize=9)
    return fig


def plot_tracks(run: RunLike, *, frame: int | None = None, last: int = 20) -> Figure:
    """A frame of the run with the paths of its tracks over the ``last`` frames before it.

    Parameters
    ----------
    run : path of a run with kinetics
    frame : frame to draw (default the last)
    last : frames of path behind each crystal

    Returns
    -------
    Figure
        The frame in grey; each track seen in it, drawn as its centroids over the
        frames ``frame - last .. frame`` (in the image's pixels, so the drift of
        the field shows as parallel paths), its current position as a dot; tracks
        born (origin ``appeared``) within those frames in orange.
    """
    read_kinetics(run)
    path = run_path(run)
    group = open_group(path)
    image = get_array(group, IMAGE, path)
    n = int(image.shape[0])
    frame = n - 1 if frame is None else int(frame)
    if not 0 <= frame < n:
        raise ConfigError(f"frame {frame} is outside the run's {n} frames; pick 0..{n - 1}")
    tracks = open_group(path / TRACKS_GROUP)
    frames = np.asarray(get_array(tracks, "frame", path)[:])
    lo, hi = np.searchsorted(frames, [max(frame - int(last), 0), frame + 1])
    points = {
        name: np.asarray(get_array(tracks, name, path)[lo:hi])
        for name in ("frame", "track_id", "x_px", "y_px")
    }
    summary = read_table(path, f"{TRACKS_GROUP}/summary").set_index("track_id")
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.asarray(image[frame]), cmap="gray")
    now = points["frame"] == frame
    shown = np.unique(points["track_id"][now])
    for tid in shown:
        mine = points["track_id"] == tid
        born = summary.loc[tid, "origin"] == "appeared" and summary.loc[tid, "first_frame"] > (
            frame - last
        )
        color = "#E69F00" if born else "#56B4E9"
        ax.plot(points["x_px"][mine], points["y_px"][mine], "-", color=color, lw=1.2)
        ax.plot(points["x_px"][mine & now], points["y_px"][mine & now], "o", color=color, ms=2.5)
    ax.set_axis_off()
    ax.set_title(
        f"Frame {frame}: {len(shown)} tracks, paths over the last {min(last, frame)} frames "
        "(orange: born in them)",
        fontsize=9,
    )
    return fig


def plot_cld(run: RunLike) -> Figure:
    """The chord length distribution over time (number weighted, share of each frame's
    chords per bin) and the median chord, number and square weighted."""
    read_kinetics(run)
    cld = open_cld(run)
    count = np.asarray(cld["count"].values, dtype=np.float64)
    total = count.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, count / total, np.nan)
    minutes = np.asarray(cld["time"].values, dtype=np.float64) / 60
    lower = np.asarray(cld["chord_bin_lower"].values, dtype=np.float64)
    upper = np.asarray(cld["chord_bin_upper"].values, dtype=np.float64)
    unit = str(cld["chord_bin_lower"].attrs.get("units", "um")).replace("um", "µm")
    fig = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    t_edges = np.concatenate(
        [minutes, [minutes[-1] + (np.diff(minutes[-2:])[0] if len(minutes) > 1 else 1)]]
    )
    mesh = top.pcolormesh(t_edges, np.append(lower, upper[-1]), share.T, cmap="viridis")
    top.set_yscale("log")
    top.set_ylabel(f"chord length ({unit})")
    top.set_title("Chord length distribution (share of each frame's chords per bin)", fontsize=9)
    fig.colorbar(mesh, ax=top, label="share of chords")
    bottom.plot(minutes, cld["median_number"].values, label="median, number weighted")
    bottom.plot(minutes, cld["median_square"].values, label="median, square weighted")
    bottom.set_ylabel(f"chord ({unit})")
    bottom.set_xlabel("time (min)")
    bottom.legend(fontsize=8)
    return fig


def plot_fbrm_overlay(
    run: RunLike,
    fbrm: FbrmCounts | str | os.PathLike[str],
    *,
    offset_s: float = 0.0,
) -> Figure:
    """A probe's counts in FBRM's standard size classes beside the image CLD's, on one
    time axis.

    Parameters
    ----------
    run : path of a run with kinetics
    fbrm : FbrmCounts or the path of a probe's CSV export (:func:`read_fbrm_csv`)
    offset_s : float
        Run time of the probe's first row, seconds (negative: the probe started
        first); the probe's times are shifted by it.

    Returns
    -------
    Figure
        One panel per size class: the image chords per frame (left axis, blue) and
        the probe's counts (right axis, orange; their unit is the export's). The
        two scales differ (one focal plane against a probe window): compare trends.
    """
    summary = read_kinetics(run)
    counts = fbrm if isinstance(fbrm, FbrmCounts) else read_fbrm_csv(fbrm)
    probe = counts.class_counts()
    cld = open_cld(run)
    run_min = np.asarray(cld["time"].values, dtype=np.float64) / 60
    ours = np.asarray(cld["class_count"].values, dtype=np.float64)
    probe_min = (probe.index.to_numpy(dtype=np.float64) + float(offset_s)) / 60
    fig = Figure(figsize=(9, 9), layout="constrained")
    axes = fig.subplots(len(CLD_CLASS_NAMES), 1, sharex=True)
    for k, name in enumerate(CLD_CLASS_NAMES):
        ax = axes[k]
        ax.plot(run_min, ours[:, k], color="#0072B2", lw=1.2)
        ax.set_ylabel(f"{name} µm\nimage", color="#0072B2", fontsize=8)
        twin = ax.twinx()
        twin.plot(probe_min, probe[name].to_numpy(), color="#D55E00", lw=1.0, marker=".", ms=3)
        twin.set_ylabel("probe", color="#D55E00", fontsize=8)
        onset = summary.get("onset_s", math.nan)
        if onset == onset:
            ax.axvline(onset / 60, color="0.5", lw=0.8, ls=":")
    axes[-1].set_xlabel("time since the first frame (min)")
    axes[0].set_title(
        f"Chords per size class: image CLD (blue) and probe '{Path(counts.source).name}' (orange)",
        fontsize=9,
    )
    return fig


def write_kinetics_figures(
    run: RunLike,
    out_dir: RunLike,
    *,
    formats: tuple[str, ...] = ("png",),
    fbrm: FbrmCounts | str | os.PathLike[str] | None = None,
    fbrm_offset_s: float = 0.0,
) -> list[RunPath]:
    """Write the kinetics figures of a run (nothing when it has no kinetics).

    Parameters
    ----------
    run : path of the run
    out_dir : folder for the figures (created)
    formats : sequence of {"png", "svg", "pdf"}
    fbrm : FbrmCounts or the path of a probe's CSV export, optional (adds the ``fbrm``
        figure)
    fbrm_offset_s : run time of the probe's first row, seconds

    Returns
    -------
    list of Path
        ``out_dir/<figure>.<format>`` for the figures of :data:`KINETICS_FIGURES`
        (``kinetics``, ``tracks``, ``cld`` and, with a probe file, ``fbrm``).
    """
    if not has_kinetics(run):
        return []
    unknown = [f for f in formats if f not in ("png", "svg", "pdf")]
    if unknown:
        raise ConfigError(f"figure formats {unknown} are not png, svg or pdf; pick those")
    # a bad file fails before anything is written
    probe = fbrm if fbrm is None or isinstance(fbrm, FbrmCounts) else read_fbrm_csv(fbrm)
    figures = {
        "kinetics": lambda: plot_kinetics(run),
        "tracks": lambda: plot_tracks(run),
        "cld": lambda: plot_cld(run),
    }
    if probe is not None:
        figures["fbrm"] = lambda: plot_fbrm_overlay(run, probe, offset_s=fbrm_offset_s)
    out = run_path(out_dir)
    check_output_outside_run(out)
    make_folder(out)
    creator = f"crystalseg {crystalseg_version()}"
    metadata: dict[str, dict[str, Any]] = {
        "png": {"Software": creator},
        "svg": {"Date": None, "Creator": creator},
        "pdf": {"CreationDate": None, "Creator": creator},
    }
    written = []
    for stem, make in figures.items():
        fig = make()
        for fmt in formats:
            target = out / f"{stem}.{fmt}"
            with file_written_whole(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, metadata=metadata[fmt])
            written.append(target)
    return written


def _with_interval(summary: dict[str, Any], key: str, unit: str, digits: int = 3) -> str:
    value = summary.get(key, math.nan)
    if value is None or value != value:
        return "not found"
    low, high = summary.get(f"{key}_low", math.nan), summary.get(f"{key}_high", math.nan)
    text = f"{value:.{digits}g} {unit}"
    if low == low and high == high and low is not None:
        text += f" (95 % {low:.{digits}g} to {high:.{digits}g})"
    return text


def kinetics_section(run: RunLike, figure_html: Any) -> str | None:
    """HTML body of the report's Kinetics section, or None without kinetics.

    Parameters
    ----------
    run : path of the run
    figure_html : callable (Figure) -> str
        Embeds a figure (the report's own image helper).
    """
    if not has_kinetics(run):
        return None
    s = read_kinetics(run)
    unit = s.get("growth_units", "um/min").replace("um", "µm")
    onset = s.get("onset_s", math.nan)
    onset_text = (
        "none found (no sustained rise of new crystals above the background)"
        if onset is None or onset != onset
        else f"{onset:.0f} s (95 % {s['onset_low_s']:.0f} to {s['onset_high_s']:.0f} s)"
    )
    rows = [
        ("Tracks", f"{s['n_tracks']} ({s['n_tracks_fitted']} long and whole enough for a rate)"),
        ("Growth rate, length", _with_interval(s, "length_rate", unit)),
        ("Growth rate, width", _with_interval(s, "width_rate", unit)),
        ("Growth rate, ECD", _with_interval(s, "ecd_rate", unit)),
        ("Dissolution", "yes" if s.get("dissolving") else "not seen"),
        ("Nucleation onset", onset_text),
        ("Births in the field", str(s.get("births"))),
        ("Nucleation rate after onset", _with_interval(s, "rate_per_mm2_min", "per mm² per min")),
        (
            "Births near crystals vs random",
            _with_interval(s, "secondary_ratio", "(1: primary; above 1: secondary)"),
        ),
        ("Segmentation suspects", f"{s.get('segmentation_suspects', 0)} track frames"),
    ]
    if "rate_per_mm3_min" in s:
        rows.insert(
            8,
            (
                "Nucleation rate per volume",
                _with_interval(s, "rate_per_mm3_min", "per mm³ per min"),
            ),
        )
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    note = (
        "<p class='note'>Growth: Theil-Sen slope per crystal over the frames where it is "
        "whole and counted, mean over crystals with a bootstrap interval. Onset: change of "
        "the Poisson rate of new crystals. Births include crystals drifting into focus; "
        "crystals that touch are measured as one. See docs/kinetics.md for where these "
        "numbers fail.</p>"
    )
    return f"<table class='kv'>{table}</table>{note}{figure_html(plot_kinetics(run))}"
