"""napari reader of run stores: the frames calibrated, the mask as labels, the
measured particles as points coloured by size with their features as a table.

The layer data stay lazy (dask arrays read from the store), so a run of thousands of
frames opens at once and napari reads the frames it shows. Nothing here imports
napari: the functions return napari's "layer data tuples", ``(data, kwargs, type)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalseg.dims import IMAGE, MASK
from crystalseg.errors import CrystalsegError, RunFormatError, StageStateError
from crystalseg.measure.reader import MeasuredRun
from crystalseg.measure.results import PARTICLES_GROUP
from crystalseg.store import open_run, read_run_attrs

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
#: Key of the layers' metadata naming the run store they show.
RUN_KEY = "crystalseg_run"
PARTICLES = PARTICLES_GROUP
#: The particle column that colours and sizes the points.
SIZE_COLUMN = "ecd"


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """napari's reader hook: :func:`read_run` for a crystalseg run store, else None
    (so napari asks another reader, e.g. for a plain zarr)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        read_run_attrs(path)
    except (CrystalsegError, OSError):
        return None
    return read_run


def read_run(path: str | os.PathLike[str]) -> list[LayerData]:
    """Layers of a run store: ``image``, ``mask`` (labels) when segmented, ``particles``
    (points) when measured.

    Every layer has the same scale, (1, pixel size, pixel size): the first axis is the
    frame index (the frames' times in seconds are in the particles' ``time_s``), y and
    x are in micrometres when the run is calibrated and in pixels when it is not.

    Parameters
    ----------
    path : path of the run store

    Returns
    -------
    list of (data, kwargs, layer type)
    """
    path = Path(path)
    ds = open_run(path)
    pixel = ds.attrs.get("pixel_size_um")
    unit = "um" if pixel else "pixel"
    common: dict[str, Any] = {
        "scale": (1.0, float(pixel or 1.0), float(pixel or 1.0)),
        "axis_labels": ("frame", "y", "x"),
        "units": ("pixel", unit, unit),
        "metadata": {RUN_KEY: str(path)},
    }
    image = ds[IMAGE]
    layers: list[LayerData] = [
        (
            image.data,
            {**common, "name": f"{path.stem} image", "contrast_limits": _contrast(image)},
            "image",
        )
    ]
    if MASK in ds:
        layers.append(
            (ds[MASK].data, {**common, "name": f"{path.stem} mask", "opacity": 0.4}, "labels")
        )
    points = particle_points(path)
    if points is not None:
        data, kwargs = points
        layers.append((data, {**common, **kwargs, "name": f"{path.stem} particles"}, "points"))
    return layers


def _contrast(image: Any) -> tuple[float, float]:
    """Contrast limits from the first frame (0.1 and 99.9 percentiles), so that napari
    does not read the whole run to find them."""
    first = np.asarray(image[0].values)
    lo, hi = (float(v) for v in np.percentile(first, [0.1, 99.9]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def particle_points(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The measured particles as napari points, or None when the run is not measured.

    The particles are read by :class:`crystalseg.measure.MeasuredRun`; sizes are in
    the unit the run was measured in (µm when calibrated), so the ring's size in
    pixels is the ECD over the pixel size it was measured with.

    Returns
    -------
    data : ndarray (particle, 3)
        Frame, centroid row and column in pixels (the layer's scale makes them um).
    kwargs : dict
        ``features`` (the particle table, one row per point), ``size`` (the ECD in
        pixels): a ring as wide as the particle, coloured by its ECD on the viridis
        colormap (the ring leaves the crystal itself visible).
    """
    try:
        measured = MeasuredRun(path)
    except (StageStateError, RunFormatError):  # not (or not fully) measured
        return None
    if not measured.has_particles:
        return None
    table = measured.particles()
    pixel = measured.calibration.pixel_size_um
    data = table[["frame", "centroid_y", "centroid_x"]].to_numpy(dtype=np.float64)
    size_px = table[SIZE_COLUMN].to_numpy(dtype=np.float64) / (pixel or 1.0)
    features = pd.DataFrame(table).reset_index(drop=True)
    return data, {
        "features": features,
        "size": np.clip(size_px, 2.0, None),
        "face_color": "transparent",
        "border_color": SIZE_COLUMN if len(table) else "orange",
        "border_colormap": "viridis",
        "border_width": 0.15,
        "border_width_is_relative": True,
    }
