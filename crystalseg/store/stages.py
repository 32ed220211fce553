"""The stage runner: how every stage writes into a run store.

Every stage (import, synth, segment, measure, and the ones to come) goes
through the same few steps, written once here:

1. **Lock.** The stage holds the store's lock while it writes
   (:func:`crystalseg.store.lock.run_lock`; one writer at a time, a second one
   gets an error naming the holder).
2. **Decide** (:func:`plan_stage`) from the store's record of the stage and
   what the caller asks: ``new`` (nothing there, or replace it), ``resume``
   (an interrupted run with the same settings), ``finished`` (nothing to do),
   out of date (its inputs changed since: start anew), or refuse (results of
   other settings exist and the caller did not ask to replace them).
3. **Record and progress** (:func:`begin_stage`, :class:`StageProgress`): the
   settings and versions go into the provenance, each chunk of frames is marked
   done in ``_progress/<stage>`` once its data is on disk, so an interrupted
   stage resumes with the chunks that are missing.
4. **Replace only when complete.** A stage that would replace finished results
   writes its new outputs beside them, under ``_next/<stage>/``, with its own
   record (``<stage>.next`` in the provenance). Only when every frame is done
   does :meth:`StageProgress.finish` swap them in: the old outputs are renamed
   to ``_old/<stage>/``, the new ones into place, the record takes the new
   settings, and the old outputs are deleted. A replacement that fails or is
   interrupted leaves the previous results as they were, readable; running the
   same command again resumes it. An interruption during the swap itself (a
   few renames) is completed by the next writer (:func:`recover_stages`).

The chunks themselves run wherever the stage sends them (a local pool, a dask
cluster): workers write their chunk and mark it done; only the process that
holds the lock begins and finishes a stage.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from crystalseg.dims import FRAME_DIMS, IMAGE, TIME
from crystalseg.errors import ConfigError, RunFormatError, StageStateError
from crystalseg.store.core import (
    FORMAT_KEY,
    FORMAT_VERSION,
    PROGRESS_GROUP,
    PROVENANCE_KEY,
    calibration_fingerprint,
    check_calibration,
    consolidate,
    create_array,
    crystalseg_version,
    default_compressor,
    default_frames_per_chunk,
    get_array,
    jsonable,
    node_attrs,
    open_group,
    progress_array,
    read_provenance,
    read_run_attrs,
    stage_info,
    tidy_number,
    utc_now,
)
from crystalseg.store.lock import holds_lock, lock_owner, process_alive, read_lock, run_lock
from crystalseg.store.ome import write_ome_metadata

log = logging.getLogger(__name__)

#: Where a stage that replaces finished results writes the new ones: ``_next/<stage>/<name>``.
NEXT_GROUP = "_next"
#: Where the old results wait during the swap: ``_old/<stage>/<name>``.
OLD_GROUP = "_old"
#: Suffix of the provenance record (and progress array) of a replacement under way.
NEXT_SUFFIX = ".next"


@dataclass
class StageProgress:
    """Bookkeeping of one stage on one store: which frames are done, and the final mark.

    Obtain it from :func:`begin_stage`. ``mark_done`` may be called from parallel
    workers as long as each writes whole chunks of ``frames_per_chunk`` frames (or
    the final partial chunk), which is how every stage splits its work.

    A stage that replaces finished results (``replacing``) writes its outputs
    under ``_next/<stage>/``: :meth:`output` names where each goes, and
    :meth:`finish` swaps them into place.
    """

    path: Path
    stage: str
    n_frames: int
    frames_per_chunk: int
    replacing: bool = False
    outputs: tuple[str, ...] = field(default=())
    owner: dict[str, Any] | None = None

    def ensure_current(self) -> None:
        """Refuse to write for a stage whose process is gone or no longer holds the lock.

        Worker processes write their chunks under their parent's lock; when the parent
        is killed they may still run. Before each write they check that the process
        that began the stage (``owner``) still holds the store's lock, so a chunk of a
        dead run never lands in the run that took its place.

        Raises
        ------
        StageStateError
            The owner died, or another process now holds the lock.
        """
        if self.owner is None:
            return
        holder = read_lock(self.path) or {}
        same = all(holder.get(k) == self.owner.get(k) for k in ("pid", "host", "process_start"))
        here = self.owner.get("host") == socket.gethostname()
        pid = self.owner.get("pid")
        if not same or (here and isinstance(pid, int) and not process_alive(pid)):
            raise StageStateError(
                f"stage '{self.stage}' of '{self.path}' was begun by PID {pid}, which no longer "
                "holds the run's lock; this chunk is not written"
            )

    @property
    def record(self) -> str:
        """Key of this run's record in the provenance (and of its progress array)."""
        return f"{self.stage}{NEXT_SUFFIX}" if self.replacing else self.stage

    def output(self, name: str) -> str:
        """Path inside the store where output ``name`` (e.g. ``"mask"``) is written."""
        return f"{NEXT_GROUP}/{self.stage}/{name}" if self.replacing else name

    def _array(self, mode: str = "r+") -> zarr.Array:
        arr = progress_array(open_group(self.path, mode), self.record)
        if arr is None:  # pragma: no cover - begin_stage always creates it
            raise RunFormatError(f"'{self.path}' lost its progress record of stage {self.stage}")
        return arr

    def done(self) -> np.ndarray:
        """Boolean array (time,): True where this stage has written the frame."""
        return np.asarray(self._array("r")[:], dtype=bool)

    def mark_done(self, start: int, stop: int) -> None:
        """Record frames ``start:stop`` as written (call after their data is on disk)."""
        self.ensure_current()
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
        """Mark the stage finished (after checking every frame is done) and consolidate.

        A replacement swaps its outputs in first; ``extra`` fields join the record.
        """
        done = self.done()
        if not done.all():
            missing = int(np.count_nonzero(~done))
            raise StageStateError(
                f"stage '{self.stage}' cannot finish: {missing} of {self.n_frames} frames "
                "are not written yet"
            )
        if self.replacing:
            _update_stage(self.path, self.record, status="swapping", **extra)
            _complete_swap(self.path, self.stage)
        else:
            _update_stage(self.path, self.stage, status="finished", finished=utc_now(), **extra)
        write_ome_metadata(self.path)  # consolidates


