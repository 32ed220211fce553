"""The track tables of a run, made as its linked frames stream by, in memory that
does not grow with the run.

:class:`TrackBook` takes each linked frame (:func:`crystalseg.kinetics.tracking.
link_stream`) once, in time order, and holds only:

* the last ``memory + 3`` frames (a track's start is judged against the frame
  before it and its end against the frame after it, once the linker can no
  longer continue it);
* for each open track its first and last row, and its usable frames thinned to
  at most ``max_fit_points`` (:class:`crystalseg.kinetics.growth.ThinnedSeries`),
  and those of the current growth window;
* one record per finished track (birth, end, origin, fate, growth fit).

Each frame's points (one row per particle: ``track_id``, drift, sizes, ``usable``,
``segmentation_suspect``) go to the caller's sink as soon as the frame arrives,
so the caller writes them into the store block by block.

What a track's start and end are called (:data:`ORIGINS`, :data:`FATES`):

* origin *present* (frame 0), *entered* (at the frame edge), *split* (inside the
  outline box of a particle of the previous frame whose own track lost more than
  a sixth of its area, or ended there: a crystal broke, or crystals measured as
  one came apart), *joined* (its outline box holds a particle of the previous
  frame whose track ended there: crystals that came to touch are measured as one
  new particle), *refound* (within ``refind_frames`` frames after a track was
  lost, where it was last seen: a crystal at the limit of detection, missed for
  longer than the linker's memory), or *appeared* (anywhere else: a nucleus, or a
  crystal coming into focus). Only *appeared* counts as a birth;
* fate *to_end*, *left_field* (at the edge), *merged* (inside the outline box of a
  particle of the next frame whose own track gained more than a fifth of its
  area, or began there), *split* (its outline box holds a particle of the next
  frame whose track began there), *dissolved* (shrunk to under half its largest
  length), or *lost*.

A frame of a track whose area differs by more than ``area_jump`` (relative to the
smaller) from its previous frame is a *segmentation suspect* (an outline cut or
joined in one frame); frames cut by the frame edge are not judged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crystalseg.kinetics.growth import (
    TRACK_GROWTH_COLUMNS,
    GrowthSettings,
    ThinnedSeries,
    fit_track,
    growth_by_size,
    growth_over_time,
    is_usable,
    population_growth,
    window_edges,
    window_slope,
)
from crystalseg.kinetics.nucleation import NucleationSettings, nearness, nucleation_summary
from crystalseg.kinetics.tracking import LinkedFrame, TrackSettings

#: How a track starts.
ORIGINS: tuple[str, ...] = ("present", "entered", "split", "joined", "refound", "appeared")
#: How a track ends.
FATES: tuple[str, ...] = ("to_end", "left_field", "merged", "split", "dissolved", "lost")

#: Columns of the points table (group ``tracks``), in order, and their dtypes.
POINT_COLUMNS: dict[str, Any] = {
    "frame": np.int64,
    "time_s": np.float64,
    "label": np.int64,
    "track_id": np.int64,
    "x_px": np.float32,
    "y_px": np.float32,
    "drift_x_px": np.float32,
    "drift_y_px": np.float32,
    "length": np.float32,
    "width": np.float32,
    "ecd": np.float32,
    "usable": bool,
    "segmentation_suspect": bool,
}

#: Ratio of areas across a frame that counts as a split or a merge.
AREA_CHANGE = 1.2


@dataclass
class _Track:
    """What a book holds of an open track."""

    first_frame: int
    first_step: int
    first_x: float
    first_y: float
    first_drift: tuple[float, float]
    first_edge: bool
    first_box: np.ndarray
    growth: ThinnedSeries
    last_frame: int = -1
    last_step: int = -1
    last_index: int = -1
    last_x: float = 0.0
    last_y: float = 0.0
    last_drift: tuple[float, float] = (0.0, 0.0)
    last_area: float = math.nan
    last_touch: bool = False
    last_edge: bool = False
    last_box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    last_length: float = math.nan
    max_length: float = -math.inf
    n_frames: int = 0
    origin: str = ""
    parent: int = -1
    window: int = -1
    window_series: ThinnedSeries | None = None


@dataclass
class _Frame:
    """One linked frame held in the book's window."""

    step: int
    frame: int
    rows: LinkedFrame
    drift: np.ndarray
    prev_area: np.ndarray
    next_area: np.ndarray


