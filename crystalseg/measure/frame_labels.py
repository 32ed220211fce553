"""A frame's instance labels exactly as measured, and the pieces dropped before measuring.

:meth:`crystalseg.measure.MeasuredRun.frame` builds a :class:`MeasuredFrame`: the
labels the measurement made of the stored mask (matched to the particle table by
label) and, after them, the foreground the measurement dropped before measuring
(:func:`dropped_pieces`), each with why it was not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Why the measurement dropped a piece of foreground before measuring it (beside
#: the reasons of the table, :data:`~crystalseg.measure.results.EXCLUDED_REASONS`).
DROPPED_REASONS: tuple[str, ...] = ("too_small", "other_class")


#: 8-connectivity of dropped pieces, as the measurement's labelling uses.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class MeasuredFrame:
    """One frame with its instance labels exactly as measured, and the table's verdict.

    Attributes
    ----------
    index : int
        Frame index.
    time_s : float
        Seconds since the first frame.
    image : ndarray, shape (y, x)
        The raw frame.
    labels : ndarray of int32, shape (y, x)
        0 background; 1..n the measured particles, equal to the ``label`` column of
        the particle table; n+1..n+m the pieces the measurement dropped before
        measuring (below ``min_area_px``, or of a class left out by ``classes``).
    n_particles : int
        ``n``: the rows of this frame in the particle table.
    kept : ndarray of bool, shape (n + m + 1,)
        Whether each label is counted in the distributions (index 0 and dropped
        pieces are not).
    size : ndarray of float64, shape (n + m + 1,)
        Each particle's size (the measurement's ``size_column``); NaN for index 0
        and dropped pieces.
    reason : ndarray of str, shape (n + m + 1,)
        Why each label is not counted (``""`` when it is): the table's
        ``excluded_reason`` for particles, one of :data:`DROPPED_REASONS` for pieces.
    """

    index: int
    time_s: float
    image: np.ndarray
    labels: np.ndarray
    n_particles: int
    kept: np.ndarray
    size: np.ndarray
    reason: np.ndarray

    @property
    def reasons(self) -> dict[str, int]:
        """Labels not counted, by reason (dropped pieces included)."""
        return dict(Counter(str(r) for r in self.reason[1:] if str(r)))

    @property
    def n_kept(self) -> int:
        """Particles counted in the distributions."""
        return int(np.count_nonzero(self.kept))

    @property
    def n_excluded(self) -> int:
        """Labels not counted: excluded particles plus dropped pieces."""
        return len(self.kept) - 1 - self.n_kept


def dropped_pieces(
    mask: np.ndarray,
    labels: np.ndarray,
    *,
    measured: Sequence[int],
    boundary: int | None,
    min_area_px: int,
) -> tuple[np.ndarray, list[str]]:
    """The particles the measurement dropped before measuring, and why.

    Parameters
    ----------
    mask : ndarray, shape (y, x), integer dtype
        Class index per pixel.
    labels : ndarray, shape (y, x), integer dtype
        The measurement's instance labels of ``mask``
        (:func:`~crystalseg.measure.run.label_mask_frame`).
    measured : sequence of int
        The classes the measurement labelled (``crystal_classes(codes, classes=...)``).
    boundary : int or None
        The boundary class of the codes (:func:`crystalseg.classes.boundary_class`).
    min_area_px : int
        The measurement's ``min_area_px``.

    Returns
    -------
    pieces : ndarray of int32, shape (y, x)
        0 where nothing was dropped, 1..m one id per dropped particle.
    reasons : list of str
        Reason of each piece 1..m: ``"too_small"`` or ``"other_class"``.

    Notes
    -----
    Each 8-connected piece of foreground without a label is a candidate. One that
    holds a pixel of a measured class was a particle dropped under ``min_area_px``
    (the labelling labels every measured pixel, then drops small particles); one
    that holds a crystal class left out by ``classes`` is a crystal not measured.
    A piece of the boundary class alone that touches a particle is that particle's
    rim, not a particle: the outer band that ``trim_boundary`` takes off, or, with
    ``split`` "watershed" or "none", the rim that labelling never looks at. The
    boundary split grows every particle over all the foreground connected to it, so
    boundary alone touches a particle only where it was trimmed. Boundary alone
    that touches no particle is a crystal drawn all rim: below ``min_area_px`` it
    was dropped as too small, otherwise the split did not measure the boundary class.
    """
    pieces, m = ndi.label((mask > 0) & (labels == 0), structure=_STRUCTURE_8)
    if not m:
        return pieces.astype(np.int32), []

    def holds(where: np.ndarray) -> np.ndarray:
        """Per piece 1..m: whether any of its pixels is in ``where``."""
        return np.bincount(pieces[where], minlength=m + 1)[1:] > 0

    too_small = holds(np.isin(mask, measured))
    rim_only = np.zeros(m, dtype=bool)
    if boundary is not None:
        rim_only = ~holds(mask != boundary)
    rim = np.zeros(m, dtype=bool)
    if rim_only.any():
        rim = rim_only & holds(ndi.binary_dilation(labels > 0, structure=_STRUCTURE_8))
        area = np.bincount(pieces.ravel(), minlength=m + 1)[1:]
        too_small |= rim_only & ~rim & (area < min_area_px)
    lut = np.zeros(m + 1, dtype=np.int32)
    lut[1:][~rim] = np.arange(1, np.count_nonzero(~rim) + 1, dtype=np.int32)
    reasons = ["too_small" if f else "other_class" for f in too_small[~rim]]
    return lut[pieces], reasons


__all__ = ["DROPPED_REASONS", "MeasuredFrame", "dropped_pieces"]
