"""Tracking accuracy against known identities (CLEAR-MOT and identity scores).

For synthetic runs, whose truth names every crystal in every frame
(``truth/crystals``), and for tests and benchmarks:

* :func:`match_frames`: in each frame, measured particles are matched one to one
  to true crystals by centroid distance (Hungarian assignment, at most
  ``max_distance_px`` apart);
* :func:`tracking_scores`: MOTA = 1 - (misses + false positives + identity
  switches) / true detections (Bernardin & Stiefelhagen 2008); IDF1 = 2 IDTP /
  (true + measured detections), with IDTP the detections on which the best
  one-to-one pairing of true and measured tracks agrees (Ristani et al. 2016);
  and identity switches per 100 true tracks.

:func:`simulate_particle_table` makes a particle table of drifting, jittering,
growing crystals with known ids (no images), for benchmarks at the scale of a
long run and for tests of the kinetics with exact answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def match_frames(
    measured: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    max_distance_px: float,
) -> np.ndarray:
    """The true id of each measured particle (0 when unmatched), frame by frame.

    Parameters
    ----------
    measured : DataFrame with ``frame``, ``x_px``, ``y_px``
    truth : DataFrame with ``frame``, ``x_px``, ``y_px``, ``id`` (ids > 0)
    max_distance_px : farthest a measured centroid may be from its true crystal

    Returns
    -------
    ndarray of int64 (len(measured),)
    """
    out = np.zeros(len(measured), dtype=np.int64)
    m_frame = measured["frame"].to_numpy()
    t_frame = truth["frame"].to_numpy()
    t_order = np.argsort(t_frame, kind="stable")
    t_sorted = t_frame[t_order]
    for frame in np.unique(m_frame):
        rows = np.flatnonzero(m_frame == frame)
        lo, hi = np.searchsorted(t_sorted, [frame, frame + 1])
        truth_rows = t_order[lo:hi]
        if not len(truth_rows):
            continue
        a = measured[["x_px", "y_px"]].to_numpy(dtype=np.float64)[rows]
        b = truth[["x_px", "y_px"]].to_numpy(dtype=np.float64)[truth_rows]
        cost = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        big = 1e6
        cost = np.where(cost <= max_distance_px, cost, big)
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < big
        out[rows[r[ok]]] = truth["id"].to_numpy()[truth_rows[c[ok]]]
    return out


def match_by_overlap(
    labels: np.ndarray, truth_labels: np.ndarray, *, min_iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured particles of one frame matched to true crystals by overlap.

    A particle matches the true crystal it overlaps with an intersection over union
    of at least ``min_iou`` (above 0.5 the match is one to one), as in the Cell
    Tracking Challenge's detection measure.

    Parameters
    ----------
    labels : ndarray (y, x) int
        Measured instance labels (0 background).
    truth_labels : ndarray (y, x) int
        True crystal ids (0 background).

    Returns
    -------
    label, true_id : ndarray of int64
        Each measured label present and its true id (0: no match).
    truth_present : ndarray of int64
        The true ids visible in the frame.
    """
    a = np.asarray(labels, dtype=np.int64).ravel()
    b = np.asarray(truth_labels, dtype=np.int64).ravel()
    measured, a_area = np.unique(a[a > 0], return_counts=True)
    present, b_area = np.unique(b[b > 0], return_counts=True)
    both = (a > 0) & (b > 0)
    pairs, overlap = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    true_id = np.zeros(len(measured), dtype=np.int64)
    if pairs.size:
        ia = np.searchsorted(measured, pairs[0])
        ib = np.searchsorted(present, pairs[1])
        iou = overlap / (a_area[ia] + b_area[ib] - overlap)
        good = iou >= min_iou
        true_id[ia[good]] = pairs[1][good]
    return measured, true_id, present


def tracking_scores(
    frame: np.ndarray,
    track_id: np.ndarray,
    true_id: np.ndarray,
    *,
    n_truth_detections: int,
    n_truth_tracks: int,
) -> dict[str, Any]:
    """MOTA, IDF1 and identity switches of measured tracks against the truth.

    Parameters
    ----------
    frame, track_id : ndarray (n,)
        Frame and measured track of every measured particle.
    true_id : ndarray (n,)
        Its matched true id (0: a false positive), from :func:`match_frames`.
    n_truth_detections : true crystals summed over frames (the denominator of MOTA)
    n_truth_tracks : distinct true crystals

    Returns
    -------
    dict
        ``mota``, ``idf1``, ``id_switches``, ``id_switches_per_100_tracks``,
        ``misses``, ``false_positives``, ``matched``.
    """
    frame = np.asarray(frame)
    track_id = np.asarray(track_id)
    true_id = np.asarray(true_id)
    matched = true_id > 0
    n_matched = int(matched.sum())
    false_pos = int((~matched).sum())
    misses = int(n_truth_detections - n_matched)
    # identity switches: the measured track of a true crystal changes between its matches
    sel = np.flatnonzero(matched)
    order = sel[np.lexsort((frame[sel], true_id[sel]))]
    same_truth = true_id[order][1:] == true_id[order][:-1]
    switches = int((same_truth & (track_id[order][1:] != track_id[order][:-1])).sum())
    mota = 1.0 - (misses + false_pos + switches) / max(n_truth_detections, 1)
    # IDF1: best one-to-one pairing of true and measured tracks by shared detections
    pairs = pd.DataFrame({"t": true_id[sel], "m": track_id[sel]}).value_counts()
    idtp = 0
    if len(pairs):
        t_codes, t_index = np.unique(pairs.index.get_level_values(0), return_inverse=True)
        m_codes, m_index = np.unique(pairs.index.get_level_values(1), return_inverse=True)
        weights = np.zeros((len(t_codes), len(m_codes)))
        weights[t_index, m_index] = pairs.to_numpy()
        r, c = linear_sum_assignment(-weights)
        idtp = int(weights[r, c].sum())
    idf1 = 2 * idtp / max(len(track_id) + n_truth_detections, 1)
    return {
        "mota": float(mota),
        "idf1": float(idf1),
        "id_switches": switches,
        "id_switches_per_100_tracks": 100.0 * switches / max(n_truth_tracks, 1),
        "misses": misses,
        "false_positives": false_pos,
        "matched": n_matched,
    }


