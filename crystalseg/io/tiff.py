"""Multi-page TIFF, OME-TIFF and ImageJ TIFF stacks, read page by page with tifffile.

A file with one image series (tifffile's name for one n-D image) is that
recording, at level 0 of a pyramid. tifffile names its axes;
:func:`crystalseg.io.base.plan_axes` turns them into ``(time, y, x)``. Pixels
are read through tifffile's zarr view of the series, which decodes only the
pages (or tiles) of the frames asked for.

A file with several series is read by :func:`select_frames`: reduced-resolution
previews beside the recording are skipped (and logged); series that are each
one frame of one layout -- pages appended one at a time -- are read as one
stack in file order, a series per frame; anything else is refused rather than
importing one series and dropping the rest.
"""

from __future__ import annotations

import logging
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import zarr

from crystalseg.errors import CrystalsegWarning, UnsupportedInputError
from crystalseg.io.base import (
    ArrayFrameSource,
    TimeSource,
    check_frame_shape,
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
#: Series names that whole-slide and microscope formats give to overviews beside the image.
_PREVIEW_NAMES = frozenset({"thumbnail", "preview", "label", "macro", "overview"})
#: Axes one frame may have: y, x, colour samples, and channels (picked by ``--channel``).
_FRAME_AXES = frozenset("YXSC")
#: Runs of series listed in an error message before the rest is counted.
_MAX_LISTED = 6
#: Words of tifffile's log warnings that mean the file is cut short or damaged: tifffile
#: then reads fewer pages than the file declares, and would import them without a word.
_DAMAGE_WORDS = ("invalid page offset", "corrupted", "failed to reshape", "truncated")

#: How a planar RGB(A) TIFF of 3 or 4 pages is read: ``frames`` (each plane a grey frame),
#: ``rgb`` (one colour frame, turned grey) or ``auto`` (frames when tifffile wrote it).
PlanarRGB = Literal["auto", "frames", "rgb"]


@contextmanager
def _tifffile_damage(path: Path) -> Iterator[list[str]]:
    """Collect tifffile's warnings that say the file is damaged (see :data:`_DAMAGE_WORDS`)."""
    found: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if any(word in text.lower() for word in _DAMAGE_WORDS):
                found.append(re.sub(r"^<[^>]*>\s*", "", text.split("\n")[0]))

    tiff_log = logging.getLogger("tifffile")
    handler = _Catch(logging.WARNING)
    tiff_log.addHandler(handler)
    try:
        yield found
    finally:
        tiff_log.removeHandler(handler)


def _damaged(path: Path, why: str) -> UnsupportedInputError:
    return UnsupportedInputError(
        f"'{path}' is damaged or cut short ({why}); importing it would drop frames. Copy "
        "the file again from where it was recorded (compare its size), or export it again."
    )


def check_complete(tif: tifffile.TiffFile, items: Sequence[Any], path: Path) -> None:
    """Raise if the pixel data of ``items`` (series or pages) reach past the end of the file.

    tifffile reads a stack that it wrote (shaped, contiguous) from the first page's
    header alone, so a copy cut short opens as if whole and fails only at the missing
    frames, after a run store was made. This compares where the data end with the
    file's size, reading no pixels.
    """
    size = int(tif.filehandle.size)
    end = 0
    for item in items:
        offset = item.dataoffset if isinstance(item, tifffile.TiffPageSeries) else None
        if offset is not None:  # a contiguous series
            end = max(end, int(offset) + int(item.nbytes))
            continue
        pages = item.pages if isinstance(item, tifffile.TiffPageSeries) else [item]
        for page in pages:
            if page is None:
                continue
            for start, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                end = max(end, int(start) + int(count))
    if end > size:
        raise _damaged(path, f"its pixel data need {end} bytes, the file holds {size}")


class TiffSource(ArrayFrameSource):
    """Frames of a TIFF file (plain, OME or ImageJ), streamed page by page.

    Parameters
    ----------
    path : Path
        An existing TIFF file.
    channel : int or None
        Channel (or colour sample) to keep; None turns RGB(A) into grey and
        rejects multi-channel files.
    series : int or None
        Read only this image series (e.g. one stage position of a multi-position
        OME-TIFF); None applies :func:`select_frames`' rule.
    """

    def __init__(
        self,
        path: Path,
        *,
        channel: int | None = None,
        series: int | None = None,
        planar_rgb: PlanarRGB = "auto",
    ) -> None:
        path = Path(path)
        with _tifffile_damage(path) as damage:
            try:
                self._tif = tifffile.TiffFile(path)
            except (tifffile.TiffFileError, ValueError, OSError) as exc:
                raise UnsupportedInputError(
                    f"'{path}' is not a readable TIFF ({exc}); expected a TIFF stack. Check "
                    "that the file was written completely, or export it again."
                ) from exc
            try:
                _ = self._tif.series  # tifffile reads the page list here
                if damage:
                    raise _damaged(path, f"tifffile: {damage[0]}")
                self._open(path, channel, series, planar_rgb)
            except BaseException:
                self._tif.close()
                raise

    def _open(
        self, path: Path, channel: int | None, series: int | None, planar_rgb: PlanarRGB
    ) -> None:
        tif = self._tif
        if not tif.series:
            raise UnsupportedInputError(
                f"'{path}' holds no image series tifffile can read; expected a TIFF stack. "
                "Export the recording again as a TIFF stack."
            )
        if tif.is_ome:
            fmt, label = "ome-tiff", "OME-TIFF"
        elif tif.is_imagej:
            fmt, label = "imagej-tiff", "ImageJ TIFF"
        else:
            fmt, label = "tiff", "TIFF"
        what = f"{label} '{path}'"
        ij = tif.imagej_metadata or {}
        self.description = f"{label} {path}"
        array, axes, assembly = select_frames(tif, what=what, series=series)
        items = array.items if isinstance(array, TiffFrameList) else [tif.series[series or 0]]
        page = tif.series[series or 0].keyframe
        check_frame_shape((1, int(page.imagelength), int(page.imagewidth)), what=what)
        check_complete(tif, items, path)
        axes, planar = _planar_rgb(tif, axes, tuple(array.shape), planar_rgb, channel, what)
        if planar:
            assembly["planar_rgb"] = planar
        self._setup(
            array,
            axes,
            channel=channel,
            what=what,
            # tifffile writes an unlabelled grey 3-D ImageJ stack as channels
            c_may_be_time=bool(tif.is_imagej and ij.get("mode", "grayscale") == "grayscale"),
        )
        n = self.shape[0]
        px, pixel_source = tiff_pixel_size_um(tif, path, series or 0)
        time: np.ndarray | None = None
        time_source: TimeSource = "none"
        if tif.is_ome:
            ome = _ome_pixels(tif.ome_metadata, series or 0)
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
            **assembly,
            "pixel_size_source": pixel_source,
        }
        logger.debug("opened %r", self)

    def close(self) -> None:
        self._tif.close()


