"""Where measurement results live in the run store, and how they are read back out.

* group ``psd``: one xarray Dataset, dims (time, size_bin) and (time, length_bin,
  width_bin), CF attributes (``units``, ``long_name``) on every variable and the
  measurement settings in the dataset attributes; created empty (NaN) before the
  first chunk is measured and filled chunk by chunk, so parallel writers never
  share a zarr chunk.
* group ``_measure``: staging of the particle table, one zarr group per measured
  chunk of frames (``chunk_00000040`` for frames from 40), written as each chunk
  completes so that an interrupted measurement keeps its work.
* group ``particles``: the particle table (one row per particle per frame, one
  1-D array per column along ``particle``), assembled from the staging groups
  when every chunk is done, streaming, so memory stays flat in the run length.
  :func:`crystalseg.store.read_table` and ``xarray.open_zarr(path,
  group="particles")`` read it; :mod:`crystalseg.export` writes it as CSV, xlsx or
  Parquet.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.dims import LENGTH_BIN, PARTICLE, SIZE_BIN, TIME, WIDTH_BIN
from crystalseg.errors import RunFormatError, StageStateError
from crystalseg.measure.distributions import frame_distributions
from crystalseg.measure.features import FEATURE_COLUMNS, feature_units, measure_frame
from crystalseg.measure.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE
from crystalseg.measure.settings import MeasureSettings
from crystalseg.store import crystalseg_version, default_compressor, stage_info
from crystalseg.store.location import RunLike, RunPath, remove_tree, run_path

log = logging.getLogger(__name__)

#: Names in the run store of what the measurement writes, declared once for writers
#: and readers (:class:`crystalseg.measure.reader.MeasuredRun`).
PSD_GROUP = "psd"
WINDOW_GROUP = "psd_window"
PARTICLES_GROUP = "particles"
STAGING_GROUP = "_measure"
STAGE = "measure"
#: The groups a finished measurement leaves in the store (``psd_window`` only with ``window``).
MEASURE_GROUPS: tuple[str, ...] = (PSD_GROUP, WINDOW_GROUP, PARTICLES_GROUP)

#: Why a particle is not counted in the distributions, by the code stored in staging.
EXCLUDED_REASONS: tuple[str, ...] = (
    "",
    "edge",
    "out_of_focus",
    "larger_than_frame",
    "low_confidence",
    "too_small",
)

#: Columns of the particle table, in order.
PARTICLE_COLUMNS: tuple[str, ...] = (
    "frame",
    "time_s",
    *FEATURE_COLUMNS,
    "kept",
    "excluded_reason",
    "weight",
)

_LONG_NAMES: dict[str, str] = {
    "frame": "frame index",
    "time_s": "time since first frame",
    "label": "particle id within its frame",
    "area": "projected area",
    "equivalent_diameter_area": "equivalent circle diameter",
    "ecd": "equivalent circle diameter",
    "feret_diameter_max": "maximum Feret diameter (length)",
    "feret_diameter_min": "minimum Feret diameter (width)",
    "aspect_ratio": "maximum over minimum Feret diameter",
    "axis_major_length": "major axis of the ellipse of equal second moments",
    "axis_minor_length": "minor axis of the ellipse of equal second moments",
    "orientation": "angle between the row axis and the major axis",
    "perimeter": "perimeter",
    "perimeter_convex": "perimeter of the convex hull",
    "circularity": "4 pi area / perimeter^2",
    "area_convex": "area of the convex hull",
    "solidity": "area / convex area",
    "convexity": "convex perimeter / perimeter",
    "centroid_y": "centroid row",
    "centroid_x": "centroid column",
    "bbox_min_y": "bounding box first row",
    "bbox_min_x": "bounding box first column",
    "bbox_max_y": "bounding box row after the last",
    "bbox_max_x": "bounding box column after the last",
    "intensity_mean": "mean raw intensity",
    "sharpness": "focus score: mean squared intensity gradient over the outline",
    "confidence": "mean foreground probability of the segmentation model over the particle",
    "touches_edge": "particle touches the frame edge",
    "kept": "counted in the distributions",
    "excluded_reason": "why the particle is not counted ('' when kept)",
    "weight": "number weight in the distributions (Miles-Lantuejoul factor, 0 if excluded)",
}

_PSD_META: dict[str, tuple[str, str]] = {
    # name: (long name, units: "size" for the size unit, "density" for the field density)
    "count_kept": ("particles counted in the distributions", "1"),
    "number": ("weighted number of particles counted (edge-corrected count)", "1"),
    "count_detected": ("particles found in the frame, counted or not", "1"),
    "count_edge": ("particles touching the frame edge", "1"),
    "count_elongated": ("counted particles at or above the elongated aspect ratio", "1"),
    "number_density": ("weighted number of particles per area of field", "density"),
    "q0": ("number-based size density per log10 size", "1"),
    "q3": ("volume-based size density per log10 size", "1"),
    "fraction_outside_number": ("number fraction outside the size bins", "1"),
    "fraction_outside_volume": ("volume fraction outside the size bins", "1"),
    "d10_number": ("number-based D10", "size"),
    "d50_number": ("number-based median size D50", "size"),
    "d90_number": ("number-based D90", "size"),
    "d10_volume": ("volume-based D10", "size"),
    "d50_volume": ("volume-based median size D50", "size"),
    "d90_volume": ("volume-based D90", "size"),
    "d_1_0": ("number mean size D[1,0]", "size"),
    "d_3_2": ("Sauter mean size D[3,2]", "size"),
    "d_4_3": ("De Brouckere mean size D[4,3]", "size"),
    "span_volume": ("span (D90 - D10) / D50, volume basis", "1"),
    "aspect_ratio_mean": ("number-weighted mean aspect ratio", "1"),
    "circularity_mean": ("number-weighted mean circularity", "1"),
    "projected_area_fraction": ("fraction of the field covered by particles", "1"),
    "length_width": (
        "weighted number of elongated crystals by length (max Feret) and width (min Feret)",
        "1",
    ),
}
_REASON_TEXT = {
    "edge": "touching the frame edge",
    "out_of_focus": "out of focus (below min_sharpness)",
    "larger_than_frame": "larger than the frame",
    "low_confidence": "low model confidence (below min_confidence)",
    "too_small": "smaller than min_area_px",
}
for _reason in EXCLUDED_REASONS[1:]:
    _PSD_META[f"count_excluded_{_reason}"] = (
        f"particles found but not counted: {_REASON_TEXT[_reason]}",
        "1",
    )
_PSD_META["below_min_count"] = (
    "fewer counted particles than min_count: D-values and moment means are NaN",
    "1",
)
#: How each interval is made (the ``method`` attribute of its bounds).
_ORDER_STATISTIC = (
    "exact distribution-free order-statistic (binomial) interval, interpolated "
    "(Hettmansperger-Sheather); bootstrap when the weights differ"
)
_BOOTSTRAP = "percentile bootstrap over the particles"
_POISSON = "exact (Garwood) Poisson interval of the count"
_INTERVAL_METHODS = {
    **{name: _ORDER_STATISTIC for name in ("d10_number", "d50_number", "d90_number")},
    **{name: _BOOTSTRAP for name in ("d10_volume", "d50_volume", "d90_volume", "d_3_2", "d_4_3")},
    "count_kept": _POISSON,
    "number_density": _POISSON + ", times number / count per field area",
}
for _name in _INTERVAL_METHODS:
    _long, _units = _PSD_META[_name]
    _PSD_META[f"{_name}_lower"] = (f"lower end of the 95 % interval of the {_long}", _units)
    _PSD_META[f"{_name}_upper"] = (f"upper end of the 95 % interval of the {_long}", _units)
_INT_VARS = frozenset(
    {"count_kept", "count_detected", "count_edge", "count_elongated"}
    | {f"count_excluded_{r}" for r in EXCLUDED_REASONS[1:]}
)
_BOOL_VARS = frozenset({"below_min_count"})


def psd_variable_attrs(name: str, *, pixel_size_um: float | None) -> dict[str, str]:
    """CF ``long_name`` and ``units`` of a variable of ``psd`` (and ``psd_window``),
    with ``method`` and ``ancillary_variables`` for the interval bounds."""
    long_name, kind = _PSD_META[name]
    unit = size_units(pixel_size_um)
    density_units = "mm-2" if pixel_size_um is not None else "1"
    attrs = {
        "long_name": long_name,
        "units": {"size": unit, "density": density_units}.get(kind, kind),
    }
    base = name.removesuffix("_lower").removesuffix("_upper")
    if base != name and base in _INTERVAL_METHODS:
        attrs["method"] = _INTERVAL_METHODS[base]
        attrs["confidence"] = "0.95"
        attrs["n"] = "count_kept (the particles behind the statistic)"
    elif name in _INTERVAL_METHODS:
        attrs["ancillary_variables"] = f"{name}_lower {name}_upper count_kept"
    if name.startswith("number_density") and pixel_size_um is None:
        attrs["comment"] = "NaN: the run has no pixel size"
    return attrs


#: psd names of entries of frame_distributions that would shadow Dataset methods.
PSD_RENAMES = {"count": "count_kept"}


# --------------------------------------------------------------------------- layout


def particle_column_attrs(pixel_size_um: float | None) -> dict[str, dict[str, str]]:
    """CF ``units`` and ``long_name`` of every column of the particle table."""
    units = feature_units(pixel_size_um)
    units.update({"frame": "1", "time_s": "s", "kept": "1", "excluded_reason": "1", "weight": "1"})
    return {c: {"units": units[c], "long_name": _LONG_NAMES[c]} for c in PARTICLE_COLUMNS}


def size_units(pixel_size_um: float | None) -> str:
    """Unit of sizes: "um" for calibrated runs, "px" otherwise."""
    return "um" if pixel_size_um is not None else "px"


def psd_variables(settings: MeasureSettings) -> dict[str, tuple[tuple[str, ...], np.dtype]]:
    """Name -> (dims without time, dtype) of every per-frame variable of ``psd``."""
    empty = measure_frame(np.zeros((1, 1), dtype=np.int32))
    empty["weight"] = np.zeros(0)
    dist = frame_distributions(empty, bins=settings.bin_edges(), weight_column="weight")
    names = [PSD_RENAMES.get(k, k) for k in dist] + [
        "count_detected",
        *(f"count_excluded_{r}" for r in EXCLUDED_REASONS[1:]),
        "count_kept_lower",
        "count_kept_upper",
        "number_density",
        "number_density_lower",
        "number_density_upper",
    ]
    out: dict[str, tuple[tuple[str, ...], np.dtype]] = {}
    for name in names:
        source = {v: k for k, v in PSD_RENAMES.items()}.get(name, name)
        dims = dist[source][0] if source in dist else ()
        dtype = np.int64 if name in _INT_VARS else np.bool_ if name in _BOOL_VARS else np.float64
        out[name] = (tuple(dims), np.dtype(dtype))
    return out


def psd_attrs(
    settings: MeasureSettings,
    *,
    pixel_size_um: float | None,
    mask_identity: dict[str, Any],
    frame_shape: tuple[int, int],
) -> dict[str, Any]:
    """Dataset attributes of ``psd``: how every number in it was made."""
    low, high, count = settings.bins
    unit = size_units(pixel_size_um)
    edge_text = {
        "exclude": "particles touching the frame edge are excluded (biases sizes low "
        "only through the loss of large particles; see count_edge)",
        "miles-lantuejoul": "particles touching the frame edge are excluded and the others "
        "weighted by the Miles-Lantuejoul correction (H W) / ((H - h)(W - w))",
        "keep": "particles touching the frame edge are kept as measured (their sizes are "
        "biased low)",
    }[settings.edge]
    return {
        "title": "particle size distribution per frame",
        "crystalseg_version": crystalseg_version(),
        "measure_settings": json.dumps(settings.to_dict()),
        "edge_treatment": settings.edge,
        "edge_treatment_description": edge_text,
        "size_column": settings.size_column,
        "size_basis": f"{_LONG_NAMES[settings.size_column]} ({settings.size_column}); number "
        "basis q0 counts particles (times their weight), volume basis q3 weights each by "
        "size^3 (a sphere of that size)",
        "size_units": unit,
        "bins": [low, high, count],
        "bin_spacing": "logarithmic",
        "pixel_size_um": pixel_size_um,
        "frame_shape_px": list(frame_shape),
        "min_area_px": settings.min_area_px,
        "min_count": settings.min_count,
        "interval_confidence": CONFIDENCE,
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "interval_description": "95 % intervals (<name>_lower, <name>_upper) of sampling "
        "noise only: they treat the frame's counted particles as a random sample of the "
        "population in view and do not cover segmentation or calibration bias; "
        f"frames with fewer than {settings.min_count} counted particles have NaN D-values "
        "(below_min_count)",
        "split": settings.split,
        "min_sharpness": settings.min_sharpness,
        "mask": json.dumps(mask_identity),
    }


def create_psd(
    path: RunPath,
    settings: MeasureSettings,
    *,
    time_s: np.ndarray,
    frames_per_chunk: int,
    pixel_size_um: float | None,
    mask_identity: dict[str, Any],
    frame_shape: tuple[int, int],
    into: str = PSD_GROUP,
) -> None:
    """Create group ``psd`` (or ``into``: where a replacement writes it) with every
    variable filled with NaN (or 0 for counts)."""
    edges = settings.bin_edges()
    centres = np.sqrt(edges[:-1] * edges[1:])
    n = len(time_s)
    unit = size_units(pixel_size_um)
    data_vars = {}
    for name, (dims, dtype) in psd_variables(settings).items():
        shape = (n, *(len(centres) for _ in dims))
        chunks = (frames_per_chunk, *(len(centres) for _ in dims))
        fill = 0 if dtype.kind == "i" else False if dtype.kind == "b" else np.nan
        attrs = psd_variable_attrs(name, pixel_size_um=pixel_size_um)
        data_vars[name] = (
            (TIME, *dims),
            da.full(shape, fill, dtype=dtype, chunks=chunks),
            attrs,
        )
    bin_attrs = {"units": unit, "long_name": "geometric centre of the size bin"}
    coords = {
        TIME: (TIME, np.asarray(time_s, dtype=np.float64), {"units": "s", "long_name": "time"}),
        SIZE_BIN: (SIZE_BIN, centres, bin_attrs),
        "size_bin_lower": (SIZE_BIN, edges[:-1], {"units": unit, "long_name": "lower bin edge"}),
        "size_bin_upper": (SIZE_BIN, edges[1:], {"units": unit, "long_name": "upper bin edge"}),
        LENGTH_BIN: (LENGTH_BIN, centres, {**bin_attrs, "long_name": "length bin centre"}),
        WIDTH_BIN: (WIDTH_BIN, centres, {**bin_attrs, "long_name": "width bin centre"}),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(
        psd_attrs(
            settings,
            pixel_size_um=pixel_size_um,
            mask_identity=mask_identity,
            frame_shape=frame_shape,
        )
    )
    encoding = {name: {"compressors": default_compressor()} for name in ds.data_vars}
    ds.to_zarr(
        str(path),
        group=into,
        mode="w",
        compute=False,
        consolidated=False,
        zarr_format=3,
        encoding=encoding,
    )


def write_psd_chunk(
    path: RunPath, start: int, values: dict[str, np.ndarray], *, into: str = PSD_GROUP
) -> None:
    """Write the per-frame variables of frames ``start:start + len`` into ``psd`` (or
    ``into``)."""
    psd = zarr.open_group(str(path / into), mode="r+", use_consolidated=False)
    for name, value in values.items():
        arr = psd[name]
        assert isinstance(arr, zarr.Array)
        arr[start : start + len(value)] = value


# --------------------------------------------------------------------------- staging


def _staging_name(start: int) -> str:
    return f"chunk_{start:08d}"


def prepare_staging(path: RunPath, *, fresh: bool) -> None:
    """Create the staging group (emptied when ``fresh``)."""
    staging = path / STAGING_GROUP
    if fresh:
        remove_tree(staging)
    zarr.open_group(str(path), mode="r+", use_consolidated=False).require_group(STAGING_GROUP)


#: Columns of a staged chunk, in order: the particle columns with the reason as a code.
STAGED_COLUMNS: tuple[str, ...] = tuple(
    "excluded_code" if c == "excluded_reason" else c for c in PARTICLE_COLUMNS
)


def write_staged_particles(path: RunPath, start: int, table: pd.DataFrame) -> None:
    """Write one chunk's particle rows into ``_measure/chunk_<start>`` (replacing it).

    All columns are numbers (ids and pixel positions far below 2**53, flags 0/1,
    the exclusion reason as its code), so they travel as one float64 array
    (rows, columns): one write per chunk instead of one per column.
    """
    values = np.empty((len(table), len(STAGED_COLUMNS)), dtype=np.float64)
    for j, name in enumerate(STAGED_COLUMNS):
        values[:, j] = table[name].to_numpy(dtype=np.float64)
    group = zarr.open_group(
        str(path / STAGING_GROUP / _staging_name(start)), mode="w", zarr_format=3
    )
    arr = group.create_array(
        "rows",
        shape=values.shape,
        chunks=(max(len(values), 1), len(STAGED_COLUMNS)),
        dtype=np.float64,
        fill_value=0.0,
        compressors=default_compressor(),
    )
    if len(values):
        arr[:] = values
    group.attrs.update({"rows": len(values), "columns": list(STAGED_COLUMNS)})


def _rows(group: zarr.Group) -> int:
    value = group.attrs.asdict().get("rows", 0)
    return int(value) if isinstance(value, int | float) else 0


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise RunFormatError(f"'{name}' in the measurement results is not an array")
    return node


def _staged_group(path: RunPath, start: int) -> zarr.Group:
    where = path / STAGING_GROUP / _staging_name(start)
    try:
        return zarr.open_group(str(where), mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StageStateError(
            f"measurement of '{path}' lost the particles of frames from {start}; "
            "rerun with overwrite=True (--overwrite)"
        ) from exc


def assemble_particles(
    path: RunPath,
    chunks: list[tuple[int, int]],
    *,
    pixel_size_um: float | None,
    attrs: dict[str, Any],
    block_rows: int = 1 << 16,
    into: str = PARTICLES_GROUP,
) -> int:
    """Copy the staged chunks, in time order, into group ``particles`` (or ``into``: where
    a replacement writes it); returns the row count.

    Rows are gathered into blocks of ``block_rows`` (the chunk length of the
    output arrays) and written block by block, so memory is one block plus one
    staged chunk whatever the run length.
    """
    groups = [_staged_group(path, start) for start, _ in chunks]
    total = sum(_rows(g) for g in groups)

    remove_tree(path / into)
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    parent = into.rpartition("/")[0]
    if parent:
        root.require_group(parent)
    out = root.create_group(into)
    out.attrs.update({**attrs, "columns": list(PARTICLE_COLUMNS)})
    column_attrs = particle_column_attrs(pixel_size_um)
    arrays: dict[str, zarr.Array] = {}
    for name in PARTICLE_COLUMNS:
        text = name == "excluded_reason"
        arr = out.create_array(
            name,
            shape=(total,),
            chunks=(max(1, min(total, block_rows)),),
            dtype=str if text else _COLUMN_DTYPES.get(name, np.float64),
            fill_value=None if text else 0,
            dimension_names=(PARTICLE,),
            compressors=None if text else default_compressor(),
        )
        arr.attrs.update(column_attrs[name])
        arrays[name] = arr
    reasons = np.asarray(EXCLUDED_REASONS, dtype=object)

    def write(block: np.ndarray, offset: int) -> None:
        for j, name in enumerate(PARTICLE_COLUMNS):
            col = block[:, j]
            if name == "excluded_reason":
                values = reasons[col.astype(np.intp)].astype(str)
            else:
                values = col.astype(_COLUMN_DTYPES.get(name, np.float64))
            arrays[name][offset : offset + len(block)] = values

    offset, buffer = 0, []
    buffered = 0
    for group in groups:
        if _rows(group) == 0:
            continue
        buffer.append(np.asarray(_array(group, "rows")[:]))
        buffered += len(buffer[-1])
        while buffered >= block_rows:
            rows = np.concatenate(buffer)
            write(rows[:block_rows], offset)
            offset += block_rows
            buffer, buffered = [rows[block_rows:]], len(rows) - block_rows
    if buffered:
        write(np.concatenate(buffer), offset)
        offset += buffered
    return offset


_COLUMN_DTYPES: dict[str, Any] = {
    "frame": np.int64,
    "label": np.int64,
    "bbox_min_y": np.int64,
    "bbox_min_x": np.int64,
    "bbox_max_y": np.int64,
    "bbox_max_x": np.int64,
    "touches_edge": np.bool_,
    "kept": np.bool_,
}


def remove_particles(path: RunPath) -> None:
    """Delete the ``particles`` table (when a new measurement starts)."""
    particles = path / PARTICLES_GROUP
    remove_tree(particles)


def remove_staging(path: RunPath) -> None:
    """Delete the staging group (after the stage is marked finished)."""
    staging = path / STAGING_GROUP
    remove_tree(staging)


# --------------------------------------------------------------------------- reading out


def _particles_group(path: RunPath, *, table: str | None = None) -> zarr.Group:
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if table is None:
        info = stage_info(path).get(STAGE)
        if info is None or info.get("status") != "finished" or PARTICLES_GROUP not in root:
            raise StageStateError(
                f"run '{path}' has no finished measurement; run 'crystalseg measure {path}' first"
            )
    name = PARTICLES_GROUP if table is None else table
    node = root[name]
    if not isinstance(node, zarr.Group):
        raise RunFormatError(f"'{name}' in '{path}' is not a table group")
    return node


def iter_particles(
    run: RunLike, *, rows: int = 1 << 18, table: str | None = None
) -> Iterator[pd.DataFrame]:
    """The particle table of a measured run, in blocks of at most ``rows`` rows.

    Parameters
    ----------
    run : path of the run store
    rows : rows per block (memory is one block)
    table : str, optional
        Where in the store to read a table that a measurement is assembling (its last
        steps, such as the pooled windows, read it before the stage is finished; a
        replacement assembles it beside the finished one). None: the finished table.

    Yields
    ------
    DataFrame, columns :data:`PARTICLE_COLUMNS`
    """
    group = _particles_group(run_path(run), table=table)
    # Tables written before a column existed (``confidence``) read it as NaN.
    arrays = {name: _array(group, name) for name in PARTICLE_COLUMNS if name in group}
    total = int(arrays["frame"].shape[0])
    for lo in range(0, max(total, 1), rows):
        hi = min(lo + rows, total)
        block = {}
        for name in PARTICLE_COLUMNS:
            if name not in arrays:
                block[name] = np.full(hi - lo, np.nan)
                continue
            values = np.asarray(arrays[name][lo:hi])
            if values.dtype.kind in "TU":
                values = values.astype(object)
            block[name] = values
        yield pd.DataFrame(block)


def summarize_measurement(run: RunLike) -> dict[str, Any]:
    """What the CLI prints after ``crystalseg measure``: counts, D50 at start and end, where.

    Returns
    -------
    dict
        ``path``, ``frames``, ``particles`` (rows of the table), ``particles_counted``
        (kept), ``size_column``, ``size_units``, ``edge_treatment``, ``d50_start``
        and ``d50_end`` (number-based D50 of the first and last frame with a D50,
        i.e. at least ``min_count`` counted particles, NaN if none),
        ``time_start_s`` and ``time_end_s`` (those frames' times), ``count_start``
        and ``count_end``, ``psd`` and ``particles_table``
        (where the results are: ``"<run> (group psd)"``), ``settings``,
        ``segment_resize`` (the factor the mask was segmented at, 1 if not resized),
        ``d50_start_lower``/``_upper`` and ``d50_end_lower``/``_upper`` (95 %
        interval, NaN for runs measured without), ``excluded`` (particles not
        counted, by reason, over the run: ``particles`` is ``particles_counted``
        plus these), ``min_count``, ``frames_with_particles``,
        ``frames_below_min_count`` (frames with particles but no D-values),
        ``suggested_window`` (:func:`suggest_window`, None unless frames fall below
        the minimum) and ``windows`` (windows in group ``psd_window``).

    Raises
    ------
    StageStateError
        The run has no finished measurement.
    """
    path = run_path(run)
    group = _particles_group(path)
    kept = _array(group, "kept")
    n_rows = int(kept.shape[0])
    n_kept = 0
    for lo in range(0, n_rows, 1 << 20):
        n_kept += int(np.count_nonzero(np.asarray(kept[lo : lo + (1 << 20)])))
    with xr.open_zarr(str(path), group=PSD_GROUP, consolidated=None) as ds:
        names = [n for n in ds.data_vars if ds[n].dims == (TIME,)]
        small = ds[names].load()
        attrs = dict(ds.attrs)
    small.attrs = attrs
    count = small["count_kept"].values
    d50 = small["d50_number"].values
    time = small[TIME].values
    counts = frame_counts(small, None)
    excluded = {c: int(counts[c].sum()) for c in counts.columns if c not in ("counted", "found")}
    below = (
        small["below_min_count"].values & (count > 0)
        if "below_min_count" in small
        else np.zeros(len(count), dtype=bool)
    )
    # The first and last frames with a D50 (enough counted particles), else with any.
    present = np.flatnonzero(np.isfinite(d50))
    if not len(present):
        present = np.flatnonzero(count > 0)
    first = int(present[0]) if len(present) else None
    last = int(present[-1]) if len(present) else None

    def at(values: np.ndarray, index: int | None) -> float:
        return float(values[index]) if index is not None else math.nan

    def bound(name: str, index: int | None) -> float:
        return at(small[name].values, index) if name in small else math.nan

    return {
        "path": str(path),
        "frames": len(count),
        "particles": n_rows,
        "particles_counted": n_kept,
        "size_column": attrs.get("size_column"),
        "size_units": attrs.get("size_units"),
        "edge_treatment": attrs.get("edge_treatment"),
        "d50_start": at(d50, first),
        "d50_end": at(d50, last),
        "d50_start_lower": bound("d50_number_lower", first),
        "d50_start_upper": bound("d50_number_upper", first),
        "d50_end_lower": bound("d50_number_lower", last),
        "d50_end_upper": bound("d50_number_upper", last),
        "excluded": excluded,
        "min_count": attrs.get("min_count"),
        "frames_with_particles": int(np.count_nonzero(count > 0)),
        "frames_below_min_count": int(np.count_nonzero(below)),
        "suggested_window": suggest_window(small) if below.any() else None,
        "windows": _window_count(path),
        "time_start_s": at(time, first),
        "time_end_s": at(time, last),
        "count_start": int(count[first]) if first is not None else 0,
        "count_end": int(count[last]) if last is not None else 0,
        "psd": f"{path} (group {PSD_GROUP})",
        "particles_table": f"{path} (group {PARTICLES_GROUP})",
        "settings": json.loads(attrs.get("measure_settings", "{}")),
        "segment_resize": _segment_resize(path),
    }


def frame_counts(psd: xr.Dataset, particles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per frame, the particles counted and those excluded by reason: they add up to those found.

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` (``count_kept``, ``count_detected`` and, from this release on,
        ``count_excluded_<reason>``).
    particles : DataFrame, optional
        The particle table (``frame``, ``excluded_reason``), for runs measured before
        ``psd`` held the reasons.

    Returns
    -------
    DataFrame
        Index ``frame``; columns ``counted``, one per exclusion reason that occurs
        (``edge``, ``too_small``, ...; ``excluded`` when the reasons are unknown) and
        ``found``; ``counted`` plus the reasons is ``found`` in every row.
    """
    counted = np.asarray(psd["count_kept"].values, dtype=np.int64)
    found = np.asarray(psd["count_detected"].values, dtype=np.int64)
    out = pd.DataFrame({"counted": counted}, index=pd.RangeIndex(len(counted), name="frame"))
    reasons = [r for r in EXCLUDED_REASONS[1:] if f"count_excluded_{r}" in psd]
    if reasons:
        for r in reasons:
            out[r] = np.asarray(psd[f"count_excluded_{r}"].values, dtype=np.int64)
    elif particles is not None and "excluded_reason" in particles:
        excluded = particles[particles["excluded_reason"].astype(str) != ""]
        table = pd.crosstab(excluded["frame"], excluded["excluded_reason"].astype(str))
        for r in table.columns:
            out[r] = table[r].reindex(out.index, fill_value=0).to_numpy(dtype=np.int64)
    else:
        out["excluded"] = found - counted
    reason_columns = [c for c in out.columns if c != "counted"]
    out = out[["counted", *[c for c in reason_columns if out[c].any()]]]
    out["found"] = found
    return out


def suggest_window(psd: xr.Dataset, min_count: int | None = None) -> str | None:
    """A ``--window`` that pools enough particles where frames hold fewer than ``min_count``.

    Parameters
    ----------
    psd : Dataset
        Group ``psd`` of a measured run (``count_kept``, ``time``; ``min_count`` from
        its attributes when not given).
    min_count : int, optional

    Returns
    -------
    str or None
        ``"60s"`` (evenly spaced frames: the frames times the interval, rounded up
        to a whole second) or ``"5"`` (frames): enough frames that a window of
        frames at the lower quartile of the counts (frames with particles) holds
        ``min_count``; None when no frame has a particle, one frame suffices or
        the run is too short for such a window.
    """
    if min_count is None:
        min_count = int(psd.attrs.get("min_count") or 0)
    counts = np.asarray(psd["count_kept"].values, dtype=np.float64)
    nonzero = counts[counts > 0]
    if not min_count or not len(nonzero):
        return None
    per_frame = max(float(np.percentile(nonzero, 25)), 1.0)
    frames = math.ceil(min_count / per_frame)
    if frames <= 1 or frames > len(counts):
        return None
    time_s = np.asarray(psd[TIME].values, dtype=np.float64)
    steps = np.diff(time_s)
    if len(steps) and np.all(np.isfinite(steps)) and np.ptp(steps) <= 0.01 * np.median(steps):
        return f"{math.ceil(frames * float(np.median(steps))):d}s"
    return str(frames)


def _window_count(path: RunPath) -> int:
    """Windows in group ``psd_window`` (0 when the run has none)."""
    where = path / WINDOW_GROUP
    if not (where / "zarr.json").exists():
        return 0
    with xr.open_zarr(str(path), group=WINDOW_GROUP, consolidated=False) as ds:
        return int(ds.sizes.get(TIME, 0))


def _segment_resize(path: RunPath) -> float:
    """The factor the run's mask was segmented at (1 for masks made elsewhere)."""
    settings = (stage_info(path).get("segment") or {}).get("settings") or {}
    return float(settings.get("resize", 1.0))


__all__ = [
    "EXCLUDED_REASONS",
    "MEASURE_GROUPS",
    "PARTICLES_GROUP",
    "PARTICLE_COLUMNS",
    "PSD_GROUP",
    "STAGE",
    "WINDOW_GROUP",
    "frame_counts",
    "iter_particles",
    "suggest_window",
    "summarize_measurement",
]
