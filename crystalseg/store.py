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

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from crystalseg.dims import FRAME_DIMS, IMAGE, PARTICLE, TIME
from crystalseg.errors import (
    ConfigError,
    DamagedRunError,
    InputNotFoundError,
    RunFormatError,
    StageStateError,
)

log = logging.getLogger(__name__)

#: Version of the on-disk layout. Bump when a reader of the old version would misread the new.
FORMAT_VERSION = 1
FORMAT_KEY = "crystalseg_format_version"
PROVENANCE_KEY = "provenance"
PROGRESS_GROUP = "_progress"

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


def check_output_outside_run(path: str | Path) -> None:
    """Refuse an output path that is a zarr store or lies inside one.

    Figures, reports and exports written into a run store are files zarr does not
    know: ``xarray.open_zarr`` may trip over them, and they vanish with the store
    when a stage replaces it. Reports, plots and overlays call this before any work.

    Raises
    ------
    ConfigError
        ``path`` or one of its parent folders is a zarr store.
    """
    path = Path(path)
    for folder in (path.absolute(), *path.absolute().parents):
        if (folder / "zarr.json").is_file() or (folder / ".zgroup").is_file():
            where = "is" if folder == path.absolute() else "lies inside"
            raise ConfigError(
                f"output '{path}' {where} the zarr store '{folder}'; files written there are "
                f"not part of the store and would be lost with it. Choose a path outside it, "
                f"e.g. in '{folder.parent}'"
            )


def check_output_folder(path: str | Path) -> None:
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
    path = Path(path)
    check_output_outside_run(path)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".crystalseg-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"\0" * 4096)
    finally:
        probe.unlink(missing_ok=True)


@contextmanager
def file_written_whole(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only when the
    block ends without an error, and is removed when it does not.

    A figure or report cut short by a full disk or an interrupt therefore never
    replaces the previous one, nor stays behind half-written::

        with file_written_whole(out) as tmp:
            tmp.write_text(html)

    Raises
    ------
    ConfigError
        ``path`` is an existing folder (the write would fail only at the end).
    """
    path = Path(path)
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """Convert settings to plain JSON types (numpy scalars, paths, tuples, dataclasses)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def consolidate(path: str | Path) -> None:
    """Write consolidated metadata so that ``xarray.open_zarr`` opens the store quietly.

    Any later change of metadata (attributes, a new array) drops it again, so every
    stage consolidates when it finishes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))


def _tidy(value: float) -> float:
    """``value`` to 12 significant digits: a pixel size computed as 1 / resolution
    (0.6499999999999999) is stored as the 0.65 the microscope meant."""
    return float(f"{float(value):.12g}")


def _open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    path = Path(path)
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
        return zarr.open_group(str(path), mode=mode, use_consolidated=False)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
        raise RunFormatError(
            f"'{path}' is not a crystalseg run store (no zarr group in it); "
            "create one with 'crystalseg import SRC RUN.zarr'"
        ) from exc


def _attrs(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """Attributes of a zarr node as a plain dict (zarr types them as JSON unions)."""
    return dict(node.attrs.asdict())


def _provenance(node: zarr.Group) -> dict[str, Any]:
    value: Any = _attrs(node).get(PROVENANCE_KEY) or {}
    return dict(value)


def get_array(group: zarr.Group, name: str, path: str | Path = "") -> zarr.Array:
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


def read_run_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a run store, after checking that this crystalseg can read it.

    Raises
    ------
    InputNotFoundError
        The path does not exist.
    RunFormatError
        Not a zarr group, not written by crystalseg, or by a newer format version.
    """
    group = _open_group(path)
    attrs = _attrs(group)
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


def _check_attrs(path: str | Path, attrs: Mapping[str, Any]) -> None:
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
                f"{PIXEL_SIZE_UM_LIMITS[1]:g}, or null. Set it with 'crystalseg calibrate "
                f"{path} --pixel-size UM'"
            ) from exc


def stage_info(path: str | Path) -> dict[str, dict[str, Any]]:
    """Provenance of every stage run on the store, with frames done for unfinished ones."""
    attrs = read_run_attrs(path)
    stages: dict[str, dict[str, Any]] = dict(attrs.get(PROVENANCE_KEY, {}).get("stages", {}))
    group = _open_group(path)
    for name, info in stages.items():
        if info.get("status") != "finished":
            done = _progress_array(group, name)
            if done is not None:
                info = dict(info)
                info["frames_done"] = int(np.count_nonzero(done[:]))
                info["frames_total"] = int(done.shape[0])
                stages[name] = info
    return stages


