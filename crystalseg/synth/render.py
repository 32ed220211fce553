"""Bright-field rendering of a synthetic run, frame by frame, with exact ground truth.

Image formation (``polarity="dark"``, transmitted bright field)::

    image = illumination * window * gain_t * exp(-contrast * sum_i OD_i)

where each crystal adds an optical density patch ``OD_i`` rendered on its own
bounding box plus a margin: interior body density, facet shading of a bevel
(the faces between the outline and an inset outline), dark facet lines along
the inset and the spokes between facets, a dark rim band at the edge, an
optional bright halo (negative density) outside, a few inclusions, all blurred
by a Gaussian whose sigma grows with the crystal's distance from the focal
plane. An object cut by the frame border is drawn beyond it as far as its blur
reaches, so it does not fade towards the border. Summing densities multiplies
transmissions. Bubbles add a thick dark annulus with a bright centre. ``window``
holds stationary dust and smudges; ``illumination`` a gradient, vignetting and a
faint low-frequency texture. The ``"bright"`` polarity (reflected light, as in
in-line probes) instead maps ``1 - exp(-OD)`` onto a dark background. Then a small
optical blur, a camera gamma, a sensor gain pattern, Poisson-Gaussian noise,
quantisation and, for some runs, a JPEG round trip.

Every look parameter is drawn per run (:class:`Appearance`) and per crystal
(:class:`~crystalseg.synth.optics.CrystalOptics`, whose optical-density patches
:mod:`crystalseg.synth.optics` draws) from the seed; frame t's noise and lamp
flicker come from a generator seeded by ``(seed, t)``, so frames render in any order
with identical pixels.

Ground truth is purely geometric: a pixel belongs to a crystal when its centre
lies inside the crystal's polygon; where polygons overlap the crystal in front
(the larger ``z_order``) owns it. Bubbles are background.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from crystalseg.errors import ConfigError
from crystalseg.synth.optics import (
    F32,
    Box,
    bubble_od,
    crystal_od,
    draw_appearance,
    draw_optics,
    edge_distances,
)
from crystalseg.synth.optics import Appearance as Appearance  # re-exported
from crystalseg.synth.optics import CrystalOptics as CrystalOptics  # re-exported
from crystalseg.synth.population import (
    STREAM_APPEARANCE,
    STREAM_FRAME,
    STREAM_WINDOW,
    build_population,
    stream,
)
from crystalseg.synth.scenarios import HABITS, SynthConfig

log = logging.getLogger(__name__)

#: Blurs below this sigma (px) are skipped; kernels end at BLUR_TRUNCATE sigmas.
MIN_BLUR = 0.3
BLUR_TRUNCATE = 3.0
#: Defocus blur (sigma, px) of window dust.
DUST_BLUR = (0.3, 1.5)
#: Largest total brightening (negative optical density) of overlapping halos.
HALO_LIMIT = 0.35

#: Columns of the per-frame crystal table and their units (micrometre columns are
#: added when the run is calibrated).
CRYSTAL_UNITS: dict[str, str] = {
    "frame": "1",
    "time_s": "s",
    "id": "1",
    "habit": "1",
    "agglomerate": "1",
    "area_px": "px^2",
    "ecd_px": "px",
    "length_px": "px",
    "width_px": "px",
    "polygon_area_px": "px^2",
    "centroid_x_px": "px",
    "centroid_y_px": "px",
    "orientation_deg": "deg",
    "touches_edge": "1",
    "occluded_fraction": "1",
    "blur_px": "px",
}
UM_COLUMNS: dict[str, tuple[str, str, int]] = {
    # name: (pixel column, units, power of the pixel size)
    "area_um2": ("area_px", "um^2", 2),
    "ecd_um": ("ecd_px", "um", 1),
    "length_um": ("length_px", "um", 1),
    "width_um": ("width_px", "um", 1),
    "polygon_area_um2": ("polygon_area_px", "um^2", 2),
}
DISTRACTOR_UNITS: dict[str, str] = {
    "frame": "1",
    "time_s": "s",
    "id": "1",
    "kind": "1",
    "x_px": "px",
    "y_px": "px",
    "radius_px": "px",
    "touches_edge": "1",
}


# --------------------------------------------------------------------------- patches


def _box(verts: np.ndarray, margin: float, height: int, width: int, reach: int = 0) -> Box | None:
    """Pixel box (y0, y1, x0, x1) of the vertices plus ``margin``, clipped to the frame
    grown by ``reach`` pixels on every side; None where it misses the frame.

    A box may thus reach beyond the frame: what lies just outside is drawn there too,
    so that its blur spills into the frame as a microscope's would (see
    :func:`_add_blurred`).
    """
    x0 = max(math.floor(verts[:, 0].min() - margin), -reach)
    x1 = min(math.ceil(verts[:, 0].max() + margin) + 1, width + reach)
    y0 = max(math.floor(verts[:, 1].min() - margin), -reach)
    y1 = min(math.ceil(verts[:, 1].max() + margin) + 1, height + reach)
    if max(x0, 0) >= min(x1, width) or max(y0, 0) >= min(y1, height):
        return None
    return y0, y1, x0, x1


def _blur_reach(sigma: float) -> int:
    """Pixels beyond the frame whose content a blur of ``sigma`` carries into it."""
    return math.ceil(BLUR_TRUNCATE * sigma) + 1 if sigma > MIN_BLUR else 0


def _in_frame(box: Box, shape: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the frame and of a patch on ``box`` where the two overlap."""
    y0, y1, x0, x1 = box
    fy0, fy1 = max(y0, 0), min(y1, shape[0])
    fx0, fx1 = max(x0, 0), min(x1, shape[1])
    frame = (slice(fy0, fy1), slice(fx0, fx1))
    patch = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    return frame, patch


