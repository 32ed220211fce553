"""Calibrated confidence: temperature scaling of a trained model's logits.

The measurement drops particles whose mean foreground probability is under
``min_confidence`` (0.8 by default), a filter that removed mostly false detections on
real images with the bundled model. A model fine-tuned on a few frames is often
over-confident (its probabilities near 0 and 1 whatever it gets right), and the same
threshold then keeps its false particles. Temperature scaling (Guo et al. 2017, "On
calibration of modern neural networks") divides the logits by one number T fitted on
the validation frames by minimising the negative log-likelihood of their true classes:
T > 1 softens an over-confident model, T < 1 sharpens an under-confident one. Dividing
by a positive number keeps the order of the logits, so the class map and the ranking of
the probabilities are unchanged: only what a probability says is corrected.

The temperature is recorded in the checkpoint's ``model.json`` (``calibration``) and
applied by the inference engine when it computes probabilities
(:class:`~crystalseg.segment.Segmenter`); checkpoints without one use T = 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from crystalseg.errors import ConfigError

log = logging.getLogger(__name__)

#: Temperatures searched (as 1/T, on which the NLL is convex): 0.05 to 20.
TEMPERATURE_RANGE = (0.05, 20.0)
#: Pixels sampled from each validation frame for the fit (all when fewer).
PIXELS_PER_FRAME = 100_000
#: Bins of the expected calibration error.
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it changed on the frames it was fitted on.

    Attributes
    ----------
    temperature : float
        Logits are divided by it before the softmax (1: unchanged).
    frames, pixels : int
        Validation frames and pixels (sampled) it was fitted on.
    nll_before, nll_after : float
        Mean negative log-likelihood of the true classes at T = 1 and at ``temperature``.
    ece_before, ece_after : float
        Expected calibration error of the foreground probability (1 - p(background),
        what the confidence filter reads), :data:`ECE_BINS` bins, at T = 1 and after.
    """

    temperature: float
    frames: int
    pixels: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_dict(self) -> dict[str, Any]:
        """What ``model.json`` records under ``calibration``."""
        return {"method": "temperature scaling (NLL on validation frames)", **asdict(self)}

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"temperature {self.temperature:.3f} on {self.frames} validation frame"
            f"{'s' if self.frames != 1 else ''} (NLL {self.nll_before:.4f} -> "
            f"{self.nll_after:.4f}, foreground ECE {self.ece_before:.4f} -> {self.ece_after:.4f})"
        )


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` (N,) under ``logits`` (N, K) / T."""
    logp = torch.log_softmax(logits.double() / temperature, dim=1)
    return float(-logp.gather(1, targets.long()[:, None]).mean())


def foreground_probability(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """1 - p(background) of ``logits`` (N, K) at ``temperature``: what the engine stores."""
    return 1.0 - torch.softmax(logits.double() / temperature, dim=1)[:, 0]


def expected_calibration_error(
    probability: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, bins: int = ECE_BINS
) -> float:
    """Expected calibration error of a binary probability: the mean over equal-width
    probability bins, weighted by their pixels, of |mean probability - observed rate|.

    Parameters
    ----------
    probability : (N,) floats in [0, 1]
    truth : (N,) bool, the event (here: the pixel is a crystal)
    bins : number of bins
    """
    p = np.asarray(probability, dtype=np.float64).ravel()
    y = np.asarray(truth, dtype=np.float64).ravel()
    if p.size == 0:
        return math.nan
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, p, bins) - np.bincount(which, y, bins))
    return float(gap.sum() / n.sum())


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature that minimises the NLL of ``targets`` (N,) under ``logits`` (N, K).

    The NLL is convex in the inverse temperature, so a golden-section search over
    :data:`TEMPERATURE_RANGE` finds its minimum (to 1e-4 relative) without a gradient.

    Raises
    ------
    ConfigError
        No pixels, or logits and targets of different lengths.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1] or logits.shape[0] == 0:
        raise ConfigError(
            f"calibration needs logits (N, K) and targets (N,) with N > 0, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    z = logits.double()
    y = targets.long()[:, None]

    def cost(beta: float) -> float:
        return float(-torch.log_softmax(z * beta, dim=1).gather(1, y).mean())

    lo, hi = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]
    g = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = cost(a), cost(b)
    while hi - lo > 1e-4 * (lo + hi):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = cost(b)
    return float(1.0 / ((lo + hi) / 2))


def sample_pixels(
    logits: np.ndarray, classes: np.ndarray, rng: np.random.Generator, n: int = PIXELS_PER_FRAME
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` random pixels of one frame: logits (n, K) and true classes (n,).

    Parameters
    ----------
    logits : (1, K, y, x) or (K, y, x) float
    classes : (y, x) integer, the true class of each pixel
    """
    z = np.asarray(logits, dtype=np.float32).reshape(-1, *classes.shape)
    flat = z.reshape(z.shape[0], -1)
    idx = np.arange(classes.size)
    if idx.size > n:
        idx = rng.choice(idx.size, n, replace=False)
    return torch.from_numpy(flat[:, idx].T.copy()), torch.from_numpy(
        classes.ravel()[idx].astype(np.int64)
    )


def calibrate_frames(
    engine: Any, frames: Iterable[tuple[np.ndarray, np.ndarray]], *, seed: int = 0
) -> Calibration:
    """Fit the temperature of ``engine``'s model on annotated frames.

    Parameters
    ----------
    engine : Segmenter (or anything with ``predict_logits(frames (1, y, x[, 3]))``)
        Its logits are taken as the network makes them, before any temperature.
    frames : iterable of (image (y, x[, 3]), true class mask (y, x))
        The validation frames, never the ones trained on.
    seed : fixes the pixels sampled

    Raises
    ------
    ConfigError
        No frames.
    """
    rng = np.random.default_rng(seed)
    zs, ys = [], []
    for image, classes in frames:
        logits = engine.predict_logits(np.asarray(image)[None])
        z, y = sample_pixels(logits, np.asarray(classes), rng)
        zs.append(z)
        ys.append(y)
    if not zs:
        raise ConfigError("no validation frames to calibrate the probabilities on")
    z, y = torch.cat(zs), torch.cat(ys)
    t = fit_temperature(z, y)
    fg = (y > 0).numpy()
    return Calibration(
        temperature=t,
        frames=len(zs),
        pixels=int(y.numel()),
        nll_before=nll(z, y),
        nll_after=nll(z, y, t),
        ece_before=expected_calibration_error(foreground_probability(z).numpy(), fg),
        ece_after=expected_calibration_error(foreground_probability(z, t).numpy(), fg),
    )
