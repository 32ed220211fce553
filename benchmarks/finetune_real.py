"""Fine-tuning on real annotated images: the shared CC0 dsb2018 set (touching nuclei).

Everything a user would run, with default settings:

1. zero-shot: the bundled model on ``test/`` (``evaluate_model``, ``--instances``);
2. fine-tuned: ``train_model`` on ``train/`` (``--instances --epochs 3``, the default
   codes of ``--instances``: background, crystal, boundary), then ``evaluate_model`` on
   ``test/`` with its starting model (the bundled one) side by side;
3. the confidence filter (default ``min_confidence`` 0.8) on ``test/``: pooled
   precision and recall of the fine-tuned model with its calibration (the temperature
   fitted on its validation frames, drawn from ``train/``) and without it (T = 1), and
   with the filter off;
4. ``--one-frame NAME``: train on the top half of one ``train/`` image only (the
   held-out band of that half validates), score on its bottom half, beside zero-shot.

``test/`` is only scored, never used to choose anything. Prints JSON.
Usage: ``python benchmarks/finetune_real.py [--data ../shared/data/dsb2018] [--one-frame NAME]``
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from crystalseg.evaluate import COMPARED_COLUMNS, Evaluation, evaluate_model
from crystalseg.measure import MeasureSettings
from crystalseg.segment import EngineSettings, Segmenter
from crystalseg.train import TrainSettings, train_model

CODES = ("background", "crystal", "boundary")


def figures(ev: Evaluation) -> dict:
    keep = (*COMPARED_COLUMNS, "frames", "f1_mean", "count_error_mean", "d50_error_mean")
    return {k: None if ev.summary.get(k) is None else round(ev.summary[k], 4) for k in keep}


def finetune(data: Path, out: Path, epochs: int) -> dict:
    t0 = time.perf_counter()
    result = train_model(
        TrainSettings.from_flat(
            data=(data / "train",),
            codes=CODES,
            instances=True,
            epochs=epochs,
            output_dir=out,
            progress=False,
        )
    )
    seconds = time.perf_counter() - t0
    learner = result.learner
    meta = json.loads((out / "model.json").read_text())
    return {
        "train_seconds": round(seconds, 1),
        "steps": len(learner.lrs),
        "schedule": learner.training_info().get("plan"),
        "history": [
            {
                k: r.get(k)
                for k in (
                    "epoch",
                    "foreground_iou",
                    "instance_f1",
                    "count_error",
                    "d50_error",
                    "particle_score",
                )
            }
            for r in learner.history
        ],
        "start_validation": {
            k: (learner.start_validation or {}).get(k)
            for k in ("foreground_iou", "instance_f1", "count_error", "d50_error")
        },
        "worse_than_start_on_validation": learner.worse_than_start,
        "calibration": meta.get("calibration"),
    }


def confidence_check(data: Path, model: Path) -> dict:
    """Pooled precision/recall on test/ at the default threshold without calibration
    (T = 1) and with the filter off; the calibrated figures are those of ``test``."""
    out = {}
    for name, temperature, settings in (
        ("uncalibrated_filter_0.8", 1.0, MeasureSettings()),
        ("no_filter", 1.0, replace(MeasureSettings(), min_confidence=None)),
    ):
        seg = Segmenter.from_checkpoint(model, settings=EngineSettings(resize="auto"))
        if temperature is not None:
            seg.temperature = temperature
        ev = evaluate_model(
            data / "test", model=seg, instances=True, settings=settings, baseline=None
        )
        out[name] = {"temperature": seg.temperature, **figures(ev)}
    return out


def one_frame(data: Path, name: str, work: Path, epochs: int) -> dict:
    image = np.asarray(Image.open(data / "train" / f"{name}.png"))
    mask = np.asarray(Image.open(data / "train" / f"{name}_mask.png"))
    half = image.shape[0] // 2
    for part, rows in (("top", slice(0, half)), ("bottom", slice(half, None))):
        (work / part).mkdir(parents=True)
        Image.fromarray(image[rows]).save(work / part / f"{name}_{part}.png")
        Image.fromarray(mask[rows]).save(work / part / f"{name}_{part}_mask.png")
    zero = evaluate_model(work / "bottom", instances=True, baseline=None)
    t0 = time.perf_counter()
    result = train_model(
        TrainSettings.from_flat(
            data=(work / "top",),
            codes=CODES,
            instances=True,
            epochs=epochs,
            output_dir=work / "model",
            progress=False,
        )
    )
    seconds = time.perf_counter() - t0
    tuned = evaluate_model(work / "bottom", model=work / "model", instances=True, baseline=None)
    return {
        "image": name,
        "train_on": f"top half {image.shape[1]}x{half}",
        "score_on": "bottom half",
        "train_seconds": round(seconds, 1),
        "steps": len(result.learner.lrs),
        "schedule": result.learner.training_info().get("plan"),
        "zero_shot": figures(zero),
        "fine_tuned": figures(tuned),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--one-frame", default=None, help="NAME of a train/ image (no suffix)")
    ap.add_argument("--work", type=Path, default=None, help="keep the models here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report: dict = {"data": str(args.data), "epochs": args.epochs}

    def stage(key: str, value: dict) -> None:  # each stage as soon as it is done
        report[key] = value
        print(json.dumps({key: value}), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if args.one_frame:
            stage("one_frame", one_frame(args.data, args.one_frame, work, args.epochs))
            return
        stage("fine_tune", finetune(args.data, work / "ft", args.epochs))
        ev = evaluate_model(args.data / "test", model=work / "ft", instances=True)
        stage(
            "test",
            {
                "zero_shot": figures(ev.baseline) if ev.baseline is not None else None,
                "fine_tuned": figures(ev),
                "verdicts": list(ev.verdicts),
            },
        )
        stage("confidence", confidence_check(args.data, work / "ft"))


if __name__ == "__main__":
    main()