# ---------------------------------------------------------------------------
# Series: which pages make the frames


class TiffFrameList:
    """Frames stored apart in one TIFF, seen as one array ``(frame, *frame_shape)``.

    Each item is a tifffile page or one-frame series, decoded only when its
    frame is indexed, so a read of a few frames touches only their pages.

    Parameters
    ----------
    items : sequence of TiffPage or TiffPageSeries
        One per frame, in frame order; each ``asarray()`` holds
        ``prod(frame_shape)`` pixels of ``dtype``.
    frame_shape : tuple of int
        Shape of one frame, singleton axes (other than y and x) removed.
    dtype : numpy.dtype
        Pixel type of every item.
    """

    def __init__(self, items: Sequence[Any], frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.items = self._items = list(items)
        self._frame_shape = tuple(frame_shape)
        self.shape = (len(self._items), *self._frame_shape)
        self.dtype = np.dtype(dtype)

    def _frame(self, i: int) -> np.ndarray:
        return np.asarray(self._items[i].asarray()).reshape(self._frame_shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], tuple(key[1:])
        if not isinstance(first, slice):
            return self._frame(range(len(self._items))[first])[rest]
        frames = range(len(self._items))[first]
        one = np.empty((0, *self._frame_shape), self.dtype)[(slice(None), *rest)].shape[1:]
        out = np.empty((len(frames), *one), self.dtype)
        for j, i in enumerate(frames):
            out[j] = self._frame(i)[rest]
        return out


def _layout(shape: Sequence[int], axes: str) -> tuple[tuple[int, ...], str]:
    """Shape and axes without singleton axes, y and x always kept."""
    keep = [i for i, (n, a) in enumerate(zip(shape, axes, strict=True)) if n != 1 or a in "YX"]
    return tuple(int(shape[i]) for i in keep), "".join(axes[i] for i in keep)


def _frame_pixels(series: tifffile.TiffPageSeries) -> int:
    page = series.keyframe
    return int(page.imagelength) * int(page.imagewidth)


def _is_preview(series: tifffile.TiffPageSeries, main: tifffile.TiffPageSeries) -> bool:
    """A reduced-resolution or overview image beside ``main``, and smaller than its frames.

    TIFF flags such images in NewSubfileType (tifffile's ``is_reduced``); whole-slide
    formats name them (thumbnail, label, macro).
    """
    flagged = bool(series.keyframe.is_reduced) or series.name.strip().lower() in _PREVIEW_NAMES
    return flagged and _frame_pixels(series) < _frame_pixels(main)


def _series_text(series: Sequence[tuple[int, tifffile.TiffPageSeries]]) -> str:
    """``series 0-4: (12, 16) YX uint16; series 5: ...``, equal neighbours merged."""
    runs: list[list[Any]] = []
    for i, s in series:
        desc = f"{tuple(s.shape)} {s.axes} {s.dtype}"
        if runs and runs[-1][2] == desc and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i, desc])
    parts = [f"series {a}{f'-{b}' if b > a else ''}: {d}" for a, b, d in runs[:_MAX_LISTED]]
    if len(runs) > _MAX_LISTED:
        parts.append(f"and {len(runs) - _MAX_LISTED} more")
    return "; ".join(parts)


