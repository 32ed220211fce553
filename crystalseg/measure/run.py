"""Measure a whole segmented run store: mask → instances → particle table and PSD per frame.

:func:`measure_run` measures the frames in parallel with dask, one task per time
chunk of the mask: each task reads its frames of ``mask`` and ``image`` from the
store, measures them (:func:`measure_mask_frame`), writes its slice of group
``psd`` and its particle rows into a staging group, and only then marks its
frames done in the stage's progress record. Nothing holds more than a chunk of
frames, so memory stays flat in the number of frames, and an interrupted run
resumes with the chunks that are missing. When all are done, the staged rows
are copied into the ``particles`` table and the stage is marked finished (a
re-measure that replaces earlier results swaps them in only then, see
:mod:`crystalseg.store.stages`).

Locally the tasks run on dask's process pool by default (all cores: the
distance transform, watershed and table building hold the GIL for part of their
time, so threads scale less than processes on many cores), or on threads;
with a ``distributed`` client or scheduler address they run on the cluster's
workers, which must see the store's filesystem. The process pool starts its
workers with ``spawn``: a script that calls :func:`measure_run` needs the usual
``if __name__ == "__main__":`` guard (the CLI and notebooks need nothing).

:func:`measure_as_segmented` measures the chunks of a mask as the model writes
them; :func:`crystalseg.pipeline.segment_and_measure` (what ``crystalseg
measure`` calls) composes it with the segmentation. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.dims import IMAGE, MASK, PROBABILITY, TIME
from crystalseg.errors import (
    ConfigError,
    CrystalsegWarning,
    MaskValueError,
    RunFormatError,
    StageStateError,
)
from crystalseg.measure.distributions import frame_distributions
from crystalseg.measure.features import measure_frame, miles_lantuejoul_weights
from crystalseg.measure.instances import crystal_classes, label_instances
from crystalseg.measure.intervals import count_intervals
from crystalseg.measure.results import (
    EXCLUDED_REASONS,
    PARTICLES_GROUP,
    PSD_GROUP,
    PSD_RENAMES,
    STAGE,
    STAGING_GROUP,
    assemble_particles,
    create_psd,
    prepare_staging,
    remove_particles,
    remove_staging,
    write_psd_chunk,
    write_staged_particles,
)
from crystalseg.measure.settings import MeasureSettings
from crystalseg.measure.windows import WINDOW_GROUP, write_psd_windows
from crystalseg.store import (
    StagePlan,
    StageProgress,
    begin_stage,
    calibration_fingerprint,
    consolidate,
    get_array,
    open_run,
    plan_stage,
    read_run_attrs,
    stage_info,
    writing,
)
from crystalseg.store.cluster import run_on_cluster
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.store.stages import NEXT_SUFFIX

log = logging.getLogger(__name__)

#: ``progress(stage, frames_done, frames_total)``: stage is "segment" or "measure";
#: called after every chunk; raising from it stops the run (which can be resumed).
MeasureProgress = Callable[[str, int, int], None]

LocalScheduler = Literal["processes", "threads", "synchronous"]

_DEFAULT_CODES = ("background", "crystal")


# --------------------------------------------------------------------------- one frame


def label_mask_frame(
    mask: np.ndarray,
    *,
    settings: MeasureSettings,
    codes: tuple[str, ...] = _DEFAULT_CODES,
    keep_small: bool = True,
) -> np.ndarray:
    """Instance labels of one frame's class mask, exactly as the measurement makes them.

    The one call of :func:`~crystalseg.measure.instances.label_instances` with the
    measurement settings, shared by :func:`measure_mask_frame` and by whatever must
    reproduce its particles (QC overlays): the ``label`` column of the particle
    table indexes these labels.

    Parameters
    ----------
    mask : ndarray, shape (y, x), integer dtype
        Class index per pixel.
    settings : MeasureSettings
    codes : tuple of str
        Class names of the mask, background first.
    keep_small : bool
        Keep the particles under ``settings.min_area_px`` (default, as the
        measurement does: the table lists them as excluded, ``too_small``, so that
        every object found is accounted for); False drops them, for scoring the
        particles a measurement counts.

    Returns
    -------
    ndarray of int32, shape (y, x)
        0 background, 1..n one id per particle.
    """
    return label_instances(
        mask,
        codes=codes,
        classes=settings.classes,
        split=settings.split,
        min_area_px=settings.min_area_px,
        min_depth_px=settings.min_depth_px,
        neck_ratio=settings.neck_ratio,
        smooth_px=settings.smooth_px,
        trim_boundary=settings.trim_boundary,
        join_occluded=settings.join_occluded,
        keep_small=keep_small,
    )


def measure_mask_frame(
    mask: np.ndarray,
    image: np.ndarray | None,
    *,
    probability: np.ndarray | None = None,
    settings: MeasureSettings,
    codes: tuple[str, ...] = _DEFAULT_CODES,
    pixel_size_um: float | None = None,
    labels: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[str, tuple[tuple[str, ...], np.ndarray | float]]]:
    """Particles and distributions of one frame from its class mask.

    Parameters
    ----------
    mask : ndarray, shape (y, x), integer dtype
        Class index per pixel.
    image : ndarray, shape (y, x), optional
        The raw frame (intensity and sharpness; without it the sharpness filter
        cannot apply and sharpness is NaN).
    probability : ndarray, shape (y, x), optional
        The model's foreground probability (the run's ``probability``), for each
        particle's ``confidence``; without it the confidence filter cannot apply.
    settings : MeasureSettings
    codes : tuple of str
        Class names of the mask, background first.
    pixel_size_um : float, optional
        Micrometres per pixel; sizes are in µm with it, px without.
    labels : ndarray, shape (y, x), int, optional
        The frame's instance labels if already made (by :func:`label_mask_frame`
        with the same settings, or true instances, 1..n); otherwise they are made
        from ``mask``. Particles under ``settings.min_area_px`` are listed as
        excluded (``too_small``).

    Returns
    -------
    table : DataFrame
        :func:`~crystalseg.measure.features.measure_frame` columns plus
        ``kept`` (bool), ``excluded_code`` (index into
        :data:`~crystalseg.measure.results.EXCLUDED_REASONS`) and ``weight``
        (number weight: 1, the Miles–Lantuéjoul factor, or 0 when excluded).
    distributions : dict of str to (dims, value)
        :func:`~crystalseg.measure.distributions.frame_distributions` of the
        kept particles (its ``count`` named ``count_kept``, as in ``psd``; the
        D-values NaN below ``settings.min_count``), plus ``count_detected`` (every
        row of the table), ``count_excluded_<reason>`` for every reason of
        :data:`~crystalseg.measure.results.EXCLUDED_REASONS` (count_kept plus
        these is count_detected), ``number_density`` (weighted number per mm² of
        field, NaN without a pixel size), and the Poisson intervals
        ``count_kept_lower``/``_upper`` and ``number_density_lower``/``_upper``.
    """
    if labels is None:
        labels = label_mask_frame(mask, settings=settings, codes=codes)
    elif labels.shape != mask.shape:
        raise MaskValueError(f"labels {labels.shape} and mask {mask.shape} differ in shape.")
    table = measure_frame(labels, image, probability=probability, pixel_size_um=pixel_size_um)
    n = len(table)
    code = np.zeros(n, dtype=np.uint8)
    weight = np.ones(n)
    # area is a whole number of pixels times the pixel area: half a pixel of slack.
    small = table["area"].to_numpy() < (settings.min_area_px - 0.5) * _pixel_area(pixel_size_um)
    code[small] = EXCLUDED_REASONS.index("too_small")
    if settings.edge != "keep":
        code[(code == 0) & table["touches_edge"].to_numpy()] = EXCLUDED_REASONS.index("edge")
    if settings.min_sharpness is not None:
        blurred = ~(table["sharpness"].to_numpy() >= settings.min_sharpness)
        code[(code == 0) & blurred] = EXCLUDED_REASONS.index("out_of_focus")
    if settings.min_confidence is not None and probability is not None:
        doubtful = ~(table["confidence"].to_numpy() >= settings.min_confidence)
        code[(code == 0) & doubtful] = EXCLUDED_REASONS.index("low_confidence")
    if settings.edge == "miles-lantuejoul" and n:
        ml = miles_lantuejoul_weights(
            (table["bbox_max_y"] - table["bbox_min_y"]).to_numpy(),
            (table["bbox_max_x"] - table["bbox_min_x"]).to_numpy(),
            mask.shape,
        )
        code[(code == 0) & ~np.isfinite(ml)] = EXCLUDED_REASONS.index("larger_than_frame")
        weight = np.where(np.isfinite(ml), ml, 0.0)
    kept = code == 0
    table["kept"] = kept
    table["excluded_code"] = code
    table["weight"] = np.where(kept, weight, 0.0)

    h, w = mask.shape
    scale = 1.0 if pixel_size_um is None else float(pixel_size_um)
    frame_area = h * w * scale * scale
    dist = frame_distributions(
        table,
        bins=settings.bin_edges(),
        size_column=settings.size_column,
        weight_column="weight",
        edge="keep",
        frame_shape=(h, w),
        frame_area=frame_area,
        elongated_aspect_ratio=settings.elongated_aspect_ratio,
        min_count=settings.min_count,
    )
    dist = {PSD_RENAMES.get(k, k): v for k, v in dist.items()}
    dist["count_detected"] = ((), n)
    counts = np.bincount(code, minlength=len(EXCLUDED_REASONS))
    for index, reason in enumerate(EXCLUDED_REASONS):
        if reason:
            dist[f"count_excluded_{reason}"] = ((), int(counts[index]))
    dist.update(
        count_intervals(int(kept.sum()), float(dist["number"][1]), frame_area, pixel_size_um)
    )
    return table, dist


def _pixel_area(pixel_size_um: float | None) -> float:
    """Area of one pixel in the unit of the table's ``area`` column."""
    return 1.0 if pixel_size_um is None else float(pixel_size_um) ** 2


