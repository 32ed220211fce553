"""Segment and measure a run in one call: the main job, ``crystalseg measure RUN``.

A run that has no finished mask is segmented first (with the bundled model
unless another is given), then measured. When the model infers on a GPU (or
when asked, ``stream=True``) the two stream through together: the chunks of
:func:`crystalseg.segment.stream_segment_run` are measured by the local pool
(:func:`crystalseg.measure.run.measure_as_segmented`) as soon as each lands in
the store, while the model works on the next, so the GPU and the cores work at
the same time. Both stages keep their own progress records, so an interruption
anywhere resumes both, and the results are those of the two passes.
``benchmarks/bench_stream.py`` measured 1.09-1.21x the two-pass throughput on an
H200 with 16 cores (96 and 240 frames of 1024 x 1024 px; the overlap can save at
most the segmentation time, there a fifth of the measurement's), and 0.90-1.01x
with the model on the CPU, where both stages want the same cores: there the run
is segmented whole first. A cluster (``client``) also segments first.

Several runs in one call (``crystalseg measure runs/*.zarr``, :func:`measure_runs`
and :func:`segment_runs`) share one :class:`~crystalseg.segment.Segmenter`, loaded
at the first run that needs it, and go one after the other, each through the same
stage runner as alone (its own lock, resume and provenance), so their results are
those of measuring each alone. A run that fails with an error a user can act on
(locked by another process, damaged, unreadable calibration) is recorded in its
:class:`RunOutcome` and the queue goes on; anything else is a bug and stops it
with its traceback (what the runs before wrote is kept). The runs do not overlap:
the next run's first frames are not segmented while the last chunks of one are
measured, because on the CPU both stages want the same cores (see above) and on a
GPU each run already streams; the gain would be at most one chunk's measurement
per run, for two stores locked and two progress records open at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Literal

import xarray as xr

import crystalseg.segment.run as segment_stage
from crystalseg.errors import ConfigError, CrystalsegError, explain_failure
from crystalseg.kinetics import KineticsSettings, kinetics_run
from crystalseg.measure.results import STAGE, summarize_measurement
from crystalseg.measure.run import (
    MeasureOptions,
    MeasureProgress,
    measure_as_segmented,
    measure_run,
    needs_segmentation,
    open_psd,
)
from crystalseg.segment import (
    EngineSettings,
    Segmenter,
    load_segmenter,
    segment_run,
    stream_segment_run,
)
from crystalseg.store import open_run, stage_info, writing
from crystalseg.store.location import RunLike, RunPath, run_path

log = logging.getLogger(__name__)


def segment_and_measure(
    run: RunLike,
    *,
    model: str | os.PathLike[str] | Segmenter | None = None,
    options: MeasureOptions | None = None,
    client: Any = None,
    stream: bool | Literal["auto"] = "auto",
    kinetics: KineticsSettings | None = None,
) -> xr.Dataset:
    """Segment a run when it has no finished mask, then measure every frame (and, when
    asked, compute its kinetics).

    Parameters
    ----------
    run : path of the run store
    model : checkpoint directory or Segmenter, optional
        Used only when the run has no finished mask (None: the bundled model); see
        :func:`crystalseg.segment.segment_run`. A mask made before is measured as it is.
    options : MeasureOptions, optional
        What to measure and how the measurement runs here (default MeasureOptions());
        its ``progress`` is called with stage "segment" or "measure".
    client : distributed.Client or str, optional
        Run the chunks of both stages on a dask cluster (the run is segmented first).
    stream : bool or "auto"
        For a run that still has to be segmented (locally): measure each chunk of
        the mask while the model segments the next (True), or segment the whole run
        first (False). "auto" streams when the model infers on a GPU, where the
        cores are free to measure meanwhile. The results are the same.
    kinetics : KineticsSettings, optional
        Then track the crystals and compute the kinetics with these settings
        (:func:`crystalseg.kinetics.kinetics_run`; ``measure --kinetics``), under the
        same lock and with the measurement's ``overwrite``. None: measure only.

    Returns
    -------
    Dataset
        Group ``psd`` of the store, opened lazily.
    """
    options = MeasureOptions() if options is None else options
    if stream not in (True, False, "auto"):
        raise ConfigError(f"stream must be True, False or 'auto', got {stream!r}")
    path = run_path(run, resolve=True)
    open_run(path)  # checks the store is a complete run
    with writing(path, STAGE):  # held once for every stage
        psd = _segment_and_measure(path, model, options, client, stream)
        if kinetics is not None:
            kinetics_run(path, settings=kinetics, overwrite=options.overwrite)
        return psd


def _segment_and_measure(
    path: RunPath,
    model: str | os.PathLike[str] | Segmenter | None,
    options: MeasureOptions,
    client: Any,
    stream: bool | Literal["auto"],
) -> xr.Dataset:
    if needs_segmentation(path):
        seg_progress = _segment_progress(options.progress)
        if client is None and _wants_stream(stream, model):
            log.info("%s has no finished mask: segmenting and measuring it together", path)
            chunks = stream_segment_run(path, model, progress=seg_progress, save_probability=True)
            with closing(chunks):
                measure_as_segmented(path, chunks, options)
            return open_psd(path)
        log.info("%s has no finished mask: segmenting it first", path)
        segment_run(path, model, client=client, progress=seg_progress, save_probability=True)
    return measure_run(
        path,
        settings=options.settings,
        client=client,
        progress=options.progress,
        overwrite=options.overwrite,
        scheduler=options.scheduler,
        num_workers=options.num_workers,
        frames_per_chunk=options.frames_per_chunk,
    )


def _segment_progress(progress: MeasureProgress | None) -> Callable[[int, int], None]:
    def seg_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("segment", done, total)

    return seg_progress


def _wants_stream(stream: bool | Literal["auto"], model: Any) -> bool:
    """Stream segmentation into measurement? "auto": when the model infers on a GPU."""
    if stream != "auto":
        return bool(stream)
    return segment_stage.inference_device(model) != "cpu"


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run of a queue (:func:`measure_runs`, :func:`segment_runs`).

    Attributes
    ----------
    path : Path or UPath
        The run store, resolved (:func:`crystalseg.store.run_path`).
    status : {"measured", "segmented", "failed"}
    seconds : float
        Wall time of this run (the first run that segments includes loading the model).
    summary : dict
        For a measured run :func:`~crystalseg.measure.results.summarize_measurement`
        plus what ``finish`` returned; for a segmented run ``frames``, ``resize``
        and ``classes``;
        empty for a failed run.
    error : CrystalsegError or None
        Why the run failed (its message names the fault and the fix).
    """

    path: RunPath
    status: Literal["measured", "segmented", "failed"]
    seconds: float
    summary: Mapping[str, Any] = field(default_factory=dict)
    error: CrystalsegError | None = None

    @property
    def ok(self) -> bool:
        """Whether the run was done (measured or segmented)."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The run's document: ``path``, ``status``, ``seconds``, ``error`` (None when
        done) and the summary's entries."""
        return {
            **self.summary,
            "path": str(self.path),
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "error": None if self.error is None else str(self.error),
        }


