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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import xarray as xr

import crystalseg.segment.run as segment_stage
from crystalseg.errors import ConfigError
from crystalseg.kinetics import KineticsSettings, kinetics_run
from crystalseg.measure.results import STAGE
from crystalseg.measure.run import (
    MeasureOptions,
    MeasureProgress,
    measure_as_segmented,
    measure_run,
    needs_segmentation,
    open_psd,
)
from crystalseg.segment import Segmenter, segment_run, stream_segment_run
from crystalseg.store import open_run, writing

log = logging.getLogger(__name__)


def segment_and_measure(
    run: str | os.PathLike[str],
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
    path = Path(run).resolve()
    open_run(path)  # checks the store is a complete run
    with writing(path, STAGE):  # held once for every stage
        psd = _segment_and_measure(path, model, options, client, stream)
        if kinetics is not None:
            kinetics_run(path, settings=kinetics, overwrite=options.overwrite)
        return psd


def _segment_and_measure(
    path: Path,
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


__all__ = ["segment_and_measure"]
