"""The interface every frame reader implements, and the rules they share.

A :class:`FrameSource` is an opened recording seen as a stack of grey frames
``(time, y, x)`` of dtype uint8 or uint16, whatever the file holds: colour is
turned into grey by :func:`to_grey`, one channel is picked by ``channel``,
singleton axes are squeezed and other integer types are checked and narrowed.
Opening reads headers and at most one frame; :meth:`FrameSource.read` touches
only the frames asked for, so importing a recording larger than memory keeps
peak memory flat.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np

from crystalseg.errors import ConfigError, UnsupportedInputError

logger = logging.getLogger(__name__)

#: Where :attr:`FrameSource.time_s` came from.
TimeSource = Literal[
    "OME Plane DeltaT",
    "OME TimeIncrement",
    "ImageJ finterval",
    "file modification time",
    "zarr axis scale",
    "video timestamps",
    "video frame rate",
    "none",
]

#: Most pixels one frame may have: 2**28 (16384 x 16384; 256 MiB as uint8, 512 MiB as
#: uint16). The largest scientific sensors have ~150 megapixels; a header that declares
#: more (a 60000 x 60000 TIFF is 3.6 GB a frame) is refused before anything is allocated,
#: as every stage holds a few frames in memory at once.
MAX_FRAME_PIXELS = 2**28

#: ITU-R BT.709 luma weights in units of 1/10000 (as ``skimage.color.rgb2gray``).
_LUMA_WEIGHTS = (2125, 7154, 721)


class FrameSource(abc.ABC):
    """An opened recording, read as grey frames ``(time, y, x)``.

    Attributes
    ----------
    description : str
        What was opened, for logs and messages, e.g. ``"OME-TIFF /data/run1.ome.tif"``.
    shape : tuple of int, (time, y, x)
        Shape of the stack after channel selection and grey conversion.
    dtype : numpy.dtype, uint8 or uint16
        Dtype of the arrays :meth:`read` returns.
    pixel_size_um : float or None
        Edge length of one pixel in micrometres from the file's metadata, None if unknown.
    time_s : ndarray of float64, shape (time,), or None
        Seconds since the first frame, None if the source does not say.
    time_source : str
        Where ``time_s`` came from, one of :data:`TimeSource`.
    time_doubt : str or None
        Why ``time_s`` may not be the recording's times (e.g. file modification times
        that look like a copy's), said as a warning when they are used; None when
        there is no doubt.
    metadata : dict
        JSON-serialisable provenance: ``format``, ``files`` (capped for large
        folders, with ``file_count``), ``axes``, ``source_shape``,
        ``source_dtype``, and how channels were reduced to grey (``grey``).
    """

    description: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    pixel_size_um: float | None
    time_s: np.ndarray | None
    time_source: TimeSource
    time_doubt: str | None = None
    metadata: dict[str, Any]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start`` (inclusive) to ``stop`` (exclusive).

        Parameters
        ----------
        start, stop : int
            Frame range, ``0 <= start <= stop <= shape[0]``.

        Returns
        -------
        ndarray, shape (stop - start, y, x), dtype ``self.dtype``
            A fresh array (never a view of a memory map or of a cache).
        """
        n = self.shape[0]
        if not (0 <= int(start) <= int(stop) <= n):
            raise ValueError(f"frame range {start}:{stop} is outside 0:{n} of {self.description}")
        start, stop = int(start), int(stop)
        if start == stop:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return self._read(start, stop)

    @abc.abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray:
        """Read a validated, non-empty frame range (see :meth:`read`)."""

    def close(self) -> None:  # noqa: B027 (optional hook, sources without files keep it)
        """Release open files; the source cannot be read afterwards."""

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.description}: shape={self.shape} dtype={self.dtype} "
            f"pixel_size_um={self.pixel_size_um} time={self.time_source}>"
        )


def check_frame_shape(shape: tuple[int, ...], *, what: str) -> None:
    """Refuse a recording of 0 frames, an empty frame, or frames over :data:`MAX_FRAME_PIXELS`.

    Called by every reader on the shape its header declares, before a pixel is read.

    Parameters
    ----------
    shape : (time, y, x) as the header declares it
    what : the source, as named in messages

    Raises
    ------
    UnsupportedInputError
        One of the three.
    """
    n, ny, nx = (int(v) for v in shape)
    if n == 0:
        raise UnsupportedInputError(
            f"{what} holds 0 frames (shape {tuple(shape)}); expected at least one frame. "
            "Check that the recording was saved completely, or export it again."
        )
    if ny == 0 or nx == 0:
        raise UnsupportedInputError(
            f"{what} has empty frames of {ny} x {nx} pixels; expected frames of at least 1 x 1. "
            "Export the recording again."
        )
    if ny * nx > MAX_FRAME_PIXELS:
        raise UnsupportedInputError(
            f"{what} declares frames of {ny} x {nx} pixels ({ny * nx / 1e6:.0f} megapixels); "
            f"crystalseg reads frames of up to {MAX_FRAME_PIXELS / 2**20:.0f} megapixels "
            "(16384 x 16384). Check that the file is not damaged, or crop or bin the frames "
            "before import."
        )