def select_frames(
    tif: tifffile.TiffFile, *, what: str, series: int | None = None
) -> tuple[Any, str, dict[str, Any]]:
    """The array of a TIFF's frames, its axes, and how it was assembled.

    With ``series`` the frames are that series alone (``import --series N``).
    Otherwise the rule, for the series tifffile finds in the file:

    1. Series after the first that are flagged reduced-resolution (NewSubfileType)
       or named thumbnail/preview/label/macro/overview, and whose frames are
       smaller than the first series', are previews: skipped and logged.
    2. One series left: it is the recording, read through tifffile's zarr view.
    3. Several left, all of tifffile's ``generic`` kind (pages without shape
       metadata, grouped by storage layout, e.g. when compression changes
       between pages): every page is a frame, in file order, if all pages have
       the same shape and dtype.
    4. Several left, each one frame (no axes besides y, x, colour samples or
       channels once singletons are dropped) of the same shape, axes and dtype,
       in a file that is not an OME-TIFF: pages written one at a time
       (``append=True``); a series per frame, in file order. An OME-TIFF declares
       each series an image of its own (a stage position, a well), not a time
       point, so its single planes are not stacked.
    5. Anything else (series of different shapes, several multi-frame stacks, or
       several OME images) raises rather than importing one series and dropping
       the others.

    Parameters
    ----------
    tif : TiffFile
        An open file with at least one series.
    what : str
        The file, as named in messages.

    Returns
    -------
    array : zarr array or TiffFrameList
        Indexable source array, read lazily.
    axes : str
        One letter per axis of ``array`` (``I`` first for assembled frames).
    assembly : dict
        Provenance: ``series`` (how many series the frames come from),
        ``series_in_file``, ``assembly`` and, when previews were skipped,
        ``skipped_series``.

    Raises
    ------
    UnsupportedInputError
        The series differ and no rule above reads them as one recording.
    """
    everything = list(enumerate(tif.series))
    if series is not None:
        if isinstance(series, bool) or not 0 <= series < len(everything):
            raise UnsupportedInputError(
                f"{what} has no series {series}; it holds {len(everything)} "
                f"({_series_text(everything)}). Pass --series 0 to {len(everything) - 1}"
            )
        chosen = tif.series[series]
        picked = {"series_in_file": len(everything), "series": 1, "assembly": f"series {series}"}
        return zarr.open(chosen.aszarr(level=0), mode="r"), chosen.axes, picked
    main = everything[0][1]
    skipped = [(i, s) for i, s in everything[1:] if _is_preview(s, main)]
    skipped_index = {i for i, _ in skipped}
    kept = [(i, s) for i, s in everything if i not in skipped_index]
    info: dict[str, Any] = {"series_in_file": len(everything)}
    if skipped:
        info["skipped_series"] = sorted(skipped_index)
        logger.info("%s: skipping %d preview series (%s); reading series 0",
                    what, len(skipped), _series_text(skipped))  # fmt: skip
    if len(kept) == 1:
        only = kept[0][1]
        info.update(series=1, assembly="series 0")
        return zarr.open(only.aszarr(level=0), mode="r"), only.axes, info

    if all(s.kind == "generic" for _, s in kept):
        pages = sorted(
            (p for _, s in kept for p in s.pages if p is not None),  # generic has no gaps
            key=lambda p: p.index if isinstance(p.index, tuple) else (p.index,),
        )
        layouts = {(_layout(p.shape, p.axes), np.dtype(p.dtype)) for p in pages}
        if len(layouts) == 1:
            (shape, axes), dtype = next(iter(layouts))
            logger.debug("%s: %d pages in %d series of one layout; reading them as frames "
                         "in file order", what, len(pages), len(kept))  # fmt: skip
            info.update(series=len(kept), assembly="one frame per page, in file order")
            return TiffFrameList(pages, shape, dtype), "I" + axes, info
    else:
        layouts = {(_layout(s.shape, s.axes), np.dtype(s.dtype)) for _, s in kept}
        if len(layouts) == 1:
            (shape, axes), dtype = next(iter(layouts))
            if set(axes) <= _FRAME_AXES and not tif.is_ome:
                logger.debug("%s: %d series of one %s frame each; reading them as a stack",
                             what, len(kept), shape)  # fmt: skip
                info.update(series=len(kept), assembly="one frame per series")
                return TiffFrameList([s for _, s in kept], shape, dtype), "I" + axes, info
    raise UnsupportedInputError(
        f"{what} holds {len(everything)} image series ({_series_text(everything)}), neither "
        "one stack nor single frames of one size; crystalseg imports one stack per file and "
        "will not drop series. Import one series at a time with --series N (a run store "
        "each), or export each series as its own TIFF stack."
    )