@dataclass
class BookResults:
    """What a finished book gives: the tables of groups ``tracks`` and ``kinetics``."""

    tracks: pd.DataFrame
    track_growth: pd.DataFrame
    growth_over_time: pd.DataFrame
    growth_by_size: pd.DataFrame
    births_over_time: pd.DataFrame
    particles_per_frame: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


class TrackBook:
    """Track tables, growth fits and nucleation of linked frames streamed in time order.

    Parameters
    ----------
    tracking, growth, nucleation : the stage's settings
    time_s : ndarray (frames,)
        Time of every frame of the run, seconds.
    frame_shape : (height, width) of the frames, pixels
    pixel_size_um : float or None
        Micrometres per pixel of the sizes (None: pixels).
    on_points : callable (dict of ndarray) -> None, optional
        Receives each frame's points (:data:`POINT_COLUMNS`) as the frame arrives.
    """

    def __init__(
        self,
        *,
        tracking: TrackSettings,
        growth: GrowthSettings,
        nucleation: NucleationSettings,
        time_s: np.ndarray,
        frame_shape: tuple[int, int],
        pixel_size_um: float | None,
        on_points: Callable[[dict[str, np.ndarray]], None] | None = None,
    ) -> None:
        self.tracking, self.growth, self.nucleation = tracking, growth, nucleation
        self.time_s = np.asarray(time_s, dtype=np.float64)
        self.n_frames = len(self.time_s)
        self.frame_shape = frame_shape
        self.scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
        self.pixel_size_um = pixel_size_um
        self.on_points = on_points
        self.delay = int(tracking.memory) + 1
        self.window: deque[_Frame] = deque()
        self.open: dict[int, _Track] = {}
        self.pending: deque[tuple[int, list[int]]] = deque()
        self.records: list[dict[str, Any]] = []
        self.fits: list[dict[str, Any]] = []
        self.near: list[tuple[int, float, float]] = []
        self.lost: deque[tuple[int, float, float, int]] = deque()  # frame, x, y, track
        self.edges = window_edges(self.time_s, growth.windows) if self.n_frames else np.zeros(1)
        self.window_slopes: list[list[tuple[int, float]]] = [[] for _ in range(growth.windows)]
        self.particles = np.zeros(self.n_frames, dtype=np.int64)
        self.suspects = 0
        self.step = -1

    # ------------------------------------------------------------------ streaming

    def add(self, rows: LinkedFrame) -> None:
        """Take the next linked frame (all its rows, in table order)."""
        self.step += 1
        n = len(rows["frame"])
        frame = int(rows["frame"][0])
        self.particles[frame] += n
        entry = _Frame(
            step=self.step,
            frame=frame,
            rows=rows,
            drift=np.array([rows["drift_x_px"][0], rows["drift_y_px"][0]], dtype=np.float64),
            prev_area=np.full(n, np.nan),
            next_area=np.full(n, np.nan),
        )
        suspect = self._update_tracks(entry)
        usable = is_usable(
            rows["kept"],
            rows["touches_edge"],
            suspect,
            rows["solidity"],
            min_solidity=self.growth.min_solidity,
        )
        self._add_growth(entry, usable)
        self.suspects += int(suspect.sum())
        if self.on_points is not None:
            points = {name: rows[name] for name in POINT_COLUMNS if name in rows}
            points["usable"], points["segmentation_suspect"] = usable, suspect
            self.on_points({name: points[name] for name in POINT_COLUMNS})
        self.window.append(entry)
        while len(self.window) > self.delay + 2:
            self.window.popleft()
        self._settle(self.step - self.delay)

    def finish(self) -> BookResults:
        """Close every track and compute the run's tables and headline numbers."""
        self._settle(self.step + self.delay + 1, final=True)
        tracks = pd.DataFrame.from_records(self.records, columns=_TRACK_COLUMNS)
        tracks = tracks.sort_values("track_id").reset_index(drop=True)
        per_track = pd.DataFrame.from_records(self.fits, columns=list(TRACK_GROWTH_COLUMNS))
        per_track = per_track.sort_values("track_id").reset_index(drop=True)
        near = pd.DataFrame.from_records(self.near, columns=["track_id", "near", "expected"])
        nucleation, births = nucleation_summary(
            tracks,
            near,
            settings=self.nucleation,
            time_s=self.time_s,
            frame_shape=self.frame_shape,
            margin_px=self.tracking.edge_margin_px,
            pixel_size_um=self.pixel_size_um,
        )
        summary: dict[str, Any] = {
            "n_tracks": len(tracks),
            "n_points": int(self.particles.sum()),
            "origins": {str(k): int(v) for k, v in tracks["origin"].value_counts().items()},
            "fates": {str(k): int(v) for k, v in tracks["fate"].value_counts().items()},
            "segmentation_suspects": self.suspects,
            **population_growth(per_track, settings=self.growth),
            **nucleation,
        }
        return BookResults(
            tracks=tracks,
            track_growth=per_track,
            growth_over_time=growth_over_time(
                self.window_slopes, settings=self.growth, time_s=self.time_s
            ),
            growth_by_size=growth_by_size(per_track, settings=self.growth),
            births_over_time=births,
            particles_per_frame=self.particles,
            summary=summary,
        )

    # ------------------------------------------------------------------ per row

    def _update_tracks(self, entry: _Frame) -> np.ndarray:
        rows = entry.rows
        threshold = self.tracking.area_jump
        suspect = np.zeros(len(rows["frame"]), dtype=bool)
        at_edge = self._at_edge(rows["bbox"])
        started: list[int] = []
        drift = (float(entry.drift[0]), float(entry.drift[1]))
        for i, tid in enumerate(rows["track_id"].tolist()):
            x, y = float(rows["x_px"][i]), float(rows["y_px"][i])
            area, touch = float(rows["area"][i]), bool(rows["touches_edge"][i])
            track = self.open.get(tid)
            if track is None:
                track = _Track(
                    first_frame=entry.frame,
                    first_step=entry.step,
                    first_x=x,
                    first_y=y,
                    first_drift=drift,
                    first_edge=bool(at_edge[i]),
                    first_box=rows["bbox"][i],
                    growth=ThinnedSeries(self.growth.max_fit_points),
                    origin="present" if entry.frame == 0 else "",
                )
                self.open[tid] = track
                if entry.frame > 0:
                    started.append(tid)
            else:
                entry.prev_area[i] = track.last_area
                before = self._held(track.last_step)
                if before is not None:
                    before.next_area[track.last_index] = area
                smaller = max(min(area, track.last_area), 1e-12)
                whole = not touch and not track.last_touch
                suspect[i] = whole and abs(area - track.last_area) / smaller > threshold
            length = float(rows["length"][i])
            track.last_frame, track.last_step, track.last_index = entry.frame, entry.step, i
            track.last_x, track.last_y, track.last_drift = x, y, drift
            track.last_area, track.last_touch, track.last_edge = area, touch, bool(at_edge[i])
            track.last_box = rows["bbox"][i]
            track.last_length = length
            track.max_length = max(track.max_length, length)
            track.n_frames += 1
        if started:
            self.pending.append((entry.step, started))
        return suspect

    def _add_growth(self, entry: _Frame, usable: np.ndarray) -> None:
        rows = entry.rows
        t = float(rows["time_s"][0])
        window = int(np.searchsorted(self.edges, t, side="right")) - 1
        for i in np.flatnonzero(usable).tolist():
            track = self.open[int(rows["track_id"][i])]
            values = (
                entry.frame,
                t,
                float(rows["length"][i]),
                float(rows["width"][i]),
                float(rows["ecd"][i]),
            )
            track.growth.add(*values)
            if track.window != window:
                self._close_window(int(rows["track_id"][i]), track)
                track.window = window
                track.window_series = ThinnedSeries(self.growth.max_fit_points)
            if track.window_series is not None:
                track.window_series.add(*values)

    def _close_window(self, tid: int, track: _Track) -> None:
        if track.window_series is None or not 0 <= track.window < len(self.window_slopes):
            return
        slope = window_slope(track.window_series, settings=self.growth)
        if slope is not None:
            self.window_slopes[track.window].append((tid, slope))
        track.window_series = None

    # ------------------------------------------------------------------ starts and ends

    def _settle(self, step: int, *, final: bool = False) -> None:
        """Judge the starts of tracks begun at ``step`` or before, and end the tracks
        last seen at ``step`` or before (the linker can no longer continue them)."""
        while self.pending and self.pending[0][0] <= step:
            started_at, tids = self.pending.popleft()
            for tid in tids:
                self._judge_start(tid, started_at)
        if final:
            ending = sorted(self.open)
        else:
            held = self._held(step)
            if held is None:
                return
            ending = [
                tid
                for tid in dict.fromkeys(held.rows["track_id"].tolist())
                if tid in self.open and self.open[tid].last_step == step
            ]
        for tid in ending:
            self._end(tid, self.open.pop(tid))

    def _judge_start(self, tid: int, step: int) -> None:
        # judged before the track can end: both wait ``delay`` frames, starts first
        track = self.open[tid]
        entry = self._held(step)
        if entry is None:  # pragma: no cover - the window always holds it
            raise RuntimeError(f"frame of step {step} left the window before it was judged")
        origin, parent = "appeared", -1
        if track.first_edge:
            origin = "entered"
        else:
            before = self._held_frame(entry.frame - 1)
            if before is not None:
                j = self._container(
                    before, track.first_x, track.first_y, track.first_drift, tid, grew=False
                )
                if j >= 0:
                    origin, parent = "split", int(before.rows["track_id"][j])
                elif self._contained(before, track.first_box, track.first_drift, ended=True):
                    origin = "joined"
        if origin == "appeared":
            found = self._refound(track)
            if found >= 0:
                origin, parent = "refound", found
        if origin == "appeared":
            self._judge_nearness(tid, entry, track.first_x, track.first_y)
        track.origin, track.parent = origin, parent

    def _refound(self, track: _Track) -> int:
        """The lost track nearest to where ``track`` starts (drift removed), lost within
        ``refind_frames`` frames before it and within the search range; -1 if none."""
        window = self.tracking.refind_frames
        while self.lost and self.lost[0][0] < track.first_frame - window:
            self.lost.popleft()
        x = track.first_x - track.first_drift[0]
        y = track.first_y - track.first_drift[1]
        best, best_d = -1, self.tracking.search_range_px
        for frame, lx, ly, tid in self.lost:
            d = math.hypot(x - lx, y - ly)
            if frame < track.first_frame and d <= best_d:
                best, best_d = tid, d
        return best

    def _judge_nearness(self, tid: int, entry: _Frame, x: float, y: float) -> None:
        rows = entry.rows
        others = rows["track_id"] != tid
        if not others.any():
            return
        xy = np.column_stack([rows["x_px"][others], rows["y_px"][others]])
        reach = rows["ecd"][others].astype(np.float64) / self.scale / 2 + self.nucleation.near_px
        near, expected = nearness(
            np.array([x, y]),
            xy,
            reach,
            settings=self.nucleation,
            frame_shape=self.frame_shape,
            margin_px=self.tracking.edge_margin_px,
            rng=np.random.default_rng([self.nucleation.seed, tid]),
        )
        self.near.append((tid, near, expected))

    def _end(self, tid: int, track: _Track) -> None:
        fate, merged_into = "lost", -1
        if track.last_frame == self.n_frames - 1:
            fate = "to_end"
        elif track.last_edge:
            fate = "left_field"
        else:
            after = self._held_frame(track.last_frame + 1)
            j = -1
            if after is not None:
                j = self._container(
                    after, track.last_x, track.last_y, track.last_drift, tid, grew=True
                )
            if after is not None and j >= 0:
                fate, merged_into = "merged", int(after.rows["track_id"][j])
            elif after is not None and self._contained(
                after, track.last_box, track.last_drift, ended=False
            ):
                fate = "split"
            elif track.last_length < 0.5 * track.max_length:
                fate = "dissolved"
        if fate == "lost" and self.tracking.refind_frames > 0:
            x, y = track.last_x - track.last_drift[0], track.last_y - track.last_drift[1]
            self.lost.append((track.last_frame, x, y, tid))
        self._close_window(tid, track)
        fit = fit_track(tid, track.growth, settings=self.growth)
        if fit is not None:
            self.fits.append(fit)
        self.records.append(
            {
                "track_id": tid,
                "first_frame": track.first_frame,
                "last_frame": track.last_frame,
                "n_frames": track.n_frames,
                "origin": track.origin,
                "fate": fate,
                "parent": track.parent,
                "merged_into": merged_into,
                "first_x_px": track.first_x,
                "first_y_px": track.first_y,
                "max_length": track.max_length,
                "last_length": track.last_length,
            }
        )

    # ------------------------------------------------------------------ geometry

    def _held(self, step: int) -> _Frame | None:
        if not self.window:
            return None
        k = step - self.window[0].step
        return self.window[k] if 0 <= k < len(self.window) else None

    def _held_frame(self, frame: int) -> _Frame | None:
        for entry in self.window:
            if entry.frame == frame:
                return entry
        return None

    def _at_edge(self, bbox: np.ndarray) -> np.ndarray:
        height, width = self.frame_shape
        m = self.tracking.edge_margin_px
        return (
            (bbox[:, 0] <= m)
            | (bbox[:, 1] <= m)
            | (bbox[:, 2] >= height - m)
            | (bbox[:, 3] >= width - m)
        )

    def _container(
        self,
        entry: _Frame,
        x: float,
        y: float,
        drift: tuple[float, float],
        tid: int,
        *,
        grew: bool,
    ) -> int:
        """Row of ``entry`` (not of track ``tid``) whose outline box holds the point
        (x, y), moved by the drift between the frames, and whose own track gained
        (``grew``) or lost area across the frame, or began (``grew``) or ended there;
        -1 if none."""
        x = x + float(entry.drift[0]) - drift[0]
        y = y + float(entry.drift[1]) - drift[1]
        box = entry.rows["bbox"]
        inside = (
            (box[:, 0] <= y + 0.5)
            & (y - 0.5 <= box[:, 2])
            & (box[:, 1] <= x + 0.5)
            & (x - 0.5 <= box[:, 3])
            & (entry.rows["track_id"] != tid)
        )
        neighbour = entry.prev_area if grew else entry.next_area
        area = entry.rows["area"]
        for j in np.flatnonzero(inside).tolist():
            if not math.isfinite(neighbour[j]):  # its track began or ended across the frame
                return j
            # grew: its area over its track's previous one; lost: its area over the next
            if float(area[j]) / max(float(neighbour[j]), 1e-12) > AREA_CHANGE:
                return j
        return -1

    def _contained(
        self, entry: _Frame, box: np.ndarray, drift: tuple[float, float], *, ended: bool
    ) -> bool:
        """Whether the outline box ``box`` (moved by the drift between the frames)
        holds the centroid of a particle of ``entry`` whose track ended there
        (``ended``) or began there."""
        dx, dy = drift[0] - float(entry.drift[0]), drift[1] - float(entry.drift[1])
        x = entry.rows["x_px"].astype(np.float64) + dx
        y = entry.rows["y_px"].astype(np.float64) + dy
        inside = (
            (box[0] - 0.5 <= y) & (y <= box[2] + 0.5) & (box[1] - 0.5 <= x) & (x <= box[3] + 0.5)
        )
        alone = ~np.isfinite(entry.next_area if ended else entry.prev_area)
        return bool(np.any(inside & alone))


_TRACK_COLUMNS = [
    "track_id",
    "first_frame",
    "last_frame",
    "n_frames",
    "origin",
    "fate",
    "parent",
    "merged_into",
    "first_x_px",
    "first_y_px",
    "max_length",
    "last_length",
]
