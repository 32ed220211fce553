"""Intervals of the per-frame statistics, the minimum-count rule and counts that reconcile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from crystalseg.errors import ConfigError
from crystalseg.measure import EXCLUDED_REASONS, MeasureSettings, measure_mask_frame
from crystalseg.measure.distributions import (
    SIZE_STATISTICS,
    distribution_statistics,
    log_bins,
    moment_mean,
    weighted_quantile,
)
from crystalseg.measure.intervals import (
    INTERVAL_NAMES,
    bootstrap_statistics,
    order_statistic_interval,
    particle_intervals,
    poisson_interval,
)
from crystalseg.measure.settings import parse_window

BINS = log_bins(0.1, 10_000.0, 100)


def test_constant_population_gives_degenerate_intervals() -> None:
    out = particle_intervals(np.full(40, 12.5))
    assert set(out) == set(INTERVAL_NAMES)
    for lower, upper in out.values():
        assert lower == upper == 12.5


def test_median_interval_shrinks_like_one_over_sqrt_n() -> None:
    """Order-statistic interval of the median of N(0, 1) samples: width ≈ 2·1.96·sqrt(π/2)/√n."""
    rng = np.random.default_rng(5)
    widths = {}
    for n in (25, 100, 400, 1600):
        w = [np.diff(order_statistic_interval(rng.normal(size=n), 0.5))[0] for _ in range(200)]
        widths[n] = float(np.mean(w))
        expected = 2 * 1.96 * math.sqrt(math.pi / 2) / math.sqrt(n)
        assert widths[n] == pytest.approx(expected, rel=0.12)
    for small, large in ((25, 100), (100, 400), (400, 1600)):
        assert widths[small] / widths[large] == pytest.approx(2.0, rel=0.1)


def test_bootstrap_interval_of_the_mean_size_shrinks_like_one_over_sqrt_n() -> None:
    """D[4,3] of normal sizes: the bootstrap width falls by about 2 per 4x particles."""
    rng = np.random.default_rng(6)
    widths = []
    for n in (100, 400, 1600):
        runs = [particle_intervals(rng.normal(50.0, 8.0, n), resamples=300) for _ in range(8)]
        widths.append(np.mean([r["d_4_3"][1] - r["d_4_3"][0] for r in runs]))
    assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.15)
    assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.15)


def test_order_statistic_bounds_are_the_binomial_ranks() -> None:
    # n = 5: only [min, max] is possible for the median; D10 has no lower bound.
    x = np.array([3.0, 1.0, 5.0, 2.0, 4.0])
    assert order_statistic_interval(x, 0.5) == (1.0, 5.0)
    lower, upper = order_statistic_interval(x, 0.1)
    # P(X(3) >= xi_0.1) = P(Bin(5, 0.1) <= 2) = 0.991 and P(X(2) >= xi_0.1) = 0.919.
    assert math.isnan(lower) and 2.0 < upper < 3.0
    # Large n: the bounds lie between the ranks n p ± 1.96 sqrt(n p (1 - p)).
    values = np.arange(1.0, 1001.0)
    lower, upper = order_statistic_interval(values, 0.5)
    assert 468 <= lower <= 471 and 530 <= upper <= 533
    with pytest.raises(ConfigError, match=r"quantile must lie in \(0, 1\)"):
        order_statistic_interval(values, 1.0)


def test_median_interval_covers_the_population_median() -> None:
    rng = np.random.default_rng(7)
    for n in (5, 12, 60):
        hits = [
            lo <= 1.0 <= hi
            for lo, hi in (
                order_statistic_interval(rng.lognormal(0.0, 0.5, n), 0.5) for _ in range(1500)
            )
        ]
        assert 0.925 <= np.mean(hits) <= 0.975


def test_bootstrap_replicates_equal_the_statistics_of_the_resample() -> None:
    rng = np.random.default_rng(8)
    x = np.round(rng.lognormal(3, 0.5, 30), 1)  # ties
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=20)
    boot = bootstrap_statistics(x, np.ones(30), counts)
    for i in range(20):
        sample = np.repeat(x, counts[i])
        assert boot["d50_number"][i] == pytest.approx(weighted_quantile(sample, 0.5)[0])
        assert boot["d10_volume"][i] == pytest.approx(
            weighted_quantile(sample, 0.1, weights=sample**3)[0]
        )
        assert boot["d_3_2"][i] == pytest.approx(moment_mean(sample, 3, 2))


def test_poisson_interval() -> None:
    assert poisson_interval(0) == pytest.approx((0.0, 3.6889), abs=1e-4)
    lower, upper = poisson_interval(100)
    assert lower == pytest.approx(81.36, abs=0.01) and upper == pytest.approx(121.63, abs=0.01)
    assert lower == pytest.approx(stats.chi2.ppf(0.025, 200) / 2)


def test_min_count_rule() -> None:
    sizes = np.linspace(10.0, 20.0, 9)
    few = distribution_statistics(sizes, np.ones(9), bins=BINS, min_count=10)
    assert few["below_min_count"][1] is True
    for name in SIZE_STATISTICS:
        assert math.isnan(few[name][1])
    for name in INTERVAL_NAMES:
        assert math.isnan(few[f"{name}_lower"][1]) and math.isnan(few[f"{name}_upper"][1])
    assert few["count"][1] == 9 and few["q0"][1].sum() > 0  # the histogram stays
    enough = distribution_statistics(sizes, np.ones(9), bins=BINS, min_count=9)
    assert enough["below_min_count"][1] is False
    assert enough["d50_number"][1] == pytest.approx(weighted_quantile(sizes, 0.5)[0])
    assert enough["d50_number_lower"][1] <= 14.375 <= enough["d50_number_upper"][1]
    with pytest.raises(ConfigError, match="min_count must be an integer >= 1"):
        MeasureSettings(min_count=0)


def test_small_objects_are_listed_as_excluded_and_counts_reconcile() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:20, 10:20] = 1  # counted
    mask[0:8, 40:48] = 1  # touches the edge
    mask[40:42, 40:42] = 1  # 4 px, below min_area_px
    settings = MeasureSettings(min_area_px=10, min_count=1)
    table, dist = measure_mask_frame(mask, None, settings=settings, pixel_size_um=0.5)
    reasons = [EXCLUDED_REASONS[c] for c in table["excluded_code"]]
    assert sorted(reasons) == ["", "edge", "too_small"]
    assert dist["count_detected"][1] == 3 == len(table)
    excluded = sum(dist[f"count_excluded_{r}"][1] for r in EXCLUDED_REASONS[1:])
    assert dist["count_kept"][1] + excluded == dist["count_detected"][1]
    assert dist["count_excluded_too_small"][1] == 1 and dist["count_excluded_edge"][1] == 1
    lower, upper = dist["count_kept_lower"][1], dist["count_kept_upper"][1]
    assert (lower, upper) == pytest.approx(poisson_interval(1))
    # 1 crystal in 32 x 32 µm: per mm², with the count's bounds scaled alike.
    per_mm2 = 1 / (0.032**2)
    assert dist["number_density"][1] == pytest.approx(per_mm2)
    assert dist["number_density_upper"][1] == pytest.approx(upper * per_mm2)


def test_window_text() -> None:
    assert parse_window("60s") == (60.0, "s")
    assert parse_window("2min") == (120.0, "s")
    assert parse_window("5") == (5.0, "frames")
    assert MeasureSettings(window="1h").window == "3600s"
    with pytest.raises(ConfigError, match="not a time or a frame count"):
        parse_window("five")
    with pytest.raises(ConfigError, match="holds no frame"):
        parse_window("0")