# --------------------------------------------------------------------------- one chunk


@dataclass(frozen=True)
class _ChunkJob:
    """Everything a worker needs to measure frames ``start:stop`` of the store."""

    path: RunPath
    start: int
    stop: int
    settings: MeasureSettings
    codes: tuple[str, ...]
    pixel_size_um: float | None
    progress: StageProgress


def _measure_chunk(job: _ChunkJob) -> int:
    """Measure one chunk, write its psd slice and staged particles, mark it done."""
    job.progress.ensure_current()  # the measurement that handed it out still runs
    group = zarr.open_group(str(job.path), mode="r", use_consolidated=False)
    masks = np.asarray(get_array(group, MASK, job.path)[job.start : job.stop])
    images = np.asarray(get_array(group, IMAGE, job.path)[job.start : job.stop])
    probs = (
        np.asarray(get_array(group, PROBABILITY, job.path)[job.start : job.stop])
        if PROBABILITY in group
        else None
    )
    times = np.asarray(get_array(group, TIME, job.path)[job.start : job.stop], dtype=np.float64)

    tables: list[pd.DataFrame] = []
    columns: dict[str, list[np.ndarray | float]] = {}
    for i in range(job.stop - job.start):
        table, dist = measure_mask_frame(
            masks[i],
            images[i],
            probability=None if probs is None else probs[i],
            settings=job.settings,
            codes=job.codes,
            pixel_size_um=job.pixel_size_um,
        )
        table.insert(0, "time_s", np.full(len(table), times[i]))
        table.insert(0, "frame", np.full(len(table), job.start + i, dtype=np.int64))
        tables.append(table)
        for name, (_, value) in dist.items():
            columns.setdefault(name, []).append(value)
    job.progress.ensure_current()
    write_psd_chunk(
        job.path,
        job.start,
        {k: np.stack(v) for k, v in columns.items()},
        into=job.progress.output(PSD_GROUP),
    )
    non_empty = [t for t in tables if len(t)]
    rows = pd.concat(non_empty, ignore_index=True) if non_empty else tables[0]
    write_staged_particles(job.path, job.start, rows)
    job.progress.mark_done(job.start, job.stop)
    return job.stop - job.start


