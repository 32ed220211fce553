"""Class codes shared by synthesis, training, segmentation and measurement.

A class mask holds one class index per pixel; ``codes`` names them, background
first. A class named like a boundary (``"boundary"``, ``"edge"``, ``"border"`` or
``"contour"``) marks the rim of each crystal, so that touching crystals are cut
apart in the mask and the measurement can split them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.segmentation import find_boundaries

from crystalseg.errors import ConfigError

#: Class names that mark the boundary between touching crystals (case-insensitive).
BOUNDARY_CODES: tuple[str, ...] = ("boundary", "edge", "border", "contour")


def boundary_class(codes: Sequence[str]) -> int | None:
    """Index of the boundary class among ``codes``, or None when there is none.

    Raises
    ------
    ConfigError
        If more than one class is named like a boundary.
    """
    found = [i for i, c in enumerate(codes) if str(c).strip().lower() in BOUNDARY_CODES]
    if len(found) > 1:
        raise ConfigError(
            f"codes {list(codes)} name {len(found)} boundary classes; keep one of "
            f"{BOUNDARY_CODES} and rename the others."
        )
    return found[0] if found else None


def class_mask_from_labels(labels: np.ndarray, codes: Sequence[str]) -> np.ndarray:
    """Class mask of an instance-label image for the given codes.

    Parameters
    ----------
    labels : ndarray (y, x), integer
        Instance ids, 0 background.
    codes : sequence of str
        Background, one crystal class and optionally a boundary class.

    Returns
    -------
    ndarray (y, x) uint8
        0 background, the crystal class index inside crystals and, with a boundary
        class, that index on every crystal pixel next to another crystal or the
        background (``skimage.segmentation.find_boundaries(mode="inner")``): a ring
        one pixel wide, so touching crystals are separated by two.
    """
    codes = [str(c) for c in codes]
    boundary = boundary_class(codes)
    crystal = [i for i in range(1, len(codes)) if i != boundary]
    if len(crystal) != 1:
        raise ConfigError(
            f"codes {codes} must hold exactly one crystal class besides the background "
            "and an optional boundary class"
        )
    mask = np.where(labels > 0, crystal[0], 0).astype(np.uint8)
    if boundary is not None:
        mask[find_boundaries(labels, mode="inner") & (labels > 0)] = boundary
    return mask
