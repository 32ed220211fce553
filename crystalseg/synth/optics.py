"""The look of a synthetic run and of its crystals, and the optical density each draws.

:class:`Appearance` is the look of one run (illumination, optics, camera), drawn from
its seed; :class:`CrystalOptics` the look of each crystal and bubble around it.
:func:`crystal_od` and :func:`bubble_od` turn one object's look and geometry into an
optical-density patch on its pixel box, before the defocus blur;
:mod:`crystalseg.synth.render` places, blurs and sums the patches into frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from crystalseg.synth.population import Population
from crystalseg.synth.scenarios import CONTRAST_RANGE, MIN_VISIBLE_OD

F32 = np.float32
#: Pixel box (y0, y1, x0, x1), end-exclusive; it may reach beyond the frame.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Appearance:
    """The look of one run, drawn from its seed (all intensities are fractions of full scale).

    Attributes
    ----------
    polarity : ``"dark"`` crystals darker than the background (transmitted light) or
        ``"bright"`` crystals brighter than a dark background (reflected light)
    background : mean background level
    bright_gain : brightness of a fully opaque crystal over the background (bright polarity)
    contrast : factor on every optical density
    body_od : range of the interior optical density of a crystal (negative: lensing, brighter)
    rim_od, rim_width_px : dark band at the crystal edge
    facet_od : shading amplitude of the bevel facets (by the angle to ``light_angle``)
    line_od, line_width_px : internal facet lines
    halo_od, halo_width_px : bright halo outside the edge (grows with defocus)
    light_angle : direction the light comes from (radians)
    inclusion_prob : probability that a crystal carries dark inclusions
    focus_blur_px, defocus_blur_px : Gaussian sigma in focus and the extra at depth 1
    psf_px : blur of the whole image by the optics
    gradient, gradient_angle, vignetting, texture : uneven illumination
    dust_per_mpx, smudges_per_mpx : stationary dirt on the window
    photons : photo-electrons at full scale (shot noise); read_noise : Gaussian sigma
    gamma : camera response exponent; flicker : RMS frame-to-frame lamp fluctuation
    prnu : RMS row and column gain pattern of the sensor
    jpeg_quality : 0, or the quality of a JPEG round trip (8-bit runs only), as in
        recordings saved as JPEG
    bit_depth : significant bits of a ``uint16`` run (12-bit cameras fill 0..4095)
    """

    polarity: Literal["dark", "bright"]
    background: float
    bright_gain: float
    contrast: float
    body_od: tuple[float, float]
    rim_od: float
    rim_width_px: float
    facet_od: float
    line_od: float
    line_width_px: float
    halo_od: float
    halo_width_px: float
    light_angle: float
    inclusion_prob: float
    focus_blur_px: float
    defocus_blur_px: float
    psf_px: float
    gradient: float
    gradient_angle: float
    vignetting: float
    texture: float
    dust_per_mpx: float
    smudges_per_mpx: float
    photons: float
    read_noise: float
    gamma: float
    flicker: float
    prnu: float
    jpeg_quality: int
    bit_depth: int


def draw_appearance(
    rng: np.random.Generator, contrast: tuple[float, float] = CONTRAST_RANGE
) -> Appearance:
    """Draw a run's :class:`Appearance` (domain randomisation of the look); its
    ``contrast`` log-uniformly from the given range."""
    polarity: Literal["dark", "bright"] = "bright" if rng.random() < 0.2 else "dark"
    body_lo = float(rng.uniform(-0.15, 0.25))
    return Appearance(
        polarity=polarity,
        background=float(rng.uniform(0.45, 0.85) if polarity == "dark" else rng.uniform(0.08, 0.3)),
        bright_gain=float(rng.uniform(1.5, 4.0)),
        contrast=float(np.exp(rng.uniform(math.log(contrast[0]), math.log(contrast[1])))),
        body_od=(body_lo, body_lo + float(rng.uniform(0.05, 0.7))),
        rim_od=float(rng.uniform(0.3, 1.5)),
        rim_width_px=float(rng.uniform(0.7, 2.5)),
        facet_od=float(rng.uniform(0.0, 0.35)),
        line_od=float(rng.uniform(0.0, 0.6)),
        line_width_px=float(rng.uniform(0.5, 1.2)),
        halo_od=float(rng.uniform(0.0, 0.25)),
        halo_width_px=float(rng.uniform(1.0, 4.0)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        inclusion_prob=float(rng.uniform(0.0, 0.4)),
        focus_blur_px=float(rng.uniform(0.0, 1.0)),
        defocus_blur_px=float(rng.uniform(0.5, 5.0)),
        psf_px=float(rng.uniform(0.0, 0.9)),
        gradient=float(rng.uniform(0.0, 0.25)),
        gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        vignetting=float(rng.uniform(0.0, 0.45)),
        texture=float(rng.uniform(0.0, 0.04)),
        dust_per_mpx=float(rng.uniform(0.0, 150.0)),
        smudges_per_mpx=float(rng.uniform(0.0, 30.0)),
        photons=float(np.exp(rng.uniform(math.log(200.0), math.log(20000.0)))),
        read_noise=float(rng.uniform(0.002, 0.015)),
        gamma=float(rng.uniform(0.8, 1.25)),
        flicker=float(rng.uniform(0.0, 0.02)),
        prnu=float(rng.uniform(0.0, 0.004)),
        jpeg_quality=int(rng.integers(50, 96)) if rng.random() < 0.3 else 0,
        bit_depth=int(rng.choice([10, 12, 14, 16])),
    )


@dataclass(frozen=True, eq=False)
class CrystalOptics:
    """Per-crystal look (struct of arrays, one entry per crystal of the population)."""

    body_od: np.ndarray
    top_od: np.ndarray
    rim_od: np.ndarray
    rim_width: np.ndarray
    rim_offset: np.ndarray
    rim_outside: np.ndarray
    bevel: np.ndarray
    line_od: np.ndarray
    line_width: np.ndarray
    facet_od: np.ndarray
    light_angle: np.ndarray
    halo_od: np.ndarray
    halo_width: np.ndarray
    blur: np.ndarray
    inclusions: tuple[np.ndarray, ...]  # per crystal (m, 4): u, v (outline coords), r, od
    bubble_ring_od: np.ndarray
    bubble_ring_frac: np.ndarray
    bubble_spot_od: np.ndarray
    bubble_blur: np.ndarray


def draw_optics(
    pop: Population,
    app: Appearance,
    rng: np.random.Generator,
    min_visible_od: float = MIN_VISIBLE_OD,
    rim_outside: tuple[float, float] = (1.0, 1.0),
) -> CrystalOptics:
    """Draw each crystal's and bubble's look around the run's :class:`Appearance`;
    every crystal keeps at least ``min_visible_od`` (after blur) to stay visible, and
    draws the part of its rim outside its outline by a factor from ``rim_outside``
    (drawn last, so that the default (1, 1) leaves every other draw as it was)."""
    n = pop.n_crystals
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    rim_width = app.rim_width_px * u(0.7, 1.3)
    inclusions = []
    has = rng.random(n) < app.inclusion_prob
    for i in range(n):
        if not has[i]:
            inclusions.append(np.zeros((0, 4)))
            continue
        m = int(rng.integers(1, 5))
        outline = pop.outlines[i]
        w = rng.dirichlet(np.ones(len(outline)), m) * 0.75  # inside: shrunk convex combination
        uv = w @ outline
        r = rng.uniform(0.04, 0.18, m) * pop.width_ratio[i]
        od = rng.uniform(0.1, 0.8, m)
        inclusions.append(np.column_stack([uv, r, od]))
    b = len(pop.bubble_radius)
    blur = app.focus_blur_px + app.defocus_blur_px * np.abs(pop.depth)
    body_od = u(*app.body_od)
    # every labelled crystal must stay visible: after its blur, the rim (or the body)
    # keeps at least min_visible_od of optical density
    rim_od = app.rim_od * u(0.6, 1.3)
    rim_peak = rim_od * rim_width / np.sqrt(rim_width**2 + blur**2)
    need = min_visible_od / app.contrast
    rim_od = np.where(
        (rim_peak < need) & (np.abs(body_od) < need), rim_od * need / rim_peak, rim_od
    )
    return CrystalOptics(
        body_od=body_od,
        top_od=rng.normal(0.0, 0.5 * app.facet_od + 1e-6, n),
        rim_od=rim_od,
        rim_width=rim_width,
        rim_offset=rim_width * u(0.0, 1.0),
        bevel=u(0.2, 0.65),
        line_od=app.line_od * u(0.3, 1.3),
        line_width=app.line_width_px * u(0.8, 1.2),
        facet_od=app.facet_od * u(0.3, 1.2),
        light_angle=app.light_angle + rng.normal(0.0, 0.3, n),
        halo_od=app.halo_od * u(0.3, 1.0) * (1.0 + 0.7 * pop.depth),
        halo_width=app.halo_width_px * (1.0 + np.abs(pop.depth)),
        blur=blur,
        inclusions=tuple(inclusions),
        bubble_ring_od=rng.uniform(0.6, 2.0, b),
        bubble_ring_frac=rng.uniform(0.25, 0.6, b),
        bubble_spot_od=rng.uniform(0.1, 0.6, b),
        bubble_blur=app.focus_blur_px + 0.6 * app.defocus_blur_px * np.abs(pop.bubble_depth),
        rim_outside=np.ones(n) if rim_outside == (1.0, 1.0) else u(*rim_outside),
    )


# --------------------------------------------------------------------------- patches


@dataclass(frozen=True, eq=False)
class EdgeDistances:
    """Signed distances of the pixel centres of ``box`` to a crystal's edges.

    Attributes
    ----------
    signed : ndarray (k, h, w), float32
        Signed distance to each of the k edge lines (negative inside).
    outline : ndarray (h, w), float32
        Their maximum: for a convex counter-clockwise polygon the signed distance to
        the outline inside (negative) and a lower bound outside.
    nx, ny : ndarray (k,), float32
        The edges' outward unit normals.
    box : Box
        The pixel box (y0, y1, x0, x1) the distances are on.
    """

    signed: np.ndarray
    outline: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    box: Box


def edge_distances(verts: np.ndarray, box: Box) -> EdgeDistances:
    """:class:`EdgeDistances` of every pixel centre of ``box`` to the polygon ``verts``
    (counter-clockwise, (k, 2) x/y in pixels)."""
    y0, y1, x0, x1 = box
    edges = np.roll(verts, -1, axis=0) - verts
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    nx = (edges[:, 1] / lengths).astype(F32)
    ny = (-edges[:, 0] / lengths).astype(F32)
    c = (nx * verts[:, 0] + ny * verts[:, 1]).astype(F32)
    xs = np.arange(x0, x1, dtype=F32)
    ys = np.arange(y0, y1, dtype=F32)
    s = nx[:, None, None] * xs[None, None, :] + (ny[:, None] * ys[None, :] - c[:, None])[:, :, None]
    return EdgeDistances(signed=s, outline=s.max(0), nx=nx, ny=ny, box=box)


def crystal_od(
    edges: EdgeDistances, i: int, opt: CrystalOptics, width_px: float, inclusions: np.ndarray
) -> np.ndarray:
    """Optical density patch (h, w) on ``edges.box`` of crystal i before defocus blur.

    ``edges.signed`` (k, h, w) are the signed distances to the k edge lines and
    ``edges.outline`` their maximum, the signed distance to the outline. The edge that
    attains the maximum names the bevel facet a pixel lies on; where the runner-up is
    as close, the pixel lies on a spoke between two facets. ``inclusions`` (m, 4) are
    x, y, radius (px) and optical density of its dark inclusions.
    """
    s, d, nx, ny, box = edges.signed, edges.outline, edges.nx, edges.ny, edges.box
    light = (math.cos(opt.light_angle[i]), math.sin(opt.light_angle[i]))
    shade_e = (opt.facet_od[i] * (nx * light[0] + ny * light[1])).astype(F32)
    best = s[0].copy()
    second = np.full_like(best, -np.inf)
    shade = np.full_like(best, shade_e[0])
    for e in range(1, len(s)):
        se = s[e]
        np.maximum(second, np.minimum(best, se), out=second)
        np.copyto(shade, shade_e[e], where=se > best)
        np.maximum(best, se, out=best)
    inside = np.clip(F32(0.5) - d, 0, 1)
    delta = F32(max(opt.bevel[i] * 0.5 * width_px, 0.5))
    bevel = special.expit((d + delta) / F32(0.6))  # 1 on the bevel facets, 0 on top
    od = inside * (F32(opt.body_od[i]) + bevel * shade + (1 - bevel) * F32(opt.top_od[i]))
    rim = (d + F32(opt.rim_offset[i])) / F32(opt.rim_width[i])
    rim_profile = np.exp(-rim * rim)
    if opt.rim_outside[i] < 1:  # the band stops at the outline, or fades there
        rim_profile *= inside + F32(opt.rim_outside[i]) * (1 - inside)
    od += F32(opt.rim_od[i]) * rim_profile
    if opt.line_od[i] > 0.01 and len(s) > 2:
        lw = F32(opt.line_width[i])
        spoke = (d - second) / lw
        inset = (d + delta) / lw
        lines = np.exp(-inset * inset) + bevel * np.exp(-spoke * spoke)
        od += F32(opt.line_od[i]) * inside * lines
    if opt.halo_od[i] > 0.01:
        halo = (d - F32(1.5 * opt.halo_width[i])) / F32(opt.halo_width[i])
        od -= F32(opt.halo_od[i]) * np.exp(-halo * halo) * np.clip(d, 0, 1)
    if len(inclusions):
        y0, y1, x0, x1 = box
        xs = np.arange(x0, x1, dtype=F32)[None, :]
        ys = np.arange(y0, y1, dtype=F32)[:, None]
        for cx, cy, r, dens in inclusions:
            r2 = F32(max(r, 0.7) ** 2)
            od += F32(dens) * np.exp(-((xs - F32(cx)) ** 2 + (ys - F32(cy)) ** 2) / r2)
    return od.astype(F32, copy=False)


def bubble_od(
    cx: float, cy: float, radius: float, ring_frac: float, ring_od: float, spot_od: float, box: Box
) -> np.ndarray:
    """Optical density of a bubble: thick dark annulus, grey inside, bright centre spot."""
    y0, y1, x0, x1 = box
    r = np.hypot(
        np.arange(x0, x1, dtype=F32)[None, :] - F32(cx),
        np.arange(y0, y1, dtype=F32)[:, None] - F32(cy),
    )
    inner = radius * (1 - ring_frac)
    soft = F32(0.7)
    ring = special.expit((r - F32(inner)) / soft) * special.expit((F32(radius) - r) / soft)
    core = special.expit((F32(inner) - r) / soft)
    spot = np.exp(-((r / F32(max(0.3 * inner, 0.8))) ** 2))
    return (F32(ring_od) * ring + F32(0.15 * ring_od) * core - F32(spot_od) * spot).astype(F32)
