"""Pooled windows: the size distribution of consecutive frames taken together.

Where a frame holds too few crystals for a D-value (``MeasureSettings.min_count``),
pooling the particles of consecutive frames gives one. ``measure --window 60s``
(or ``--window 5``, frames) cuts the run into non-overlapping windows from its
first frame and writes, per window, what ``psd`` holds per frame: densities,
D-values, moment means and their 95 % intervals, counts, into group
``psd_window`` of the run store, read by ``xarray.open_zarr(run,
group="psd_window")`` (dim ``time``: the middle of the window's first and last
frame times; coordinates ``time_start``, ``time_end``, ``frame_start``,
``frame_stop`` and ``frames``).

A crystal that stays in view is counted once in each frame of the window it is
seen in: the pooled distribution weighs crystals by the frames they are seen in,
as the mean of the frames' distributions would. Such repeats make the window's
particles no independent sample, so its intervals resample whole frames
(:func:`~crystalseg.measure.intervals.pooled_intervals`), and the count per frame
gets a bootstrap interval over the window's frames instead of a Poisson one.

Windows are computed from the ``particles`` table once every chunk is measured
(:func:`write_psd_windows`), so they need no second pass over the images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from crystalseg.dims import SIZE_BIN, TIME
from crystalseg.errors import ConfigError
from crystalseg.measure.distributions import distribution_statistics
from crystalseg.measure.intervals import mean_interval, pooled_intervals
from crystalseg.measure.results import (
    EXCLUDED_REASONS,
    PARTICLES_GROUP,
    PSD_GROUP,
    PSD_RENAMES,
    WINDOW_GROUP,
    iter_particles,
    psd_variable_attrs,
    size_units,
)
from crystalseg.measure.settings import MeasureSettings, parse_window
from crystalseg.store import default_compressor
from crystalseg.store.location import RunLike, remove_tree, run_path

log = logging.getLogger(__name__)

_WINDOW_META: dict[str, tuple[str, str]] = {
    "count_per_frame": ("mean counted particles per frame of the window", "1"),
    "count_per_frame_lower": (
        "lower end of the 95 % interval of the mean count per frame (bootstrap over frames)",
        "1",
    ),
    "count_per_frame_upper": (
        "upper end of the 95 % interval of the mean count per frame (bootstrap over frames)",
        "1",
    ),
}


def assign_windows(time_s: np.ndarray, window: str) -> np.ndarray:
    """Window index of every frame: non-overlapping windows from the first frame.

    Parameters
    ----------
    time_s : ndarray, shape (n_frames,)
        Frame times in seconds (increasing).
    window : str
        ``"60s"`` (seconds) or ``"5"`` (frames), see
        :func:`~crystalseg.measure.settings.parse_window`.

    Returns
    -------
    ndarray of int64, shape (n_frames,)
        0, 0, ..., 1, 1, ...; windows without a frame are skipped (indices stay
        consecutive).
    """
    length, unit = parse_window(window)
    n = len(time_s)
    if unit == "frames":
        raw = np.arange(n) // int(length)
    else:
        t = np.asarray(time_s, dtype=np.float64)
        if n and not np.all(np.isfinite(t)):
            raise ConfigError(
                f"window {window!r} needs frame times; the run's times are not all finite. "
                "Give the window in frames instead, e.g. '5'."
            )
        raw = np.floor((t - t[0]) / length + 1e-9).astype(np.int64) if n else np.zeros(0, int)
    _, index = np.unique(raw, return_inverse=True)
    return index.astype(np.int64)


def window_distributions(
    frames: np.ndarray,
    sizes: np.ndarray,
    weights: np.ndarray,
    *,
    psd: xr.Dataset,
    settings: MeasureSettings,
    excluded: dict[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Window-level PSD and statistics from the counted particles of a run.

    Parameters
    ----------
    frames, sizes, weights : ndarray, shape (n,)
        Frame index, size and number weight of every counted particle.
    psd : Dataset
        The run's per-frame ``psd`` (its times, counts per frame, number per mm²).
    settings : MeasureSettings
        With ``window`` set; its bins and ``min_count`` apply to the pooled particles.
    excluded : dict of str to ndarray, optional
        Per reason, the excluded particles of every frame (shape (n_frames,)).

    Returns
    -------
    Dataset
        Dims (time, size_bin): the variables of :func:`distribution_statistics`
        (``count`` named ``count_kept``: the particles pooled) for every window,
        ``count_per_frame`` and its bounds, ``number_density`` (mean over the
        frames) and its bounds, ``count_detected`` and ``count_excluded_<reason>``
        (sums), with coordinates ``time_start``, ``time_end``, ``frame_start``,
        ``frame_stop`` (one past the last) and ``frames``.
    """
    if settings.window is None:
        raise ConfigError("settings.window is None; set a window such as '60s' or '5'.")
    time_s = np.asarray(psd[TIME].values, dtype=np.float64)
    index = assign_windows(time_s, settings.window)
    n_windows = int(index.max()) + 1 if len(index) else 0
    edges = settings.bin_edges()
    counts = np.asarray(psd["count_kept"].values, dtype=np.float64)
    density = np.asarray(psd["number_density"].values, dtype=np.float64)
    detected = np.asarray(psd["count_detected"].values, dtype=np.float64)
    particle_window = index[np.asarray(frames, dtype=np.int64)]
    rows: list[dict[str, Any]] = []
    for w in range(n_windows):
        members = np.flatnonzero(index == w)
        mine = particle_window == w
        stats = distribution_statistics(
            sizes[mine],
            weights[mine],
            bins=edges,
            min_count=settings.min_count,
            intervals=pooled_intervals(sizes[mine], weights[mine], frames[mine])
            if np.count_nonzero(mine) >= settings.min_count
            else None,
        )
        row = {PSD_RENAMES.get(k, k): v[1] for k, v in stats.items()}
        row["count_per_frame"] = float(counts[members].mean())
        row["count_per_frame_lower"], row["count_per_frame_upper"] = mean_interval(counts[members])
        row["number_density"] = float(np.mean(density[members]))
        row["number_density_lower"], row["number_density_upper"] = mean_interval(density[members])
        row["count_detected"] = int(detected[members].sum())
        for reason, per_frame in (excluded or {}).items():
            row[f"count_excluded_{reason}"] = int(per_frame[members].sum())
        row["time_start"], row["time_end"] = time_s[members[0]], time_s[members[-1]]
        row["frame_start"], row["frame_stop"] = int(members[0]), int(members[-1]) + 1
        row["frames"] = len(members)
        rows.append(row)
    return _to_dataset(rows, psd=psd, settings=settings)