def to_grey(frame: np.ndarray) -> np.ndarray:
    """Grey value of RGB or RGBA pixels by the ITU-R BT.709 luma weights.

    The rule crystalseg applies to every colour image::

        grey = 0.2125 R + 0.7154 G + 0.0721 B

    the weights of ``skimage.color.rgb2gray``. An alpha channel is dropped,
    not blended. The result is rounded to the nearest integer (halves round
    up) and returned in the input's integer dtype; the sum is computed in
    exact integer arithmetic, so it is reproducible across machines. The
    weights add up to 1, so a grey RGB image (R = G = B) keeps its values.

    Parameters
    ----------
    frame : ndarray, shape (..., 3) or (..., 4), unsigned integer dtype (uint8 or uint16)
        Colour pixels, channels last in the order R, G, B[, A].

    Returns
    -------
    ndarray, shape (...), same dtype as ``frame``
        Grey values.
    """
    frame = np.asarray(frame)
    if frame.ndim < 1 or frame.shape[-1] not in (3, 4):
        raise ValueError(f"to_grey expects RGB(A) pixels (..., 3|4); got shape {frame.shape}")
    if frame.dtype.kind != "u" or frame.dtype.itemsize > 2:
        raise ValueError(f"to_grey expects uint8 or uint16 pixels; got {frame.dtype}")
    if frame.ndim > 3:  # a stack: one frame at a time keeps the int32 temporaries small
        out = np.empty(frame.shape[:-1], dtype=frame.dtype)
        for i in range(frame.shape[0]):
            out[i] = to_grey(frame[i])
        return out
    wr, wg, wb = _LUMA_WEIGHTS
    acc = frame[..., 0].astype(np.int32) * wr
    acc += frame[..., 1].astype(np.int32) * wg
    acc += frame[..., 2].astype(np.int32) * wb
    acc += 5000  # round half up
    acc //= 10000
    return acc.astype(frame.dtype)


# ---------------------------------------------------------------------------
# Units


def _norm_unit(unit: str) -> str:
    u = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("μ", "µ")
    return u if u == "Å" else u.lower()


_LENGTH_UM = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "Å": 1e-4, "angstrom": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "inch": 25400.0, "in": 25400.0,
}  # fmt: skip