class _SharedModel:
    """The queue's model, loaded (through the per-process cache) at first use only, so
    that a queue whose runs all have masks loads none."""

    def __init__(
        self, model: str | os.PathLike[str] | Segmenter | None, engine: EngineSettings | None
    ) -> None:
        self._model = model
        # resize "auto": each run chooses its own factor, as segment_run does alone
        self._engine = EngineSettings(resize="auto") if engine is None else engine

    def get(self) -> Segmenter:
        if not isinstance(self._model, Segmenter):
            self._model = load_segmenter(self._model, None, self._engine)
        return self._model


def _queue(
    runs: Iterable[RunLike],
    work: Callable[[RunPath], tuple[Literal["measured", "segmented"], Mapping[str, Any]]],
    each: Callable[[RunOutcome], None] | None,
) -> list[RunOutcome]:
    """Run ``work`` on each run in turn; a user-actionable failure becomes a failed
    outcome and the queue goes on, anything else (a bug) propagates."""
    outcomes = []
    for run in runs:
        path = run_path(run, resolve=True)
        start = time.perf_counter()
        try:
            status, summary = work(path)
            outcome = RunOutcome(path, status, time.perf_counter() - start, summary)
        except Exception as exc:
            error = explain_failure(exc, paths=[str(path)])
            if error is None:
                raise
            log.debug("%s failed: %s", path, error)
            outcome = RunOutcome(path, "failed", time.perf_counter() - start, error=error)
        outcomes.append(outcome)
        if each is not None:
            each(outcome)
    return outcomes