# ---------------------------------------------------------------------------
# Planar RGB: three or four pages that may be colour planes or frames


def _planar_rgb(
    tif: tifffile.TiffFile,
    axes: str,
    shape: tuple[int, ...],
    choice: PlanarRGB,
    channel: int | None,
    what: str,
) -> tuple[str, str | None]:
    """Axes to read a planar RGB(A) TIFF by, and how it was read (None: not planar RGB).

    ``tifffile.imwrite(f, frames)`` stores a stack of 3 or 4 grey frames as one planar
    RGB(A) image (photometric RGB, planarconfig SEPARATE), the shape alone deciding; read
    as colour it would become one grey frame, losing the others. ``auto`` therefore reads
    the planes of a file tifffile wrote as frames, and those of other software (which
    write planar RGB on purpose) as colour, unless ``channel`` is given (a colour plane
    asked for); either way a :class:`CrystalsegWarning` says how it was read.
    """
    page = tif.series[0].keyframe
    planar = (
        "S" in axes
        and shape[axes.index("S")] in (3, 4)
        and page.photometric == tifffile.PHOTOMETRIC.RGB
        and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    )
    if not planar:
        return axes, None
    n = shape[axes.index("S")]
    by_tifffile = "tifffile" in str(page.software or "") or tif.is_shaped
    frames = choice == "frames" or (choice == "auto" and by_tifffile and channel is None)
    how = (
        f"tifffile shape {tuple(shape)}, photometric RGB, planarconfig SEPARATE"
        f"{', written by tifffile' if by_tifffile else ''}"
    )
    if frames:
        read = f"its {n} planes read as {n} grey frames"
        other = "if it is one colour image, import it with --planar-rgb rgb (planar_rgb='rgb')"
        axes = axes.replace("S", "I")
    else:
        read = f"read as one {'RGBA' if n == 4 else 'RGB'} image turned grey"
        other = (
            f"if its planes are {n} frames, import it with --planar-rgb frames "
            "(planar_rgb='frames')"
        )
    if choice == "auto":
        warnings.warn(f"{what} is a planar RGB(A) TIFF ({how}): {read}; {other}",
                      CrystalsegWarning, stacklevel=5)  # fmt: skip
    return axes, f"{read} ({how})"


# ---------------------------------------------------------------------------
# Calibration


def tiff_pixel_size_um(
    tif: tifffile.TiffFile, path: Path, series: int = 0
) -> tuple[float | None, str]:
    """Pixel size in µm of a TIFF's series ``series`` (the first by default), and which
    metadata gave it.

    OME: ``PhysicalSizeX`` and its unit (default µm). ImageJ: XResolution
    (pixels per ``unit`` of the ImageJ description: micron, µm, nm, mm...).
    Plain TIFF: XResolution with ResolutionUnit inch or cm, when plausible
    (:func:`plausible_pixel_um`). ``(None, "none")`` when nothing applies.
    """
    page = tif.series[series].keyframe if tif.series else tif.pages.first
    if tif.is_ome:
        ome = _ome_pixels(tif.ome_metadata, series)
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


def _ome_pixels(xml: str | None, image: int = 0) -> dict[str, Any] | None:
    """Attributes of image ``image``'s ``Pixels`` element (the first by default), with
    its planes under ``"planes"``."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        logger.warning("OME-XML does not parse; ignoring its calibration and times")
        return None
    images = [node for node in root if _local(node.tag) == "Image"]
    if image >= len(images):
        return None
    for pixels in images[image]:
        if _local(pixels.tag) == "Pixels":
            out: dict[str, Any] = dict(pixels.attrib)
            out["planes"] = [dict(p.attrib) for p in pixels if _local(p.tag) == "Plane"]
            return out
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
