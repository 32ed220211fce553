"""Segment a whole run store: stream its chunks through one model, or fan them out on dask.

:func:`segment_run` writes ``mask`` (time, y, x) uint8 into the run store, one image
chunk at a time, and marks each chunk done in the store's progress record only after
its data is on disk, so an interrupted run resumes where it stopped and ends with
the same mask as an uninterrupted one. Locally, a background thread reads and
decodes chunk k+1 while the model works on chunk k; with a ``distributed`` client,
each worker loads the model once (:func:`~crystalseg.segment.engine.load_segmenter`)
and writes its chunks' slices directly into the store, which must therefore be on a
filesystem every worker sees. Memory stays flat in the number of frames.

:func:`stream_segment_run` is the same work as an iterator of the chunks as they land
on disk, for callers that measure each chunk while the next is being segmented
(``measure_run`` does); :func:`segment_run` simply drains it. :func:`predict_frames` is
the lazy variant for a dask array of frames that never touches a store.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from crystalseg.dims import FRAME_DIMS, IMAGE, MASK, PROBABILITY
from crystalseg.errors import ConfigError, RunFormatError
from crystalseg.models import read_checkpoint_meta
from crystalseg.models.checkpoint import default_checkpoint_path, resolve_checkpoint_dir
from crystalseg.prefetch import ChunkPrefetcher
from crystalseg.segment.engine import (
    DEFAULT_TILE_SIZE,
    Backend,
    EngineSettings,
    Precision,
    ResizeChoice,
    Segmenter,
    checkpoint_checksum,
    choose_resize,
    load_segmenter,
    select_device,
)
from crystalseg.store import (
    PROBABILITY_ATTRS,
    StagePlan,
    StageProgress,
    begin_stage,
    create_array,
    open_run,
    plan_stage,
    stage_info,
    writing,
)
from crystalseg.store.cluster import cluster_client, run_on_cluster
from crystalseg.store.location import RunLike, RunPath, run_path

log = logging.getLogger(__name__)

STAGE = "segment"

#: ``progress(frames_done, frames_total)``, called after every chunk is written.
ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------
# Which model, and what the outputs say about it


def _model_identity(
    model: str | os.PathLike[str] | Segmenter | None,
) -> tuple[Path | None, str, dict[str, Any]]:
    """(checkpoint dir or None, weights sha256, model.json) without loading the weights."""
    if isinstance(model, Segmenter):
        if model.checkpoint is not None:
            meta = read_checkpoint_meta(model.checkpoint)
            return model.checkpoint, checkpoint_checksum(meta), meta
        from crystalseg.segment.onnx_backend import model_fingerprint

        checksum = model.checksum or model_fingerprint(model.network)
        return None, checksum, {"spec": model.spec.to_dict()}
    directory = default_checkpoint_path() if model is None else resolve_checkpoint_dir(model)
    meta = read_checkpoint_meta(directory)
    return directory, checkpoint_checksum(meta), meta


def mask_attrs(
    codes: tuple[str, ...] | list[str],
    *,
    checksum: str,
    checkpoint: Path | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """CF attributes of the mask: the classes as flag_values/flag_meanings, and the model."""
    spec = meta.get("spec", {})
    return {
        "long_name": "class index per pixel",
        "flag_values": list(range(len(codes))),
        "flag_meanings": " ".join(str(c).replace(" ", "_") for c in codes),
        "codes": list(codes),
        "model_sha256": checksum,
        "model_path": None if checkpoint is None else str(checkpoint),
        "model_encoder": spec.get("encoder"),
        "model_crystalseg_version": meta.get("crystalseg_version"),
        "model_created": meta.get("created"),
    }


# --------------------------------------------------------------------------------------
# Work on one chunk (runs locally or on a dask worker)


def _array(path: RunPath, name: str, mode: Literal["r", "r+"] = "r") -> zarr.Array:
    node = zarr.open_group(str(path), mode=mode, use_consolidated=False)[name]
    if not isinstance(node, zarr.Array):
        raise RunFormatError(f"'{name}' in run store '{path}' is a group, not an array")
    return node


def _open_arrays(
    path: RunPath, stage: StageProgress, save_probability: bool
) -> tuple[zarr.Array, zarr.Array | None]:
    """The mask and probability arrays this run of the stage writes (beside the old ones
    when it replaces a finished mask)."""
    mask = _array(path, stage.output(MASK), "r+")
    return mask, _array(path, stage.output(PROBABILITY), "r+") if save_probability else None


def _read_frames(path: RunPath, start: int, stop: int) -> np.ndarray:
    return np.asarray(_array(path, IMAGE)[start:stop])


def _segment_chunk(
    path: RunPath,
    start: int,
    stop: int,
    checkpoint: str | None,
    checksum: str,
    settings: EngineSettings,
    save_probability: bool,
    progress: StageProgress,
) -> int:
    """Segment frames start:stop of the store on this process; returns frames done."""
    seg = load_segmenter(checkpoint, checksum, _worker_settings(settings))
    mask_arr, prob_arr = _open_arrays(path, progress, save_probability)
    _write_result(seg, _read_frames(path, start, stop), start, stop, mask_arr, prob_arr)
    progress.mark_done(start, stop)
    return stop - start


def _resolve_settings(
    checkpoint: str | None, checksum: str, settings: EngineSettings
) -> EngineSettings:
    """Load the model on a worker and return the settings it resolved to (device, backend)."""
    return load_segmenter(checkpoint, checksum, _worker_settings(settings)).settings


def _worker_settings(settings: EngineSettings) -> EngineSettings:
    """On a dask worker, CPU threads default to the worker's own thread count.

    Several workers on one machine (``--nworkers 2 --nthreads 1``) would otherwise each
    start a thread per core, and OpenMP threads waiting on busy cores slow inference
    down many times over.
    """
    if settings.threads is not None:
        return settings
    try:
        from distributed import get_worker

        nthreads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return settings
    return replace(settings, threads=max(1, nthreads))


def _write_result(
    seg: Segmenter,
    frames: np.ndarray,
    start: int,
    stop: int,
    mask_arr: zarr.Array,
    prob_arr: zarr.Array | None,
) -> None:
    if prob_arr is not None:
        mask, prob = seg.predict(frames, probability=True)
        prob_arr[start:stop] = prob
    else:
        mask = seg.predict(frames)
    mask_arr[start:stop] = mask


# --------------------------------------------------------------------------------------
# The public entry points


def segment_run(
    run: RunLike,
    model: str | os.PathLike[str] | Segmenter | None = None,
    *,
    device: str = "auto",
    backend: Backend = "auto",
    batch_size: int | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    tile_overlap: int | None = None,
    precision: Precision = "auto",
    compile: bool = False,
    threads: int | None = None,
    tta: bool = False,
    resize: float | Literal["auto"] = "auto",
    overwrite: bool = False,
    save_probability: bool | None = None,
    client: Any = None,
    progress: ProgressCallback | None = None,
) -> xr.DataArray:
    """Segment every frame of a run store and write ``mask`` (and ``probability``) into it.

    Parameters
    ----------
    run : path of the run store
    model : checkpoint directory, a :class:`Segmenter`, or None for the bundled model.
        A Segmenter brings its own engine settings (device ... compile are then ignored).
    device, backend, batch_size, tile_size, tile_overlap, precision, compile, threads, tta,
    resize
        Engine settings, see :class:`~crystalseg.segment.engine.EngineSettings`.
        ``resize="auto"`` (the default) chooses one factor for the run with
        :func:`auto_resize` (1 unless the crystals are far larger in pixels than the
        model knows); a run that already has a mask from the same model keeps the
        factor it was made with.
    overwrite : bool
        Replace a mask made by another model or other settings. Without it that is an
        error; a finished mask with the same model and settings is returned as is, and
        an unfinished one resumes.
    save_probability : bool or None
        Also write ``probability`` (time, y, x) uint8, ``round(255 * p_foreground)``; CF
        ``scale_factor`` makes xarray read it as 0..1. The measurement's confidence
        filter (``MeasureSettings.min_confidence``) needs it; a run without it is
        measured unfiltered. None (the default): store it with a new mask, and leave a
        mask this model made without it as it is (re-running is then nothing to do;
        ``overwrite=True`` makes it again with the probability). True on such a mask
        is an error without ``overwrite``.
    client : distributed.Client, scheduler address (str) or None
        With one, the chunks run on the cluster's workers (each loads the model once and
        writes straight into the store, which every worker must see). None runs here.
    progress : callable (frames_done, frames_total), optional
        Called after each chunk is written; raising from it stops the run (resumable).

    Returns
    -------
    DataArray, dims (time, y, x), uint8
        The mask, lazily read from the store.

    Raises
    ------
    StageStateError
        The store has a mask from another model or other settings; pass overwrite=True.
    RunFormatError, CheckpointError, ConfigError
        Unreadable store or checkpoint, impossible settings.
    """
    chunks = stream_segment_run(
        run,
        model,
        device=device,
        backend=backend,
        batch_size=batch_size,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        precision=precision,
        compile=compile,
        threads=threads,
        tta=tta,
        resize=resize,
        overwrite=overwrite,
        save_probability=save_probability,
        client=client,
        progress=progress,
    )
    for _ in chunks:
        pass
    return open_run(run_path(run, resolve=True))[MASK]


def stream_segment_run(
    run: RunLike,
    model: str | os.PathLike[str] | Segmenter | None = None,
    *,
    device: str = "auto",
    backend: Backend = "auto",
    batch_size: int | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    tile_overlap: int | None = None,
    precision: Precision = "auto",
    compile: bool = False,
    threads: int | None = None,
    tta: bool = False,
    resize: float | Literal["auto"] = "auto",
    overwrite: bool = False,
    save_probability: bool | None = None,
    client: Any = None,
    progress: ProgressCallback | None = None,
) -> Generator[tuple[int, int], None, None]:
    """:func:`segment_run` as an iterator of the chunks of ``mask`` as they are written.

    The call itself checks the store and the model, loads the model (locally) and
    creates ``mask`` (or finds the unfinished one to resume), so that when it
    returns the mask's shape, chunks and attributes are final. Iterating does the
    inference: it yields ``(start, stop)`` of every time chunk of the mask once its
    frames are on disk and recorded as done: first the chunks an earlier,
    interrupted run wrote (all of them when the mask is finished), then each new
    one as the model finishes it, in time order locally and in completion order on
    a cluster. After the last chunk the stage is marked finished. Stopping early
    (``close()``, an exception from ``progress``) leaves a resumable store.

    Parameters
    ----------
    run, model, device, backend, batch_size, tile_size, tile_overlap, precision,
    compile, threads, tta, resize, overwrite, save_probability, client, progress
        As for :func:`segment_run`.

    Returns
    -------
    generator of (int, int)
        Frames ``start:stop`` of each chunk of the mask, each once.

    Raises
    ------
    StageStateError, RunFormatError, CheckpointError, ConfigError
        As :func:`segment_run`, from the call (before anything is iterated).
    """
    path = run_path(run, resolve=True)
    lock = ExitStack()
    lock.enter_context(writing(path, STAGE))
    try:
        return _begin_segment(
            path,
            model,
            EngineSettings(
                device=device,
                backend=backend,
                batch_size=batch_size,
                tile_size=tile_size,
                tile_overlap=tile_overlap,
                precision=precision,
                compile=compile,
                threads=threads,
                tta=tta,
                resize=resize,
            ),
            overwrite=overwrite,
            save_probability=save_probability,
            client=client,
            progress=progress,
            lock=lock,
        )
    except BaseException:
        lock.close()
        raise


def _begin_segment(
    path: RunPath,
    model: str | os.PathLike[str] | Segmenter | None,
    settings: EngineSettings,
    *,
    overwrite: bool,
    save_probability: bool | None,
    client: Any,
    progress: ProgressCallback | None,
    lock: ExitStack,
) -> Generator[tuple[int, int], None, None]:
    """The body of :func:`stream_segment_run`, with the store's lock held by ``lock``
    (released when the returned generator ends or is closed)."""
    ds = open_run(path)
    n, ny, nx = (int(v) for v in ds[IMAGE].shape)
    fpc = int(_array(path, IMAGE).chunks[0])

    if isinstance(model, Segmenter):
        settings = model.settings
    checkpoint, checksum, meta = _model_identity(model)
    if client is not None and checkpoint is None:
        raise ConfigError(
            "a distributed run needs a model saved as a checkpoint that every worker can "
            "read; save it with save_checkpoint and pass its directory"
        )
    seg: Segmenter | None = None
    if settings.resize == "auto":
        factor = None if overwrite else _recorded_resize(path, checksum)
        if factor is None and not overwrite and _has_mask(path):
            factor = 1.0  # a mask from another model: _check_existing refuses it below
        if factor is None:
            seg = (
                model
                if isinstance(model, Segmenter)
                else load_segmenter(checkpoint, checksum, settings)
            )
            factor = auto_resize(path, seg).factor
        settings = replace(settings, resize=factor)
        # the local engine only chose the factor when the chunks go to a cluster
        seg = None if seg is None or client is not None else seg.with_resize(factor)
    resize_factor = settings.resize
    assert not isinstance(resize_factor, str)  # "auto" was resolved just above
    codes = tuple(meta["spec"]["codes"])
    if save_probability is None:
        save_probability = overwrite or not _made_without_probability(path, checksum)
    stage_settings = {
        "model_sha256": checksum,
        "tile_size": settings.tile_size,
        "tile_overlap": settings.tile_overlap,
        **({"tta": True} if settings.tta else {}),  # absent when off: older masks still match
        **({"resize": settings.resize} if settings.resize != 1.0 else {}),
        "save_probability": bool(save_probability),
    }
    all_chunks = [(s, min(s + fpc, n)) for s in range(0, n, fpc)]
    if not save_probability and not overwrite and _saving_probability(path, stage_settings):
        # An unfinished run that stores the probability (e.g. begun by measure) goes on
        # storing it, rather than refusing to resume over an extra output.
        save_probability = True
        stage_settings["save_probability"] = True
    plan = _check_existing(path, stage_settings, overwrite=overwrite, shape=(n, ny, nx))
    if plan.action == "finished":
        log.info("%s is already segmented by model %s; nothing to do", path, checksum[:12])
        if progress is not None:
            progress(n, n)
        lock.close()
        return (chunk for chunk in all_chunks)

    if client is None and seg is None:  # load (and check) the model before touching the store
        seg = (
            model.with_resize(resize_factor)
            if isinstance(model, Segmenter)
            else load_segmenter(checkpoint, checksum, settings)
        )
    stage = begin_stage(
        path,
        STAGE,
        settings=stage_settings,
        n_frames=n,
        frames_per_chunk=fpc,
        restart=plan.action != "resume",
        replace=plan.replace,
        outputs=(MASK, PROBABILITY),
    )
    if plan.action != "resume":
        _create_outputs(stage, (n, ny, nx), codes, checksum, checkpoint, meta, save_probability)

    pending = stage.pending_chunks()
    done = n - sum(stop - start for start, stop in pending)
    if progress is not None:
        progress(done, n)
    todo = set(pending)
    written = [chunk for chunk in all_chunks if chunk not in todo]
    model_info = {"sha256": checksum, "path": None if checkpoint is None else str(checkpoint)}
    work: Generator[tuple[int, int], None, dict[str, Any] | None]
    if seg is not None:
        work = _iter_local(path, seg, pending, stage, done, n, save_probability, progress)
        engine = seg.describe()
    else:
        work = _iter_distributed(
            path,
            client,
            pending,
            checkpoint,
            checksum,
            settings,
            stage,
            done,
            n,
            save_probability,
            progress,
        )
        engine = None
    return _stream(written, work, stage, engine, model_info, lock)


def _stream(
    written: list[tuple[int, int]],
    work: Generator[tuple[int, int], None, dict[str, Any] | None],
    stage: StageProgress,
    engine: dict[str, Any] | None,
    model_info: dict[str, Any],
    lock: ExitStack,
) -> Generator[tuple[int, int], None, None]:
    """Yield the chunks already written, then the new ones; finish the stage at the end
    (a replacement swaps its mask in then) and release the store's lock."""
    with lock:
        yield from written
        resolved = yield from work
        stage.finish(engine=engine if engine is not None else resolved, model=model_info)


