"""The kinetics stage: tracks, growth and nucleation rates, and the chord length
distribution of a measured run, written into its store.

:func:`kinetics_run` is what ``crystalseg kinetics RUN`` calls. It goes through
the stage runner (:mod:`crystalseg.store.stages`): it holds the store's lock,
decides new / resume / finished / out of date (the measurement it read was made
again since) / refuse (other settings, without ``overwrite``), and a rerun that
replaces finished results writes beside them and swaps them in only when
complete.

One pass over the particle table (streamed in blocks by
:func:`crystalseg.measure.results.iter_particles`, one frame at a time) does
every job: the linker gets each frame, the track book
(:class:`crystalseg.kinetics.book.TrackBook`) turns the linked frames into
points, track records and growth fits, the points are written into ``tracks``
block by block, and the chord lengths of each chunk of frames are drawn from the
mask (relabelled exactly as the measurement labelled it) as soon as the chunk's
rows have gone by, written into ``cld`` and marked done. An interrupted run
resumes with the chunks of ``cld`` that are missing; the tracks, which depend on
every frame before them, are linked again. Held in memory: one chunk of frames
(mask and rows), one block of points, the linker's and the book's last few
frames, and a bounded record per open track: memory does not grow with the run
(``benchmarks/bench_kinetics.py --parts scale``). When the stage finishes, the
particle table gets the ``track_id`` column (:func:`write_particle_track_ids`).

Outputs (groups of the store):

* ``tracks``: one row per particle per frame (``frame``, ``label`` join it to
  ``particles``; ``track_id``; drift-corrected position; ``segmentation_suspect``),
  and ``tracks/summary``: one row per track (birth, end, origin, fate).
* ``kinetics``: per frame (births, particles, active tracks) with the headline
  numbers in its attributes (``summary``); ``kinetics/track_growth``,
  ``kinetics/growth_over_time``, ``kinetics/growth_by_size``,
  ``kinetics/births_over_time``.
* ``cld``: dims (time, chord_bin) and (time, chord_class), opened by
  ``xarray.open_zarr(run, group="cld")``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from crystalseg.dims import CHORD_BIN, CHORD_CLASS, MASK, PARTICLE, TIME, TRACK, TRACK_POINT
from crystalseg.errors import ConfigError, RunFormatError, StageStateError
from crystalseg.kinetics.book import POINT_COLUMNS, BookResults, TrackBook
from crystalseg.kinetics.cld import CLD_CLASS_NAMES, CLD_CLASSES_UM, ChordSettings, frame_cld
from crystalseg.kinetics.growth import GrowthSettings
from crystalseg.kinetics.nucleation import NucleationSettings, births_per_frame
from crystalseg.kinetics.tracking import TrackSettings, frames_of, link_stream
from crystalseg.measure.results import PARTICLES_GROUP, iter_particles, size_units
from crystalseg.measure.run import label_mask_frame, read_mask_codes
from crystalseg.measure.settings import MeasureSettings
from crystalseg.store import (
    begin_stage,
    consolidate,
    create_array,
    default_compressor,
    get_array,
    open_run,
    plan_stage,
    read_run_attrs,
    read_table,
    stage_info,
    write_table,
    writing,
)
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.store.stages import StageProgress

log = logging.getLogger(__name__)

STAGE = "kinetics"
TRACKS_GROUP = "tracks"
KINETICS_GROUP = "kinetics"
CLD_GROUP = "cld"
OUTPUTS = (TRACKS_GROUP, KINETICS_GROUP, CLD_GROUP)
#: Rows per block of the points table (its chunk length).
BLOCK_ROWS = 1 << 16

#: ``progress(frames_done, frames_total)``, called as frames go through.
KineticsProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class KineticsSettings:
    """Everything the kinetics stage is asked to do (recorded with its results)."""

    tracking: TrackSettings = field(default_factory=TrackSettings)
    growth: GrowthSettings = field(default_factory=GrowthSettings)
    nucleation: NucleationSettings = field(default_factory=NucleationSettings)
    chords: ChordSettings = field(default_factory=ChordSettings)

    def __post_init__(self) -> None:
        for name, kind in (
            ("tracking", TrackSettings),
            ("growth", GrowthSettings),
            ("nucleation", NucleationSettings),
            ("chords", ChordSettings),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {
            "tracking": self.tracking.to_dict(),
            "growth": self.growth.to_dict(),
            "nucleation": self.nucleation.to_dict(),
            "chords": self.chords.to_dict(),
        }


def kinetics_run(
    run: RunLike,
    *,
    settings: KineticsSettings | None = None,
    overwrite: bool = False,
    frames_per_chunk: int | None = None,
    progress: KineticsProgress | None = None,
) -> dict[str, Any]:
    """Track the crystals of a measured run; write ``tracks``, ``kinetics`` and ``cld``.

    Parameters
    ----------
    run : path of a measured run store
    settings : KineticsSettings, optional
        Linking, growth, nucleation and chord settings (defaults when None).
    overwrite : bool
        Replace kinetics computed with other settings (without it, an error). Results
        of the same settings are returned as they are; results of an earlier
        measurement are replaced by themselves.
    frames_per_chunk : int, optional
        Frames per chunk of ``cld`` (the unit of resumption); default the mask's chunks.
    progress : callable (frames_done, frames_total), optional

    Returns
    -------
    dict
        The headline numbers (:func:`read_kinetics`).

    Raises
    ------
    StageStateError
        The run is not measured, or has kinetics of other settings and ``overwrite``
        is False.
    """
    settings = KineticsSettings() if settings is None else settings
    if not isinstance(settings, KineticsSettings):
        raise ConfigError(f"settings must be a KineticsSettings, got {type(settings).__name__}")
    if frames_per_chunk is not None and int(frames_per_chunk) < 1:
        raise ConfigError(f"frames_per_chunk must be >= 1, got {frames_per_chunk!r}")
    path = run_path(run, resolve=True)
    open_run(path)
    with writing(path, STAGE):
        _kinetics(path, settings, overwrite, frames_per_chunk, progress)
    return read_kinetics(path)


def read_kinetics(run: RunLike) -> dict[str, Any]:
    """The headline numbers of a run's kinetics (attributes of group ``kinetics``):
    growth rates and intervals, nucleation onset and rate, track counts, units.

    Raises
    ------
    StageStateError
        The run has no finished kinetics.
    """
    path = run_path(run)
    info = stage_info(path).get(STAGE)
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if info is None or info.get("status") != "finished" or KINETICS_GROUP not in root:
        raise StageStateError(
            f"run '{path}' has no finished kinetics; run 'crystalseg kinetics {path}' first"
        )
    summary = root[KINETICS_GROUP].attrs.get("summary")
    return dict(json.loads(summary)) if isinstance(summary, str) else {}


def _measurement_identity(path: RunPath) -> dict[str, Any]:
    """What identifies the measurement the kinetics read (when it finished, its settings)."""
    info = stage_info(path).get("measure")
    if info is None or info.get("status") != "finished":
        raise StageStateError(
            f"run '{path}' has no finished measurement; run 'crystalseg measure {path}' first"
        )
    return {"finished": info.get("finished"), "settings": info.get("settings")}


def _kinetics(
    path: RunPath,
    settings: KineticsSettings,
    overwrite: bool,
    frames_per_chunk: int | None,
    progress: KineticsProgress | None,
) -> None:
    measurement = _measurement_identity(path)
    record_settings = {"kinetics": settings.to_dict(), "measurement": measurement}
    info = stage_info(path).get(STAGE) or {}
    previous = info.get("settings") or {}
    outdated = None
    if info and previous.get("measurement") != measurement:
        outdated = "the run was measured again since its kinetics were computed"
        log.info("%s: %s; computing them again", path, outdated)
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    finished = info.get("status") == "finished"
    present = all(name in root for name in OUTPUTS) if finished else CLD_GROUP in root

    def refusal(record: dict[str, Any]) -> str:
        old = (record.get("settings") or {}).get("kinetics") or {}
        new = settings.to_dict()
        changed = sorted(k for k in new if old.get(k) != new[k]) or ["unknown"]
        return (
            f"run '{path}' has kinetics of other settings ({', '.join(changed)}); "
            "replace them with overwrite (crystalseg kinetics --overwrite)"
        )

    plan = plan_stage(
        path,
        STAGE,
        settings=record_settings,
        overwrite=overwrite,
        outputs_present=present,
        matches=lambda record: (record.get("settings") or {}).get("kinetics") == settings.to_dict(),
        refusal=refusal,
        outdated=outdated,
    )
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    mask = get_array(group, MASK, path)
    n, height, width = (int(v) for v in mask.shape)
    if plan.action == "finished":
        log.info("%s already has kinetics of these settings; nothing to do", path)
        particles = zarr.open_group(str(path / PARTICLES_GROUP), mode="r", use_consolidated=False)
        if "track_id" not in particles:  # stopped between finishing and copying it
            write_particle_track_ids(path)
        if progress is not None:
            progress(n, n)
        return
    fpc = max(1, min(int(frames_per_chunk or mask.chunks[0]), n))
    begin: dict[str, Any] = {
        "settings": record_settings,
        "n_frames": n,
        "frames_per_chunk": fpc,
        "replace": plan.replace,
        "outputs": OUTPUTS,
    }
    stage = begin_stage(path, STAGE, restart=plan.action == "new", **begin)
    cld_out = stage.output(CLD_GROUP)
    if not stage.done().any() or not (path / cld_out / "zarr.json").exists():
        if stage.done().any():  # progress recorded but its outputs are gone: start over
            stage = begin_stage(path, STAGE, restart=True, **begin)
        _create_cld(path, cld_out, settings.chords, n, fpc, read_run_attrs(path))
    pixel_size_um = read_run_attrs(path).get("pixel_size_um")
    time_s = np.asarray(get_array(group, "time", path)[:], dtype=np.float64)
    chunks = _ChordChunks(
        path,
        stage,
        mask,
        read_mask_codes(mask),
        MeasureSettings.from_dict(dict((measurement["settings"] or {}).get("measure") or {})),
        settings.chords,
        pixel_size_um,
        n,
        progress,
    )
    tracks_out = stage.output(TRACKS_GROUP)
    points = _PointWriter(
        path,
        tracks_out,
        _particle_rows(path),
        attrs={"pixel_size_um": pixel_size_um, "settings": json.dumps(settings.tracking.to_dict())},
        unit=size_units(pixel_size_um),
    )
    book = TrackBook(
        tracking=settings.tracking,
        growth=settings.growth,
        nucleation=settings.nucleation,
        time_s=time_s,
        frame_shape=(height, width),
        pixel_size_um=pixel_size_um,
        on_points=points.add,
    )
    for linked in link_stream(
        frames_of(iter_particles(path)),
        settings=settings.tracking,
        pixel_size_um=pixel_size_um,
        on_frame=chunks.add,
    ):
        book.add(linked)
    chunks.flush_all()
    points.close()
    summary = _write_tables(path, stage, book.finish(), settings, time_s=time_s, unit=points.unit)
    stage.finish(summary={k: summary[k] for k in ("n_tracks", "onset_s", "length_rate")})
    write_particle_track_ids(path)
    log.info(
        "kinetics of %s: %d tracks, growth %.3g %s, onset %s s",
        path,
        summary["n_tracks"],
        summary["length_rate"],
        summary["growth_units"],
        summary["onset_s"],
    )


# --------------------------------------------------------------------------- cld


def _create_cld(
    path: RunPath,
    out: str,
    chords: ChordSettings,
    n: int,
    fpc: int,
    run_attrs: dict[str, Any],
) -> None:
    """Empty (NaN) arrays of group ``cld``, filled chunk by chunk."""
    pixel_size_um = run_attrs.get("pixel_size_um")
    unit = size_units(pixel_size_um)
    edges = chords.edges()
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    if out in root:
        del root[out]
    group = root.require_group(out)
    group.attrs.update(
        {
            "settings": json.dumps(chords.to_dict()),
            "pixel_size_um": pixel_size_um,
            "weighting": (
                "chords of isotropic random scan lines; each chord weighted by its "
                "particle's edge-correction weight (0: excluded particle); square: "
                "weight x length^2"
            ),
            "chords_per_particle": (
                f"{chords.directions} directions x mean caliper width / {chords.line_spacing_px} px"
            ),
        }
    )
    variables: dict[str, tuple[tuple[str, ...], tuple[int, ...], str, str]] = {
        "count": ((TIME, CHORD_BIN), (n, chords.bins), "weighted chords per bin", "1"),
        "square": (
            (TIME, CHORD_BIN),
            (n, chords.bins),
            "weighted sum of squared chord lengths per bin",
            f"{unit}2",
        ),
        "class_count": (
            (TIME, CHORD_CLASS),
            (n, len(CLD_CLASSES_UM)),
            "weighted chords in FBRM size classes",
            "1",
        ),
        "n_chords": ((TIME,), (n,), "chords drawn through counted particles", "1"),
        "outside": ((TIME,), (n,), "weighted chords outside the bins", "1"),
        "scan_length": ((TIME,), (n,), "length of scan line over the frame", unit),
        "median_number": ((TIME,), (n,), "median chord, number weighted", unit),
        "median_square": ((TIME,), (n,), "median chord, square weighted", unit),
    }
    for name, (dims, shape, long_name, units) in variables.items():
        create_array(
            path,
            f"{out}/{name}",
            dims=dims,
            shape=shape,
            dtype="float64",
            chunks=(fpc, *shape[1:]),
            attrs={"long_name": long_name, "units": units},
            fill_value=np.nan,
        )
    coords = {
        CHORD_BIN: (np.sqrt(edges[:-1] * edges[1:]), "geometric centre of the chord bin"),
        "chord_bin_lower": (edges[:-1], "lower edge of the chord bin"),
        "chord_bin_upper": (edges[1:], "upper edge of the chord bin"),
    }
    for name, (values, long_name) in coords.items():
        arr = create_array(
            path,
            f"{out}/{name}",
            dims=(CHORD_BIN,),
            shape=values.shape,
            dtype="float64",
            chunks=values.shape,
            attrs={"long_name": long_name, "units": unit},
        )
        arr[:] = values
    lower = create_array(
        path,
        f"{out}/{CHORD_CLASS}",
        dims=(CHORD_CLASS,),
        shape=(len(CLD_CLASSES_UM),),
        dtype="float64",
        chunks=(len(CLD_CLASSES_UM),),
        attrs={
            "long_name": "lower edge of the FBRM size class",
            "units": "um",
            "names": list(CLD_CLASS_NAMES),
            "upper": [hi for _, hi in CLD_CLASSES_UM],
        },
    )
    lower[:] = [lo for lo, _ in CLD_CLASSES_UM]
    time = create_array(
        path,
        f"{out}/{TIME}",
        dims=(TIME,),
        shape=(n,),
        dtype="float64",
        chunks=(n,),
        attrs={"long_name": "time since first frame", "units": "s"},
    )
    source = get_array(zarr.open_group(str(path), mode="r", use_consolidated=False), TIME, path)
    time[:] = np.asarray(source[:], dtype=np.float64)


class _ChordChunks:
    """Draws the chords of each pending chunk of frames as its particle rows go by."""

    def __init__(
        self,
        path: RunPath,
        stage: StageProgress,
        mask: zarr.Array,
        codes: tuple[str, ...],
        measure: MeasureSettings,
        chords: ChordSettings,
        pixel_size_um: float | None,
        n: int,
        progress: KineticsProgress | None,
    ) -> None:
        self.path, self.stage, self.mask, self.codes = path, stage, mask, codes
        self.measure, self.chords, self.pixel_size_um = measure, chords, pixel_size_um
        self.n, self.progress = n, progress
        self.pending = list(stage.pending_chunks())
        self.buffer: dict[int, pd.DataFrame] = {}
        self.group = zarr.open_group(
            str(path / stage.output(CLD_GROUP)), mode="r+", use_consolidated=False
        )
        self.frames_seen = 0

    def add(self, table: pd.DataFrame) -> None:
        frame = int(table["frame"].iloc[0])
        while self.pending and frame >= self.pending[0][1]:
            self._flush(*self.pending.pop(0))
        if self.pending and self.pending[0][0] <= frame:
            self.buffer[frame] = table[["label", "weight"]]
        self.frames_seen = frame + 1
        if self.progress is not None:
            self.progress(self.frames_seen, self.n)

    def flush_all(self) -> None:
        while self.pending:
            self._flush(*self.pending.pop(0))
        if self.progress is not None:
            self.progress(self.n, self.n)

    def _flush(self, start: int, stop: int) -> None:
        masks = np.asarray(self.mask[start:stop])
        results = []
        for i, frame_mask in enumerate(masks):
            frame = start + i
            labels = label_mask_frame(frame_mask, settings=self.measure, codes=self.codes)
            weights = np.zeros(int(labels.max()) + 1, dtype=np.float64)
            table = self.buffer.pop(frame, None)
            if table is not None and len(table):
                label = table["label"].to_numpy(dtype=np.int64)
                if label.max() >= len(weights):
                    raise RunFormatError(
                        f"frame {frame} of '{self.path}': the particle table names label "
                        f"{label.max()} but the mask has {len(weights) - 1} particles; the "
                        "mask changed since it was measured. Measure the run again"
                    )
                weights[label] = table["weight"].to_numpy(dtype=np.float64)
            rng = np.random.default_rng([self.chords.seed, frame])
            results.append(
                frame_cld(
                    labels,
                    weights=weights,
                    settings=self.chords,
                    pixel_size_um=self.pixel_size_um,
                    rng=rng,
                )
            )
        g = {name: get_array(self.group, name, self.path) for name in self.group.array_keys()}
        g["count"][start:stop] = np.stack([r.count for r in results])
        g["square"][start:stop] = np.stack([r.square for r in results])
        g["class_count"][start:stop] = np.stack([r.class_count for r in results])
        for name in ("n_chords", "outside", "scan_length", "median_number", "median_square"):
            g[name][start:stop] = np.array([getattr(r, name) for r in results], dtype=np.float64)
        self.stage.mark_done(start, stop)


# --------------------------------------------------------------------------- tables


def _particle_rows(path: RunPath) -> int:
    """Rows of the run's particle table (the points table has one per row)."""
    group = zarr.open_group(str(path / PARTICLES_GROUP), mode="r", use_consolidated=False)
    return int(get_array(group, "frame", path).shape[0])


