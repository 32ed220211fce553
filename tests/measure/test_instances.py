"""Class mask → instance labels: splitting touching crystals, boundary class, size filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.draw import disk, polygon
from skimage.measure import label as sk_label

from crystalseg.classes import class_mask_from_labels
from crystalseg.errors import ConfigError, MaskValueError
from crystalseg.measure import MeasureSettings
from crystalseg.measure.features import measure_frame
from crystalseg.measure.instances import (
    THIN_DEPTH_PX,
    DistanceSplit,
    boundary_class,
    crystal_classes,
    instance_scores,
    label_instances,
    truth_pieces,
)
from crystalseg.measure.run import label_mask_frame

CODES3 = ("background", "crystal", "boundary")


def discs(shape: tuple[int, int], circles: list[tuple[float, float, float]]) -> np.ndarray:
    """Truth labels of discs (later ones on top)."""
    labels = np.zeros(shape, dtype=np.int32)
    for i, (cy, cx, r) in enumerate(circles, start=1):
        rr, cc = disk((cy, cx), r, shape=shape)
        labels[rr, cc] = i
    return labels


def rotated_rectangle(
    shape: tuple[int, int], centre: tuple[float, float], length: float, width: float, angle: float
) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    corners = [(-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2)]
    corners.append((-length / 2, width / 2))
    rows = [centre[0] + u * s + v * c for u, v in corners]
    cols = [centre[1] + u * c - v * s for u, v in corners]
    out = np.zeros(shape, dtype=bool)
    rr, cc = polygon(rows, cols, shape=shape)
    out[rr, cc] = True
    return out


def three_class(labels: np.ndarray) -> np.ndarray:
    """Class mask with the inner boundary of every instance as class 2."""
    return class_mask_from_labels(labels, CODES3)


def test_two_touching_discs_are_split() -> None:
    truth = discs((80, 100), [(40, 30, 16), (40, 58, 14)])  # overlapping by 2 px
    mask = (truth > 0).astype(np.uint8)
    assert ndi.label(mask)[1] == 1  # one connected blob
    labels = label_instances(mask, split="watershed")
    assert labels.max() == 2
    scores = instance_scores(labels, truth)
    assert scores["matched"] == 2
    assert scores["f1"] == 1.0
    # The cut runs through the waist: each disc keeps nearly all of its pixels.
    for i in (1, 2):
        area = np.count_nonzero(truth == i)
        best = np.bincount(labels[truth == i]).max()
        assert best > 0.95 * area


def test_scores_of_empty_frames() -> None:
    empty = np.zeros((20, 30), dtype=np.int32)
    scores = instance_scores(empty, empty)
    assert (scores["n_true"], scores["n_pred"], scores["matched"]) == (0, 0, 0)
    assert math.isnan(scores["f1"])
    one = discs((20, 30), [(10, 15, 5)])
    missed = instance_scores(empty, one)
    assert (missed["n_true"], missed["recall"], missed["f1"]) == (1, 0.0, 0.0)
    false = instance_scores(one, empty)
    assert (false["n_pred"], false["precision"], false["f1"]) == (1, 0.0, 0.0)


def test_three_touching_discs_in_a_row_are_split() -> None:
    truth = discs((60, 140), [(30, 25, 12), (30, 47, 11), (30, 69, 12)])
    labels = label_instances((truth > 0).astype(np.uint8), split="watershed")
    assert labels.max() == 3
    assert instance_scores(labels, truth)["matched"] == 3


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 4, 1.2])
def test_single_elongated_rectangle_is_not_split(angle: float) -> None:
    needle = rotated_rectangle((120, 120), (60, 60), 90, 7, angle)
    labels = label_instances(needle.astype(np.uint8), split="watershed")
    assert labels.max() == 1
    assert np.array_equal(labels > 0, needle)


def test_single_ellipse_and_plate_are_not_split() -> None:
    yy, xx = np.mgrid[:100, :100]
    ellipse = ((yy - 50) / 40.0) ** 2 + ((xx - 50) / 12.0) ** 2 <= 1
    hexagon = np.zeros((100, 100), dtype=bool)
    angles = np.arange(6) * np.pi / 3
    rr, cc = polygon(50 + 35 * np.sin(angles), 50 + 35 * np.cos(angles), shape=(100, 100))
    hexagon[rr, cc] = True
    for shape in (ellipse, hexagon):
        labels = label_instances(shape.astype(np.uint8))
        assert labels.max() == 1


def test_components_without_split_and_renumbering() -> None:
    mask = np.zeros((30, 30), dtype=np.uint8)
    mask[2:6, 20:26] = 1  # first in raster order
    mask[10:20, 2:12] = 1
    mask[25, 25] = 1  # 1 px: below the limit
    labels = label_instances(mask, split="none", min_area_px=4)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    assert labels[3, 22] == 1 and labels[15, 5] == 2
    assert labels[25, 25] == 0


def test_min_size_filter() -> None:
    truth = discs((60, 60), [(15, 15, 2.5), (40, 40, 8)])
    small = np.count_nonzero(truth == 1)
    mask = (truth > 0).astype(np.uint8)
    kept = label_instances(mask, min_area_px=small)
    assert kept.max() == 2
    dropped = label_instances(mask, min_area_px=small + 1)
    assert dropped.max() == 1
    assert np.array_equal(dropped > 0, truth == 2)


def test_small_split_fragments_join_their_neighbour() -> None:
    # A large disc with a small bump: the bump has its own distance maximum but is
    # too small to be a particle, so it stays part of the disc rather than vanishing.
    truth = discs((80, 80), [(40, 36, 18), (40, 57, 3.5)])
    mask = (truth > 0).astype(np.uint8)
    bump = np.count_nonzero(truth == 2)
    labels = label_instances(mask, min_area_px=bump + 5, neck_ratio=1.0, min_depth_px=0.0)
    assert labels.max() == 1
    assert np.count_nonzero(labels) == np.count_nonzero(mask)


def test_boundary_class_splits_side_by_side_prisms() -> None:
    # Two prisms lying side by side leave no neck: only a boundary class can split them.
    truth = np.zeros((60, 80), dtype=np.int32)
    truth[20:30, 10:70] = 1
    truth[30:40, 10:70] = 2
    watershed = label_instances((truth > 0).astype(np.uint8), split="watershed")
    assert watershed.max() == 1
    labels = label_instances(three_class(truth), codes=CODES3)  # auto → hybrid
    assert labels.max() == 2
    assert instance_scores(labels, truth)["matched"] == 2
    # Every boundary pixel is grown back to its own crystal.
    assert np.array_equal(labels > 0, truth > 0)
    assert sorted(np.unique(labels[truth == 1])) == [int(labels[25, 40])]


def test_contact_class_splits_touching_prisms_and_keeps_their_outlines() -> None:
    # A contact class cuts only where crystals touch; the outline is the crystal class's
    # and no trimming applies (there is no rim band), so the outlines come back exactly.
    truth = np.zeros((60, 80), dtype=np.int32)
    truth[20:30, 10:70] = 1
    truth[30:40, 10:70] = 2
    truth[45:55, 20:30] = 3
    codes = ("background", "crystal", "contact")
    mask = class_mask_from_labels(truth, codes)
    for trim in (True, False):
        labels = label_instances(mask, codes=codes, trim_boundary=trim)
        assert labels.max() == 3
        assert instance_scores(labels, truth)["f1"] == 1.0
        assert np.array_equal(labels > 0, truth > 0)


def test_boundary_class_keeps_crystals_too_thin_for_an_interior() -> None:
    truth = np.zeros((40, 40), dtype=np.int32)
    truth[10:12, 5:35] = 1  # 2 px wide: all boundary
    truth[20:35, 10:30] = 2
    labels = label_instances(three_class(truth), codes=CODES3, split="boundary")
    assert labels.max() == 2
    assert instance_scores(labels, truth)["f1"] == 1.0


def test_boundary_class_rejoins_a_crystal_cut_by_a_thin_section() -> None:
    # Two blocks joined by a 2 px wide bridge: one crystal whose interior the bridge
    # (all boundary) cuts in two. The halves meet across a thin contact: rejoined.
    truth = np.zeros((30, 50), dtype=np.int32)
    truth[10:20, 5:17] = 1
    truth[14:16, 17:25] = 1
    truth[10:20, 25:37] = 1
    mask = three_class(truth)
    assert ndi.label(mask == 1)[1] == 2
    labels = label_instances(mask, codes=CODES3)
    assert labels.max() == 1
    assert np.array_equal(labels > 0, truth > 0)


def test_boundary_class_ignores_interior_specks() -> None:
    truth = np.zeros((30, 40), dtype=np.int32)
    truth[5:25, 5:15] = 1
    truth[5:25, 15:35] = 2
    mask = three_class(truth)
    mask[11:15, 24:28] = 2  # noise in the model's output cuts a 2 px speck off crystal 2
    mask[12, 25:27] = 1
    assert ndi.label(mask == 1, structure=np.ones((3, 3)))[1] == 3
    labels = label_instances(mask, codes=CODES3)
    assert labels.max() == 2
    assert instance_scores(labels, truth)["f1"] == 1.0


def test_hybrid_split_cuts_the_bridge_a_partial_boundary_leaves() -> None:
    # Two touching plates; the model drew the boundary between them except over 4 px,
    # so their interiors join through a narrow bridge: one marker, one particle.
    truth = np.zeros((50, 70), dtype=np.int32)
    truth[10:40, 5:35] = 1
    truth[10:40, 35:65] = 2
    mask = three_class(truth)
    gap = mask[:, 33:37] == 2
    gap[:23] = gap[27:] = False
    mask[:, 33:37][gap] = 1
    assert ndi.label(mask == 1)[1] == 1
    assert label_instances(mask, codes=CODES3, split="boundary").max() == 1
    labels = label_instances(mask, codes=CODES3, split="hybrid")
    assert labels.max() == 2
    assert instance_scores(labels, truth)["f1"] == 1.0
    assert np.array_equal(label_instances(mask, codes=CODES3), labels)  # the default
    # A long prism whose interior has no neck stays whole.
    prism = np.zeros((40, 90), dtype=np.int32)
    prism[15:25, 5:85] = 1
    assert label_instances(three_class(prism), codes=CODES3, split="hybrid").max() == 1
    with pytest.raises(ConfigError, match="boundary class"):
        label_instances((prism > 0).astype(np.uint8), split="hybrid")


@pytest.mark.parametrize("split", ["boundary", "hybrid"])
def test_thin_needle_with_a_broken_interior_stays_whole(split: str) -> None:
    # A needle 4 px wide: the model draws it nearly all boundary, its interior a
    # line that breaks wherever a row is all boundary (gaps of 1 to 5 px).
    needle = rotated_rectangle((120, 120), (60, 60), 100, 4, 0.9)
    mask = np.where(needle > 0, 2, 0).astype(np.uint8)
    core = ndi.binary_erosion(needle > 0, iterations=1)
    rows = np.flatnonzero(core.any(1))
    for start, stop in ((0, 9), (10, 20), (22, 35), (40, 52), (53, 70)):
        band = np.zeros_like(core)
        band[rows[start] : rows[min(stop, len(rows) - 1)]] = True
        mask[core & band] = 1
    assert ndi.label(mask == 1, structure=np.ones((3, 3)))[1] >= 4
    labels = label_instances(mask, codes=CODES3, split=split)
    assert labels.max() == 1
    assert instance_scores(labels, needle)["f1"] == 1.0


@pytest.mark.parametrize("angle", [0.0, 0.4, math.pi / 4, 2.0])
def test_needle_drawn_with_a_wide_rim_and_a_broken_interior_line_stays_whole(
    angle: float,
) -> None:
    # As the bundled model draws a needle 3-4 px wide: a rim two pixels wide on each
    # side (6 px in all) around a one-pixel interior line broken into dashes.
    line = rotated_rectangle((140, 140), (70, 70), 90, 1.2, angle)
    drawn = ndi.distance_transform_edt(~line) <= 2.3
    mask = np.where(drawn, 2, 0).astype(np.uint8)
    rows, cols = np.nonzero(line)
    along = (rows - 70) * math.sin(angle) + (cols - 70) * math.cos(angle)
    dashes = (along % 18) < 12  # 12 px of interior, 6 px gap
    mask[rows[dashes], cols[dashes]] = 1
    assert ndi.label(mask == 1, structure=np.ones((3, 3)))[1] >= 4
    disc = np.hypot(*np.mgrid[-2:3, -2:3]) <= THIN_DEPTH_PX
    assert ndi.binary_erosion(drawn, structure=disc, border_value=1).any()  # not "thin"
    for split in ("boundary", "hybrid"):
        assert label_instances(mask, codes=CODES3, split=split).max() == 1
    # Controls. Two short crystals end to end, each with its own interior, make a
    # component not elongated enough: two particles. Two needles side by side,
    # touching, make a deeper component: two particles.
    along = along_map(angle)
    pair = np.where(drawn & (np.abs(along) < 8), 2, 0).astype(np.uint8)
    pair[line & (np.abs(along) < 8) & (np.abs(along) > 2)] = 1
    assert ndi.label(pair == 1, structure=np.ones((3, 3)))[1] == 2
    assert label_instances(pair, codes=CODES3, split="boundary").max() == 2
    c, s_ = math.cos(angle), math.sin(angle)
    truth = np.zeros((140, 140), dtype=np.int32)
    for i, off in enumerate((-3.0, 3.0), start=1):
        centre = (70 + off * c, 70 - off * s_)
        truth[rotated_rectangle((140, 140), centre, 90, 6, angle) & (truth == 0)] = i
    labels = label_instances(three_class(truth), codes=CODES3)
    assert labels.max() == 2


def along_map(angle: float, shape: tuple[int, int] = (140, 140)) -> np.ndarray:
    """Distance of every pixel from the centre along the direction ``angle``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - shape[0] // 2) * math.sin(angle) + (xx - shape[1] // 2) * math.cos(angle)


