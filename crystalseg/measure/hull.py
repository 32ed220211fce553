"""The convex hull of every label of a frame at once: Feret diameters, convex area and
perimeter (the hull part of :mod:`crystalseg.measure.features`).

The hull is scikit-image's, the hull of the pixel *edge midpoints*. Its left and right
chains come from the leftmost / rightmost pixel of every row of a label, made convex by
vectorised peeling of reflex vertices. Hull vertices live on the half-pixel grid; they
are handled in doubled integer coordinates (Y = 2 y, X = 2 x), where every test is
exact.
"""

from __future__ import annotations

import math

import numpy as np

# Perimeter of the diamond (pixel edge midpoints of one pixel): the hull of the edge
# midpoints is the hull of the pixel centres dilated by it (a Minkowski sum), and
# perimeters of convex sets add under Minkowski sums.
_DIAMOND_PERIMETER = 2.0 * math.sqrt(2.0)

# Largest number of vertex pairs handled in one vectorised block (memory bound).
_MAX_PAIRS = 4_000_000


def convex_hull_features(
    g: np.ndarray, y: np.ndarray, xmin: np.ndarray, xmax: np.ndarray, n_labels: int
) -> dict[str, np.ndarray]:
    """Feret diameters, convex area and convex perimeter of every label.

    Parameters
    ----------
    g, y, xmin, xmax : ndarray (rows,), int64
        For every row of every label, sorted by (label, row): the label index
        (0..n_labels-1), the row, and the columns of its leftmost and rightmost pixel.
    n_labels : int

    Returns
    -------
    dict of ndarray (n_labels,), float64
        ``feret_diameter_max``, ``feret_diameter_min``, ``area_convex`` (pixel centres
        inside or on the hull) and ``perimeter_convex``.
    """
    left = _peel(*_chain_candidates(g, y, 2 * xmin))
    gr, yr, xr_neg = _peel(*_chain_candidates(g, y, -2 * xmax))
    right = (gr, yr, -xr_neg)

    area_convex = _lattice_count(left, right, n_labels)
    perim_h = _hull_perimeter(left, right, n_labels) / 2.0
    fmax, fmin = _feret(left, right, n_labels)
    return {
        "feret_diameter_max": fmax,
        "feret_diameter_min": fmin,
        "area_convex": area_convex.astype(np.float64),
        "perimeter_convex": np.clip(perim_h - _DIAMOND_PERIMETER, 0.0, None),
    }


def _chain_candidates(
    g: np.ndarray, y: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate vertices of the left hull chain, one per half-row, in (label, Y) order.

    ``xx`` is the doubled column of the row's leftmost pixel (for the right
    chain: minus the doubled rightmost column, mirroring it into a left chain).
    Each row contributes its pixel's three leftmost edge midpoints: top
    (Y - 1, X), left (Y, X - 1), bottom (Y + 1, X); a bottom and the next row's
    top share a Y and merge into the leftmost of the two.
    """
    k = len(g)
    yy = 2 * y
    cy = np.empty((k, 3), dtype=np.int64)
    cx = np.empty((k, 3), dtype=np.int64)
    cy[:, 0], cy[:, 1], cy[:, 2] = yy - 1, yy, yy + 1
    cx[:, 0], cx[:, 1], cx[:, 2] = xx, xx - 1, xx
    adjacent = (g[1:] == g[:-1]) & (y[1:] == y[:-1] + 1)
    cx[:-1, 2] = np.where(adjacent, np.minimum(cx[:-1, 2], cx[1:, 0]), cx[:-1, 2])
    keep = np.ones((k, 3), dtype=bool)
    keep[1:, 0] = ~adjacent
    cg = np.repeat(g, 3).reshape(k, 3)
    return cg[keep], cy[keep], cx[keep]


def _peel(g: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left convex chain of each label: remove vertices not strictly left of their chord.

    Points come sorted by (label, Y) with Y strictly increasing within a label;
    the first and last point of each label stay. A point on or right of the
    segment joining its current neighbours is no hull vertex, whatever else is
    removed in the same pass, so all such points go at once; passes repeat until
    none is left. The result is the convex minorant of X as a function of Y.
    """
    while len(g) >= 3:
        ga, gc = g[:-2], g[2:]
        ya, yb, yc = y[:-2], y[1:-1], y[2:]
        xa, xb, xc = x[:-2], x[1:-1], x[2:]
        drop = (ga == gc) & ((xb - xa) * (yc - ya) >= (xc - xa) * (yb - ya))
        if not drop.any():
            break
        keep = np.ones(len(g), dtype=bool)
        keep[1:-1] = ~drop
        g, y, x = g[keep], y[keep], x[keep]
    return g, y, x