def _add_blurred(target: np.ndarray, box: Box, patch: np.ndarray, sigma: float) -> None:
    """Blur ``patch`` (drawn on ``box``) and add the part inside the frame to ``target``.

    The box must reach :func:`_blur_reach` pixels beyond any frame border it crosses:
    an object cut by the border is then blurred as the continuing object it is, not
    faded towards the border as if nothing lay beyond.
    """
    if sigma > MIN_BLUR:
        patch = ndimage.gaussian_filter(patch, sigma, mode="constant", truncate=BLUR_TRUNCATE)
    frame, inside = _in_frame(box, target.shape)
    target[frame] += patch[inside]


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, eq=False)
class SynthFrame:
    """One rendered frame and its exact ground truth.

    Attributes
    ----------
    index : frame number t
    time_s : seconds since frame 0
    image : ndarray (y, x) uint8 or uint16
    labels : ndarray (y, x) int32
        Crystal id per pixel (stable across frames), 0 background.
    class_mask : ndarray (y, x) uint8
        1 crystal, 0 background (bubbles are background).
    crystals : DataFrame
        One row per crystal with at least one visible pixel; see :data:`CRYSTAL_UNITS`.
    distractors : DataFrame
        One row per bubble overlapping the frame; see :data:`DISTRACTOR_UNITS`.
    """

    index: int
    time_s: float
    image: np.ndarray
    labels: np.ndarray
    class_mask: np.ndarray
    crystals: pd.DataFrame
    distractors: pd.DataFrame