@pytest.mark.parametrize("angle", [0.0, 0.5, math.pi / 4])
def test_touching_crystals_in_a_true_three_class_mask_stay_apart(angle: float) -> None:
    # Two plates side by side, touching along a line at any angle: each has its
    # boundary ring, so their interiors are two rings apart (diagonally too).
    c, s = math.cos(angle), math.sin(angle)
    truth = np.zeros((120, 120), dtype=np.int32)
    for i, off in enumerate((-9.0, 9.0), start=1):
        centre = (60 + off * c, 60 - off * s)
        truth[rotated_rectangle((120, 120), centre, 50, 18, angle) & (truth == 0)] = i
    assert set(np.unique(truth)) == {0, 1, 2}
    for split in ("boundary", "hybrid"):
        labels = label_instances(three_class(truth), codes=CODES3, split=split)
        assert labels.max() == 2
        assert instance_scores(labels, truth)["f1"] == 1.0


def test_boundary_class_with_class_filter() -> None:
    codes = ("background", "needle", "prism", "edge")
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:15, 5:25] = 3
    mask[6:14, 6:24] = 1  # a needle-class crystal with its boundary ring
    mask[20:35, 30:55] = 3
    mask[21:34, 31:54] = 2  # a prism
    only_prisms = label_instances(mask, codes=codes, classes=["prism"])
    assert only_prisms.max() == 1
    assert only_prisms[27, 40] == 1 and only_prisms[10, 10] == 0
    both = label_instances(mask, codes=codes)
    assert both.max() == 2