# --------------------------------------------------------------------------- the run


def measure_run(
    run: RunLike,
    *,
    settings: MeasureSettings | None = None,
    client: Any = None,
    progress: MeasureProgress | None = None,
    overwrite: bool = False,
    scheduler: LocalScheduler = "processes",
    num_workers: int | None = None,
    frames_per_chunk: int | None = None,
) -> xr.Dataset:
    """Measure every frame of a segmented run store; write ``psd`` and ``particles`` into it.

    A run that has no mask yet is segmented and measured by
    :func:`crystalseg.pipeline.segment_and_measure` (what ``crystalseg measure`` calls).

    Parameters
    ----------
    run : path of the run store
    settings : MeasureSettings, optional
        What to measure and how (default :class:`MeasureSettings`()).
    client : distributed.Client or str, optional
        A client or scheduler address: the chunks run on the cluster's workers
        (each writes straight into the store, which every worker must see).
        None runs here.
    progress : callable (stage, frames_done, frames_total), optional
        Called as chunks complete, with stage "measure".
    overwrite : bool
        Replace a measurement made with other settings (without it, that is an
        error). A finished measurement with the same settings of the same mask is
        returned as is; an unfinished one resumes. New results replace old ones
        only once they are complete.
    scheduler : {"processes", "threads", "synchronous"}
        Local dask scheduler when ``client`` is None.
    num_workers : int, optional
        Local workers (default: all cores).
    frames_per_chunk : int, optional
        Frames per task and per chunk of ``psd`` (default: the mask's chunks).

    Returns
    -------
    Dataset
        Group ``psd`` of the store, opened lazily (``xarray.open_zarr(run,
        group="psd")``): dims (time, size_bin) and (time, length_bin, width_bin).

    Raises
    ------
    StageStateError
        The run has no finished mask, or was measured with other settings and
        ``overwrite`` is False, or another process is writing it.
    RunFormatError, ConfigError
        Unreadable store, impossible settings.
    """
    options = MeasureOptions(
        MeasureSettings() if settings is None else settings,
        frames_per_chunk,
        overwrite,
        scheduler,
        num_workers,
        progress,
    )
    path = run_path(run, resolve=True)
    open_run(path)  # checks the store is a complete run
    with writing(path, STAGE):
        if needs_segmentation(path):
            raise StageStateError(
                f"run '{path}' has no finished mask to measure; segment it first "
                f"('crystalseg segment {path}'), or segment and measure it in one go "
                f"('crystalseg measure {path}', crystalseg.pipeline.segment_and_measure)"
            )
        plan = _begin_measure(path, options)
        if plan is not None:
            jobs = [plan.job(start, stop) for start, stop in plan.pending]
            if client is not None:
                _run_distributed(jobs, client, plan.frames_done, plan.n_frames, progress)
            else:
                _run_local(jobs, scheduler, num_workers, plan.frames_done, plan.n_frames, progress)
            _finish_measure(plan)
    return open_psd(path)