class SyntheticRun:
    """A synthetic crystallization run: population and look drawn once, frames on demand.

    Parameters
    ----------
    config : the run's :class:`SynthConfig`

    Attributes
    ----------
    config, scenario, population, appearance, optics
    time_s : ndarray (frames,) float64, seconds since the first frame
    pixel_size_um : micrometres per pixel, None for an uncalibrated config

    Examples
    --------
    >>> run = SyntheticRun(SynthConfig(frames=3, height=64, width=64, seed=1))
    >>> frame = run.render(2)
    >>> int((frame.labels > 0).sum()) == int(frame.class_mask.sum())
    True
    """

    def __init__(self, config: SynthConfig) -> None:
        if not isinstance(config, SynthConfig):
            raise ConfigError(f"expected a SynthConfig, got {type(config).__name__}")
        self.config = config
        self.scenario = config.scenario_params
        self.population = build_population(config)
        rng = stream(config.seed, STREAM_APPEARANCE)
        self.appearance = draw_appearance(rng, self.scenario.contrast)
        self.optics = draw_optics(
            self.population,
            self.appearance,
            rng,
            self.scenario.min_visible_od,
            tuple(self.scenario.rim_outside),  # type: ignore[arg-type]
        )
        self.time_s = np.arange(config.frames, dtype="float64") * float(config.interval_s)
        self.pixel_size_um: float | None = (
            self.population.pixel_size_um if config.calibrated else None
        )
        self._max_value = 255 if config.dtype == "uint8" else 2**self.appearance.bit_depth - 1

    def __len__(self) -> int:
        return self.config.frames

    def __repr__(self) -> str:
        c = self.config
        return (
            f"SyntheticRun(scenario={self.scenario.name!r}, frames={c.frames}, "
            f"{c.height}x{c.width}, seed={c.seed}, crystals={self.population.n_crystals})"
        )

    # ------------------------------------------------------------------ static parts

    @cached_property
    def background(self) -> np.ndarray:
        """ndarray (y, x) float32: illumination times window transmission (stationary)."""
        c, app = self.config, self.appearance
        rng = stream(c.seed, STREAM_WINDOW)
        h, w = c.height, c.width
        ys = np.linspace(-1, 1, h, dtype=F32)[:, None]
        xs = np.linspace(-1, 1, w, dtype=F32)[None, :]
        ca, sa = math.cos(app.gradient_angle), math.sin(app.gradient_angle)
        illum = 1 + F32(app.gradient) * (ca * xs + sa * ys) / F32(math.sqrt(2))
        illum = illum * (1 - F32(app.vignetting) * (xs * xs + ys * ys) / 2)
        for _ in range(4):
            k = rng.normal(0, 2.5, 2)
            illum = illum * (
                1
                + F32(app.texture)
                * np.cos(F32(k[0]) * xs + F32(k[1]) * ys + F32(rng.uniform(0, 6.3)))
            )
        od = np.zeros((h, w), dtype=F32)
        area_mpx = h * w / 1e6
        for _ in range(int(rng.poisson(app.dust_per_mpx * area_mpx))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = float(rng.uniform(0.6, 3.0))
            box = _box(np.array([[cx, cy]]), 3 * r + 4, h, w, _blur_reach(DUST_BLUR[1]))
            if box is not None:
                patch = _disc(cx, cy, r, box) * F32(rng.uniform(0.05, 0.5))
                _add_blurred(od, box, patch, float(rng.uniform(*DUST_BLUR)))
        for _ in range(int(rng.poisson(app.smudges_per_mpx * area_mpx))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = float(rng.uniform(8.0, 60.0))
            box = _box(np.array([[cx, cy]]), 1.6 * r + 4, h, w)
            if box is None:
                continue
            y0, y1, x0, x1 = box
            dist = np.hypot(
                np.arange(x0, x1, dtype=F32)[None, :] - F32(cx),
                np.arange(y0, y1, dtype=F32)[:, None] - F32(cy),
            )
            if rng.random() < 0.5:  # out-of-focus dust: a faint ring
                shape = np.exp(-(((dist - F32(r)) / F32(0.15 * r + 1)) ** 2))
            else:
                shape = np.exp(-((dist / F32(r)) ** 2))
            od[y0:y1, x0:x1] += shape * F32(rng.uniform(0.01, 0.07) * rng.choice([1, 1, -0.5]))
        prnu = 1 + F32(app.prnu) * (
            rng.standard_normal((h, 1), F32) + rng.standard_normal((1, w), F32)
        )
        return (F32(app.background) * illum * prnu * np.exp(-od)).astype(F32)

    # ------------------------------------------------------------------ frames

    def render(self, t: int) -> SynthFrame:
        """Render frame ``t`` (0 <= t < frames): image and ground truth.

        The result depends on ``(config, t)`` only, never on which frames were
        rendered before.
        """
        return self._render(self._check_index(t), image=True)

    def render_truth(self, t: int) -> SynthFrame:
        """Ground truth of frame ``t`` without the optics (``image`` is an empty array).

        Much faster than :meth:`render`; labels and tables equal those of ``render(t)``.
        """
        return self._render(self._check_index(t), image=False)

    def _check_index(self, t: int) -> int:
        if isinstance(t, bool) or not isinstance(t, int | np.integer):
            raise ConfigError(f"frame index must be an integer, got {t!r}")
        if not 0 <= t < self.config.frames:
            raise ConfigError(f"frame {t} is outside this run's frames 0..{self.config.frames - 1}")
        return int(t)

    def _render(self, t: int, *, image: bool) -> SynthFrame:
        c, pop, opt = self.config, self.population, self.optics
        h, w = c.height, c.width
        length = pop.length_px(t)
        centre, angle = pop.pose(t)
        born = ~np.isnan(length)
        # no vertex lies farther than one length (max Feret) from the centroid
        reach = np.where(born, length, 0) + 3 * opt.blur + 3 * opt.halo_width + 8
        near = (
            born
            & (centre[:, 0] + reach > 0)
            & (centre[:, 0] - reach < w)
            & (centre[:, 1] + reach > 0)
            & (centre[:, 1] - reach < h)
        )
        cand = np.flatnonzero(near)
        cand = cand[np.argsort(pop.z_order[cand], kind="stable")]  # back to front
        labels = np.zeros((h, w), dtype=np.int32)
        od = np.zeros((h, w), dtype=F32) if image else None
        own = np.zeros(len(cand), dtype=np.int64)
        for j, i in enumerate(cand.tolist()):
            verts = pop.vertices(i, centre[i], angle[i], length[i])
            width_px = length[i] * pop.width_ratio[i]
            if image:
                margin = 3 * opt.blur[i] + 2 * opt.rim_width[i] + 3 * opt.halo_width[i] + 4
            else:
                margin = 1.0
            box = _box(verts, margin, h, w, _blur_reach(float(opt.blur[i])) if image else 0)
            if box is None:
                continue
            edges = edge_distances(verts, box)
            in_frame, in_patch = _in_frame(box, labels.shape)
            raster = edges.outline[in_patch] <= 0
            own[j] = np.count_nonzero(raster)
            if own[j]:
                labels[in_frame][raster] = i + 1
            if od is not None:
                inc = opt.inclusions[i]
                if len(inc):
                    inc_xy = _place(inc[:, :2], centre[i], angle[i], length[i])
                    inc = np.column_stack([inc_xy, inc[:, 2] * length[i], inc[:, 3]])
                patch = crystal_od(edges, i, opt, width_px, inc)
                _add_blurred(od, box, patch, float(opt.blur[i]))

        # bubbles: distractors, never in the labels
        b_idx, b_xy = pop.bubbles_at(t)
        b_rows = []
        for k, (bx, by) in zip(b_idx, b_xy, strict=True):
            radius = pop.bubble_radius[k]
            centre_xy = np.array([[bx, by]])
            inner = _box(centre_xy, radius, h, w)
            if inner is None:  # the bubble itself lies outside the frame
                continue
            reach = _blur_reach(float(opt.bubble_blur[k])) if image else 0
            box = _box(centre_xy, radius + 3 * opt.bubble_blur[k] + 3, h, w, reach)
            assert box is not None
            edge = bx - radius < 0 or by - radius < 0 or bx + radius > w - 1 or by + radius > h - 1
            b_rows.append((k + 1, bx, by, radius, edge))
            if od is not None:
                patch = bubble_od(
                    bx,
                    by,
                    radius,
                    opt.bubble_ring_frac[k],
                    opt.bubble_ring_od[k],
                    opt.bubble_spot_od[k],
                    box,
                )
                _add_blurred(od, box, patch, float(opt.bubble_blur[k]))

        crystals = self._crystal_table(t, labels, cand, own, length, centre, angle)
        distractors = self._distractor_table(t, b_rows)
        if od is not None:
            pixels = self._compose(t, od)
        else:
            pixels = np.zeros((0, 0), dtype=c.dtype)
        return SynthFrame(
            index=t,
            time_s=float(self.time_s[t]),
            image=pixels,
            labels=labels,
            class_mask=(labels > 0).astype(np.uint8),
            crystals=crystals,
            distractors=distractors,
        )

    def _compose(self, t: int, od: np.ndarray) -> np.ndarray:
        app = self.appearance
        rng = stream(self.config.seed, STREAM_FRAME, t)
        gain = F32(1 + app.flicker * rng.standard_normal())
        od *= F32(app.contrast)
        # halos add up where crystals crowd; saturate the brightening softly
        np.copyto(od, F32(-HALO_LIMIT) * np.tanh(od / F32(-HALO_LIMIT)), where=od < 0)
        trans = np.exp(-od)
        if app.polarity == "dark":
            img = self.background * gain * trans
        else:
            img = self.background * gain * (1 + F32(app.bright_gain) * (1 - trans))
        if app.psf_px > 0.3:
            img = ndimage.gaussian_filter(img, app.psf_px, mode="nearest", truncate=3.0)
        np.clip(img, 0, None, out=img)
        img = img ** F32(app.gamma)
        sigma = np.sqrt(img / F32(app.photons) + F32(app.read_noise**2))
        img += sigma * rng.standard_normal(img.shape, dtype=F32)
        np.clip(img, 0, 1, out=img)
        pixels = np.rint(img * F32(self._max_value)).astype(self.config.dtype)
        if app.jpeg_quality and pixels.dtype == np.uint8:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=app.jpeg_quality)
            pixels = np.asarray(Image.open(buffer), dtype=np.uint8)
        return pixels

    def _crystal_table(
        self,
        t: int,
        labels: np.ndarray,
        cand: np.ndarray,
        own: np.ndarray,
        length: np.ndarray,
        centre: np.ndarray,
        angle: np.ndarray,
    ) -> pd.DataFrame:
        pop = self.population
        ids = cand + 1
        counts = np.bincount(labels.ravel(), minlength=pop.n_crystals + 1)
        area = counts[ids]
        vis = area > 0
        ids, idx, area, own = ids[vis], cand[vis], area[vis], own[vis]
        border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        on_edge = np.zeros(pop.n_crystals + 1, dtype=bool)
        on_edge[border] = True
        lengths = length[idx]
        orient = np.degrees(np.mod(angle[idx] + np.pi / 2, np.pi) - np.pi / 2)
        table: dict[str, Any] = {
            "frame": np.full(len(ids), t, dtype=np.int32),
            "time_s": np.full(len(ids), self.time_s[t]),
            "id": ids.astype(np.int32),
            "habit": np.array([HABITS[int(h)] for h in pop.habit[idx]], dtype=object),
            "agglomerate": pop.agglomerate[idx],
            "area_px": area.astype(np.int64),
            "ecd_px": np.sqrt(4.0 * area / np.pi),
            "length_px": lengths,
            "width_px": lengths * pop.width_ratio[idx],
            "polygon_area_px": lengths**2 * pop.area_ratio[idx],
            "centroid_x_px": centre[idx, 0],
            "centroid_y_px": centre[idx, 1],
            "orientation_deg": orient,
            "touches_edge": on_edge[ids],
            "occluded_fraction": 1.0 - area / np.maximum(own, 1),
            "blur_px": self.optics.blur[idx],
        }
        if self.pixel_size_um is not None:
            for name, (src, _, power) in UM_COLUMNS.items():
                table[name] = table[src] * self.pixel_size_um**power
        return pd.DataFrame(table)

    def _distractor_table(self, t: int, rows: list[tuple]) -> pd.DataFrame:
        n = len(rows)
        cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 5
        table: dict[str, Any] = {
            "frame": np.full(n, t, dtype=np.int32),
            "time_s": np.full(n, self.time_s[t]),
            "id": np.asarray(cols[0], dtype=np.int32),
            "kind": np.array(["bubble"] * n, dtype=object),
            "x_px": np.asarray(cols[1], dtype=float),
            "y_px": np.asarray(cols[2], dtype=float),
            "radius_px": np.asarray(cols[3], dtype=float),
            "touches_edge": np.asarray(cols[4], dtype=bool),
        }
        if self.pixel_size_um is not None:
            table["radius_um"] = table["radius_px"] * self.pixel_size_um
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ provenance

    def settings(self) -> dict[str, Any]:
        """Everything that made this run: config, scenario ranges and the values drawn."""
        c, pop = self.config, self.population
        config = dataclasses.asdict(c)
        config["scenario"] = self.scenario.name
        return {
            "config": config,
            "scenario": dataclasses.asdict(self.scenario),
            "appearance": dataclasses.asdict(self.appearance),
            "drawn": {
                "pixel_size_um": pop.pixel_size_um,
                "zoom": pop.zoom,
                "habit_mix": dict(zip(HABITS, pop.habit_mix, strict=True)),
                "growth_rate_um_s": pop.growth_rate_um_s,
                "n_crystals": pop.n_crystals,
                "n_bubbles": len(pop.bubble_radius),
            },
        }

    def population_table(self) -> pd.DataFrame:
        """One row per crystal of the population: habit, birth, size law, agglomerate.

        ``length_px(t) = length0_px + growth_px_s * (time_s - t_birth_s)`` for
        ``time_s >= t_birth_s``.
        """
        pop = self.population
        table: dict[str, Any] = {
            "id": np.arange(1, pop.n_crystals + 1, dtype=np.int32),
            "habit": np.array([HABITS[int(h)] for h in pop.habit], dtype=object),
            "agglomerate": pop.agglomerate,
            "t_birth_s": pop.t_birth_s,
            "length0_px": pop.length0_px,
            "growth_px_s": pop.growth_px_s,
            "aspect_ratio": 1.0 / pop.width_ratio,
            "z_order": pop.z_order.astype(np.int32),
            "depth": pop.depth,
            "blur_px": self.optics.blur,
        }
        if self.pixel_size_um is not None:
            table["length0_um"] = pop.length0_px * self.pixel_size_um
            table["growth_um_s"] = pop.growth_px_s * self.pixel_size_um
        return pd.DataFrame(table)


def _place(uv: np.ndarray, centre: np.ndarray, angle: float, length: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return uv * length @ np.array([[c, s], [-s, c]]) + centre


def _disc(cx: float, cy: float, r: float, box: Box) -> np.ndarray:
    y0, y1, x0, x1 = box
    dist = np.hypot(
        np.arange(x0, x1, dtype=F32)[None, :] - F32(cx),
        np.arange(y0, y1, dtype=F32)[:, None] - F32(cy),
    )
    return np.clip(F32(r + 0.5) - dist, 0, 1)