def test_class_helpers() -> None:
    assert boundary_class(("background", "crystal")) is None
    assert boundary_class(CODES3) == 2
    assert boundary_class(("background", "Edge", "crystal")) == 1
    assert crystal_classes(CODES3) == (1,)
    assert crystal_classes(("background", "a", "b"), classes=["b"]) == (2,)
    with pytest.raises(ConfigError, match="cannot be measured"):
        crystal_classes(CODES3, classes=["boundary"])
    with pytest.raises(ConfigError, match="cannot be measured"):
        crystal_classes(CODES3, classes=["bubble"])
    with pytest.raises(ConfigError, match="name 2 boundary classes"):
        boundary_class(("background", "edge", "boundary"))


def test_errors() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    with pytest.raises(ConfigError, match="boundary class"):
        label_instances(mask, split="boundary")
    with pytest.raises(MaskValueError):
        label_instances(mask.astype(float))
    with pytest.raises(MaskValueError):
        label_instances(np.zeros((2, 10, 10), dtype=np.uint8))
    with pytest.raises(ConfigError):
        label_instances(mask, min_area_px=0)
    with pytest.raises(ConfigError):
        label_instances(mask, neck_ratio=0.0)
    with pytest.raises(ConfigError):
        label_instances(mask, split="magic")  # type: ignore[arg-type]