class _PointWriter:
    """Writes the points table (group ``tracks``) block by block as frames go by."""

    def __init__(
        self,
        path: RunPath,
        out: str,
        total: int,
        *,
        attrs: dict[str, Any],
        unit: str,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        self.path, self.total, self.block_rows, self.unit = path, total, block_rows, unit
        root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        if out in root:
            del root[out]
        group = root.create_group(out)
        group.attrs.update({**attrs, "columns": list(POINT_COLUMNS)})
        column_attrs = _point_attrs(unit)
        self.arrays = {}
        for name, dtype in POINT_COLUMNS.items():
            arr = group.create_array(
                name,
                shape=(total,),
                chunks=(max(1, min(total, block_rows)),),
                dtype=dtype,
                fill_value=-1 if name == "track_id" else 0,
                dimension_names=(TRACK_POINT,),
                compressors=default_compressor(),
            )
            arr.attrs.update(column_attrs.get(name, {}))
            self.arrays[name] = arr
        self.buffer: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.offset = 0

    def add(self, points: dict[str, np.ndarray]) -> None:
        self.buffer.append(points)
        self.buffered += len(points["frame"])
        if self.buffered >= self.block_rows:
            self._write()

    def close(self) -> None:
        self._write()
        if self.offset != self.total:
            raise RunFormatError(
                f"the particle table of '{self.path}' has {self.total} rows but {self.offset} "
                "went through the tracking; it changed while the kinetics ran. Run "
                "'crystalseg kinetics' again"
            )

    def _write(self) -> None:
        if not self.buffer:
            return
        n = self.buffered
        if self.offset + n > self.total:
            raise RunFormatError(
                f"the particle table of '{self.path}' has {self.total} rows but more went "
                "through the tracking; measure the run again"
            )
        for name, arr in self.arrays.items():
            arr[self.offset : self.offset + n] = np.concatenate([b[name] for b in self.buffer])
        self.offset += n
        self.buffer, self.buffered = [], 0


def _point_attrs(unit: str) -> dict[str, dict[str, str]]:
    length = {"units": unit}
    return {
        "time_s": {"units": "s"},
        "track_id": {"long_name": "track of the particle (0-based)"},
        "x_px": {"units": "px", "long_name": "centroid column"},
        "y_px": {"units": "px", "long_name": "centroid row"},
        "drift_x_px": {"units": "px", "long_name": "drift of the field since frame 0"},
        "drift_y_px": {"units": "px", "long_name": "drift of the field since frame 0"},
        "length": length,
        "width": length,
        "ecd": length,
        "usable": {"long_name": "whole and convex: enters the growth fits"},
        "segmentation_suspect": {"long_name": "area jumped from the track's previous frame"},
    }


def _write_tables(
    path: RunPath,
    stage: StageProgress,
    results: BookResults,
    settings: KineticsSettings,
    *,
    time_s: np.ndarray,
    unit: str,
) -> dict[str, Any]:
    """Write the track table and group ``kinetics`` from a finished book."""
    n = len(time_s)
    summary: dict[str, Any] = {
        **results.summary,
        "growth_units": f"{unit}/min",
        "rate_units": "1/(mm2 min)",
        "interval": "95 %; growth: bootstrap over tracks; onset: likelihood ratio; "
        "rates: exact Poisson",
    }
    summary = json.loads(json.dumps(summary, default=float))
    tracks_out, kinetics_out = stage.output(TRACKS_GROUP), stage.output(KINETICS_GROUP)
    write_table(path, f"{tracks_out}/summary", results.tracks, dim=TRACK)
    per_frame = pd.DataFrame(
        {
            "frame": np.arange(n, dtype=np.int64),
            "time_s": time_s,
            "particles": results.particles_per_frame,
            "births": births_per_frame(
                results.tracks, n, min_track_frames=settings.nucleation.min_track_frames
            ),
        }
    )
    write_table(
        path,
        kinetics_out,
        per_frame,
        attrs={"summary": json.dumps(summary), "settings": json.dumps(settings.to_dict())},
        dim=TIME,
    )
    per_track = results.track_growth
    rate_units = {"units": f"{unit}/min"}
    write_table(
        path,
        f"{kinetics_out}/track_growth",
        per_track,
        dim=TRACK,
        column_attrs={c: rate_units for c in per_track.columns if "_rate" in c},
    )
    write_table(path, f"{kinetics_out}/growth_over_time", results.growth_over_time, dim="window")
    write_table(path, f"{kinetics_out}/growth_by_size", results.growth_by_size, dim="size_class")
    write_table(path, f"{kinetics_out}/births_over_time", results.births_over_time, dim="window")
    return summary


def write_particle_track_ids(run: RunLike) -> None:
    """Copy the finished tracks' ``track_id`` into the particle table as one more column.

    The points table has one row per particle row, in the same order, so the column
    is copied block by block (chunked like the particle table's columns) and named
    in the table's ``columns``: :func:`crystalseg.store.read_table` and
    ``xarray.open_zarr(run, group="particles")`` read it. Rows that no track holds
    are -1. A new measurement writes the particle table again, without it.
    """
    path = run_path(run)
    source = get_array(
        zarr.open_group(str(path / TRACKS_GROUP), mode="r", use_consolidated=False),
        "track_id",
        path,
    )
    group = zarr.open_group(str(path / PARTICLES_GROUP), mode="r+", use_consolidated=False)
    frame = get_array(group, "frame", path)
    total = int(frame.shape[0])
    if int(source.shape[0]) != total:
        raise RunFormatError(
            f"run '{path}': the tracks have {source.shape[0]} rows, the particle table "
            f"{total}; the run was measured again since. Run 'crystalseg kinetics {path}'"
        )
    block = int(frame.chunks[0]) or 1
    out = group.create_array(
        "track_id",
        shape=(total,),
        chunks=(max(1, block),),
        dtype=np.int64,
        fill_value=-1,
        dimension_names=(PARTICLE,),
        compressors=default_compressor(),
        overwrite=True,
    )
    out.attrs.update({"long_name": "track of the particle (kinetics; -1: none)", "units": "1"})
    for lo in range(0, total, block):
        out[lo : lo + block] = np.asarray(source[lo : lo + block])
    named = group.attrs.get("columns", [])
    columns = [str(c) for c in named if c != "track_id"] if isinstance(named, list) else []
    group.attrs["columns"] = [*columns, "track_id"]
    consolidate(path)


def format_kinetics(summary: dict[str, Any], run: RunLike) -> str:
    """The headline numbers of a run's kinetics as the CLI prints them (``crystalseg
    kinetics``, ``measure --kinetics``): tracks, growth rate, onset, nucleation rate."""
    unit = summary.get("growth_units", "um/min")

    def interval(key: str) -> str:
        low, high = summary.get(f"{key}_low"), summary.get(f"{key}_high")
        if low is None or high is None or low != low or high != high:
            return ""
        return f" (95 % {low:.3g} to {high:.3g})"

    lines = [
        f"{summary['n_tracks']} tracks; {summary['n_tracks_fitted']} with a growth rate",
        f"growth rate (length): {summary['length_rate']:.3g} {unit}{interval('length_rate')}",
    ]
    onset = summary.get("onset_s")
    if onset is None or onset != onset:
        lines.append("nucleation onset: none found (no sustained rise of new crystals)")
    else:
        low, high = summary["onset_low_s"], summary["onset_high_s"]
        lines.append(f"nucleation onset: {onset:.0f} s (95 % {low:.0f} to {high:.0f} s)")
    rate = summary["rate_per_mm2_min"]
    if rate is None or rate != rate:
        lines.append(
            f"nucleation rate: {summary['births']} births; per mm² only with a pixel size "
            f"(crystalseg calibrate {run} --pixel-size UM)"
        )
    else:
        lines.append(f"nucleation rate: {rate:.3g} per mm² per min{interval('rate_per_mm2_min')}")
    return "\n".join(lines)


def read_tracks(run: RunLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The track points (one row per particle per frame) and the track table of a run."""
    read_kinetics(run)
    path = run_path(run)
    return read_table(path, TRACKS_GROUP), read_table(path, f"{TRACKS_GROUP}/summary")


def open_cld(run: RunLike) -> xr.Dataset:
    """Group ``cld`` of a run with kinetics, opened lazily."""
    read_kinetics(run)
    return xr.open_zarr(str(run), group=CLD_GROUP, consolidated=None)