_TIME_S = {
    "ns": 1e-9, "nanosecond": 1e-9,
    "µs": 1e-6, "us": 1e-6, "microsecond": 1e-6,
    "ms": 1e-3, "millisecond": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip


def _in_unit(value: float | None, unit: str | None, factors: dict[str, float]) -> float | None:
    """``value`` times the factor of ``unit``; None if either is unknown or value is not > 0."""
    if value is None or unit is None:
        return None
    factor = factors.get(_norm_unit(str(unit)))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if factor is None or not np.isfinite(v) or v <= 0:
        return None
    return v * factor


def length_to_um(value: float | None, unit: str | None) -> float | None:
    """``value`` in ``unit`` as micrometres; None if the unit is unknown or the value not > 0."""
    return _in_unit(value, unit, _LENGTH_UM)


def time_to_s(value: float | None, unit: str | None) -> float | None:
    """``value`` in ``unit`` as seconds; None if the unit is unknown or the value not > 0."""
    return _in_unit(value, unit, _TIME_S)


def regular_times(n: int, interval_s: float) -> np.ndarray:
    """``n`` times ``interval_s`` apart, starting at 0, float64 seconds."""
    return np.arange(n, dtype=np.float64) * float(interval_s)


def relative_times(t: np.ndarray) -> np.ndarray | None:
    """Times relative to the first one, or None if they do not strictly increase."""
    t = np.asarray(t, dtype=np.float64)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        return None
    return t - t[0]


# ---------------------------------------------------------------------------
# Axes: from whatever the file holds to (time, y, x)


def unlabelled_axes(shape: tuple[int, ...]) -> str:
    """Axis letters for an array without axis names (NumPy, plain zarr).

    ``(y, x)`` is one frame; ``(t, y, x)`` a stack; a last axis of 3 or 4 is
    RGB(A) samples, so ``(y, x, 3)`` is one colour frame and ``(t, y, x, 3)``
    a colour stack. Leading axes beyond those are unknown (``Q``) and must be
    singleton, or the plan reports that there is no single time axis.
    """
    nd = len(shape)
    if nd < 2:
        return "Q" * nd
    if nd >= 3 and shape[-1] in (3, 4):
        return "Q" * (nd - 4) + ("TYXS" if nd >= 4 else "YXS")
    return "Q" * (nd - 3) + ("TYX" if nd >= 3 else "YX")


@dataclass(frozen=True)
class AxesPlan:
    """How to index an array with labelled axes to get ``(time, y, x)`` frames.

    Attributes
    ----------
    axes : str
        One upper-case letter per source axis (tifffile's convention: T time,
        Z depth, C channel, S colour sample, Y, X, Q/I unknown).
    shape : tuple of int
        Source shape.
    time_axis : int or None
        Index of the axis read as time; None for a single frame.
    fixed : tuple of (int, int)
        ``(axis, index)`` pairs taken at one index (picked channel, singletons).
    rgb : bool
        The kept sample axis holds RGB(A) that :func:`to_grey` reduces.
    grey : str
        How channels became grey, for provenance.
    """

    axes: str
    shape: tuple[int, ...]
    time_axis: int | None
    fixed: tuple[tuple[int, int], ...]
    rgb: bool
    grey: str

    @property
    def n_frames(self) -> int:
        return 1 if self.time_axis is None else self.shape[self.time_axis]

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def time_letter(self) -> str | None:
        return None if self.time_axis is None else self.axes[self.time_axis]

    def index(self, start: int, stop: int) -> tuple[int | slice, ...]:
        """Basic index into the source array for frames ``start:stop``."""
        fixed = dict(self.fixed)
        idx: list[int | slice] = []
        for i in range(len(self.shape)):
            if i == self.time_axis:
                idx.append(slice(start, stop))
            elif i in fixed:
                idx.append(fixed[i])
            else:
                idx.append(slice(None))
        return tuple(idx)

    def arrange(self, block: np.ndarray) -> np.ndarray:
        """Put an indexed block in the order (time, y, x[, sample])."""
        fixed = dict(self.fixed)
        tags = [
            "t" if i == self.time_axis else a for i, a in enumerate(self.axes) if i not in fixed
        ]
        block = np.transpose(block, [tags.index(a) for a in "tYXS" if a in tags])
        if self.time_axis is None:
            block = block[np.newaxis]
        return block


def _shape_text(shape: tuple[int, ...], axes: str) -> str:
    return f"shape {tuple(shape)} (axes {axes})"


def plan_axes(
    shape: tuple[int, ...],
    axes: str,
    *,
    channel: int | None,
    what: str,
    c_may_be_time: bool = False,
) -> AxesPlan:
    """Decide which axis is time and how channels become one grey plane.

    Rules: a colour sample axis ``S`` of 3 or 4 is RGB(A) and goes through
    :func:`to_grey`; a channel axis ``C`` (or any sample axis) with more than
    one entry needs ``channel``; singleton axes are squeezed; the one axis
    left besides y and x is time, whatever its letter (``T``, or ``Z``/``Q``/
    ``I`` in files that do not label time); two or more such axes are an error.
    Axes may come in any order: :meth:`AxesPlan.arrange` moves them to
    (time, y, x[, sample]).

    Parameters
    ----------
    shape : tuple of int
        Source array shape.
    axes : str
        One letter per axis, upper-case; must contain ``Y`` and ``X``.
    channel : int or None
        Channel to keep (the user's ``--channel``); None converts RGB to grey
        and rejects multi-channel data.
    what : str
        The source, as named in error messages.
    c_may_be_time : bool
        Take a channel axis as time when it is the only non-singleton axis and
        no channel was asked for (ImageJ grey stacks written without labels).

    Raises
    ------
    UnsupportedInputError
        No y/x plane, several channels without ``channel``, ``channel`` out of
        range, or more than one axis that could be time.
    """
    axes = axes.upper()
    shape = tuple(int(s) for s in shape)
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match shape {shape}")
    desc = _shape_text(shape, axes)
    if "Y" not in axes or "X" not in axes:
        raise UnsupportedInputError(
            f"{what} has {desc}, which is not a stack of 2-D images; expected (time, y, x) "
            "frames. Export the recording as a TIFF stack or an image folder."
        )
    if channel is not None and channel < 0:
        raise ConfigError(f"channel must be 0 or more; got {channel}. Pass --channel 0 or higher.")
    chans = [i for i, a in enumerate(axes) if a in "CS" and shape[i] > 1]
    if c_may_be_time and channel is None and len(chans) == 1 and axes[chans[0]] == "C":
        others = [i for i, a in enumerate(axes) if a not in "YXC" and shape[i] > 1]
        if not others:
            logger.info("%s: grey stack with %d planes labelled C; reading them as time",
                        what, shape[chans[0]])  # fmt: skip
            axes = axes[: chans[0]] + "I" + axes[chans[0] + 1 :]
            chans = []
    fixed: dict[int, int] = {}
    rgb = False
    grey = "single channel"
    if len(chans) > 1:
        sizes = ", ".join(f"{axes[i]}={shape[i]}" for i in chans)
        raise UnsupportedInputError(
            f"{what} has {desc} with two channel axes ({sizes}); crystalseg reads one grey "
            "channel. Export one channel as grey frames."
        )
    if chans:
        ci = chans[0]
        n = shape[ci]
        if channel is not None:
            if channel >= n:
                raise UnsupportedInputError(
                    f"{what} has {n} channels ({desc}); --channel {channel} does not exist. "
                    f"Pass --channel 0 to {n - 1}."
                )
            fixed[ci] = channel
            grey = f"channel {channel} of {n}"
        elif axes[ci] == "S" and n in (3, 4):
            rgb = True
            grey = "RGBA to grey (BT.709 luma)" if n == 4 else "RGB to grey (BT.709 luma)"
        else:
            extra = [i for i, a in enumerate(axes) if a not in "YX" and i != ci and shape[i] > 1]
            tail, also = "", ""
            if len(extra) > 1:
                sizes = ", ".join(f"{axes[i]}={shape[i]}" for i in extra)
                tail = f" and {len(extra)} more axes ({sizes})"
                also = ", and export one plane per time point"
            raise UnsupportedInputError(
                f"{what} has {n} channels ({desc}){tail}; crystalseg segments one grey channel. "
                f"Pass --channel N (0 to {n - 1}) to pick one{also}."
            )
    elif channel not in (None, 0):
        raise UnsupportedInputError(
            f"{what} has a single channel ({desc}) but --channel {channel} was given; "
            "drop --channel or pass --channel 0."
        )
    candidates = [
        i
        for i, a in enumerate(axes)
        if a not in "YX" and i not in fixed and shape[i] > 1 and not (rgb and a == "S")
    ]
    for i, a in enumerate(axes):
        if a not in "YX" and i not in fixed and shape[i] == 1:
            fixed[i] = 0
    if len(candidates) > 1:
        sizes = ", ".join(f"{axes[i]}={shape[i]}" for i in candidates)
        raise UnsupportedInputError(
            f"{what} has {desc}: {len(candidates)} axes besides y/x ({sizes}) and no single "
            "time axis; crystalseg reads (time, y, x) frames of one channel. Pass --channel N "
            "if one axis is channels, or export one channel/plane per time point."
        )
    time_axis = candidates[0] if candidates else None
    if time_axis is not None and axes[time_axis] != "T":
        level = logging.DEBUG if axes[time_axis] in "QI" else logging.INFO
        logger.log(
            level,
            "%s: no time axis labelled; reading axis %s (%d entries) as time",
            what,
            axes[time_axis],
            shape[time_axis],
        )
    return AxesPlan(axes, shape, time_axis, tuple(sorted(fixed.items())), rgb, grey)


# ---------------------------------------------------------------------------
# Dtypes: uint8 and uint16 pass, other types are narrowed after a check


_FIX_FLOAT = (
    "Convert to 8- or 16-bit integers first (ImageJ: Image > Type > 16-bit; "
    "NumPy: np.round(x * 65535).astype(np.uint16) for values in 0..1)."
)


def output_dtype(src: np.dtype, first_frame: Callable[[], np.ndarray], *, what: str) -> np.dtype:
    """The dtype frames of ``src`` are stored as; raise if they cannot be.

    uint8 and uint16 pass; bool becomes uint8 (0/255); int8 becomes uint8 and
    other integer types uint16, each read block checked to fit (the first frame
    is checked here, so most bad files fail at open); floats and anything else
    are refused, naming the range of the first frame.

    Parameters
    ----------
    src : numpy.dtype
        The source pixels' dtype.
    first_frame : callable
        Returns the first frame; called only when the dtype needs a value check.
    what : str
        The source, as named in error messages.
    """
    src = np.dtype(src)
    if src in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return src
    if src.kind == "b":
        return np.dtype(np.uint8)
    if src.kind in "iu":
        out = np.dtype(np.uint8) if src.itemsize == 1 else np.dtype(np.uint16)
        check_range(first_frame(), out, what=what, first_index=0)
        return out
    if src.kind == "f":
        frame = np.asarray(first_frame())
        finite = frame[np.isfinite(frame)]
        rng = f"{finite.min():.6g} to {finite.max():.6g}" if finite.size else "no finite values"
        raise UnsupportedInputError(
            f"{what} holds {src} frames (first frame ranges {rng}); crystalseg stores uint8 or "
            f"uint16 frames. {_FIX_FLOAT}"
        )
    raise UnsupportedInputError(
        f"{what} holds {src} pixels; expected uint8 or uint16 grey frames. "
        "Export the recording as 8- or 16-bit images."
    )


def check_range(block: np.ndarray, out: np.dtype, *, what: str, first_index: int) -> None:
    """Raise unless every value of an integer ``block`` fits ``out``."""
    if block.size == 0:
        return
    lo, hi = int(block.min()), int(block.max())
    top = int(np.iinfo(out).max)
    if lo < 0 or hi > top:
        flat = block.reshape(block.shape[0], -1) if block.ndim > 1 else block[:, None]
        bad = int(np.flatnonzero((flat.min(axis=1) < 0) | (flat.max(axis=1) > top))[0])
        raise UnsupportedInputError(
            f"{what} frame {first_index + bad} holds {block.dtype} values {lo} to {hi}; expected "
            f"0 to {top} to store as {out}. Rescale the frames to unsigned {8 * out.itemsize}-bit "
            "before import."
        )


def finish_frames(
    block: np.ndarray, plan: AxesPlan, out: np.dtype, *, what: str, first_index: int
) -> np.ndarray:
    """Raw block (time, y, x[, sample]) → grey frames (time, y, x) of dtype ``out``."""
    copy_needed = isinstance(block, np.memmap) or not np.asarray(block).flags.writeable
    block = np.asarray(block)
    if block.dtype.kind == "b":
        block = block.astype(np.uint8) * np.uint8(255)
    elif block.dtype != out:
        check_range(block, out, what=what, first_index=first_index)
        block = block.astype(out)
    elif copy_needed:  # never hand out a view of a memory-mapped file
        block = np.array(block)
    if plan.rgb:
        block = to_grey(block)
    return np.ascontiguousarray(block)


def cap_files(files: list[str], *, limit: int = 20) -> dict[str, Any]:
    """Provenance for a file list: all names when few, else first and last, and the count."""
    kept = files if len(files) <= limit else [files[0], files[-1]]
    return {"files": kept, "file_count": len(files)}


class ArrayFrameSource(FrameSource):
    """A source backed by one array-like with labelled axes (zarr, memmap, TIFF-as-zarr).

    Subclasses open the array, work out its axes and metadata, and call
    :meth:`_setup`; reading indexes only the frames asked for (zarr reads the
    chunks that hold them, a memmap the pages), then applies the plan.
    """

    _array: Any
    _plan: AxesPlan

    def _setup(
        self, array: Any, axes: str, *, channel: int | None, what: str, **plan_kw: Any
    ) -> None:
        self._array = array
        self._what = what
        if 0 in tuple(array.shape):
            raise UnsupportedInputError(
                f"{what} holds no pixels ({_shape_text(tuple(array.shape), axes)}); expected "
                "at least one frame. Check that the recording was saved completely, or export "
                "it again."
            )
        self._plan = plan_axes(tuple(array.shape), axes, channel=channel, what=what, **plan_kw)
        check_frame_shape((self._plan.n_frames, *self._plan.frame_shape), what=what)
        self.dtype = output_dtype(np.dtype(array.dtype), lambda: self._raw(0, 1), what=what)
        self.shape = (self._plan.n_frames, *self._plan.frame_shape)

    def _raw(self, start: int, stop: int) -> np.ndarray:
        return self._plan.arrange(self._array[self._plan.index(start, stop)])

    def _read(self, start: int, stop: int) -> np.ndarray:
        return finish_frames(
            self._raw(start, stop), self._plan, self.dtype, what=self._what, first_index=start
        )

    def _axes_metadata(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "axes": plan.axes,
            "source_shape": list(plan.shape),
            "source_dtype": str(np.dtype(self._array.dtype)),
            "time_axis": plan.time_letter,
            "grey": plan.grey,
        }
