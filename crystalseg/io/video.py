"""Video files (AVI, MP4, MOV, MKV, ...), decoded with PyAV (FFmpeg's libraries).

In-line probes and many microscope programs export a run as a video. Frames are
decoded in presentation order and turned into grey by
:func:`~crystalseg.io.base.to_grey` (or one colour sample is kept with
``channel``). Times come from the frames' presentation timestamps; a time-lapse
exported as a video is often re-timed to a playback rate, so check them and pass the
real interval on import (``--interval``) when they are not the recording's.

Opening counts the frames and reads their timestamps from the container's packets,
without decoding. Reading decodes forward from the last frame read, and seeks to the
nearest key frame before a frame further back or far ahead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from crystalseg.errors import UnsupportedInputError
from crystalseg.io.base import FrameSource, check_frame_shape, to_grey

logger = logging.getLogger(__name__)

#: File name endings taken as video (the content decides: FFmpeg must open it).
VIDEO_SUFFIXES = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".wmv", ".mpg", ".mpeg")

#: A read this many frames or more past the decoder's position seeks instead of decoding on.
_SEEK_AHEAD = 64


class VideoSource(FrameSource):
    """Frames of a video file, as grey uint8 ``(time, y, x)``.

    Parameters
    ----------
    path : Path
        An existing video file FFmpeg can open.
    channel : int or None
        Colour sample (0 red, 1 green, 2 blue) to keep; None turns colour into grey.
    """

    def __init__(self, path: Path, *, channel: int | None = None) -> None:
        import av

        self.path = Path(path)
        self._channel = channel
        try:
            self._container: Any = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise UnsupportedInputError(
                f"'{self.path}' is not a video FFmpeg can open ({exc}); export the run as a "
                "multi-page TIFF or an image folder instead"
            ) from exc
        if not self._container.streams.video:
            self._container.close()
            raise UnsupportedInputError(f"'{self.path}' holds no video stream")
        stream = self._container.streams.video[0]
        if channel is not None and not 0 <= channel < 3:
            self._container.close()
            raise UnsupportedInputError(
                f"channel {channel} of '{self.path}': a video has 3 colour samples (0-2)"
            )
        pts = [
            p.pts
            for p in self._container.demux(stream)
            if p.size and p.stream is stream and p.pts is not None
        ]
        self._container.seek(0)
        if not pts:
            self._container.close()
            raise UnsupportedInputError(f"'{self.path}' has no frames with timestamps")
        self._pts = np.sort(np.asarray(pts, dtype=np.int64))
        self._stream = stream
        self._frames: Any = None  # decoder iterator; None: (re)start before the next read
        self._next = 0  # index of the frame the iterator yields next
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        base = float(stream.time_base) if stream.time_base else 0.0
        rate = float(stream.average_rate) if stream.average_rate else None
        self.description = f"video {self.path} ({stream.codec_context.name})"
        self.shape = (len(self._pts), height, width)
        try:
            check_frame_shape(self.shape, what=f"'{self.path}'")
        except UnsupportedInputError:
            self._container.close()
            raise
        self.dtype = np.dtype(np.uint8)
        self.pixel_size_um = None
        if base > 0:
            self.time_s = (self._pts - self._pts[0]) * base
            self.time_source = "video timestamps"
        else:  # pragma: no cover - every container FFmpeg writes has a time base
            self.time_s = np.arange(len(self._pts)) / rate if rate else None
            self.time_source = "video frame rate" if rate else "none"
        self.metadata = {
            "format": "video",
            "files": [str(self.path)],
            "file_count": 1,
            "codec": stream.codec_context.name,
            "pixel_format": stream.codec_context.pix_fmt,
            "frame_rate": rate,
            "source_shape": [len(self._pts), height, width],
            "grey": "BT.709 luma" if channel is None else f"channel {channel}",
        }

    def _seek(self, index: int) -> None:
        """Put the decoder before frame ``index`` (at the key frame at or before it)."""
        target = int(self._pts[index])
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._skip_to = target
        self._next = index

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._frames is None or start < self._next or start >= self._next + _SEEK_AHEAD:
            self._seek(start)
        else:
            self._skip_to = int(self._pts[start])
        out = np.empty((stop - start, *self.shape[1:]), dtype=np.uint8)
        k = 0
        for frame in self._frames:
            if frame.pts is not None and frame.pts < self._skip_to:
                continue  # between the key frame and the first frame asked for
            out[k] = self._grey(frame)
            k += 1
            if k == stop - start:
                break
        if k != stop - start:
            raise UnsupportedInputError(
                f"'{self.path}' ended after {start + k} of the {self.shape[0]} frames its "
                "packets announce; the file may be truncated"
            )
        self._next = stop
        return out

    def _grey(self, frame: Any) -> np.ndarray:
        if self._channel is None and frame.format.name in ("gray", "gray8"):
            return np.asarray(frame.to_ndarray())
        rgb = frame.to_ndarray(format="rgb24")
        return rgb[..., self._channel] if self._channel is not None else to_grey(rgb)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None
