"""Zero-shot accuracy on frames from a renderer written apart from ``crystalseg.synth``.

The bundled model trains on ``crystalseg.synth`` runs only, so its held-out figures
(``benchmarks/accuracy.py``) share that renderer's idea of what a crystal looks
like. This script draws frames by a different, deliberately simple image model, as
a first check of how the model carries over to recordings it never saw:

- crystals are elongated hexagons (prism outlines) of 8-70 px, at any angle,
  touching or overlapping a little;
- light: each crystal transmits ``body`` of the light inside and darkens a band of
  ``width`` px along its edge by ``amp`` (refraction), on a background with a
  linear illumination gradient and vignetting; Gaussian blur, shot noise and read
  noise; 8-bit.

Five looks: ``bright-field`` (body 0.85-1.02, amp 0.3-0.7), ``low-contrast``
(nearly transparent, amp 0.08-0.2: at the noise level for some crystals),
``absorbing`` (body 0.3-0.6), ``blurred`` (sigma 2-3.5 px) and ``dark-field``
(the bright-field image inverted: bright edges on a dark ground).

Per look and model: foreground IoU pooled over frames, matched particle F1 at IoU
0.5 (:func:`~crystalseg.measure.instances.instance_scores`) of the measurement's
labels (default settings), and the median relative error of the count and of the
number-weighted D50 (ECD) of the particles not cut by the frame edge (and the mean
signed D50 error: positive = sizes too large). Baseline in
the same run: the same measurement on the true class mask for the model's classes.

Prints one JSON document. Usage::

    python benchmarks/other_renderer.py [--models default DIR ...] [--frames 12]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon

from crystalseg.classes import class_mask_from_labels
from crystalseg.measure import MeasureSettings
from crystalseg.measure.distributions import weighted_quantile
from crystalseg.measure.instances import instance_scores
from crystalseg.measure.run import label_mask_frame
from crystalseg.segment import load_segmenter

LOOKS = ("bright-field", "low-contrast", "absorbing", "blurred", "dark-field")


def render(seed: int, look: str, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One frame (uint8) and its instance labels (int32) in the given look."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    n = 0
    for _ in range(rng.integers(8, 30)):
        length = rng.uniform(8, 70)
        width = length / rng.uniform(1, 5)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size, 2)
        hexagon = np.array(
            [
                [-length / 2, 0],
                [-length / 2 + width / 2, width / 2],
                [length / 2 - width / 2, width / 2],
                [length / 2, 0],
                [length / 2 - width / 2, -width / 2],
                [-length / 2 + width / 2, -width / 2],
            ]
        )
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = hexagon @ turn.T
        rr, cc = polygon(cy + corners[:, 0], cx + corners[:, 1], labels.shape)
        if len(rr) < 15 or (labels[rr, cc] > 0).mean() > 0.2:
            continue  # too small, or would hide much of another crystal
        n += 1
        labels[rr, cc] = n
    yy, xx = np.mgrid[:size, :size] / size
    ground = 0.7 + 0.1 * rng.uniform(-1, 1) * (yy - 0.5) + 0.1 * rng.uniform(-1, 1) * (xx - 0.5)
    ground *= 1 - 0.25 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    amp, edge_px, body = rng.uniform(0.3, 0.7), rng.uniform(0.8, 2.0), rng.uniform(0.85, 1.02)
    if look == "low-contrast":
        amp, body = rng.uniform(0.08, 0.2), rng.uniform(0.97, 1.0)
    elif look == "absorbing":
        body = rng.uniform(0.3, 0.6)
    transmission = np.ones((size, size))
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box)
        inside = labels[box] == i
        depth = ndi.distance_transform_edt(inside)
        t = np.where(inside, body * (1 - amp * np.exp(-(((depth - 0.5) / edge_px) ** 2))), 1.0)
        transmission[box] = np.minimum(transmission[box], t)
    sigma = rng.uniform(2.0, 3.5) if look == "blurred" else rng.uniform(0.5, 1.5)
    image = ndi.gaussian_filter(ground * transmission, sigma)
    if look == "dark-field":
        image = 0.1 + 1.2 * (ground - image)
    photons = rng.uniform(300, 3000)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image = image + rng.normal(0, 0.01, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8), labels


def _psd(labels: np.ndarray, min_area: int) -> tuple[int, float]:
    """Count and number-weighted D50 (ECD, px) of the labels not cut by the frame edge."""
    area = np.bincount(labels.ravel())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = area >= min_area
    keep[0] = False
    keep[edge] = False
    ecd = 2 * np.sqrt(area[keep] / np.pi)
    return len(ecd), float(weighted_quantile(ecd, 0.5)[0]) if len(ecd) else float("nan")


def _scores(frames, masks, codes, settings: MeasureSettings) -> dict:
    inter = union = 0
    f1, count_err, d50_err = [], [], []
    for (_, truth), mask in zip(frames, masks, strict=True):
        inter += np.count_nonzero((mask > 0) & (truth > 0))
        union += np.count_nonzero((mask > 0) | (truth > 0))
        labels = label_mask_frame(mask, settings=settings, codes=codes)
        f1.append(instance_scores(labels, truth)["f1"])
        n_true, d50_true = _psd(truth, settings.min_area_px)
        n, d50 = _psd(labels, settings.min_area_px)
        if n_true:
            count_err.append(abs(n - n_true) / n_true)
            d50_err.append((d50 - d50_true) / d50_true if n else -1.0)
    return {
        "fg_iou_pooled": round(inter / union, 4),
        "f1": round(float(np.mean(f1)), 4),
        "count_err_median_abs": round(float(np.median(count_err)), 4),
        "d50_err_median_abs": round(float(np.median(np.abs(d50_err))), 4),
        "d50_err_mean": round(float(np.mean(d50_err)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default"], help="'default' or DIRs")
    parser.add_argument("--frames", type=int, default=12, help="frames per look")
    parser.add_argument("--looks", nargs="+", choices=LOOKS, default=list(LOOKS))
    args = parser.parse_args()
    settings = MeasureSettings()
    segmenters = {m: load_segmenter(None if m == "default" else m) for m in args.models}
    result: dict = {"frames_per_look": args.frames, "size": 512, "looks": {}}
    for look in args.looks:
        frames = [render(1000 + k, look) for k in range(args.frames)]
        row: dict = {}
        for name, seg in segmenters.items():
            codes = tuple(seg.spec.codes)
            masks = [seg.predict(image[None])[0] for image, _ in frames]
            row[name] = _scores(frames, masks, codes, settings)
            truth_masks = [class_mask_from_labels(truth, codes) for _, truth in frames]
            row[name]["truth_mask"] = _scores(frames, truth_masks, codes, settings)
        result["looks"][look] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