def _to_dataset(
    rows: list[dict[str, Any]], *, psd: xr.Dataset, settings: MeasureSettings
) -> xr.Dataset:
    pixel = psd.attrs.get("pixel_size_um")
    unit = size_units(pixel)
    coord_names = ("time_start", "time_end", "frame_start", "frame_stop", "frames")
    names = [k for k in rows[0] if k not in coord_names] if rows else []
    data_vars = {}
    for name in names:
        values = np.stack([np.asarray(r[name]) for r in rows])
        dims = (TIME, SIZE_BIN) if values.ndim == 2 else (TIME,)
        attrs = (
            {"long_name": _WINDOW_META[name][0], "units": _WINDOW_META[name][1]}
            if name in _WINDOW_META
            else psd_variable_attrs(name, pixel_size_um=pixel)
        )
        data_vars[name] = (dims, values, attrs)
    start = np.array([r["time_start"] for r in rows], dtype=np.float64)
    end = np.array([r["time_end"] for r in rows], dtype=np.float64)
    coords = {
        TIME: (TIME, (start + end) / 2, {"units": "s", "long_name": "middle of the window"}),
        "time_start": (TIME, start, {"units": "s", "long_name": "time of its first frame"}),
        "time_end": (TIME, end, {"units": "s", "long_name": "time of its last frame"}),
        "frame_start": (TIME, [r["frame_start"] for r in rows], {"long_name": "first frame"}),
        "frame_stop": (TIME, [r["frame_stop"] for r in rows], {"long_name": "one past last frame"}),
        "frames": (TIME, [r["frames"] for r in rows], {"long_name": "frames in the window"}),
        SIZE_BIN: psd[SIZE_BIN],
        "size_bin_lower": psd["size_bin_lower"],
        "size_bin_upper": psd["size_bin_upper"],
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(
        {k: v for k, v in psd.attrs.items() if k not in ("title", "interval_description")}
    )
    ds.attrs["title"] = f"particle size distribution per window of {settings.window}"
    ds.attrs["window"] = settings.window
    ds.attrs["size_units"] = unit
    ds.attrs["interval_description"] = (
        "95 % intervals of sampling noise only, by a bootstrap over the window's frames "
        "(a crystal in view in several frames counts once per frame; frames are resampled "
        "whole); windows of fewer than 5 frames with particles resample the pooled "
        f"particles; windows with fewer than {settings.min_count} pooled particles have "
        "NaN D-values (below_min_count)"
    )
    return ds


def write_psd_windows(
    run: RunLike,
    settings: MeasureSettings,
    *,
    rows: int = 1 << 18,
    output: Callable[[str], str] = str,
) -> int:
    """Compute the pooled windows of a measured run and write group ``psd_window``.

    Called once when every chunk is measured (the ``particles`` table is
    assembled); with ``settings.window`` None it removes a ``psd_window`` of an
    earlier measurement instead.

    Parameters
    ----------
    run : path of the run store
    settings : MeasureSettings
        The measurement's settings (``window``, ``min_count``, ``size_column``, bins).
    rows : int
        Particle rows read at a time.
    output : callable
        Where each group of the measurement lies in the store (its name by default;
        a replacement writes them beside the finished ones,
        :meth:`crystalseg.store.StageProgress.output`).

    Returns
    -------
    int
        Windows written (0 without a window).
    """
    path = run_path(run)
    target = path / output(WINDOW_GROUP)
    remove_tree(target)
    if settings.window is None:
        return 0
    column = settings.size_column
    frames, sizes, weights = [], [], []
    for block in iter_particles(path, rows=rows, table=output(PARTICLES_GROUP)):
        kept = block["kept"].to_numpy(dtype=bool)
        frames.append(block["frame"].to_numpy(dtype=np.int64)[kept])
        sizes.append(block[column].to_numpy(dtype=np.float64)[kept])
        weights.append(block["weight"].to_numpy(dtype=np.float64)[kept])
    with xr.open_zarr(str(path), group=output(PSD_GROUP), consolidated=False) as psd:
        names = ["count_kept", "number_density", "count_detected"]
        reasons = [r for r in EXCLUDED_REASONS[1:] if f"count_excluded_{r}" in psd]
        small = psd[names + [f"count_excluded_{r}" for r in reasons]].load()
        small.attrs = dict(psd.attrs)
        small = small.assign_coords(
            {k: psd[k].load() for k in (SIZE_BIN, "size_bin_lower", "size_bin_upper")}
        )
    ds = window_distributions(
        np.concatenate(frames),
        np.concatenate(sizes),
        np.concatenate(weights),
        psd=small,
        settings=settings,
        excluded={r: small[f"count_excluded_{r}"].values for r in reasons},
    )
    encoding = {name: {"compressors": default_compressor()} for name in ds.data_vars}
    ds.to_zarr(
        str(path),
        group=output(WINDOW_GROUP),
        mode="w",
        consolidated=False,
        zarr_format=3,
        encoding=encoding,
    )
    log.info("wrote %d windows of %s into %s", ds.sizes[TIME], settings.window, path)
    return int(ds.sizes[TIME])


__all__ = ["WINDOW_GROUP", "assign_windows", "window_distributions", "write_psd_windows"]