def inference_device(
    model: str | os.PathLike[str] | Segmenter | None = None, *, device: str = "auto"
) -> Literal["cpu", "cuda", "mps"]:
    """The kind of device :func:`segment_run` would infer on, without loading a model.

    Parameters
    ----------
    model : checkpoint directory, a :class:`Segmenter` (which knows its device), or None
    device : "auto", "cpu", "cuda", "cuda:N" or "mps", for a model that is not loaded yet

    Returns
    -------
    "cpu", "cuda" or "mps"
    """
    kind = model.device.type if isinstance(model, Segmenter) else select_device(device).type
    if kind not in ("cpu", "cuda", "mps"):  # pragma: no cover - select_device returns these
        raise ConfigError(f"device {kind!r} is not one crystalseg infers on")
    return kind  # type: ignore[return-value]


def _made_without_probability(path: RunPath, checksum: str) -> bool:
    """Whether the run has a mask (finished or begun) of this model that was made
    without storing the probability."""
    info = stage_info(path).get(STAGE) or {}
    previous = info.get("settings") or {}
    return previous.get("model_sha256") == checksum and not previous.get("save_probability")


def _saving_probability(path: RunPath, settings: dict[str, Any]) -> bool:
    """Whether an unfinished segmentation with these settings stores the probability."""
    info = stage_info(path).get(STAGE) or {}
    previous = info.get("settings") or {}
    return (
        info.get("status") == "running"
        and bool(previous.get("save_probability"))
        and previous == {**settings, "save_probability": True}
    )


