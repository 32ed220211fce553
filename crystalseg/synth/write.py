"""Write a synthetic run into a run store (and optionally training pairs as PNG).

The frames stream one store chunk at a time, so memory stays flat however many
frames the run has; only the ground-truth tables (a few numbers per visible
crystal per frame) are gathered and written at the end. An interrupted write
resumes when called again with the same config: frames already marked done are
kept, and their table rows are rebuilt from the geometry alone (which is cheap
and, the run being deterministic, equal to what was lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from PIL import Image

from crystalseg.classes import class_mask_from_labels
from crystalseg.dims import DEFAULT_CODES, FRAME_DIMS, PARTICLE
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.store import RunWriter, create_run, creating, write_table
from crystalseg.synth.render import (
    CRYSTAL_UNITS,
    DISTRACTOR_UNITS,
    UM_COLUMNS,
    SyntheticRun,
    SynthFrame,
)
from crystalseg.synth.scenarios import SynthConfig

log = logging.getLogger(__name__)

STAGE = "synth"
TRUTH_LABELS = "truth/labels"
TRUTH_MASK = "truth/mask"
TRUTH_CRYSTALS = "truth/crystals"
TRUTH_DISTRACTORS = "truth/distractors"
TRUTH_POPULATION = "truth/population"


def synthesize_run(
    path: str | Path,
    config: SynthConfig,
    *,
    pairs_dir: str | Path | None = None,
    pairs_codes: Sequence[str] = DEFAULT_CODES,
    frames_per_chunk: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render a synthetic run into a run store, with its exact ground truth.

    Parameters
    ----------
    path : path of the run store to create (``*.zarr``)
    config : the run to render
    pairs_dir : also write training pairs here: ``{t}.png`` (the frame) and
        ``{t}_mask.png`` (class indices, 0 background, 1 crystal), one pair per frame
    pairs_codes : class codes of the pair masks; with a boundary class (e.g.
        ``("background", "crystal", "boundary")``) each crystal's one-pixel rim gets it,
        with a contact class (``"contact"``) only the pixels where crystals touch, see
        :func:`crystalseg.classes.class_mask_from_labels`
    frames_per_chunk : frames per store chunk (default: about 4 MiB of image a chunk)
    overwrite : replace an existing store (and existing pairs)
    progress : called with the number of frames done after each chunk

    Returns
    -------
    Path of the run store. Besides ``image`` and ``time`` it holds ``truth/labels``
    (time, y, x) int32 crystal ids, ``truth/mask`` (time, y, x) uint8 class indices,
    and the tables ``truth/crystals`` (one row per visible crystal per frame),
    ``truth/distractors`` (bubbles) and ``truth/population`` (one row per crystal:
    birth time, growth rate). The root ``provenance`` records the config and every
    value the run drew (look, zoom, habit mix, pixel size).

    Raises
    ------
    StageStateError
        The store (or a pair file) exists and ``overwrite`` is False.
    """
    if not isinstance(config, SynthConfig):
        raise ConfigError(f"config must be a SynthConfig, got {type(config).__name__}")
    if frames_per_chunk is not None and not (
        isinstance(frames_per_chunk, int) and frames_per_chunk >= 1
    ):
        raise ConfigError(f"frames_per_chunk must be an integer >= 1, got {frames_per_chunk!r}")
    path = Path(path)
    run = SyntheticRun(config)
    c = config
    pairs = _prepare_pairs(pairs_dir, fresh=overwrite or not path.exists(), overwrite=overwrite)
    settings = run.settings()
    with creating(path, STAGE):
        writer = create_run(
            path,
            shape=(c.frames, c.height, c.width),
            dtype=c.dtype,
            time_s=run.time_s,
            pixel_size_um=run.pixel_size_um,
            source={"synthetic": True, "scenario": run.scenario.name, "seed": c.seed},
            stage=STAGE,
            settings=settings,
            frames_per_chunk=frames_per_chunk,
            overwrite=overwrite,
            time_attrs={"source": "synthetic, fixed interval"},
        )
        fpc = writer.frames_per_chunk
        chunks = (fpc, c.height, c.width)
        shape = (c.frames, c.height, c.width)
        done = writer.progress.done()
        labels_arr = _truth_array(
            writer,
            TRUTH_LABELS,
            shape,
            "int32",
            chunks,
            resume=bool(done.any()),
            attrs={"long_name": "crystal id per pixel (0 background), stable across frames"},
        )
        mask_arr = _truth_array(
            writer,
            TRUTH_MASK,
            shape,
            "uint8",
            chunks,
            resume=bool(done.any()),
            attrs={"long_name": "true class per pixel", "codes": list(DEFAULT_CODES)},
        )

        crystals: list[pd.DataFrame] = []
        distractors: list[pd.DataFrame] = []
        n_done = 0
        for start in range(0, c.frames, fpc):
            stop = min(start + fpc, c.frames)
            if done[start:stop].all():
                for t in range(start, stop):
                    frame = run.render_truth(t)
                    crystals.append(frame.crystals)
                    distractors.append(frame.distractors)
                    if pairs is not None and not (
                        (pairs / f"{t}.png").exists() and (pairs / f"{t}_mask.png").exists()
                    ):
                        _write_pair(pairs, run.render(t), pairs_codes)
            else:
                frames = [run.render(t) for t in range(start, stop)]
                writer.write_frames(start, np.stack([f.image for f in frames]))
                labels_arr[start:stop] = np.stack([f.labels for f in frames])
                mask_arr[start:stop] = np.stack([f.class_mask for f in frames])
                writer.mark_done(start, stop)
                for frame in frames:
                    crystals.append(frame.crystals)
                    distractors.append(frame.distractors)
                    if pairs is not None:
                        _write_pair(pairs, frame, pairs_codes)
            n_done += stop - start
            if progress is not None:
                progress(n_done)

        unit_attrs = _units(CRYSTAL_UNITS, run.pixel_size_um is not None)
        table_attrs: dict[str, Any] = {
            "pixel_size_um": run.pixel_size_um,
            "ground_truth": True,
            "edge_treatment": "all crystals listed; touches_edge marks those cut by the frame",
        }
        write_table(
            writer.path,
            TRUTH_CRYSTALS,
            _concat(crystals),
            attrs=table_attrs,
            dim=PARTICLE,
            column_attrs={k: {"units": v} for k, v in unit_attrs.items()},
        )
        d_units = dict(DISTRACTOR_UNITS)
        if run.pixel_size_um is not None:
            d_units["radius_um"] = "um"
        write_table(
            writer.path,
            TRUTH_DISTRACTORS,
            _concat(distractors),
            attrs=table_attrs,
            dim="distractor",
            column_attrs={k: {"units": v} for k, v in d_units.items()},
        )
        write_table(
            writer.path, TRUTH_POPULATION, run.population_table(), attrs=table_attrs, dim="crystal"
        )
        writer.finish()
    log.info("synthetic run written to %s (%d frames)", path, c.frames)
    return path


