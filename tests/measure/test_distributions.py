"""Size distributions: known samples, weighted quantiles, moment means, frame summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crystalseg.dims import SIZE_BIN
from crystalseg.errors import ConfigError
from crystalseg.measure.distributions import (
    LENGTH_BIN,
    WIDTH_BIN,
    frame_distributions,
    log_bins,
    moment_mean,
    size_distribution,
    weighted_quantile,
)
from crystalseg.measure.features import measure_frame

BINS = log_bins(0.1, 10_000.0, 100)


def test_log_bins() -> None:
    edges = log_bins(1.0, 1000.0, 3)
    np.testing.assert_allclose(edges, [1.0, 10.0, 100.0, 1000.0])
    assert edges[0] == 1.0 and edges[-1] == 1000.0
    with pytest.raises(ConfigError):
        log_bins(0.0, 10.0, 5)
    with pytest.raises(ConfigError):
        log_bins(10.0, 1.0, 5)
    with pytest.raises(ConfigError):
        log_bins(1.0, 10.0, 0)


def test_lognormal_sample_medians() -> None:
    rng = np.random.default_rng(0)
    median, sigma = 20.0, 0.5
    sizes = rng.lognormal(math.log(median), sigma, 50_000)
    d = size_distribution(sizes, bins=BINS)
    assert d["count"] == 50_000
    assert d["d50_number"] == pytest.approx(median, rel=0.01)
    # Hatch–Choate: the volume-basis median of a lognormal is exp(μ + 3σ²).
    assert d["d50_volume"] == pytest.approx(median * math.exp(3 * sigma**2), rel=0.03)
    assert d["d10_number"] == pytest.approx(median * math.exp(-1.2815516 * sigma), rel=0.02)
    assert d["d90_number"] == pytest.approx(median * math.exp(1.2815516 * sigma), rel=0.02)
    # D[4,3] = exp(μ + 3.5σ²), D[3,2] = exp(μ + 2.5σ²), D[1,0] = exp(μ + 0.5σ²).
    assert d["d_4_3"] == pytest.approx(median * math.exp(3.5 * sigma**2), rel=0.03)
    assert d["d_3_2"] == pytest.approx(median * math.exp(2.5 * sigma**2), rel=0.02)
    assert d["d_1_0"] == pytest.approx(median * math.exp(0.5 * sigma**2), rel=0.01)
    # The number density per log10 size of a lognormal peaks at 1 / (σ₁₀ √(2π)).
    sigma10 = sigma / math.log(10)
    assert d["q0"].max() == pytest.approx(1 / (sigma10 * math.sqrt(2 * math.pi)), rel=0.05)


def test_monodisperse() -> None:
    d = size_distribution(np.full(17, 42.0), bins=BINS)
    for basis in ("number", "volume"):
        for q in ("d10", "d50", "d90"):
            assert d[f"{q}_{basis}"] == 42.0
    assert d["d_1_0"] == pytest.approx(42.0)
    assert d["d_3_2"] == pytest.approx(42.0)
    assert d["d_4_3"] == pytest.approx(42.0)
    assert d["span_volume"] == 0.0
    assert np.count_nonzero(d["q0"]) == 1


def test_single_particle() -> None:
    d = size_distribution([5.0], bins=BINS)
    assert d["count"] == 1
    assert d["d50_number"] == d["d90_volume"] == 5.0
    assert d["d_4_3"] == pytest.approx(5.0)


def test_empty_set() -> None:
    d = size_distribution(np.array([]), bins=BINS)
    assert d["count"] == 0
    assert d["number"] == 0.0
    np.testing.assert_array_equal(d["q0"], 0.0)
    np.testing.assert_array_equal(d["q3"], 0.0)
    assert d["q0"].shape == (len(BINS) - 1,)
    for key in ("d10_number", "d50_volume", "d_1_0", "d_4_3", "span_volume"):
        assert math.isnan(d[key])


def test_moment_means_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0])
    assert moment_mean(x, 1, 0) == pytest.approx(2.0)
    assert moment_mean(x, 4, 3) == pytest.approx((1 + 16 + 81) / (1 + 8 + 27))
    assert moment_mean(x, 3, 2) == pytest.approx((1 + 8 + 27) / (1 + 4 + 9))
    # Weights count particles: weight 2 on size 3 is the same as listing it twice.
    assert moment_mean(x, 4, 3, weights=[1, 1, 2]) == pytest.approx(
        moment_mean([1.0, 2.0, 3.0, 3.0], 4, 3)
    )
    d = size_distribution(x, bins=BINS)
    assert d["d_4_3"] == pytest.approx(98 / 36)
    with pytest.raises(ConfigError):
        moment_mean(x, 2, 3)


def test_quantiles_by_hand() -> None:
    # Cumulative shares 1/4, 3/4, 1 at sizes 1, 2, 4: the median interpolates
    # halfway from (1, 0.25) to (2, 0.75), D90 from (2, 0.75) to (4, 1).
    q = weighted_quantile([1.0, 2.0, 4.0], [0.1, 0.5, 0.9], weights=[1, 2, 1])
    np.testing.assert_allclose(q, [1.0, 1.5, 2.0 + 2.0 * 0.15 / 0.25])


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(1, 30), min_size=1, max_size=25),
    data=st.data(),
)
def test_weighted_quantiles_match_brute_force_expansion(values: list[int], data) -> None:
    weights = data.draw(st.lists(st.integers(0, 6), min_size=len(values), max_size=len(values)))
    q = np.linspace(0.0, 1.0, 41)
    x = np.asarray(values, dtype=float) * 0.7
    w = np.asarray(weights)
    expanded = np.repeat(x, w)
    got = weighted_quantile(x, q, weights=w)
    if expanded.size == 0:
        assert np.isnan(got).all()
        return
    np.testing.assert_allclose(got, weighted_quantile(expanded, q), rtol=1e-12)
    # Independent brute force on the expansion: invert the piecewise-linear
    # cumulative distribution through (distinct size, share ≤ that size).
    distinct = np.unique(expanded)
    share = np.array([(expanded <= v).mean() for v in distinct])
    for qi, gi in zip(q, got, strict=True):
        k = int(np.searchsorted(share, qi))  # first share ≥ qi
        if k == 0:
            want = distinct[0]
        else:
            t = (qi - share[k - 1]) / (share[k] - share[k - 1])
            want = distinct[k - 1] + t * (distinct[k] - distinct[k - 1])
        assert gi == pytest.approx(want, rel=1e-12, abs=1e-12)
    # Scaling all weights changes nothing.
    np.testing.assert_allclose(weighted_quantile(x, q, weights=w * 3.7), got, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 500.0), min_size=1, max_size=40, unique=True))
def test_equal_weights_match_numpy_for_distinct_sizes(values: list[float]) -> None:
    q = np.linspace(0.0, 1.0, 21)
    np.testing.assert_allclose(
        weighted_quantile(values, q),
        np.quantile(values, q, method="interpolated_inverted_cdf"),
        rtol=1e-12,
    )


def test_volume_basis_shifts_d50_up() -> None:
    rng = np.random.default_rng(1)
    sizes = rng.uniform(1, 100, 500)
    d = size_distribution(sizes, bins=BINS)
    assert d["d50_volume"] > d["d50_number"]
    assert d["d10_volume"] > d["d10_number"]
    assert d["d_4_3"] > d["d_3_2"] > d["d_1_0"]
    assert d["span_volume"] == pytest.approx((d["d90_volume"] - d["d10_volume"]) / d["d50_volume"])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200))
def test_densities_integrate_to_one_over_log_size(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(math.log(30.0), 1.0, n)
    weights = rng.uniform(0.5, 3.0, n)
    d = size_distribution(sizes, weights=weights, bins=BINS)
    dlog = np.diff(np.log10(BINS))
    assert float(np.sum(d["q0"] * dlog)) == pytest.approx(1.0)
    assert float(np.sum(d["q3"] * dlog)) == pytest.approx(1.0)
    assert d["fraction_outside_number"] == pytest.approx(0.0, abs=1e-12)
    assert d["number"] == pytest.approx(weights.sum())


def test_sizes_outside_bins_reported() -> None:
    bins = log_bins(1.0, 100.0, 10)
    d = size_distribution([0.5, 5.0, 50.0, 500.0], bins=bins)
    dlog = np.diff(np.log10(bins))
    assert float(np.sum(d["q0"] * dlog)) == pytest.approx(0.5)
    assert d["fraction_outside_number"] == pytest.approx(0.5)
    assert d["d50_number"] == pytest.approx(5.0)  # quantiles use every particle


def test_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        size_distribution([1.0], bins=np.array([1.0]))
    with pytest.raises(ConfigError):
        size_distribution([1.0], bins=np.array([2.0, 1.0]))
    with pytest.raises(ConfigError):
        size_distribution([1.0, 2.0], weights=[1.0], bins=BINS)
    with pytest.raises(ConfigError):
        size_distribution([1.0], weights=[np.inf], bins=BINS)


# --------------------------------------------------------------------------- frames


def _frame() -> tuple[np.ndarray, pd.DataFrame]:
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[10:20, 10:20] = 1  # square 10 × 10
    labels[30:34, 10:40] = 2  # needle 4 × 30 (aspect ratio > 2)
    labels[0:6, 50:56] = 3  # touches the top edge
    labels[40:55, 60:66] = 4  # 15 × 6
    return labels, measure_frame(labels, pixel_size_um=0.5)


def test_frame_distributions_keep() -> None:
    labels, table = _frame()
    out = frame_distributions(table, bins=BINS, frame_area=labels.size * 0.25)
    assert out["q0"][0] == (SIZE_BIN,)
    assert out["q0"][1].shape == (len(BINS) - 1,)
    assert out["count"] == ((), 4)
    assert out["count_edge"] == ((), 1)
    assert out["d50_number"][1] == pytest.approx(weighted_quantile(table["ecd"], 0.5)[0])
    assert out["projected_area_fraction"][1] == pytest.approx((labels > 0).mean())
    assert out["aspect_ratio_mean"][1] == pytest.approx(table["aspect_ratio"].mean())
    dims, hist = out["length_width"]
    assert dims == (LENGTH_BIN, WIDTH_BIN)
    assert hist.shape == (len(BINS) - 1, len(BINS) - 1)
    elongated = table["aspect_ratio"] >= 2
    assert out["count_elongated"] == ((), int(elongated.sum()))
    assert hist.sum() == elongated.sum()
    needle = table.set_index("label").loc[2]
    i = np.searchsorted(BINS, needle["feret_diameter_max"]) - 1
    j = np.searchsorted(BINS, needle["feret_diameter_min"]) - 1
    assert hist[i, j] >= 1


def test_frame_distributions_edge_treatments() -> None:
    labels, table = _frame()
    excluded = frame_distributions(table, bins=BINS, edge="exclude")
    assert excluded["count"][1] == 3
    assert excluded["number"][1] == 3.0
    corrected = frame_distributions(
        table, bins=BINS, edge="miles-lantuejoul", frame_shape=labels.shape
    )
    inner = table[~table["touches_edge"]]
    h = inner["bbox_max_y"] - inner["bbox_min_y"]
    w = inner["bbox_max_x"] - inner["bbox_min_x"]
    expected = (60 * 80 / ((60 - h) * (80 - w))).sum()
    assert corrected["count"][1] == 3
    assert corrected["number"][1] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="frame_shape"):
        frame_distributions(table, bins=BINS, edge="miles-lantuejoul")
    with pytest.raises(ConfigError, match="edge treatment"):
        frame_distributions(table, bins=BINS, edge="drop")  # type: ignore[arg-type]


def test_frame_distributions_empty_and_weights() -> None:
    empty = measure_frame(np.zeros((10, 10), dtype=np.int32))
    out = frame_distributions(empty, bins=BINS, frame_area=100.0)
    assert out["count"][1] == 0
    assert math.isnan(out["d50_volume"][1])
    np.testing.assert_array_equal(out["q3"][1], 0.0)
    assert out["count_elongated"][1] == 0
    assert out["projected_area_fraction"][1] == 0.0
    assert math.isnan(out["aspect_ratio_mean"][1])

    _, table = _frame()
    table = table.assign(w=[1.0, 2.0, 1.0, 1.0])
    weighted = frame_distributions(table, bins=BINS, weight_column="w")
    doubled = frame_distributions(pd.concat([table, table.iloc[[1]]]), bins=BINS)
    for key in ("d50_number", "d50_volume", "d_4_3", "number"):
        assert weighted[key][1] == pytest.approx(doubled[key][1])
    np.testing.assert_allclose(weighted["q0"][1], doubled["q0"][1])
    with pytest.raises(ConfigError, match="lacks column"):
        frame_distributions(table, bins=BINS, size_column="nope")


def test_frame_distributions_become_a_dataset() -> None:
    xr = pytest.importorskip("xarray")
    _, table = _frame()
    ds = xr.Dataset(frame_distributions(table, bins=BINS))
    assert ds["q0"].dims == (SIZE_BIN,)
    assert ds["length_width"].dims == (LENGTH_BIN, WIDTH_BIN)
    assert ds["d50_volume"].ndim == 0


def test_relabelling_leaves_distributions_unchanged() -> None:
    labels, table = _frame()
    permuted = np.array([0, 40, 7, 13, 2])[labels]
    other = measure_frame(permuted, pixel_size_um=0.5)
    a = frame_distributions(table, bins=BINS)
    b = frame_distributions(other, bins=BINS)
    for key, (_, value) in a.items():
        np.testing.assert_allclose(b[key][1], value, rtol=1e-12, err_msg=key)
