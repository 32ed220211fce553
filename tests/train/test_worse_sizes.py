"""Fine-tuning that improves pixels and makes sizes worse is reported by train and
evaluate: a starting model trained (by our code) on frames where only the bright
crystals were annotated, fine-tuned on frames annotated with a thick brush (every
crystal 2 px too large all round), validated and scored on carefully annotated frames.
It learns to find the faint crystals too (pixel IoU rises) and to draw every crystal
too large (D50 error rises)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage.segmentation import expand_labels

from crystalseg.cli import cli
from crystalseg.evaluate import evaluate_model
from crystalseg.summary import format_training
from crystalseg.train import TrainSettings, train_model

TINY = "tu-test_resnet"
TINY_DEC = (16, 16, 8, 8, 8)
CODES = ("background", "crystal")


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, labels of all crystals (r = 10 px, 9 on a grid, apart) and of the bright ones."""
    yy, xx = np.mgrid[:128, :128]
    labels = np.zeros((128, 128), np.int32)
    bright = np.zeros((128, 128), bool)
    image = np.full((128, 128), 60.0)
    k = 0
    for cy in (24, 64, 104):
        for cx in (24, 64, 104):
            k += 1
            y0, x0 = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
            disc = (yy - y0) ** 2 + (xx - x0) ** 2 <= 10**2
            labels[disc] = k
            is_bright = rng.random() < 0.5
            image[disc] += 90 if is_bright else 35
            bright |= disc & is_bright
    image = (image + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
    return image, labels, np.where(bright, labels, 0)


def save(folder: Path, name: str, image: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(labels.astype(np.uint16)).save(folder / f"{name}_mask.png")


def settings(data: Path, out: Path, **kw) -> TrainSettings:
    return TrainSettings.from_flat(
        data=(data,),
        codes=CODES,
        instances=True,
        encoder=TINY,
        decoder_channels=TINY_DEC,
        epochs=3,
        lr=1e-2,
        crop_size=64,
        batch_size=8,
        min_steps_per_epoch=12,
        output_dir=out,
        progress=False,
        **kw,
    )


@pytest.mark.slow
def test_train_and_evaluate_say_that_fine_tuning_made_the_sizes_worse(
    tmp_path: Path, caplog
) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        image, _, bright = frame(rng)
        save(tmp_path / "bright", f"b{i}", image, bright)
    for i in range(6):
        image, labels, _ = frame(rng)
        save(tmp_path / "thick", f"t{i}", image, expand_labels(labels, 2))
    image_careful, labels_careful, _ = frame(rng)
    save(tmp_path / "thick", "careful", image_careful, labels_careful)

    train_model(settings(tmp_path / "bright", tmp_path / "start", init="none"))
    with caplog.at_level(logging.INFO, logger="crystalseg"):
        tuned = train_model(
            settings(
                tmp_path / "thick",
                tmp_path / "tuned",
                init=str(tmp_path / "start"),
                valid=("careful.png",),
            )
        )
    learner = tuned.learner
    start, best = learner.start_validation, learner.best_record()
    assert start is not None and best is not None
    assert best["foreground_iou"] > start["foreground_iou"]
    assert best["d50_error"] > start["d50_error"] + 0.1
    said = [s for s in learner.worse_than_start if "measures D50 worse" in s]
    assert said and said[0].startswith(
        "the fine-tuned model measures D50 worse than its starting model on the validation frames"
    )
    assert said[0] in caplog.text
    assert "starting model, epoch   0" in caplog.text
    meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert said[0] in meta["start_comparison"]["worse"]
    assert f"WARNING: {said[0]}" in format_training(tuned)  # what train prints at its end

    # evaluate on the carefully annotated frame (never trained on), at full size as
    # validation segments: the starting model found from model.json, scored beside
    save(tmp_path / "careful", "careful", image_careful, labels_careful)
    ev = evaluate_model(tmp_path / "careful", model=tmp_path / "tuned", instances=True, resize=1.0)
    table = ev.comparison()
    assert table is not None
    assert ev.settings["baseline"] == str(tmp_path / "start")
    assert table["fg_iou_pooled"]["model"] > table["fg_iou_pooled"]["baseline"] + 0.05
    d50 = table["d50_error_median_abs"]
    sentence = (
        "the fine-tuned model measures D50 worse than its starting model on these frames "
        f"({100 * d50['model']:.1f} % vs {100 * d50['baseline']:.1f} %)"
    )
    assert sentence in ev.verdicts
    # the command prints both models side by side and the sentence
    args = [
        "evaluate",
        str(tmp_path / "careful"),
        "--model",
        str(tmp_path / "tuned"),
        "--resize",
        "1",
    ]
    result = CliRunner().invoke(cli, [*args, "--instances"])
    assert result.exit_code == 0, result.output
    assert f"beside {tmp_path / 'start'} on the same frames" in result.output
    assert f"WARNING: {sentence}" in result.output
    result = CliRunner().invoke(cli, [*args, "--instances", "--baseline", "none"])
    assert result.exit_code == 0 and "WARNING" not in result.output