def _lattice_count(
    left: tuple[np.ndarray, np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_labels: int,
) -> np.ndarray:
    """Number of pixel centres inside or on each hull (= convex_hull_image pixel count)."""
    gl, xl = _chain_rows(*left, round_up=True)
    gr, xr = _chain_rows(*right, round_up=False)
    if len(gl) != len(gr):  # pragma: no cover - both chains span the same rows
        raise RuntimeError("hull chains cover different rows; this is a bug in crystalseg")
    width = np.clip(xr - xl + 1, 0, None)
    return np.bincount(gl, weights=width, minlength=n_labels)


def _chain_rows(
    g: np.ndarray, y: np.ndarray, x: np.ndarray, *, round_up: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Column bound of the chain at every pixel row it spans (ceil for left, floor for right)."""
    same = g[1:] == g[:-1]
    y0, y1 = y[:-1][same], y[1:][same]
    x0, x1 = x[:-1][same], x[1:][same]
    eg = g[:-1][same]
    # Rows r with y0 <= 2 r < y1 (half-open: each row belongs to exactly one edge).
    r_first = (y0 + 1) // 2
    n_rows = (y1 + 1) // 2 - r_first
    total = int(n_rows.sum())
    edge = np.repeat(np.arange(len(y0)), n_rows)
    start = np.cumsum(n_rows) - n_rows
    rows = r_first[edge] + (np.arange(total) - start[edge])
    dy = (y1 - y0)[edge]
    num = x0[edge] * dy + (x1 - x0)[edge] * (2 * rows - y0[edge])
    den = 2 * dy
    col = -((-num) // den) if round_up else num // den
    return eg[edge], col


def _hull_perimeter(
    left: tuple[np.ndarray, np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_labels: int,
) -> np.ndarray:
    """Perimeter of each hull in doubled coordinates (chains plus top and bottom edges)."""
    total = np.zeros(n_labels)
    for g, y, x in (left, right):
        same = g[1:] == g[:-1]
        seg = np.hypot(np.diff(y)[same], np.diff(x)[same]).astype(np.float64)
        total += np.bincount(g[:-1][same], weights=seg, minlength=n_labels)
    (gl, _, xl), (gr, _, xr) = left, right
    first_l, last_l = _group_ends(gl)
    first_r, last_r = _group_ends(gr)
    total += (xr[first_r] - xl[first_l]) + (xr[last_r] - xl[last_l])
    return total


def _group_ends(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first and last element of each (consecutive, sorted) group."""
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    last = np.r_[first[1:] - 1, len(g) - 1]
    return first, last


def _feret(
    left: tuple[np.ndarray, np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_labels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum Feret diameter and minimum caliper width of each hull, in pixels."""
    (gl, yl, xl), (gr, yr, xr) = left, right
    # Vertices: both chains, grouped by label.
    vg = np.concatenate([gl, gr])
    order = np.argsort(vg, kind="stable")
    vg = vg[order]
    vy = np.concatenate([yl, yr])[order].astype(np.float64)
    vx = np.concatenate([xl, xr])[order].astype(np.float64)
    # Edges: consecutive chain vertices, plus the top and bottom edges.
    fl, ll = _group_ends(gl)
    fr, lr = _group_ends(gr)
    parts_g, parts_a, parts_b = [], [], []
    for g, y, x in (left, right):
        same = g[1:] == g[:-1]
        idx = np.flatnonzero(same)
        parts_g.append(g[idx])
        parts_a.append(np.stack([y[idx], x[idx]]))
        parts_b.append(np.stack([y[idx + 1], x[idx + 1]]))
    for il, ir in ((fl, fr), (ll, lr)):
        parts_g.append(gl[il])
        parts_a.append(np.stack([yl[il], xl[il]]))
        parts_b.append(np.stack([yr[ir], xr[ir]]))
    eg = np.concatenate(parts_g)
    ea = np.concatenate(parts_a, axis=1)
    eb = np.concatenate(parts_b, axis=1)
    nonzero = (ea != eb).any(axis=0)
    eg, ea, eb = eg[nonzero], ea[:, nonzero], eb[:, nonzero]
    order = np.argsort(eg, kind="stable")
    eg, ea, eb = eg[order], ea[:, order].astype(np.float64), eb[:, order].astype(np.float64)

    n_v = np.bincount(vg, minlength=n_labels)
    v_start = np.cumsum(n_v) - n_v
    n_e = np.bincount(eg, minlength=n_labels)

    # Maximum Feret: largest vertex-vertex distance.
    fmax2 = np.zeros(n_labels)
    for lo, hi in _group_chunks(n_v * n_v):
        gsel = np.arange(lo, hi)
        i_idx, j_idx, blocks = _pairs(n_v[gsel], v_start[gsel], v_start[gsel], n_v[gsel])
        d2 = (vy[i_idx] - vy[j_idx]) ** 2 + (vx[i_idx] - vx[j_idx]) ** 2
        fmax2[gsel] = np.maximum.reduceat(d2, blocks)

    # Minimum caliper width: for every edge, the farthest vertex from its line;
    # the smallest of these over the edges.
    e_start = np.cumsum(n_e) - n_e
    fmin = np.zeros(n_labels)
    for lo, hi in _group_chunks(n_e * n_v):
        gsel = np.arange(lo, hi)
        e_idx, v_idx, _ = _pairs(n_e[gsel], e_start[gsel], v_start[gsel], n_v[gsel])
        dy = eb[0, e_idx] - ea[0, e_idx]
        dx = eb[1, e_idx] - ea[1, e_idx]
        dist = np.abs(dx * (vy[v_idx] - ea[0, e_idx]) - dy * (vx[v_idx] - ea[1, e_idx]))
        dist /= np.hypot(dx, dy)
        per_edge_blocks = np.flatnonzero(np.r_[True, e_idx[1:] != e_idx[:-1]])
        width = np.maximum.reduceat(dist, per_edge_blocks)
        edge_g = eg[e_idx[per_edge_blocks]]
        group_blocks = np.flatnonzero(np.r_[True, edge_g[1:] != edge_g[:-1]])
        fmin[edge_g[group_blocks]] = np.minimum.reduceat(width, group_blocks)
    return np.sqrt(fmax2) / 2.0, fmin / 2.0


def _group_chunks(cost: np.ndarray) -> list[tuple[int, int]]:
    """Split consecutive groups into ranges whose summed cost stays under _MAX_PAIRS."""
    n = len(cost)
    if n == 0:
        return []
    cum = np.cumsum(cost)
    if cum[-1] <= _MAX_PAIRS:
        return [(0, n)]
    chunks, lo = [], 0
    while lo < n:
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + _MAX_PAIRS, side="right"))
        hi = max(hi, lo + 1)
        chunks.append((lo, hi))
        lo = hi
    return chunks


def _pairs(
    n_a: np.ndarray, a_start: np.ndarray, b_start: np.ndarray, n_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (a, b) index pairs within each group, grouped; and the start of each group's block.

    Group k owns a-elements ``a_start[k] : a_start[k] + n_a[k]`` and b-elements
    ``b_start[k] : b_start[k] + n_b[k]``; every group has at least one of each.
    """
    a_of = np.repeat(np.arange(len(n_a)), n_a)  # group (local) of each a-element
    a_idx = a_start[a_of] + (np.arange(len(a_of)) - np.repeat(np.cumsum(n_a) - n_a, n_a))
    reps = n_b[a_of]
    i_idx = np.repeat(a_idx, reps)
    pair_start = np.cumsum(reps) - reps
    j_local = np.arange(len(i_idx)) - np.repeat(pair_start, reps)
    j_idx = b_start[np.repeat(a_of, reps)] + j_local
    block_sizes = n_a * n_b
    blocks = np.cumsum(block_sizes) - block_sizes
    return i_idx, j_idx, blocks
