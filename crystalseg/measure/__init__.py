"""Measurement: particle features per frame and size distributions per frame.

Pure NumPy/pandas (no torch, zarr or dask here): the run-level wiring lives in
the stages that call these functions.
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

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_UNITS",
    "LENGTH_BIN",
    "WIDTH_BIN",
    "feature_units",
    "frame_distributions",
    "log_bins",
    "measure_frame",
    "miles_lantuejoul_weights",
    "moment_mean",
    "size_distribution",
    "weighted_quantile",
]
