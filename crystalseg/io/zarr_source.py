"""Zarr arrays and OME-Zarr images (v0.4 on zarr v2, v0.5 on zarr v3).

Opened with zarr-python 3, which reads both zarr formats. A store is one of

* an array, its axes named by zarr v3 ``dimension_names`` or the xarray
  attribute ``_ARRAY_DIMENSIONS`` (v2), else laid out as (t, y, x);
* an OME-Zarr image group: level 0 is the first dataset of the first
  multiscale; axes, pixel size and frame interval come from ``axes`` and the
  ``scale`` coordinate transformations (multiscale-level times dataset-level);
* any other group holding exactly one array of two or more dimensions.

Slicing a zarr array reads only the chunks that hold the frames asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from crystalseg.errors import UnsupportedInputError
from crystalseg.io.base import (
    ArrayFrameSource,
    length_to_um,
    regular_times,
    time_to_s,
    unlabelled_axes,
)

logger = logging.getLogger(__name__)

_NAME_AXES = {
    "t": "T", "time": "T", "frame": "T", "frames": "T",
    "z": "Z", "c": "C", "channel": "C", "channels": "C",
    "s": "S", "sample": "S", "samples": "S", "rgb": "S", "rgba": "S",
    "y": "Y", "x": "X",
}  # fmt: skip

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def is_zarr_dir(path: Path) -> bool:
    """Whether ``path`` is the root of a zarr v2 or v3 array or group."""
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def _letters(names: list[str]) -> str:
    return "".join(_NAME_AXES.get(str(n).strip().lower(), "Q") for n in names)


def _array_dim_names(array: Any) -> list[str] | None:
    names = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names is None or len(names) != array.ndim or any(n is None for n in names):
        return None
    return [str(n) for n in names]


def _ome_multiscale(attrs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(version, first multiscale) of an OME-Zarr image group, or None."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return str(ome.get("version", "0.5")), ome["multiscales"][0]
    if attrs.get("multiscales"):
        ms = attrs["multiscales"][0]
        return str(ms.get("version", "0.4")), ms
    return None


def _scale(transforms: Any, ndim: int) -> np.ndarray:
    scale = np.ones(ndim)
    for tr in transforms or []:
        if isinstance(tr, dict) and tr.get("type") == "scale" and "scale" in tr:
            values = np.asarray(tr["scale"], dtype=float)
            if values.shape == (ndim,):
                scale = scale * values
    return scale


class ZarrSource(ArrayFrameSource):
    """Frames of a zarr array, a group holding one, or an OME-Zarr image.

    Parameters
    ----------
    path : Path
        The store (directory) or an array inside one.
    channel : int or None
        Channel (or colour sample) to keep; None turns RGB(A) into grey and
        rejects multi-channel data.
    """

    def __init__(self, path: Path, *, channel: int | None = None) -> None:
        path = Path(path)
        try:
            node = zarr.open(str(path), mode="r")
        except (ValueError, OSError, KeyError) as exc:
            raise UnsupportedInputError(
                f"'{path}' is not a readable zarr store ({exc}); expected a zarr array or "
                "OME-Zarr image. Check the path points at the store's root."
            ) from exc
        self.pixel_size_um = None
        self.time_s = None
        self.time_source = "none"
        info: dict[str, Any] = {}
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            ms = _ome_multiscale(attrs)
            if ms is not None:
                self._open_ome(path, node, *ms, channel=channel)
                return
            array, name = self._single_array(path, node)
            info["array"] = name
            px = attrs.get("pixel_size_um")
            if isinstance(px, (int, float)) and not isinstance(px, bool) and px > 0:
                self.pixel_size_um = float(px)  # a crystalseg run store's calibration
        else:
            array = node
        fmt_version = array.metadata.zarr_format
        names = _array_dim_names(array)
        axes = _letters(names) if names else unlabelled_axes(tuple(array.shape))
        what = f"zarr array '{path}'"
        self.description = f"zarr v{fmt_version} array {path}"
        self._setup(array, axes, channel=channel, what=what)
        self.metadata = {
            "format": "zarr",
            "zarr_format": fmt_version,
            "files": [str(path)],
            "file_count": 1,
            **info,
            "dimension_names": names,
            **self._axes_metadata(),
        }

    @staticmethod
    def _single_array(path: Path, group: zarr.Group) -> tuple[zarr.Array, str]:
        arrays = [(name, arr) for name, arr in group.arrays() if arr.ndim >= 2]
        if len(arrays) == 1:
            return arrays[0][1], arrays[0][0]
        if not arrays:
            raise UnsupportedInputError(
                f"zarr group '{path}' holds no image array (none with 2 or more dimensions); "
                "expected a (time, y, x) array or an OME-Zarr image. Point at the group that "
                "holds the frames."
            )
        names = sorted(name for name, _ in arrays)
        raise UnsupportedInputError(
            f"zarr group '{path}' holds {len(names)} image arrays ({', '.join(names)}); expected "
            f"one. Pass the array's path, e.g. '{path / names[0]}'."
        )

    def _open_ome(
        self,
        path: Path,
        group: zarr.Group,
        version: str,
        ms: dict[str, Any],
        *,
        channel: int | None,
    ) -> None:
        what = f"OME-Zarr '{path}'"
        datasets = ms.get("datasets") or []
        if not datasets or "path" not in datasets[0]:
            raise UnsupportedInputError(
                f"{what} lists no datasets in its multiscales metadata; expected level 0 at "
                "datasets[0].path. Write the image again with an OME-Zarr writer."
            )
        level0 = str(datasets[0]["path"])
        try:
            array = group[level0]
        except KeyError as exc:
            raise UnsupportedInputError(
                f"{what} names level 0 '{level0}', which is not in the store; expected an "
                "array there. Check that the store was copied completely."
            ) from exc
        if not isinstance(array, zarr.Array):
            raise UnsupportedInputError(
                f"{what}: level 0 '{level0}' is a group, not an array; expected an array. "
                "Write the image again with an OME-Zarr writer."
            )
        raw_axes = ms.get("axes")
        axes_info: list[dict[str, Any]]
        if raw_axes and len(raw_axes) == array.ndim:
            axes_info = [a if isinstance(a, dict) else {"name": str(a)} for a in raw_axes]
            axes = _letters([a.get("name", "") for a in axes_info])
        else:  # OME-Zarr 0.1/0.2 has no axes: always (t, c, z, y, x)
            axes_info = [{"name": n} for n in "tczyx"[-array.ndim :]]
            axes = "TCZYX"[-array.ndim :]
        self.description = f"OME-Zarr v{version} {path}"
        self._setup(array, axes, channel=channel, what=what)
        scale = _scale(datasets[0].get("coordinateTransformations"), array.ndim) * _scale(
            ms.get("coordinateTransformations"), array.ndim
        )
        units = [a.get("unit") for a in axes_info]
        x, y = axes.index("X"), axes.index("Y")
        self.pixel_size_um = length_to_um(scale[x], units[x])
        px_y = length_to_um(scale[y], units[y])
        if self.pixel_size_um is None and units[x] is None:
            logger.info("%s: x axis has no unit; pixel size unknown", what)
        elif self.pixel_size_um and px_y and abs(px_y / self.pixel_size_um - 1) > 1e-6:
            logger.warning("%s: pixels are not square (x %.6g µm, y %.6g µm); using x",
                           what, self.pixel_size_um, px_y)  # fmt: skip
        t = self._plan.time_axis
        if t is not None and axes[t] == "T":
            interval = time_to_s(scale[t], units[t])
            if interval is not None:
                self.time_s = regular_times(self.shape[0], interval)
                self.time_source = "zarr axis scale"
        self.metadata = {
            "format": "ome-zarr",
            "ome_version": version,
            "zarr_format": array.metadata.zarr_format,
            "files": [str(path)],
            "file_count": 1,
            "array": level0,
            "axis_names": [a.get("name") for a in axes_info],
            "axis_units": units,
            "scale": [float(s) for s in scale],
            **self._axes_metadata(),
        }
