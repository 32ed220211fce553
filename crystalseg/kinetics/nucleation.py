"""Nucleation: when new crystals start to appear, how fast, and where.

A *birth* is a track that starts after the first frame, inside the field (not
at its edge, where crystals drift in) and not out of another particle (a split):
origin ``appeared`` in :func:`crystalseg.kinetics.tracking.classify_tracks`, and
that is seen in at least ``min_track_frames`` frames.
Births also come from crystals that drift into focus or that the linker lost
and found again: that background is why the onset is a change of rate rather
than the first birth.

Onset: births per frame are modelled as Poisson with one rate before the onset
and another after it; the onset frame is the frame that maximises the likelihood
(among those where the rate rises), and its 95 % interval holds the frames whose
profile likelihood is within 1.92 of the maximum (a likelihood-ratio interval).
A crystal first seen in frame k was born between frames k-1 and k, so the onset
time is the middle of that frame interval (unbiased when births are spread
evenly within it), and its interval runs from the start of the earliest to the
end of the latest frame interval in the likelihood-ratio set. A nucleus is seen
only once it is big enough to be segmented: the onset is that of crystals of a
detectable size (see ``docs/kinetics.md``).
``onset_lr`` is twice the log-likelihood gain over a constant rate; below
``min_lr`` no onset is reported.

Rate: births per mm² of field per minute (per mm³ with a depth of field), in
windows over time and after the onset, with exact Poisson (Garwood) intervals.
The field is the frame less the edge margin, where births can be told from
crystals drifting in.

Secondary nucleation: the fraction of births that appear near an existing
crystal (within its radius plus ``near_px``) divided by the fraction of random
points in the same frames that are that near: about 1 when nuclei appear at
random (primary), above 1 when they appear near crystals (secondary). The
interval is a bootstrap over births.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import cKDTree

from crystalseg.errors import ConfigError


@dataclass(frozen=True)
class NucleationSettings:
    """How births are counted and the onset found (:func:`nucleation_summary`).

    Attributes
    ----------
    windows : time windows of the birth rate over time
    min_track_frames : frames a new track must be seen in to count as a birth (a
        false detection of the segmentation flickers for a frame or two: on the
        model's masks of a clear synthetic run, births without this filter were 9x
        the true ones)
    min_lr : least likelihood-ratio statistic for an onset to be reported
    near_px : how far beyond a crystal's radius a birth counts as near it
    random_points : random points per birth for the expected nearness
    depth_of_field_um : depth of the imaged volume; gives rates per mm³
    seed : seed of the random points and the bootstrap
    """

    windows: int = 8
    min_track_frames: int = 3
    min_lr: float = 10.0
    near_px: float = 10.0
    random_points: int = 50
    depth_of_field_um: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.min_track_frames) != self.min_track_frames or self.min_track_frames < 1:
            raise ConfigError(
                f"min_track_frames must be a whole number >= 1, got {self.min_track_frames!r}"
            )
        if int(self.windows) != self.windows or self.windows < 1:
            raise ConfigError(f"windows must be a whole number >= 1, got {self.windows!r}")
        if not (math.isfinite(self.near_px) and self.near_px >= 0):
            raise ConfigError(f"near_px must be >= 0, got {self.near_px!r}")
        if self.depth_of_field_um is not None and not (
            math.isfinite(self.depth_of_field_um) and self.depth_of_field_um > 0
        ):
            raise ConfigError(
                f"depth of field must be a positive number of micrometres, got "
                f"{self.depth_of_field_um!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)


def onset(births: np.ndarray) -> dict[str, Any]:
    """Change point of a Poisson rate: the frame from which births come faster.

    Parameters
    ----------
    births : ndarray (frames,)
        Births per frame (frame 0, where every crystal is new, excluded by the caller).

    Returns
    -------
    dict
        ``frame`` (first frame of the higher rate), ``frame_low``, ``frame_high``
        (95 % likelihood-ratio interval), ``lr`` (twice the log-likelihood gain over
        one rate), ``rate_before``, ``rate_after`` (births per frame).
    """
    births = np.asarray(births, dtype=np.float64)
    n = len(births)
    none = {
        "frame": -1,
        "frame_low": -1,
        "frame_high": -1,
        "lr": 0.0,
        "rate_before": math.nan,
        "rate_after": math.nan,
    }
    if n < 2 or births.sum() == 0:
        return none
    cumulative = np.concatenate([[0.0], np.cumsum(births)])
    total = cumulative[-1]
    tau = np.arange(1, n)  # first frame after the change
    n1, n2 = cumulative[tau], total - cumulative[tau]
    t1, t2 = tau.astype(np.float64), (n - tau).astype(np.float64)

    def term(k: np.ndarray, t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(k > 0, k * np.log(k / t) - k, 0.0)

    loglik = term(n1, t1) + term(n2, t2)
    rising = n2 / t2 > n1 / t1
    if not rising.any():
        return none
    loglik = np.where(rising, loglik, -np.inf)
    best = int(np.argmax(loglik))
    flat = float(term(np.array([total]), np.array([float(n)]))[0])
    inside = np.flatnonzero(2 * (loglik[best] - loglik) <= stats.chi2.ppf(0.95, 1))
    return {
        "frame": int(tau[best]),
        "frame_low": int(tau[inside.min()]),
        "frame_high": int(tau[inside.max()]),
        "lr": float(2 * (loglik[best] - flat)),
        "rate_before": float(n1[best] / t1[best]),
        "rate_after": float(n2[best] / t2[best]),
    }


def poisson_interval(count: float, exposure: float) -> tuple[float, float, float]:
    """Rate ``count / exposure`` with its exact 95 % (Garwood) interval."""
    if exposure <= 0:
        return math.nan, math.nan, math.nan
    low = 0.0 if count == 0 else stats.chi2.ppf(0.025, 2 * count) / 2
    high = stats.chi2.ppf(0.975, 2 * count + 2) / 2
    return count / exposure, float(low) / exposure, float(high) / exposure


def is_birth(tracks: pd.DataFrame, *, min_track_frames: int = 1) -> np.ndarray:
    """Tracks that count as births: origin ``appeared``, seen in ``min_track_frames``."""
    return ((tracks["origin"] == "appeared") & (tracks["n_frames"] >= min_track_frames)).to_numpy()


def births_per_frame(
    tracks: pd.DataFrame, n_frames: int, *, min_track_frames: int = 1
) -> np.ndarray:
    """Number of births (:func:`is_birth`) starting in each frame."""
    born = tracks.loc[is_birth(tracks, min_track_frames=min_track_frames), "first_frame"]
    return np.bincount(born.to_numpy(dtype=np.int64), minlength=n_frames)[:n_frames]


def field_area_mm2(
    frame_shape: tuple[int, int], *, margin_px: float, pixel_size_um: float | None
) -> float:
    """Area of the field where births are counted (frame less the edge margin), mm²;
    NaN without a pixel size."""
    if pixel_size_um is None:
        return math.nan
    height, width = frame_shape
    area_px = max(height - 2 * margin_px, 0) * max(width - 2 * margin_px, 0)
    return area_px * (pixel_size_um / 1000.0) ** 2


def nearness(
    point: np.ndarray,
    others_xy: np.ndarray,
    others_reach_px: np.ndarray,
    *,
    settings: NucleationSettings,
    frame_shape: tuple[int, int],
    margin_px: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Whether a birth lies near an existing crystal of its frame, and the fraction of
    random points of the same field that do.

    Parameters
    ----------
    point : ndarray (2,)
        The birth's centroid (x, y), pixels.
    others_xy : ndarray (n, 2)
        Centroids of the other particles of the frame (x, y), pixels.
    others_reach_px : ndarray (n,)
        How near counts for each: its radius plus ``settings.near_px``.
    rng : the random points' generator (one per birth: seeded by its track id)

    Returns
    -------
    near, expected : float
        1.0 or 0.0 for the birth, and the fraction of ``settings.random_points``
        uniform points of the field (less the margin) that are near.
    """
    height, width = frame_shape
    tree = cKDTree(np.asarray(others_xy, dtype=np.float64))
    random = np.column_stack(
        [
            rng.uniform(margin_px, width - margin_px, settings.random_points),
            rng.uniform(margin_px, height - margin_px, settings.random_points),
        ]
    )
    reach = np.asarray(others_reach_px, dtype=np.float64)
    near = _near(tree, np.asarray(point, dtype=np.float64).reshape(1, 2), reach)[0]
    return float(near), float(_near(tree, random, reach).mean())