def _update_stage(path: Path, stage: str, **fields: Any) -> None:
    group = open_group(path, "r+")
    provenance = read_provenance(group)
    stages = dict(provenance.get("stages", {}))
    info = dict(stages.get(stage, {}))
    info.update(jsonable(fields))
    stages[stage] = info
    provenance["stages"] = stages
    group.attrs[PROVENANCE_KEY] = provenance


def _rename(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _complete_swap(path: Path, stage: str) -> None:
    """Swap the outputs of a finished replacement into place (idempotent: an interrupted
    swap is completed by calling it again), then its record and progress."""
    group = open_group(path, "r+")
    provenance = read_provenance(group)
    stages = dict(provenance.get("stages", {}))
    key = f"{stage}{NEXT_SUFFIX}"
    record = dict(stages.get(key) or {})
    next_dir, old_dir = path / NEXT_GROUP / stage, path / OLD_GROUP / stage
    for name in record.get("outputs") or ():
        new, final, old = next_dir / name, path / name, old_dir / name
        if new.exists():
            if final.exists():
                if old.exists():
                    shutil.rmtree(old)
                _rename(final, old)
            _rename(new, final)
        elif final.exists() and not old.exists():
            # not made by the new run (e.g. no probability stored): the old one is stale
            _rename(final, old)
    record.pop("outputs", None)
    stages[stage] = {**record, "status": "finished", "finished": utc_now()}
    stages.pop(key, None)
    provenance["stages"] = stages
    group.attrs[PROVENANCE_KEY] = jsonable(provenance)
    progress = path / PROGRESS_GROUP
    if (progress / key).exists():
        if (progress / stage).exists():
            shutil.rmtree(progress / stage)
        _rename(progress / key, progress / stage)
    for leftover in (old_dir, next_dir):
        if leftover.exists():
            shutil.rmtree(leftover)
    _remove_empty_groups(path)
    log.info("stage %s of %s: the new results replaced the old ones", stage, path)


def _remove_empty_groups(path: Path) -> None:
    """Delete ``_next`` and ``_old`` once no stage has anything in them."""
    for parent in (path / OLD_GROUP, path / NEXT_GROUP):
        if parent.exists() and not any(p for p in parent.iterdir() if p.name != "zarr.json"):
            shutil.rmtree(parent)


def recover_stages(path: str | Path) -> None:
    """Complete any swap of results that was interrupted (call with the lock held)."""
    path = Path(path)
    for key, info in stage_info(path).items():
        if key.endswith(NEXT_SUFFIX) and info.get("status") == "swapping":
            log.warning("completing the interrupted replacement of %s's %s", path, key)
            _complete_swap(path, key[: -len(NEXT_SUFFIX)])
            consolidate(path)


@dataclass(frozen=True)
class StagePlan:
    """What a stage does on a store (:func:`plan_stage`).

    Attributes
    ----------
    action : "new" (start from frame 0), "resume" (go on where it stopped) or
        "finished" (its results are current: nothing to do)
    replace : the new results are written beside finished ones and swapped in
        when complete (:class:`StageProgress` ``replacing``)
    reason : why, for the log
    """

    action: Literal["new", "resume", "finished"]
    replace: bool = False
    reason: str = ""


def plan_stage(
    path: str | Path,
    stage: str,
    *,
    settings: Mapping[str, Any],
    overwrite: bool,
    outputs_present: bool,
    matches: Callable[[dict[str, Any]], bool],
    refusal: Callable[[dict[str, Any]], str],
    outdated: str | None = None,
) -> StagePlan:
    """Decide, once for every stage, what to do with what the store already holds.

    Parameters
    ----------
    path : the run store
    stage : the stage's name
    settings : what the stage would record now (compared with an interrupted
        replacement's record to resume it)
    overwrite : the caller asked to replace results of other settings
    outputs_present : the stage's outputs are in the store
    matches : whether the record of the results in place (``settings``, ``status``)
        counts as made with the settings asked for now (finished: nothing to do;
        running: resume)
    refusal : message of the :class:`StageStateError` raised when the results in
        place were made with other settings and ``overwrite`` is False
    outdated : why the results in place are out of date (an input changed since),
        or None; out-of-date results are replaced without ``overwrite``

    Returns
    -------
    StagePlan
    """
    stages = stage_info(path)
    record = stages.get(stage)
    pending = stages.get(f"{stage}{NEXT_SUFFIX}")
    settings = jsonable(dict(settings))
    finished = record is not None and record.get("status") == "finished" and outputs_present
    if pending is not None:
        if (
            finished
            and pending.get("status") == "running"
            and pending.get("settings") == settings
            and not overwrite
        ):
            return StagePlan("resume", replace=True, reason="an interrupted replacement")
        _discard_replacement(Path(path), stage)  # asked for something else now
    if record is None and outputs_present:  # made outside this stage: never ours to drop
        if overwrite:
            return StagePlan("new", replace=True, reason="asked to replace them")
        raise StageStateError(refusal({}))
    if record is None or not outputs_present:
        return StagePlan("new", reason="no results yet")
    if overwrite:
        return StagePlan("new", replace=finished, reason="asked to replace them")
    if outdated is not None:
        return StagePlan("new", replace=finished, reason=outdated)
    if matches(record):
        return StagePlan("finished" if finished else "resume", reason="same settings")
    raise StageStateError(refusal(record))


def _discard_replacement(path: Path, stage: str) -> None:
    """Forget an interrupted replacement of ``stage`` that will not be resumed."""
    key = f"{stage}{NEXT_SUFFIX}"
    for leftover in (path / NEXT_GROUP / stage, path / PROGRESS_GROUP / key):
        if leftover.exists():
            shutil.rmtree(leftover)
    _remove_empty_groups(path)
    group = open_group(path, "r+")
    provenance = read_provenance(group)
    stages = dict(provenance.get("stages", {}))
    if stages.pop(key, None) is not None:
        provenance["stages"] = stages
        group.attrs[PROVENANCE_KEY] = provenance
        consolidate(path)
        log.info("%s: dropped the interrupted replacement of %s (not resumed)", path, stage)


def begin_stage(
    path: str | Path,
    stage: str,
    *,
    settings: Mapping[str, Any],
    n_frames: int,
    frames_per_chunk: int,
    restart: bool = False,
    replace: bool = False,
    outputs: Sequence[str] = (),
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
    replace : write the outputs beside the finished ones (``_next/<stage>/``) and
        swap them in at :meth:`StageProgress.finish` (see :func:`plan_stage`)
    outputs : names of the stage's outputs in the store (arrays or groups), swapped
        in by a replacement; one the replacement does not write is removed then
    """
    path = Path(path)
    group = open_group(path, "r+")
    settings = jsonable(dict(settings))
    key = f"{stage}{NEXT_SUFFIX}" if replace else stage
    previous = read_provenance(group).get("stages", {}).get(key)
    arr = progress_array(group, key)
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
            f"{PROGRESS_GROUP}/{key}",
            shape=(n_frames,),
            chunks=(frames_per_chunk,),
            dtype="uint8",
            fill_value=0,
            dimension_names=(TIME,),
            overwrite=True,
        )
        if replace:
            staged = path / NEXT_GROUP / stage
            if staged.exists():
                shutil.rmtree(staged)
            group.require_group(f"{NEXT_GROUP}/{stage}")
        _update_stage(
            path,
            key,
            status="running",
            started=utc_now(),
            finished=None,
            settings=settings,
            crystalseg_version=crystalseg_version(),
            **({"outputs": list(outputs)} if replace else {}),
        )
    owner = lock_owner() if holds_lock(path) else None
    progress = StageProgress(
        path, stage, n_frames, frames_per_chunk, replace, tuple(outputs), owner
    )
    if resumable:
        log.info(
            "resuming stage %s on %s: %d of %d frames already done",
            stage,
            path,
            int(progress.done().sum()),
            n_frames,
        )
    if replace:  # the results in place stay readable: keep their metadata consolidated
        consolidate(path)
    if replace and not resumable:
        log.info(
            "stage %s of %s: the new results are written beside the old ones and replace "
            "them once complete",
            stage,
            path,
        )
    return progress


@contextmanager
def writing(path: str | Path, stage: str) -> Iterator[None]:
    """Hold the lock of an existing run store for ``stage`` and complete any swap that
    an earlier writer was interrupted in; for every stage's public entry point."""
    with run_lock(path, stage):
        recover_stages(path)
        yield


class RunWriter:
    """Writes the frames of a new run store; returned by :func:`create_run`.

    Attributes
    ----------
    path : Path of the store
    shape : (time, y, x)
    frames_per_chunk : frames per image chunk (the unit of parallel work)
    progress : the :class:`StageProgress` of the stage that creates the store
    """

    def __init__(
        self, path: Path, progress: StageProgress, *, replaces: Path | None = None
    ) -> None:
        self.path = path
        self.progress = progress
        self.replaces = replaces
        self.frames_per_chunk = progress.frames_per_chunk
        self._group = open_group(path, "r+")
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
        """Mark the stage finished; call last, after every frame is written and marked.

        A store that replaces another (``overwrite``) was written beside it; the
        finished store now takes its place and the old one is deleted.
        """
        self.progress.finish(**extra)
        if self.replaces is not None:
            _swap_stores(self.path, self.replaces)
            self.path = self.replaces
            self.replaces = None


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

    Call it with the store's lock held (:func:`creating`), from the first write to
    :meth:`RunWriter.finish`.

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
    overwrite : replace an existing run store. Without it an existing finished store
        is an error, and an unfinished one created with the same settings is resumed.
        A complete store is replaced only once the new one is complete: it is written
        beside it (``<path>.crystalseg-new``) and swapped in by ``finish``. Only a
        crystalseg run store (or an empty folder) is ever replaced.
    time_attrs : extra attributes of the time coordinate (e.g. where it came from)

    Raises
    ------
    StageStateError
        The store exists and is complete or was made from something else; pass overwrite.
        Or ``path`` holds something that is not a run store.
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
    source_json: dict[str, Any] = jsonable(dict(source))
    resume = (stage, stage_settings, source_json, (n, ny, nx), dtype, fpc)

    if _holds_something(path) and not overwrite:
        writer = _resume_run(path, *resume)
        if writer is not None:
            return writer
    target, replaces = path, None
    if _holds_something(path):
        _check_replaceable(path)
        if _creation_finished(path):
            target, replaces = _replacement_path(path), path
            if target.exists():
                try:
                    writer = _resume_run(target, *resume)
                except StageStateError:
                    writer = None
                if writer is not None:
                    writer.replaces = path
                    return writer
                shutil.rmtree(target)
        else:  # an interrupted creation: nothing complete to lose
            shutil.rmtree(path)

    provenance = {
        "created": utc_now(),
        "crystalseg_version": crystalseg_version(),
        "source": source_json,
        "stages": {},
    }
    _write_new_store(target, (n, ny, nx), dtype, fpc, time_s, time_attrs, pixel_size_um, provenance)
    progress = begin_stage(target, stage, settings=stage_settings, n_frames=n, frames_per_chunk=fpc)
    return RunWriter(target, progress, replaces=replaces)


def _write_new_store(
    path: Path,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    fpc: int,
    time_s: np.ndarray,
    time_attrs: Mapping[str, Any] | None,
    pixel_size_um: float | None,
    provenance: dict[str, Any],
) -> None:
    """The image and time arrays and the root attributes of a new store in ``path``
    (missing, or an empty folder).

    The root attributes (format version, provenance with no stage recorded yet) are
    written with the group itself, in one file: a process killed a moment later leaves
    a store that the next writer recognises as its own unfinished creation and makes
    anew, not a zarr group that is no run store, which it must refuse to touch.
    """
    n, ny, nx = shape
    attributes: dict[str, Any] = {
        FORMAT_KEY: FORMAT_VERSION,
        "pixel_size_um": None if pixel_size_um is None else tidy_number(pixel_size_um),
        PROVENANCE_KEY: provenance,
    }
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attributes)
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
        {"long_name": "time since first frame", "units": "s", **jsonable(dict(time_attrs or {}))}
    )