def _progress_array(group: zarr.Group, stage: str) -> zarr.Array | None:
    try:
        node = group[f"{PROGRESS_GROUP}/{stage}"]
    except KeyError:
        return None
    return node if isinstance(node, zarr.Array) else None


@dataclass
class StageProgress:
    """Bookkeeping of one stage on one store: which frames are done, and the final mark.

    Obtain it from :func:`begin_stage`. ``mark_done`` may be called from parallel
    workers as long as each writes whole chunks of ``frames_per_chunk`` frames (or
    the final partial chunk), which is how every stage splits its work.
    """

    path: Path
    stage: str
    n_frames: int
    frames_per_chunk: int

    def _array(self, mode: str = "r+") -> zarr.Array:
        arr = _progress_array(_open_group(self.path, mode), self.stage)
        if arr is None:  # pragma: no cover - begin_stage always creates it
            raise RunFormatError(f"'{self.path}' lost its progress record of stage {self.stage}")
        return arr

    def done(self) -> np.ndarray:
        """Boolean array (time,): True where this stage has written the frame."""
        return np.asarray(self._array("r")[:], dtype=bool)

    def mark_done(self, start: int, stop: int) -> None:
        """Record frames ``start:stop`` as written (call after their data is on disk)."""
        self._array()[start:stop] = 1

    def pending_chunks(self) -> list[tuple[int, int]]:
        """(start, stop) of every chunk that still has frames to do, in time order."""
        done = self.done()
        chunks = []
        for start in range(0, self.n_frames, self.frames_per_chunk):
            stop = min(start + self.frames_per_chunk, self.n_frames)
            if not done[start:stop].all():
                chunks.append((start, stop))
        return chunks

    def finish(self, **extra: Any) -> None:
        """Mark the stage finished (after checking every frame is done) and consolidate."""
        done = self.done()
        if not done.all():
            missing = int(np.count_nonzero(~done))
            raise StageStateError(
                f"stage '{self.stage}' cannot finish: {missing} of {self.n_frames} frames "
                "are not written yet"
            )
        _update_stage(self.path, self.stage, status="finished", finished=_now(), **extra)
        consolidate(self.path)


def _update_stage(path: Path, stage: str, **fields: Any) -> None:
    group = _open_group(path, "r+")
    provenance = _provenance(group)
    stages = dict(provenance.get("stages", {}))
    info = dict(stages.get(stage, {}))
    info.update(_jsonable(fields))
    stages[stage] = info
    provenance["stages"] = stages
    group.attrs[PROVENANCE_KEY] = provenance


def begin_stage(
    path: str | Path,
    stage: str,
    *,
    settings: Mapping[str, Any],
    n_frames: int,
    frames_per_chunk: int,
    restart: bool = False,
) -> StageProgress:
    """Start or resume a stage on an existing store.

    A stage that is unfinished and was started with the same settings resumes:
    frames already marked done are kept. Different settings, or ``restart=True``,
    start it again from frame 0.

    Parameters
    ----------
    path : path of the run store
    stage : name such as ``"import"``, ``"synth"``, ``"segment"``, ``"measure"``
    settings : JSON-serialisable settings recorded in the provenance
    n_frames, frames_per_chunk : length of the time axis and the chunking of the work
    restart : forget progress of an earlier, unfinished run of this stage
    """
    path = Path(path)
    group = _open_group(path, "r+")
    settings = _jsonable(dict(settings))
    previous = _provenance(group).get("stages", {}).get(stage)
    arr = _progress_array(group, stage)
    resumable = (
        not restart
        and previous is not None
        and previous.get("status") == "running"
        and previous.get("settings") == settings
        and arr is not None
        and arr.shape == (n_frames,)
        and arr.chunks == (frames_per_chunk,)
    )
    if not resumable:
        group.require_group(PROGRESS_GROUP)
        group.create_array(
            f"{PROGRESS_GROUP}/{stage}",
            shape=(n_frames,),
            chunks=(frames_per_chunk,),
            dtype="uint8",
            fill_value=0,
            dimension_names=(TIME,),
            overwrite=True,
        )
        _update_stage(
            path,
            stage,
            status="running",
            started=_now(),
            finished=None,
            settings=settings,
            crystalseg_version=crystalseg_version(),
        )
    progress = StageProgress(path, stage, n_frames, frames_per_chunk)
    if resumable:
        log.info(
            "resuming stage %s on %s: %d of %d frames already done",
            stage,
            path,
            int(progress.done().sum()),
            n_frames,
        )
    return progress


