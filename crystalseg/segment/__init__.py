"""Segmentation: run a U-Net checkpoint over a run's frames and store the class mask.

:func:`segment_run` is what ``crystalseg segment`` calls; :class:`Segmenter` is the
engine for frames in memory (``learner.predict`` uses it too); :func:`predict_frames`
is the lazy dask variant for streaming segmentation into measurement.
"""

from __future__ import annotations

from crystalseg.segment.engine import (
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    EngineSettings,
    GpuMemoryError,
    ResizeChoice,
    Segmenter,
    available_cores,
    choose_resize,
    load_segmenter,
    select_device,
)
from crystalseg.segment.run import (
    PROBABILITY,
    ProgressCallback,
    auto_resize,
    inference_device,
    predict_frames,
    segment_run,
    stream_segment_run,
)

__all__ = [
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "PROBABILITY",
    "EngineSettings",
    "GpuMemoryError",
    "ProgressCallback",
    "ResizeChoice",
    "Segmenter",
    "auto_resize",
    "available_cores",
    "choose_resize",
    "inference_device",
    "load_segmenter",
    "predict_frames",
    "segment_run",
    "select_device",
    "stream_segment_run",
]
