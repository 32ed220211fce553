"""Folders and glob patterns of single-frame images (PNG, BMP, TIFF, JPEG), one file a frame.

Files are ordered by natural sort (``frame2`` before ``frame10``). Opening
checks every file's header (size and pixel mode, no pixel data) so that a
stray or mismatched file fails before any work starts; reading loads only the
files of the frames asked for. ``*_mask.*`` files (and Cellpose's ``*_masks.*``,
``*_cp_masks.*``) are training masks, not frames, and hidden files (``.*``, e.g.
macOS ``._frame1.png``) are not frames either: both are skipped and logged.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import natsort
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from crystalseg.errors import (
    CrystalsegWarning,
    FrameMismatchError,
    InputNotFoundError,
    UnsupportedInputError,
)
from crystalseg.io.base import (
    FrameSource,
    cap_files,
    check_frame_shape,
    finish_frames,
    output_dtype,
    plan_axes,
    relative_times,
)
from crystalseg.io.tiff import plausible_pixel_um, tiff_pixel_size_um

logger = logging.getLogger(__name__)

#: Extensions read as frames (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
_LABELS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG",
           ".jpeg": "JPEG"}  # fmt: skip
_FORMATS = "PNG, BMP, TIFF or JPEG"

#: Sum of the IJG standard luminance quantization table (JPEG quality 50).
_IJG_LUMA_SUM = 3688

#: JPEG frames below this estimated quality get a warning at import: at 40 the bundled
#: model already loses faint crystals, at 20 it calls block artefacts crystals (README,
#: known limits; ``benchmarks/other_renderer.py --jpeg``).
JPEG_WARN_QUALITY = 50


def _looks_copied(time_s: np.ndarray) -> bool:
    """Times of files written in one burst (a copy, an export) rather than at
    acquisition: under a second apart and irregular (the longest step more than 3x the
    shortest); a camera saving at a fixed rate, however fast, is regular."""
    steps = np.diff(time_s)
    return bool(np.median(steps) < 1.0 and steps.max() > 3.0 * steps.min())


def jpeg_quality(path: Path) -> int | None:
    """The IJG quality (1-100) a JPEG file was most likely saved at, from its luminance
    quantization table; None for other files or tables not scaled from the standard one.
    """
    try:
        with Image.open(path) as im:
            tables = getattr(im, "quantization", None)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    scale = 100.0 * sum(tables[0]) / _IJG_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return round(min(max(quality, 1.0), 100.0))


#: PIL mode → (dtype after loading, samples after loading)
_PIL_MODES: dict[str, tuple[str, int]] = {
    "1": ("bool", 1),
    "L": ("uint8", 1),
    "LA": ("uint8", 1),  # alpha dropped
    "La": ("uint8", 1),
    "P": ("uint8", 3),  # palette → RGB → to_grey
    "PA": ("uint8", 3),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "RGBX": ("uint8", 3),
    "RGBa": ("uint8", 3),
    "CMYK": ("uint8", 3),
    "YCbCr": ("uint8", 3),
    "I;16": ("uint16", 1),
    "I;16L": ("uint16", 1),
    "I;16B": ("uint16", 1),
    "I;16N": ("uint16", 1),
    "I": ("int32", 1),
    "F": ("float32", 1),
}


#: Stem endings that mark a mask file, not a frame: ours, then Cellpose's training
#: (``X_masks``) and output (``X_cp_masks``) names.
MASK_TAGS: tuple[str, ...] = ("_mask", "_masks", "_cp_masks")


def is_mask_file(path: Path) -> bool:
    """Whether ``path`` is a training mask (``*_mask.*``, ``*_masks.*``, ``*_cp_masks.*``),
    not a frame."""
    return path.stem.lower().endswith(MASK_TAGS)


def _sorted(files: Sequence[Path]) -> list[Path]:
    return natsort.natsorted(files, alg=natsort.ns.PATH | natsort.ns.IGNORECASE)


def _drop_non_frames(files: Sequence[Path], origin: str) -> list[Path]:
    masks = [f for f in files if is_mask_file(f)]
    hidden = [f for f in files if f.name.startswith(".")]
    if masks:
        logger.info("%s: skipped %d mask file(s) (*_mask.* or *_masks.*), e.g. '%s'", origin,
                    len(masks), masks[0].name)  # fmt: skip
    if hidden:
        logger.info("%s: skipped %d hidden file(s), e.g. '%s'", origin, len(hidden),
                    hidden[0].name)  # fmt: skip
    drop = set(masks) | set(hidden)
    return [f for f in files if f not in drop]


def folder_frames(folder: Path) -> list[Path]:
    """Frame files of ``folder``, naturally sorted; raise if there are none."""
    entries = list(folder.iterdir())
    images = [f for f in entries if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    others = [f for f in entries if f.is_file() and f.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        logger.info("%s: ignored %d file(s) that are not %s, e.g. '%s'", folder, len(others),
                    _FORMATS, others[0].name)  # fmt: skip
    frames = _drop_non_frames(images, str(folder))
    if frames:
        return _sorted(frames)
    subdirs = sorted(f.name for f in entries if f.is_dir() and not f.name.startswith("."))
    if images:
        found = f"only mask or hidden files (e.g. '{images[0].name}')"
    elif others:
        found = f"{len(others)} other file(s), e.g. '{others[0].name}'"
    elif subdirs:
        found = f"sub-folders ({', '.join(subdirs[:5])})"
    else:
        found = "nothing"
    fix = (
        f"Point at the folder that holds the frames, e.g. '{folder / subdirs[0]}'."
        if subdirs
        else "Point at the folder that holds the frames."
    )
    raise UnsupportedInputError(
        f"folder '{folder}' holds no {_FORMATS} frames ({found}); expected one image per "
        f"frame. {fix}"
    )


def glob_frames(pattern: str) -> list[Path]:
    """Files matched by ``pattern``, naturally sorted; raise if none."""
    matched = [Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)]
    files = _drop_non_frames([p for p in matched if p.is_file()], pattern)
    if not files:
        detail = "only masks, hidden files or folders" if matched else "nothing"
        raise InputNotFoundError(
            f"pattern '{pattern}' matches {detail}; expected image files, one per frame. "
            "Check the folder and the pattern, e.g. 'run1/*.png'."
        )
    return _sorted(files)


# ---------------------------------------------------------------------------
# One file


@dataclass(frozen=True)
class _Header:
    """What a file's header says, enough to check it against the others."""

    width: int
    height: int
    mode: str  # PIL mode, or "<dtype> <samples>" for TIFF
    dtype: str  # pixel dtype once loaded
    samples: int  # channels once loaded (1, 3 or 4)
    reader: Literal["pil", "tiff"]

    def key(self) -> tuple[int, int, str]:
        return self.width, self.height, self.mode

    def text(self) -> str:
        return f"{self.width}x{self.height} px, mode {self.mode}"


