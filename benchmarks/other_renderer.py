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

Per look and model, the scores of ``crystalseg evaluate``
(:func:`crystalseg.evaluate.score_frame`, default measurement settings but no
confidence filter unless ``--min-confidence C`` asks for it, with the model's
probability, as ``crystalseg measure`` does by default at 0.8): foreground IoU pooled over frames,
matched particle F1 at IoU 0.5, the median relative error of the count and of the
number-weighted D50 (ECD) of the particles not cut by the frame edge, the mean signed
D50 error and the mean outline offset (px; both positive = sizes too large). Baseline
in the same run: the same measurement on the true class mask for the model's classes.

``--magnification M`` draws the same scenes M times larger, edge bands and blur
included (the same optics on finer pixels, or a stronger objective), and ``--resize F``
runs the models with ``EngineSettings(resize=F)``, the engine's answer to it.
``--motion-blur L`` smears every frame along a line of L px (crystals moving during
the exposure, as in a stirred vessel). ``--jpeg Q`` saves and reloads every frame as
a JPEG of quality Q (the 8x8 block artefacts of recordings exported lossy).

Prints one JSON document. Usage::

    python benchmarks/other_renderer.py [--models default DIR ...] [--n-frames 12]
        [--first-seed 1000] [--looks ...] [--no-trim-boundary]
        [--magnification 4 --resize 0.5] [--motion-blur 9] [--jpeg 50]
        [--min-confidence 0.8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.draw import polygon

from crystalseg.classes import class_mask_from_labels
from crystalseg.evaluate import score_frame, summarize_scores
from crystalseg.measure import MeasureSettings
from crystalseg.segment import EngineSettings, load_segmenter

LOOKS = ("bright-field", "low-contrast", "absorbing", "blurred", "dark-field")


def render(
    seed: int, look: str, size: int = 512, magnification: float = 1.0, motion_px: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One frame (uint8) and its instance labels (int32) in the given look.

    ``magnification`` scales the crystals' lengths, the edge band's width and the blur
    (the same optics imaged on finer pixels); 1 draws the same frames as before.
    ``motion_px`` smears the image along a line of that length at an angle drawn from
    the seed (a moving suspension under too long an exposure), before the noise."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    n = 0
    for _ in range(rng.integers(8, 30)):
        length = rng.uniform(8, 70) * magnification
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
        if len(rr) < 15 * magnification**2 or (labels[rr, cc] > 0).mean() > 0.2:
            continue  # too small, or would hide much of another crystal
        n += 1
        labels[rr, cc] = n
    yy, xx = np.mgrid[:size, :size] / size
    ground = 0.7 + 0.1 * rng.uniform(-1, 1) * (yy - 0.5) + 0.1 * rng.uniform(-1, 1) * (xx - 0.5)
    ground *= 1 - 0.25 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    amp, edge_px, body = rng.uniform(0.3, 0.7), rng.uniform(0.8, 2.0), rng.uniform(0.85, 1.02)
    edge_px *= magnification
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
    sigma = magnification * (rng.uniform(2.0, 3.5) if look == "blurred" else rng.uniform(0.5, 1.5))
    image = ndi.gaussian_filter(ground * transmission, sigma)
    if motion_px > 0:  # its own random stream: the frames are otherwise unchanged
        angle = np.random.default_rng([seed, 1]).uniform(0, 180)
        n = int(np.ceil(motion_px)) | 1
        kernel = np.zeros((n, n))
        kernel[n // 2, :] = 1.0
        kernel = np.clip(ndi.rotate(kernel, angle, reshape=False, order=1), 0, None)
        image = ndi.convolve(image, kernel / kernel.sum(), mode="reflect")
    if look == "dark-field":
        image = 0.1 + 1.2 * (ground - image)
    photons = rng.uniform(300, 3000)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image = image + rng.normal(0, 0.01, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8), labels


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (uint8) saved as a JPEG of ``quality`` and read back."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def _scores(frames, masks, codes, settings: MeasureSettings, probabilities=None) -> dict:
    """Per-look figures of :func:`crystalseg.evaluate.score_frame`, the scores of
    ``crystalseg evaluate`` (``probabilities``: the model's, for the confidence filter)."""
    rows, inter, union = [], 0, 0
    probabilities = probabilities or [None] * len(masks)
    for (image, truth), mask, prob in zip(frames, masks, probabilities, strict=True):
        row = score_frame(
            mask, truth, image=image, probability=prob, codes=codes, settings=settings
        )
        inter, union = inter + row.pop("_inter"), union + row.pop("_union")
        rows.append(row)
    s = summarize_scores(pd.DataFrame(rows), pooled=(inter, union))
    keys = ("fg_iou_pooled", "f1_mean", "count_error_median_abs", "d50_error_median_abs")
    out = {k.replace("_mean", "").replace("error", "err"): round(s[k], 4) for k in keys}
    out["d50_err_mean"] = round(s["d50_error_mean"], 4)
    out["outline_offset_px"] = round(s["outline_offset_px"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default"], help="'default' or DIRs")
    parser.add_argument("--n-frames", dest="frames", type=int, default=12, help="frames per look")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=1000,
        help="seed of the first frame of a look (1000: the frames that chose models so far)",
    )
    parser.add_argument("--looks", nargs="+", choices=LOOKS, default=list(LOOKS))
    parser.add_argument(
        "--magnification",
        type=float,
        default=1.0,
        help="scale crystal lengths, edge band width and blur by this (high magnification)",
    )
    parser.add_argument(
        "--motion-blur",
        type=float,
        default=0.0,
        help="smear each frame along a line of this many px (moving crystals)",
    )
    parser.add_argument(
        "--jpeg",
        type=int,
        default=None,
        choices=range(1, 101),
        metavar="Q",
        help="save and reload each frame as a JPEG of this quality (1-100)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="confidence filter on the model's probability (measure's default: 0.8)",
    )
    parser.add_argument(
        "--resize",
        type=lambda v: v if v == "auto" else float(v),
        default=1.0,
        help="engine resize factor, or auto: one factor a look, chosen on its first 6 frames",
    )
    parser.add_argument(
        "--no-trim-boundary", action="store_true", help="MeasureSettings.trim_boundary off"
    )
    args = parser.parse_args()
    settings = MeasureSettings(
        trim_boundary=not args.no_trim_boundary, min_confidence=args.min_confidence
    )
    engine = EngineSettings(resize=args.resize)
    segmenters = {
        m: load_segmenter(None if m == "default" else m, None, engine) for m in args.models
    }
    result: dict = {
        "frames_per_look": args.frames,
        "first_seed": args.first_seed,
        "size": 512,
        "trim_boundary": settings.trim_boundary,
        "magnification": args.magnification,
        "resize": args.resize,
        "motion_blur_px": args.motion_blur,
        "jpeg_quality": args.jpeg,
        "min_confidence": args.min_confidence,
        "looks": {},
    }
    for look in args.looks:
        frames = [
            render(
                args.first_seed + k,
                look,
                magnification=args.magnification,
                motion_px=args.motion_blur,
            )
            for k in range(args.frames)
        ]
        if args.jpeg is not None:
            frames = [(jpeg(image, args.jpeg), truth) for image, truth in frames]
        row: dict = {}
        for name, seg in segmenters.items():
            codes = tuple(seg.spec.codes)
            seg = seg.resolved([image for image, _ in frames[:6]])  # auto: one factor a look
            if args.min_confidence is None:
                masks, probs = [seg.predict(image[None])[0] for image, _ in frames], None
            else:
                pairs = [seg.predict(image[None], probability=True) for image, _ in frames]
                masks, probs = [m[0] for m, _ in pairs], [p[0] for _, p in pairs]
            row[name] = _scores(frames, masks, codes, settings, probs)
            row[name]["resize"] = seg.settings.resize
            truth_masks = [class_mask_from_labels(truth, codes) for _, truth in frames]
            row[name]["truth_mask"] = _scores(frames, truth_masks, codes, settings)
        result["looks"][look] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
