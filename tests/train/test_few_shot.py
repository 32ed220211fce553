"""Few-shot training: crops follow the annotated area with a floor of steps, a single
frame is validated on a held-out band of itself, and the log says what the schedule is."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crystalseg.train import pairs, unet_learner
from crystalseg.train.data import HELD_OUT_BAND

DSB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dsb2018"
NAME = "fluorescence_07fb37aa"  # 520x696, 313 touching nuclei
TINY = "tu-test_resnet"
TINY_DEC = (16, 16, 8, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def half_frame(folder: Path) -> Path:
    """The left half (520x348) of one annotated dsb2018 training image, as a user who
    annotated half a frame would save it: image and id mask."""
    src = DSB / "train"
    if not (src / f"{NAME}.png").is_file():
        pytest.skip("the shared dsb2018 set is not on this machine")
    folder.mkdir(parents=True)
    image = np.asarray(Image.open(src / f"{NAME}.png"))
    mask = np.asarray(Image.open(src / f"{NAME}_mask.png"))
    half = image.shape[1] // 2
    Image.fromarray(image[:, :half]).save(folder / "half.png")
    Image.fromarray(mask[:, :half]).save(folder / "half_mask.png")
    return folder


def test_one_half_frame_trains_enough_steps_and_validates_on_a_held_out_band(
    tmp_path: Path, caplog
) -> None:
    folder = half_frame(tmp_path / "pairs")
    with caplog.at_level(logging.INFO, logger="crystalseg"):
        data = pairs(
            folder, codes=["background", "crystal", "boundary"], instances=True, crop_size=64
        )
    (train,), (valid,) = data.train_items, data.valid_items
    assert train.part == (0.0, 1 - HELD_OUT_BAND) and valid.part == (1 - HELD_OUT_BAND, 1.0)
    # the bands split the frame's longer side (520 rows) without overlap
    rows_train, rows_valid = data.load(train)[0].shape[0], data.load(valid)[0].shape[0]
    assert (rows_train, rows_valid) == (390, 130)
    assert data.load(train)[0].shape[1] == data.load(valid)[0].shape[1] == 348
    whole = np.asarray(Image.open(folder / "half_mask.png"))
    assert np.array_equal(data.instance_truth(valid), whole[390:].astype(np.int64))
    assert data.annotated_area() == 390 * 348
    # crops follow the area (135,720 px is 34 crops of 64², capped at 8)...
    assert data.crop_counts().tolist() == [8]

    learner = unet_learner(
        data,
        encoder=TINY,
        init="none",
        decoder_channels=TINY_DEC,
        batch_size=2,
        progress=False,
        min_steps_per_epoch=6,
    )
    # ... and the floor raises 8 crops (4 steps of 2) to 6 steps
    assert learner.steps_per_epoch() == 6
    with caplog.at_level(logging.INFO, logger="crystalseg"):
        learner.fit_one_cycle(1, 1e-3)
    assert len(learner.lrs) == 6
    text = caplog.text
    assert "one annotated frame: validating on a held-out band" in text
    assert (
        "1 epochs x 6 optimizer steps of 2 crops (64 px) = 6 steps, on 1 annotated frame "
        "of 135,720 px; the area gives 8 crops an epoch, raised to the floor of 6 steps; "
        "validated on a held-out band of the same frame (half.png[75%-100%])"
    ) in text
    assert "too short to learn a new look" in text
    record = learner.history[0]
    for key in ("instance_f1", "count_error", "d50_error", "particle_score"):
        assert key in record
    assert "particle score" in text and "D50 error" in text


def test_crops_follow_the_area_of_each_frame(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"small": (64, 64), "large": (192, 256)}.items():
        mask = np.zeros((h, w), np.uint8)
        mask[10:30, 10:30] = 255
        image = (rng.normal(100, 5, (h, w)) + mask // 3).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{name}.png")
        Image.fromarray(mask).save(folder / f"{name}_mask.png")
    data = pairs(folder, codes=["background", "crystal"], crop_size=64, valid_fraction=0)
    counts = dict(zip((i.name for i in data.train_items), data.crop_counts(), strict=True))
    assert counts == {"large.png": 8, "small.png": 1}  # 12 crop areas, capped at 8
    # a floor of 27 crops repeats whole rounds of 9: each frame keeps its share
    batches = list(
        data.train_batches(
            unet_learner(
                data, encoder=TINY, init="none", decoder_channels=TINY_DEC, progress=False
            ).spec,
            np.random.default_rng(0),
            batch_size=9,
            min_crops=27,
        )
    )
    assert [len(y) for _, y in batches] == [9, 9, 9]
    given = pairs(folder, codes=["background", "crystal"], crop_size=64, crops_per_image=2)
    assert given.crop_counts().tolist() == [2] * len(given.train_items)
