"""Import a recording (TIFF stack, image folder, zarr, OME-Zarr, .npy) into a run store.

The frames stream one store chunk at a time from the reader to the store, so a
recording larger than memory imports with flat peak memory. An interrupted import
resumes when the same command is run again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from crystalseg.errors import ConfigError, CrystalsegError, CrystalsegWarning, UnsupportedInputError
from crystalseg.io import FrameSource, PlanarRGB, open_source
from crystalseg.store import RunWriter, check_calibration, create_run, creating
from crystalseg.store.location import RunLike, RunPath, remove_tree, run_path

log = logging.getLogger(__name__)


def frame_times(
    n_frames: int, *, interval_s: float | None, found_s: np.ndarray | None, found_from: str
) -> tuple[np.ndarray, str]:
    """Seconds since the first frame and where they came from.

    A given interval wins over metadata; metadata wins over nothing. With neither,
    frames are taken to be 1 s apart and a :class:`CrystalsegWarning` says how to fix it.

    Raises
    ------
    ConfigError
        ``interval_s`` is outside :data:`~crystalseg.store.INTERVAL_S_LIMITS`.
    UnsupportedInputError
        The times the recording holds are not finite or do not increase from frame to
        frame (a NaN in the metadata, a clock set back): a time axis every rate and
        kinetic fit would divide by. The message names the first bad frame and says to
        give the interval instead.
    """
    if interval_s is not None:
        check_calibration(interval_s=interval_s, what="--interval: ")
        return np.arange(n_frames, dtype="float64") * float(interval_s), "given interval"
    if found_s is not None:
        found_s = np.asarray(found_s, dtype="float64")
        if found_s.shape != (n_frames,):
            raise UnsupportedInputError(
                f"the recording holds {found_s.size} frame times ({found_from}) for {n_frames} "
                "frames; pass --interval SECONDS (interval_s=) for a regular time axis"
            )
        bad = np.flatnonzero(~np.isfinite(found_s))
        steps = np.diff(found_s)
        back = np.flatnonzero(~(steps > 0))
        if bad.size or back.size:
            i = int(bad[0]) if bad.size else int(back[0]) + 1
            what = (
                f"frame {i} has time {found_s[i]}"
                if bad.size
                else f"frame {i} is at {found_s[i]:g} s, not after frame {i - 1} at "
                f"{found_s[i - 1]:g} s"
            )
            raise UnsupportedInputError(
                f"the recording's frame times ({found_from}) are not finite and increasing: "
                f"{what}; pass --interval SECONDS (interval_s=) for a regular time axis"
            )
        return found_s - found_s[0], found_from
    warnings.warn(
        "the recording holds no frame times; assuming 1 s between frames. "
        "Pass --interval SECONDS (interval_s=) for a real time axis",
        CrystalsegWarning,
        stacklevel=3,
    )
    return np.arange(n_frames, dtype="float64"), "assumed 1 s interval (no timing metadata)"


def _copy_chunks(
    src: FrameSource, writer: RunWriter, progress: Callable[[int], None] | None
) -> None:
    """Copy every chunk the store still lacks, a few chunks at a time in threads.

    Each worker reads, compresses and writes whole store chunks of its own, so the
    codec runs on all cores while at most ``workers`` chunks are in memory.
    """
    pending = writer.progress.pending_chunks()
    skipped = src.shape[0] - sum(stop - start for start, stop in pending)
    if progress and skipped:
        progress(skipped)
    lock = threading.Lock()  # readers of one file are not thread-safe

    def copy(chunk: tuple[int, int]) -> int:
        start, stop = chunk
        with lock:
            frames = src.read(start, stop)
        writer.write_frames(start, frames)
        writer.mark_done(start, stop)
        return stop - start

    workers = max(1, min(len(pending), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        in_flight = deque(pool.submit(copy, chunk) for chunk in pending[:workers])
        upcoming = iter(pending[workers:])
        try:
            while in_flight:
                n_done = in_flight.popleft().result()
                if progress:
                    progress(n_done)
                chunk = next(upcoming, None)
                if chunk is not None:
                    in_flight.append(pool.submit(copy, chunk))
        except BaseException:  # also Ctrl-C: stop queued chunks, keep finished ones
            for future in in_flight:
                future.cancel()
            raise


def refuse_source_inside(source: str | Path, dest: RunLike) -> None:
    """Refuse to import a recording into a store that holds it (or into itself): the new
    store would overwrite what it reads, and the reading would see zeros."""
    where = run_path(dest)
    if not isinstance(where, Path):
        return  # recordings are read from this machine's files
    text = str(source)
    if any(ch in text for ch in "*?[") and not Path(text).exists():
        text = text[: min(text.find(ch) for ch in "*?[" if ch in text)]
    src = Path(text).resolve()
    target = where.resolve()
    if src == target or target in src.parents:
        raise ConfigError(
            f"the recording '{source}' lies inside the destination '{dest}'; importing would "
            "overwrite what it reads. Import it into a new run store path"
        )


def import_run(
    source: str | Path,
    dest: RunLike,
    *,
    pixel_size_um: float | None = None,
    interval_s: float | None = None,
    channel: int | None = None,
    series: int | None = None,
    frames_per_chunk: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    planar_rgb: PlanarRGB = "auto",
) -> RunPath:
    """Copy a recording into a new run store, frame chunk by frame chunk.

    Parameters
    ----------
    source : path of a TIFF/OME-TIFF stack, an image folder or glob, a zarr array,
        an OME-Zarr image or a ``.npy`` stack
    dest : path of the run store to create (``*.zarr``), or its URL on object storage
        (``s3://bucket/run.zarr``, see :mod:`crystalseg.store.location`)
    pixel_size_um : micrometres per pixel; overrides what the file says
    interval_s : seconds between frames; overrides timestamps in the file
    channel : channel to take from a multi-channel recording
    series : for a TIFF of several image series (stage positions), the one to import
    frames_per_chunk : frames per store chunk (default: about 4 MiB a chunk)
    overwrite : replace an existing store at ``dest``
    progress : called with the number of frames written after each chunk
    planar_rgb : how a TIFF of 3 or 4 planar RGB(A) pages is read: "frames", "rgb" (one
        colour frame turned grey) or "auto" (see :func:`~crystalseg.io.open_source`)

    Returns
    -------
    Path (or UPath) of the run store.
    """
    dest = run_path(dest)
    check_calibration(pixel_size_um=pixel_size_um, interval_s=interval_s)
    if frames_per_chunk is not None and (
        isinstance(frames_per_chunk, bool) or not 1 <= int(frames_per_chunk)
    ):
        raise ConfigError(f"frames_per_chunk must be an integer >= 1, got {frames_per_chunk!r}")
    refuse_source_inside(source, dest)
    existed = dest.exists()
    with open_source(source, channel=channel, series=series, planar_rgb=planar_rgb) as src:
        if interval_s is None and src.time_s is not None and src.time_doubt:
            warnings.warn(src.time_doubt, CrystalsegWarning, stacklevel=2)
        time_s, time_source = frame_times(
            src.shape[0], interval_s=interval_s, found_s=src.time_s, found_from=src.time_source
        )
        size_um = pixel_size_um if pixel_size_um is not None else src.pixel_size_um
        settings = {
            "source": str(source),
            "pixel_size_um": pixel_size_um,
            "interval_s": interval_s,
            "channel": channel,
            **({"series": series} if series is not None else {}),
            **({"planar_rgb": planar_rgb} if planar_rgb != "auto" else {}),
        }
        provenance = {
            "description": src.description,
            "pixel_size_from": "given"
            if pixel_size_um is not None
            else ("metadata" if src.pixel_size_um is not None else "unknown"),
            **src.metadata,
        }
        with creating(dest, "import"):
            writer = create_run(
                dest,
                shape=src.shape,
                dtype=src.dtype,
                time_s=time_s,
                pixel_size_um=size_um,
                source=provenance,
                stage="import",
                settings=settings,
                frames_per_chunk=frames_per_chunk,
                overwrite=overwrite,
                time_attrs={"source": time_source},
            )
            try:
                _copy_chunks(src, writer, progress)
            except CrystalsegError:
                if writer.path != dest or not existed:
                    with contextlib.suppress(OSError):
                        remove_tree(writer.path)  # made by this call
                raise
            writer.finish()
    log.info("imported %d frames from %s into %s", src.shape[0], source, dest)
    return dest
