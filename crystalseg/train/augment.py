"""Augmentation of training batches for microscopy, on the batch's device (kornia).

Geometric steps (flips, 90° rotations, small rotations and scalings, optionally a
strong zoom-in that mimics an oversampling camera) move image and mask together, the
mask resampled by nearest neighbour so classes stay classes; intensity steps
(brightness, contrast, gamma, blur, noise, optionally contrast inversion and uneven
illumination) touch the image only. Images are on the 0..1 scale, before the model's
mean/std normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast, get_args

import torch
from torch import nn

from crystalseg.errors import ConfigError

AugmentPreset = Literal["default", "strong", "strong-zoom", "strong-motion", "strong-jpeg", "none"]

#: Preset names accepted by :meth:`AugmentSettings.preset` (and ``train --augment``).
AUGMENT_PRESETS: tuple[str, ...] = get_args(AugmentPreset)


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges and probabilities of each augmentation (0 or an empty range turns one off).

    Attributes
    ----------
    flips : random horizontal and vertical flips
    rot90 : random multiples of 90° (exact, no interpolation)
    rotate_deg : small rotations up to ± this many degrees
    scale : (min, max) zoom factors of the small affine step
    affine_p : probability of the small rotation/scaling step
    brightness : additive shift up to ± this (0..1 scale)
    contrast, gamma : (min, max) factors
    intensity_p : probability of each of brightness, contrast and gamma
    blur_sigma : (min, max) Gaussian blur sigma in pixels (defocus)
    blur_p : probability of blur
    noise_std : standard deviation of additive Gaussian noise (0..1 scale)
    noise_p : probability of noise
    invert_p : probability of inverting contrast (dark crystals on bright ground and back)
    illumination_p : probability of an illumination gradient
    zoom_in : (min, max) factors of the strong zoom-in step, which enlarges a random
        part of the crop with bilinear interpolation *before* blur and noise: crystals,
        rims and blur all grow by the factor and the noise stays per pixel, as on a
        camera whose pixels are much finer than the optics resolve (high
        magnification). (1, 1) turns it off.
    zoom_in_p : probability of the zoom-in step
    motion_blur : (min, max) length in pixels of a straight motion-blur streak at a
        random angle (crystals carried past the camera during the exposure, common in
        in-line probes and flow cells), applied after Gaussian blur and before noise;
        the mask stays put. (1, 1) turns it off.
    motion_blur_p : probability of the motion-blur step
    jpeg_quality : (min, max) quality of a JPEG compression applied last, after the
        noise (recordings exported as JPEG or as lossy video: 8x8 block artefacts);
        kornia's differentiable codec, whose artefacts match a real JPEG encoder's
        closely. A grey image goes through it as equal R, G and B.
    jpeg_p : probability of the JPEG step
    """

    flips: bool = True
    rot90: bool = True
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.2)
    affine_p: float = 0.5
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.75, 1.33)
    gamma: tuple[float, float] = (0.75, 1.33)
    intensity_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    blur_p: float = 0.25
    noise_std: float = 0.03
    noise_p: float = 0.3
    invert_p: float = 0.0
    illumination_p: float = 0.0
    zoom_in: tuple[float, float] = (1.0, 1.0)
    zoom_in_p: float = 0.0
    motion_blur: tuple[float, float] = (1.0, 1.0)
    motion_blur_p: float = 0.0
    jpeg_quality: tuple[float, float] = (100.0, 100.0)
    jpeg_p: float = 0.0

    def __post_init__(self) -> None:
        names = ("affine_p", "intensity_p", "blur_p", "noise_p", "invert_p", "illumination_p")
        for name in (*names, "zoom_in_p", "motion_blur_p", "jpeg_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augmentation {name} must be a probability in [0, 1], got {p}")
        for name in (
            "scale",
            "contrast",
            "gamma",
            "blur_sigma",
            "zoom_in",
            "motion_blur",
            "jpeg_quality",
        ):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0.0 < lo <= hi:
                raise ConfigError(f"augmentation {name} must be (min, max) with 0 < min <= max")
            object.__setattr__(self, name, (lo, hi))
        if self.zoom_in[0] < 1.0:
            raise ConfigError(f"augmentation zoom_in must enlarge (min >= 1), got {self.zoom_in}")
        if self.motion_blur[0] < 1.0:
            raise ConfigError(
                f"augmentation motion_blur is a streak length in pixels (min >= 1), "
                f"got {self.motion_blur}"
            )
        if self.jpeg_quality[1] > 100.0:
            raise ConfigError(
                f"augmentation jpeg_quality must lie in (0, 100], got {self.jpeg_quality}"
            )
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ConfigError(f"rotate_deg must be in [0, 180], got {self.rotate_deg}")
        if not 0.0 <= self.brightness < 1.0:
            raise ConfigError(f"brightness must be in [0, 1), got {self.brightness}")
        if self.noise_std < 0:
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std}")

    @classmethod
    def preset(cls, name: AugmentPreset) -> AugmentSettings | None:
        """``"default"``, ``"strong"`` (wide appearance changes, for generalisation),
        ``"strong-zoom"`` (``"strong"`` plus a zoom-in by 1.5-4x on a quarter of the
        crops, for magnifications and oversampled cameras beyond the synthetic runs'
        zoom), ``"strong-motion"`` (``"strong"`` plus motion-blur streaks of 3-15 px on
        3 crops in 10, for flowing suspensions), ``"strong-jpeg"`` (``"strong"`` plus
        JPEG compression at quality 15-90 on 3 crops in 10, for lossy exports) or None
        (``"none"``)."""
        if name == "none":
            return None
        if name == "default":
            return cls()
        if name == "strong-zoom":
            return replace(
                cast(AugmentSettings, cls.preset("strong")), zoom_in=(1.5, 4.0), zoom_in_p=0.25
            )
        if name == "strong-motion":
            return replace(
                cast(AugmentSettings, cls.preset("strong")),
                motion_blur=(3.0, 15.0),
                motion_blur_p=0.3,
            )
        if name == "strong-jpeg":
            return replace(
                cast(AugmentSettings, cls.preset("strong")),
                jpeg_quality=(15.0, 90.0),
                jpeg_p=0.3,
            )
        if name == "strong":
            return cls(
                rotate_deg=30.0,
                scale=(0.7, 1.4),
                affine_p=0.6,
                brightness=0.2,
                contrast=(0.5, 1.8),
                gamma=(0.6, 1.6),
                intensity_p=0.7,
                blur_sigma=(0.1, 2.5),
                blur_p=0.35,
                noise_std=0.05,
                noise_p=0.5,
                invert_p=0.2,
                illumination_p=0.4,
            )
        raise ConfigError(f"augment must be one of {', '.join(AUGMENT_PRESETS)}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded in the checkpoint."""
        return asdict(self)


class Augmenter(nn.Module):
    """Applies :class:`AugmentSettings` to a batch; image and mask move together.

    ``forward(x, y)`` takes x (B, C, H, W) float on 0..1 and y (B, H, W) int64 class
    indices and returns both, same shapes, augmented. Randomness comes from torch's
    global generator, so ``torch.manual_seed`` makes it repeatable.
    """

    def __init__(self, settings: AugmentSettings) -> None:
        super().__init__()
        import kornia.augmentation as K

        s = settings
        self.settings = s
        geo: list[nn.Module] = []
        if s.flips:
            geo += [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
        if s.rot90:
            geo.append(K.RandomRotation90(times=(0, 3), p=1.0))
        if s.affine_p > 0 and (s.rotate_deg > 0 or s.scale != (1.0, 1.0)):
            geo.append(
                K.RandomAffine(
                    degrees=s.rotate_deg,
                    scale=s.scale,
                    padding_mode="reflection",
                    p=s.affine_p,
                )
            )
        if s.zoom_in_p > 0 and s.zoom_in != (1.0, 1.0):
            geo.append(
                K.RandomAffine(
                    degrees=0.0, scale=s.zoom_in, padding_mode="reflection", p=s.zoom_in_p
                )
            )
        inten: list[nn.Module] = []
        if s.invert_p > 0:
            inten.append(K.RandomInvert(p=s.invert_p))
        if s.intensity_p > 0:
            if s.brightness > 0:
                inten.append(
                    K.RandomBrightness((1 - s.brightness, 1 + s.brightness), p=s.intensity_p)
                )
            if s.contrast != (1.0, 1.0):
                inten.append(K.RandomContrast(s.contrast, p=s.intensity_p))
            if s.gamma != (1.0, 1.0):
                inten.append(K.RandomGamma(s.gamma, p=s.intensity_p))
        if s.illumination_p > 0:
            inten.append(K.RandomLinearIllumination(gain=(0.01, 0.2), p=s.illumination_p))
        if s.blur_p > 0:
            k = 2 * int(3 * s.blur_sigma[1]) + 1
            inten.append(K.RandomGaussianBlur((k, k), s.blur_sigma, p=s.blur_p))
        if s.motion_blur_p > 0 and s.motion_blur[1] > 1.0:
            lo, hi = (2 * int(v // 2) + 1 for v in s.motion_blur)  # odd kernel lengths
            inten.append(
                K.RandomMotionBlur(
                    (lo, hi) if hi > lo else lo,
                    angle=(-90.0, 90.0),
                    direction=0.0,
                    border_type="reflect",
                    p=s.motion_blur_p,
                )
            )
        if s.noise_p > 0 and s.noise_std > 0:
            inten.append(K.RandomGaussianNoise(mean=0.0, std=s.noise_std, p=s.noise_p))
        if s.jpeg_p > 0 and s.jpeg_quality[0] < 100.0:
            inten.append(_GreyJPEG(K.RandomJPEG(jpeg_quality=s.jpeg_quality, p=s.jpeg_p)))
        self.geometric = (
            K.AugmentationSequential(*cast(Any, geo), data_keys=["input", "mask"]) if geo else None
        )
        self.intensity = nn.Sequential(*inten) if inten else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.geometric is not None:
            x, m = self.geometric(x, y.unsqueeze(1))
            y = m.squeeze(1).to(y.dtype)
        if self.intensity is not None:
            x = self.intensity(x).clamp_(0.0, 1.0)
        return x, y


class _GreyJPEG(nn.Module):
    """Runs kornia's colour JPEG step on grey or 3-channel images: grey goes in as
    equal R, G and B and comes back as their mean (the codec's luma, since a grey
    image has no chroma)."""

    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            return self.step(x.clamp(0.0, 1.0))
        out = self.step(x.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous())
        return out.mean(1, keepdim=True)


def make_augmenter(augment: AugmentSettings | AugmentPreset | None) -> Augmenter | None:
    """An :class:`Augmenter` for settings or a preset name; None for ``"none"``/None."""
    if augment is None:
        return None
    settings = AugmentSettings.preset(augment) if isinstance(augment, str) else augment
    return None if settings is None else Augmenter(settings)