def test_empty_mask() -> None:
    for split in ("watershed", "none"):
        labels = label_instances(np.zeros((16, 16), dtype=np.uint8), split=split)
        assert labels.dtype == np.int32 and not labels.any()
    empty3 = label_instances(np.zeros((16, 16), dtype=np.uint8), codes=CODES3)
    assert not empty3.any()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.2, 0.6),
    min_area=st.integers(1, 12),
)
@example(seed=908552, density=0.3203125, min_area=4)  # the join crosses a 1-px gap here
def test_watershed_partitions_each_component(seed: int, density: float, min_area: int) -> None:
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.random((48, 48)), 2.0)
    mask = (noise > np.quantile(noise, 1 - density)).astype(np.uint8)
    # The watershed alone: the occlusion join (on by default) may join pieces of one
    # crystal across one pixel of background, i.e. across components, on purpose.
    labels = label_instances(mask, split="watershed", min_area_px=min_area, join_occluded=False)
    comps, _ = ndi.label(mask, structure=np.ones((3, 3)))
    area = np.bincount(comps.ravel())
    big = (comps > 0) & (area[comps] >= min_area)
    # Every pixel of a component of measurable size is labelled, and nothing else.
    assert np.array_equal(labels > 0, big)
    ids = np.unique(labels[labels > 0])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    # No particle spans two components, and each one is at least min_area pixels.
    pairs = np.unique(np.stack([labels[big], comps[big]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    assert np.bincount(labels.ravel())[1:].min(initial=min_area) >= min_area
    # Without splitting, the labels are the components above the limit, numbered
    # in raster order like skimage's.
    plain = label_instances(mask, split="none", min_area_px=min_area, join_occluded=False)
    assert np.array_equal(plain, sk_label(big, connectivity=2))


def test_truth_pieces_split_occluded_crystals_and_skip_small_pieces() -> None:
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8] = 1  # one crystal seen as two pieces: 36 px and 4 px
    truth[12:14, 12:14] = 1
    truth[10:18, 2:6] = 2  # 32 px
    pieces, ids = truth_pieces(truth, min_area_px=10)
    assert pieces.max() == 3 and len(ids) == 2
    assert {int(pieces[4, 4]), int(pieces[14, 3])} == set(ids.tolist())
    assert pieces[13, 13] not in ids


def test_instance_scores_counts_splits_and_merges() -> None:
    truth = np.zeros((20, 40), dtype=np.int32)
    truth[2:10, 2:10] = 1
    truth[2:10, 10:18] = 2
    truth[12:18, 20:38] = 3
    pred = np.zeros_like(truth)
    pred[2:10, 2:18] = 1  # 1 and 2 merged
    pred[12:18, 20:29] = 2  # 3 split in two
    pred[12:18, 29:38] = 3
    s = instance_scores(pred, truth)
    assert s["n_true"] == 3 and s["n_pred"] == 3
    assert s["matched"] == 0
    assert s["merged"] == 2 and s["over_split"] == 1
    assert s["count_error"] == 0.0
    perfect = instance_scores(truth, truth)
    assert perfect["f1"] == 1.0 and perfect["merged"] == 0 and perfect["over_split"] == 0


def drawn_two_wide(labels: np.ndarray) -> np.ndarray:
    """Class mask as the default model draws it: the true one-pixel rim plus a ring
    of boundary one pixel outside every crystal (a rim two pixels wide)."""
    mask = three_class(labels)
    outside = ndi.binary_dilation(labels > 0, structure=np.ones((3, 3), bool)) & (labels == 0)
    mask[outside] = 2
    return mask


@pytest.mark.parametrize("split", ["boundary", "hybrid"])
def test_trimming_a_rim_drawn_two_pixels_wide_restores_the_outline(split: str) -> None:
    # Upright rectangles: the outer ring lies two pixels from the interior all round.
    truth = np.zeros((80, 80), dtype=np.int32)
    truth[10:30, 10:50] = 1
    truth[45:70, 20:32] = 2
    trimmed = label_instances(drawn_two_wide(truth), codes=CODES3, split=split)
    assert np.array_equal(trimmed, truth)
    # Discs and a tilted prism: where a staircase outline steps, outer-ring pixels
    # touch the interior diagonally and stay; the rest goes, and no true pixel does.
    truth = discs((120, 120), [(30, 30, 12.0), (80, 75, 20.0)])
    truth[rotated_rectangle((120, 120), (95, 25), 40, 12, 0.4) & (truth == 0)] = 3
    mask = drawn_two_wide(truth)
    trimmed = label_instances(mask, codes=CODES3, split=split)
    drawn = label_instances(mask, codes=CODES3, split=split, trim_boundary=False)
    assert instance_scores(trimmed, truth)["f1"] == 1.0
    assert not np.any((truth > 0) & (trimmed == 0))
    extra, extra_drawn = (np.count_nonzero((lab > 0) & (truth == 0)) for lab in (trimmed, drawn))
    assert extra_drawn > 2 * np.pi * (12 + 20)  # as drawn: one ring more than every crystal
    assert extra < 0.6 * extra_drawn


def test_trimming_leaves_true_masks_and_thin_crystals_as_drawn() -> None:
    # Rectangles and discs with their true one-pixel rim lose nothing.
    truth = discs((100, 100), [(25, 25, 10.0), (70, 70, 15.5)])
    truth[5:15, 50:90] = 3
    labels = label_instances(three_class(truth), codes=CODES3)
    assert np.array_equal(labels > 0, truth > 0)
    # A needle drawn 5 px wide, all boundary but a speck of interior: trimming it to
    # one pixel around the speck would take most of it, so it stays as drawn.
    needle = np.zeros((40, 60), dtype=np.int32)
    needle[18:23, 5:55] = 1
    mask = np.where(needle > 0, 2, 0).astype(np.uint8)
    mask[20, 28:31] = 1
    labels = label_instances(mask, codes=CODES3, split="boundary")
    assert np.array_equal(labels > 0, needle > 0)


# --------------------------------------------------------------------------- occlusion


def crossing(
    angle: float, cross_deg: float, shape: tuple[int, int] = (140, 140)
) -> tuple[np.ndarray, np.ndarray]:
    """Truth labels of a needle (id 1, 70 x 4 px) behind another (id 2, 50 x 6 px) that
    crosses its middle at ``cross_deg``; and the back needle's whole (unoccluded) mask."""
    centre = (shape[0] / 2, shape[1] / 2)
    back = rotated_rectangle(shape, centre, 70, 4, angle)
    front = rotated_rectangle(shape, centre, 50, 6, angle + math.radians(cross_deg))
    truth = np.where(back, 1, 0).astype(np.int32)
    truth[front] = 2
    return truth, back


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.1, 2.3])
@pytest.mark.parametrize("cross_deg", [35.0, 90.0])
@pytest.mark.parametrize("split", ["boundary", "hybrid"])
def test_a_needle_seen_in_two_pieces_behind_another_is_one_particle(
    angle: float, cross_deg: float, split: str
) -> None:
    truth, back = crossing(angle, cross_deg)
    assert ndi.label(truth == 1, structure=np.ones((3, 3)))[1] == 2  # two visible pieces
    labels = label_instances(three_class(truth), codes=CODES3, split=split)
    assert labels.max() == 2
    # the joined particle is the visible part of the back needle (the split may give a
    # rim pixel or two where the needles cross to the front one)
    joined = np.bincount(labels[truth == 1]).argmax()
    inter = np.count_nonzero((labels == joined) & (truth == 1))
    assert inter / np.count_nonzero((labels == joined) | (truth == 1)) > 0.95
    # ... and its length spans the gap: the Feret diameter of the whole needle
    table = measure_frame(labels).set_index("label")
    whole = measure_frame(back.astype(np.int32)).iloc[0]
    assert table.loc[joined, "feret_diameter_max"] == pytest.approx(
        whole["feret_diameter_max"], abs=1.5
    )
    # without joining, each piece is a particle
    apart = label_instances(three_class(truth), codes=CODES3, split=split, join_occluded=False)
    assert apart.max() == 3


