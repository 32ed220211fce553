"""The crystals and bubbles of a synthetic run, drawn once from its seed.

Everything that moves or grows is an explicit function of the frame index, so
the geometry of any frame follows from the :class:`Population` alone and frames
can be rendered in any order:

* length (maximum Feret diameter) ``L(t) = L0 + G * (t - t_birth)``, the outline
  scaled uniformly so the aspect ratio is kept;
* the field of view drifts by a smooth random walk (an integrated AR(1) velocity,
  precomputed per frame);
* each crystal, or each agglomerate as a rigid body, jitters by a sum of slow
  sinusoids and turns slowly;
* crystals nucleate at t = 0 (seeds) and then, after an induction time (and for
  the scenario's ``nucleation_fraction`` of the rest of the run), as a
  Poisson process.

Positions live in *field* coordinates (pixels of an extended field that covers
every place the drifting frame visits); frame coordinates are field minus drift,
with pixel centres at integer (x = column, y = row).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crystalseg.synth.scenarios import HABIT_ASPECT, HABITS, Scenario, SynthConfig

log = logging.getLogger(__name__)

#: Independent random streams derived from the seed; the frame index joins FRAME.
STREAM_POPULATION = 1
STREAM_APPEARANCE = 2
STREAM_WINDOW = 3
STREAM_FRAME = 4

#: Upper bound on the number of crystals of one run (a guard against absurd settings).
MAX_CRYSTALS = 200_000


def stream(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one independent random stream of a run."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def _loguniform(
    rng: np.random.Generator, bounds: tuple[float, float], size: int | None = None
) -> Any:
    """Log-uniform draw(s) between ``bounds``."""
    lo, hi = bounds
    if lo == hi:
        return np.full(size, lo) if size is not None else lo
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


# --------------------------------------------------------------------------- outlines


def polygon_area(verts: np.ndarray) -> float:
    """Signed shoelace area of a polygon (k, 2) in (x, y); positive when counter-clockwise."""
    x, y = verts[:, 0], verts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def feret_diameters(verts: np.ndarray) -> tuple[float, float]:
    """Maximum and minimum Feret diameter of a convex polygon (k, 2).

    The maximum is the largest vertex-to-vertex distance; the minimum is attained
    with one edge flush against a caliper (rotating calipers), so it is the least,
    over edges, of the largest vertex distance from that edge's line.
    """
    diff = verts[:, None, :] - verts[None, :, :]
    fmax = float(np.sqrt((diff**2).sum(-1)).max())
    edges = np.roll(verts, -1, axis=0) - verts
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    proj = verts @ normals.T  # (k vertices, k edges)
    fmin = float((proj.max(0) - proj.min(0)).min())
    return fmax, fmin


def _is_convex(verts: np.ndarray) -> bool:
    edges = np.roll(verts, -1, axis=0) - verts
    cross = edges[:, 0] * np.roll(edges[:, 1], -1) - edges[:, 1] * np.roll(edges[:, 0], -1)
    return bool(np.all(cross > 1e-9))


def _normalise(verts: np.ndarray) -> np.ndarray:
    """Counter-clockwise, centroid at the origin, maximum Feret diameter 1."""
    verts = np.asarray(verts, dtype=float)
    if polygon_area(verts) < 0:
        verts = verts[::-1]
    x, y = verts[:, 0], verts[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    verts = verts - [cx, cy]
    fmax, _ = feret_diameters(verts)
    return verts / fmax


def habit_outline(habit: str, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """A convex outline (k, 2) of one crystal of ``habit``, long axis along x.

    Prisms have flat, chamfered, pointed or oblique (monoclinic) ends; needles are
    thin prisms with flat or sharp ends; plates are hexagons, rhombs, truncated
    rhombs or chamfered squares. The result is normalised by :func:`_normalise`.
    """
    w = 1.0 / aspect
    h, a = 0.5, 0.5 * w
    kind = rng.random()
    if habit == "plate":
        if kind < 0.4:  # hexagon, stretched along x
            start = rng.choice([0.0, math.pi / 6])
            ang = start + np.arange(6) * math.pi / 3
            verts = np.stack([0.5 * np.cos(ang), 0.5 * np.sin(ang) / aspect], axis=1)
        elif kind < 0.6:  # rhomb
            verts = np.array([[h, 0], [0, a], [-h, 0], [0, -a]]) * [1.0, 1.0 + 0.3 * rng.random()]
        elif kind < 0.8:  # truncated rhomb: the acute tips cut off
            c = rng.uniform(0.15, 0.35)
            xc, yc = h * (1 - c), a * c
            verts = np.array([[xc, yc], [0, a], [-xc, yc], [-xc, -yc], [0, -a], [xc, -yc]])
        else:  # chamfered rectangle
            c = rng.uniform(0.05, 0.3) * min(h, a)
            verts = np.array(
                [[h, a - c], [h - c, a], [-h + c, a], [-h, a - c],
                 [-h, -a + c], [-h + c, -a], [h - c, -a], [h, -a + c]]
            )  # fmt: skip
    else:
        sharp = habit == "needle"
        if kind < 0.3:  # flat ends, maybe chamfered
            c = rng.uniform(0.0, 0.35) * a
            if c < 0.05 * a:
                verts = np.array([[h, a], [-h, a], [-h, -a], [h, -a]])
            else:
                verts = np.array(
                    [[h, a - c], [h - c, a], [-h + c, a], [-h, a - c],
                     [-h, -a + c], [-h + c, -a], [h - c, -a], [h, -a + c]]
                )  # fmt: skip
        elif kind < 0.75:  # pointed ends (hexagonal prism seen side-on)
            p = rng.uniform(0.6, 2.5) * a if sharp else rng.uniform(0.3, 1.2) * a
            p = min(p, 0.45)
            verts = np.array([[h, 0], [h - p, a], [-h + p, a], [-h, 0], [-h + p, -a], [h - p, -a]])
        else:  # oblique ends (parallelogram, monoclinic)
            s = rng.uniform(0.3, 1.4) * a
            s = min(s, 0.4)
            verts = np.array([[h, a], [-h + s, a], [-h, -a], [h - s, -a]])
    # small irregularity, kept only if the outline stays convex
    jitter = rng.normal(0.0, 0.04 * min(w, 1.0), verts.shape)
    bent = verts + jitter
    if _is_convex(_normalise(bent)):
        verts = bent
    return _normalise(verts)


# --------------------------------------------------------------------------- population


@dataclass(frozen=True, eq=False)
class Population:
    """Crystals, agglomerates, bubbles and drift of one run (struct of arrays).

    Attributes
    ----------
    n_frames, interval_s : the time axis, frame t at ``t * interval_s`` seconds
    pixel_size_um : micrometres per pixel (drawn when the config gives none)
    zoom : magnification factor the run drew
    habit_mix : (prism, needle, plate) proportions the run drew
    growth_rate_um_s : the run's mean linear growth rate
    drift_px : ndarray (frames, 2) float
        (x, y) of the frame origin in field coordinates.
    habit : ndarray (n,) int
        Index into :data:`HABITS`.
    outlines : tuple of n arrays (k, 2)
        Outline at length 1 about its centroid, counter-clockwise.
    width_ratio, area_ratio : ndarray (n,)
        Minimum Feret diameter and area of the outline at length 1.
    t_birth_s, length0_px, growth_px_s : ndarray (n,)
        Nucleation time, length at nucleation, linear growth rate.
    group : ndarray (n,) int
        Rigid body (agglomerate) each crystal belongs to; a lone crystal is its own.
    offset_px : ndarray (n, 2)
        Centroid relative to the group centre, in the group's frame.
    angle0 : ndarray (n,)
        Orientation of the long axis at frame 0 (radians).
    z_order : ndarray (n,) int
        Stacking rank; the larger is in front and owns overlapping pixels.
    depth : ndarray (n,)
        Distance from the focal plane in -1..1 (sets defocus blur).
    group_xy : ndarray (g, 2)
        Group centre in field coordinates.
    jitter_amp, jitter_freq, jitter_phase : ndarray (g, 2, 2)
        Two sinusoids per axis (px, cycles per frame, radians).
    rot_rate, rot_amp, rot_freq, rot_phase : ndarray (g,)
        Steady turning (rad per frame) and a slow rocking.
    bubble_xy, bubble_v : ndarray (b, 2)
        Bubble centre at frame 0 (field coordinates) and own velocity (px per frame).
    bubble_radius, bubble_depth : ndarray (b,)
    bubble_on, bubble_off : ndarray (b,) int
        Frames during which a bubble is in the liquid (on <= t < off).
    """

    n_frames: int
    interval_s: float
    pixel_size_um: float
    zoom: float
    habit_mix: tuple[float, float, float]
    growth_rate_um_s: float
    drift_px: np.ndarray
    habit: np.ndarray
    outlines: tuple[np.ndarray, ...]
    width_ratio: np.ndarray
    area_ratio: np.ndarray
    t_birth_s: np.ndarray
    length0_px: np.ndarray
    growth_px_s: np.ndarray
    group: np.ndarray
    offset_px: np.ndarray
    angle0: np.ndarray
    z_order: np.ndarray
    depth: np.ndarray
    group_xy: np.ndarray
    jitter_amp: np.ndarray
    jitter_freq: np.ndarray
    jitter_phase: np.ndarray
    rot_rate: np.ndarray
    rot_amp: np.ndarray
    rot_freq: np.ndarray
    rot_phase: np.ndarray
    bubble_xy: np.ndarray
    bubble_v: np.ndarray
    bubble_radius: np.ndarray
    bubble_depth: np.ndarray
    bubble_on: np.ndarray
    bubble_off: np.ndarray

    @property
    def n_crystals(self) -> int:
        """Number of crystals, including those not yet nucleated or out of view."""
        return len(self.habit)

    @property
    def agglomerate(self) -> np.ndarray:
        """ndarray (n,) int: 1-based agglomerate number, 0 for a lone crystal."""
        counts = np.bincount(self.group, minlength=len(self.group_xy))
        multi = counts[self.group] > 1
        _, dense = np.unique(self.group[multi], return_inverse=True)
        out = np.zeros(self.n_crystals, dtype=np.int32)
        out[multi] = dense + 1
        return out

    def length_px(self, t: int) -> np.ndarray:
        """Length (maximum Feret diameter, px) of every crystal at frame t; NaN before birth."""
        time = t * self.interval_s
        length = self.length0_px + self.growth_px_s * (time - self.t_birth_s)
        return np.where(time >= self.t_birth_s, length, np.nan)

    def pose(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Centroid (n, 2) in frame coordinates and long-axis angle (n,) at frame t."""
        g = self.group
        phase = 2 * np.pi * self.jitter_freq * t + self.jitter_phase
        jitter = (self.jitter_amp * np.sin(phase)).sum(-1)  # (g, 2)
        turn = self.rot_rate * t + self.rot_amp * np.sin(
            2 * np.pi * self.rot_freq * t + self.rot_phase
        )
        centre = self.group_xy + jitter - self.drift_px[t]
        c, s = np.cos(turn[g]), np.sin(turn[g])
        ox, oy = self.offset_px[:, 0], self.offset_px[:, 1]
        xy = centre[g] + np.stack([c * ox - s * oy, s * ox + c * oy], axis=1)
        return xy, self.angle0 + turn[g]

    def vertices(self, i: int, centre: np.ndarray, angle: float, length: float) -> np.ndarray:
        """Outline (k, 2) of crystal i in frame coordinates."""
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, s], [-s, c]])  # row vectors times rot = rotation by +angle
        return self.outlines[i] * length @ rot + centre

    def bubbles_at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the bubbles present at frame t and their centres (m, 2) in frame coords."""
        present = np.flatnonzero((self.bubble_on <= t) & (t < self.bubble_off))
        xy = self.bubble_xy[present] + self.bubble_v[present] * t - self.drift_px[t]
        return present, xy


def _drift(rng: np.random.Generator, n_frames: int, speed: float) -> np.ndarray:
    """(frames, 2) frame origin: cumulative sum of a smooth AR(1) velocity with RMS ``speed``."""
    rho = rng.uniform(0.85, 0.99)
    mean_dir = rng.uniform(0, 2 * np.pi)
    mean = speed * rng.uniform(0.0, 0.7) * np.array([math.cos(mean_dir), math.sin(mean_dir)])
    noise = rng.normal(0.0, 1.0, (n_frames, 2))
    v = np.empty((n_frames, 2))
    v[0] = noise[0] * speed
    scale = math.sqrt(1 - rho**2) * speed
    for k in range(1, n_frames):
        v[k] = rho * v[k - 1] + scale * noise[k]
    v += mean
    drift = np.cumsum(v, axis=0)
    return drift - drift[0]


def build_population(config: SynthConfig) -> Population:
    """Draw the population of a run from ``config.seed`` (deterministic)."""
    sc: Scenario = config.scenario_params
    rng = stream(config.seed, STREAM_POPULATION)
    n_frames, height, width = config.frames, config.height, config.width
    duration = max(n_frames - 1, 1) * config.interval_s

    zoom = float(_loguniform(rng, sc.zoom))
    drawn_pixel = 1.5 / zoom * float(_loguniform(rng, (0.7, 1.4)))
    pixel_size = float(config.pixel_size_um) if config.pixel_size_um else drawn_pixel

    weights = np.asarray(sc.habit_weights, dtype=float)
    weights = weights / weights.sum()
    if math.isfinite(sc.habit_concentration):
        nz = weights > 0
        mix = np.zeros_like(weights)
        mix[nz] = rng.dirichlet(sc.habit_concentration * weights[nz] * nz.sum())
    else:
        mix = weights
    speed = float(rng.uniform(*sc.drift_px_per_frame))
    drift = _drift(rng, n_frames, speed)

    growth_px = float(rng.uniform(*sc.growth_px)) * zoom
    mean_rate_px_s = growth_px / duration
    dispersion = float(rng.uniform(*sc.growth_dispersion))
    longest = zoom * (sc.seed_length_px[1] + 2.5 * sc.growth_px[1])
    margin = 0.5 * longest + 8
    x_lo, y_lo = drift.min(0) - margin
    x_hi, y_hi = drift.max(0) + np.array([width, height]) + margin
    area_mpx = (x_hi - x_lo) * (y_hi - y_lo) / 1e6 / zoom**2

    induction = float(rng.uniform(*sc.induction_fraction)) * duration
    n_seed = int(rng.poisson(rng.uniform(*sc.seeds_per_mpx) * area_mpx))
    n_nuc = int(rng.poisson(rng.uniform(*sc.nuclei_per_mpx) * area_mpx))
    if n_seed + n_nuc > MAX_CRYSTALS:
        raise ValueError(
            f"the run would hold {n_seed + n_nuc} crystals (more than {MAX_CRYSTALS}); "
            "use fewer frames, a smaller frame or a sparser scenario"
        )
    nucleation_end = (
        duration
        if sc.nucleation_fraction == 1
        else induction + sc.nucleation_fraction * (duration - induction)
    )
    t_birth = np.concatenate([np.zeros(n_seed), rng.uniform(induction, nucleation_end, n_nuc)])
    length0 = np.concatenate(
        [
            _loguniform(rng, sc.seed_length_px, n_seed) * zoom,
            rng.uniform(*sc.nucleus_length_px, n_nuc) * zoom,
        ]
    )
    rate = mean_rate_px_s * np.exp(rng.normal(-0.5 * dispersion**2, dispersion, n_seed + n_nuc))

    # agglomerates: each parent carries 1-4 neighbours on the same rigid body
    parents = n_seed + n_nuc
    agg_frac = float(rng.uniform(*sc.agglomerate_fraction))
    n_children = np.where(rng.random(parents) < agg_frac, rng.integers(1, 5, parents), 0)
    parent_of = np.repeat(np.arange(parents), n_children)
    n_all = parents + len(parent_of)
    group = np.concatenate([np.arange(parents), parent_of])
    t_birth = np.concatenate([t_birth, t_birth[parent_of]])
    length0 = np.concatenate([length0, length0[parent_of] * rng.uniform(0.5, 1.0, len(parent_of))])
    rate = np.concatenate([rate, rate[parent_of] * rng.uniform(0.7, 1.1, len(parent_of))])
    final = length0 + rate * (duration - t_birth)
    offset = np.zeros((n_all, 2))
    if len(parent_of):
        reach = rng.uniform(0.15, 0.55, len(parent_of)) * 0.5 * (final[parent_of] + final[parents:])
        direction = rng.uniform(0, 2 * np.pi, len(parent_of))
        offset[parents:] = reach[:, None] * np.stack([np.cos(direction), np.sin(direction)], 1)

    # habits and outlines; agglomerates share the parent's habit
    habit = rng.choice(len(HABITS), size=parents, p=mix)
    habit = np.concatenate([habit, habit[parent_of]]).astype(np.int8)
    outlines = []
    for h in habit:
        name = HABITS[int(h)]
        aspect = float(_loguniform(rng, HABIT_ASPECT[name]))
        outlines.append(habit_outline(name, aspect, rng))
    ferets = np.array([feret_diameters(o) for o in outlines]).reshape(-1, 2)
    width_ratio = ferets[:, 1] / ferets[:, 0]
    area_ratio = np.array([polygon_area(o) for o in outlines])

    # group positions in the extended field (with a minimum gap when the scenario asks)
    group_xy = np.stack(
        [rng.uniform(x_lo, x_hi, parents), rng.uniform(y_lo, y_hi, parents)], axis=1
    )
    keep = np.ones(n_all, dtype=bool)
    if sc.min_gap_px is not None and parents:
        reach = 0.4 * final[:parents] + sc.min_gap_px * zoom
        placed = np.zeros(parents, dtype=bool)
        for i in np.argsort(-final[:parents]):
            for _ in range(30):
                others = placed.nonzero()[0]
                dist = np.hypot(*(group_xy[others] - group_xy[i]).T)
                if not np.any(dist < reach[others] + reach[i]):
                    placed[i] = True
                    break
                group_xy[i] = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
        keep = placed[group]

    angle0 = rng.uniform(0, 2 * np.pi, n_all)
    depth = np.clip(rng.normal(0.0, sc.depth_spread, parents), -1, 1)
    depth = np.clip(
        np.concatenate([depth, depth[parent_of] + rng.normal(0, 0.1, len(parent_of))]), -1, 1
    )

    # rigid-body motion of each group
    jitter_amp = rng.uniform(0.0, 1.0, (parents, 2, 2)) * rng.uniform(0.2, 1.0)
    jitter_freq = rng.uniform(0.005, 0.12, (parents, 2, 2))
    jitter_phase = rng.uniform(0, 2 * np.pi, (parents, 2, 2))
    rot_rate = rng.normal(0.0, 0.004, parents)
    rot_amp = rng.uniform(0.0, 0.03, parents)
    rot_freq = rng.uniform(0.005, 0.08, parents)
    rot_phase = rng.uniform(0, 2 * np.pi, parents)

    # bubbles: most stay for the run, some come and go
    n_bub = int(rng.poisson(rng.uniform(*sc.bubbles_per_mpx) * area_mpx))
    bubble_xy = np.stack([rng.uniform(x_lo, x_hi, n_bub), rng.uniform(y_lo, y_hi, n_bub)], 1)
    bubble_v = rng.normal(0.0, 0.4, (n_bub, 2))
    bubble_radius = _loguniform(rng, sc.bubble_radius_px, n_bub) * zoom
    bubble_depth = np.clip(rng.normal(0.0, 0.35, n_bub), -1, 1)
    transient = rng.random(n_bub) < 0.4
    on = np.where(transient, rng.integers(-n_frames, n_frames, n_bub), 0)
    life = np.ceil(rng.exponential(max(n_frames / 2, 1.0), n_bub)).astype(int) + 1
    off = np.where(transient, on + life, n_frames)

    # stacking order: a random permutation (rank); drop crystals the placement rejected
    z_order = rng.permutation(n_all)
    idx = np.flatnonzero(keep)
    groups_used, group_new = np.unique(group[idx], return_inverse=True)
    log.debug(
        "population: %d crystals (%d seeds, %d nuclei, %d in agglomerates), %d bubbles, zoom %.2f",
        len(idx),
        n_seed,
        n_nuc,
        len(parent_of),
        n_bub,
        zoom,
    )
    return Population(
        n_frames=n_frames,
        interval_s=float(config.interval_s),
        pixel_size_um=pixel_size,
        zoom=zoom,
        habit_mix=(float(mix[0]), float(mix[1]), float(mix[2])),
        growth_rate_um_s=mean_rate_px_s * pixel_size,
        drift_px=drift,
        habit=habit[idx],
        outlines=tuple(outlines[i] for i in idx),
        width_ratio=width_ratio[idx],
        area_ratio=area_ratio[idx],
        t_birth_s=t_birth[idx],
        length0_px=length0[idx],
        growth_px_s=rate[idx],
        group=group_new.astype(np.int64),
        offset_px=offset[idx],
        angle0=angle0[idx],
        z_order=np.argsort(np.argsort(z_order[idx])),
        depth=depth[idx],
        group_xy=group_xy[groups_used],
        jitter_amp=jitter_amp[groups_used],
        jitter_freq=jitter_freq[groups_used],
        jitter_phase=jitter_phase[groups_used],
        rot_rate=rot_rate[groups_used],
        rot_amp=rot_amp[groups_used],
        rot_freq=rot_freq[groups_used],
        rot_phase=rot_phase[groups_used],
        bubble_xy=bubble_xy,
        bubble_v=bubble_v,
        bubble_radius=bubble_radius,
        bubble_depth=bubble_depth,
        bubble_on=on,
        bubble_off=off,
    )
