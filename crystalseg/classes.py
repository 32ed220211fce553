"""Class codes shared by synthesis, training, segmentation and measurement.

A class mask holds one class index per pixel; ``codes`` names them, background
first. A class named like a boundary (``"boundary"``, ``"edge"``, ``"border"`` or
``"contour"``) marks the rim of each crystal, so that touching crystals are cut
apart in the mask and the measurement can split them. A class named ``"contact"``
(or ``"touching"``) marks only the line where two crystals touch: the outline
against the background stays crystal, so the crystal class alone gives the outline
and the contact class only the cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from skimage.segmentation import find_boundaries

from crystalseg.errors import ConfigError

#: Class names that mark the rim of every crystal (case-insensitive).
RIM_CODES: tuple[str, ...] = ("boundary", "edge", "border", "contour")
#: Class names that mark only the line where two crystals touch (case-insensitive).
CONTACT_CODES: tuple[str, ...] = ("contact", "touching")
#: Every class name that cuts touching crystals apart: a rim or a contact class.
BOUNDARY_CODES: tuple[str, ...] = RIM_CODES + CONTACT_CODES

BoundaryKind = Literal["rim", "contact"]


def boundary_class(codes: Sequence[str]) -> int | None:
    """Index of the boundary class (rim or contact) among ``codes``, or None.

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


def boundary_kind(codes: Sequence[str]) -> BoundaryKind | None:
    """``"rim"``, ``"contact"`` or None: what the boundary class of ``codes`` marks."""
    i = boundary_class(codes)
    if i is None:
        return None
    return "contact" if str(codes[i]).strip().lower() in CONTACT_CODES else "rim"


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
        0 background, the crystal class index inside crystals and, with a rim class,
        that index on every crystal pixel next to another crystal or the background
        (``skimage.segmentation.find_boundaries(mode="inner")``): a ring one pixel
        wide, so touching crystals are separated by two. With a contact class, that
        index only on crystal pixels with a 4-neighbour in another crystal: a line two
        pixels wide where crystals touch, and nothing against the background.
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
    if boundary is None:
        return mask
    if boundary_kind(codes) == "rim":
        mask[find_boundaries(labels, mode="inner") & (labels > 0)] = boundary
        return mask
    mask[_touches_other_crystal(labels)] = boundary
    return mask


def _touches_other_crystal(labels: np.ndarray) -> np.ndarray:
    """Crystal pixels with a 4-neighbour in a different crystal (not the background)."""
    out = np.zeros(labels.shape, bool)
    for a, b in ((np.s_[:-1, :], np.s_[1:, :]), (np.s_[:, :-1], np.s_[:, 1:])):
        differ = (labels[a] != labels[b]) & (labels[a] > 0) & (labels[b] > 0)
        out[a] |= differ
        out[b] |= differ
    return out