@pytest.mark.parametrize(
    ("case", "rects", "joins"),
    [
        # (y0, y1, x0, x1) rectangles, later ones on top
        ("nothing covers the gap", [(37, 43, 4, 30), (37, 43, 36, 70), (10, 24, 31, 35)], 0),
        ("end to end, touching", [(37, 43, 4, 37), (37, 43, 37, 70), (10, 30, 50, 56)], 0),
        ("a collinear needle between", [(37, 43, 4, 25), (37, 43, 45, 70), (37, 43, 27, 43)], 0),
        ("parallel, offset", [(36, 42, 4, 30), (44, 50, 36, 70), (20, 60, 30, 36)], 0),
        ("a plate behind, wider", [(37, 43, 4, 30), (28, 52, 36, 70), (20, 60, 30, 36)], 0),
        ("crossed", [(37, 43, 4, 30), (37, 43, 36, 70), (20, 60, 30, 36)], 1),
    ],
)
def test_joining_needs_collinear_pieces_and_a_crystal_in_the_gap(
    case: str, rects: list[tuple[int, int, int, int]], joins: int
) -> None:
    truth = np.zeros((80, 80), np.int32)
    for i, (y0, y1, x0, x1) in enumerate(rects, start=1):
        truth[y0:y1, x0:x1] = i
    mask = three_class(truth)
    apart = label_instances(mask, codes=CODES3, split="boundary", join_occluded=False)
    assert apart.max() == 3, case
    joined = label_instances(mask, codes=CODES3, split="boundary")
    assert joined.max() == 3 - joins, case
    if joins:  # the two pieces left and right of the crossing crystal
        assert joined[40, 10] == joined[40, 60] != joined[40, 33]


