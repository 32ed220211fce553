"""Crystals linked across frames, one frame at a time, with the drift of the field removed.

The linking itself is trackpy's (:func:`trackpy.link_iter`, Crocker-Grier
nearest-neighbour linking with subnetworks solved exactly and a memory for
crystals missed for a few frames). It was chosen over laptrack on our synthetic
runs because it links one frame at a time (so the particle table streams
through and the linker holds only the last ``memory`` frames) and was as
accurate there: see ``benchmarks/bench_kinetics.py`` and ``docs/kinetics.md``.
Linked frame by frame it makes the same tracks as trackpy's in-memory
:func:`trackpy.link` of the whole table (``tests/kinetics/test_tracking.py``).

Around it, this module does what the linker does not:

* **drift**: the whole suspension moves between frames (stirring, flow through
  the cell). The shift of each frame is the median displacement of the
  particles to their nearest neighbours in the previous frame (after removing
  the previous shift), so linking sees positions in the frame of the liquid and
  ``search_range_px`` only has to cover a crystal's own motion;
* **size**: a third linking coordinate ``size_weight_px * ln(ECD)``, so that two
  crystals of different size that pass each other are not swapped.

Births, fates, segmentation suspects and the growth fits are made from the
stream of linked frames by :class:`crystalseg.kinetics.book.TrackBook`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from crystalseg.errors import ConfigError

log = logging.getLogger(__name__)

#: How a track starts.
ORIGINS: tuple[str, ...] = ("present", "entered", "split", "appeared")
#: How a track ends.
FATES: tuple[str, ...] = ("to_end", "left_field", "merged", "dissolved", "lost")

#: Columns of the particle table the tracking reads.
PARTICLE_INPUT: tuple[str, ...] = (
    "frame",
    "time_s",
    "label",
    "centroid_x",
    "centroid_y",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "area",
    "ecd",
    "feret_diameter_max",
    "feret_diameter_min",
    "solidity",
    "touches_edge",
    "kept",
)


@dataclass(frozen=True)
class TrackSettings:
    """How particles are linked into tracks (:func:`link_frames`).

    Attributes
    ----------
    search_range_px : farthest a crystal moves between frames once the drift of
        the whole field is removed, pixels (in the space of the linking
        coordinates, which include the size coordinate)
    memory : frames a crystal may go unseen (out of focus, missed by the
        segmentation) and still continue its track
    size_weight_px : weight of the size coordinate, pixels per e-fold of ECD (0:
        position only). 5 px means a crystal twice the size of another is, for
        the linker, 3.5 px further away
    drift : estimate the drift of the field and link in its frame
    edge_margin_px : a track that starts or ends this close to the frame edge
        entered or left the field
    area_jump : relative change of area between consecutive frames of a track
        above which the frame is flagged a segmentation suspect
    refind_frames : a track that appears within this many frames after a track was
        lost, where that track was last seen (within ``search_range_px`` once the
        drift is removed), is that crystal found again (origin ``refound``), not a
        birth: a nucleus at the limit of detection is seen, missed for longer than
        ``memory``, and seen again (0: never)
    """

    search_range_px: float = 12.0
    memory: int = 2
    size_weight_px: float = 5.0
    drift: bool = True
    edge_margin_px: float = 3.0
    area_jump: float = 0.5
    refind_frames: int = 10

    def __post_init__(self) -> None:
        for name in ("search_range_px", "edge_margin_px", "area_jump"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if int(self.refind_frames) != self.refind_frames or self.refind_frames < 0:
            raise ConfigError(
                f"refind_frames must be a whole number >= 0, got {self.refind_frames!r}"
            )
        if int(self.memory) != self.memory or self.memory < 0:
            raise ConfigError(f"memory must be a whole number >= 0, got {self.memory!r}")
        if not (math.isfinite(self.size_weight_px) and self.size_weight_px >= 0):
            raise ConfigError(f"size_weight_px must be >= 0, got {self.size_weight_px!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)


def frames_of(blocks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Regroup blocks of a frame-ordered particle table into one table per frame.

    Parameters
    ----------
    blocks : iterable of DataFrame
        Consecutive blocks of the particle table (:func:`crystalseg.measure.results.
        iter_particles`); a frame may straddle two blocks.

    Yields
    ------
    DataFrame
        The rows of one frame, frames in increasing order (frames without
        particles are not yielded).
    """
    carry: pd.DataFrame | None = None
    for block in blocks:
        if carry is not None and len(carry):
            block = pd.concat([carry, block], ignore_index=True)
        if not len(block):
            continue
        frame = block["frame"].to_numpy()
        if np.any(np.diff(frame) < 0):
            raise ValueError("the particle table is not ordered by frame")
        cuts = np.flatnonzero(np.diff(frame)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [len(block)]])
        for lo, hi in zip(starts[:-1], stops[:-1], strict=True):
            yield block.iloc[lo:hi].reset_index(drop=True)
        carry = block.iloc[starts[-1] : stops[-1]].reset_index(drop=True)
    if carry is not None and len(carry):
        yield carry