def _units(units: dict[str, str], calibrated: bool) -> dict[str, str]:
    out = dict(units)
    if calibrated:
        out.update({name: unit for name, (_, unit, _) in UM_COLUMNS.items()})
    return out


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [t for t in tables if len(t)]
    if not non_empty:
        return tables[0].iloc[:0] if tables else pd.DataFrame()
    return pd.concat(non_empty, ignore_index=True)


def _truth_array(
    writer: RunWriter,
    name: str,
    shape: tuple[int, int, int],
    dtype: str,
    chunks: tuple[int, int, int],
    *,
    resume: bool,
    attrs: dict[str, Any],
) -> zarr.Array:
    """The truth array ``name``: reopened when resuming (keeping done frames), else created."""
    if resume:
        group = zarr.open_group(str(writer.path), mode="r+")
        try:
            arr = group[name]
        except KeyError:
            arr = None
        if (
            isinstance(arr, zarr.Array)
            and tuple(arr.shape) == tuple(shape)
            and np.dtype(arr.dtype) == np.dtype(dtype)
            and tuple(arr.chunks) == tuple(chunks)
        ):
            return arr
        raise StageStateError(
            f"run store '{writer.path}' has frames marked done but no matching '{name}'; "
            "pass overwrite=True (--overwrite) to render it again"
        )
    return writer.create_array(
        name, dims=FRAME_DIMS, shape=shape, dtype=dtype, chunks=chunks, attrs=attrs
    )


def _prepare_pairs(pairs_dir: str | Path | None, *, fresh: bool, overwrite: bool) -> Path | None:
    """The pairs directory, created; an error if a new run would overwrite someone's pairs."""
    if pairs_dir is None:
        return None
    pairs = Path(pairs_dir)
    if pairs.exists() and not pairs.is_dir():
        raise StageStateError(f"pairs_dir '{pairs}' is a file; give a directory")
    if fresh and not overwrite and (pairs / "0.png").exists():
        raise StageStateError(
            f"pairs_dir '{pairs}' already holds training pairs (0.png); pass overwrite=True "
            "(--overwrite) or choose an empty directory"
        )
    pairs.mkdir(parents=True, exist_ok=True)
    return pairs


def _write_pair(pairs: Path, frame: SynthFrame, codes: Sequence[str]) -> None:
    t = frame.index
    Image.fromarray(frame.image).save(pairs / f"{t}.png")
    mask = frame.class_mask
    if tuple(codes) != DEFAULT_CODES:
        mask = class_mask_from_labels(frame.labels, codes).astype(mask.dtype)
    Image.fromarray(mask).save(pairs / f"{t}_mask.png")