# ------------------------------------------- constructed cases, as the model draws them


def model_classes(labels: np.ndarray, *, rim: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class map of true instances as a model outputs it.

    ``rim="none"``: crystal class only; ``"inner"``: the one-pixel inner rim the model
    is trained on; ``"wide"``: that rim plus one pixel outside the crystal, as the
    bundled model draws it.
    """
    if rim == "none":
        return (labels > 0).astype(np.uint8), ("background", "crystal")
    mask = class_mask_from_labels(labels, CODES3)
    if rim == "wide":
        outside = ndi.binary_dilation(mask == 2, structure=np.ones((3, 3))) & (mask == 0)
        mask[outside] = 2
    return mask, CODES3


SPLITS_WITH_RIM = [("hybrid", "inner"), ("hybrid", "wide"), ("distance", "inner")]
SPLITS_WITH_RIM += [("distance", "wide")]
ALL_SPLITS = [*SPLITS_WITH_RIM, ("distance", "none"), ("watershed", "none")]


def labelled(truth: np.ndarray, split: str, rim: str) -> np.ndarray:
    mask, codes = model_classes(truth, rim=rim)
    return label_instances(mask, codes=codes, split=split, min_area_px=10)  # type: ignore[arg-type]


def voronoi_discs(shape: tuple[int, int], circles: list[tuple[float, float, float]]) -> np.ndarray:
    """Discs that overlap, each overlap pixel given to the disc whose edge is farther
    from it: touching along a contact, as crystals grown into each other."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.stack([np.hypot(yy - cy, xx - cx) - r for cy, cx, r in circles])
    return np.where((d <= 0).any(0), np.argmin(d, 0) + 1, 0).astype(np.int32)


@pytest.mark.parametrize(("split", "rim"), ALL_SPLITS)
def test_two_touching_discs_two_particles_with_their_areas(split: str, rim: str) -> None:
    truth = voronoi_discs((90, 120), [(45, 38, 22), (45, 78, 20)])  # 4 px overlap
    labels = labelled(truth, split, rim)
    assert labels.max() == 2
    # A rim drawn one pixel outside the crystal too is trimmed but for diagonal steps:
    # +3.5 % of area (0.35 px all round) for both splits.
    tolerance = 0.04 if rim == "wide" else 0.03
    for i in (1, 2):
        true_area = np.count_nonzero(truth == i)
        found = np.bincount(labels[truth == i]).argmax()
        assert abs(np.count_nonzero(labels == found) / true_area - 1) <= tolerance


@pytest.mark.parametrize(("split", "rim"), ALL_SPLITS)
def test_three_touching_discs_in_a_row_three_particles(split: str, rim: str) -> None:
    truth = voronoi_discs((70, 160), [(35, 30, 18), (35, 64, 18), (35, 98, 18)])
    labels = labelled(truth, split, rim)
    assert labels.max() == 3
    scores = instance_scores(labels, truth)
    assert scores["matched"] == 3


@pytest.mark.parametrize(("split", "rim"), SPLITS_WITH_RIM)
def test_disc_with_a_satellite_two_particles(split: str, rim: str) -> None:
    truth = voronoi_discs((90, 110), [(45, 45, 26), (45, 76, 7)])  # satellite 2 px in
    labels = labelled(truth, split, rim)
    assert labels.max() == 2
    assert instance_scores(labels, truth)["matched"] == 2


@pytest.mark.parametrize(("split", "rim"), ALL_SPLITS)
@pytest.mark.parametrize("width", [10, 16])
def test_l_shaped_crystal_stays_one(split: str, rim: str, width: int) -> None:
    truth = np.zeros((100, 100), dtype=np.int32)
    truth[15 : 15 + width, 15:85] = 1
    truth[15:85, 15 : 15 + width] = 1
    labels = labelled(truth, split, rim)
    assert labels.max() == 1


# The distance split merges crossing needles under 8 px wide (a known limit, see
# docs/validation.md); the hybrid split keeps them apart.
CROSSINGS = [(5, 90, "hybrid", rim) for rim in ("inner", "wide")]
CROSSINGS += [(w, a, *sr) for w, a in [(8, 90), (8, 40), (12, 60)] for sr in SPLITS_WITH_RIM]


@pytest.mark.parametrize(("width", "angle", "split", "rim"), CROSSINGS)
def test_crossing_needles_two_particles(width: int, angle: int, split: str, rim: str) -> None:
    shape = (140, 140)
    front = rotated_rectangle(shape, (70, 70), 110, width, 0.3)
    back = rotated_rectangle(shape, (70, 70), 110, width, 0.3 + math.radians(angle))
    truth = np.where(front, 1, np.where(back, 2, 0)).astype(np.int32)  # 2 lies behind 1
    labels = labelled(truth, split, rim)
    # each particle is one needle: the back one's two pieces joined, across the front one
    assert labels.max() == 2
    assert instance_scores(labels, truth)["matched"] == 2


def test_distance_split_through_the_measurement_settings() -> None:
    truth = voronoi_discs((90, 120), [(45, 38, 22), (45, 78, 20)])
    mask = class_mask_from_labels(truth, CODES3)
    labels = label_mask_frame(mask, settings=MeasureSettings(split="distance"), codes=CODES3)
    assert labels.max() == 2
    assert instance_scores(labels, truth)["matched"] == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rim_weight": 1.5}, "rim_weight must lie in"), ({"neck_ratio": 0.0}, "neck_ratio")],
)
def test_distance_split_settings_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DistanceSplit(**kwargs)
