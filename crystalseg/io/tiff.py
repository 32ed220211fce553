"""Multi-page TIFF, OME-TIFF and ImageJ TIFF stacks, read page by page with tifffile.

The first series of the file is the recording (level 0 of a pyramid). tifffile
names its axes; :func:`crystalseg.io.base.plan_axes` turns them into
``(time, y, x)``. Pixels are read through tifffile's zarr view of the series,
which decodes only the pages (or tiles) of the frames asked for.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from crystalseg.errors import UnsupportedInputError
from crystalseg.io.base import (
    ArrayFrameSource,
    TimeSource,
    length_to_um,
    regular_times,
    relative_times,
    time_to_s,
)

logger = logging.getLogger(__name__)

#: Resolutions that imaging software writes by default (dots per inch): not a calibration.
_DEFAULT_DPI = (72.0, 96.0, 150.0, 200.0, 240.0, 300.0, 400.0, 600.0, 1200.0)
#: A calibration that gives pixels outside this range (µm) is not a microscope's.
_PLAUSIBLE_UM = (1e-3, 100.0)


class TiffSource(ArrayFrameSource):
    """Frames of a TIFF file (plain, OME or ImageJ), streamed page by page.

    Parameters
    ----------
    path : Path
        An existing TIFF file.
    channel : int or None
        Channel (or colour sample) to keep; None turns RGB(A) into grey and
        rejects multi-channel files.
    """

    def __init__(self, path: Path, *, channel: int | None = None) -> None:
        path = Path(path)
        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            raise UnsupportedInputError(
                f"'{path}' is not a readable TIFF ({exc}); expected a TIFF stack. Check that "
                "the file was written completely, or export it again."
            ) from exc
        try:
            self._open(path, channel)
        except BaseException:
            self._tif.close()
            raise

    def _open(self, path: Path, channel: int | None) -> None:
        tif = self._tif
        if not tif.series:
            raise UnsupportedInputError(
                f"'{path}' holds no image series tifffile can read; expected a TIFF stack. "
                "Export the recording again as a TIFF stack."
            )
        series = tif.series[0]
        if tif.is_ome:
            fmt, label = "ome-tiff", "OME-TIFF"
        elif tif.is_imagej:
            fmt, label = "imagej-tiff", "ImageJ TIFF"
        else:
            fmt, label = "tiff", "TIFF"
        what = f"{label} '{path}'"
        ij = tif.imagej_metadata or {}
        self.description = f"{label} {path}"
        self._setup(
            zarr.open(series.aszarr(level=0), mode="r"),
            series.axes,
            channel=channel,
            what=what,
            # tifffile writes an unlabelled grey 3-D ImageJ stack as channels
            c_may_be_time=bool(tif.is_imagej and ij.get("mode", "grayscale") == "grayscale"),
        )
        n = self.shape[0]
        px, pixel_source = tiff_pixel_size_um(tif, path)
        time: np.ndarray | None = None
        time_source: TimeSource = "none"
        if tif.is_ome:
            ome = _ome_pixels(tif.ome_metadata)
            if ome is not None and self._plan.time_letter == "T":
                time, time_source = _ome_times(ome, n, channel)
        elif tif.is_imagej and self._plan.time_axis is not None:
            interval = time_to_s(ij.get("finterval"), ij.get("tunit", "s"))
            if interval is not None:
                time, time_source = regular_times(n, interval), "ImageJ finterval"
        self.pixel_size_um = px
        self.time_s = time
        self.time_source = time_source
        self.metadata = {
            "format": fmt,
            "files": [str(path)],
            "file_count": 1,
            **self._axes_metadata(),
            "pixel_size_source": pixel_source,
        }
        logger.debug("opened %r", self)

    def close(self) -> None:
        self._tif.close()


# ---------------------------------------------------------------------------
# Calibration


def tiff_pixel_size_um(tif: tifffile.TiffFile, path: Path) -> tuple[float | None, str]:
    """Pixel size in µm of a TIFF's first series, and which metadata gave it.

    OME: ``PhysicalSizeX`` and its unit (default µm). ImageJ: XResolution
    (pixels per ``unit`` of the ImageJ description: micron, µm, nm, mm...).
    Plain TIFF: XResolution with ResolutionUnit inch or cm, when plausible
    (:func:`plausible_pixel_um`). ``(None, "none")`` when nothing applies.
    """
    page = tif.series[0].keyframe if tif.series else tif.pages.first
    if tif.is_ome:
        ome = _ome_pixels(tif.ome_metadata)
        if ome is not None:
            px = length_to_um(ome.get("PhysicalSizeX"), ome.get("PhysicalSizeXUnit", "µm"))
            return px, ("OME PhysicalSizeX" if px is not None else "none")
        return None, "none"
    if tif.is_imagej:
        px = _imagej_pixel_um(page, tif.imagej_metadata or {})
        return px, ("ImageJ resolution" if px is not None else "none")
    px = _tiff_pixel_um(page, path)
    return px, ("TIFF resolution tags" if px is not None else "none")


def _resolution(page: Any) -> tuple[float | None, int]:
    """Pixels per unit along x and the ResolutionUnit code (1 none, 2 inch, 3 cm)."""
    tag = page.tags.get("XResolution")
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    if tag is None:
        return None, unit
    value = tag.value
    try:
        xres = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (ZeroDivisionError, TypeError, IndexError):
        return None, unit
    return (xres if np.isfinite(xres) and xres > 0 else None), unit


def _imagej_pixel_um(page: Any, ij: dict[str, Any]) -> float | None:
    """ImageJ stores pixels per ``unit`` in XResolution and the unit in its description."""
    xres, _ = _resolution(page)
    if xres is None:
        return None
    return length_to_um(1.0 / xres, ij.get("unit"))


def _tiff_pixel_um(page: Any, path: Path) -> float | None:
    """Pixel size from the plain resolution tags, when it looks like a calibration."""
    xres, unit = _resolution(page)
    if xres is None:
        return None
    return plausible_pixel_um(xres, unit, source=str(path))


def plausible_pixel_um(xres: float, unit: int, *, source: str) -> float | None:
    """Pixel size in µm from ``xres`` pixels per inch (``unit`` 2) or per cm (3).

    Returns None for no unit (1), a resolution of 1, or the dots-per-inch
    defaults that software writes (72, 96, 300, ...), and for pixels outside
    1 nm to 100 µm: such tags describe a screen or a printer, not a microscope.
    """
    if unit not in (2, 3) or not np.isfinite(xres) or xres <= 0 or xres == 1.0:
        return None
    dpi = xres if unit == 2 else xres * 2.54
    px = (25400.0 if unit == 2 else 10000.0) / xres
    if any(abs(dpi - d) < 1e-3 * d for d in _DEFAULT_DPI) or not (
        _PLAUSIBLE_UM[0] <= px <= _PLAUSIBLE_UM[1]
    ):
        logger.info("'%s': resolution %.6g px/%s is a software default, not a calibration; "
                    "pixel size unknown", source, xres, "inch" if unit == 2 else "cm")  # fmt: skip
        return None
    return px


# ---------------------------------------------------------------------------
# OME-XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_pixels(xml: str | None) -> dict[str, Any] | None:
    """Attributes of the first image's ``Pixels`` element, with its planes under ``"planes"``."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        logger.warning("OME-XML does not parse; ignoring its calibration and times")
        return None
    for image in root:
        if _local(image.tag) != "Image":
            continue
        for pixels in image:
            if _local(pixels.tag) == "Pixels":
                out: dict[str, Any] = dict(pixels.attrib)
                out["planes"] = [dict(p.attrib) for p in pixels if _local(p.tag) == "Plane"]
                return out
        return None
    return None