class RunWriter:
    """Writes the frames of a new run store; returned by :func:`create_run`.

    Attributes
    ----------
    path : Path of the store
    shape : (time, y, x)
    frames_per_chunk : frames per image chunk (the unit of parallel work)
    progress : the :class:`StageProgress` of the stage that creates the store
    """

    def __init__(self, path: Path, progress: StageProgress) -> None:
        self.path = path
        self.progress = progress
        self.frames_per_chunk = progress.frames_per_chunk
        self._group = _open_group(path, "r+")
        self._image = get_array(self._group, IMAGE, path)
        self.shape: tuple[int, int, int] = tuple(self._image.shape)  # type: ignore[assignment]

    def write_frames(self, start: int, frames: np.ndarray) -> None:
        """Write ``frames`` (n, y, x) at time index ``start`` and mark them done.

        Writing whole chunks (``start`` a multiple of ``frames_per_chunk``) is fastest and
        is required when several processes write one store at once.
        """
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"frames of shape {frames.shape} do not fit a store of frames {self.shape[1:]}"
            )
        stop = start + frames.shape[0]
        if start < 0 or stop > self.shape[0]:
            raise ValueError(f"frames {start}:{stop} outside the store's {self.shape[0]} frames")
        self._image[start:stop] = frames.astype(self._image.dtype, copy=False)

    def mark_done(self, start: int, stop: int) -> None:
        """Record frames ``start:stop`` (and everything written with them) as complete."""
        self.progress.mark_done(start, stop)

    def create_array(
        self,
        name: str,
        *,
        dims: Sequence[str],
        shape: Sequence[int],
        dtype: Any,
        chunks: Sequence[int],
        attrs: Mapping[str, Any] | None = None,
        fill_value: Any = 0,
    ) -> zarr.Array:
        """Create (or replace) an extra array, e.g. ``"truth/labels"``, with named dims."""
        return create_array(
            self.path,
            name,
            dims=dims,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            attrs=attrs,
            fill_value=fill_value,
        )

    def finish(self, **extra: Any) -> None:
        """Mark the stage finished; call last, after every frame is written and marked."""
        self.progress.finish(**extra)


