"""Tracking, growth and nucleation on particle tables with known identities and rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crystalseg.errors import ConfigError
from crystalseg.kinetics.accuracy import simulate_particle_table, tracking_scores
from crystalseg.kinetics.growth import (
    GrowthSettings,
    growth_by_size,
    population_growth,
    track_growth,
    usable_rows,
)
from crystalseg.kinetics.nucleation import (
    NucleationSettings,
    nucleation_summary,
    onset,
    poisson_interval,
)
from crystalseg.kinetics.tracking import (
    DriftEstimator,
    TrackSettings,
    area_jumps,
    classify_tracks,
    frames_of,
    link_frames,
)

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


@pytest.fixture(scope="module")
def linked(table: pd.DataFrame):
    blocks = [table.iloc[i : i + 500] for i in range(0, len(table), 500)]  # frames straddle
    return link_frames(frames_of(blocks), settings=TrackSettings(), pixel_size_um=1.0)


def test_frames_of_regroups_blocks_by_frame(table: pd.DataFrame) -> None:
    blocks = [table.iloc[i : i + 37] for i in range(0, len(table), 37)]
    frames = list(frames_of(blocks))
    assert [int(f["frame"].iloc[0]) for f in frames] == sorted(table["frame"].unique())
    assert sum(len(f) for f in frames) == len(table)
    assert all(f["frame"].nunique() == 1 for f in frames)


def test_linking_recovers_every_identity_under_drift(table: pd.DataFrame, linked) -> None:
    assert len(linked) == len(table)
    scores = tracking_scores(
        linked.frame,
        linked.track_id,
        table["true_id"].to_numpy(),
        n_truth_detections=len(table),
        n_truth_tracks=table["true_id"].nunique(),
    )
    assert scores["id_switches"] == 0
    assert scores["mota"] == 1.0
    assert scores["idf1"] == 1.0
    # the drift (2 px/frame RMS velocity) is estimated: last frame's total is linear in t
    assert abs(linked.drift_x_px[-1]) + abs(linked.drift_y_px[-1]) > 5


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
    tracks = classify_tracks(linked, settings=settings, frame_shape=SHAPE, n_frames=FRAMES)
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
    suspects = area_jumps(linked, threshold=settings.area_jump)
    assert not suspects.any()
    growth = GrowthSettings()
    per_track = track_growth(linked, usable_rows(linked, suspects), settings=growth)
    np.testing.assert_allclose(per_track["length_rate"], 3.0, rtol=1e-6)
    population = population_growth(per_track, settings=growth)
    assert population["length_rate_low"] <= 3.0 <= population["length_rate_high"] + 1e-9
    assert not population["size_dependent"]
    assert not population["dissolving"]
    by_size = growth_by_size(per_track, settings=growth)
    assert by_size["n_tracks"].sum() == len(per_track)


def test_nucleation_onset_and_rate(table: pd.DataFrame, linked) -> None:
    settings = TrackSettings()
    tracks = classify_tracks(linked, settings=settings, frame_shape=SHAPE, n_frames=FRAMES)
    time_s = np.arange(FRAMES) * 10.0
    summary, windows = nucleation_summary(
        linked,
        tracks,
        settings=NucleationSettings(depth_of_field_um=50.0),
        time_s=time_s,
        frame_shape=SHAPE,
        margin_px=settings.edge_margin_px,
        pixel_size_um=1.0,
    )
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