def measure_as_segmented(
    run: RunLike, chunks: Iterator[tuple[int, int]], options: MeasureOptions
) -> None:
    """Measure the chunks of a mask as they land: each ``(start, stop)`` that ``chunks``
    yields is a time chunk of the mask now on disk (as
    :func:`crystalseg.segment.stream_segment_run` yields them).

    A measurement chunk is handed to the local pool once every frame it covers is
    there, so ``frames_per_chunk`` may differ from the mask's chunks; the pool works
    while the model makes the next chunk. All of it is measured (and the stage
    finished) once ``chunks`` is exhausted; the caller holds the store's lock.
    """
    path = run_path(run, resolve=True)
    plan = _begin_measure(path, options)
    if plan is None:  # pragma: no cover - a finished result names a finished mask
        for _ in chunks:
            pass
        return
    ready = np.zeros(plan.n_frames, dtype=bool)
    waiting = list(plan.pending)
    with _ChunkPool(options, len(waiting), plan.frames_done, plan.n_frames) as pool:
        for start, stop in chunks:
            ready[start:stop] = True
            for chunk in [c for c in waiting if ready[c[0] : c[1]].all()]:
                waiting.remove(chunk)
                pool.submit(plan.job(*chunk))
            pool.collect(wait=not waiting)
        pool.collect(wait=True)
    _finish_measure(plan)


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure a run: what (``settings``) and how the work runs here.

    Attributes
    ----------
    settings : what to measure (:class:`MeasureSettings`)
    frames_per_chunk : frames per task and per chunk of ``psd`` (None: the mask's chunks)
    overwrite : replace a measurement made with other settings
    scheduler : {"processes", "threads", "synchronous"}, the local dask scheduler
    num_workers : local workers (None: all cores)
    progress : callable (stage, frames_done, frames_total), or None
    """

    settings: MeasureSettings = field(default_factory=MeasureSettings)
    frames_per_chunk: int | None = None
    overwrite: bool = False
    scheduler: LocalScheduler = "processes"
    num_workers: int | None = None
    progress: MeasureProgress | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.settings, MeasureSettings):
            raise ConfigError(
                f"settings must be a MeasureSettings, got {type(self.settings).__name__}"
            )
        if self.scheduler not in ("processes", "threads", "synchronous"):
            raise ConfigError(
                f"scheduler {self.scheduler!r} is unknown; use 'processes', 'threads' or "
                "'synchronous'"
            )
        if self.frames_per_chunk is not None and int(self.frames_per_chunk) < 1:
            raise ConfigError(f"frames_per_chunk must be >= 1, got {self.frames_per_chunk!r}")


@dataclass(frozen=True)
class _Plan:
    """A measurement begun (or resumed) on a store: its progress and the chunks to do."""

    path: RunPath
    settings: MeasureSettings
    n_frames: int
    frames_per_chunk: int
    codes: tuple[str, ...]
    pixel_size_um: float | None
    stage: StageProgress
    pending: tuple[tuple[int, int], ...]

    @property
    def frames_done(self) -> int:
        """Frames measured before this call."""
        return self.n_frames - sum(stop - start for start, stop in self.pending)

    def job(self, start: int, stop: int) -> _ChunkJob:
        return _ChunkJob(
            self.path,
            start,
            stop,
            self.settings,
            self.codes,
            self.pixel_size_um,
            self.stage,
        )


def _without_confidence_filter(
    path: RunPath, settings: MeasureSettings, model_sha256: str | None
) -> MeasureSettings:
    """``settings`` without the confidence filter, for a run that stores no probability;
    the measurement records the filter as off, so it never claims a filter it skipped.
    A mask from a model (``segment --no-save-probability``) gets a warning that says how
    to have the filter; one made elsewhere (no model, so no probability) does not."""
    if model_sha256:
        warnings.warn(
            f"confidence filter (min_confidence {settings.min_confidence:g}) not applied: "
            f"run '{path}' stores no model probability. To apply it, segment again with "
            f"'crystalseg segment {path} --overwrite' (it stores the probability), then "
            "measure",
            CrystalsegWarning,
            stacklevel=4,
        )
    return replace(settings, min_confidence=None)


def _begin_measure(path: RunPath, options: MeasureOptions) -> _Plan | None:
    """Check the mask and earlier results; create or resume the stage and its outputs.

    Returns None when a finished measurement with these settings of this mask
    exists (nothing to do). Needs ``mask`` to exist, finished or still being written.
    """
    settings, progress = options.settings, options.progress
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    mask = get_array(group, MASK, path)
    n, ny, nx = (int(v) for v in mask.shape)
    if n == 0:
        raise RunFormatError(f"run '{path}' has no frames to measure")
    codes = read_mask_codes(mask)
    crystal_classes(codes, classes=settings.classes)  # fails early on unknown classes
    fpc = min(int(options.frames_per_chunk or mask.chunks[0]), n)
    pixel_size_um = read_run_attrs(path).get("pixel_size_um")
    mask_identity = mask_provenance(path, mask)
    calibration = calibration_fingerprint(path)
    no_probability = PROBABILITY not in group
    if settings.min_confidence is not None and no_probability:
        settings = _without_confidence_filter(path, settings, mask_identity["model_sha256"])

    state = _check_existing(
        path,
        settings,
        mask_identity,
        calibration,
        overwrite=options.overwrite,
        no_probability=no_probability,
    )
    if state.action == "finished":
        log.info("%s is already measured with these settings; nothing to do", path)
        if progress is not None:
            progress(STAGE, n, n)
        return None
    if state.action == "resume":  # the record as it was when measuring began
        record = stage_info(path)[STAGE + NEXT_SUFFIX if state.replace else STAGE]
        stage_settings = dict(record["settings"])
        mask_identity = stage_settings["mask"]
    else:
        stage_settings = {
            "measure": settings.to_dict(),
            "mask": mask_identity,
            "calibration": calibration,
        }

    def begin(restart: bool) -> StageProgress:
        return begin_stage(
            path,
            STAGE,
            settings=stage_settings,
            n_frames=n,
            frames_per_chunk=fpc,
            restart=restart,
            replace=state.replace,
            outputs=(PSD_GROUP, PARTICLES_GROUP, WINDOW_GROUP),
        )

    stage = begin(restart=state.action == "new")
    if not stage.done().any() or not _outputs_exist(path, stage):
        if stage.done().any():  # progress recorded but its outputs are gone: start over
            stage = begin(restart=True)
        time_s = np.asarray(get_array(group, TIME, path)[:], dtype=np.float64)
        create_psd(
            path,
            settings,
            time_s=time_s,
            frames_per_chunk=fpc,
            pixel_size_um=pixel_size_um,
            mask_identity=mask_identity,
            frame_shape=(ny, nx),
            into=stage.output(PSD_GROUP),
        )
        prepare_staging(path, fresh=True)
        if not stage.replacing:
            remove_particles(path)  # a table of earlier settings must not outlive them
    plan = _Plan(path, settings, n, fpc, codes, pixel_size_um, stage, tuple(stage.pending_chunks()))
    if progress is not None:
        progress(STAGE, plan.frames_done, n)
    if plan.pending:
        log.info(
            "measuring %d frames of %s in %d chunks",
            n - plan.frames_done,
            path,
            len(plan.pending),
        )
    return plan


def _finish_measure(plan: _Plan) -> None:
    """Assemble the particle table and mark the stage finished (every chunk is measured).

    The results name the mask as it is now: a measurement that streamed behind
    the segmentation began before the mask was finished.
    """
    path, settings, n, fpc = plan.path, plan.settings, plan.n_frames, plan.frames_per_chunk
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    mask_identity = mask_provenance(path, get_array(group, MASK, path))
    all_chunks = [(s, min(s + fpc, n)) for s in range(0, n, fpc)]
    rows = assemble_particles(
        path,
        all_chunks,
        into=plan.stage.output(PARTICLES_GROUP),
        pixel_size_um=plan.pixel_size_um,
        attrs={
            "pixel_size_um": plan.pixel_size_um,
            "edge_treatment": settings.edge,
            "measure_settings": settings.to_dict(),
            "mask": mask_identity,
        },
    )
    write_psd_windows(path, settings, output=plan.stage.output)
    psd = zarr.open_group(
        str(path / plan.stage.output(PSD_GROUP)), mode="r+", use_consolidated=False
    )
    if psd.attrs.get("mask") != json.dumps(mask_identity):
        psd.attrs["mask"] = json.dumps(mask_identity)
    began = stage_info(path)[plan.stage.record].get("settings") or {}
    plan.stage.finish(
        particles=rows,
        settings={
            "measure": settings.to_dict(),
            "mask": mask_identity,
            "calibration": began.get("calibration") or calibration_fingerprint(path),
        },
    )
    remove_staging(path)
    consolidate(path)
    log.info("measured %d frames of %s: %d particles", n, path, rows)


def open_psd(path: RunLike) -> xr.Dataset:
    """Group ``psd`` of a measured run, opened lazily."""
    return xr.open_zarr(str(path), group=PSD_GROUP, consolidated=None)


def _outputs_exist(path: RunPath, stage: StageProgress) -> bool:
    """Whether the outputs this run of the stage is writing are there to resume into."""
    psd = path / stage.output(PSD_GROUP) / "zarr.json"
    return psd.exists() and (path / STAGING_GROUP).exists()


def needs_segmentation(path: RunLike) -> bool:
    """Whether :func:`measure_run` would segment the run first: it has no finished mask.

    A mask written outside ``crystalseg segment`` (no segment stage recorded) counts
    as finished.
    """
    path = run_path(path)
    info = stage_info(path).get("segment")
    if info is not None and info.get("status") == "finished":
        return False
    if info is None and MASK in zarr.open_group(str(path), mode="r", use_consolidated=False):
        log.info("%s has a mask written outside crystalseg segment; measuring it", path)
        return False
    return True


def _warm_up() -> None:
    """A no-op task: starts a worker process (and its imports) ahead of the first chunk."""


class _ChunkPool:
    """Measures chunks as they are handed in: here, on threads or on worker processes.

    Leaving it, also on an error or an interruption, cancels the chunks not yet
    started and waits for the running ones, so no worker still writes into the
    store when the caller returns; every chunk that finished is marked done.
    """

    def __init__(self, options: MeasureOptions, n_jobs: int, done: int, total: int) -> None:
        workers = max(1, min(options.num_workers or os.cpu_count() or 1, n_jobs))
        self._executor: Executor | None = None
        if options.scheduler == "threads" and n_jobs:
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="crystalseg-measure")
        elif options.scheduler == "processes" and n_jobs:
            from dask.multiprocessing import get_context  # the context dask's pool uses

            self._executor = ProcessPoolExecutor(workers, mp_context=get_context())
            for _ in range(workers):  # start them while the model works on the first chunk
                self._executor.submit(_warm_up)
        self._futures: set[Future[int]] = set()
        self._done = done
        self._total = total
        self._progress = options.progress

    def __enter__(self) -> _ChunkPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: _ChunkJob) -> None:
        """Measure ``job`` (at once when synchronous)."""
        if self._executor is None:
            self._count(_measure_chunk(job))
        else:
            self._futures.add(self._executor.submit(_measure_chunk, job))

    def collect(self, *, wait: bool) -> None:
        """Report the chunks measured so far; with ``wait``, wait for all handed in."""
        while self._futures:
            finished, pending = wait_futures(
                self._futures, timeout=None if wait else 0, return_when="FIRST_COMPLETED"
            )
            self._futures = set(pending)
            for future in finished:
                self._count(future.result())  # raises the chunk's error here
            if not wait:
                return

    def _count(self, frames: int) -> None:
        self._done += frames
        if self._progress is not None:
            self._progress(STAGE, self._done, self._total)


def read_mask_codes(mask: zarr.Array) -> tuple[str, ...]:
    """Class names of a stored mask, background first (from its ``codes`` attribute)."""
    attrs = dict(mask.attrs.asdict())
    codes = attrs.get("codes")
    if isinstance(codes, list | tuple) and codes:
        return tuple(str(c) for c in codes)
    if attrs.get("flag_meanings"):
        return tuple(str(attrs["flag_meanings"]).split())
    log.warning("mask has no 'codes' attribute; assuming classes %s", _DEFAULT_CODES)
    return _DEFAULT_CODES


def mask_provenance(path: RunPath, mask: zarr.Array) -> dict[str, Any]:
    """What identifies the mask being measured: its model and when it was made.

    Recorded with the measurement (stage settings ``mask``), so that whatever reads the
    results later (QC overlays) can tell whether the mask is still the one measured.
    """
    info = stage_info(path).get("segment", {})
    attrs = dict(mask.attrs.asdict())
    return {
        "model_sha256": attrs.get("model_sha256"),
        "segment_started": info.get("started"),
        "segment_finished": info.get("finished"),
    }


def measured_mask_changed(path: RunLike) -> bool:
    """Whether the run's mask was made again (``segment --overwrite``) after the run was
    measured, so that its ``psd`` and ``particles`` describe a mask it no longer has.

    False for a run not measured or without a mask; ``crystalseg measure`` then
    measures the new mask by itself.
    """
    path = run_path(path)
    return _mask_changed_since(path, stage_info(path).get(STAGE))


def _mask_changed_since(path: RunPath, info: dict[str, Any] | None) -> bool:
    """:func:`measured_mask_changed` for the measure stage's record ``info``."""
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if info is None or MASK not in group:
        return False
    recorded = (info.get("settings") or {}).get("mask")
    return not _same_mask(recorded, mask_provenance(path, get_array(group, MASK, path)))


def measurement_outdated(path: RunLike) -> str | None:
    """Why the run's finished measurement no longer describes the run, or None.

    Out of date when the mask was made again after it (:func:`measured_mask_changed`)
    or the pixel size or time axis changed (:func:`crystalseg.store.set_calibration`);
    ``crystalseg measure`` then measures again by itself.
    """
    path = run_path(path)
    info = stage_info(path).get(STAGE)
    if info is None or info.get("status") != "finished":
        return None
    if _mask_changed_since(path, info):
        return "the mask was made again after it was measured"
    recorded = (info.get("settings") or {}).get("calibration")
    current = calibration_fingerprint(path)
    if recorded is not None and recorded != current:
        what = [
            name
            for name, key in (("pixel size", "pixel_size_um"), ("frame times", "time_sha1"))
            if recorded.get(key) != current[key]
        ]
        return f"the {' and '.join(what)} changed after it was measured"
    return None


def _same_mask(recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a measurement of mask ``recorded`` measured the mask that is now ``current``.

    A measurement that streamed behind the segmentation recorded the mask before it
    was finished; the same segmentation (same model, same start), finished since, is
    the same mask: its chunks were final as soon as they were marked done.
    """
    if recorded == current:
        return True
    if not isinstance(recorded, dict) or recorded.get("segment_finished") is not None:
        return False
    if recorded.get("segment_started") is None:
        return False
    return {**recorded, "segment_finished": current.get("segment_finished")} == current


def _check_existing(
    path: RunPath,
    settings: MeasureSettings,
    mask_identity: dict[str, Any],
    calibration: dict[str, Any],
    *,
    overwrite: bool,
    no_probability: bool = False,
) -> StagePlan:
    """Start anew, resume, nothing to do; or refuse to replace other settings' results.

    ``mask_identity`` and ``calibration`` describe the run now
    (:func:`mask_provenance`, :func:`~crystalseg.store.calibration_fingerprint`): a
    measurement of another mask or calibration is out of date and is replaced.

    With ``no_probability`` (the run stores none, so no confidence filter can apply) a
    recorded ``min_confidence`` counts as off: earlier releases recorded the filter's
    value whether it applied or not.
    """
    info = stage_info(path).get(STAGE) or {}
    previous = info.get("settings") or {}
    outdated = None
    if info and not _same_mask(previous.get("mask"), mask_identity):
        outdated = "the mask changed since it was measured"
    elif info and previous.get("calibration") not in (None, calibration):
        outdated = "the calibration changed since it was measured"
    old_settings = (previous.get("measure") or {}) if info else {}
    new_keys = sorted(k for k in settings.to_dict() if k not in old_settings)
    if outdated is None and old_settings and new_keys:
        outdated = f"measured by an earlier release without {', '.join(new_keys)}"
    if outdated is not None and not overwrite:
        log.info("%s: %s; measuring again", path, outdated)

    def recorded(record: dict[str, Any]) -> dict[str, Any]:
        old = dict((record.get("settings") or {}).get("measure") or {})
        if no_probability and "min_confidence" in old:
            old["min_confidence"] = None
        return old

    def refusal(record: dict[str, Any]) -> str:
        old, new = recorded(record), settings.to_dict()
        changed = sorted(k for k in new if old.get(k) != new[k])
        return (
            f"run '{path}' was measured with other settings ({', '.join(changed)}); "
            "pass --overwrite to replace the results"
        )

    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    present = PSD_GROUP in root and (PARTICLES_GROUP in root or info.get("status") != "finished")
    return plan_stage(
        path,
        STAGE,
        settings={"measure": settings.to_dict(), "mask": mask_identity, "calibration": calibration},
        overwrite=overwrite,
        outputs_present=present,
        matches=lambda record: recorded(record) == settings.to_dict(),
        refusal=refusal,
        outdated=outdated,
    )


# --------------------------------------------------------------------------- schedulers


def _run_local(
    jobs: list[_ChunkJob],
    scheduler: LocalScheduler,
    num_workers: int | None,
    done: int,
    total: int,
    progress: MeasureProgress | None,
) -> None:
    if not jobs:
        return
    import dask
    from dask.callbacks import Callback

    state = {"done": done}

    def posttask(key: Any, result: Any, dsk: Any, st: Any, worker_id: Any) -> None:
        if str(key).startswith("measure-chunk-"):
            state["done"] += result
            if progress is not None:
                progress(STAGE, state["done"], total)

    tasks = [
        dask.delayed(_measure_chunk, pure=False)(job, dask_key_name=f"measure-chunk-{job.start}")
        for job in jobs
    ]
    workers = num_workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(jobs)))
    with Callback(posttask=posttask):
        if scheduler == "threads":
            # Our own pool, shut down (after the running chunks) before returning, so
            # an interruption leaves no thread writing into the store.
            with ThreadPoolExecutor(workers) as pool:
                dask.compute(*tasks, scheduler="threads", pool=pool)
        elif scheduler == "processes":
            dask.compute(*tasks, scheduler="processes", num_workers=workers)
        else:
            dask.compute(*tasks, scheduler="synchronous")


def _run_distributed(
    jobs: list[_ChunkJob],
    client: Any,
    done: int,
    total: int,
    progress: MeasureProgress | None,
) -> None:
    tasks = [(job, (job,)) for job in jobs]
    for _, frames in run_on_cluster(client, _measure_chunk, tasks, name=STAGE):
        done += frames
        if progress is not None:
            progress(STAGE, done, total)


__all__ = [
    "MeasureOptions",
    "MeasureProgress",
    "label_mask_frame",
    "mask_provenance",
    "measure_as_segmented",
    "measure_mask_frame",
    "measure_run",
    "measured_mask_changed",
    "measurement_outdated",
    "needs_segmentation",
    "open_psd",
    "read_mask_codes",
]
