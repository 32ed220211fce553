"""Tests of the synthetic run generator: exact ground truth, determinism, store round trip."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.path import Path as MplPath
from PIL import Image
from skimage.measure import regionprops

from crystalseg.errors import ConfigError, CrystalsegError, StageStateError
from crystalseg.store import open_run, read_run_attrs, read_table
from crystalseg.synth import (
    SCENARIO_NAMES,
    Scenario,
    SynthConfig,
    SyntheticRun,
    get_scenario,
    synthesize_run,
)
from crystalseg.synth.population import feret_diameters, habit_outline, polygon_area
from crystalseg.synth.render import _add_blurred, _blur_reach, _box, _disc
from crystalseg.synth.scenarios import HABIT_ASPECT, HABITS

SMALL = {"frames": 6, "height": 96, "width": 128}


@pytest.fixture(scope="module")
def crowded() -> SyntheticRun:
    return SyntheticRun(SynthConfig(**SMALL, seed=5, scenario="crowded"))


# --------------------------------------------------------------------------- outlines


def test_feret_of_rectangle_and_hexagon_analytic():
    rect = np.array([[0, 0], [3, 0], [3, 1], [0, 1]], dtype=float)
    fmax, fmin = feret_diameters(rect)
    assert fmax == pytest.approx(math.sqrt(10))
    assert fmin == pytest.approx(1.0)
    ang = np.arange(6) * np.pi / 3
    hexagon = np.stack([np.cos(ang), np.sin(ang)], 1)  # side 1
    fmax, fmin = feret_diameters(hexagon)
    assert fmax == pytest.approx(2.0)
    assert fmin == pytest.approx(math.sqrt(3))
    assert polygon_area(hexagon) == pytest.approx(1.5 * math.sqrt(3))


@settings(max_examples=60, deadline=None)
@given(habit=st.sampled_from(HABITS), u=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_outline_is_normalised_convex_polygon(habit, u, seed):
    lo, hi = HABIT_ASPECT[habit]
    outline = habit_outline(habit, lo + u * (hi - lo), np.random.default_rng(seed))
    fmax, fmin = feret_diameters(outline)
    assert fmax == pytest.approx(1.0)
    assert polygon_area(outline) > 0  # counter-clockwise
    edges = np.roll(outline, -1, 0) - outline
    cross = edges[:, 0] * np.roll(edges[:, 1], -1) - edges[:, 1] * np.roll(edges[:, 0], -1)
    assert np.all(cross > 0)  # convex
    # aspect ratio (max / min Feret) stays in the habit's character
    aspect = fmax / fmin
    bounds = {"needle": (5.0, 25.0), "prism": (1.6, 6.0), "plate": (1.0, 2.2)}[habit]
    assert bounds[0] <= aspect <= bounds[1]


# --------------------------------------------------------------------------- ground truth


def _check_frame(run: SyntheticRun, t: int) -> pd.DataFrame:
    frame = run.render(t)
    labels, table = frame.labels, frame.crystals
    assert labels.dtype == np.int32 and frame.class_mask.dtype == np.uint8
    np.testing.assert_array_equal(frame.class_mask, (labels > 0).astype(np.uint8))
    # sum of label areas equals mask area, and each area is the label's pixel count
    assert table["area_px"].sum() == frame.class_mask.sum()
    counts = np.bincount(labels.ravel())
    np.testing.assert_array_equal(counts[table["id"]], table["area_px"])
    assert set(np.unique(labels[labels > 0])) == set(table["id"])
    assert table["id"].is_unique
    np.testing.assert_array_equal(table["ecd_px"], np.sqrt(4 * table["area_px"] / np.pi))
    assert (table["length_px"] >= table["width_px"]).all()
    assert (table["polygon_area_px"] > 0).all()
    assert table["occluded_fraction"].between(0, 1).all()
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    np.testing.assert_array_equal(table["touches_edge"], table["id"].isin(border))
    px = run.pixel_size_um
    np.testing.assert_allclose(table["ecd_um"], table["ecd_px"] * px)
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * px**2)
    assert (frame.crystals["frame"] == t).all() and (frame.crystals["time_s"] == 10.0 * t).all()
    return table


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_truth_is_self_consistent(scenario):
    run = SyntheticRun(SynthConfig(frames=4, height=96, width=128, seed=11, scenario=scenario))
    tables = [_check_frame(run, t) for t in range(4)]
    assert sum(len(t) for t in tables) > 0


def test_ids_are_stable_across_frames():
    run = SyntheticRun(SynthConfig(**SMALL, seed=2, scenario="clear"))
    population = run.population_table().set_index("id")
    rows = pd.concat([run.render(t).crystals for t in range(SMALL["frames"])])
    assert len(rows) > 0
    # one id, one crystal: the habit never changes and matches the population
    assert (rows.groupby("id")["habit"].nunique() == 1).all()
    np.testing.assert_array_equal(rows["habit"], population.loc[rows["id"], "habit"])
    # and the label with that id sits where the table says the crystal is
    for t in range(SMALL["frames"]):
        frame = run.render(t)
        table = frame.crystals.set_index("id")
        for region in regionprops(frame.labels):
            row = table.loc[region.label]
            if row.occluded_fraction == 0 and not row.touches_edge and row.area_px > 30:
                cy, cx = region.centroid
                assert abs(cx - row.centroid_x_px) < 1.0
                assert abs(cy - row.centroid_y_px) < 1.0


def test_length_grows_at_the_configured_rate():
    config = SynthConfig(frames=8, height=256, width=256, seed=1, scenario="clear", interval_s=30.0)
    run = SyntheticRun(config)
    rate = run.population_table().set_index("id")["growth_px_s"]
    rows = pd.concat([run.render(t).crystals for t in range(config.frames)])
    checked = 0
    for crystal_id, track in rows.groupby("id"):
        if len(track) < 2:
            continue
        # the analytic length grows exactly at the crystal's rate
        growth = np.diff(track["length_px"].to_numpy())
        dt = np.diff(track["time_s"].to_numpy())
        np.testing.assert_allclose(growth, rate[crystal_id] * dt, rtol=1e-9)
        checked += 1
    assert checked >= 3
    # and the labelled pixels follow it within pixel tolerance
    measured = 0
    for t in range(config.frames):
        frame = run.render(t)
        table = frame.crystals.set_index("id")
        for region in regionprops(frame.labels):
            row = table.loc[region.label]
            if row.occluded_fraction == 0 and not row.touches_edge and row.width_px > 4:
                assert abs(region.feret_diameter_max - row.length_px) < 2.5
                measured += 1
    assert measured >= 3


def test_front_crystal_owns_overlaps(crowded):
    pop = crowded.population
    t = 3
    frame = crowded.render(t)
    length = pop.length_px(t)
    centre, angle = pop.pose(t)
    ys, xs = np.mgrid[0 : SMALL["height"], 0 : SMALL["width"]]
    points = np.column_stack([xs.ravel(), ys.ravel()]).astype(float)
    best_z = np.full(points.shape[0], -1)
    expected = np.zeros(points.shape[0], dtype=np.int32)
    for i in np.flatnonzero(~np.isnan(length)):
        verts = pop.vertices(i, centre[i], angle[i], length[i])
        inside = MplPath(verts).contains_points(points)
        front = inside & (pop.z_order[i] > best_z)
        best_z[front] = pop.z_order[i]
        expected[front] = i + 1
    agree = expected.reshape(frame.labels.shape) == frame.labels
    assert agree.mean() > 0.998  # rasterisation ties on polygon edges only
    overlapped = (frame.crystals["occluded_fraction"] > 0).sum()
    assert overlapped >= 2


def test_bubbles_are_background_and_listed():
    run = SyntheticRun(SynthConfig(frames=3, height=128, width=128, seed=1, scenario="bubbles"))
    frame = run.render(1)
    bubbles = frame.distractors
    assert len(bubbles) > 0
    assert (bubbles["kind"] == "bubble").all()
    assert bubbles["id"].is_unique
    np.testing.assert_allclose(bubbles["radius_um"], bubbles["radius_px"] * run.pixel_size_um)
    # a bubble centre far from every crystal is class background
    for row in bubbles.itertuples():
        x, y = round(row.x_px), round(row.y_px)
        if 0 <= x < 128 and 0 <= y < 128:
            if frame.labels[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3].max() == 0:
                assert frame.class_mask[y, x] == 0


def test_scenarios_have_their_character():
    def habits(name):
        run = SyntheticRun(SynthConfig(frames=3, height=256, width=256, seed=3, scenario=name))
        return run.population_table()["habit"].value_counts(normalize=True), run

    needles, _ = habits("needles")
    plates, _ = habits("plates")
    assert needles.get("needle", 0) > 0.6
    assert plates.get("plate", 0) > 0.6
    clear = SyntheticRun(SynthConfig(frames=3, height=256, width=256, seed=3, scenario="clear"))
    crowd = SyntheticRun(SynthConfig(frames=3, height=256, width=256, seed=3, scenario="crowded"))
    assert len(clear.population.bubble_radius) == 0
    assert (clear.population_table()["agglomerate"] == 0).all()
    assert (crowd.population_table()["agglomerate"] > 0).any()
    assert len(crowd.render(2).crystals) > 2 * len(clear.render(2).crystals)


def test_depth_spread_sets_how_defocused_crystals_are():
    import dataclasses

    def run(spread):
        scenario = dataclasses.replace(get_scenario("clear"), depth_spread=spread)
        return SyntheticRun(SynthConfig(frames=2, height=256, width=256, seed=4, scenario=scenario))

    assert get_scenario("clear").depth_spread == 0.4  # what every named scenario draws
    flat, default, deep = run(0.0), run(0.4), run(1.5)
    # no agglomerates in clear scenes: every crystal sits in the focal plane, blurred alike
    np.testing.assert_array_equal(flat.population.depth, 0.0)
    np.testing.assert_allclose(flat.optics.blur, flat.appearance.focus_blur_px)
    # half-normal mean of |depth| is 0.8 sigma (less where clipped to 1)
    assert 0.2 < np.abs(default.population.depth).mean() < 0.45
    assert np.abs(deep.population.depth).mean() > 0.6
    assert np.abs(deep.population.depth).max() <= 1.0
    assert deep.optics.blur.mean() > default.optics.blur.mean()
    with pytest.raises(ConfigError, match="depth_spread"):
        Scenario("bad", depth_spread=-0.1)


def test_contrast_and_visibility_floor_set_how_faint_crystals_are():
    import dataclasses

    def run(**kw):
        scenario = dataclasses.replace(get_scenario("clear"), **kw)
        return SyntheticRun(SynthConfig(frames=2, height=256, width=256, seed=4, scenario=scenario))

    default = run()
    assert get_scenario("clear").contrast == (0.45, 1.6)  # what every named scenario draws
    assert 0.45 <= default.appearance.contrast <= 1.6
    assert run(contrast=(0.2, 0.2)).appearance.contrast == pytest.approx(0.2)
    for floor in (0.12, 0.03):
        r = run(contrast=(0.2, 0.2), min_visible_od=floor)
        o = r.optics
        rim_peak = o.rim_od * o.rim_width / np.sqrt(o.rim_width**2 + o.blur**2)
        visible = np.maximum(rim_peak, np.abs(o.body_od)) * r.appearance.contrast
        assert visible.min() >= floor - 1e-9  # no labelled crystal fainter than the floor
    # a lower floor leaves some crystals fainter than the scenarios' floor of 0.12
    o = run(contrast=(0.2, 0.2), min_visible_od=0.0).optics
    assert (o.rim_od < run(contrast=(0.2, 0.2)).optics.rim_od).any()
    with pytest.raises(ConfigError, match="contrast"):
        Scenario("bad", contrast=(0.0, 1.0))
    with pytest.raises(ConfigError, match="min_visible_od"):
        Scenario("bad", min_visible_od=-0.1)


def test_rim_outside_sets_how_far_the_dark_rim_reaches_past_the_outline():
    import dataclasses

    from scipy import ndimage as ndi

    def frame(rim_outside):
        scenario = dataclasses.replace(get_scenario("clear"), rim_outside=rim_outside)
        run = SyntheticRun(SynthConfig(frames=2, height=256, width=256, seed=4, scenario=scenario))
        return run, run.render(1)

    assert get_scenario("clear").rim_outside == (1.0, 1.0)  # what every scenario draws
    straddle, a = frame((1.0, 1.0))
    inside, b = frame((0.0, 0.0))
    assert straddle.appearance.polarity == "dark"  # crystals darken the light
    np.testing.assert_array_equal(a.labels, b.labels)  # the truth is the same
    np.testing.assert_array_equal(straddle.optics.rim_outside, 1.0)
    np.testing.assert_array_equal(inside.optics.rim_od, straddle.optics.rim_od)  # same draws
    # just outside the crystals the light is darkened far less when the rim stops at
    # the outline; far from them the frames are the same
    distance = ndi.distance_transform_edt(a.labels == 0)
    ground = np.median(a.image[distance > 15])
    ring = (distance >= 1) & (distance <= 2)
    dark_a = ground - a.image[ring].astype(float).mean()
    dark_b = ground - b.image[ring].astype(float).mean()
    assert dark_b < 0.75 * dark_a
    far = distance > 20
    assert np.abs(a.image[far].astype(int) - b.image[far].astype(int)).max() <= 2
    drawn = frame((0.0, 1.0))[0].optics.rim_outside
    assert drawn.min() >= 0 and drawn.max() <= 1 and drawn.std() > 0.1  # per crystal
    with pytest.raises(ConfigError, match="rim_outside"):
        Scenario("bad", rim_outside=(0.5, 1.5))


def test_objects_cut_by_the_frame_border_are_blurred_as_if_they_continued():
    """A blurred disc cut by the frame border: inside the frame it is exactly the crop
    of the same disc drawn whole on a larger canvas (no fading towards the border)."""
    sigma, r, pad = 2.0, 6.0, 20
    frame = np.zeros((40, 40), np.float32)
    box = _box(np.array([[1.5, 20.0]]), r + 4, 40, 40, _blur_reach(sigma))
    assert box is not None and box[2] < 0  # it reaches beyond the left border
    _add_blurred(frame, box, _disc(1.5, 20.0, r, box), sigma)
    canvas = np.zeros((40 + 2 * pad, 40 + 2 * pad), np.float32)
    whole = _box(np.array([[1.5 + pad, 20.0 + pad]]), r + 4, *canvas.shape)
    assert whole is not None
    _add_blurred(canvas, whole, _disc(1.5 + pad, 20.0 + pad, r, whole), sigma)
    np.testing.assert_allclose(frame, canvas[pad:-pad, pad:-pad], atol=1e-6)
    # the old behaviour (nothing beyond the border) fades the border column by a third
    assert frame[20, 0] > 0.6 and frame[20, 0] == pytest.approx(frame[20, 3], rel=0.05)
    # a box wholly outside the frame and its reach is no box
    assert _box(np.array([[-30.0, 20.0]]), r + 4, 40, 40, _blur_reach(sigma)) is None


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_pixels_and_random_access():
    config = SynthConfig(frames=5, height=80, width=96, seed=7)
    a, b = SyntheticRun(config), SyntheticRun(config)
    sequential = [a.render(t) for t in range(5)]
    backwards = [b.render(t) for t in reversed(range(5))][::-1]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(SyntheticRun(config).render, range(5)))
    for s, r, p in zip(sequential, backwards, parallel, strict=True):
        for other in (r, p):
            np.testing.assert_array_equal(s.image, other.image)
            np.testing.assert_array_equal(s.labels, other.labels)
            pd.testing.assert_frame_equal(s.crystals, other.crystals)
            pd.testing.assert_frame_equal(s.distractors, other.distractors)
    other_seed = SyntheticRun(SynthConfig(frames=5, height=80, width=96, seed=8)).render(0)
    assert not np.array_equal(other_seed.image, sequential[0].image)
    # noise differs between frames even where nothing moves
    assert not np.array_equal(sequential[0].image, sequential[1].image)


def test_render_truth_equals_render(crowded):
    for t in (0, 5):
        full, truth = crowded.render(t), crowded.render_truth(t)
        np.testing.assert_array_equal(full.labels, truth.labels)
        pd.testing.assert_frame_equal(full.crystals, truth.crystals)
        pd.testing.assert_frame_equal(full.distractors, truth.distractors)


def test_frame_index_is_checked(crowded):
    with pytest.raises(ConfigError, match="outside"):
        crowded.render(SMALL["frames"])
    with pytest.raises(ConfigError):
        crowded.render(-1)


def test_uint16_and_uncalibrated():
    common = {"frames": 2, "height": 64, "width": 64, "seed": 1}
    run = SyntheticRun(SynthConfig(**common, dtype="uint16", calibrated=False))
    run8 = SyntheticRun(SynthConfig(**common))
    assert run.appearance.jpeg_quality == 0  # precondition: the same pixels before quantisation
    top = 2**run.appearance.bit_depth - 1
    frame, frame8 = run.render(1), run8.render(1)
    assert frame.image.dtype == np.uint16 and 0 < frame.image.max() <= top
    np.testing.assert_allclose(frame.image / top, frame8.image / 255, atol=0.5 / 255 + 0.5 / top)
    np.testing.assert_array_equal(frame.labels, frame8.labels)
    assert run.pixel_size_um is None
    assert not any(c.endswith(("_um", "_um2")) for c in frame.crystals.columns)
    fixed = SyntheticRun(SynthConfig(frames=2, height=64, width=64, pixel_size_um=0.5))
    assert fixed.pixel_size_um == 0.5


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "crowed"}, "did you mean 'crowded'"),
        ({"scenario": "nonsense"}, "choose one of"),
        ({"frames": 0}, "frames"),
        ({"height": 8}, "height"),
        ({"width": 10.5}, "width"),
        ({"seed": -1}, "seed"),
        ({"interval_s": 0}, "interval_s"),
        ({"pixel_size_um": -2.0}, "pixel_size_um"),
        ({"dtype": "float32"}, "dtype"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        SynthConfig(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CrystalsegError)


def test_custom_scenario_is_validated_and_usable():
    with pytest.raises(ConfigError, match="seed_length_px"):
        Scenario("bad", seed_length_px=(50.0, 10.0))
    with pytest.raises(ConfigError, match="habit_weights"):
        Scenario("bad", habit_weights=(0.0, 0.0, 0.0))
    custom = Scenario("only plates", habit_weights=(0, 0, 1), habit_concentration=math.inf)
    run = SyntheticRun(SynthConfig(frames=2, height=128, width=128, scenario=custom))
    assert set(run.population_table()["habit"]) == {"plate"}
    assert get_scenario("mixed").name == "mixed"


# --------------------------------------------------------------------------- the store


def test_synthesize_run_round_trip(tmp_path):
    config = SynthConfig(frames=5, height=64, width=80, seed=9, scenario="bubbles")
    done: list[int] = []
    path = synthesize_run(tmp_path / "run.zarr", config, frames_per_chunk=2, progress=done.append)
    assert done == [2, 4, 5]
    run = SyntheticRun(config)
    ds = open_run(path)
    assert ds["image"].shape == (5, 64, 80)
    assert ds.attrs["pixel_size_um"] == pytest.approx(run.pixel_size_um)
    np.testing.assert_array_equal(ds["time"].values, run.time_s)
    import xarray as xr

    truth = xr.open_zarr(path, group="truth")
    assert truth["labels"].dims == ("time", "y", "x")
    assert truth["labels"].dtype == np.int32 and truth["mask"].dtype == np.uint8
    assert truth["labels"].encoding["chunks"] == ds["image"].encoding["chunks"]
    frames = [run.render(t) for t in range(5)]
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(ds["image"][t].values, frame.image)
        np.testing.assert_array_equal(truth["labels"][t].values, frame.labels)
        np.testing.assert_array_equal(truth["mask"][t].values, frame.class_mask)
    crystals = read_table(path, "truth/crystals")
    expected = pd.concat([f.crystals for f in frames], ignore_index=True)
    pd.testing.assert_frame_equal(crystals, expected, check_dtype=False)
    distractors = read_table(path, "truth/distractors")
    assert len(distractors) == sum(len(f.distractors) for f in frames) > 0
    population = read_table(path, "truth/population")
    assert len(population) == run.population.n_crystals
    stage = read_run_attrs(path)["provenance"]["stages"]["synth"]
    assert stage["status"] == "finished"
    assert stage["settings"]["config"]["seed"] == 9
    assert stage["settings"]["appearance"]["polarity"] in ("dark", "bright")
    with pytest.raises(StageStateError):
        synthesize_run(path, config)


def test_interrupted_synthesis_resumes_to_the_same_store(tmp_path):
    config = SynthConfig(frames=6, height=48, width=64, seed=3, scenario="crowded")

    def stop_after_first_chunk(n: int) -> None:
        if n == 2:
            raise KeyboardInterrupt

    path = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        synthesize_run(path, config, frames_per_chunk=2, progress=stop_after_first_chunk)
    synthesize_run(path, config, frames_per_chunk=2)
    clean = synthesize_run(tmp_path / "clean.zarr", config, frames_per_chunk=2)
    np.testing.assert_array_equal(open_run(path)["image"].values, open_run(clean)["image"].values)
    pd.testing.assert_frame_equal(
        read_table(path, "truth/crystals"), read_table(clean, "truth/crystals")
    )


def test_training_pairs_layout(tmp_path):
    config = SynthConfig(frames=3, height=48, width=64, seed=2)
    pairs = tmp_path / "pairs"
    synthesize_run(tmp_path / "run.zarr", config, pairs_dir=pairs)
    names = sorted(p.name for p in pairs.iterdir())
    assert names == sorted([f"{t}.png" for t in range(3)] + [f"{t}_mask.png" for t in range(3)])
    run = SyntheticRun(config)
    for t in range(3):
        image = np.asarray(Image.open(pairs / f"{t}.png"))
        mask = np.asarray(Image.open(pairs / f"{t}_mask.png"))
        frame = run.render(t)
        np.testing.assert_array_equal(image, frame.image)
        np.testing.assert_array_equal(mask, frame.class_mask)
        assert set(np.unique(mask)) <= {0, 1}
    with pytest.raises(StageStateError, match="already holds"):
        synthesize_run(tmp_path / "other.zarr", config, pairs_dir=pairs)
    synthesize_run(tmp_path / "other.zarr", config, pairs_dir=pairs, overwrite=True)
