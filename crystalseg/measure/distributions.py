"""Particle size distributions of one frame: densities on log bins, D-values, moment means.

Conventions (ISO 9276-1/-2 language):

* A *basis* says what each particle counts for: the **number** basis (r = 0)
  counts each particle with its weight w (1, or an edge-correction weight);
  the **volume** basis (r = 3) counts it with w · x³, x its size (the volume of
  a sphere of diameter x, up to a constant that cancels).
* Densities are ``q0`` and ``q3`` per unit of **log10** size: the fraction of
  the basis in a bin divided by the bin's width in decades,
  q_r[i] = ΔQ_r[i] / (log10 e[i+1] − log10 e[i]). Over the bins they integrate
  to the fraction of the basis whose size lies inside the bins (1 when the
  bins cover every particle; the rest is reported as ``fraction_outside``).
* D-values (D10, D50, D90) are quantiles of the particles themselves, not of
  the binned histogram: the cumulative distribution Q_r(x) is the weighted
  empirical one, linearly interpolated between the distinct sizes
  (for distinct sizes and equal weights, NumPy's ``interpolated_inverted_cdf``,
  Hyndman & Fan type 4): below the smallest size's share, the smallest size.
  Being a function of the cumulative distribution alone, integer weights give
  exactly the values of the sample with each size repeated weight times, and
  scaling all weights changes nothing.
* Moment means D[p, q] = (Σ w x^p / Σ w x^q)^(1/(p − q)) on the number basis:
  D[1,0] the number mean, D[3,2] the Sauter mean, D[4,3] the De Brouckere
  (volume-weighted) mean.
* ``span`` = (D90 − D10) / D50 on the **volume** basis, as laser-diffraction
  reports give it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalseg.dims import LENGTH_BIN, SIZE_BIN, WIDTH_BIN
from crystalseg.errors import ConfigError
from crystalseg.measure.features import miles_lantuejoul_weights
from crystalseg.measure.intervals import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    INTERVAL_NAMES,
    particle_intervals,
)

log = logging.getLogger(__name__)


#: Quantiles reported as D10, D50, D90.
QUANTILES = (0.1, 0.5, 0.9)

EdgeTreatment = Literal["keep", "exclude", "miles-lantuejoul"]

#: Statistics set to NaN in a frame (or window) with fewer counted particles than
#: the minimum count, with their interval bounds.
SIZE_STATISTICS: tuple[str, ...] = (
    "d10_number",
    "d50_number",
    "d90_number",
    "d10_volume",
    "d50_volume",
    "d90_volume",
    "d_1_0",
    "d_3_2",
    "d_4_3",
    "span_volume",
)


def log_bins(min_size: float, max_size: float, n_bins: int) -> np.ndarray:
    """Logarithmically spaced size-bin edges.

    Parameters
    ----------
    min_size, max_size : float
        Lower edge of the first bin and upper edge of the last, in the unit of
        the sizes (µm or px); 0 < min_size < max_size.
    n_bins : int
        Number of bins (≥ 1).

    Returns
    -------
    ndarray of float64, shape (n_bins + 1,)
        Edges, equally spaced in log size, ``edges[0] == min_size`` and
        ``edges[-1] == max_size``.
    """
    if not (math.isfinite(min_size) and math.isfinite(max_size) and 0 < min_size < max_size):
        raise ConfigError(
            f"size bins need 0 < min_size < max_size, got {min_size!r} and {max_size!r}; "
            "e.g. log_bins(1.0, 1000.0, 60) for 1 µm to 1 mm."
        )
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}.")
    edges = np.logspace(math.log10(min_size), math.log10(max_size), int(n_bins) + 1)
    edges[0], edges[-1] = min_size, max_size
    return edges


def weighted_quantile(
    values: ArrayLike, quantiles: ArrayLike, *, weights: ArrayLike | None = None
) -> np.ndarray:
    """Quantiles of a weighted sample, interpolated on its cumulative distribution.

    Parameters
    ----------
    values : array_like, shape (n,)
        Sample values (finite).
    quantiles : array_like, shape (k,), or float
        Probabilities in [0, 1].
    weights : array_like, shape (n,), optional
        Non-negative weights; equal weights when omitted.

    Returns
    -------
    ndarray of float64, shape (k,)
        Interpolated quantiles (see the module docstring); NaN when the sample is
        empty or its weights sum to 0. With equal weights and distinct values
        this is ``numpy.quantile(values, q, method="interpolated_inverted_cdf")``;
        ties count as one point holding their summed weight.
    """
    q = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    x = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = w > 0
    x, w = x[keep], w[keep]
    total = w.sum()
    if x.size == 0 or not total > 0:
        return np.full(q.shape, np.nan)
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cum = np.cumsum(w) / total
    # One point per distinct value: its cumulative share including all its ties.
    last = np.r_[x[1:] != x[:-1], True]
    return np.interp(q, cum[last], x[last])


def size_distribution(
    sizes: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    bins: ArrayLike,
) -> dict[str, float | int | np.ndarray]:
    """Number- and volume-based size distribution of a set of particles.

    Parameters
    ----------
    sizes : array_like, shape (n,)
        Particle sizes (e.g. ECD) in µm or px; NaN sizes are dropped.
    weights : array_like, shape (n,), optional
        Number weight of each particle (e.g. Miles–Lantuéjoul edge correction);
        1 when omitted. Must be non-negative and finite.
    bins : ndarray, shape (n_bins + 1,)
        Increasing, positive bin edges (:func:`log_bins`).

    Returns
    -------
    dict
        ``count`` (int, particles with a size), ``number`` (Σ w, the weighted
        count), ``q0`` and ``q3`` (ndarray (n_bins,), densities per log10 size,
        see the module docstring), ``fraction_outside_number`` and
        ``fraction_outside_volume`` (share of the basis outside the bins),
        ``d10_number``, ``d50_number``, ``d90_number``, ``d10_volume``,
        ``d50_volume``, ``d90_volume``, ``d_1_0``, ``d_3_2``, ``d_4_3``,
        ``span_volume`` ((D90 − D10) / D50, volume basis).
        An empty set gives count 0, densities 0 and NaN statistics.
    """
    edges = _check_bins(bins)
    x = np.asarray(sizes, dtype=np.float64).ravel()
    if weights is None:
        w = np.ones_like(x)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise ConfigError(
                f"weights have {w.size} values for {x.size} sizes; pass one weight per particle."
            )
        if (w < 0).any() or not np.isfinite(w).all():
            raise ConfigError(
                "weights must be finite and non-negative; drop particles with infinite "
                "Miles–Lantuéjoul weights (larger than the frame) first."
            )
    if (x < 0).any():
        raise ConfigError("sizes must be non-negative; got negative values.")
    valid = np.isfinite(x)
    x, w = x[valid], w[valid]

    n_bins = len(edges) - 1
    out: dict[str, float | int | np.ndarray] = {"count": int(x.size), "number": float(w.sum())}
    dlog = np.diff(np.log10(edges))
    w3 = w * x**3
    d_values: dict[str, np.ndarray] = {}
    for name, basis in (("number", w), ("volume", w3)):
        total = basis.sum()
        hist, _ = np.histogram(x, bins=edges, weights=basis)
        key = "q0" if name == "number" else "q3"
        if total > 0:
            out[key] = hist / total / dlog
            out[f"fraction_outside_{name}"] = float(max(0.0, 1.0 - hist.sum() / total))
        else:
            out[key] = np.zeros(n_bins)
            out[f"fraction_outside_{name}"] = math.nan
        d_values[name] = weighted_quantile(x, QUANTILES, weights=basis)
        for label, value in zip(("d10", "d50", "d90"), d_values[name], strict=True):
            out[f"{label}_{name}"] = float(value)
    out["d_1_0"] = moment_mean(x, 1, 0, weights=w)
    out["d_3_2"] = moment_mean(x, 3, 2, weights=w)
    out["d_4_3"] = moment_mean(x, 4, 3, weights=w)
    d10v, d50v, d90v = d_values["volume"]
    out["span_volume"] = float((d90v - d10v) / d50v) if d50v > 0 else math.nan
    return out


def moment_mean(sizes: ArrayLike, p: int, q: int, *, weights: ArrayLike | None = None) -> float:
    """Moment-ratio mean diameter D[p, q] = (Σ w x^p / Σ w x^q)^(1 / (p − q)).

    Parameters
    ----------
    sizes : array_like, shape (n,)
        Particle sizes.
    p, q : int
        Moment orders, p > q (D[1,0] number mean, D[3,2] Sauter, D[4,3] De Brouckere).
    weights : array_like, shape (n,), optional
        Number weights; 1 when omitted.

    Returns
    -------
    float
        The mean, NaN for an empty set or a zero denominator.
    """
    if p <= q:
        raise ConfigError(f"D[p,q] needs p > q, got p={p}, q={q}.")
    x = np.asarray(sizes, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    den = float(np.sum(w * x**q))
    if x.size == 0 or not den > 0:
        return math.nan
    return float((np.sum(w * x**p) / den) ** (1.0 / (p - q)))


def frame_distributions(
    table: pd.DataFrame,
    *,
    bins: np.ndarray,
    size_column: str = "ecd",
    weight_column: str | None = None,
    edge: EdgeTreatment = "keep",
    frame_shape: tuple[int, int] | None = None,
    frame_area: float | None = None,
    elongated_aspect_ratio: float = 2.0,
    min_count: int = 1,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, tuple[tuple[str, ...], np.ndarray | float]]:
    """Size distribution and summary statistics of one frame, ready for xarray.

    Parameters
    ----------
    table : DataFrame
        One frame's particles as :func:`~crystalseg.measure.features.measure_frame`
        returns them (needs ``size_column``; ``feret_diameter_max``,
        ``feret_diameter_min``, ``aspect_ratio``, ``circularity`` and ``area``
        for the shape statistics; ``touches_edge`` and the ``bbox_*`` columns
        for the edge treatment).
    bins : ndarray, shape (n_bins + 1,)
        Size-bin edges (:func:`log_bins`), shared by every frame of a run and by
        both axes of the length × width histogram.
    size_column : str
        Column that holds the size (default the ECD).
    weight_column : str, optional
        Column of number weights, multiplied into the edge weights.
    edge : {"keep", "exclude", "miles-lantuejoul"}
        Particles cut by the frame edge bias sizes low: keep them as measured,
        exclude them, or exclude them and weight the others with
        :func:`~crystalseg.measure.features.miles_lantuejoul_weights` (needs
        ``frame_shape``; particles as large as the frame are dropped too).
    frame_shape : tuple of int, optional
        (H, W) of the frame in pixels; needed for ``edge="miles-lantuejoul"``.
    frame_area : float, optional
        Frame area in the unit of ``area`` (µm² or px²), for the
        projected-area fraction; NaN without it.
    elongated_aspect_ratio : float
        Crystals with ``aspect_ratio`` at least this enter the length × width
        histogram.
    min_count : int
        Least counted particles for D-values: with fewer, every name of
        :data:`SIZE_STATISTICS` and its bounds are NaN and ``below_min_count``
        is True (the densities ``q0``/``q3`` stay: they are counts).
    resamples, seed : int
        Bootstrap resamples and seed of the intervals
        (:func:`~crystalseg.measure.intervals.particle_intervals`).

    Returns
    -------
    dict of str to (dims, value)
        ``xarray.Dataset(result)`` gives one time slice: ``q0`` and ``q3`` on
        dims (size_bin,), ``length_width`` (weighted counts of elongated
        crystals, feret_diameter_max × feret_diameter_min) on
        (length_bin, width_bin), and scalars: the entries of
        :func:`size_distribution`, ``<name>_lower`` and ``<name>_upper`` (95 %
        interval) for every name of
        :data:`~crystalseg.measure.intervals.INTERVAL_NAMES`,
        ``below_min_count`` (bool), ``count_elongated``, ``count_edge`` (edge
        particles in the table), ``aspect_ratio_mean``, ``circularity_mean``
        (number-weighted, NaN values skipped) and ``projected_area_fraction``
        (all particles of the table, edge ones included).
    """
    edges = _check_bins(bins)
    if edge not in ("keep", "exclude", "miles-lantuejoul"):
        raise ConfigError(
            f"edge treatment {edge!r} is unknown; use 'keep', 'exclude' or 'miles-lantuejoul'."
        )
    require_columns(table, [size_column] + ([weight_column] if weight_column else []))
    n = len(table)
    w = np.ones(n)
    if weight_column is not None:
        w = table[weight_column].to_numpy(dtype=np.float64)
    touches = (
        table["touches_edge"].to_numpy(dtype=bool)
        if "touches_edge" in table
        else np.zeros(n, dtype=bool)
    )
    if edge != "keep":
        require_columns(table, ["touches_edge"])
        w = np.where(touches, 0.0, w)
    if edge == "miles-lantuejoul":
        if frame_shape is None:
            raise ConfigError(
                "edge='miles-lantuejoul' needs frame_shape=(H, W) in pixels; pass the frame shape."
            )
        require_columns(table, ["bbox_min_y", "bbox_max_y", "bbox_min_x", "bbox_max_x"])
        ml = miles_lantuejoul_weights(
            table["bbox_max_y"].to_numpy() - table["bbox_min_y"].to_numpy(),
            table["bbox_max_x"].to_numpy() - table["bbox_min_x"].to_numpy(),
            frame_shape,
        )
        w = np.where(np.isfinite(ml) & (w > 0), w * np.where(np.isfinite(ml), ml, 0.0), 0.0)
    used = w > 0
    sizes = table[size_column].to_numpy(dtype=np.float64)
    result = distribution_statistics(
        sizes[used], w[used], bins=edges, min_count=min_count, resamples=resamples, seed=seed
    )

    shape_w = w[used]
    result["aspect_ratio_mean"] = ((), _weighted_mean(table, "aspect_ratio", used, shape_w))
    result["circularity_mean"] = ((), _weighted_mean(table, "circularity", used, shape_w))
    result["count_edge"] = ((), int(touches.sum()))
    if frame_area is not None and "area" in table:
        if not frame_area > 0:
            raise ConfigError(f"frame_area must be positive, got {frame_area!r}.")
        fraction = float(table["area"].to_numpy(dtype=np.float64).sum() / frame_area)
    else:
        fraction = math.nan
    result["projected_area_fraction"] = ((), fraction)

    n_bins = len(edges) - 1
    hist2d = np.zeros((n_bins, n_bins))
    n_elongated = 0
    if {"aspect_ratio", "feret_diameter_max", "feret_diameter_min"} <= set(table.columns):
        elongated = used & (
            table["aspect_ratio"].to_numpy(dtype=np.float64) >= elongated_aspect_ratio
        )
        n_elongated = int(elongated.sum())
        if n_elongated:
            hist2d, _, _ = np.histogram2d(
                table["feret_diameter_max"].to_numpy(dtype=np.float64)[elongated],
                table["feret_diameter_min"].to_numpy(dtype=np.float64)[elongated],
                bins=(edges, edges),
                weights=w[elongated],
            )
    result["length_width"] = ((LENGTH_BIN, WIDTH_BIN), hist2d)
    result["count_elongated"] = ((), n_elongated)
    return result


def distribution_statistics(
    sizes: np.ndarray,
    weights: np.ndarray,
    *,
    bins: np.ndarray,
    min_count: int = 1,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    intervals: dict[str, tuple[float, float]] | None = None,
) -> dict[str, tuple[tuple[str, ...], np.ndarray | float]]:
    """:func:`size_distribution` with intervals and the minimum-count rule, ready for xarray.

    Parameters
    ----------
    sizes, weights : ndarray, shape (n,)
        Sizes and number weights of the counted particles.
    bins : ndarray, shape (n_bins + 1,)
    min_count : int
        See :func:`frame_distributions`.
    resamples, seed : int
        Bootstrap settings of :func:`~crystalseg.measure.intervals.particle_intervals`.
    intervals : dict of str to (lower, upper), optional
        Intervals made elsewhere (a pooled window's cluster bootstrap); computed
        from the particles when omitted.

    Returns
    -------
    dict of str to (dims, value)
        The entries of :func:`size_distribution` (densities on (size_bin,)),
        ``<name>_lower``/``<name>_upper`` and ``below_min_count``.
    """
    if isinstance(min_count, bool) or int(min_count) != min_count or min_count < 1:
        raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}.")
    dist = size_distribution(sizes, weights=weights, bins=bins)
    below = int(dist["count"]) < min_count
    if intervals is None:
        intervals = (
            {}
            if below
            else particle_intervals(sizes, weights=weights, resamples=resamples, seed=seed)
        )
    result: dict[str, tuple[tuple[str, ...], np.ndarray | float]] = {}
    for key, value in dist.items():
        if isinstance(value, np.ndarray):
            result[key] = ((SIZE_BIN,), value)
        else:
            result[key] = ((), math.nan if below and key in SIZE_STATISTICS else value)
    for name in INTERVAL_NAMES:
        lower, upper = (math.nan, math.nan) if below else intervals[name]
        result[f"{name}_lower"] = ((), lower)
        result[f"{name}_upper"] = ((), upper)
    result["below_min_count"] = ((), below)
    return result


# --------------------------------------------------------------------------- helpers


def _check_bins(bins: ArrayLike) -> np.ndarray:
    edges = np.asarray(bins, dtype=np.float64)
    if (
        edges.ndim != 1
        or edges.size < 2
        or not np.isfinite(edges).all()
        or edges[0] <= 0
        or (np.diff(edges) <= 0).any()
    ):
        raise ConfigError(
            "bins must be at least two increasing, positive, finite edges; "
            "make them with log_bins(min_size, max_size, n_bins)."
        )
    return edges


def require_columns(
    table: pd.DataFrame,
    columns: Sequence[str],
    remedy: str = "Pass a table from measure_frame or name an existing column.",
) -> None:
    """Raise a one-line ConfigError naming the ``columns`` that ``table`` lacks, and ``remedy``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(
            f"the particle table lacks column(s) {missing}; it has {list(table.columns)}. " + remedy
        )


def _weighted_mean(table: pd.DataFrame, column: str, used: np.ndarray, w: np.ndarray) -> float:
    if column not in table:
        return math.nan
    v = table[column].to_numpy(dtype=np.float64)[used]
    ok = np.isfinite(v)
    total = w[ok].sum()
    return float(np.sum(v[ok] * w[ok]) / total) if total > 0 else math.nan
