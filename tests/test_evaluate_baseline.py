"""``evaluate`` beside a baseline: both models scored on the same frames, and a plain
sentence for every reading the model measures worse than the one it started from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystalseg.classes import class_mask_from_labels
from crystalseg.evaluate import evaluate_model
from crystalseg.measure.scoring import particle_score, pool_particle_scores, worse_sizes
from crystalseg.models import ModelSpec

CODES = ("background", "crystal")
CENTRES = [(30, 30), (30, 90), (30, 150), (100, 30), (100, 90), (100, 150)]


def discs(radius: float, keep: list[int] | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:130, :180]
    labels = np.zeros((130, 180), np.int32)
    for k, (cy, cx) in enumerate(CENTRES, start=1):
        if keep is None or k in keep:
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


class SetMasks:
    """An engine whose class map is a set one (what a model would draw), for checking
    what evaluate reports about known errors."""

    def __init__(self, labels: np.ndarray) -> None:
        self.spec = ModelSpec(encoder="resnet18", codes=CODES)
        self.mask = class_mask_from_labels(labels, CODES).astype(np.uint8)

    def predict(self, frames: np.ndarray, probability: bool = False):
        mask = self.mask[None]
        return (mask, np.where(mask > 0, 255, 0).astype(np.uint8)) if probability else mask


def test_a_model_with_better_pixels_and_worse_sizes_is_called_worse(tmp_path: Path) -> None:
    truth = discs(8)
    folder = tmp_path / "pairs"
    folder.mkdir()
    Image.fromarray((60 + 80 * (truth > 0)).astype(np.uint8)).save(folder / "f.png")
    Image.fromarray(truth.astype(np.uint16)).save(folder / "f_mask.png")
    grown = SetMasks(discs(10))  # every crystal drawn 2 px too large all round
    missing = SetMasks(discs(8, keep=[1, 3, 5]))  # exact outlines, half the crystals
    ev = evaluate_model(folder, model=grown, instances=True, baseline=missing)
    assert ev.baseline is not None
    table = ev.comparison()
    assert table is not None
    iou = table["fg_iou_pooled"]
    assert iou["model"] == pytest.approx((8 / 10) ** 2, abs=0.03)
    assert iou["model"] > iou["baseline"] == pytest.approx(0.5, abs=0.01)
    d50 = table["d50_error_median_abs"]
    assert d50["model"] == pytest.approx(0.25, abs=0.03) and d50["baseline"] < 0.01
    assert table["f1_pooled"]["model"] == 1.0
    assert table["f1_pooled"]["baseline"] == pytest.approx(2 * 3 / 9)
    # pixels and particles got better, the sizes worse: said once, plainly
    assert ev.verdicts == (
        f"the model measures D50 worse than the baseline model on these frames "
        f"({100 * d50['model']:.1f} % vs {100 * d50['baseline']:.1f} %)",
    )
    document = ev.to_dict()
    assert document["verdicts"] == list(ev.verdicts)
    assert document["baseline"]["summary"]["d50_error_median_abs"] == d50["baseline"]
    json.dumps(document)
    # the other way round nothing is worse in D50, but the count and the F1 are
    back = evaluate_model(folder, model=missing, instances=True, baseline=grown)
    assert [v.split(" worse")[0] for v in back.verdicts] == [
        "the model measures the count",
        "the model measures the particles (matched F1)",
    ]
    assert evaluate_model(folder, model=grown, instances=True, baseline=None).baseline is None


def test_particle_score_and_pooling() -> None:
    assert particle_score(0.82, -0.15, 0.21) == pytest.approx(0.46)
    assert particle_score(0.5, 3.0, float("inf")) == pytest.approx(-1.5)  # capped at 1 each
    rows = [
        {
            "_matched": 8,
            "_true": 10,
            "_pred": 9,
            "n_true": 10,
            "count_error": -0.1,
            "d50_error": 0.05,
        },
        {
            "_matched": 0,
            "_true": 2,
            "_pred": 0,
            "n_true": 2,
            "count_error": -1.0,
            "d50_error": float("nan"),
        },  # nothing counted: the D50 is wholly wrong
        {
            "_matched": 0,
            "_true": 0,
            "_pred": 0,
            "n_true": 0,
            "count_error": float("nan"),
            "d50_error": float("nan"),
        },  # nothing there, nothing found: not scored
    ]
    pooled = pool_particle_scores(rows)
    assert pooled["instance_f1"] == pytest.approx(16 / 21)
    assert pooled["count_error"] == pytest.approx(0.55)
    assert pooled["d50_error"] == pytest.approx(0.525)
    assert pooled["particle_frames"] == 2
    assert pooled["particle_score"] == pytest.approx(16 / 21 - 0.55 - 0.525)
    # half a percentage point is rounding, not worse
    assert worse_sizes({"d50_error": 0.104}, {"d50_error": 0.1}) == []
    assert worse_sizes({"d50_error": -0.21}, {"d50_error": 0.07}) == [
        "the fine-tuned model measures D50 worse than its starting model on these frames "
        "(21.0 % vs 7.0 %)"
    ]
