"""The run store: one zarr v3 group per recorded run.

Layout (see DESIGN.md)::

    run.zarr/
        image      (time, y, x)  uint8/uint16  raw frames, chunked along time
        time       (time,)       float64       seconds since the first frame
        mask       (time, y, x)  uint8         written by segment
        particles/                             written by measure (one row per particle)
        psd/                                   written by measure (time, size_bin)
        truth/                                 synthetic runs only: exact ground truth
        _progress/<stage>  (time,) uint8       1 where a stage has finished a frame

``xarray.open_zarr(path)`` opens a store without crystalseg. Root attributes hold
the calibration (``pixel_size_um``, ``None`` when unknown), the format version and
the provenance of every stage (settings, crystalseg version, start and end).

A stage marks each frame it has written in ``_progress/<stage>``; chunks of that
array line up with the image chunks, so parallel writers never share a chunk. A
stage is marked ``finished`` only after all its output is written, so an
interrupted stage leaves a readable store that says how far it got and can
resume.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from upath import UPath
from zarr.codecs import ZstdCodec

from crystalseg.dims import FRAME_DIMS, IMAGE, PARTICLE, TIME
from crystalseg.errors import ConfigError, DamagedRunError, InputNotFoundError, RunFormatError
from crystalseg.store.location import (
    RunLike,
    RunPath,
    is_remote,
    list_files,
    run_path,
    storage_options,
)

log = logging.getLogger(__name__)

#: Version of the on-disk layout. Bump when a reader of the old version would misread the new.
FORMAT_VERSION = 1
FORMAT_KEY = "crystalseg_format_version"
PROVENANCE_KEY = "provenance"
PROGRESS_GROUP = "_progress"

#: Attributes of ``probability``: stored as ``round(255 p)`` in uint8 and read as such.
#: No CF ``scale_factor``: with one, xarray decodes it to float64 (8x the bytes, 84 MB
#: for 40 frames of 512x512 instead of 10 MB); divide by 255 for p in 0..1.
PROBABILITY_ATTRS: dict[str, Any] = {
    "long_name": "foreground probability (1 - p(background)) in 1/255",
    "units": "1/255",
    "valid_range": [0, 255],
    "quantisation": "stored as round(255 * p) in uint8; divide by 255 for p in 0..1",
}

#: Bytes of raw pixels per image chunk: a few frames of 1-4 megapixels.
TARGET_CHUNK_BYTES = 4 * 2**20
MAX_FRAMES_PER_CHUNK = 32


#: Pixel sizes (micrometres) a run may carry. 0.1 nm is below the pixel of any image of a
#: crystal (light microscopes reach ~30 nm, SEM ~1 nm); 1 cm a pixel would make a
#: 1000-pixel frame 10 m wide. Inside these bounds every area and volume of a
#: measurement stays a normal float64 (1e-300 um, accepted before, made frame areas 0).
PIXEL_SIZE_UM_LIMITS = (1e-4, 1e4)
#: Frame intervals (seconds) a run may carry: from a 1 MHz high-speed camera to one frame
#: every 116 days. Rates per second computed from them stay finite.
INTERVAL_S_LIMITS = (1e-6, 1e7)


def check_calibration(
    *, pixel_size_um: float | None = None, interval_s: float | None = None, what: str = ""
) -> None:
    """Refuse a pixel size or frame interval outside :data:`PIXEL_SIZE_UM_LIMITS` /
    :data:`INTERVAL_S_LIMITS` (None passes: not given).

    Called wherever a calibration enters: import options, :func:`set_calibration`,
    and the attributes of a store being read.

    Parameters
    ----------
    pixel_size_um, interval_s : the values to check
    what : where they come from, prefixed to the message (e.g. a run store's name)

    Raises
    ------
    ConfigError
        Not a finite number within the limits.
    """
    for name, value, (lo, hi), unit in (
        ("pixel size", pixel_size_um, PIXEL_SIZE_UM_LIMITS, "um"),
        ("frame interval", interval_s, INTERVAL_S_LIMITS, "s"),
    ):
        if value is None:
            continue
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(
                f"{what}{name} {value!r} {unit} is outside the physical range {lo:g} to "
                f"{hi:g} {unit}; give the {name} in {'micrometres' if unit == 'um' else 'seconds'}"
                f"{' per pixel' if unit == 'um' else ' between frames'}, e.g. "
                f"{'0.65' if unit == 'um' else '30'}"
            )


def check_output_outside_run(path: RunLike) -> None:
    """Refuse an output path that is a zarr store or lies inside one.

    Figures, reports and exports written into a run store are files zarr does not
    know: ``xarray.open_zarr`` may trip over them, and they vanish with the store
    when a stage replaces it. Reports, plots and overlays call this before any work.
    A URL (``s3://bucket/out``) is checked the same way on its file system.

    Raises
    ------
    ConfigError
        ``path`` or one of its parent folders is a zarr store, or ``path`` is a URL
        no installed file system reads (:func:`~crystalseg.store.location.run_path`).
    """
    path = run_path(path)
    full = path.absolute() if isinstance(path, Path) else path
    for folder in (full, *full.parents):
        if (folder / "zarr.json").is_file() or (folder / ".zgroup").is_file():
            where = "is" if folder == full else "lies inside"
            raise ConfigError(
                f"output '{path}' {where} the zarr store '{folder}'; files written there are "
                f"not part of the store and would be lost with it. Choose a path outside it, "
                f"e.g. in '{folder.parent}'"
            )


def check_output_folder(path: RunLike) -> None:
    """Make the output folder ``path`` and write (then remove) a probe file in it, so a
    long job (training, scoring) learns of a read-only folder, a missing permission, a
    file in the way or a full disk before its work, not after it.

    Raises
    ------
    ConfigError
        ``path`` lies inside a zarr store (:func:`check_output_outside_run`).
    OSError
        The folder cannot be made or written (the CLI explains it in one line).
    """
    local = run_path(path)
    if not isinstance(local, Path):
        raise ConfigError(
            f"'{path}' is a URL; this output (a model, a score) is written to a folder on "
            "this machine. Give a local folder and copy it to object storage afterwards"
        )
    path = local
    check_output_outside_run(path)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".crystalseg-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"\0" * 4096)
    finally:
        probe.unlink(missing_ok=True)


@contextmanager
def file_written_whole(path: RunLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only when the
    block ends without an error, and is removed when it does not.

    A figure or report cut short by a full disk or an interrupt therefore never
    replaces the previous one, nor stays behind half-written::

        with file_written_whole(out) as tmp:
            tmp.write_text(html)

    For a URL (``s3://bucket/report.html``) the temporary file is local and is
    uploaded in one ``PUT`` when the block ends: object storage shows the whole new
    object or the old one, never a part.

    Raises
    ------
    ConfigError
        ``path`` is an existing folder (the write would fail only at the end), or a
        URL no installed file system reads.
    """
    target = run_path(path)
    if not isinstance(target, Path):
        yield from _uploaded_whole(target)
        return
    path = target
    if path.is_dir():
        raise ConfigError(
            f"output '{path}' is a folder; expected a file name. Give a file path, e.g. "
            f"'{path / ('output' + (path.suffix or '.html'))}'"
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _uploaded_whole(target: UPath) -> Iterator[Path]:
    """:func:`file_written_whole` for a URL: a local temporary file, uploaded at the end."""
    import tempfile

    if target.is_dir():
        raise ConfigError(
            f"output '{target}' is a folder; expected a file name. Give a file path, e.g. "
            f"'{target / 'output.html'}'"
        )
    with tempfile.TemporaryDirectory(prefix="crystalseg-upload-") as folder:
        tmp = Path(folder) / target.name
        yield tmp
        target.fs.put_file(str(tmp), target.path)


def make_folder(path: RunPath) -> None:
    """Make the output folder ``path`` (and its parents); object storage needs none."""
    if isinstance(path, Path):
        path.mkdir(parents=True, exist_ok=True)


def crystalseg_version() -> str:
    """The installed crystalseg version (``"unknown"`` when run from a bare source tree)."""
    try:
        return version("crystalseg")
    except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
        return "unknown"


def default_compressor() -> ZstdCodec:
    """Zstandard level 1: as fast as Blosc-LZ4 on noisy frames and 23 % smaller.

    Chosen by ``benchmarks/bench_store.py`` (write and read MB/s and ratio of
    several codecs on 1024x1024 synthetic frames, 4-frame chunks): zstd-1 wrote
    270-310 MB/s, read 810-1210 MB/s at ratio 1.55; Blosc-LZ4 with bit-shuffle
    250-300, 900-1000 and 1.26; uncompressed 200-270 and 2700-3800. Reading at
    ~1 GB/s is ~1000 megapixel frames a second, more than a GPU U-Net consumes.
    """
    return ZstdCodec(level=1)


def default_frames_per_chunk(frame_shape: tuple[int, int], itemsize: int) -> int:
    """Frames per chunk so that one chunk holds about :data:`TARGET_CHUNK_BYTES`."""
    frame_bytes = max(1, frame_shape[0] * frame_shape[1] * itemsize)
    return int(min(MAX_FRAMES_PER_CHUNK, max(1, TARGET_CHUNK_BYTES // frame_bytes)))


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (stage records)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any, *, strict: bool = False) -> Any:
    """``value`` in plain JSON types: what ``json.loads(json.dumps(value))`` gives, with
    numpy scalars and arrays, one-element tensors, paths, sets and dataclasses converted.

    Parameters
    ----------
    value : any
        Settings, attributes, metrics: mappings, sequences, numbers, strings, paths.
        Keys become strings as ``json.dumps`` writes them (``1`` -> ``"1"``,
        ``True`` -> ``"true"``); a key or value of another type becomes its ``str``.
    strict : bool
        NaN and infinity become None (strict JSON, which every parser reads; what a
        checkpoint's ``model.json`` and ``--json`` output hold). Without it they stay
        floats: zarr attributes store them, and a stored NaN reads back as NaN.

    Returns
    -------
    dict, list, str, int, float, bool or None
    """
    if isinstance(value, Mapping):
        return {_json_key(k): jsonable(v, strict=strict) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (f.name for f in dataclasses.fields(value))
        return {name: jsonable(getattr(value, name), strict=strict) for name in fields}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, strict=strict) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), strict=strict)
    if isinstance(value, np.generic) or _is_scalar_tensor(value):
        value = value.item()  # then checked as the Python number it is (a NaN too)
    if value is None or isinstance(value, bool):
        return value if value is None else bool(value)
    if isinstance(value, int):
        return int(value)  # an IntEnum as its number, as json.dumps writes it
    if isinstance(value, float):
        return None if strict and not math.isfinite(value) else float(value)
    if isinstance(value, str):
        return str.__str__(value)  # a str Enum as its value, as json.dumps writes it
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _json_key(key: Any) -> str:
    """A mapping key as ``json.dumps`` writes it (``str`` of keys it cannot write)."""
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, (str, int, float, bool)) or key is None:
        return str(json.loads(json.dumps({key: 0})).popitem()[0])
    return str(key)


def _is_scalar_tensor(value: Any) -> bool:
    """Whether ``value`` is a one-element torch tensor (seen without importing torch)."""
    numel = getattr(value, "numel", None)
    return type(value).__module__.startswith("torch") and callable(numel) and numel() == 1


def consolidate(path: RunLike) -> None:
    """Write consolidated metadata so that ``xarray.open_zarr`` opens the store quietly.

    Any later change of metadata (attributes, a new array) drops it again, so every
    stage consolidates when it finishes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))


def tidy_number(value: float) -> float:
    """``value`` to 12 significant digits: a pixel size computed as 1 / resolution
    (0.6499999999999999) is stored as the 0.65 the microscope meant."""
    return float(f"{float(value):.12g}")


def open_group(path: RunLike, mode: str = "r") -> zarr.Group:
    """The root group of run store ``path`` (a local path or a URL), or an error that
    says what the path is instead (missing, a recording file, not a zarr group, a URL
    no installed file system reads)."""
    path = run_path(path)
    if not isinstance(path, Path):
        return _open_remote_group(path, mode)
    if not path.exists():
        raise InputNotFoundError(
            f"run store '{path}' does not exist; create it with 'crystalseg import SRC {path}' "
            f"or 'crystalseg synth {path}'"
        )
    if path.is_file():  # a recording given where its run store was expected
        raise RunFormatError(
            f"'{path}' is a file, not a run store; import it first: 'crystalseg import "
            f"{path} {path.with_suffix('.zarr')}', then use {path.with_suffix('.zarr')}"
        )
    try:
        return zarr.open_group(
            str(path),
            mode=mode,  # type: ignore[arg-type]
            use_consolidated=False,
            **_zarr_options(path),
        )
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
        raise RunFormatError(
            f"'{path}' is not a crystalseg run store (no zarr group in it); "
            "create one with 'crystalseg import SRC RUN.zarr'"
        ) from exc


def _open_remote_group(path: RunPath, mode: str) -> zarr.Group:
    """:func:`open_group` on object storage: opened first (one request), and only when
    that fails is the prefix examined to say why (a request per check is slow there)."""
    try:
        return zarr.open_group(
            str(path),
            mode=mode,  # type: ignore[arg-type]
            use_consolidated=False,
            zarr_format=3,
            **_zarr_options(path),
        )
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
        if not path.exists():
            raise InputNotFoundError(
                f"run store '{path}' does not exist; create it with 'crystalseg import SRC "
                f"{path}' or 'crystalseg synth {path}'"
            ) from exc
        if path.is_file():
            raise RunFormatError(
                f"'{path}' is a file, not a run store; a run store on object storage is a "
                "prefix holding zarr.json. Give the URL of the run store"
            ) from exc
        raise RunFormatError(
            f"'{path}' is not a crystalseg run store (no zarr group in it); "
            "create one with 'crystalseg import SRC RUN.zarr'"
        ) from exc


def _zarr_options(path: RunPath) -> dict[str, Any]:
    """Keyword arguments of zarr/xarray that reach ``path``'s file system as
    :func:`~crystalseg.store.location.run_path` set it up (none for a local path)."""
    return {"storage_options": storage_options(path)} if is_remote(path) else {}


def node_attrs(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """Attributes of a zarr node as a plain dict (zarr types them as JSON unions)."""
    return dict(node.attrs.asdict())


def read_provenance(node: zarr.Group) -> dict[str, Any]:
    """The ``provenance`` root attribute of a store's group as a plain dict."""
    value: Any = node_attrs(node).get(PROVENANCE_KEY) or {}
    return dict(value)


def get_array(group: zarr.Group, name: str, path: RunLike = "") -> zarr.Array:
    """Array ``name`` of a store's group, or a :class:`RunFormatError` saying it is missing."""
    try:
        node = group[name]
    except KeyError as exc:
        raise RunFormatError(f"run store '{path}' has no array '{name}'") from exc
    if not isinstance(node, zarr.Array):
        raise RunFormatError(f"'{name}' in run store '{path}' is a group, not an array")
    if name in (IMAGE, TIME) and (node.ndim == 0 or node.shape[0] == 0):
        raise DamagedRunError(
            f"run store '{path}' holds 0 frames ('{name}' has shape {tuple(node.shape)}); a run "
            "needs at least one. Re-import the recording into a new store"
        )
    return node


def read_run_attrs(path: RunLike) -> dict[str, Any]:
    """Root attributes of a run store, after checking that this crystalseg can read it.

    Raises
    ------
    InputNotFoundError
        The path does not exist.
    RunFormatError
        Not a zarr group, not written by crystalseg, or by a newer format version.
    """
    group = open_group(path)
    attrs = node_attrs(group)
    found = attrs.get(FORMAT_KEY)
    if found is None:
        raise RunFormatError(
            f"'{path}' is a zarr group but not a crystalseg run store (no '{FORMAT_KEY}' "
            "attribute); import the recording with 'crystalseg import SRC RUN.zarr'"
        )
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise DamagedRunError(
            f"run store '{path}' has format version {found!r}; expected a whole number "
            f"1..{FORMAT_VERSION}. The store's zarr.json was edited or damaged: restore it "
            "from a backup or re-import the recording"
        )
    if found > FORMAT_VERSION:
        raise RunFormatError(
            f"'{path}' was written in run-store format {found} by a newer crystalseg; this "
            f"crystalseg ({crystalseg_version()}) reads up to format {FORMAT_VERSION}. "
            "Upgrade with 'pip install -U crystalseg'"
        )
    _check_attrs(path, attrs)
    return attrs


def _check_attrs(path: RunLike, attrs: Mapping[str, Any]) -> None:
    """Raise :class:`DamagedRunError` for root attributes of the wrong kind (edited by
    hand or by another tool), so no stage reads a text pixel size or a list provenance."""
    fix = "restore the store's zarr.json from a backup or re-import the recording"
    provenance = attrs.get(PROVENANCE_KEY, {})
    parts = {"provenance": provenance}
    if isinstance(provenance, dict):
        parts.update({f"provenance.{k}": provenance.get(k, {}) for k in ("source", "stages")})
        stages = provenance.get("stages", {})
        if isinstance(stages, dict):
            parts.update({f"provenance.stages.{k}": v for k, v in stages.items()})
    for name, value in parts.items():
        if not isinstance(value, dict):
            raise DamagedRunError(
                f"run store '{path}' has attribute '{name}' of type {type(value).__name__}; "
                f"expected a mapping. The attribute was edited or damaged: {fix}"
            )
    pixel = attrs.get("pixel_size_um")
    if pixel is not None:
        try:
            check_calibration(pixel_size_um=pixel)
        except ConfigError as exc:
            raise DamagedRunError(
                f"run store '{path}' has attribute 'pixel_size_um' = {pixel!r}; expected "
                f"micrometres per pixel, {PIXEL_SIZE_UM_LIMITS[0]:g} to "
                f"{PIXEL_SIZE_UM_LIMITS[1]:g}, or null. Set it again with 'crystalseg calibrate "
                f"{path} --pixel-size UM', or restore the store from a backup"
            ) from exc


def stage_info(path: RunLike) -> dict[str, dict[str, Any]]:
    """Provenance of every stage run on the store, with frames done for unfinished ones."""
    attrs = read_run_attrs(path)
    stages: dict[str, dict[str, Any]] = dict(attrs.get(PROVENANCE_KEY, {}).get("stages", {}))
    group = open_group(path)
    for name, info in stages.items():
        if info.get("status") != "finished":
            done = progress_array(group, name)
            if done is not None:
                info = dict(info)
                info["frames_done"] = int(np.count_nonzero(done[:]))
                info["frames_total"] = int(done.shape[0])
                stages[name] = info
    return stages


def progress_array(group: zarr.Group, stage: str) -> zarr.Array | None:
    """Progress array ``_progress/<stage>`` of a store's group, or None."""
    try:
        node = group[f"{PROGRESS_GROUP}/{stage}"]
    except KeyError:
        return None
    return node if isinstance(node, zarr.Array) else None


def create_array(
    path: RunLike,
    name: str,
    *,
    dims: Sequence[str],
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    attrs: Mapping[str, Any] | None = None,
    fill_value: Any = 0,
) -> zarr.Array:
    """Create or replace array ``name`` (may include a group path) in an existing store."""
    group = open_group(path, "r+")
    parent = name.rpartition("/")[0]
    if parent:
        group.require_group(parent)
    arr = group.create_array(
        name,
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype=dtype,
        fill_value=fill_value,
        dimension_names=tuple(dims),
        compressors=default_compressor(),
        overwrite=True,
    )
    if attrs:
        arr.attrs.update(jsonable(dict(attrs)))
    return arr


def calibration_fingerprint(path: RunLike) -> dict[str, Any]:
    """What a measurement depends on besides its mask and settings: the pixel size and
    a checksum of the time axis (the measurement records it, and is out of date when it
    differs)."""
    group = open_group(path)
    time = np.ascontiguousarray(get_array(group, TIME, path)[:], dtype="float64")
    return {
        "pixel_size_um": read_run_attrs(path).get("pixel_size_um"),
        "time_sha1": hashlib.sha1(time.tobytes()).hexdigest()[:16],
    }


def open_run(path: RunLike, *, require_complete: bool = True) -> xr.Dataset:
    """Open a run store lazily as an xarray Dataset backed by dask.

    Parameters
    ----------
    path : path of the run store
    require_complete : raise if the stage that created the frames did not finish

    Returns
    -------
    Dataset
        ``image`` (time, y, x) and, when segmented, ``mask``; coordinate ``time`` in
        seconds; attrs ``pixel_size_um`` and ``provenance``.
    """
    attrs = read_run_attrs(path)
    stages = stage_info(path)
    creators = [s for s in ("import", "synth") if s in stages]
    if require_complete:
        unfinished = [s for s in creators if stages[s].get("status") != "finished"]
        if not creators or unfinished:
            name = unfinished[0] if unfinished else "import"
            info = stages.get(name, {})
            done = info.get("frames_done", 0)
            total = info.get("frames_total", "?")
            raise RunFormatError(
                f"run store '{path}' is incomplete: stage '{name}' stopped after {done} of "
                f"{total} frames; run the same 'crystalseg {name}' command again to resume"
            )
    # the arrays themselves, not the consolidated list of them (which outlives a deletion)
    get_array(open_group(path), IMAGE, path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="Failed to open Zarr")
        ds = xr.open_zarr(str(path), consolidated=None, **_zarr_options(run_path(path)))
    if IMAGE not in ds or ds[IMAGE].dims != FRAME_DIMS:
        raise RunFormatError(
            f"run store '{path}' has no '{IMAGE}' array with dims {FRAME_DIMS}; "
            "re-import the recording"
        )
    time = np.asarray(ds[TIME].values)
    if time.dtype.kind == "f" and (not np.all(np.isfinite(time)) or np.any(np.diff(time) < 0)):
        raise DamagedRunError(
            f"run store '{path}' has a time axis that is not finite and increasing "
            f"({np.count_nonzero(~np.isfinite(time))} of {time.size} values not finite); set a "
            f"regular one with 'crystalseg calibrate {path} --interval SECONDS'"
        )
    ds.attrs.update({k: v for k, v in attrs.items() if k not in ds.attrs})
    return ds


def write_table(
    path: RunLike,
    group: str,
    table: pd.DataFrame,
    *,
    attrs: Mapping[str, Any] | None = None,
    dim: str = PARTICLE,
    column_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write a table as group ``group`` of the store: one 1-D array per column along ``dim``.

    ``xarray.open_zarr(path, group=group)`` then reads it as a Dataset, and
    :func:`read_table` as a DataFrame. Strings become fixed-width unicode, booleans stay
    booleans. An existing group of that name is replaced.
    """
    root = open_group(path, "r+")
    if group in root:
        del root[group]
    out = root.create_group(group)
    out.attrs.update({**jsonable(dict(attrs or {})), "columns": [str(c) for c in table.columns]})
    n = len(table)
    for name in table.columns:
        values = table[name].to_numpy()
        text = values.dtype == object or pd.api.types.is_string_dtype(values.dtype)
        arr = out.create_array(
            str(name),
            shape=(n,),
            chunks=(max(1, min(n, 1_000_000)),),
            dtype=str if text else values.dtype,
            fill_value=None if text else 0,
            dimension_names=(dim,),
            compressors=None if text else default_compressor(),
        )
        if n:
            arr[:] = values.astype(str) if text else values
        if column_attrs and name in column_attrs:
            arr.attrs.update(jsonable(dict(column_attrs[name])))
    consolidate(path)


def read_table(path: RunLike, group: str) -> pd.DataFrame:
    """Read a table written by :func:`write_table` back into a DataFrame (column order kept)."""
    root = open_group(path)
    try:
        node = root[group]
    except KeyError as exc:
        raise RunFormatError(f"run store '{path}' has no table '{group}'") from exc
    if not isinstance(node, zarr.Group):
        raise RunFormatError(f"'{group}' in '{path}' is an array, not a table")
    order = node_attrs(node).get("columns")
    columns = {name: _column(arr) for name, arr in node.arrays()}
    if order:
        columns = {name: columns[name] for name in order if name in columns}
    return pd.DataFrame(columns)


def _column(arr: zarr.Array) -> np.ndarray:
    values = np.asarray(arr[:])
    if values.dtype.kind in "TU":  # variable-length strings come back as numpy StringDType
        return values.astype(object)
    return values


def describe_run(path: RunLike) -> dict[str, Any]:
    """What ``crystalseg info`` prints: frames, size, dtype, time span, calibration, stages.

    Reads metadata only (and the small time array), never the frames.
    """
    attrs = read_run_attrs(path)
    group = open_group(path)
    image = get_array(group, IMAGE, path)
    time_arr = get_array(group, TIME, path)
    time = np.asarray(time_arr[:])
    n, ny, nx = (int(v) for v in image.shape)
    pixel = attrs.get("pixel_size_um")
    provenance = attrs.get(PROVENANCE_KEY, {})
    stored = sum(size for _, size, _ in list_files(run_path(path)))
    raw = n * ny * nx * np.dtype(image.dtype).itemsize
    intervals = np.diff(time)
    return {
        "path": str(path),
        "frames": n,
        "height_px": ny,
        "width_px": nx,
        "dtype": str(image.dtype),
        "frames_per_chunk": int(image.chunks[0]),
        "time_start_s": float(time[0]) if n else None,
        "time_end_s": float(time[-1]) if n else None,
        "median_interval_s": float(np.median(intervals)) if len(intervals) else None,
        "time_source": node_attrs(time_arr).get("source", "unknown"),
        "pixel_size_um": pixel,
        "field_um": None if pixel is None else (ny * pixel, nx * pixel),
        "source": provenance.get("source", {}),
        "stages": stage_info(path),
        "arrays": sorted(name for name, _ in group.arrays()),
        "groups": sorted(name for name, _ in group.groups() if name != PROGRESS_GROUP),
        "bytes_on_disk": stored,
        "compression_ratio": raw / stored if stored else None,
        "crystalseg_version": provenance.get("crystalseg_version"),
    }