def _not_an_image(path: Path, why: str) -> UnsupportedInputError:
    return UnsupportedInputError(
        f"'{path}' is not a {_FORMATS} image ({why}); expected one image per frame. "
        "Remove it or narrow the folder/pattern to the frames."
    )


def _probe_tiff(path: Path) -> _Header:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes, dtype = series.shape, series.axes, series.dtype
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise _not_an_image(path, str(exc)) from exc
    big = {a: n for a, n in zip(axes, shape, strict=True) if a not in "YXS" and n > 1}
    if big or "Y" not in axes or "X" not in axes:
        raise UnsupportedInputError(
            f"'{path}' holds {int(np.prod(list(big.values()) or [1]))} frames (shape "
            f"{tuple(shape)}, axes {axes}); expected one frame per file. Import a stack as a "
            "run of its own (crystalseg import FILE)."
        )
    samples = shape[axes.index("S")] if "S" in axes else 1
    mode = str(dtype) if samples == 1 else f"{dtype} x{samples}"
    return _Header(
        shape[axes.index("X")], shape[axes.index("Y")], mode, str(dtype), samples, "tiff"
    )


def _png_bit_depth(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, None if not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return head[24], head[25]


def _probe(path: Path) -> _Header:
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return _probe_tiff(path)
    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
            n = getattr(im, "n_frames", 1)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _not_an_image(path, str(exc).split("\n")[0]) from exc
    if n > 1:
        raise UnsupportedInputError(
            f"'{path}' holds {n} frames; expected one frame per file. Import a stack as a "
            "run of its own (crystalseg import FILE), or export single frames."
        )
    png = _png_bit_depth(path)
    if png is not None and png[0] == 16 and png[1] in (2, 4, 6):
        raise UnsupportedInputError(
            f"'{path}' is a 16-bit colour PNG, which the PNG reader cuts to 8 bits; expected "
            "grey frames or 8-bit colour. Save the frames as 16-bit grey PNG or TIFF."
        )
    if mode not in _PIL_MODES:
        raise UnsupportedInputError(
            f"'{path}' has pixel mode {mode}, which crystalseg does not read; expected grey "
            "(8/16-bit) or RGB(A) frames. Save the frames as grey PNG or TIFF."
        )
    dtype, samples = _PIL_MODES[mode]
    return _Header(width, height, mode, dtype, samples, "pil")


def _decode(path: Path, header: _Header) -> np.ndarray:
    if header.reader == "tiff":
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
        keep = [i for i, a in enumerate(axes) if a in "YXS"]
        arr = arr[tuple(slice(None) if i in keep else 0 for i in range(arr.ndim))]
        kept = "".join(axes[i] for i in keep)
        return np.transpose(arr, [kept.index(a) for a in "YXS" if a in kept])
    with Image.open(path) as im:
        img: Image.Image = im
        if im.mode in ("LA", "La"):
            img = im.getchannel(0)
        elif im.mode not in ("RGB", "RGBA") and header.samples == 3:
            img = im.convert("RGB")
        arr = np.asarray(img)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _load(path: Path, header: _Header) -> np.ndarray:
    """Pixels of one file, shape (y, x) or (y, x, samples), dtype ``header.dtype``."""
    try:
        arr = _decode(path, header)
    except (tifffile.TiffFileError, UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UnsupportedInputError(
            f"'{path}' cannot be decoded ({exc}); expected a complete image. Re-export "
            f"'{path.name}' or remove it."
        ) from exc
    expected = (header.height, header.width) + ((header.samples,) if header.samples > 1 else ())
    if arr.shape != expected or str(arr.dtype) != header.dtype:
        raise FrameMismatchError(
            f"'{path}' decodes to shape {arr.shape} {arr.dtype}, but its header said "
            f"{expected} {header.dtype}; expected all frames alike. Re-export '{path.name}'."
        )
    return arr


def read_image_file(path: Path) -> np.ndarray:
    """Pixels of one single-frame image file, read by the same rules as a folder's frames.

    Returns (y, x) grey or (y, x, 3|4) colour, in the file's own dtype (bool for 1-bit
    files, the palette's colours for indexed ones).

    Raises
    ------
    InputNotFoundError
        There is no such file.
    UnsupportedInputError
        Not a PNG, BMP, TIFF or JPEG image, several frames, or an unreadable mode.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"image '{path}' does not exist")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UnsupportedInputError(
            f"'{path.name}' is not a supported image ({', '.join(IMAGE_SUFFIXES)}); "
            f"expected a {_FORMATS} file"
        )
    return _load(path, _probe(path))


# ---------------------------------------------------------------------------
# The source


class FolderSource(FrameSource):
    """Frames from a list of image files, one file a frame.

    Use :meth:`from_folder`, :meth:`from_glob` or :meth:`from_file`.

    Parameters
    ----------
    files : sequence of Path
        The frame files in frame order.
    channel : int or None
        Colour channel to keep; None turns RGB(A) into grey.
    origin : str
        The folder, pattern or file as given, for messages.
    kind : {"folder", "glob", "file"}
        How the files were chosen, for provenance.

    Raises
    ------
    UnsupportedInputError
        A file is not an image, holds several frames, or has an unreadable mode.
    FrameMismatchError
        A file's size or mode differs from the first file's.
    """

    def __init__(
        self,
        files: Sequence[Path],
        *,
        channel: int | None = None,
        origin: str,
        kind: Literal["folder", "glob", "file"],
    ) -> None:
        files = [Path(f) for f in files]
        if not files:
            raise InputNotFoundError(f"{kind} '{origin}' holds no frames; expected image files.")
        first = _probe(files[0])
        mtimes = [files[0].stat().st_mtime]
        for f in files[1:]:
            h = _probe(f)
            if h.key() != first.key():
                raise FrameMismatchError(
                    f"'{f}' is {h.text()}, but the first frame '{files[0].name}' is "
                    f"{first.text()}; all frames must match. Remove or re-export '{f.name}'."
                )
            mtimes.append(f.stat().st_mtime)
        self._files = files
        self._header = first
        label = "/".join(sorted({_LABELS.get(f.suffix.lower(), f.suffix) for f in files}))
        self._what = f"{kind} '{origin}'" if kind != "file" else f"'{origin}'"
        if kind == "file":
            self.description = f"{label} image {origin}"
        else:
            self.description = f"image {kind} {origin} ({len(files)} {label} files)"
        samples = first.samples
        shape = (len(files), first.height, first.width) + ((samples,) if samples > 1 else ())
        axes = "TYXS" if samples > 1 else "TYX"
        self._plan = plan_axes(shape, axes, channel=channel, what=self._what)
        check_frame_shape(shape[:3], what=self._what)
        self.dtype = output_dtype(
            np.dtype(first.dtype), lambda: _load(files[0], first)[np.newaxis], what=self._what
        )
        self.shape = (len(files), first.height, first.width)
        self.pixel_size_um = self._pixel_size(files[0], first)
        self.time_s = relative_times(np.array(mtimes)) if len(files) > 1 else None
        self.time_source = "file modification time" if self.time_s is not None else "none"
        if self.time_s is not None and len(files) > 2 and _looks_copied(self.time_s):
            steps = np.diff(self.time_s)
            self.time_doubt = (
                f"{self._what}: the file modification times (median interval "
                f"{np.median(steps):.3g} s, from {steps.min():.3g} to {steps.max():.3g} s) look "
                "like the time the files were copied, not recorded; pass --interval SECONDS "
                "(interval_s=) with the real interval"
            )
        if self.time_s is None and len(files) > 1:
            logger.info("%s: file modification times do not increase along the sorted names; "
                        "frame times unknown", self._what)  # fmt: skip
        self.metadata = {
            "format": "image-" + kind,
            "source": str(origin),
            **cap_files([str(f) for f in files]),
            "axes": axes,
            "source_shape": list(shape),
            "source_dtype": first.dtype,
            "source_mode": first.mode,
            "time_axis": "T",
            "grey": self._plan.grey,
        }
        quality = jpeg_quality(files[0]) if files[0].suffix.lower() in (".jpg", ".jpeg") else None
        if quality is not None:
            self.metadata["jpeg_quality"] = quality
            if quality < JPEG_WARN_QUALITY:
                warnings.warn(
                    f"{self._what}: JPEG frames saved at quality about {quality}; at this "
                    "compression the bundled model can take block artefacts for small "
                    "crystals. Export TIFF or PNG (or JPEG at quality 75 or more) if you can",
                    CrystalsegWarning,
                    stacklevel=2,
                )

    @staticmethod
    def _pixel_size(path: Path, header: _Header) -> float | None:
        """Calibration of the first file: TIFF metadata, or a plausible PNG/JPEG dpi."""
        if header.reader == "tiff":
            with tifffile.TiffFile(path) as tif:
                return tiff_pixel_size_um(tif, path)[0]
        with Image.open(path) as im:
            dpi = im.info.get("dpi")
        if not dpi:
            return None
        try:
            return plausible_pixel_um(float(dpi[0]), 2, source=str(path))
        except (TypeError, ValueError, IndexError):
            return None

    @classmethod
    def from_folder(cls, folder: Path, *, channel: int | None = None) -> FolderSource:
        """All frame images in ``folder`` (not recursive), naturally sorted."""
        return cls(folder_frames(Path(folder)), channel=channel, origin=str(folder), kind="folder")

    @classmethod
    def from_glob(cls, pattern: str, *, channel: int | None = None) -> FolderSource:
        """The files ``pattern`` matches (``**`` recurses), naturally sorted."""
        return cls(glob_frames(pattern), channel=channel, origin=pattern, kind="glob")

    @classmethod
    def from_file(cls, path: Path, *, channel: int | None = None) -> FolderSource:
        """One PNG/BMP/JPEG/TIFF image as a one-frame recording."""
        return cls([Path(path)], channel=channel, origin=str(path), kind="file")

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        plan = self._plan
        for k, path in enumerate(self._files[start:stop]):
            raw = _load(path, self._header)[np.newaxis]
            block = plan.arrange(raw[plan.index(0, 1)])
            out[k] = finish_frames(block, plan, self.dtype, what=self._what, first_index=start + k)[
                0
            ]
        return out
