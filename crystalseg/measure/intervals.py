"""95 % intervals for the statistics of one frame or of a pooled window of frames.

What an interval means here: the frame's counted particles are taken as a random
sample of the crystal population that the frame could have shown at that time
(the suspension at that moment, seen through the same field of view, segmented
and measured the same way). The interval covers that population's value (its
median size, its D[4,3], its expected count per field) in 95 % of frames. It is
*sampling* noise only: a model that draws every outline one pixel too wide moves
the D-values and their intervals together, and no interval here covers that
(``docs/statistics.md``).

Methods, and why:

* **Number-weighted quantiles** (D10/D50/D90, number basis) with equal weights:
  the exact, distribution-free order-statistic interval. The r-th smallest of n
  sizes lies below the population quantile ξ_p with probability
  P(Binomial(n, p) ≥ r), whatever the size distribution; no resampling, no seed,
  and it is exact at small n where the bootstrap is not (the bootstrap percentile
  interval of a median of 10 particles undercovers). Each tail takes the order
  statistic whose tail probability is just above 97.5 % and interpolates towards
  the next one (Hettmansperger & Sheather 1986, generalised to any quantile; see
  :func:`_interpolated_bound`), so that the coverage stays close to 95 % instead
  of jumping between 95 and 99 % with n. Where
  even the extreme order statistic holds less than 97.5 % for one tail, it is
  used if it holds at least 95 % (so the median of 5 particles gets
  [min, max], coverage 93.75 %), else that bound is NaN: the sample cannot bound
  the value (the lower end of D10 needs 35 particles, 1 − 0.9^35 ≥ 0.975).
  ``benchmarks/coverage.py`` measured the coverage of D50 on true masks.
* **Volume-weighted quantiles, moment means** (D[3,2], D[4,3]) and number
  quantiles under unequal (Miles–Lantuéjoul) weights: no exact interval exists;
  a percentile bootstrap over the frame's particles, :data:`BOOTSTRAP_RESAMPLES`
  resamples with generator seed :data:`BOOTSTRAP_SEED` (both recorded in the
  ``psd`` attributes), so that measuring the same mask twice gives the same
  interval. The volume basis rests on the few largest particles and its
  bootstrap interval undercovers below a few tens of particles: one reason for
  the minimum count (``MeasureSettings.min_count``).
* **Count and number per mm²**: the exact (Garwood) Poisson interval of the
  count, for crystals placed independently in the field; agglomerates and
  clustering make the true spread wider. The number per mm² scales it by the
  weighted number over the count and by the field area.
* **Pooled windows** (:func:`pooled_intervals`): a crystal that stays in view is
  counted once per frame, so the particles of a window are not independent
  draws; the window's intervals resample whole frames (a cluster bootstrap:
  frames drawn with replacement, their particles pooled), so whatever the frames
  share moves together. This treats the frames as independent samples of the
  population; where the very same crystals stay in view the whole window, the
  frames differ little and the interval shows how much they differ, not the
  sampling of the population (read the per-frame intervals then). Windows of
  fewer than :data:`MIN_CLUSTER_FRAMES` frames have too few distinct resamples
  for that; their intervals treat the pooled particles as one frame.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from crystalseg.errors import ConfigError

#: Two-sided confidence of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples per frame. 1000 puts the Monte Carlo error of a 2.5 %
#: percentile near 0.5 % of the interval's width; one frame of 300 particles
#: takes about 10 ms.
BOOTSTRAP_RESAMPLES = 1000
#: Seed of the bootstrap generator (combined with nothing else: the same particles
#: give the same interval).
BOOTSTRAP_SEED = 20240
#: Least frames of a window resampled as whole frames (cluster bootstrap).
MIN_CLUSTER_FRAMES = 5

#: Statistics that get an interval, by kind: order statistic (number quantiles with
#: equal weights), bootstrap (the rest). Names as in group ``psd``.
QUANTILE_NAMES: dict[str, tuple[str, float]] = {
    "d10_number": ("number", 0.1),
    "d50_number": ("number", 0.5),
    "d90_number": ("number", 0.9),
    "d10_volume": ("volume", 0.1),
    "d50_volume": ("volume", 0.5),
    "d90_volume": ("volume", 0.9),
}
MOMENT_NAMES: dict[str, tuple[int, int]] = {"d_3_2": (3, 2), "d_4_3": (4, 3)}
#: Every statistic with a ``_lower`` and ``_upper`` bound in ``psd``.
INTERVAL_NAMES: tuple[str, ...] = (*QUANTILE_NAMES, *MOMENT_NAMES)


def order_statistic_interval(
    sizes: ArrayLike, quantile: float, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Distribution-free interval for a population quantile from an unweighted sample.

    Parameters
    ----------
    sizes : array_like, shape (n,)
        The sample (finite values).
    quantile : float
        p in (0, 1), e.g. 0.5 for the median.
    confidence : float
        Two-sided confidence, e.g. 0.95.

    Returns
    -------
    (lower, upper) : float
        Interpolated order statistics (see the module docstring); a bound is NaN
        where the sample is too small to give it, both are NaN for an empty sample.
    """
    _check_confidence(confidence)
    if not 0 < quantile < 1:
        raise ConfigError(f"quantile must lie in (0, 1), got {quantile!r}.")
    x = np.sort(np.asarray(sizes, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    ranks = np.arange(1, n + 1)
    # P(X_(r) <= xi_p) = P(B >= r) and P(X_(r) >= xi_p) = P(B <= r - 1), B ~ Bin(n, p).
    below = stats.binom.sf(ranks - 1, n, quantile)
    above = stats.binom.cdf(ranks - 1, n, quantile)
    lower = _interpolated_bound(x, below, quantile, 1 - tail, 1 - 2 * tail)
    upper = _interpolated_bound(x[::-1], above[::-1], 1 - quantile, 1 - tail, 1 - 2 * tail)
    return lower, upper


def _interpolated_bound(
    x: np.ndarray, hold: np.ndarray, p: float, target: float, least: float
) -> float:
    """One bound from values ``x`` ordered from the outside in (``x[0]`` the most
    extreme), whose one-tail coverages ``hold`` fall from the outside in; ``p`` is the
    quantile's probability seen from that side (1 − p for the upper bound).

    Between the innermost order statistic still at ``target`` (rank r from the
    outside) and the next, the bound is (1 − λ) x_r + λ x_(r+1). Near the quantile
    the r particles below it end an exponential gap of rate r / p before it and the
    n − r above begin one of rate (n − r) / (1 − p) after it, whatever the density;
    the bound then covers with probability P(B ≥ r + 1) + P(B = r) b (1 − λ) /
    (a λ + b (1 − λ)), a = r / p, b = (n − r) / (1 − p), which gives λ (for the
    median this is Hettmansperger & Sheather's 1986 interpolation).
    """
    ok = np.flatnonzero(hold >= target)
    if not len(ok):
        return float(x[0]) if hold[0] >= least else math.nan
    k = int(ok[-1])  # the innermost bound still at the target
    n = len(x)
    if k + 1 >= n or hold[k] == hold[k + 1]:
        return float(x[k])
    keep = (target - hold[k + 1]) / (hold[k] - hold[k + 1])  # share of P(B = r) needed
    r = k + 1
    a, b = r / p, (n - r) / (1 - p)
    lam = b * (1 - keep) / (keep * a + b * (1 - keep))
    return float((1 - lam) * x[k] + lam * x[k + 1])


def poisson_interval(count: float, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Garwood) interval for the mean of a Poisson count.

    Parameters
    ----------
    count : float
        Observed count (≥ 0; NaN gives NaN).
    confidence : float
        Two-sided confidence.

    Returns
    -------
    (lower, upper) : float
        ``chi2.ppf(α/2, 2k) / 2`` (0 for k = 0) and ``chi2.ppf(1 − α/2, 2k + 2) / 2``.
    """
    _check_confidence(confidence)
    if not math.isfinite(count):
        return math.nan, math.nan
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count!r}.")
    alpha = 1 - confidence
    lower = 0.0 if count == 0 else float(stats.chi2.ppf(alpha / 2, 2 * count) / 2)
    upper = float(stats.chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)
    return lower, upper


def bootstrap_statistics(
    sizes: np.ndarray, weights: np.ndarray, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """The D-values and moment means of resamples of one set of particles.

    Parameters
    ----------
    sizes : ndarray, shape (n,)
        Particle sizes.
    weights : ndarray, shape (n,)
        Their number weights.
    counts : ndarray, shape (B, n)
        How often each particle is drawn in each resample.

    Returns
    -------
    dict of str to ndarray, shape (B,)
        Every name of :data:`INTERVAL_NAMES`, computed exactly as
        :func:`~crystalseg.measure.distributions.size_distribution` computes it
        of the resampled particles (ties merged, interpolated cumulative
        distribution).
    """
    order = np.argsort(sizes, kind="stable")
    x, w, c = sizes[order], weights[order], counts[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    values = x[starts]
    out: dict[str, np.ndarray] = {}
    number = np.add.reduceat(c * w, starts, axis=1)
    volume = number * values**3
    for name, (basis, p) in QUANTILE_NAMES.items():
        out[name] = _rowwise_quantile(values, number if basis == "number" else volume, p)
    for name, (p, q) in MOMENT_NAMES.items():
        num = (number * values**p).sum(axis=1)
        den = (number * values**q).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(den > 0, (num / den) ** (1.0 / (p - q)), np.nan)
    return out


def _rowwise_quantile(values: np.ndarray, weights: np.ndarray, p: float) -> np.ndarray:
    """Per row of ``weights`` (B, m), the quantile ``p`` of distinct sorted ``values``
    as :func:`~crystalseg.measure.distributions.weighted_quantile` gives it."""
    b, m = weights.shape
    total = weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        cum = np.cumsum(weights, axis=1) / total
    idx = np.arange(m)
    positive = weights > 0
    # Last point with weight at or before each position (-1: none yet).
    last = np.maximum.accumulate(np.where(positive, idx, -1), axis=1)
    k = np.minimum((cum < p).sum(axis=1), m - 1)  # first point with cum >= p
    rows = np.arange(b)
    prev = np.where(k > 0, last[rows, np.maximum(k - 1, 0)], -1)
    xk = values[k]
    ck = cum[rows, k]
    cp = np.where(prev >= 0, cum[rows, np.maximum(prev, 0)], 0.0)
    xp = values[np.maximum(prev, 0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (p - cp) / (ck - cp)
    out = np.where(prev >= 0, xp + frac * (xk - xp), xk)
    return np.where(total[:, 0] > 0, out, np.nan)


def percentile_bounds(
    samples: np.ndarray, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The equal-tailed percentile interval of bootstrap replicates (NaN ones dropped)."""
    s = samples[np.isfinite(samples)]
    if not len(s):
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(s, [tail, 100 - tail])
    return float(lo), float(hi)


def particle_intervals(
    sizes: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Intervals of every statistic in :data:`INTERVAL_NAMES` for one frame's particles.

    Parameters
    ----------
    sizes : array_like, shape (n,)
        Sizes of the counted particles (NaN dropped).
    weights : array_like, shape (n,), optional
        Their number weights (1 when omitted); zero-weight particles are dropped.
    resamples, seed : int
        Bootstrap resamples and generator seed.
    confidence : float

    Returns
    -------
    dict of str to (lower, upper)
        Number quantiles by :func:`order_statistic_interval` when all weights
        are equal, else by the bootstrap, like the volume quantiles and moment
        means (see the module docstring). NaN for an empty set.
    """
    x = np.asarray(sizes, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = np.isfinite(x) & (w > 0)
    x, w = x[keep], w[keep]
    n = x.size
    if n == 0:
        return {name: (math.nan, math.nan) for name in INTERVAL_NAMES}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(resamples))
    boot = bootstrap_statistics(x, w, counts)
    out = {name: percentile_bounds(boot[name], confidence=confidence) for name in INTERVAL_NAMES}
    if np.all(w == w[0]):
        for name, (basis, p) in QUANTILE_NAMES.items():
            if basis == "number":
                out[name] = order_statistic_interval(x, p, confidence=confidence)
    return out


def pooled_intervals(
    sizes: ArrayLike,
    weights: ArrayLike,
    frames: ArrayLike,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Intervals of the statistics of the pooled particles of several frames.

    Parameters
    ----------
    sizes, weights : array_like, shape (n,)
        Sizes and number weights of the counted particles of every frame of the window.
    frames : array_like, shape (n,)
        Frame of each particle (frames without counted particles add nothing to
        the pooled distribution and are left out of the resampling).
    resamples, seed, confidence :
        As for :func:`particle_intervals`.

    Returns
    -------
    dict of str to (lower, upper)
        With at least :data:`MIN_CLUSTER_FRAMES` distinct frames, percentile
        intervals of a cluster bootstrap that draws whole frames with replacement
        and pools their particles; with fewer, :func:`particle_intervals` of the
        pooled particles (module docstring).
    """
    x = np.asarray(sizes, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    f = np.asarray(frames).ravel()
    keep = np.isfinite(x) & (w > 0)
    x, w, f = x[keep], w[keep], f[keep]
    ids, member = np.unique(f, return_inverse=True)
    if len(ids) < MIN_CLUSTER_FRAMES:
        return particle_intervals(
            x, weights=w, resamples=resamples, seed=seed, confidence=confidence
        )
    rng = np.random.default_rng(seed)
    k = len(ids)
    frame_draws = rng.multinomial(k, np.full(k, 1.0 / k), size=int(resamples))  # (B, k)
    boot = bootstrap_statistics(x, w, frame_draws[:, member])
    return {name: percentile_bounds(boot[name], confidence=confidence) for name in INTERVAL_NAMES}


def mean_interval(
    values: ArrayLike,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-frame values (e.g. counts)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(v), np.full(len(v), 1.0 / len(v)), size=int(resamples))
    return percentile_bounds(draws @ v / len(v), confidence=confidence)


def count_intervals(
    count: int,
    number: float,
    frame_area: float,
    pixel_size_um: float | None,
    *,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[tuple[str, ...], float]]:
    """Poisson intervals of a frame's count and of its number per mm², ready for xarray.

    Parameters
    ----------
    count : int
        Counted particles.
    number : float
        Their weighted number (the count, or the edge-corrected count).
    frame_area : float
        Field area in µm² (px² without a pixel size).
    pixel_size_um : float or None
        Without it the number per mm² and its bounds are NaN.

    Returns
    -------
    dict
        ``count_kept_lower``/``_upper`` (:func:`poisson_interval`) and
        ``number_density``, ``number_density_lower``/``_upper`` (the count's
        bounds times number / count, per mm² of field).
    """
    lower, upper = poisson_interval(count, confidence=confidence)
    out: dict[str, tuple[tuple[str, ...], float]] = {
        "count_kept_lower": ((), lower),
        "count_kept_upper": ((), upper),
    }
    per_mm2 = 1.0 / (frame_area * 1e-6) if pixel_size_um else math.nan
    scale = number / count if count else 1.0
    out["number_density"] = ((), number * per_mm2)
    out["number_density_lower"] = ((), lower * scale * per_mm2)
    out["number_density_upper"] = ((), upper * scale * per_mm2)
    return out


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence!r}.")


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "INTERVAL_NAMES",
    "bootstrap_statistics",
    "count_intervals",
    "mean_interval",
    "order_statistic_interval",
    "particle_intervals",
    "poisson_interval",
    "pooled_intervals",
]