def simulate_particle_table(**kwargs: Any) -> pd.DataFrame:
    """All frames of :func:`simulate_frames` as one table (same keyword arguments)."""
    return pd.concat(list(simulate_frames(**kwargs)), ignore_index=True)


def simulate_frames(
    *,
    n_frames: int,
    crystals_per_frame: int,
    frame_shape: tuple[int, int] = (1024, 1024),
    interval_s: float = 10.0,
    pixel_size_um: float = 1.0,
    growth_um_min: float = 1.0,
    onset_frame: int | None = None,
    births_per_frame: float = 0.0,
    drift_px: float = 1.0,
    jitter_px: float = 0.5,
    seed: int = 0,
) -> Iterator[pd.DataFrame]:
    """The particle table of discs that drift, jitter and grow, one frame at a time,
    with true ids (``true_id``); made lazily, so a long run costs one frame of memory.

    ``crystals_per_frame`` crystals are present from frame 0, spread over a field
    larger than the frame so that some drift in and out; from ``onset_frame`` on,
    Poisson(``births_per_frame``) nuclei of 3 µm appear at random places in the
    frame. Every crystal grows at ``growth_um_min`` (length = width = ECD).
    Columns: those of the particle table that the kinetics read (and ``weight``),
    plus ``true_id``.
    """
    rng = np.random.default_rng(seed)
    height, width = frame_shape
    pad = 60.0
    field = (width + 2 * pad, height + 2 * pad)
    density = crystals_per_frame / (height * width)
    n_seed = rng.poisson(density * field[0] * field[1])
    xy = np.column_stack(
        [rng.uniform(-pad, width + pad, n_seed), rng.uniform(-pad, height + pad, n_seed)]
    )
    size0 = rng.uniform(8.0, 40.0, n_seed)  # um
    birth = np.zeros(n_seed, dtype=np.int64)
    velocity = rng.normal(0, drift_px, 2)
    if onset_frame is not None and births_per_frame > 0:
        counts = rng.poisson(births_per_frame, n_frames)
        counts[:onset_frame] = 0
        born = np.repeat(np.arange(n_frames), counts)
        where = np.column_stack(
            [rng.uniform(0, width, len(born)), rng.uniform(0, height, len(born))]
        )
        xy = np.vstack([xy, where - velocity * born[:, None]])  # in the frame when born
        size0 = np.concatenate([size0, np.full(len(born), 3.0)])
        birth = np.concatenate([birth, born])
    n = len(xy)
    phase = rng.uniform(0, 2 * math.pi, (n, 2))
    freq = rng.uniform(0.01, 0.05, (n, 2))
    minutes = interval_s / 60.0
    for t in range(n_frames):
        alive = np.flatnonzero(birth <= t)
        pos = (
            xy[alive]
            + velocity * t
            + jitter_px * np.sin(2 * math.pi * freq[alive] * t + phase[alive])
        )
        size = size0[alive] + growth_um_min * (t - birth[alive]) * minutes
        radius_px = size / pixel_size_um / 2
        inside = (pos[:, 0] - radius_px >= 0) & (pos[:, 0] + radius_px <= width - 1)
        inside &= (pos[:, 1] - radius_px >= 0) & (pos[:, 1] + radius_px <= height - 1)
        visible = (pos[:, 0] + radius_px >= 0) & (pos[:, 0] - radius_px <= width - 1)
        visible &= (pos[:, 1] + radius_px >= 0) & (pos[:, 1] - radius_px <= height - 1)
        keep = visible
        p, s, r, ins, ids = pos[keep], size[keep], radius_px[keep], inside[keep], alive[keep]
        k = len(p)
        yield pd.DataFrame(
            {
                "frame": np.full(k, t, dtype=np.int64),
                "time_s": np.full(k, t * interval_s),
                "label": np.arange(1, k + 1, dtype=np.int32),
                "centroid_x": np.clip(p[:, 0], 0, width - 1),
                "centroid_y": np.clip(p[:, 1], 0, height - 1),
                "bbox_min_y": np.clip(p[:, 1] - r, 0, height),
                "bbox_min_x": np.clip(p[:, 0] - r, 0, width),
                "bbox_max_y": np.clip(p[:, 1] + r + 1, 0, height),
                "bbox_max_x": np.clip(p[:, 0] + r + 1, 0, width),
                "area": math.pi * (s / 2) ** 2,
                "ecd": s,
                "feret_diameter_max": s,
                "feret_diameter_min": s,
                "touches_edge": ~ins,
                "kept": ins,
                "weight": ins.astype(np.float64),
                "true_id": ids + 1,
            }
        )