def _holds_something(path: Path) -> bool:
    """Whether ``path`` exists and is not an empty folder."""
    if not path.exists():
        return False
    return not path.is_dir() or any(path.iterdir())


def _is_run_store(path: Path) -> bool:
    try:
        read_run_attrs(path)
    except (RunFormatError, OSError):
        return False
    return True


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything that is not a crystalseg run store."""
    if path.is_dir() and _is_run_store(path):
        return
    what = (
        "a file"
        if not path.is_dir()
        else (
            "a zarr store that is not a crystalseg run"
            if (path / "zarr.json").exists()
            else "a folder that is not a run store"
        )
    )
    raise StageStateError(
        f"'{path}' is {what}; refusing to replace it (only a crystalseg run store is "
        "replaced). Choose another output path"
    )


def _creation_finished(path: Path) -> bool:
    stages = stage_info(path)
    return any(stages.get(s, {}).get("status") == "finished" for s in ("import", "synth"))


def _replacement_path(path: Path) -> Path:
    """Where a store that replaces ``path`` is written until it is complete."""
    return path.with_name(f"{path.name}.crystalseg-new")


def _retired_path(path: Path) -> Path:
    """Where the replaced store waits during the swap."""
    return path.with_name(f"{path.name}.crystalseg-old")


def _swap_stores(new: Path, path: Path) -> None:
    """Put the complete store ``new`` in the place of ``path``, then delete the old one.

    The lock (beside ``path``) stays held across the swap.
    """
    retired = _retired_path(path)
    if retired.exists():
        shutil.rmtree(retired)
    os.replace(path, retired)
    os.replace(new, path)
    shutil.rmtree(retired)
    log.info("replaced run store %s with the new one", path)


def recover_replaced_store(path: str | Path) -> None:
    """Finish a swap of whole stores that was interrupted between its two renames."""
    path = Path(path)
    new, retired = _replacement_path(path), _retired_path(path)
    if not retired.exists():
        return
    if path.exists():  # the swap was done; only the old store was left
        shutil.rmtree(retired)
        return
    if new.exists() and _is_run_store(new) and _creation_finished(new):
        os.replace(new, path)
        shutil.rmtree(retired)
        log.warning("completed the interrupted replacement of run store %s", path)
    else:
        os.replace(retired, path)
        log.warning("restored run store %s after an interrupted replacement", path)


@contextmanager
def creating(path: str | Path, stage: str) -> Iterator[None]:
    """Hold the lock of the run store that ``stage`` creates at ``path``; an interrupted
    swap of an earlier replacement of it is completed first.

    Raises
    ------
    StageStateError
        ``path`` is a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(path, stage):
        recover_replaced_store(path)
        if path.exists() and not path.is_dir():
            raise StageStateError(
                f"'{path}' is a file; refusing to replace it. Choose another output path"
            )
        yield


