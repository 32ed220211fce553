"""Fine-tuning the bundled model against training from scratch, on images it never saw.

The seed recipe (3 epochs, max lr 1e-3, a few dozen annotated frames) works in
fastai because it starts from ImageNet weights; offline and from scratch it fails.
``crystalseg train`` starts from the bundled crystal model instead. This script
shows the difference on frames made by a *different renderer* than the one the
bundled model was trained on (``crystalseg.synth``): rounded, spherulite-like
particles (ellipses, a habit absent from the training data), bright on a dark,
textured background (reflected light), with their own blur and noise. The masks
are stored 0/255 as BMP, as in the seed tutorial.

Both runs use ``train_model`` (what ``crystalseg train`` calls) with the same data,
split, seed and schedule; only ``init`` differs. Also reported: the bundled model's
foreground IoU on the validation images before any training (zero-shot).

Prints JSON. Usage: ``python benchmarks/finetune.py [--images 40] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.draw import ellipse


def render_pairs(folder: Path, n: int, size: int = 256, seed: int = 7) -> None:
    """Write ``n`` image/mask pairs (``i.bmp``, ``i_mask.bmp`` with 0/255) of ellipses."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((size, size), bool)
        signal = np.zeros((size, size))
        for _ in range(rng.integers(4, 12)):
            r, c = rng.uniform(0, size, 2)
            a, b = rng.uniform(6, 28), rng.uniform(5, 20)
            rr, cc = ellipse(r, c, a, b, shape=mask.shape, rotation=rng.uniform(0, np.pi))
            mask[rr, cc] = True
            yy, xx = rr - r, cc - c
            # brighter centre, like a spherulite in reflected light
            signal[rr, cc] = np.maximum(
                signal[rr, cc], 0.6 + 0.4 * np.exp(-(yy**2 + xx**2) / (2 * (0.5 * a) ** 2))
            )
        background = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 12)
        background = 0.15 + 0.05 * background / (np.abs(background).max() + 1e-9)
        image = background + 0.5 * ndi.gaussian_filter(signal, rng.uniform(0.7, 1.8))
        image += rng.normal(0, 0.02, image.shape)
        image8 = np.clip(image * 255, 0, 255).astype(np.uint8)
        Image.fromarray(image8).save(folder / f"{i}.bmp")
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{i}_mask.bmp")


def zero_shot_iou(folder: Path, names: list[str]) -> float:
    from crystalseg.segment import load_segmenter

    segmenter = load_segmenter(None)
    inter = union = 0
    for name in names:
        image = np.asarray(Image.open(folder / f"{name}.bmp"))
        truth = np.asarray(Image.open(folder / f"{name}_mask.bmp")) > 0
        pred = segmenter.predict(image[None])[0] > 0
        inter += np.count_nonzero(pred & truth)
        union += np.count_nonzero(pred | truth)
    return inter / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    from crystalseg.train import TrainSettings, train_model

    result: dict = {"images": args.images, "epochs": args.epochs, "lr": args.lr, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs"
        render_pairs(pairs, args.images)
        for init in ("default", "none"):
            t0 = time.perf_counter()
            out = train_model(
                TrainSettings.from_flat(
                    data=(pairs,),
                    codes=("background", "crystal"),
                    output_dir=Path(tmp) / f"model-{init}",
                    init=init,
                    epochs=args.epochs,
                    lr=args.lr,
                    crop_size=256,
                    progress=False,
                    seed=0,
                )
            )
            result["runs"][init] = {
                "valid_foreground_iou_per_epoch": [h.get("foreground_iou") for h in out.history],
                "seconds": time.perf_counter() - t0,
            }
            valid_names = [item.name for item in out.learner.data.valid_items]
        result["bundled_model_zero_shot_foreground_iou"] = zero_shot_iou(
            pairs, [Path(n).stem for n in valid_names]
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
