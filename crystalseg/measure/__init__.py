"""Measurement: instances, particle features and size distributions, per frame and per run.

The per-frame functions (:func:`label_instances`, :func:`measure_frame`,
:func:`frame_distributions`) are pure NumPy/SciPy; :func:`measure_run` wires them
over a run store with dask and writes the ``particles`` and ``psd`` groups.
Nothing here imports torch: a run without a mask is segmented and measured by
:func:`crystalseg.pipeline.segment_and_measure`. :class:`MeasuredRun` reads a
measured run back: calibration, PSD, particles, labels of a frame as measured.
"""

from __future__ import annotations

from crystalseg.measure.distributions import (
    LENGTH_BIN,
    WIDTH_BIN,
    frame_distributions,
    log_bins,
    moment_mean,
    size_distribution,
    weighted_quantile,
)
from crystalseg.measure.features import (
    FEATURE_COLUMNS,
    FEATURE_UNITS,
    feature_units,
    measure_frame,
    miles_lantuejoul_weights,
)
from crystalseg.measure.instances import (
    BOUNDARY_CODES,
    SplitMethod,
    boundary_class,
    crystal_classes,
    instance_scores,
    label_instances,
)
from crystalseg.measure.reader import (
    SIZE_NAMES,
    Calibration,
    MeasuredFrame,
    MeasuredRun,
    size_label,
)
from crystalseg.measure.results import (
    EXCLUDED_REASONS,
    MEASURE_GROUPS,
    PARTICLE_COLUMNS,
    PARTICLES_GROUP,
    PSD_GROUP,
    WINDOW_GROUP,
    iter_particles,
    summarize_measurement,
)
from crystalseg.measure.run import (
    MeasureOptions,
    MeasureProgress,
    measure_mask_frame,
    measure_run,
)
from crystalseg.measure.settings import SIZE_COLUMNS, MeasureSettings

__all__ = [
    "BOUNDARY_CODES",
    "EXCLUDED_REASONS",
    "FEATURE_COLUMNS",
    "FEATURE_UNITS",
    "LENGTH_BIN",
    "MEASURE_GROUPS",
    "PARTICLES_GROUP",
    "PARTICLE_COLUMNS",
    "PSD_GROUP",
    "SIZE_COLUMNS",
    "SIZE_NAMES",
    "WIDTH_BIN",
    "WINDOW_GROUP",
    "Calibration",
    "MeasureOptions",
    "MeasureProgress",
    "MeasureSettings",
    "MeasuredFrame",
    "MeasuredRun",
    "SplitMethod",
    "boundary_class",
    "crystal_classes",
    "feature_units",
    "frame_distributions",
    "instance_scores",
    "iter_particles",
    "label_instances",
    "log_bins",
    "measure_frame",
    "measure_mask_frame",
    "measure_run",
    "miles_lantuejoul_weights",
    "moment_mean",
    "size_distribution",
    "size_label",
    "summarize_measurement",
    "weighted_quantile",
]
