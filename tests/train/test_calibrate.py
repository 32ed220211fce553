"""Calibrated confidence: the temperature fitted on validation frames, recorded in the
checkpoint, applied by the engine to probabilities only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crystalseg.errors import CheckpointError, ConfigError
from crystalseg.segment import EngineSettings, Segmenter
from crystalseg.segment.engine import class_map
from crystalseg.train import pairs, unet_learner
from crystalseg.train.calibrate import (
    calibrate_frames,
    expected_calibration_error,
    fit_temperature,
    foreground_probability,
    nll,
)

TINY = "tu-test_resnet"
TINY_DEC = (16, 16, 8, 8, 8)
CPU = EngineSettings(device="cpu", backend="torch", threads=1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def draw(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, 3) and classes drawn from their own softmax: calibrated at T = 1."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return z, y


def test_the_temperature_of_logits_made_over_confident_is_found() -> None:
    z, y = draw(40_000, 0)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.05)
    t = fit_temperature(4 * z, y)  # four times too sure
    assert t == pytest.approx(4.0, rel=0.05)
    assert nll(4 * z, y, t) < nll(4 * z, y)
    # on other draws, never fitted on, the foreground probability is better calibrated
    z2, y2 = draw(40_000, 1)
    fg = (y2 > 0).numpy()
    before = expected_calibration_error(foreground_probability(4 * z2).numpy(), fg)
    after = expected_calibration_error(foreground_probability(4 * z2, t).numpy(), fg)
    assert after < 0.5 * before
    with pytest.raises(ConfigError, match="needs logits"):
        fit_temperature(z[:0], y[:0])


def test_ece_of_known_bins() -> None:
    # half the pixels say 0.9 and are right 60 % of the time, half say 0.1 and are right
    p = np.r_[np.full(10, 0.9), np.full(10, 0.1)]
    y = np.r_[np.ones(6), np.zeros(4), np.zeros(10)]
    assert expected_calibration_error(p, y.astype(bool)) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)


def test_temperature_changes_probabilities_not_masks() -> None:
    """Calibration monotonicity: the class map is the same at any temperature; the
    foreground probability rises with each foreground logit margin at any temperature,
    and with two classes the ranking of the pixels by probability is unchanged."""
    g = torch.Generator().manual_seed(3)
    for k in (2, 3):
        logits = torch.randn(2, k, 40, 50, generator=g) * 6
        masks, probs = [], []
        for t in (1.0, 2.5, 0.5):
            mask = torch.empty(2, 40, 50, dtype=torch.uint8)
            prob = torch.empty(2, 40, 50, dtype=torch.uint8)
            class_map(logits, mask, prob, temperature=t)
            masks.append(mask)
            probs.append(prob.float())
        assert all(torch.equal(masks[0], m) for m in masks[1:])
        if k == 2:  # a softer temperature pulls every probability towards 1/2, a sharper away
            assert torch.all((probs[1] - 127.5).abs() <= (probs[0] - 127.5).abs() + 0.5)
            assert torch.all((probs[2] - 127.5).abs() >= (probs[0] - 127.5).abs() - 0.5)
        # raising one foreground margin never lowers the probability
        bigger = logits.clone()
        bigger[:, 1] += 1.0
        for t in (1.0, 2.5):
            a = torch.empty(2, 40, 50, dtype=torch.uint8)
            b = torch.empty(2, 40, 50, dtype=torch.uint8)
            class_map(logits, torch.empty_like(a), a, temperature=t)
            class_map(bigger, torch.empty_like(b), b, temperature=t)
            assert torch.all(b >= a)
        if k == 2:  # one margin per pixel: the order of the pixels is kept
            order = torch.argsort((logits[:, 1] - logits[:, 0]).flatten())
            for p in probs:
                assert torch.all(torch.diff(p.flatten()[order]) >= 0)


def write_frames(folder: Path, n: int, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(8, size - 8, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(20, 60)] = 255
        image = (80 + mask // 4 + rng.normal(0, 12, mask.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")
    return folder


@pytest.mark.slow
def test_training_calibrates_the_best_checkpoint_and_an_over_confident_copy(
    tmp_path: Path,
) -> None:
    data = pairs(
        write_frames(tmp_path / "d", 6, 0),
        codes=["background", "crystal"],
        crop_size=64,
        batch_size=4,
        valid_fraction=0.34,
        seed=1,
    )
    learner = unet_learner(
        data,
        encoder=TINY,
        init="none",
        decoder_channels=TINY_DEC,
        progress=False,
        output_dir=tmp_path / "m",
        min_steps_per_epoch=6,
    )
    learner.fit_one_cycle(2, 1e-2)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    recorded = meta["calibration"]
    assert recorded["frames"] == len(data.valid_items) == 2
    assert recorded["nll_after"] <= recorded["nll_before"]
    engine = Segmenter.from_checkpoint(tmp_path / "m", settings=CPU)
    assert engine.temperature == pytest.approx(recorded["temperature"])
    assert engine.describe()["temperature"] == engine.temperature
    # an over-confident copy: the same network with its logits multiplied by 5
    model = engine.network
    with torch.no_grad():
        for p in model.segmentation_head.parameters():
            p.mul_(5.0)
    sure = Segmenter(model, engine.spec, settings=CPU)
    valid = [data.load(item) for item in data.valid_items]
    fitted = calibrate_frames(sure, valid)
    assert fitted.temperature > 1.0
    assert fitted.temperature == pytest.approx(5 * recorded["temperature"], rel=0.05)
    # on frames used neither for training nor for calibration: better calibrated
    held_out = pairs(
        write_frames(tmp_path / "h", 3, 7), codes=["background", "crystal"], valid_fraction=0
    )
    frames = [held_out.load(item) for item in held_out.train_items]
    ece = {}
    for t in (1.0, fitted.temperature):
        calibrated = Segmenter(model, engine.spec, settings=CPU, temperature=t)
        probs, truths = [], []
        for image, classes in frames:
            mask, prob = calibrated.predict(image[None], probability=True)
            probs.append(prob[0].ravel() / 255.0)
            truths.append(classes.ravel() > 0)
        ece[t] = expected_calibration_error(np.concatenate(probs), np.concatenate(truths))
        masks = mask
    assert ece[fitted.temperature] < ece[1.0]
    assert np.array_equal(masks, sure.predict(frames[-1][0][None]))


def test_checkpoints_without_calibration_use_one_and_bad_ones_are_refused(
    tmp_path: Path,
) -> None:
    from crystalseg.models import build_model, save_checkpoint
    from crystalseg.models.checkpoint import ModelSpec, update_checkpoint_meta

    spec = ModelSpec(encoder=TINY, codes=("background", "crystal"), decoder_channels=TINY_DEC)
    save_checkpoint(
        tmp_path / "c", build_model(spec), spec, training={}, metrics=[], data_fingerprint="x"
    )
    assert Segmenter.from_checkpoint(tmp_path / "c", settings=CPU).temperature == 1.0
    update_checkpoint_meta(tmp_path / "c", {"calibration": {"temperature": -2}})
    with pytest.raises(CheckpointError, match="calibration temperature -2"):
        Segmenter.from_checkpoint(tmp_path / "c", settings=CPU)
    with pytest.raises(CheckpointError, match="without its weights"):
        update_checkpoint_meta(tmp_path / "c", {"weights": {}})