def _resume_run(
    path: Path,
    stage: str,
    settings: dict[str, Any],
    source: dict[str, Any],
    shape: tuple[int, int, int],
    dtype: np.dtype,
    fpc: int,
) -> RunWriter | None:
    """The writer of an interrupted creation of the same run, or an error, or None (empty,
    or killed before it recorded its stage: to be made anew)."""
    if not (path / "zarr.json").exists():
        if path.is_dir() and not _holds_something(path):
            return None
        raise StageStateError(
            f"'{path}' exists and is not a run store; refusing to overwrite it. "
            "Choose another output path"
        )
    attrs = read_run_attrs(path)
    if attrs.get(PROVENANCE_KEY, {}).get("stages") == {}:
        return None  # killed while creating it, before it recorded its stage: nothing to keep
    info = attrs.get(PROVENANCE_KEY, {}).get("stages", {}).get(stage, {})
    image = get_array(open_group(path), IMAGE, path)
    same = (
        info.get("status") == "running"
        and info.get("settings") == jsonable(settings)
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
    with run_lock(path, "calibrate"):
        damaged = _drop_damaged_pixel_size(path) if pixel_size_um is not None else None
        recover_stages(path)
        return _set_calibration(path, pixel_size_um, interval_s, damaged=damaged)


def _drop_damaged_pixel_size(path: str | Path) -> Any:
    """Remove a pixel size that is not a number in the physical range (edited by hand
    or by another tool) so that the new one can replace it; returns the removed value
    (None: it was fine). Only :func:`set_calibration` with a new pixel size calls this:
    every other reader refuses such a store."""
    group = open_group(path, mode="r+")
    value = node_attrs(group).get("pixel_size_um")
    try:
        check_calibration(pixel_size_um=value)
    except ConfigError:
        group.attrs["pixel_size_um"] = None
        log.warning("replacing the damaged pixel size %r of %s", value, path)
        return value
    return None


def _set_calibration(
    path: str | Path, pixel_size_um: float | None, interval_s: float | None, *, damaged: Any
) -> dict[str, Any]:
    attrs = read_run_attrs(path)
    before = calibration_fingerprint(path)
    group = open_group(path, mode="r+")
    record: dict[str, Any] = {"when": utc_now()}
    if pixel_size_um is not None:
        old = attrs.get("pixel_size_um") if damaged is None else jsonable(damaged)
        record["pixel_size_um"] = [old, tidy_number(pixel_size_um)]
        if damaged is not None:
            record["repaired"] = "the pixel size before was not a number of micrometres"
        group.attrs["pixel_size_um"] = tidy_number(pixel_size_um)
    if interval_s is not None:
        time = get_array(group, TIME, path)
        steps = np.diff(np.asarray(time[:], dtype="float64"))
        old = float(np.median(steps)) if len(steps) else None
        time[:] = np.arange(time.shape[0], dtype="float64") * float(interval_s)
        record["interval_s"] = [old, float(interval_s)]
        record["time_source"] = [node_attrs(time).get("source", "unknown"), "given interval"]
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
    group.attrs[PROVENANCE_KEY] = jsonable(provenance)
    write_ome_metadata(path)  # consolidates
    return {"pixel_size_um": pixel_size_um, "interval_s": interval_s}
