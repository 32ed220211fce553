"""Augmentation moves image and mask together and leaves class values intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalseg.errors import ConfigError
from crystalseg.train.augment import Augmenter, AugmentSettings, make_augmenter

GEOMETRIC_ONLY = dict(intensity_p=0.0, blur_p=0.0, noise_p=0.0)


def only(**step: object) -> AugmentSettings:
    """Settings with every default step off (no flips, turns, affine, intensity, blur or
    noise) but ``step``, e.g. ``only(zoom_in=(2.0, 2.0), zoom_in_p=1.0)``."""
    return AugmentSettings(flips=False, rot90=False, affine_p=0.0, **GEOMETRIC_ONLY, **step)


def marked_batch(n: int = 16, size: int = 33) -> tuple[torch.Tensor, torch.Tensor]:
    """Image zero except one bright pixel per sample, mask class 1 on that pixel only."""
    x = torch.zeros(n, 1, size, size)
    y = torch.zeros(n, size, size, dtype=torch.int64)
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        r, c = torch.randint(0, size, (2,), generator=g).tolist()
        x[i, 0, r, c] = 1.0
        y[i, r, c] = 1
    return x, y


def test_marked_pixel_moves_with_its_mask_under_flips_and_rot90() -> None:
    aug = Augmenter(AugmentSettings(affine_p=0.0, **GEOMETRIC_ONLY))
    torch.manual_seed(0)
    x, y = marked_batch()
    xa, ya = aug(x, y)
    moved = 0
    for i in range(x.shape[0]):
        bright = (xa[i, 0] > 0.5).nonzero().tolist()
        labelled = (ya[i] == 1).nonzero().tolist()
        assert bright == labelled and len(bright) == 1
        moved += bright != (y[i] == 1).nonzero().tolist()
    assert moved > 8  # most samples really moved


def test_block_moves_with_its_mask_under_rotation_and_scaling() -> None:
    aug = Augmenter(
        AugmentSettings(flips=False, rot90=False, rotate_deg=30, affine_p=1.0, **GEOMETRIC_ONLY)
    )
    torch.manual_seed(3)
    x = torch.zeros(8, 1, 64, 64)
    y = torch.zeros(8, 64, 64, dtype=torch.int64)
    x[:, :, 12:24, 30:44] = 1.0
    y[:, 12:24, 30:44] = 1
    xa, ya = aug(x, y)
    assert set(ya.unique().tolist()) <= {0, 1}  # nearest: no blended classes
    for i in range(8):
        img_c = (xa[i, 0] > 0.5).nonzero().float().mean(0)
        mask_c = (ya[i] == 1).nonzero().float().mean(0)
        assert torch.allclose(img_c, mask_c, atol=1.0)
        agree = ((xa[i, 0] > 0.5) == (ya[i] == 1)).float().mean()
        assert agree > 0.98


def test_intensity_steps_leave_mask_and_stay_in_range() -> None:
    aug = make_augmenter("strong")
    assert aug is not None
    torch.manual_seed(0)
    x = torch.rand(6, 1, 32, 32)
    y = torch.randint(0, 3, (6, 32, 32))
    aug_int = Augmenter(AugmentSettings(flips=False, rot90=False, affine_p=0.0, invert_p=1.0))
    xa, ya = aug_int(x, y)
    assert torch.equal(ya, y)
    assert not torch.allclose(xa, x)
    xs, ys = aug(x, y)
    assert 0.0 <= float(xs.min()) and float(xs.max()) <= 1.0
    assert ys.dtype == torch.int64 and set(ys.unique().tolist()) <= {0, 1, 2}


def test_same_seed_same_augmentation() -> None:
    aug = make_augmenter("default")
    assert aug is not None
    x, y = marked_batch(4)
    torch.manual_seed(5)
    a = aug(x, y)
    torch.manual_seed(5)
    b = aug(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_presets_and_validation() -> None:
    assert make_augmenter("none") is None
    assert make_augmenter(None) is None
    assert AugmentSettings.preset("strong").invert_p > 0
    with pytest.raises(ConfigError):
        AugmentSettings.preset("wild")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        AugmentSettings(blur_p=1.5)
    with pytest.raises(ConfigError):
        AugmentSettings(gamma=(1.2, 0.8))


def test_zoom_in_enlarges_crystal_and_mask_together() -> None:
    """The strong-zoom step grows a marked block by 1.5-4x in each direction (area
    2.25-16x) and its mask with it, before blur and noise."""
    aug = Augmenter(only(zoom_in=(1.5, 4.0), zoom_in_p=1.0))
    torch.manual_seed(1)
    x = torch.zeros(8, 1, 96, 96)
    y = torch.zeros(8, 96, 96, dtype=torch.int64)
    x[:, :, 44:52, 44:52] = 1.0  # an 8x8 crystal at the centre, where every zoom keeps it
    y[:, 44:52, 44:52] = 1
    xa, ya = aug(x, y)
    area = (ya == 1).sum((1, 2)).float()
    assert bool(((area >= 64 * 2.25 * 0.85) & (area <= 64 * 16 * 1.15)).all()), area
    assert float(area.std()) > 0  # one factor per crop
    for i in range(8):
        agree = ((xa[i, 0] > 0.5) == (ya[i] == 1)).float().mean()
        assert agree > 0.98
    preset = AugmentSettings.preset("strong-zoom")
    assert preset.zoom_in == (1.5, 4.0) and preset.zoom_in_p == 0.25 and preset.invert_p > 0
    with pytest.raises(ConfigError, match="zoom_in"):
        AugmentSettings(zoom_in=(0.5, 2.0))


def test_motion_blur_smears_the_image_along_a_line_and_leaves_the_mask() -> None:
    """A motion-blur streak of length L spreads a point's brightness over a straight
    line of at most L pixels (total brightness kept); the mask does not move."""
    settings = only(motion_blur=(9.0, 9.0), motion_blur_p=1.0)
    torch.manual_seed(3)
    x = torch.zeros(8, 1, 41, 41)
    y = torch.zeros(8, 41, 41, dtype=torch.int64)
    x[:, :, 20, 20] = 1.0
    y[:, 20, 20] = 1
    xa, ya = Augmenter(settings)(x, y)
    assert torch.equal(ya, y)
    assert torch.allclose(xa.sum((1, 2, 3)), torch.ones(8), atol=1e-4)
    for i in range(8):
        rows, cols = torch.nonzero(xa[i, 0] > 1e-3, as_tuple=True)
        assert 3 <= len(rows) <= 2 * 9  # a streak, not a point or a disc
        extent = torch.hypot((rows - 20).abs().max().float(), (cols - 20).abs().max().float())
        assert extent <= 4.5 * 1.5  # within half the streak length of the point
        assert float(xa[i, 0].max()) < 0.5  # the point's brightness is spread out
    preset = AugmentSettings.preset("strong-motion")
    assert preset.motion_blur == (3.0, 15.0) and preset.motion_blur_p == 0.3
    assert preset.invert_p > 0  # strong plus motion blur
    with pytest.raises(ConfigError, match="motion_blur"):
        AugmentSettings(motion_blur=(0.5, 3.0))


def test_cli_offers_every_preset() -> None:
    """The CLI restates the preset names (it does not import torch at start-up)."""
    from crystalseg.cli import cli
    from crystalseg.train.augment import AUGMENT_PRESETS

    train = cli.commands["train"]
    option = next(p for p in train.params if p.name == "augment")
    assert tuple(option.type.choices) == AUGMENT_PRESETS


def test_jpeg_step_matches_a_real_jpeg_encoder_on_grey_crops() -> None:
    """The JPEG step on a grey crop gives what Pillow's encoder gives at that quality
    (within a quarter of the change the compression makes), keeps the image grey
    (1 channel) and leaves the mask alone."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    image = 200.0 - 120.0 * (((yy - 40) ** 2 + (xx - 52) ** 2) < 15**2)  # a dark disc
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=25)
    real = np.asarray(Image.open(buffer)).astype(float)
    settings = only(jpeg_quality=(25.0, 25.0), jpeg_p=1.0)
    x = torch.tensor(image / 255.0, dtype=torch.float32)[None, None]
    y = torch.zeros(1, 96, 96, dtype=torch.int64)
    xa, ya = Augmenter(settings)(x, y)
    assert xa.shape == x.shape and torch.equal(ya, y)
    ours = xa[0, 0].numpy() * 255
    change = np.abs(real - image).mean()
    assert change > 2  # quality 25 visibly changes the crop
    assert np.abs(ours - real).mean() < change / 4
    preset = AugmentSettings.preset("strong-jpeg")
    assert preset.jpeg_quality == (15.0, 90.0) and preset.jpeg_p == 0.3
    with pytest.raises(ConfigError, match="jpeg_quality"):
        AugmentSettings(jpeg_quality=(50.0, 120.0))