def measure_runs(
    runs: Iterable[RunLike],
    *,
    model: str | os.PathLike[str] | Segmenter | None = None,
    engine: EngineSettings | None = None,
    options: MeasureOptions | Callable[[RunPath], MeasureOptions] | None = None,
    client: Any = None,
    stream: bool | Literal["auto"] = "auto",
    finish: Callable[[RunPath], Mapping[str, Any] | None] | None = None,
    each: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Segment (where needed) and measure several runs, one after the other, with one model.

    Each run goes through :func:`segment_and_measure` as it would alone, so its
    results, lock, resume and provenance are those of measuring it alone; the model
    is loaded once, at the first run that has no finished mask, and reused.

    Parameters
    ----------
    runs : paths of the run stores, measured in this order
    model : checkpoint directory, Segmenter, or None (the bundled model)
    engine : EngineSettings, optional
        How a model given as a path is loaded (default: all automatic, the resize
        factor chosen per run); ignored for a Segmenter.
    options : MeasureOptions, or a callable run path -> MeasureOptions
        The measurement of every run (default MeasureOptions()), or of each run (a
        minimum area in um^2 comes to different pixels at each run's pixel size).
        Called inside the run's error handling: raising a CrystalsegError fails that run.
    client, stream
        As for :func:`segment_and_measure`, for every run.
    finish : callable run path -> dict or None, optional
        Called after a run is measured, inside its error handling (export it, record
        how it was asked for); what it returns is added to the run's summary.
    each : callable RunOutcome -> None, optional
        Called after every run, done or failed, e.g. to report failures as they come.

    Returns
    -------
    list of RunOutcome
        One per run, in order; ``status`` "measured" or "failed".
    """
    shared = _SharedModel(model, engine)

    def work(path: RunPath) -> tuple[Literal["measured"], Mapping[str, Any]]:
        open_run(path)  # a damaged store fails here, before anything else is read
        opts = options(path) if callable(options) else options
        engine_here = shared.get() if needs_segmentation(path) else model
        segment_and_measure(path, model=engine_here, options=opts, client=client, stream=stream)
        extra = finish(path) if finish is not None else None
        return "measured", {**summarize_measurement(path), **(extra or {})}

    return _queue(runs, work, each)


def segment_runs(
    runs: Iterable[RunLike],
    *,
    model: str | os.PathLike[str] | Segmenter | None = None,
    engine: EngineSettings | None = None,
    overwrite: bool = False,
    save_probability: bool | None = None,
    client: Any = None,
    progress: Callable[[RunPath, int, int], None] | None = None,
    each: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Segment several runs, one after the other, with one model loaded once.

    Parameters
    ----------
    runs : paths of the run stores, segmented in this order
    model, engine : as for :func:`measure_runs` (the model is loaded at the first run)
    overwrite, save_probability, client
        As for :func:`crystalseg.segment.segment_run`, for every run.
    progress : callable (run path, frames_done, frames_total), optional
    each : callable RunOutcome -> None, optional
        Called after every run, done or failed.

    Returns
    -------
    list of RunOutcome
        One per run, in order; ``status`` "segmented" or "failed"; a segmented run's
        summary holds ``frames``, ``resize`` (the factor its mask was made at) and
        ``classes`` (the mask's class names).
    """
    shared = _SharedModel(model, engine)

    def work(path: RunPath) -> tuple[Literal["segmented"], Mapping[str, Any]]:
        open_run(path)  # a damaged store fails here, before the model is loaded
        mask = segment_run(
            path,
            shared.get(),
            overwrite=overwrite,
            save_probability=save_probability,
            client=client,
            progress=None if progress is None else lambda d, t: progress(path, d, t),
        )
        factor = stage_info(path)["segment"]["settings"].get("resize", 1.0)
        classes = mask.attrs.get("flag_meanings", "")
        return "segmented", {
            "frames": int(mask.shape[0]),
            "resize": float(factor),
            "classes": classes,
        }

    return _queue(runs, work, each)


__all__ = ["RunOutcome", "measure_runs", "segment_and_measure", "segment_runs"]
