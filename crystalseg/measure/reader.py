"""One reader of a measured run: everything ``crystalseg measure`` wrote, read back once.

:class:`MeasuredRun` opens a run store, checks that its measurement finished, and
gives what the figures, overlays, exports, the napari plugin and a notebook read:

* :attr:`~MeasuredRun.calibration`: the pixel size the run was measured with, the
  frame times in seconds and the frame shape (:class:`Calibration`);
* :attr:`~MeasuredRun.psd` (group ``psd``) and :attr:`~MeasuredRun.windows` (group
  ``psd_window`` when the run was measured with ``window``), lazily;
* the particle table whole or streamed by frame range
  (:meth:`~MeasuredRun.particles`, :meth:`~MeasuredRun.iter_particles`);
* statistics per frame (:meth:`~MeasuredRun.statistics`), counts per frame and
  exclusions by reason (:meth:`~MeasuredRun.frame_counts`,
  :meth:`~MeasuredRun.exclusions`);
* the instance labels of a frame exactly as measured, with the table's verdict on
  each label and the pieces the measurement dropped before measuring
  (:meth:`~MeasuredRun.frame`, :class:`~crystalseg.measure.frame_labels.MeasuredFrame`);
* the measurement settings and provenance, and the label and unit of the size a
  distribution is over (:data:`SIZE_NAMES`, :func:`size_label`), declared here once.

Nothing is measured again. The labels of a frame are made from the stored mask with
the recorded settings (:func:`crystalseg.measure.run.label_mask_frame`, the call the
measurement made) and checked against the table: a label set or pixel count that
disagrees (the mask changed, another crystalseg labelled it) is an error, not a
silent mismatch.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.classes import boundary_class
from crystalseg.dims import IMAGE, MASK, TIME
from crystalseg.errors import ConfigError, RunFormatError, StageStateError
from crystalseg.measure.frame_labels import DROPPED_REASONS, MeasuredFrame, dropped_pieces
from crystalseg.measure.instances import crystal_classes
from crystalseg.measure.results import (
    EXCLUDED_REASONS,
    PARTICLE_COLUMNS,
    PARTICLES_GROUP,
    PSD_GROUP,
    STAGE,
    WINDOW_GROUP,
    frame_counts,
    size_units,
)
from crystalseg.measure.run import (
    label_mask_frame,
    measured_mask_changed,
    measurement_outdated,
    read_mask_codes,
)
from crystalseg.measure.settings import MeasureSettings
from crystalseg.store import get_array, read_run_attrs, stage_info
from crystalseg.store.core import node_attrs, open_group
from crystalseg.store.location import RunLike, run_path

log = logging.getLogger(__name__)

#: What a user reads for each size column, in axis labels, colour bars and legends.
SIZE_NAMES: dict[str, str] = {
    "ecd": "ECD",
    "equivalent_diameter_area": "ECD",
    "feret_diameter_max": "length, max Feret diameter",
    "feret_diameter_min": "width, min Feret diameter",
    "axis_major_length": "major axis",
    "axis_minor_length": "minor axis",
}
#: Unit symbols as printed (CF ``units`` -> text).
UNIT_TEXT: dict[str, str] = {"um": "µm", "µm": "µm", "micrometre": "µm", "px": "px"}


_BLOCK = 1 << 20


def unit_text(units: str | None) -> str:
    """The printed symbol of a size unit: ``"µm"`` for ``"um"``, ``"px"`` for None."""
    return UNIT_TEXT.get(str(units), str(units or "px"))


def size_label(column: str, units: str | None) -> str:
    """Label of a size axis: ``"ECD (µm)"``, ``"length, max Feret diameter (px)"``.

    Parameters
    ----------
    column : a size column of the particle table (``MeasureSettings.size_column``)
    units : its CF units (``"um"``, ``"px"``); None for px
    """
    return f"{SIZE_NAMES.get(column, column)} ({unit_text(units)})"


@dataclass(frozen=True)
class Calibration:
    """How the numbers of a measured run map to the world.

    Attributes
    ----------
    pixel_size_um : float or None
        Micrometres per pixel the run was measured with; None: sizes are in px.
    time_s : ndarray of float64, shape (time,)
        Time of each frame in seconds since the first frame (``time_units``).
    frame_shape_px : (int, int)
        Height and width of a frame in pixels.
    """

    pixel_size_um: float | None
    time_s: np.ndarray
    frame_shape_px: tuple[int, int]

    @property
    def size_units(self) -> str:
        """``"um"`` when calibrated, ``"px"`` otherwise (the CF units of every size)."""
        return size_units(self.pixel_size_um)

    @property
    def time_units(self) -> str:
        """Units of :attr:`time_s`: always ``"s"``."""
        return "s"

    @property
    def n_frames(self) -> int:
        """Frames of the run."""
        return len(self.time_s)


class MeasuredRun:
    """A measured run store, opened once for reading its results.

    Parameters
    ----------
    run : path of the run store

    Raises
    ------
    InputNotFoundError, RunFormatError
        No run store at ``run``; or it is marked measured but lacks group ``psd``.
    StageStateError
        The run has not been measured, or its measurement is unfinished.

    Notes
    -----
    Opening reads the store's attributes only; the PSD opens lazily and the
    particle table is read in blocks, so memory stays flat whatever the run's length.
    A measurement that no longer describes the run (mask made again, calibration
    changed) still opens: :attr:`outdated` says why; :meth:`frame` refuses a mask
    made again, since its labels are not the ones measured.

    Examples
    --------
    >>> run = MeasuredRun("run.zarr")  # doctest: +SKIP
    >>> run.statistics()[["time_s", "count_kept", "d50_number"]]  # doctest: +SKIP
    >>> frame = run.frame(-1)  # labels as measured, kept, sizes  # doctest: +SKIP
    """

    def __init__(self, run: RunLike) -> None:
        path = run_path(run)
        self.path = path
        self.name = path.name
        attrs = read_run_attrs(path)  # exists, is a run store
        self._root = open_group(path)
        info = stage_info(path).get(STAGE)
        if info is None:
            raise StageStateError(
                f"run '{path}' has not been measured; run 'crystalseg measure {path}' first"
                + ("" if MASK in self._root else " (it segments the run too)")
            )
        if info.get("status") != "finished":
            done, total = info.get("frames_done", 0), info.get("frames_total", "?")
            raise StageStateError(
                f"the measurement of run '{path}' is unfinished ({done} of {total} frames); "
                f"run 'crystalseg measure {path}' again to finish it"
            )
        if PSD_GROUP not in self._root:
            raise RunFormatError(
                f"run '{path}' is marked measured but has no group '{PSD_GROUP}'; "
                f"run 'crystalseg measure {path} --overwrite'"
            )
        self.provenance: dict[str, Any] = dict(info)
        recorded = info.get("settings") or {}
        self.settings = MeasureSettings.from_dict(recorded.get("measure") or {})
        self._run_attrs = attrs

    # ----------------------------------------------------------------- what it holds

    @cached_property
    def psd(self) -> xr.Dataset:
        """Group ``psd``, opened lazily: dims (time, size_bin) and (time, length_bin,
        width_bin), CF attributes, the measurement settings in its attributes."""
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=RuntimeWarning, message="Failed to open Zarr"
            )
            return xr.open_zarr(str(self.path), group=PSD_GROUP, consolidated=None)

    @cached_property
    def windows(self) -> xr.Dataset | None:
        """Group ``psd_window`` (pooled windows, dim time: one per window), lazily;
        None when the run was measured without ``window``."""
        if not (self.path / WINDOW_GROUP / "zarr.json").exists():
            return None
        return xr.open_zarr(str(self.path), group=WINDOW_GROUP, consolidated=False)

    @cached_property
    def calibration(self) -> Calibration:
        """Pixel size as measured (not as set since), frame times, frame shape."""
        attrs = self.psd.attrs
        if "pixel_size_um" in attrs:
            pixel = attrs["pixel_size_um"]
        else:  # runs measured before psd recorded it
            pixel = self._run_attrs.get("pixel_size_um")
        time = np.asarray(self.psd[TIME].values)
        if np.issubdtype(time.dtype, np.datetime64):
            time_s = (time - time[0]) / np.timedelta64(1, "s") if len(time) else time
        else:
            time_s = time
        shape = attrs.get("frame_shape_px")
        if not shape:
            image = get_array(self._root, IMAGE, self.path)
            shape = list(image.shape[1:])
        return Calibration(
            pixel_size_um=None if pixel is None else float(pixel),
            time_s=np.asarray(time_s, dtype=np.float64),
            frame_shape_px=(int(shape[0]), int(shape[1])),
        )

    @property
    def n_frames(self) -> int:
        """Frames of the run (of ``psd``)."""
        return self.calibration.n_frames

    @property
    def size_column(self) -> str:
        """The particle column the distributions are over (``settings.size_column``)."""
        return str(self.psd.attrs.get("size_column", self.settings.size_column))

    @property
    def size_units(self) -> str:
        """``"um"`` or ``"px"``: the units of every size of the results."""
        return self.calibration.size_units

    @property
    def size_label(self) -> str:
        """``"ECD (µm)"``: the label of the distributions' size axis."""
        return size_label(self.size_column, self.size_units)

    @cached_property
    def outdated(self) -> str | None:
        """Why the measurement no longer describes the run (mask made again, pixel size
        or frame times changed), or None when it still does."""
        return measurement_outdated(self.path)

    @property
    def mask_attrs(self) -> dict[str, Any]:
        """Attributes of the stored mask (class codes, the model that made it); {} if none."""
        return node_attrs(self._root[MASK]) if MASK in self._root else {}

    @property
    def has_particles(self) -> bool:
        """Whether the store holds the particle table (group ``particles``)."""
        return isinstance(self._root.get(PARTICLES_GROUP), zarr.Group)

    # ----------------------------------------------------------------- the particle table

    @cached_property
    def _table(self) -> zarr.Group:
        node = self._root.get(PARTICLES_GROUP)
        if not isinstance(node, zarr.Group):
            raise RunFormatError(
                f"run '{self.path}' is measured but has no particle table '{PARTICLES_GROUP}'; "
                f"run 'crystalseg measure {self.path} --overwrite'"
            )
        return node

    @property
    def columns(self) -> list[str]:
        """Columns of the particle table as stored, in order."""
        order = node_attrs(self._table).get("columns")
        if isinstance(order, list):
            return [str(c) for c in order if isinstance(self._table.get(str(c)), zarr.Array)]
        return [name for name, _ in self._table.arrays()]

    def _column(self, name: str) -> zarr.Array:
        node = self._table.get(name)
        if not isinstance(node, zarr.Array):
            raise RunFormatError(f"the particle table of '{self.path}' has no array '{name}'")
        return node

    @property
    def n_particles(self) -> int:
        """Rows of the particle table (every particle found, counted or not)."""
        return int(self._column("frame").shape[0])

    @cached_property
    def frame_offsets(self) -> np.ndarray:
        """First row of each frame in the table, shape (n_frames + 1,): frame ``i`` is
        rows ``offsets[i]:offsets[i + 1]`` (the table is in frame order)."""
        frame = self._column("frame")
        counts = np.zeros(self.n_frames, dtype=np.int64)
        last = -1
        for lo in range(0, int(frame.shape[0]), _BLOCK):
            values = np.asarray(frame[lo : lo + _BLOCK], dtype=np.int64)
            if len(values) == 0:
                continue
            if values[0] < last or np.any(np.diff(values) < 0) or values[-1] >= self.n_frames:
                raise RunFormatError(
                    f"the particles table of '{self.path}' is not in frame order; "
                    f"run 'crystalseg measure {self.path} --overwrite'"
                )
            last = int(values[-1])
            counts += np.bincount(values, minlength=self.n_frames)
        return np.concatenate([[0], np.cumsum(counts)])

    def particle_counts(self) -> np.ndarray:
        """Rows of the table per frame (particles found, counted or not), shape (time,)."""
        return np.diff(self.frame_offsets)

    def _wanted(self, columns: Sequence[str] | None) -> list[str]:
        stored = self.columns
        if columns is None:
            # Tables written before a column existed (``confidence``) read it as NaN.
            return [*PARTICLE_COLUMNS, *(c for c in stored if c not in PARTICLE_COLUMNS)]
        wanted = list(columns)
        missing = [c for c in wanted if c not in stored and c not in PARTICLE_COLUMNS]
        if missing:
            raise ConfigError(
                f"the particle table of '{self.path}' has no column(s) {missing}; "
                f"choose from {stored}"
            )
        return wanted

    def _rows(self, frames: int | range | slice | None) -> tuple[int, int]:
        """Table rows ``lo:hi`` of a frame, a range of frames or all frames."""
        if frames is None:
            return 0, self.n_particles
        if isinstance(frames, range | slice):
            if isinstance(frames, slice):
                start, stop, step = frames.indices(self.n_frames)
            else:
                start, stop, step = frames.start, frames.stop, frames.step
            if step != 1 or not 0 <= start <= stop <= self.n_frames:
                raise ConfigError(
                    f"frames {frames!r} is not a range of consecutive frames within the "
                    f"run's {self.n_frames}; give e.g. range(0, {self.n_frames})"
                )
            return int(self.frame_offsets[start]), int(self.frame_offsets[stop])
        index = frame_position(frames, self.n_frames)
        return int(self.frame_offsets[index]), int(self.frame_offsets[index + 1])

    def iter_particles(
        self,
        *,
        columns: Sequence[str] | None = None,
        frames: int | range | slice | None = None,
        rows: int = 1 << 18,
    ) -> Iterator[pd.DataFrame]:
        """The particle table in blocks of at most ``rows`` rows, in frame order.

        Parameters
        ----------
        columns : sequence of str, optional
            Columns to read (default every column of
            :data:`~crystalseg.measure.results.PARTICLE_COLUMNS`; a column older
            tables lack reads as NaN).
        frames : int, range or slice, optional
            One frame (negative counts from the end) or consecutive frames
            (``range(100, 200)``); default all.
        rows : int
            Rows per block (memory is one block).

        Yields
        ------
        DataFrame
            Text columns (``excluded_reason``) as Python strings.

        Raises
        ------
        ConfigError
            A column the table does not hold, a frame outside the run.
        """
        wanted = self._wanted(columns)
        lo, hi = self._rows(frames)
        arrays = {c: self._table.get(c) for c in wanted}
        for start in range(lo, max(hi, lo + 1), rows):
            stop = min(start + rows, hi)
            block: dict[str, np.ndarray] = {}
            for name, arr in arrays.items():
                if not isinstance(arr, zarr.Array):
                    block[name] = np.full(stop - start, np.nan)
                    continue
                values = np.asarray(arr[start:stop])
                block[name] = values.astype(object) if values.dtype.kind in "TU" else values
            yield pd.DataFrame(block)

    def particles(
        self,
        *,
        columns: Sequence[str] | None = None,
        frames: int | range | slice | None = None,
    ) -> pd.DataFrame:
        """The particle table (or its rows of ``frames``) as one DataFrame; see
        :meth:`iter_particles`."""
        blocks = list(self.iter_particles(columns=columns, frames=frames, rows=1 << 62))
        return blocks[0].reset_index(drop=True)

    # ----------------------------------------------------------------- per frame

    def statistics(self, *, windows: bool = False) -> pd.DataFrame:
        """Every per-frame variable of ``psd`` (or per window of ``psd_window``).

        Parameters
        ----------
        windows : bool
            Read the pooled windows (group ``psd_window``) instead of the frames.

        Returns
        -------
        DataFrame
            Index ``frame`` (or ``window``), columns ``time_s`` (seconds since the
            first frame; a window's middle) then every variable of dims (time,):
            counts, D-values and their bounds, moment means, ... Their units are the
            ``units`` attributes of the variables (``run.psd[name].attrs``).

        Raises
        ------
        StageStateError
            ``windows`` asked of a run measured without a window.
        """
        ds = self.windows if windows else self.psd
        if ds is None:
            raise StageStateError(
                f"run '{self.path}' has no pooled windows; measure it with a window "
                f"('crystalseg measure {self.path} --window 60s')"
            )
        names = [str(n) for n, v in ds.data_vars.items() if v.dims == (TIME,)]
        small = ds[names].load()
        time_s = np.asarray(ds[TIME].values) if windows else self.calibration.time_s
        return pd.DataFrame(
            {"time_s": np.asarray(time_s, dtype=np.float64)} | {n: small[n].values for n in names},
            index=pd.RangeIndex(len(time_s), name="window" if windows else "frame"),
        )

    def frame_counts(self) -> pd.DataFrame:
        """Per frame, particles counted and excluded by reason: they add up to those found
        (:func:`crystalseg.measure.results.frame_counts`)."""
        names = [n for n in ("count_kept", "count_detected") if n in self.psd]
        names += [n for n in map(str, self.psd.data_vars) if n.startswith("count_excluded_")]
        small = self.psd[names].load()
        particles = None
        if not any(n.startswith("count_excluded_") for n in names) and self.has_particles:
            particles = self.particles(columns=["frame", "excluded_reason"])
        return frame_counts(small, particles)

    def exclusions(self) -> dict[str, int]:
        """Particles of the whole run by why they are not counted, read from the table:
        ``{"counted": ..., "edge": ..., "too_small": ...}`` (reasons that occur)."""
        counts: Counter[str] = Counter()
        for block in self.iter_particles(columns=["excluded_reason"], rows=_BLOCK):
            for reason, n in block["excluded_reason"].astype(str).value_counts().items():
                counts[str(reason) or "counted"] += int(n)
        order = ["counted", *EXCLUDED_REASONS[1:]]
        known = [r for r in order if r in counts]
        return {r: counts[r] for r in [*known, *sorted(set(counts) - set(known))]}

    @cached_property
    def size_range(self) -> tuple[float, float] | None:
        """Smallest and largest positive size (``size_column``) of the counted particles
        of the whole run; None when none was counted."""
        lo, hi = math.inf, -math.inf
        for block in self.iter_particles(columns=["kept", self.size_column], rows=_BLOCK):
            s = block[self.size_column].to_numpy(dtype=np.float64)[block["kept"].to_numpy(bool)]
            s = s[np.isfinite(s) & (s > 0)]
            if len(s):
                lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        return (lo, hi) if math.isfinite(lo) else None

    # ----------------------------------------------------------------- labels

    @cached_property
    def _label_source(self) -> tuple[zarr.Array, zarr.Array, tuple[str, ...]]:
        """Image, mask and class codes, after checking that the mask is the one measured."""
        if MASK not in self._root:
            raise StageStateError(
                f"run '{self.path}' has no mask, so no labels; run 'crystalseg measure "
                f"{self.path} --overwrite' (it segments the run)"
            )
        if measured_mask_changed(self.path):
            raise StageStateError(
                f"the mask of run '{self.path}' was made again after it was measured; "
                f"run 'crystalseg measure {self.path}' to measure the new mask"
            )
        image = get_array(self._root, IMAGE, self.path)
        mask = get_array(self._root, MASK, self.path)
        if int(image.shape[0]) != int(mask.shape[0]) or int(mask.shape[0]) != self.n_frames:
            raise RunFormatError(
                f"run '{self.path}' has {image.shape[0]} frames but a mask of {mask.shape[0]} "
                f"and {self.n_frames} measured; run 'crystalseg measure {self.path} "
                "--overwrite' after segmenting it again"
            )
        return image, mask, read_mask_codes(mask)

    def image(self, frame: int) -> np.ndarray:
        """The raw frame ``frame`` (negative from the end), shape (y, x)."""
        image, _, _ = self._label_source
        return np.asarray(image[frame_position(frame, self.n_frames)])

    def frame(self, frame: int) -> MeasuredFrame:
        """A frame's instance labels exactly as measured, with each label's row verdict.

        Parameters
        ----------
        frame : int
            Frame index; negative counts from the end.

        Returns
        -------
        MeasuredFrame

        Raises
        ------
        StageStateError
            No mask, a mask made again since the measurement, or labels that do not
            match the frame's rows of the table (label ids or pixel areas).
        ConfigError
            Frame out of range.
        """
        image_arr, mask_arr, codes = self._label_source
        index = frame_position(frame, self.n_frames)
        mask = np.asarray(mask_arr[index])
        labels = label_mask_frame(mask, settings=self.settings, codes=codes)
        rows = self.particles(
            columns=["label", "area", "kept", "excluded_reason", self.size_column], frames=index
        )
        n = int(labels.max(initial=0))
        ids = rows["label"].to_numpy(dtype=np.int64)
        pixels = np.bincount(labels.ravel(), minlength=n + 1)
        pixel = self.calibration.pixel_size_um
        scale = 1.0 if pixel is None else float(pixel) ** 2
        if not (
            np.array_equal(np.sort(ids), np.arange(1, n + 1))
            and np.allclose(pixels[ids] * scale, rows["area"].to_numpy(np.float64), rtol=1e-6)
        ):
            raise StageStateError(
                f"frame {index} of '{self.path}' labels into {n} particles that do not match "
                f"its {len(rows)} rows in the particles table; run 'crystalseg measure "
                f"{self.path} --overwrite' to measure the mask as it is"
            )
        kept = np.zeros(n + 1, dtype=bool)
        kept[ids] = rows["kept"].to_numpy(dtype=bool)
        size = np.full(n + 1, np.nan)
        size[ids] = rows[self.size_column].to_numpy(dtype=np.float64)
        reason = np.full(n + 1, "", dtype=object)
        reason[ids] = [str(r) for r in rows["excluded_reason"]]
        dropped, dropped_reasons = dropped_pieces(
            mask,
            labels,
            measured=crystal_classes(codes, classes=self.settings.classes),
            boundary=boundary_class(codes),
            min_area_px=self.settings.min_area_px,
        )
        m = len(dropped_reasons)
        if m:
            labels = np.where(dropped > 0, dropped + n, labels).astype(np.int32)
            kept = np.concatenate([kept, np.zeros(m, dtype=bool)])
            size = np.concatenate([size, np.full(m, np.nan)])
            reason = np.concatenate([reason, np.asarray(dropped_reasons, dtype=object)])
        return MeasuredFrame(
            index=index,
            time_s=float(self.calibration.time_s[index]),
            image=np.asarray(image_arr[index]),
            labels=labels.astype(np.int32, copy=False),
            n_particles=n,
            kept=kept,
            size=size,
            reason=reason,
        )

    def __repr__(self) -> str:
        return (
            f"MeasuredRun('{self.path}': {self.n_frames} frames, sizes in "
            f"{self.size_units}, measured {self.provenance.get('finished', '?')})"
        )


def frame_position(frame: int, n_frames: int) -> int:
    """A frame index as a position 0..n_frames-1; negative indices count from the end.

    Raises
    ------
    ConfigError
        ``frame`` is not an integer or lies outside ``-n_frames .. n_frames - 1``.
    """
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise ConfigError(f"frame index {frame!r} is not an integer; give e.g. 0, 50 or -1")
    if not -n_frames <= frame < n_frames:
        raise ConfigError(
            f"frame {frame} is out of range: the run has {n_frames} frames, so valid indices "
            f"are 0..{n_frames - 1} (or -{n_frames}..-1 counting from the end)"
        )
    return int(frame) % n_frames


def read_settings_json(ds: xr.Dataset) -> dict[str, Any]:
    """The ``measure_settings`` attribute of a ``psd`` Dataset as a dict ({} if absent)."""
    raw = ds.attrs.get("measure_settings")
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return dict(raw) if isinstance(raw, dict) else {}


__all__ = [
    "DROPPED_REASONS",
    "SIZE_NAMES",
    "UNIT_TEXT",
    "Calibration",
    "MeasuredFrame",
    "MeasuredRun",
    "dropped_pieces",
    "frame_position",
    "read_settings_json",
    "size_label",
    "unit_text",
]