def create_array(
    path: str | Path,
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
    group = _open_group(path, "r+")
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
        arr.attrs.update(_jsonable(dict(attrs)))
    return arr


def create_run(
    path: str | Path,
    *,
    shape: tuple[int, int, int],
    dtype: Any,
    time_s: np.ndarray,
    pixel_size_um: float | None,
    source: Mapping[str, Any],
    stage: str = "import",
    settings: Mapping[str, Any] | None = None,
    frames_per_chunk: int | None = None,
    overwrite: bool = False,
    time_attrs: Mapping[str, Any] | None = None,
) -> RunWriter:
    """Create a run store (or resume an interrupted creation) and return its writer.

    Parameters
    ----------
    path : path of the new store (a directory, conventionally ``*.zarr``)
    shape : (time, y, x) of the frames
    dtype : ``uint8`` or ``uint16``
    time_s : ndarray (time,) float64
        Seconds since the first frame, non-decreasing.
    pixel_size_um : edge length of one pixel in micrometres, or None when unknown
    source : provenance of the frames (file names, format, metadata found)
    stage : name of the creating stage (``"import"`` or ``"synth"``)
    settings : settings of that stage, recorded in the provenance
    frames_per_chunk : image chunk length along time; default from the frame size
    overwrite : replace an existing store. Without it an existing finished store is an
        error, and an unfinished one created with the same settings is resumed.
    time_attrs : extra attributes of the time coordinate (e.g. where it came from)

    Raises
    ------
    StageStateError
        The store exists and is complete or was made from something else; pass overwrite.
    """
    path = Path(path)
    n, ny, nx = (int(v) for v in shape)
    if n < 1 or ny < 1 or nx < 1:
        raise ValueError(f"a run needs at least one frame of at least 1x1 pixels, got {shape}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype("uint8"), np.dtype("uint16")):
        raise ValueError(f"frames must be uint8 or uint16, got {dtype}")
    time_s = np.asarray(time_s, dtype="float64")
    if time_s.shape != (n,):
        raise ValueError(f"time_s has shape {time_s.shape}; expected ({n},)")
    if not np.all(np.isfinite(time_s)) or np.any(np.diff(time_s) < 0):
        raise ValueError("time_s must be finite and non-decreasing")
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number or None, got {pixel_size_um}")
    fpc = int(frames_per_chunk or default_frames_per_chunk((ny, nx), dtype.itemsize))
    fpc = max(1, min(fpc, n))
    stage_settings: dict[str, Any] = dict(settings or {})
    source_json: dict[str, Any] = _jsonable(dict(source))

    if path.exists() and not overwrite:
        writer = _resume_run(path, stage, stage_settings, source_json, (n, ny, nx), dtype, fpc)
        if writer is not None:
            return writer
    if path.exists():
        if not (path / "zarr.json").exists() and any(path.iterdir()):
            raise StageStateError(
                f"'{path}' exists and is not a run store; refusing to overwrite it. "
                "Choose another output path"
            )
        shutil.rmtree(path)

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    image = group.create_array(
        IMAGE,
        shape=(n, ny, nx),
        chunks=(fpc, ny, nx),
        dtype=dtype,
        fill_value=0,
        dimension_names=FRAME_DIMS,
        compressors=default_compressor(),
    )
    image.attrs.update({"long_name": "raw frame intensity", "units": "1"})
    time = group.create_array(
        TIME,
        shape=(n,),
        chunks=(n,),
        dtype="float64",
        fill_value=0.0,
        dimension_names=(TIME,),
        compressors=None,
    )
    time[:] = time_s
    time.attrs.update(
        {"long_name": "time since first frame", "units": "s", **_jsonable(dict(time_attrs or {}))}
    )
    group.attrs.update(
        {
            FORMAT_KEY: FORMAT_VERSION,
            "pixel_size_um": None if pixel_size_um is None else _tidy(pixel_size_um),
            PROVENANCE_KEY: {
                "created": _now(),
                "crystalseg_version": crystalseg_version(),
                "source": source_json,
                "stages": {},
            },
        }
    )
    progress = begin_stage(path, stage, settings=stage_settings, n_frames=n, frames_per_chunk=fpc)
    return RunWriter(path, progress)


def _resume_run(
    path: Path,
    stage: str,
    settings: dict[str, Any],
    source: dict[str, Any],
    shape: tuple[int, int, int],
    dtype: np.dtype,
    fpc: int,
) -> RunWriter | None:
    """The writer of an interrupted creation of the same run, or an error, or None (empty)."""
    if not (path / "zarr.json").exists():
        if path.is_dir() and not any(path.iterdir()):
            return None
        raise StageStateError(
            f"'{path}' exists and is not a run store; refusing to overwrite it. "
            "Choose another output path"
        )
    attrs = read_run_attrs(path)
    info = attrs.get(PROVENANCE_KEY, {}).get("stages", {}).get(stage, {})
    image = get_array(_open_group(path), IMAGE, path)
    same = (
        info.get("status") == "running"
        and info.get("settings") == _jsonable(settings)
        and attrs.get(PROVENANCE_KEY, {}).get("source") == source
        and tuple(image.shape) == shape
        and np.dtype(image.dtype) == dtype
        and image.chunks[0] == fpc
    )
    if not same:
        state = "complete" if info.get("status") == "finished" else "made from other input"
        raise StageStateError(
            f"run store '{path}' already exists ({state}); pass --overwrite to replace it "
            "or choose another output path"
        )
    progress = begin_stage(path, stage, settings=settings, n_frames=shape[0], frames_per_chunk=fpc)
    return RunWriter(path, progress)


def set_calibration(
    path: str | Path, *, pixel_size_um: float | None = None, interval_s: float | None = None
) -> dict[str, Any]:
    """Set the pixel size and/or the frame interval of an existing run store.

    For a run imported without them (or with wrong ones): the frames, mask and
    probability stay; a measurement made before is then out of date
    (:func:`crystalseg.measure.run.measurement_outdated`) and ``crystalseg measure``
    measures again by itself. Each change is recorded in the provenance
    (``calibration``: old and new values, when).

    Parameters
    ----------
    path : path of the run store
    pixel_size_um : micrometres per pixel, or None to keep it
    interval_s : seconds between frames (the time axis becomes 0, interval, ...), or
        None to keep it

    Returns
    -------
    dict
        The values now set: ``pixel_size_um`` and ``interval_s`` (None: not changed).

    Raises
    ------
    ConfigError
        Neither given, or one is not a positive finite number.
    """
    if pixel_size_um is None and interval_s is None:
        raise ConfigError("nothing to set: give a pixel size (--pixel-size) or --interval")
    check_calibration(pixel_size_um=pixel_size_um, interval_s=interval_s)
    attrs = read_run_attrs(path)
    before = calibration_fingerprint(path)
    group = _open_group(path, mode="r+")
    record: dict[str, Any] = {"when": _now()}
    if pixel_size_um is not None:
        record["pixel_size_um"] = [attrs.get("pixel_size_um"), _tidy(pixel_size_um)]
        group.attrs["pixel_size_um"] = _tidy(pixel_size_um)
    if interval_s is not None:
        time = get_array(group, TIME, path)
        steps = np.diff(np.asarray(time[:], dtype="float64"))
        old = float(np.median(steps)) if len(steps) else None
        time[:] = np.arange(time.shape[0], dtype="float64") * float(interval_s)
        record["interval_s"] = [old, float(interval_s)]
        record["time_source"] = [_attrs(time).get("source", "unknown"), "given interval"]
        time.attrs["source"] = "given interval"
    provenance = dict(attrs.get(PROVENANCE_KEY, {}))
    provenance["calibration"] = [*provenance.get("calibration", []), record]
    stages = dict(provenance.get("stages", {}))
    measured = stages.get("measure")
    if measured is not None and "calibration" not in (measured.get("settings") or {}):
        # measured by a release that did not record it: it measured the calibration before
        settings = {**(measured.get("settings") or {}), "calibration": before}
        stages["measure"] = {**measured, "settings": settings}
        provenance["stages"] = stages
    group.attrs[PROVENANCE_KEY] = _jsonable(provenance)
    consolidate(path)
    return {"pixel_size_um": pixel_size_um, "interval_s": interval_s}


def calibration_fingerprint(path: str | Path) -> dict[str, Any]:
    """What a measurement depends on besides its mask and settings: the pixel size and
    a checksum of the time axis (the measurement records it, and is out of date when it
    differs)."""
    group = _open_group(path)
    time = np.ascontiguousarray(get_array(group, TIME, path)[:], dtype="float64")
    return {
        "pixel_size_um": read_run_attrs(path).get("pixel_size_um"),
        "time_sha1": hashlib.sha1(time.tobytes()).hexdigest()[:16],
    }


def open_run(path: str | Path, *, require_complete: bool = True) -> xr.Dataset:
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
    get_array(_open_group(path), IMAGE, path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="Failed to open Zarr")
        ds = xr.open_zarr(str(path), consolidated=None)
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
    path: str | Path,
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
    root = _open_group(path, "r+")
    if group in root:
        del root[group]
    out = root.create_group(group)
    out.attrs.update({**_jsonable(dict(attrs or {})), "columns": [str(c) for c in table.columns]})
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
            arr.attrs.update(_jsonable(dict(column_attrs[name])))
    consolidate(path)


def read_table(path: str | Path, group: str) -> pd.DataFrame:
    """Read a table written by :func:`write_table` back into a DataFrame (column order kept)."""
    root = _open_group(path)
    try:
        node = root[group]
    except KeyError as exc:
        raise RunFormatError(f"run store '{path}' has no table '{group}'") from exc
    if not isinstance(node, zarr.Group):
        raise RunFormatError(f"'{group}' in '{path}' is an array, not a table")
    order = _attrs(node).get("columns")
    columns = {name: _column(arr) for name, arr in node.arrays()}
    if order:
        columns = {name: columns[name] for name in order if name in columns}
    return pd.DataFrame(columns)


def _column(arr: zarr.Array) -> np.ndarray:
    values = np.asarray(arr[:])
    if values.dtype.kind in "TU":  # variable-length strings come back as numpy StringDType
        return values.astype(object)
    return values


def describe_run(path: str | Path) -> dict[str, Any]:
    """What ``crystalseg info`` prints: frames, size, dtype, time span, calibration, stages.

    Reads metadata only (and the small time array), never the frames.
    """
    attrs = read_run_attrs(path)
    group = _open_group(path)
    image = get_array(group, IMAGE, path)
    time_arr = get_array(group, TIME, path)
    time = np.asarray(time_arr[:])
    n, ny, nx = (int(v) for v in image.shape)
    pixel = attrs.get("pixel_size_um")
    provenance = attrs.get(PROVENANCE_KEY, {})
    stored = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
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
        "time_source": _attrs(time_arr).get("source", "unknown"),
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