class DriftEstimator:
    """Shift of the whole field between consecutive frames, from particle centroids.

    The shift is the median displacement from each particle to its nearest
    neighbour in the previous frame, searched around the previous shift (a
    suspension moves smoothly) within ``search_range_px``, and refined once with
    the matches of the first estimate.
    """

    def __init__(self, search_range_px: float) -> None:
        self.search_range_px = float(search_range_px)
        self.total = np.zeros(2)
        self.step = np.zeros(2)
        self._previous: np.ndarray | None = None

    def update(self, xy: np.ndarray) -> np.ndarray:
        """Add a frame's centroids (n, 2) as (x, y) pixels; return the total drift (2,)."""
        previous, self._previous = self._previous, xy
        if previous is None or len(previous) < 3 or len(xy) < 3:
            return self.total.copy()
        tree = cKDTree(previous)
        step = self.step
        for _ in range(2):
            dist, idx = tree.query(xy - step, distance_upper_bound=self.search_range_px)
            found = np.isfinite(dist)
            if found.sum() < 3:
                break
            step = np.median(xy[found] - previous[idx[found]], axis=0)
        self.step = step
        self.total = self.total + step
        return self.total.copy()


#: A linked frame: the rows of one frame as named arrays (:func:`link_stream`).
LinkedFrame = dict[str, np.ndarray]


def link_stream(
    frames: Iterable[pd.DataFrame],
    *,
    settings: TrackSettings,
    pixel_size_um: float | None,
    on_frame: Callable[[pd.DataFrame], None] | None = None,
) -> Iterator[LinkedFrame]:
    """Link the particles of consecutive frames into tracks, one frame at a time.

    Parameters
    ----------
    frames : iterable of DataFrame
        One table per frame in time order (:func:`frames_of`), with the columns
        :data:`PARTICLE_INPUT` of the particle table.
    settings : TrackSettings
    pixel_size_um : float or None
        Micrometres per pixel of the sizes in the table (None: sizes in pixels).
    on_frame : callable (DataFrame) -> None, optional
        Called with each frame's table before it is linked (a caller that does
        per-frame work, such as the chord lengths, shares the pass over the table).

    Yields
    ------
    dict of ndarray
        Each frame's rows, in the order of the table: ``frame``, ``time_s``,
        ``label``, position (``x_px``, ``y_px``), the field's drift since the first
        frame (``drift_x_px``, ``drift_y_px``), ``bbox`` (n, 4: min_y, min_x, max_y,
        max_x), ``area``, ``ecd``, ``length``, ``width``, ``solidity``, ``kept``,
        ``touches_edge`` and ``track_id``: 0-based, numbered in the order the tracks
        first appear. The linker holds its last ``memory + 1`` frames; nothing else
        is kept, so memory does not grow with the run.
    """
    import trackpy

    trackpy.quiet()
    scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
    drift = DriftEstimator(settings.search_range_px)
    waiting: deque[LinkedFrame] = deque()

    def coordinates() -> Iterator[tuple[int, np.ndarray]]:
        for table in frames:
            if on_frame is not None:
                on_frame(table)
            xy = _columns(table, ("centroid_x", "centroid_y"), np.float64)
            total = drift.update(xy) if settings.drift else np.zeros(2)
            ecd_px = np.maximum(table["ecd"].to_numpy(dtype=np.float64) / scale, 1.0)
            coords = np.column_stack([xy - total, settings.size_weight_px * np.log(ecd_px)])
            waiting.append(_compact(table, total))
            yield int(table["frame"].iloc[0]), coords

    dense: dict[int, int] = {}
    for _, frame_ids in trackpy.link_iter(
        coordinates(),
        search_range=settings.search_range_px,
        memory=int(settings.memory),
        neighbor_strategy="KDTree",
    ):
        linked = waiting.popleft()
        ids = np.empty(len(frame_ids), dtype=np.int64)
        for i, raw in enumerate(frame_ids):
            ids[i] = dense.setdefault(int(raw), len(dense))
        linked["track_id"] = ids
        yield linked


def _compact(table: pd.DataFrame, drift: np.ndarray) -> LinkedFrame:
    n = len(table)
    f32 = np.float32
    return {
        "frame": table["frame"].to_numpy(dtype=np.int64),
        "time_s": table["time_s"].to_numpy(dtype=np.float64),
        "label": table["label"].to_numpy(dtype=np.int64),
        "x_px": table["centroid_x"].to_numpy(dtype=f32),
        "y_px": table["centroid_y"].to_numpy(dtype=f32),
        "drift_x_px": np.full(n, drift[0], dtype=f32),
        "drift_y_px": np.full(n, drift[1], dtype=f32),
        "bbox": _columns(table, ("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"), f32),
        "area": table["area"].to_numpy(dtype=f32),
        "ecd": table["ecd"].to_numpy(dtype=f32),
        "length": table["feret_diameter_max"].to_numpy(dtype=f32),
        "width": table["feret_diameter_min"].to_numpy(dtype=f32),
        "solidity": table["solidity"].to_numpy(dtype=f32)
        if "solidity" in table
        else np.ones(n, dtype=f32),
        "kept": table["kept"].to_numpy(dtype=bool),
        "touches_edge": table["touches_edge"].to_numpy(dtype=bool),
    }


def _columns(table: pd.DataFrame, names: tuple[str, ...], dtype: Any) -> np.ndarray:
    """Columns of a table side by side (rows, len(names)); faster than ``table[names]``."""
    return np.column_stack([table[name].to_numpy(dtype=dtype) for name in names])
