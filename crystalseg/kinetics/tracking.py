"""Crystals linked across frames: drift removed, gaps closed, births and fates named.

The linking itself is trackpy's (:func:`trackpy.link_iter`, Crocker-Grier
nearest-neighbour linking with subnetworks solved exactly and a memory for
crystals missed for a few frames). It was chosen over laptrack on our synthetic
runs because it links one frame at a time (so the particle table streams
through and the linker holds only the last ``memory`` frames) and was as
accurate there: see ``benchmarks/bench_kinetics.py`` and ``docs/kinetics.md``.

Around it, this module does what the linker does not:

* **drift**: the whole suspension moves between frames (stirring, flow through
  the cell). The shift of each frame is the median displacement of the
  particles to their nearest neighbours in the previous frame (after removing
  the previous shift), so linking sees positions in the frame of the liquid and
  ``search_range_px`` only has to cover a crystal's own motion;
* **size**: a third linking coordinate ``size_weight_px * ln(ECD)``, so that two
  crystals of different size that pass each other are not swapped;
* **births and fates** (:func:`classify_tracks`): a track starts *present*
  (frame 0), *entered* (at the frame edge), *split* (inside the outline of a
  particle of the previous frame that lost area), or *appeared* (anywhere else: a
  nucleus, or a crystal coming into focus), and ends *to_end*, *left_field*,
  *merged* (inside the outline of a particle of the next frame that gained
  area), *dissolved* (shrunk to under half its largest size), or *lost*;
* **segmentation suspects**: a jump of area by more than ``area_jump`` (relative)
  between consecutive frames of one track (an outline cut in one frame).

What is held in memory: the linker's last ``memory + 1`` frames, and every
particle row (positions, sizes, outline box, track id: about 100 bytes a row,
measured with tracemalloc) until the tables are written. Memory therefore grows
with the run: ``benchmarks/bench_kinetics.py`` measured the peak resident memory
of 2,000 frames of ~390 crystals at 1.69x that of 200 frames (467 vs 277 MB). Flat memory needs
the track tables streamed into the store and bounded per-track buffers for the
fits (not done).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
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
    """

    search_range_px: float = 12.0
    memory: int = 2
    size_weight_px: float = 5.0
    drift: bool = True
    edge_margin_px: float = 3.0
    area_jump: float = 0.5

    def __post_init__(self) -> None:
        for name in ("search_range_px", "edge_margin_px", "area_jump"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
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


@dataclass
class LinkedRows:
    """The particle rows of a run with their track ids (struct of arrays, frame order).

    Sizes are in the particle table's units (µm when calibrated); positions in pixels.
    """

    frame: np.ndarray
    time_s: np.ndarray
    label: np.ndarray
    track_id: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    drift_x_px: np.ndarray
    drift_y_px: np.ndarray
    bbox: np.ndarray  # (n, 4) min_y, min_x, max_y, max_x
    area: np.ndarray
    ecd: np.ndarray
    length: np.ndarray
    width: np.ndarray
    solidity: np.ndarray
    kept: np.ndarray
    touches_edge: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


def link_frames(
    frames: Iterable[pd.DataFrame],
    *,
    settings: TrackSettings,
    pixel_size_um: float | None,
    on_frame: Any = None,
) -> LinkedRows:
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

    Returns
    -------
    LinkedRows
        Every particle row with its ``track_id`` (0-based, dense) and the drift
        of its frame.
    """
    import trackpy

    trackpy.quiet()
    scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
    drift = DriftEstimator(settings.search_range_px)
    kept_tables: list[dict[str, np.ndarray]] = []

    def coordinates() -> Iterator[tuple[int, np.ndarray]]:
        for table in frames:
            if on_frame is not None:
                on_frame(table)
            xy = table[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64)
            total = drift.update(xy) if settings.drift else np.zeros(2)
            corrected = xy - total
            ecd_px = np.maximum(table["ecd"].to_numpy(dtype=np.float64) / scale, 1.0)
            coords = np.column_stack([corrected, settings.size_weight_px * np.log(ecd_px)])
            kept_tables.append(_compact(table, total))
            yield int(table["frame"].iloc[0]), coords

    ids: list[np.ndarray] = []
    for _, frame_ids in trackpy.link_iter(
        coordinates(),
        search_range=settings.search_range_px,
        memory=int(settings.memory),
        neighbor_strategy="KDTree",
    ):
        ids.append(np.asarray(frame_ids, dtype=np.int64))
    if not kept_tables:
        return _rows({}, np.zeros(0, dtype=np.int64))
    # column by column, freeing each frame's pieces as they are joined: the peak is
    # the joined table plus one column, not two copies of the table
    columns = {}
    for key in list(kept_tables[0]):
        columns[key] = np.concatenate([t.pop(key) for t in kept_tables])
    kept_tables.clear()
    raw = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    ids.clear()
    _, dense = np.unique(raw, return_inverse=True)
    del raw
    return _rows(columns, dense.astype(np.int32))


def _compact(table: pd.DataFrame, drift: np.ndarray) -> dict[str, np.ndarray]:
    n = len(table)
    f32 = np.float32
    return {
        "frame": table["frame"].to_numpy(dtype=np.int32),
        "time_s": table["time_s"].to_numpy(dtype=np.float64),
        "label": table["label"].to_numpy(dtype=np.int32),
        "x_px": table["centroid_x"].to_numpy(dtype=f32),
        "y_px": table["centroid_y"].to_numpy(dtype=f32),
        "drift_x_px": np.full(n, drift[0], dtype=f32),
        "drift_y_px": np.full(n, drift[1], dtype=f32),
        "bbox": table[["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]].to_numpy(dtype=f32),
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


def _rows(columns: dict[str, np.ndarray], track_id: np.ndarray) -> LinkedRows:
    if not columns:
        empty = np.zeros(0)
        return LinkedRows(
            frame=empty.astype(np.int32),
            time_s=empty,
            label=empty.astype(np.int32),
            track_id=track_id,
            x_px=empty.astype(np.float32),
            y_px=empty.astype(np.float32),
            drift_x_px=empty.astype(np.float32),
            drift_y_px=empty.astype(np.float32),
            bbox=np.zeros((0, 4), dtype=np.float32),
            area=empty.astype(np.float32),
            ecd=empty.astype(np.float32),
            length=empty.astype(np.float32),
            width=empty.astype(np.float32),
            solidity=empty.astype(np.float32),
            kept=empty.astype(bool),
            touches_edge=empty.astype(bool),
        )
    return LinkedRows(track_id=track_id, **columns)


def area_jumps(rows: LinkedRows, *, threshold: float) -> np.ndarray:
    """Rows whose area differs by more than ``threshold`` (relative to the smaller)
    from the previous row of the same track: a segmentation suspect (an outline cut
    or joined in one frame). Rows cut by the frame edge are not judged."""
    order = np.lexsort((rows.frame, rows.track_id))
    same = rows.track_id[order][1:] == rows.track_id[order][:-1]
    area = rows.area[order].astype(np.float64)
    smaller = np.minimum(area[1:], area[:-1])
    change = np.abs(area[1:] - area[:-1]) / np.maximum(smaller, 1e-12)
    whole = ~rows.touches_edge[order][1:] & ~rows.touches_edge[order][:-1]
    jump = np.zeros(len(rows), dtype=bool)
    jump[order[1:]] = same & whole & (change > threshold)
    return jump


def classify_tracks(
    rows: LinkedRows,
    *,
    settings: TrackSettings,
    frame_shape: tuple[int, int],
    n_frames: int,
) -> pd.DataFrame:
    """One row per track: first and last frame, how it started and how it ended.

    Parameters
    ----------
    rows : LinkedRows
        From :func:`link_frames`.
    settings : TrackSettings
    frame_shape : (height, width) of the frames, pixels
    n_frames : frames in the run

    Returns
    -------
    DataFrame, one row per track (index = track_id)
        ``track_id``, ``first_frame``, ``last_frame``, ``n_frames`` (frames seen),
        ``origin`` (:data:`ORIGINS`), ``fate`` (:data:`FATES`), ``parent`` (the
        track a split came from, -1), ``merged_into`` (-1), ``first_x_px``,
        ``first_y_px`` (where it started), ``max_length`` and ``last_length``.
    """
    height, width = frame_shape
    margin = settings.edge_margin_px
    n_tracks = int(rows.track_id.max()) + 1 if len(rows) else 0
    order = np.lexsort((rows.frame, rows.track_id))
    tid = rows.track_id[order]
    starts = np.searchsorted(tid, np.arange(n_tracks), side="left")
    stops = np.searchsorted(tid, np.arange(n_tracks), side="right")
    first, last = order[starts], order[stops - 1]
    max_length = np.maximum.reduceat(rows.length[order], starts) if n_tracks else np.zeros(0)
    frame_bounds = np.searchsorted(rows.frame, np.arange(n_frames + 1))

    def at_edge(i: np.ndarray) -> np.ndarray:
        box = rows.bbox[i]
        return (
            (box[:, 0] <= margin)
            | (box[:, 1] <= margin)
            | (box[:, 2] >= height - margin)
            | (box[:, 3] >= width - margin)
        )

    def container(i: int, frame: int, grew: bool) -> int:
        """Row in ``frame`` (not of track i) whose outline box holds row i's centroid
        (moved by the drift between the frames) and that gained (``grew``) or lost
        area relative to its own track's neighbouring frame; -1 if none."""
        if frame < 0 or frame >= n_frames:
            return -1
        lo, hi = frame_bounds[frame], frame_bounds[frame + 1]
        if hi <= lo:
            return -1
        shift = (
            np.array([rows.drift_x_px[lo], rows.drift_y_px[lo]])
            - np.array([rows.drift_x_px[i], rows.drift_y_px[i]])
        ).astype(np.float64)
        x, y = rows.x_px[i] + shift[0], rows.y_px[i] + shift[1]
        box = rows.bbox[lo:hi]
        inside = (
            (box[:, 0] <= y + 0.5)
            & (y - 0.5 <= box[:, 2])
            & (box[:, 1] <= x + 0.5)
            & (x - 0.5 <= box[:, 3])
            & (rows.track_id[lo:hi] != rows.track_id[i])
        )
        for j in lo + np.flatnonzero(inside):
            other = _neighbour_row(rows, order, starts, stops, j, -1 if grew else +1)
            if other < 0:
                continue
            ratio = rows.area[j] / max(float(rows.area[other]), 1e-12)
            if (grew and ratio > 1.2) or (not grew and ratio < 1 / 1.2):
                return int(j)
        return -1

    origin = np.full(n_tracks, "appeared", dtype=object)
    fate = np.full(n_tracks, "lost", dtype=object)
    parent = np.full(n_tracks, -1, dtype=np.int64)
    merged_into = np.full(n_tracks, -1, dtype=np.int64)
    first_frame, last_frame = rows.frame[first], rows.frame[last]
    origin[first_frame == 0] = "present"
    edge_first, edge_last = at_edge(first), at_edge(last)
    for k in np.flatnonzero(first_frame > 0):
        if edge_first[k]:
            origin[k] = "entered"
            continue
        j = container(int(first[k]), int(first_frame[k]) - 1, grew=False)
        if j >= 0:
            origin[k], parent[k] = "split", rows.track_id[j]
    fate[last_frame == n_frames - 1] = "to_end"
    for k in np.flatnonzero(last_frame < n_frames - 1):
        if edge_last[k]:
            fate[k] = "left_field"
            continue
        j = container(int(last[k]), int(last_frame[k]) + 1, grew=True)
        if j >= 0:
            fate[k], merged_into[k] = "merged", rows.track_id[j]
        elif rows.length[last[k]] < 0.5 * max_length[k]:
            fate[k] = "dissolved"
    return pd.DataFrame(
        {
            "track_id": np.arange(n_tracks, dtype=np.int64),
            "first_frame": first_frame.astype(np.int64),
            "last_frame": last_frame.astype(np.int64),
            "n_frames": (stops - starts).astype(np.int64),
            "origin": origin.astype(str),
            "fate": fate.astype(str),
            "parent": parent,
            "merged_into": merged_into,
            "first_x_px": rows.x_px[first].astype(np.float64),
            "first_y_px": rows.y_px[first].astype(np.float64),
            "max_length": max_length.astype(np.float64),
            "last_length": rows.length[last].astype(np.float64),
        }
    )


def _neighbour_row(
    rows: LinkedRows,
    order: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    j: int,
    step: int,
) -> int:
    """The row of j's track just before (step -1) or after (+1) row j, or -1."""
    t = int(rows.track_id[j])
    members = order[starts[t] : stops[t]]
    where = int(np.searchsorted(rows.frame[members], rows.frame[j]))
    k = where + step
    if 0 <= k < len(members):
        return int(members[k])
    return -1
