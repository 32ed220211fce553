"""Readers that open a recording as grey frames ``(time, y, x)``, whatever its format.

:func:`open_source` looks at a path and picks the reader:

======================================  ==========================================
path                                    reader
======================================  ==========================================
TIFF file (plain, OME-TIFF, ImageJ)     :class:`~crystalseg.io.tiff.TiffSource`
folder of PNG/BMP/TIFF/JPEG frames      :class:`~crystalseg.io.folder.FolderSource`
glob pattern (``run1/*.png``)           :class:`~crystalseg.io.folder.FolderSource`
one PNG/BMP/JPEG image                  :class:`~crystalseg.io.folder.FolderSource`
zarr array / group / OME-Zarr image     :class:`~crystalseg.io.zarr_source.ZarrSource`
``.npy`` array                          :class:`~crystalseg.io.npy.NpySource`
video (AVI, MP4, MOV, MKV, ...)         :class:`~crystalseg.io.video.VideoSource`
======================================  ==========================================

Every reader is a :class:`~crystalseg.io.base.FrameSource`; colour becomes grey
by :func:`~crystalseg.io.base.to_grey`.
"""

from __future__ import annotations

import logging
import os
import struct
import tokenize
import zlib
from collections.abc import Callable
from pathlib import Path

from crystalseg.errors import (
    ConfigError,
    CrystalsegError,
    InputNotFoundError,
    UnsupportedInputError,
)
from crystalseg.io.base import FrameSource, TimeSource, to_grey
from crystalseg.io.folder import IMAGE_SUFFIXES, FolderSource
from crystalseg.io.npy import NpySource
from crystalseg.io.tiff import PlanarRGB, TiffSource
from crystalseg.io.video import VIDEO_SUFFIXES, VideoSource
from crystalseg.io.zarr_source import ZarrSource, is_zarr_dir

__all__ = [
    "FolderSource",
    "FrameSource",
    "NpySource",
    "PlanarRGB",
    "TiffSource",
    "TimeSource",
    "VideoSource",
    "ZarrSource",
    "open_source",
    "to_grey",
]

logger = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")
_GLOB_CHARS = "*?["
_EXPECTED = (
    "a TIFF stack, an image folder or glob pattern, a zarr/OME-Zarr store, a .npy file or "
    "a video (AVI, MP4, MOV, MKV)"
)


def _is_tiff(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts like a TIFF."""
    try:
        with open(Path(path).expanduser(), "rb") as fh:
            return fh.read(8).startswith(_TIFF_MAGIC)
    except OSError:
        return False


#: What the parsers of image headers raise on bytes that are not what they expect (a
#: damaged or hostile file): :func:`open_source` turns each into UnsupportedInputError.
_PARSE_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    ZeroDivisionError,
    EOFError,
    OSError,
    SyntaxError,
    RecursionError,
    struct.error,
    tokenize.TokenError,
    zlib.error,
    MemoryError,
)


def open_source(
    path: str | Path,
    *,
    channel: int | None = None,
    series: int | None = None,
    planar_rgb: PlanarRGB = "auto",
) -> FrameSource:
    """Open a recording for streaming, choosing the reader by what ``path`` is.

    Parameters
    ----------
    path : str or Path
        A TIFF/OME-TIFF/ImageJ TIFF file; a folder of images or a glob pattern
        (``"run1/*.png"``); one PNG/BMP/JPEG image; a zarr array, a zarr group
        holding one array, or an OME-Zarr image (v0.4 or v0.5); a ``.npy`` file; a
        video (AVI, MP4, MOV, MKV, WebM, WMV, MPEG).
        The file's content decides, not only its extension.
    channel : int or None
        Channel (or RGB sample) to keep when frames have several; None turns
        RGB(A) into grey by :func:`to_grey` and rejects other multi-channel data.
    series : int or None
        For a TIFF of several image series (stage positions): read this one alone.
        Refused for other formats.
    planar_rgb : "auto", "frames" or "rgb"
        A TIFF of 3 or 4 pages stored as planar RGB(A): read its planes as frames, or as
        one colour image turned grey. ``auto`` reads the planes of a file written by
        tifffile (whose ``imwrite`` makes any stack of 3 or 4 frames planar RGB) as frames,
        others as colour, and warns which it chose.

    Returns
    -------
    FrameSource
        Opened source; use it as a context manager, or call ``close()``.

    Raises
    ------
    InputNotFoundError
        ``path`` does not exist, or the glob pattern matches no file.
    UnsupportedInputError
        ``path`` exists but is not a recording crystalseg reads, its header is
        damaged or cut short, it holds 0 frames or frames over
        :data:`~crystalseg.io.base.MAX_FRAME_PIXELS`, or its layout has no single
        time axis (the message names the shape and the fix).
    FrameMismatchError
        Files of a folder differ in size or pixel mode.
    """
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise ConfigError(f"channel must be an integer index; got {channel!r}. Pass --channel 0.")
    if series is not None and not _is_tiff(path):
        raise ConfigError(
            f"--series picks an image series of a TIFF file; '{path}' is not one. "
            "Leave --series out"
        )
    text = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        if any(c in text for c in _GLOB_CHARS):
            return _opened(text, lambda: FolderSource.from_glob(text, channel=channel))
        raise InputNotFoundError(f"'{text}' does not exist; expected {_EXPECTED}. Check the path.")
    p = Path(os.path.abspath(p))  # provenance names absolute paths, symlinks kept
    if p.is_dir():
        if is_zarr_dir(p):
            return _opened(text, lambda: ZarrSource(p, channel=channel))
        return _opened(text, lambda: FolderSource.from_folder(p, channel=channel))
    if p.name in ("zarr.json", ".zarray", ".zgroup", ".zattrs"):
        return _opened(text, lambda: ZarrSource(p.parent, channel=channel))
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UnsupportedInputError(
            f"'{text}' cannot be read ({exc}); check its permissions."
        ) from exc
    if head.startswith(_TIFF_MAGIC):
        return _opened(
            text, lambda: TiffSource(p, channel=channel, series=series, planar_rgb=planar_rgb)
        )
    if head.startswith(_NPY_MAGIC):
        return _opened(text, lambda: NpySource(p, channel=channel))
    if head.startswith(_IMAGE_MAGIC) or p.suffix.lower() in IMAGE_SUFFIXES:
        return _opened(text, lambda: FolderSource.from_file(p, channel=channel))
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return _opened(text, lambda: VideoSource(p, channel=channel))
    raise UnsupportedInputError(
        f"'{text}' is not a format crystalseg reads (starts with bytes {head[:8]!r}); expected "
        f"{_EXPECTED}. Export the recording as a multi-page TIFF."
    )


def _opened(text: str, open_reader: Callable[[], FrameSource]) -> FrameSource:
    """``open_reader()``, with what a header parser raises on a damaged file (an
    ``IndexError`` deep in tifffile, a ``struct.error`` in Pillow) said as one
    :class:`UnsupportedInputError` naming the file; the readers' own errors pass."""
    try:
        return open_reader()
    except CrystalsegError:
        raise
    except _PARSE_ERRORS as exc:
        raise UnsupportedInputError(
            f"'{text}' cannot be read: its header is damaged or not what its format "
            f"declares ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "expected an intact recording. Copy or export the recording again."
        ) from exc
