"""Figures and the report section of a run's kinetics (growth, nucleation, CLD).

:func:`plot_kinetics` draws four panels from the groups that ``crystalseg
kinetics`` wrote: growth rate against size (the size-dependence test), the birth
rate over time with the nucleation onset and its interval, the population growth
rate over time, and the chord counts in FBRM's size classes over time.
:func:`kinetics_section` is the report's Kinetics section (None when the run has
no kinetics).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crystalseg.kinetics.cld import CLD_CLASS_NAMES
from crystalseg.kinetics.run import open_cld, read_kinetics
from crystalseg.store import read_table, stage_info
from crystalseg.store.location import RunLike, run_path


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
