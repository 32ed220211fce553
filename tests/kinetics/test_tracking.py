"""Tracking, growth and nucleation on particle tables with known identities and rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crystalseg.errors import ConfigError
from crystalseg.kinetics.accuracy import simulate_particle_table, tracking_scores
from crystalseg.kinetics.book import BookResults, TrackBook
from crystalseg.kinetics.growth import GrowthSettings, ThinnedSeries, population_growth
from crystalseg.kinetics.nucleation import NucleationSettings, onset, poisson_interval
from crystalseg.kinetics.tracking import DriftEstimator, TrackSettings, frames_of, link_stream

SHAPE = (400, 400)
FRAMES = 60


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return simulate_particle_table(
        n_frames=FRAMES,
        crystals_per_frame=60,
        frame_shape=SHAPE,
        interval_s=10.0,
        growth_um_min=3.0,
        onset_frame=25,
        births_per_frame=1.5,
        drift_px=2.0,
        seed=4,
    )


def run_book(table: pd.DataFrame, **settings) -> tuple[BookResults, pd.DataFrame]:
    """Link a table streamed in blocks (frames straddle them) and keep the points."""
    blocks = [table.iloc[i : i + 500] for i in range(0, len(table), 500)]
    points: list[dict[str, np.ndarray]] = []
    book = TrackBook(
        tracking=TrackSettings(),
        growth=GrowthSettings(),
        nucleation=NucleationSettings(**settings),
        time_s=np.arange(FRAMES) * 10.0,
        frame_shape=SHAPE,
        pixel_size_um=1.0,
        on_points=points.append,
    )
    for frame in link_stream(frames_of(blocks), settings=TrackSettings(), pixel_size_um=1.0):
        book.add(frame)
    joined = pd.DataFrame({k: np.concatenate([p[k] for p in points]) for k in points[0]})
    return book.finish(), joined


@pytest.fixture(scope="module")
def linked(table: pd.DataFrame) -> tuple[BookResults, pd.DataFrame]:
    return run_book(table, depth_of_field_um=50.0)


def test_frames_of_regroups_blocks_by_frame(table: pd.DataFrame) -> None:
    blocks = [table.iloc[i : i + 37] for i in range(0, len(table), 37)]
    frames = list(frames_of(blocks))
    assert [int(f["frame"].iloc[0]) for f in frames] == sorted(table["frame"].unique())
    assert sum(len(f) for f in frames) == len(table)
    assert all(f["frame"].nunique() == 1 for f in frames)


def test_linking_recovers_every_identity_under_drift(table: pd.DataFrame, linked) -> None:
    _, points = linked
    assert len(points) == len(table)
    np.testing.assert_array_equal(points["label"], table["label"])  # the table's row order
    scores = tracking_scores(
        points["frame"].to_numpy(),
        points["track_id"].to_numpy(),
        table["true_id"].to_numpy(),
        n_truth_detections=len(table),
        n_truth_tracks=table["true_id"].nunique(),
    )
    assert scores["id_switches"] == 0
    assert scores["mota"] == 1.0
    assert scores["idf1"] == 1.0
    # the drift (2 px/frame RMS velocity) is estimated: last frame's total is linear in t
    last = points.iloc[-1]
    assert abs(last["drift_x_px"]) + abs(last["drift_y_px"]) > 5


def test_streamed_linking_equals_linking_the_whole_table(table: pd.DataFrame, linked) -> None:
    """trackpy's in-memory ``link`` of the whole table, on the same coordinates, makes
    the same tracks as the frame-by-frame stream."""
    import trackpy

    _, points = linked
    settings = TrackSettings()
    coords = pd.DataFrame(
        {
            "frame": points["frame"],
            "x": points["x_px"].astype(np.float64) - points["drift_x_px"],
            "y": points["y_px"].astype(np.float64) - points["drift_y_px"],
            "s": settings.size_weight_px * np.log(np.maximum(table["ecd"].to_numpy(), 1.0)),
        }
    )
    trackpy.quiet()
    whole = trackpy.link(
        coords,
        search_range=settings.search_range_px,
        memory=settings.memory,
        pos_columns=["x", "y", "s"],
    )
    pairs = pd.DataFrame({"a": whole["particle"].to_numpy(), "b": points["track_id"]})
    pairs = pairs.drop_duplicates()
    assert pairs["a"].is_unique and pairs["b"].is_unique  # one-to-one: the same partition
    # ids are numbered in the order the tracks first appear
    first = points.drop_duplicates("track_id")["track_id"].to_numpy()
    np.testing.assert_array_equal(first, np.arange(len(first)))


def test_thinned_series_keeps_evenly_spaced_points() -> None:
    series = ThinnedSeries(cap=10)
    for k in range(37):
        series.add(k, 60.0 * k, 2.0 * k, 1.0 * k, 1.5 * k)
    kept = series.columns()
    # stride 4 (the smallest power of two leaving <= 10 of 37): indices 0, 4, ..., 36
    np.testing.assert_array_equal(kept[:, 0] / 60.0, np.arange(0, 37, 4))
    assert series.seen == 37 and (series.first_frame, series.last_frame) == (0, 36)
    assert series.sum_length / series.seen == pytest.approx(36.0)


def test_scores_count_a_swap_as_two_switches() -> None:
    frame = np.array([0, 0, 1, 1, 2, 2])
    true_id = np.array([1, 2, 1, 2, 1, 2])
    track = np.array([10, 20, 20, 10, 20, 10])  # the tracks swap after frame 0
    scores = tracking_scores(frame, track, true_id, n_truth_detections=6, n_truth_tracks=2)
    assert scores["id_switches"] == 2
    assert scores["mota"] == pytest.approx(1 - 2 / 6)
    assert scores["idf1"] == pytest.approx(2 * 4 / 12)


def test_drift_estimate_follows_a_rigid_shift() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (80, 2))
    drift = DriftEstimator(search_range_px=10)
    drift.update(xy)
    for step in range(1, 6):
        total = drift.update(xy + step * np.array([3.0, -2.0]))
    np.testing.assert_allclose(total, [15.0, -10.0], atol=1e-9)


def test_births_fates_and_growth_are_recovered(table: pd.DataFrame, linked) -> None:
    settings = TrackSettings()
    results, points = linked
    tracks = results.tracks
    first = table.loc[table.groupby("true_id")["frame"].idxmin()]
    m = settings.edge_margin_px
    inside = (
        (first["bbox_min_y"] > m)
        & (first["bbox_min_x"] > m)
        & (first["bbox_max_y"] < SHAPE[0] - m)
        & (first["bbox_max_x"] < SHAPE[1] - m)
    )
    nuclei = int(((first["frame"] > 0) & (first["ecd"] < 4) & inside).sum())
    assert nuclei > 30
    assert (tracks["origin"] == "appeared").sum() == nuclei
    assert set(tracks["fate"]) <= {"to_end", "left_field"}
    assert not points["segmentation_suspect"].any()
    per_track = results.track_growth
    np.testing.assert_allclose(per_track["length_rate"], 3.0, rtol=1e-6)
    population = results.summary
    assert population["length_rate_low"] <= 3.0 <= population["length_rate_high"] + 1e-9
    assert not population["size_dependent"]
    assert not population["dissolving"]
    assert results.growth_by_size["n_tracks"].sum() == len(per_track)
    np.testing.assert_allclose(results.growth_over_time["length_rate"], 3.0, rtol=1e-6)


def test_nucleation_onset_and_rate(table: pd.DataFrame, linked) -> None:
    results, _ = linked
    summary, windows = results.summary, results.births_over_time
    assert abs(summary["onset_s"] - 250.0) <= 10.0
    assert summary["onset_low_s"] <= summary["onset_s"] <= summary["onset_high_s"]
    # 1.5 births per frame of 10 s over the field, less the nuclei at the edge margin
    true_rate = 1.5 / (0.4 * 0.4) / (10 / 60)  # 1 um px: the frame is 0.4 x 0.4 mm
    assert summary["rate_per_mm2_min_low"] <= true_rate <= summary["rate_per_mm2_min_high"]
    assert summary["rate_per_mm3_min"] == pytest.approx(summary["rate_per_mm2_min"] / 0.05)
    assert windows["births"].sum() == summary["births"]
    # nuclei are placed at random: no excess near existing crystals
    assert summary["secondary_ratio_low"] <= 1.0 <= summary["secondary_ratio_high"]


def test_onset_of_a_step_in_a_poisson_rate() -> None:
    rng = np.random.default_rng(1)
    births = np.concatenate([rng.poisson(0.2, 40), rng.poisson(3.0, 60)])
    found = onset(births)
    assert abs(found["frame"] - 40) <= 1
    assert found["frame_low"] <= 40 <= found["frame_high"]
    assert found["rate_after"] == pytest.approx(3.0, rel=0.2)
    assert onset(np.zeros(10))["frame"] == -1


def test_poisson_interval_is_garwood() -> None:
    rate, low, high = poisson_interval(10, 2.0)
    assert rate == 5.0
    assert low == pytest.approx(4.795 / 2, rel=1e-3)
    assert high == pytest.approx(18.390 / 2, rel=1e-3)
    assert poisson_interval(0, 1.0)[1] == 0.0


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="memory must be a whole number"):
        TrackSettings(memory=-1)
    with pytest.raises(ConfigError, match="search_range_px must be a positive number"):
        TrackSettings(search_range_px=0)
    with pytest.raises(ConfigError, match="size_classes must increase"):
        GrowthSettings(size_classes=(10.0, 5.0))
    with pytest.raises(ConfigError, match="depth of field must be a positive number"):
        NucleationSettings(depth_of_field_um=-5)
    empty = pd.DataFrame(
        columns=["length_rate", "width_rate", "ecd_rate", "mean_length", "length_rate_high"]
    )
    assert math.isnan(population_growth(empty, settings=GrowthSettings())["length_rate"])


def _disc_rows(frame: int, discs: list[tuple[float, float, float]]) -> pd.DataFrame:
    """Particle rows of discs (x, y, radius) in one frame."""
    x, y, r = (np.array(v, dtype=np.float64) for v in zip(*discs, strict=True))
    return pd.DataFrame(
        {
            "frame": frame,
            "time_s": frame * 10.0,
            "label": np.arange(1, len(x) + 1),
            "centroid_x": x,
            "centroid_y": y,
            "bbox_min_y": y - r,
            "bbox_min_x": x - r,
            "bbox_max_y": y + r,
            "bbox_max_x": x + r,
            "area": np.pi * r**2,
            "ecd": 2 * r,
            "feret_diameter_max": 2 * r,
            "feret_diameter_min": 2 * r,
            "solidity": 1.0,
            "touches_edge": False,
            "kept": True,
        }
    )


def _book_of(frames: list[pd.DataFrame], n: int) -> BookResults:
    settings = TrackSettings(drift=False)
    book = TrackBook(
        tracking=settings,
        growth=GrowthSettings(),
        nucleation=NucleationSettings(min_track_frames=1),
        time_s=np.arange(n) * 10.0,
        frame_shape=(200, 200),
        pixel_size_um=1.0,
    )
    for frame in link_stream(frames, settings=settings, pixel_size_um=1.0):
        book.add(frame)
    return book.finish()


FAR = [(50.0, 50.0, 4.0), (150.0, 150.0, 5.0)]  # two bystanders


def test_crystals_that_touch_and_part_are_not_births() -> None:
    """Two crystals measured as one particle while they touch (frames 4-7), which the
    linker continues as one of them, then apart again: a merge and a split, no birth."""
    pair = [(95.0, 100.0, 6.0), (107.0, 100.0, 6.0)]
    joint = [(101.0, 100.0, 12.0)]
    frames = [_disc_rows(t, FAR + (joint if 4 <= t <= 7 else pair)) for t in range(12)]
    tracks = _book_of(frames, 12).tracks.set_index("track_id")
    assert len(tracks) == 5 and not (tracks["origin"] == "appeared").any()
    merged = tracks[tracks["fate"] == "merged"]
    assert list(merged["last_frame"]) == [3]
    joint_track = int(merged["merged_into"].iloc[0])
    assert tracks.loc[joint_track, "max_length"] == 24.0  # it went on as the joint particle
    parted = tracks[tracks["origin"] == "split"]
    assert list(parted["first_frame"]) == [8]
    assert list(parted["parent"]) == [joint_track]


def test_a_joint_particle_the_linker_cannot_follow_is_joined() -> None:
    """Crystals too far apart for the linker to continue either as the joint particle:
    the joint particle's track is 'joined' (not a birth), theirs end 'merged' into it,
    and the joint track ends 'split' when they part."""
    pair = [(90.0, 100.0, 6.0), (112.0, 100.0, 6.0)]
    joint = [(101.0, 100.0, 17.0)]
    frames = [_disc_rows(t, FAR + (joint if 4 <= t <= 7 else pair)) for t in range(12)]
    results = _book_of(frames, 12)
    tracks = results.tracks
    joined = tracks[tracks["origin"] == "joined"]
    assert list(joined["first_frame"]) == [4] and list(joined["last_frame"]) == [7]
    assert list(joined["fate"]) == ["split"]
    ended = tracks[tracks["last_frame"] == 3]
    assert list(ended["fate"]) == ["merged", "merged"]
    assert (ended["merged_into"] == joined["track_id"].iloc[0]).all()
    assert set(tracks.loc[tracks["first_frame"] == 8, "origin"]) == {"split"}
    assert results.summary["births"] == 0


def test_slope_equals_scipys_theil_sen() -> None:
    from scipy import stats

    from crystalseg.kinetics.growth import theil_sen

    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 40, 200):
        t = np.sort(rng.choice(np.arange(300.0), n, replace=False)) / 6
        t[n // 2 :] = np.maximum(t[n // 2 :], t[n // 2])  # ties in time too
        y = np.round(3 * t + rng.normal(0, 2, n), 1)  # and in size
        if np.ptp(t) == 0:
            continue
        fit = stats.theilslopes(y, t, alpha=0.95)
        np.testing.assert_allclose(theil_sen(t, y), (fit.slope, fit.low_slope, fit.high_slope))


def test_a_crystal_missed_for_longer_than_memory_is_refound_not_born() -> None:
    """A small crystal seen in frames 0-3 and 8-11 (missed 4 frames, memory 2): found
    again where it was lost, not a birth, unless refind_frames is 0."""
    small = [(100.0, 100.0, 2.0)]
    frames = [_disc_rows(t, FAR + ([] if 4 <= t <= 7 else small)) for t in range(12)]
    tracks = _book_of(frames, 12).tracks
    again = tracks[tracks["first_frame"] == 8].iloc[0]
    assert again["origin"] == "refound"
    assert again["parent"] == tracks.loc[tracks["last_frame"] == 3, "track_id"].iloc[0]
    settings = TrackSettings(drift=False, refind_frames=0)
    book = TrackBook(
        tracking=settings,
        growth=GrowthSettings(),
        nucleation=NucleationSettings(min_track_frames=1),
        time_s=np.arange(12) * 10.0,
        frame_shape=(200, 200),
        pixel_size_um=1.0,
    )
    for frame in link_stream(frames, settings=settings, pixel_size_um=1.0):
        book.add(frame)
    results = book.finish()
    assert results.summary["births"] == 1
    with pytest.raises(ConfigError, match="refind_frames must be a whole number"):
        TrackSettings(refind_frames=-1)
