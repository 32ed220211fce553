"""Pair discovery in every layout, crops, splits, fingerprints and data errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crystalseg.errors import (
    ConfigError,
    CrystalsegWarning,
    FrameMismatchError,
    InputNotFoundError,
    MaskValueError,
    UnsupportedInputError,
)
from crystalseg.models import ModelSpec
from crystalseg.train.data import discover_pairs, pairs, split_items

CODES = ["background", "crystal"]


def blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A 0/255 mask of a few discs."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(3):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(16, 100)] = 255
    return mask


def write_flat(folder: Path, n: int, *, shape=(48, 40), ext="bmp", seed=0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = blobs(rng, shape)
        image = (60 + mask // 2).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.{ext}")
        Image.fromarray(mask).save(folder / f"{i}_mask.{ext if ext != 'jpg' else 'png'}")


def make_run(path: Path, frames: int = 4, shape=(40, 36), seed=0) -> np.ndarray:
    from crystalseg.store import create_array, create_run

    rng = np.random.default_rng(seed)
    masks = np.stack([blobs(rng, shape) // 255 for _ in range(frames)]).astype(np.uint8)
    images = (50 + 120 * masks).astype(np.uint8)
    writer = create_run(
        path,
        shape=(frames, *shape),
        dtype="uint8",
        time_s=np.arange(frames, dtype=float),
        pixel_size_um=1.0,
        source={"test": True},
        stage="synth",
    )
    writer.write_frames(0, images)
    create_array(
        path,
        "truth/mask",
        dims=("time", "y", "x"),
        shape=masks.shape,
        dtype="uint8",
        chunks=masks.shape,
    )[:] = masks
    writer.mark_done(0, frames)
    writer.finish()
    return masks


def test_flat_folder_never_takes_masks_as_images(tmp_path: Path) -> None:
    write_flat(tmp_path, 3, ext="bmp")
    write_flat(tmp_path / "x", 0)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "9.png")  # no mask
    items = discover_pairs(tmp_path)
    assert [i.name for i in items] == ["0.bmp", "1.bmp", "2.bmp"]
    assert all(i.mask is not None and i.mask.name == f"{i.image.stem}_mask.bmp" for i in items)


def test_flat_folder_warns_about_unlabelled_images(tmp_path: Path, caplog) -> None:
    write_flat(tmp_path, 2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "extra.png")
    with caplog.at_level(logging.WARNING):
        items = discover_pairs(tmp_path)
    assert len(items) == 2
    assert "extra.png" in caplog.text


def test_orphan_mask_is_an_error(tmp_path: Path) -> None:
    write_flat(tmp_path, 2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "7_mask.png")
    with pytest.raises(InputNotFoundError, match=r"7_mask\.png"):
        discover_pairs(tmp_path)


def test_cellpose_mask_names_pair_up(tmp_path: Path) -> None:
    """X_masks (Cellpose training data) and X_cp_masks (Cellpose output) are masks,
    in a flat folder and in masks/; an image with two masks is an error."""
    write_flat(tmp_path / "tmp", 3, ext="png")
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, tag in enumerate(("_mask", "_masks", "_cp_masks")):
        (tmp_path / "tmp" / f"{i}.png").rename(flat / f"f{i}.png")
        (tmp_path / "tmp" / f"{i}_mask.png").rename(flat / f"f{i}{tag}.png")
    items = discover_pairs(flat)
    assert [(i.image.name, i.mask.name) for i in items] == [
        ("f0.png", "f0_mask.png"),
        ("f1.png", "f1_masks.png"),
        ("f2.png", "f2_cp_masks.png"),
    ]
    split = tmp_path / "split"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    for i in items:
        (split / "images" / i.image.name).write_bytes(i.image.read_bytes())
        (split / "masks" / i.mask.name).write_bytes(i.mask.read_bytes())
    assert [i.mask.name for i in discover_pairs(split)] == [i.mask.name for i in items]
    (flat / "f1_mask.png").write_bytes((flat / "f1_masks.png").read_bytes())
    with pytest.raises(InputNotFoundError, match=r"'f1\.png' has 2 masks.*keep one"):
        discover_pairs(flat)


def test_images_and_masks_folders_by_stem(tmp_path: Path) -> None:
    write_flat(tmp_path / "tmp", 3, ext="png")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        (tmp_path / "tmp" / f"{i}.png").rename(tmp_path / "images" / f"f{i}.png")
        target = f"f{i}.png" if i < 2 else f"f{i}_mask.png"  # both stem styles
        (tmp_path / "tmp" / f"{i}_mask.png").rename(tmp_path / "masks" / target)
    items = discover_pairs(tmp_path)
    assert [(i.image.name, i.mask.name) for i in items] == [
        ("f0.png", "f0.png"),
        ("f1.png", "f1.png"),
        ("f2.png", "f2_mask.png"),
    ]
    assert all(i.image.parent.name == "images" and i.mask.parent.name == "masks" for i in items)


def test_list_of_tuples_and_formats(tmp_path: Path) -> None:
    import tifffile

    write_flat(tmp_path, 1, ext="bmp")
    img16 = (np.arange(48 * 40).reshape(48, 40) * 20).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", img16)
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.full((48, 40), 90, np.uint8)).save(tmp_path / "b.jpg")
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / "b_mask.png")
    data = pairs(
        [
            (tmp_path / "0.bmp", tmp_path / "0_mask.bmp"),
            (tmp_path / "a.tif", tmp_path / "a_mask.png"),
            (tmp_path / "b.jpg", tmp_path / "b_mask.png"),
        ],
        codes=CODES,
        valid_fraction=0,
        crop_size=32,
    )
    image, mask = data.load(data.items[1])
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, img16)
    assert mask.max() == 0


def test_run_stores_and_whole_run_split(tmp_path: Path) -> None:
    m1 = make_run(tmp_path / "runs" / "a.zarr", frames=4, seed=1)
    make_run(tmp_path / "runs" / "b.zarr", frames=4, seed=2)
    data = pairs(tmp_path / "runs", codes=CODES, valid_fraction=0.5, crop_size=32)
    assert len(data.items) == 8
    runs_valid = {i.run.name for i in data.valid_items}
    runs_train = {i.run.name for i in data.train_items}
    assert len(runs_valid) == 1 and runs_valid.isdisjoint(runs_train)
    item = next(i for i in data.items if i.run.name == "a.zarr" and i.frame == 2)
    image, mask = data.load(item)
    np.testing.assert_array_equal(mask, m1[2])
    np.testing.assert_array_equal(image, 50 + 120 * m1[2])
    stepped = pairs(tmp_path / "runs" / "a.zarr", codes=CODES, frame_step=2, crop_size=32)
    assert sorted(i.frame for i in stepped.items) == [0, 2]
    # one run: validation is its last frames, never interleaved with training frames
    assert [i.frame for i in stepped.valid_items] == [2]


def test_preloaded_run_frames_give_the_same_batches(tmp_path: Path) -> None:
    from crystalseg.models import ModelSpec

    truth = [make_run(tmp_path / "runs" / f"{k}.zarr", frames=6, seed=k) for k in range(3)]
    spec = ModelSpec(encoder="mobilenet_v2", codes=CODES, scaling="percentile")
    lazy = pairs(tmp_path / "runs", codes=CODES, valid_fraction=0.0, crop_size=32, batch_size=4)
    ahead = pairs(tmp_path / "runs", codes=CODES, valid_fraction=0.0, crop_size=32, batch_size=4)
    # (sizing the crops reads no frame: the runs' shapes give the annotated area)
    assert ahead.preload(spec, workers=3) == 18 and ahead.preload(spec) == 0
    for item in ahead.items:  # each frame under its own index, whatever the read order
        np.testing.assert_array_equal(ahead.load(item)[1], truth[int(item.run.stem)][item.frame])
    batches = zip(
        lazy.train_batches(spec, np.random.default_rng(5)),
        ahead.train_batches(spec, np.random.default_rng(5)),
        strict=True,
    )
    for (x1, y1), (x2, y2) in batches:
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # a cache that holds one frame: preloading stops instead of reading everything
    small = pairs(tmp_path / "runs", codes=CODES, crop_size=32, cache_mb=0.003)
    assert 1 <= small.preload(spec, workers=1) < 18  # 18 frames were not cached yet


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((20, 31), np.uint8)).save(tmp_path / "0_mask.png")
    with pytest.raises(FrameMismatchError, match=r"'0.png' is 30x20.*'0_mask.png' is 31x20"):
        pairs(tmp_path, codes=CODES)


def test_bad_mask_value_fails_before_training(tmp_path: Path) -> None:
    write_flat(tmp_path, 2)
    Image.fromarray(np.array([[0, 128], [255, 0]], np.uint8).repeat(24, 0).repeat(20, 1)).save(
        tmp_path / "1_mask.bmp"
    )
    with pytest.raises(MaskValueError, match=r"'1_mask.bmp' holds values \{0, 128, 255\}"):
        pairs(tmp_path, codes=CODES)


def test_split_is_fixed_by_seed_and_respects_fraction(tmp_path: Path) -> None:
    write_flat(tmp_path, 10)
    items = discover_pairs(tmp_path)
    a = split_items(items, valid_fraction=0.3, valid=None, seed=3)
    b = split_items(items, valid_fraction=0.3, valid=None, seed=3)
    assert [i.name for i in a[1]] == [i.name for i in b[1]]
    assert len(a[1]) == 3 and len(a[0]) == 7
    seeds = {
        tuple(i.name for i in split_items(items, valid_fraction=0.3, valid=None, seed=s)[1])
        for s in range(5)
    }
    assert len(seeds) > 1


def test_explicit_validation_list(tmp_path: Path) -> None:
    write_flat(tmp_path, 4)
    data = pairs(tmp_path, codes=CODES, valid=["1.bmp", "3"], crop_size=32)
    assert [i.name for i in data.valid_items] == ["1.bmp", "3.bmp"]
    with pytest.raises(ConfigError, match="nope"):
        pairs(tmp_path, codes=CODES, valid=["nope"], crop_size=32)


def test_crops_keep_image_and_mask_aligned_and_pad_small_images(tmp_path: Path) -> None:
    write_flat(tmp_path, 2, shape=(20, 50))
    data = pairs(tmp_path, codes=CODES, valid_fraction=0, crop_size=32, foreground_bias=0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, mask = data.random_crop(data.items[0], rng)
        assert image.shape == mask.shape == (32, 32)
        # images are 60 + mask//2 (mask 0/255 -> class 0/1): alignment survives crop and pad
        np.testing.assert_array_equal(image, 60 + 127 * mask)


def test_train_batches_shape_and_count(tmp_path: Path) -> None:
    write_flat(tmp_path, 5, shape=(64, 64))
    data = pairs(tmp_path, codes=CODES, valid_fraction=0.2, crop_size=32, crops_per_image=3)
    spec = ModelSpec("tu-test_resnet", tuple(CODES), decoder_channels=(16, 16, 8, 8, 8))
    batches = list(data.train_batches(spec, np.random.default_rng(0), batch_size=5))
    assert len(batches) == 3  # 4 images x 3 crops / 5
    x, y = batches[0]
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (5, 32, 32) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # value check: pixel 60 -> 60/255, 187 -> 187/255
    assert set(np.round(x.numpy().ravel() * 255).astype(int)) <= {60, 187}


def test_rgb_images_become_grey_by_the_import_rule(tmp_path: Path) -> None:
    from crystalseg.io.base import to_grey

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "0_mask.png")
    empty = "none of the 1 training masks holds a pixel of 'crystal'"
    with pytest.warns(CrystalsegWarning, match=empty):
        grey = pairs(tmp_path, codes=CODES, valid_fraction=0, crop_size=32)
    np.testing.assert_array_equal(grey.load(grey.items[0])[0], to_grey(rgb))
    with pytest.warns(CrystalsegWarning, match=empty):
        colour = pairs(tmp_path, codes=CODES, valid_fraction=0, crop_size=32, channels=3)
    np.testing.assert_array_equal(colour.load(colour.items[0])[0], rgb)


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    write_flat(tmp_path, 3)
    a = pairs(tmp_path, codes=CODES, crop_size=32).fingerprint
    assert pairs(tmp_path, codes=CODES, crop_size=32).fingerprint == a
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / "2_mask.bmp")
    assert pairs(tmp_path, codes=CODES, crop_size=32).fingerprint != a


@pytest.mark.parametrize(
    "kwargs",
    [{"crop_size": 50}, {"valid_fraction": 1.0}, {"batch_size": 0}, {"channels": 2}],
)
def test_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    write_flat(tmp_path, 2)
    with pytest.raises(ConfigError):
        pairs(tmp_path, codes=CODES, **kwargs)


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        pairs(tmp_path / "nothing", codes=CODES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="no image/mask pairs"):
        pairs(tmp_path / "empty", codes=CODES)
    write_flat(tmp_path / "flat", 3)  # one of several DATA paths holds nothing: said
    with pytest.raises(InputNotFoundError, match=r"'.*empty' holds no image/mask pairs"):
        pairs([tmp_path / "flat", tmp_path / "empty"], codes=CODES)


def test_read_image_follows_the_import_reader(tmp_path: Path) -> None:
    import tifffile

    from crystalseg.errors import UnsupportedInputError
    from crystalseg.train import read_image

    bits = np.zeros((6, 8), bool)
    bits[2:4, 3:6] = True
    Image.fromarray(bits).save(tmp_path / "one_bit.png")
    got = read_image(tmp_path / "one_bit.png")
    assert got.dtype == np.uint8 and np.array_equal(got, bits * np.uint8(255))
    deep = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    assert np.array_equal(read_image(tmp_path / "deep.tif"), deep)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 6, 8), np.uint8))
    with pytest.raises(UnsupportedInputError, match=r"holds 5 frames.*crystalseg import"):
        read_image(tmp_path / "stack.tif")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_masks_without_any_crystal_are_warned_of_and_colour_masks_refused(tmp_path: Path) -> None:
    write_flat(tmp_path / "some", 2)
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / "some" / "1_mask.bmp")
    pairs(tmp_path / "some", codes=CODES, crop_size=32)  # one empty of two: no warning
    folder = tmp_path / "none"
    write_flat(folder, 2)
    for i in range(2):
        Image.fromarray(np.zeros((48, 40), np.uint8)).save(folder / f"{i}_mask.bmp")
    with pytest.warns(CrystalsegWarning, match=r"none of the 2 training masks holds a pixel of"):
        pairs(folder, codes=CODES, crop_size=32)
    colour = np.zeros((48, 40, 3), np.uint8)
    colour[5:9, 5:9] = (255, 0, 0)
    Image.fromarray(colour).save(folder / "0_mask.bmp")
    with pytest.raises(UnsupportedInputError, match=r"colour image \(RGB colours \(0, 0, 0\), "
                       r"\(255, 0, 0\)\).*convert\('L'\)"):  # fmt: skip
        pairs(folder, codes=CODES, crop_size=32)