def secondary_ratio(
    near: np.ndarray, expected: np.ndarray, *, seed: int
) -> tuple[float, float, float, int]:
    """Observed over expected fraction of births near crystals, with a 95 % bootstrap
    interval over births (in track order), and the number of births judged."""
    obs, exp = np.asarray(near, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if not len(obs):
        return math.nan, math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    ratio = obs.mean() / exp.mean() if exp.mean() > 0 else math.nan
    picks = rng.integers(0, len(obs), (1000, len(obs)))
    boot = obs[picks].mean(1) / np.maximum(exp[picks].mean(1), 1e-12)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(ratio), float(low), float(high), len(obs)


def _near(tree: cKDTree, points: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Whether each point lies within ``reach`` of some crystal of the tree."""
    hits = tree.query_ball_point(points, r=float(reach.max()))
    out = np.zeros(len(points), dtype=bool)
    for i, found in enumerate(hits):
        if found:
            d = np.hypot(*(tree.data[found] - points[i]).T)
            out[i] = bool(np.any(d <= reach[found]))
    return out


def nucleation_summary(
    tracks: pd.DataFrame,
    near: pd.DataFrame,
    *,
    settings: NucleationSettings,
    time_s: np.ndarray,
    frame_shape: tuple[int, int],
    margin_px: float,
    pixel_size_um: float | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Onset, rates and the secondary-nucleation ratio of a tracked run.

    Parameters
    ----------
    tracks : DataFrame
        The track table (:func:`crystalseg.kinetics.book.TrackBook.finish`).
    near : DataFrame
        ``track_id``, ``near``, ``expected`` of the tracks that started inside the
        field (:func:`nearness`); the births among them are judged.

    Returns
    -------
    summary : dict
        ``onset_s``, ``onset_low_s``, ``onset_high_s`` (NaN when no onset), ``onset_lr``,
        ``births`` (after frame 0), ``rate_per_mm2_min`` (after the onset) with
        ``_low``/``_high``, ``rate_per_mm3_min`` (with a depth of field),
        ``field_area_mm2``, ``secondary_ratio`` with ``_low``/``_high``.
    windows : DataFrame, one row per time window
        ``t_start_s``, ``t_end_s``, ``births``, ``rate_per_mm2_min`` and its interval
        (and per mm³ with a depth of field).
    """
    n_frames = len(time_s)
    born_ids = tracks.loc[
        is_birth(tracks, min_track_frames=settings.min_track_frames), "track_id"
    ].to_numpy()
    births = births_per_frame(tracks, n_frames, min_track_frames=settings.min_track_frames)
    births[0] = 0
    area = field_area_mm2(frame_shape, margin_px=margin_px, pixel_size_um=pixel_size_um)
    interval_min = float(np.median(np.diff(time_s))) / 60.0 if n_frames > 1 else math.nan
    found = onset(births[1:])
    summary: dict[str, Any] = {
        "births": int(births.sum()),
        "field_area_mm2": area,
        "onset_lr": found["lr"],
    }
    if found["frame"] >= 0 and found["lr"] >= settings.min_lr:
        first = found["frame"] + 1  # births[1:] starts at frame 1
        # a crystal first seen in frame k was born during (t[k-1], t[k]]: the onset is
        # the middle of that interval, and its interval spans the intervals it may lie in
        low, high = found["frame_low"] + 1, found["frame_high"] + 1
        summary.update(
            {
                "onset_s": float(0.5 * (time_s[first - 1] + time_s[first])),
                "onset_low_s": float(time_s[low - 1]),
                "onset_high_s": float(time_s[high]),
                "onset_frame": int(first),
            }
        )
    else:
        first = 1
        summary.update(
            {
                "onset_s": math.nan,
                "onset_low_s": math.nan,
                "onset_high_s": math.nan,
                "onset_frame": -1,
            }
        )
    after = float(births[first:].sum())
    exposure = area * (n_frames - first) * interval_min
    rate, low, high = poisson_interval(after, exposure)
    summary.update(
        {"rate_per_mm2_min": rate, "rate_per_mm2_min_low": low, "rate_per_mm2_min_high": high}
    )
    depth_mm = None if settings.depth_of_field_um is None else settings.depth_of_field_um / 1000
    if depth_mm is not None:
        summary.update(
            {
                "rate_per_mm3_min": rate / depth_mm,
                "rate_per_mm3_min_low": low / depth_mm,
                "rate_per_mm3_min_high": high / depth_mm,
            }
        )
    judged = near[near["track_id"].isin(born_ids)].sort_values("track_id")
    ratio, r_low, r_high, n_judged = secondary_ratio(
        judged["near"].to_numpy(), judged["expected"].to_numpy(), seed=settings.seed
    )
    summary.update(
        {
            "secondary_ratio": ratio,
            "secondary_ratio_low": r_low,
            "secondary_ratio_high": r_high,
            "secondary_births_judged": n_judged,
        }
    )
    edges = np.linspace(0, n_frames, settings.windows + 1).round().astype(int)
    records = []
    for lo, hi in itertools.pairwise(edges):
        lo_eff = max(lo, 1)
        if hi <= lo_eff:
            continue
        count = float(births[lo_eff:hi].sum())
        w_rate, w_low, w_high = poisson_interval(count, area * (hi - lo_eff) * interval_min)
        record = {
            "t_start_s": float(time_s[lo_eff]),
            "t_end_s": float(time_s[hi - 1]),
            "births": int(count),
            "rate_per_mm2_min": w_rate,
            "rate_per_mm2_min_low": w_low,
            "rate_per_mm2_min_high": w_high,
        }
        if depth_mm is not None:
            record.update(
                {
                    "rate_per_mm3_min": w_rate / depth_mm,
                    "rate_per_mm3_min_low": w_low / depth_mm,
                    "rate_per_mm3_min_high": w_high / depth_mm,
                }
            )
        records.append(record)
    return summary, pd.DataFrame.from_records(records)