def _ome_times(
    ome: dict[str, Any], n: int, channel: int | None
) -> tuple[np.ndarray | None, TimeSource]:
    """Seconds since the first frame from Plane DeltaT, else from TimeIncrement."""
    per_t: dict[int, float] = {}
    want_c = channel or 0
    # prefer the plane of the kept channel at the first z; any plane of that t otherwise
    for prefer in (True, False):
        for plane in ome["planes"]:
            if "DeltaT" not in plane:
                continue
            t = int(plane.get("TheT", 0))
            if t in per_t:
                continue
            if prefer and (int(plane.get("TheC", 0)) != want_c or int(plane.get("TheZ", 0)) != 0):
                continue
            seconds = time_to_s(1.0, plane.get("DeltaTUnit", "s"))
            try:
                per_t[t] = float(plane["DeltaT"]) * (seconds or np.nan)
            except ValueError:
                continue
    if n > 1 and all(t in per_t for t in range(n)):
        rel = relative_times(np.array([per_t[t] for t in range(n)]))
        if rel is not None:
            return rel, "OME Plane DeltaT"
        logger.info("OME Plane DeltaT values do not increase; trying TimeIncrement")
    interval = time_to_s(ome.get("TimeIncrement"), ome.get("TimeIncrementUnit", "s"))
    if interval is not None:
        return regular_times(n, interval), "OME TimeIncrement"
    return None, "none"