#: Frames :func:`auto_resize` samples from the later half of a run.
AUTO_RESIZE_FRAMES = 6


def auto_resize(
    run: RunLike, segmenter: Segmenter, *, frames: int = AUTO_RESIZE_FRAMES
) -> ResizeChoice:
    """The ``resize`` factor for a whole run: :func:`~crystalseg.segment.engine.choose_resize`
    on ``frames`` frames spread over the later half of the run, where the crystals are
    largest and most numerous. Logs the choice and the scores behind it."""
    path = run_path(run)
    image = _array(path, IMAGE)
    sample = np.stack([np.asarray(image[t]) for t in _later_half(int(image.shape[0]), frames)])
    choice = choose_resize(segmenter, sample)
    log.info("%s: %s", path, choice.describe())
    return choice


def _later_half(n: int, frames: int) -> list[int]:
    """Up to ``frames`` frame indices spread evenly over the later half of ``n`` frames."""
    if n < 1:
        return []
    return [int(t) for t in np.unique(np.linspace(n // 2, n - 1, frames).astype(int))]


def _has_mask(path: RunPath) -> bool:
    return MASK in zarr.open_group(str(path), mode="r", use_consolidated=False)


def _recorded_resize(path: RunPath, checksum: str) -> float | None:
    """The resize factor of the run's mask when the same model made it, else None."""
    info = stage_info(path).get(STAGE) or {}
    previous = info.get("settings") or {}
    if previous.get("model_sha256") != checksum:
        return None
    return float(previous.get("resize", 1.0))


def _check_existing(
    path: RunPath, settings: dict[str, Any], *, overwrite: bool, shape: tuple[int, int, int]
) -> StagePlan:
    """Decide from the store's state: start anew, resume, or nothing to do; or refuse."""
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    has_mask = MASK in group
    has_probability = PROBABILITY in group

    def core(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k != "save_probability"}

    def matches(record: dict[str, Any]) -> bool:
        previous = record.get("settings") or {}
        if core(previous) != core(settings) or tuple(_array(path, MASK).shape) != shape:
            return False
        if record.get("status") == "finished":
            had_probability = bool(previous.get("save_probability")) and has_probability
            return had_probability or not settings["save_probability"]
        return bool(previous == settings)

    def refusal(record: dict[str, Any]) -> str:
        previous = record.get("settings") or {}
        old = dict(group[MASK].attrs)
        old_model = str(old.get("model_sha256") or "unknown")[:12]
        where = f" ({old['model_path']})" if old.get("model_path") else ""
        if old.get("model_sha256") != settings["model_sha256"]:
            why = f"a mask from model {old_model}{where}"
        else:
            # A stored probability that is not asked for is no difference.
            changed = sorted(
                k
                for k in {*settings, *previous}
                if previous.get(k) != settings.get(k)
                and (k != "save_probability" or settings["save_probability"])
            )
            why = f"a mask from the same model made with other settings ({', '.join(changed)})"
        return f"run '{path}' already has {why}; pass --overwrite to replace it"

    return plan_stage(
        path,
        STAGE,
        settings=settings,
        overwrite=overwrite,
        outputs_present=has_mask,
        matches=matches,
        refusal=refusal,
    )


def _create_outputs(
    stage: StageProgress,
    shape: tuple[int, int, int],
    codes: tuple[str, ...],
    checksum: str,
    checkpoint: Path | None,
    meta: dict[str, Any],
    save_probability: bool,
) -> None:
    """Create the mask (and probability) this run writes: in place, or beside the
    finished ones that it replaces when complete."""
    path = stage.path
    chunks = (stage.frames_per_chunk, shape[1], shape[2])
    attrs = mask_attrs(codes, checksum=checksum, checkpoint=checkpoint, meta=meta)
    create_array(
        path,
        stage.output(MASK),
        dims=FRAME_DIMS,
        shape=shape,
        dtype="uint8",
        chunks=chunks,
        attrs=attrs,
    )
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    if save_probability:
        create_array(
            path,
            stage.output(PROBABILITY),
            dims=FRAME_DIMS,
            shape=shape,
            dtype="uint8",
            chunks=chunks,
            attrs=PROBABILITY_ATTRS,
        )
    elif PROBABILITY in group and not stage.replacing:
        del group[PROBABILITY]  # made by another model: stale (a replacement drops it at the swap)


def _iter_local(
    path: RunPath,
    seg: Segmenter,
    pending: list[tuple[int, int]],
    stage: StageProgress,
    done: int,
    total: int,
    save_probability: bool,
    progress: ProgressCallback | None,
) -> Generator[tuple[int, int], None, None]:
    """Read ahead in one thread, compute here, compress and write in another thread.

    Yields each chunk once it is written and marked done (a chunk behind the model).
    """
    mask_arr, prob_arr = _open_arrays(path, stage, save_probability)
    image = _array(path, IMAGE)

    def read(start: int, stop: int) -> np.ndarray:
        return np.asarray(image[start:stop])

    def write(start: int, stop: int, mask: np.ndarray, prob: np.ndarray | None) -> None:
        if prob_arr is not None and prob is not None:
            prob_arr[start:stop] = prob
        mask_arr[start:stop] = mask
        stage.mark_done(start, stop)  # only once the chunk's data is on disk

    inflight: deque[tuple[Future[None], int, int]] = deque()

    def settle(keep: int) -> Iterator[tuple[int, int]]:
        nonlocal done
        while len(inflight) > keep or (inflight and inflight[0][0].done()):
            future, start, stop = inflight.popleft()
            future.result()
            done += stop - start
            if progress is not None:
                progress(done, total)
            yield start, stop

    with (
        ChunkPrefetcher(read, pending) as chunks,
        ThreadPoolExecutor(1, thread_name_prefix="crystalseg-write") as writer,
    ):
        for start, stop, frames in chunks:
            if prob_arr is not None:
                mask, prob = seg.predict(frames, probability=True)
            else:
                mask, prob = seg.predict(frames), None
            inflight.append((writer.submit(write, start, stop, mask, prob), start, stop))
            yield from settle(keep=1)
        yield from settle(keep=0)


def _iter_distributed(
    path: RunPath,
    client: Any,
    pending: list[tuple[int, int]],
    checkpoint: Path | None,
    checksum: str,
    settings: EngineSettings,
    stage: StageProgress,
    done: int,
    total: int,
    save_probability: bool,
    progress: ProgressCallback | None,
) -> Generator[tuple[int, int], None, dict[str, Any]]:
    """Chunks on the cluster's workers; yields each as it completes, returns the engine."""
    client, own = cluster_client(client)
    ckpt = None if checkpoint is None else str(checkpoint)
    try:
        # Resolve "auto" once, on a worker, so every worker runs the same backend and
        # precision and the mask does not depend on which worker took which chunk.
        resolved = client.submit(_resolve_settings, ckpt, checksum, settings, pure=False).result()
        jobs = [
            ((start, stop), (path, start, stop, ckpt, checksum, resolved, save_probability, stage))
            for start, stop in pending
        ]
        for chunk, frames in run_on_cluster(client, _segment_chunk, jobs, name=STAGE):
            done += frames
            if progress is not None:
                progress(done, total)
            yield chunk
    finally:
        if own:
            client.close()
    return {**asdict(resolved), "scheduler": str(getattr(client, "scheduler", None) or "")}


def _predict_block(
    block: np.ndarray, seg: Segmenter, output: Literal["mask", "probability"]
) -> np.ndarray:
    if output == "probability":
        return seg.predict(block, probability=True)[1]
    return seg.predict(block)


def predict_frames(
    frames: da.Array | np.ndarray,
    model: str | os.PathLike[str] | Segmenter | None = None,
    *,
    output: Literal["mask", "probability"] = "mask",
    device: str = "auto",
    backend: Backend = "auto",
    batch_size: int | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    tile_overlap: int | None = None,
    precision: Precision = "auto",
    threads: int | None = None,
    tta: bool = False,
    resize: float | Literal["auto"] = "auto",
) -> da.Array:
    """Lazy segmentation of a dask array of frames, one task per time chunk.

    Parameters
    ----------
    frames : dask array (time, y, x) uint8/uint16, chunked along time
        Chunks along y and x are merged (the engine needs whole frames).
    model : checkpoint directory, a :class:`Segmenter`, or None for the bundled model.
        On a distributed scheduler each worker process loads the checkpoint once.
    output : "mask" (class index) or "probability" (uint8 foreground probability)
    device ... resize
        Engine settings, as for :func:`segment_run`; ``resize="auto"`` computes a few
        frames of the later half now to choose one factor for all of them.

    Returns
    -------
    dask array (time, y, x) uint8, same time chunks as ``frames``
    """
    arr: da.Array = frames if isinstance(frames, da.Array) else da.asarray(frames)
    if arr.ndim != 3:
        raise ConfigError(f"frames of shape {arr.shape}; expected (time, y, x)")
    if output not in ("mask", "probability"):
        raise ConfigError(f"output {output!r} is not 'mask' or 'probability'")
    if isinstance(model, Segmenter):
        seg = model
    else:
        settings = EngineSettings(
            device=device,
            backend=backend,
            batch_size=batch_size,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            precision=precision,
            threads=threads,
            tta=tta,
            resize=resize,
        )
        seg = load_segmenter(model, None, settings)
    picks = _later_half(int(arr.shape[0]), AUTO_RESIZE_FRAMES)
    if seg.settings.resize == "auto" and picks:  # one factor for all frames, as for a run
        seg = seg.resolved(np.asarray(arr[picks].compute()))
    if len(arr.chunks[1]) > 1 or len(arr.chunks[2]) > 1:
        arr = arr.rechunk({1: -1, 2: -1})
    # dask's annotations of Array.map_blocks want an Array first; it takes the function
    return arr.map_blocks(
        _predict_block,  # type: ignore[arg-type]
        seg,
        output,
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
    )


__all__ = [
    "PROBABILITY",
    "STAGE",
    "ChunkPrefetcher",
    "ProgressCallback",
    "auto_resize",
    "inference_device",
    "mask_attrs",
    "predict_frames",
    "segment_run",
    "stream_segment_run",
]
