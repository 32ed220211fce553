"""The ``crystalseg`` command line: commands parse, resolve paths and call one library function."""

from __future__ import annotations

import functools
import json
import logging
import math
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import click

from crystalseg.errors import CrystalsegError, explain_failure

log = logging.getLogger("crystalseg")


def _given_paths(params: dict[str, Any]) -> list[Path]:
    """The paths among a command's parameters, run stores first (error messages name them)."""
    paths: list[Path] = []
    for value in params.values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Path):
                paths.append(item)
    return sorted(paths, key=lambda p: p.suffix != ".zarr")


class _Command(click.Command):
    """A command whose failures of the file system (full disk, read-only folder, no
    permission) and of damaged stores (a chunk no codec decodes) become one
    :class:`CrystalsegError` by :func:`~crystalseg.errors.explain_failure`; anything
    else keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CrystalsegError, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            error = explain_failure(exc, paths=_given_paths(ctx.params))
            if error is None:
                raise
            raise error from exc


class _Group(click.Group):
    """Turns a :class:`CrystalsegError` into one line on stderr and exit status 1, and
    Ctrl-C into a line saying the work can be resumed and exit status 130."""

    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrystalsegError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo(
                "\nInterrupted. What was written is kept; import, segment, measure and "
                "train (with --resume) go on from there when run again.",
                err=True,
            )
            ctx.exit(130)


class _BarSafeHandler(logging.StreamHandler):
    """Log lines through ``tqdm.write``: a progress bar on the same stream is cleared
    first and drawn again below the line, instead of the line being glued to it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging's own contract
            self.handleError(record)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _BarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crystalseg")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

    def show(message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any) -> None:
        from tqdm import tqdm

        tqdm.write(f"Warning: {message}", file=sys.stderr)

    warnings.showwarning = show


@contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (frames, rate, time left) fed by the library's progress callbacks."""
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="frame", disable=quiet, file=sys.stderr) as bar:
        yield bar.update


@click.group(cls=_Group)
@click.version_option(package_name="crystalseg")
@click.option("-v", "--verbose", count=True, help="Debug log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """crystalseg: particle size and shape distributions from crystallization time-lapses."""
    _configure_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet}


@cli.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--pixel-size", "pixel_size_um", type=float, help="Micrometres per pixel (overrides metadata)."
)
@click.option(
    "--interval", "interval_s", type=float, help="Seconds between frames (overrides timestamps)."
)
@click.option("--channel", type=int, help="Channel to take from a multi-channel recording.")
@click.option(
    "--series",
    type=click.IntRange(min=0),
    help="Image series of a TIFF to import (e.g. one stage position of an OME-TIFF).",
)
@click.option(
    "--frames-per-chunk",
    type=click.IntRange(min=1),
    help="Frames per store chunk (default: ~4 MiB a chunk).",
)
@click.option(
    "--planar-rgb",
    type=click.Choice(["auto", "frames", "rgb"]),
    default="auto",
    show_default=True,
    help="A TIFF of 3 or 4 pages stored as planar RGB(A): its planes as frames, or one colour "
    "image turned grey. auto: frames when tifffile wrote it (its imwrite stores any 3- or "
    "4-frame stack so), else colour; a warning says which.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run store.")
@click.pass_context
def import_cmd(
    ctx: click.Context,
    source: Path,
    run: Path,
    pixel_size_um: float | None,
    interval_s: float | None,
    channel: int | None,
    series: int | None,
    frames_per_chunk: int | None,
    planar_rgb: str,
    overwrite: bool,
) -> None:
    """Import SOURCE (TIFF/OME-TIFF stack, image folder or glob, zarr, OME-Zarr, .npy,
    or a video: AVI, MP4, MOV, MKV) into RUN.

    \b
    Example:
      crystalseg import frames/ run.zarr --pixel-size 1.6 --interval 5
    """
    from crystalseg.importing import import_run, refuse_source_inside
    from crystalseg.io import open_source
    from crystalseg.store import check_calibration

    check_calibration(pixel_size_um=pixel_size_um, what="--pixel-size: ")
    check_calibration(interval_s=interval_s, what="--interval: ")
    refuse_source_inside(source, run)
    with open_source(source, channel=channel, series=series, planar_rgb=planar_rgb) as src:  # type: ignore[arg-type]
        total = src.shape[0]
    with _progress(total, "import", ctx.obj["quiet"]) as update:
        import_run(
            source,
            run,
            pixel_size_um=pixel_size_um,
            interval_s=interval_s,
            channel=channel,
            series=series,
            frames_per_chunk=frames_per_chunk,
            overwrite=overwrite,
            progress=update,
            planar_rgb=planar_rgb,  # type: ignore[arg-type]
        )
    _echo_info(run)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--pixel-size", "pixel_size_um", type=float, help="Micrometres per pixel.")
@click.option("--interval", "interval_s", type=float, help="Seconds between frames.")
def calibrate(run: Path, pixel_size_um: float | None, interval_s: float | None) -> None:
    """Set the pixel size and/or frame interval of RUN after import.

    The frames, mask and probability stay; a measurement made before is out of date
    and the next 'crystalseg measure RUN' measures again (no segmenting).

    \b
    Example:
      crystalseg calibrate run.zarr --pixel-size 0.65 --interval 30
    """
    from crystalseg.store import check_calibration, set_calibration

    check_calibration(pixel_size_um=pixel_size_um, what="--pixel-size: ")
    check_calibration(interval_s=interval_s, what="--interval: ")
    set_calibration(run, pixel_size_um=pixel_size_um, interval_s=interval_s)
    _echo_info(run)  # a measurement made before shows OUT OF DATE with the command


def _check_bins(value: tuple[float, float, int] | None) -> tuple[float, float, int] | None:
    """--bins MIN MAX N: 0 < MIN < MAX and 1 <= N <= MAX_BINS, said in the option's words."""
    from crystalseg.measure.settings import MAX_BINS

    if value is not None:
        lo, hi, n = value
        if not (0 < lo < hi and math.isfinite(hi)) or not 1 <= n <= MAX_BINS:
            raise click.BadParameter(
                f"{lo:g} {hi:g} {n} is not MIN MAX N with 0 < MIN < MAX and 1 <= N <= "
                f"{MAX_BINS} bins (finer bins hold noise, and each frame stores N x N values); "
                "e.g. --bins 1 1000 60 for 1 um to 1 mm in 60 log bins",
                param_hint="'--bins'",
            )
    return value


_size_option = click.option(
    "--size",
    nargs=2,
    type=int,
    default=(512, 512),
    show_default=True,
    metavar="H W",
    help="Frame height and width in pixels.",
)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--frames", default=40, show_default=True, help="Number of frames.")
@_size_option
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same run).")
@click.option("--scenario", default="mixed", show_default=True, help="Scene type, see below.")
@click.option(
    "--interval", "interval_s", default=10.0, show_default=True, help="Seconds between frames."
)
@click.option(
    "--pixel-size",
    "pixel_size_um",
    type=float,
    help="Micrometres per pixel (default: drawn per run).",
)
@click.option("--dtype", type=click.Choice(["uint8", "uint16"]), default="uint8", show_default=True)
@click.option(
    "--pairs",
    "pairs_dir",
    type=click.Path(path_type=Path),
    help="Also write training pairs (0.png, 0_mask.png, ...) here.",
)
@click.option(
    "--pairs-codes",
    default="background,crystal",
    show_default=True,
    help="Classes of the pair masks; add ',boundary' for a one-pixel crystal rim class or "
    "',contact' for a class only where crystals touch.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run store.")
@click.pass_context
def synth(
    ctx: click.Context,
    run: Path,
    frames: int,
    size: tuple[int, int],
    seed: int,
    scenario: str,
    interval_s: float,
    pixel_size_um: float | None,
    dtype: str,
    pairs_dir: Path | None,
    pairs_codes: str,
    overwrite: bool,
) -> None:
    """Write a synthetic crystallization run with exact ground truth to RUN.

    Nucleation, growth at a known rate, drift, touching crystals, edge-cut crystals,
    uneven light, blur, noise and bubbles; the truth (instance labels, class mask and a
    per-crystal table) is stored in group 'truth'. Scenarios: clear, crowded, bubbles,
    needles, plates, mixed.

    \b
    Example:
      crystalseg synth run.zarr --frames 60 --size 512 512 --seed 1 --scenario crowded
    """
    from crystalseg.synth import SynthConfig, synthesize_run

    config = SynthConfig(
        frames=frames,
        height=size[0],
        width=size[1],
        seed=seed,
        scenario=scenario,  # type: ignore[arg-type]
        interval_s=interval_s,
        pixel_size_um=pixel_size_um,
        dtype=dtype,  # type: ignore[arg-type]
    )
    with _progress(frames, "synth", ctx.obj["quiet"]) as update:
        shown = [0]

        def frames_done(done: int) -> None:  # synthesize_run reports a running total
            update(done - shown[0])
            shown[0] = done

        synthesize_run(
            run,
            config,
            pairs_dir=pairs_dir,
            pairs_codes=_codes(pairs_codes),
            overwrite=overwrite,
            progress=frames_done,
        )
    _echo_info(run)


_instances_option = click.option(
    "--instances",
    is_flag=True,
    help="Masks hold one integer id per crystal (0 background), as Cellpose, napari or "
    "QuPath export them.",
)


@cli.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    default=Path("model"),
    show_default=True,
    help="Directory of the checkpoint (best epoch; last in DIR/last).",
)
@click.option(
    "--codes",
    default=None,
    help="Class names, background first; add 'boundary' for a crystal-rim class or 'contact' "
    "for a class only where crystals touch [default: background,crystal; with --instances "
    "background,crystal,boundary, the bundled model's classes, the rim drawn from the ids].",
)
@click.option("--encoder", default=None, help="smp encoder (default: the bundled model's).")
@click.option(
    "--init",
    default="default",
    show_default=True,
    help="Start weights: default (bundled crystal model), imagenet (local), none, or a "
    "checkpoint directory / encoder weights file.",
)
@click.option(
    "--encoder-weights",
    default=None,
    help="Alias of --init for an ImageNet weights file (PATH) or 'none'.",
)
@click.option("--epochs", default=3, show_default=True, help="Epochs of the one-cycle schedule.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default 1e-3).")
@click.option("--find-lr", is_flag=True, help="Run the learning-rate finder first (and use it).")
@click.option("--crop-size", default=256, show_default=True, help="Training crop size (x32).")
@click.option("--batch-size", type=int, default=None, help="Default: 8 on a CPU, 32 on a GPU.")
@click.option("--valid-fraction", default=0.2, show_default=True)
@click.option("--valid", default=None, help="Comma-separated image names to validate on.")
@click.option(
    "--mask-values",
    default=None,
    help="Stored mask values per class, e.g. 0,255 or 0=background,255=crystal.",
)
@_instances_option
@click.option("--loss", default="dice+ce", show_default=True)
@click.option(
    "--augment",
    type=click.Choice(["default", "strong", "strong-zoom", "strong-motion", "strong-jpeg", "none"]),
    default="default",
    show_default=True,
    help="Augmentation preset; strong-zoom adds 1.5-4x zoom-ins for high magnifications, "
    "strong-motion 3-15 px motion-blur streaks for flowing suspensions, strong-jpeg JPEG "
    "compression (quality 15-90) for lossy exports.",
)
@click.option(
    "--scaling",
    type=click.Choice(["dtype", "percentile"]),
    default=None,
    help="Intensity scaling (default: the starting model's, else dtype).",
)
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--frame-step", default=1, show_default=True, help="Every n-th frame of run stores.")
@click.option(
    "--freeze-bn/--no-freeze-bn",
    default=None,
    help="Keep the starting model's batch-norm statistics [default: when fine-tuning a "
    "crystal model (--init default or a checkpoint)].",
)
@click.option("--early-stop", type=int, default=None, help="Stop after N epochs without gain.")
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop after the first epoch that ends past this wall-clock budget.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted training in --output.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --output.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available).")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def train(ctx: click.Context, data: tuple[Path, ...], **opts: Any) -> None:
    """Train a U-Net on annotated DATA and write a checkpoint.

    DATA: a folder of X.png / X_mask.png pairs (BMP, TIFF, JPEG too), a folder with
    images/ and masks/, run stores with masks (e.g. from crystalseg synth), or a
    folder of run stores. Training starts from the bundled crystal model, so a few
    dozen frames and 3 epochs give a useful model.

    \b
    Example:
      crystalseg train pairs/ --codes background,crystal --epochs 3 --lr 1e-3 -o model/
    """
    from crystalseg.summary import format_training
    from crystalseg.train import TrainSettings, train_model
    from crystalseg.train.masks import parse_mask_values

    if opts["resume"]:
        _resumed_options(ctx, opts)
    init = opts.pop("encoder_weights") or opts["init"]
    mask_values = opts.pop("mask_values")
    valid = opts.pop("valid")
    encoder = opts.pop("encoder")
    codes = opts.pop("codes") or (
        "background,crystal,boundary" if opts["instances"] else "background,crystal"
    )
    settings = TrainSettings(
        data=data,
        codes=_codes(codes),
        init=init,
        mask_values=parse_mask_values(mask_values) if mask_values else None,
        valid=tuple(v.strip() for v in valid.split(",")) if valid else None,
        channels=int(opts.pop("channels")),
        resume=opts["output_dir"] if opts.pop("resume") else None,
        progress=not ctx.obj["quiet"],
        command=shlex.join(["crystalseg", *sys.argv[1:]]),
        **({"encoder": encoder} if encoder else {}),
        **{k: v for k, v in opts.items() if k != "init"},
    )
    result = train_model(settings)
    click.echo(format_training(result))


#: train options that --resume takes from the interrupted run unless given again
_RESUMED_OPTIONS = (
    "epochs", "crop_size", "batch_size", "valid_fraction", "loss", "augment", "frame_step",
    "seed", "early_stop", "max_minutes", "instances",
)  # fmt: skip


def _resumed_options(ctx: click.Context, opts: dict[str, Any]) -> None:
    """Fill the options not given on the command line from the settings the interrupted
    training recorded (its ``last`` checkpoint), so ``train DATA -o DIR --resume`` goes
    on without repeating ``--epochs``, ``--crop-size``, ``--codes``..."""
    from click.core import ParameterSource

    from crystalseg.errors import CheckpointError
    from crystalseg.models.checkpoint import read_checkpoint_meta
    from crystalseg.train.learner import find_resume_dir

    try:
        recorded = read_checkpoint_meta(find_resume_dir(opts["output_dir"]))
    except CheckpointError:
        # killed in its first save: no state to go on from, but its checkpoint records
        # the options, and train_model starts it over with them
        try:
            recorded = read_checkpoint_meta(Path(opts["output_dir"]))
        except CheckpointError:
            return
    settings = (recorded.get("training") or {}).get("settings") or {}

    def default(name: str) -> bool:
        return ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None)

    for name in _RESUMED_OPTIONS:
        if name in settings and default(name):
            opts[name] = settings[name]
    if settings.get("codes") and default("codes"):
        opts["codes"] = ",".join(settings["codes"])
    values = settings.get("mask_values")
    if values and default("mask_values"):
        opts["mask_values"] = (
            ",".join(f"{k}={v}" for k, v in values.items())
            if isinstance(values, dict)
            else ",".join(str(v) for v in values)
        )


def _scheduler_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="dask.distributed scheduler (tcp://host:8786); default: all cores here.",
    )(func)


def _model_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model",
        type=click.Path(path_type=Path),
        default=None,
        help="Checkpoint directory from crystalseg train (default: the bundled model).",
    )(func)


_tta_option = click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: average the model over 8 flips/turns of each frame "
    "(fewer false detections, 8x the inference time).",
)

_precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "int8", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Number format of the model. auto: bf16 on a GPU; on the CPU int8 where the CPU "
    "has VNNI, int8 is faster and its masks agree with fp32 (measured once per model), "
    "else fp32. int8 forces the quantized model (CPU, ONNX Runtime); fp32 forbids it.",
)


class _ResizeFactor(click.ParamType):
    """A factor in 0.1..4 (engine.MIN_RESIZE..MAX_RESIZE, without importing torch), or auto."""

    name = "FACTOR|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | str:
        if value == "auto" or isinstance(value, float):
            return value
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not 0.1 <= factor <= 4.0:
            self.fail(f"{value!r} is not a factor in 0.1..4 or 'auto'", param, ctx)
        return factor


_resize_option = click.option(
    "--resize",
    type=_ResizeFactor(),
    default="auto",
    show_default=True,
    help="Resize frames by this factor before the model (masks keep the frame size): "
    "0.5 or 0.25 for crystals far larger in pixels than the model knows (high "
    "magnification, wide blurred edges). 'auto' picks one factor per run where the "
    "model's masks are most stable across scales (1 for crystals of the size it knows).",
)


@contextmanager
def _stage_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars for callbacks ``(stage, frames_done, frames_total)``, one bar a stage."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total, desc=stage, unit="frame", disable=quiet, file=sys.stderr
            )
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@_model_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="CPU runtime; auto measures once and picks the faster.",
)
@click.option("--batch-size", type=int, default=None, help="Frames per batch (default: by memory).")
@click.option(
    "--tile-size",
    type=click.IntRange(min=64),
    default=None,
    help="Tile larger frames (px, a multiple of 32, default 1024).",
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (GPU).")
@_precision_option
@_tta_option
@_resize_option
@click.option(
    "--save-probability/--no-save-probability",
    default=None,
    help="Also store the crystal probability (measure's confidence filter needs it) "
    "[default: with a new mask; a mask made without it is kept as it is].",
)
@click.option("--overwrite", is_flag=True, help="Replace a mask made by another model.")
@_scheduler_option
@click.pass_context
def segment(
    ctx: click.Context,
    run: Path,
    model: Path | None,
    device: str,
    backend: str,
    batch_size: int | None,
    tile_size: int | None,
    compile_: bool,
    precision: str,
    tta: bool,
    resize: float | Literal["auto"],
    save_probability: bool | None,
    overwrite: bool,
    scheduler: str | None,
) -> None:
    """Segment every frame of RUN with a U-Net and store the class mask in it.

    Runs on the GPU when there is one, else on all CPU cores (ONNX Runtime when it
    is faster). An interrupted run resumes where it stopped.

    \b
    Example:
      crystalseg segment run.zarr --model model/
    """
    from crystalseg.segment import segment_run
    from crystalseg.segment.engine import DEFAULT_TILE_SIZE

    with _stage_bars(ctx.obj["quiet"]) as update:
        mask = segment_run(
            run,
            model,
            device=device,
            backend=backend,  # type: ignore[arg-type]
            batch_size=batch_size,
            compile=compile_,
            precision=precision,  # type: ignore[arg-type]
            tta=tta,
            resize=resize,
            save_probability=save_probability,
            overwrite=overwrite,
            client=scheduler,
            progress=lambda done, total: update("segment", done, total),
            tile_size=tile_size or DEFAULT_TILE_SIZE,
        )
    from crystalseg.store import stage_info
    from crystalseg.summary import resize_note

    classes = mask.attrs.get("flag_meanings", "")
    click.echo(f"mask of {mask.shape[0]} frames written to {run} (classes: {classes})")
    factor = float(stage_info(run)["segment"]["settings"].get("resize", 1.0))
    if factor != 1.0:
        click.echo(resize_note(factor))


_MEASURE_FILTER_OPTIONS: tuple[Callable[..., Any], ...] = (
    click.option(
        "--edge",
        type=click.Choice(["exclude", "miles-lantuejoul", "keep"]),
        default="exclude",
        show_default=True,
        help="Particles cut by the frame edge: exclude, weight (Miles-Lantuejoul) or keep.",
    ),
    click.option(
        "--min-area",
        "min_area_px",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="Pixels.",
    ),
    click.option(
        "--split",
        type=click.Choice(["auto", "watershed", "boundary", "hybrid", "none"]),
        default="auto",
        show_default=True,
        help="How touching crystals are split (auto: hybrid, i.e. the boundary class and "
        "necks, if the model has a boundary class, else the watershed).",
    ),
    click.option(
        "--trim-boundary/--no-trim-boundary",
        default=True,
        show_default=True,
        help="With a rim (boundary) class: drop its pixels more than 1 px outside a particle's "
        "interior (models draw the rim ~2 px wide, half outside the crystal).",
    ),
    click.option(
        "--join-occluded/--no-join-occluded",
        default=True,
        show_default=True,
        help="Count an elongated crystal that another crosses in front of as one particle, "
        "not one per visible piece.",
    ),
    click.option("--min-sharpness", type=float, default=None, help="Drop blurrier particles."),
    click.option(
        "--min-confidence",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        help="Drop particles whose mean model probability is below this "
        "[default: 0.8; 0 keeps all]. Needs the probability that segment and measure "
        "store (not with segment --no-save-probability or masks made elsewhere).",
    ),
)


def _measure_filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of :class:`~crystalseg.measure.MeasureSettings` that decide which
    particles are counted and how (``measure`` and ``evaluate`` share them)."""
    for option in reversed(_MEASURE_FILTER_OPTIONS):
        func = option(func)
    return func


def _measure_settings(opts: dict[str, Any], **extra: Any) -> Any:
    """MeasureSettings from the options of :func:`_measure_filter_options` (popped)."""
    from crystalseg.measure import MeasureSettings

    min_confidence = opts.pop("min_confidence")
    return MeasureSettings(
        edge=opts.pop("edge"),
        min_area_px=opts.pop("min_area_px"),
        split=opts.pop("split"),
        trim_boundary=opts.pop("trim_boundary"),
        join_occluded=opts.pop("join_occluded"),
        min_sharpness=opts.pop("min_sharpness"),
        min_confidence=MeasureSettings.min_confidence if min_confidence is None else min_confidence,
        **extra,
    )


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@_model_option
@_measure_filter_options
@click.option(
    "--bins",
    nargs=3,
    type=(float, float, int),
    default=None,
    metavar="MIN MAX N",
    callback=lambda ctx, param, value: _check_bins(value),
    help="Log size bins (um, or px without a pixel size). Default 1 1000 60.",
)
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["parquet", "csv"]),
    default=None,
    help="Also write the particle table next to RUN.",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=1),
    default=None,
    help="Least counted particles for a frame's D-values; fewer give NaN and a flag [default: 20].",
)
@click.option(
    "--window",
    default=None,
    metavar="LENGTH",
    help="Also pool consecutive frames into windows ('60s', '2min' or a frame count such "
    "as '5'): window PSDs and intervals in group psd_window.",
)
@click.option("--overwrite", is_flag=True, help="Replace results made with other settings.")
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Measure chunks while the next are segmented (default: only when inference is on a "
    "GPU; on the CPU both stages want the same cores).",
)
@_precision_option
@_tta_option
@_resize_option
@_scheduler_option
@click.pass_context
def measure(
    ctx: click.Context,
    run: Path,
    model: Path | None,
    bins: tuple[float, float, int] | None,
    export_format: str | None,
    min_count: int | None,
    window: str | None,
    overwrite: bool,
    stream: bool | None,
    precision: str,
    tta: bool,
    resize: float | Literal["auto"],
    scheduler: str | None,
    **filters: Any,
) -> None:
    """Measure every particle in every frame of RUN; PSD over time into the store.

    Segments the run first if it has no mask (bundled model unless --model). Writes
    group 'particles' (one row per particle per frame) and group 'psd' (time x size
    bin: number- and volume-weighted PSD, D10/D50/D90, moment means, counts, shape,
    each with its 95 % interval); with --window also group 'psd_window'.

    \b
    Example:
      crystalseg measure run.zarr --export csv
      crystalseg measure run.zarr --window 60s
    """
    from crystalseg.export import ExportSettings, export_run
    from crystalseg.measure import MeasureSettings
    from crystalseg.measure.results import summarize_measurement
    from crystalseg.measure.run import MeasureOptions, needs_segmentation
    from crystalseg.pipeline import segment_and_measure
    from crystalseg.summary import format_measurement

    settings = _measure_settings(
        filters,
        bins=bins or MeasureSettings.bins,
        min_count=MeasureSettings.min_count if min_count is None else min_count,
        window=window,
    )
    engine: Any = model
    asked = [
        name
        for name, on in (
            ("--model", model),
            ("--precision", precision != "auto"),
            ("--tta", tta),
            ("--resize", resize != "auto"),
        )
        if on
    ]
    if asked and not needs_segmentation(run):
        click.echo(
            f"note: {run} already has a mask, which is measured as it is; {', '.join(asked)} "
            f"{'applies' if len(asked) == 1 else 'apply'} only to segmenting (to redo the "
            "mask: crystalseg segment RUN ... --overwrite)",
            err=True,
        )
    elif tta or resize != "auto" or precision != "auto":  # the run is segmented here
        from crystalseg.segment import EngineSettings, load_segmenter

        engine_settings = EngineSettings(
            tta=tta,
            resize=resize,
            precision=precision,  # type: ignore[arg-type]
        )
        engine = load_segmenter(model, None, engine_settings)
    with _stage_bars(ctx.obj["quiet"]) as update:
        segment_and_measure(
            run,
            model=engine,
            options=MeasureOptions(settings, overwrite=overwrite, progress=update),
            client=scheduler,
            stream="auto" if stream is None else stream,
        )
    exported = None
    if export_format:
        fmt = ExportSettings(what=("particles",), format=export_format)  # type: ignore[arg-type]
        exported = export_run(run, run.parent, settings=fmt).files[0]
    click.echo(format_measurement(summarize_measurement(run), exported))


@cli.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_option
@click.option(
    "--codes",
    default="background,crystal",
    show_default=True,
    help="Classes of the annotation masks, background first (a 'boundary' class splits "
    "touching crystals).",
)
@click.option(
    "--mask-values",
    default=None,
    help="Stored mask values to classes, e.g. 0,255 or 0=background,255=crystal.",
)
@_instances_option
@click.option(
    "--pixel-size",
    "pixel_size_um",
    type=float,
    default=None,
    help="Micrometres per pixel of the images (D50 and outline offset in um).",
)
@_measure_filter_options
@click.option("--frame-step", default=1, show_default=True, help="Every n-th frame of run stores.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, mps.")
@_tta_option
@click.option(
    "--resize",
    default="auto",
    show_default=True,
    help="Resize frames by this factor before the model (as segment --resize; 'auto' "
    "picks one for all the frames); several, e.g. 1,0.5,0.25, score each and name the best.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the scores: .json (summary and frames) or .csv (one row per frame).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    data: tuple[Path, ...],
    model: Path | None,
    codes: str,
    mask_values: str | None,
    instances: bool,
    pixel_size_um: float | None,
    frame_step: int,
    device: str,
    tta: bool,
    resize: str,
    output: Path | None,
    **filters: Any,
) -> None:
    """Score a model's measurement on annotated DATA: IoU, F1, count, D50, outlines.

    DATA is what train reads: a folder of X.png / X_mask.png pairs, a folder with
    images/ and masks/, or synthetic run stores. Each image is segmented and
    measured as measure would, and compared with its annotation.

    \b
    Example:
      crystalseg evaluate annotated/ --mask-values 0,255 -o scores.csv
    """
    from crystalseg.evaluate import SCORE_SUFFIXES, evaluate_model, save_comparison
    from crystalseg.summary import format_evaluation, format_resize_comparison
    from crystalseg.train.masks import parse_mask_values

    if output is not None and output.suffix.lower() not in SCORE_SUFFIXES:  # before the work
        raise click.BadParameter("use a .json or .csv file", param_hint="--output")
    if output is not None:
        from crystalseg.store import check_output_folder

        if output.is_dir():
            raise click.BadParameter(
                f"'{output}' is a folder; give a file name", param_hint="--output"
            )
        check_output_folder(output.parent)
    factors = _resize_factors(resize)
    settings = _measure_settings(filters)
    rule = parse_mask_values(mask_values) if mask_values else None
    results = {}
    with _stage_bars(ctx.obj["quiet"]) as update:
        for factor in factors:
            stage = "evaluate" if len(factors) == 1 else f"evaluate at {factor:g}"
            results[factor] = evaluate_model(
                list(data),
                model=model,
                codes=_codes(codes),
                mask_values=rule,
                instances=instances,
                settings=settings,
                pixel_size_um=pixel_size_um,
                tta=tta,
                resize=factor,
                device=device,
                frame_step=frame_step,
                progress=functools.partial(update, stage),
            )
    if len(factors) == 1:
        result = results[factors[0]]
        if output is not None:
            result.save(output)
        click.echo(format_evaluation(result, output))
        return
    if output is not None:
        save_comparison(results, output)
    click.echo(format_resize_comparison(results, output))


def _resize_factors(text: str) -> list[Any]:
    """``"1,0.5"`` -> ``[1.0, 0.5]``, each in the engine's range, no repeats; or ``["auto"]``."""
    from crystalseg.segment.engine import MAX_RESIZE, MIN_RESIZE

    if text.strip() == "auto":
        return ["auto"]
    try:
        factors = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not a factor, 'auto' or a comma-separated list of factors "
            "(e.g. 1,0.5,0.25)",
            param_hint="--resize",
        ) from None
    bad = [f for f in factors if not MIN_RESIZE <= f <= MAX_RESIZE]
    if bad or len(set(factors)) != len(factors):
        raise click.BadParameter(
            f"factors must be distinct and lie in {MIN_RESIZE}..{MAX_RESIZE}, got '{text}'",
            param_hint="--resize",
        )
    return factors


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of the figures (default: <run>-plots next to the run; "
    "compare-plots next to the first of several).",
)
@click.option(
    "--format", "formats", default="png", show_default=True, help="Comma-separated: png,svg,pdf."
)
@click.option(
    "--basis",
    type=click.Choice(["number", "volume"]),
    default="number",
    show_default=True,
    help="Weighting of the size distribution and D-values.",
)
@click.option(
    "--times",
    default=None,
    help="Seconds of the PSD curves, e.g. 0,600,3600 (default: start, middle, end).",
)
def plot(
    runs: tuple[Path, ...],
    out_dir: Path | None,
    formats: str,
    basis: str,
    times: str | None,
) -> None:
    """Draw the PSD over time, D10/D50/D90 and count, PSD curves and crystal shape of RUN.

    Several runs also get one figure comparing their D50 and count over time.

    \b
    Example:
      crystalseg plot run.zarr --format png,pdf --times 0,600,3600
      crystalseg plot run1.zarr run2.zarr -o compare/
    """
    from crystalseg.errors import ConfigError
    from crystalseg.viz.plots import default_plot_dir, plot_run, plot_runs

    fmts = _codes(formats.lower())
    at = None
    if times is not None:
        try:
            at = [float(t) for t in _codes(times)]
        except ValueError:
            raise ConfigError(
                f"--times {times!r} is not a list of seconds; write e.g. --times 0,600,3600"
            ) from None
    out = out_dir or default_plot_dir(runs)
    if len(runs) == 1:
        written = plot_run(runs[0], out, formats=fmts, basis=basis, times=at)  # type: ignore[arg-type]
    else:
        written = plot_runs(runs, out, formats=fmts, basis=basis, times=at)  # type: ignore[arg-type]
    click.echo(f"{len(written)} figure files ({', '.join(fmts)}) written to {out}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(run: Path, as_json: bool) -> None:
    """Print frames, frame size, dtype, time span, calibration and the stages run on RUN."""
    if as_json:
        click.echo(json.dumps(_run_info(run), indent=2))
    else:
        _echo_info(run)


_color_by_option = click.option(
    "--color-by",
    type=click.Choice(["status", "size"]),
    default="status",
    show_default=True,
    help="Outline colour: counted (blue) or excluded (vermillion), or the particle's size.",
)


def _montage_option(default: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--montage",
        "montage_n",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="Frames, spread over the run, in the montage (0: none).",
    )


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="HTML file to write (default: RUN_report.html beside RUN; replaced if it exists).",
)
@click.option(
    "--basis",
    type=click.Choice(["number", "volume"]),
    default="number",
    show_default=True,
    help="Basis of the statistics and PSD-curve figures.",
)
@click.option(
    "--frames",
    "overlay_frames",
    default="-1",
    show_default=True,
    metavar="LIST",
    help="Frames drawn full size with outlines, e.g. 0,50,-1 (negative: from the end).",
)
@_montage_option(6)
@_color_by_option
def report(
    run: Path,
    output: Path | None,
    basis: str,
    overlay_frames: str,
    montage_n: int,
    color_by: str,
) -> None:
    """Write a self-contained HTML report of a measured RUN.

    Run metadata and calibration, warnings, a D10/D50/D90 summary, the PSD figures,
    segmentation overlays and the settings of every stage, in one file that opens
    offline in any browser.

    \b
    Example:
      crystalseg report run.zarr -o run_report.html --frames 0,50,-1
    """
    from crystalseg.errors import ConfigError
    from crystalseg.viz.report import ReportSettings, write_report

    try:
        frames = tuple(int(f) for f in overlay_frames.split(",") if f.strip())
    except ValueError:
        raise ConfigError(
            f"--frames {overlay_frames!r} is not a comma-separated list of frame indices; "
            "e.g. --frames 0,50,-1"
        ) from None
    settings = ReportSettings(
        basis=basis,  # type: ignore[arg-type]
        overlay_frames=frames,
        montage_n=montage_n,
        color_by=color_by,  # type: ignore[arg-type]
    )
    path, problems = write_report(run, output, settings=settings)
    from crystalseg.summary import counted

    click.echo(f"report written to {path} ({counted(len(problems), 'warning')})")
    for problem in problems:
        click.echo(f"  warning: {problem.message}")


@cli.command()
@click.argument(
    "directory", type=click.Path(path_type=Path), default=Path("crystalseg-demo"), required=False
)
@click.option("--frames", default=40, show_default=True, help="Frames of the synthetic run.")
@_size_option
@click.option("--seed", default=0, show_default=True, help="Random seed of the synthetic run.")
@click.option(
    "--scenario",
    default="nucleation",
    show_default=True,
    help="Synthetic scene type: nucleation (then growth, tens to hundreds of crystals a "
    "frame), clear, crowded, bubbles, needles, plates, mixed.",
)
@click.option("--overwrite", is_flag=True, help="Replace the demo's files in a non-demo folder.")
@click.pass_context
def demo(
    ctx: click.Context,
    directory: Path,
    frames: int,
    size: tuple[int, int],
    seed: int,
    scenario: str,
    overwrite: bool,
) -> None:
    """The tour: synthesise a run, measure it with the bundled model, plot and report.

    Writes into DIRECTORY (default ./crystalseg-demo): the run store, figures,
    overlays, a particle CSV and report.html. Takes a minute or two on a laptop.

    \b
    Example:
      crystalseg demo
    """
    from crystalseg.demo import format_demo, run_demo

    with _stage_bars(ctx.obj["quiet"]) as update:
        result = run_demo(
            directory,
            frames=frames,
            size=size,
            seed=seed,
            scenario=scenario,  # type: ignore[arg-type]
            overwrite=overwrite,
            progress=update,
        )
    click.echo(format_demo(result))


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--frames",
    default=None,
    metavar="LIST",
    help="Frames to draw, e.g. 0,50,-1 (negative: from the end). Default: first, middle, last.",
)
@_color_by_option
@_montage_option(9)
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of the PNGs (default: RUN_overlays beside RUN).",
)
def overlay(
    run: Path, frames: str | None, color_by: str, montage_n: int, output_dir: Path | None
) -> None:
    """Draw the measured particles' outlines on frames of RUN, to check the segmentation.

    Writes frame_NNNNN.png per frame and montage.png. Outlines are the particles as
    measured: blue counted, vermillion excluded (edge, focus, too small), or by size.

    \b
    Example:
      crystalseg overlay run.zarr --frames 0,50,-1 --color-by size
    """
    from crystalseg.viz.overlay import parse_frames, write_overlays

    out = output_dir or run.with_name(f"{run.stem}_overlays")
    paths = write_overlays(
        run,
        out,
        frames=parse_frames(frames) if frames is not None else None,
        color_by=color_by,  # type: ignore[arg-type]
        montage_n=montage_n,
    )
    click.echo(f"{len(paths)} overlay images written to {out}:")
    for path in paths:
        click.echo(f"  {path}")


@cli.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of the files (default: beside RUN), named RUN_<table>.csv, RUN.xlsx or "
    "RUN_<table>.parquet; with --format xlsx also a workbook file name (results.xlsx).",
)
@click.option(
    "--what",
    default=None,
    metavar="LIST",
    help="Tables, comma-separated: statistics (one row per frame), psd (per frame and size "
    "bin), particles, tracks [default: every table RUN holds].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "xlsx", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--sep",
    default=",",
    show_default=True,
    help="CSV column separator: ',', ';' or 'tab' (';' with --decimal ',' for German or "
    "French Excel).",
)
@click.option(
    "--decimal",
    type=click.Choice([".", ","]),
    default=".",
    show_default=True,
    help="CSV decimal mark.",
)
@click.option(
    "--bom/--no-bom",
    default=True,
    show_default=True,
    help="Start CSV files with a UTF-8 byte-order mark (Excel needs it to read UTF-8).",
)
@click.option(
    "--digits",
    type=int,
    default=6,
    show_default=True,
    help="Significant digits of decimals in CSV and xlsx (Parquet keeps all).",
)
def export_cmd(
    run: Path,
    out_dir: Path | None,
    what: str | None,
    fmt: str,
    sep: str,
    decimal: str,
    bom: bool,
    digits: int,
) -> None:
    """Write the results of a measured RUN as CSV, Excel or Parquet, units in every header.

    Tables: statistics (one row per frame: counts, D10/D50/D90, D[4,3], span, shape,
    number density), psd (one row per frame and size bin), particles, tracks. CSV and
    xlsx come with the run's metadata (calibration, model, settings, exclusions).

    \b
    Example:
      crystalseg export run.zarr --format xlsx
      crystalseg export run.zarr --what statistics,psd --sep ';' --decimal ','
    """
    from crystalseg.export import ExportSettings, export_run

    settings = ExportSettings(
        what=_codes(what) if what is not None else None,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        sep="\t" if sep in ("tab", "\\t") else sep,  # type: ignore[arg-type]
        decimal=decimal,  # type: ignore[arg-type]
        bom=bom,
        digits=digits,
    )
    result = export_run(run, out_dir if out_dir is not None else run.parent, settings=settings)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    rows = ", ".join(f"{name} {n:,} rows" for name, n in result.rows.items())
    click.echo(f"exported {rows} of {run}:")
    for path in result.files:
        click.echo(f"  {path}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
def upgrade(run: Path) -> None:
    """Add what this release writes to a RUN made by an earlier one, in place.

    OME-Zarr image and label metadata (napari and Fiji open it calibrated), the
    frames' x/y in micrometres, the probability read as uint8. No data is rewritten.

    \b
    Example:
      crystalseg upgrade run.zarr
    """
    from crystalseg.store.upgrade import upgrade_run

    changes = upgrade_run(run)
    click.echo(f"{run}: " + ("; ".join(changes) if changes else "already up to date"))


def _run_info(run: Path) -> dict[str, Any]:
    """:func:`~crystalseg.store.describe_run` plus why its measurement is out of date
    (``measure_outdated``, None when it is not)."""
    from crystalseg.measure.run import measurement_outdated
    from crystalseg.store import describe_run

    return {**describe_run(run), "measure_outdated": measurement_outdated(run)}


def _echo_info(run: Path) -> None:
    from crystalseg.summary import format_run_info

    click.echo(format_run_info(_run_info(run)))


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="crystalseg")


# --------------------------------------------------------------------------- kinetics


@cli.command("kinetics")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--depth-of-field",
    "depth_of_field_um",
    type=float,
    default=None,
    help="Depth of the imaged volume in micrometres: nucleation rates per mm³ too.",
)
@click.option(
    "--search-range",
    "search_range_px",
    type=float,
    default=None,
    help="Farthest a crystal moves between frames once the drift is removed, px (default 12).",
)
@click.option(
    "--memory",
    type=int,
    default=None,
    help="Frames a crystal may go unseen and keep its track (default 2).",
)
@click.option("--overwrite", is_flag=True, help="Replace kinetics made with other settings.")
@click.pass_context
def kinetics_cmd(
    ctx: click.Context,
    run: Path,
    depth_of_field_um: float | None,
    search_range_px: float | None,
    memory: int | None,
    overwrite: bool,
) -> None:
    """Track the crystals of a measured RUN: growth and nucleation rates, and the CLD.

    Writes group 'tracks' (crystals linked across frames, with how each started
    and ended), 'kinetics' (growth rates in µm/min and nucleation onset and rate
    per mm² per min, each with a 95 % interval) and 'cld' (the chord length
    distribution an FBRM probe would see, over time).

    \b
    Example:
      crystalseg kinetics run.zarr --depth-of-field 50
    """
    import dataclasses

    from crystalseg.errors import ConfigError
    from crystalseg.kinetics.nucleation import NucleationSettings
    from crystalseg.kinetics.run import KineticsSettings, kinetics_run
    from crystalseg.kinetics.tracking import TrackSettings

    tracking = TrackSettings()
    try:
        if search_range_px is not None:
            tracking = dataclasses.replace(tracking, search_range_px=search_range_px)
        if memory is not None:
            tracking = dataclasses.replace(tracking, memory=memory)
        nucleation = NucleationSettings(depth_of_field_um=depth_of_field_um)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (--depth-of-field, --search-range, --memory)") from exc
    settings = KineticsSettings(tracking=tracking, nucleation=nucleation)
    from tqdm import tqdm

    with tqdm(desc="kinetics", unit="frame", disable=ctx.obj["quiet"], file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        summary = kinetics_run(run, settings=settings, overwrite=overwrite, progress=progress)
    unit = summary.get("growth_units", "um/min")

    def interval(key: str) -> str:
        low, high = summary.get(f"{key}_low"), summary.get(f"{key}_high")
        if low is None or high is None or low != low or high != high:
            return ""
        return f" (95 % {low:.3g} to {high:.3g})"

    click.echo(f"{summary['n_tracks']} tracks; {summary['n_tracks_fitted']} with a growth rate")
    click.echo(
        f"growth rate (length): {summary['length_rate']:.3g} {unit}{interval('length_rate')}"
    )
    onset = summary.get("onset_s")
    if onset is None or onset != onset:
        click.echo("nucleation onset: none found (no sustained rise of new crystals)")
    else:
        low, high = summary["onset_low_s"], summary["onset_high_s"]
        click.echo(f"nucleation onset: {onset:.0f} s (95 % {low:.0f} to {high:.0f} s)")
    rate = summary["rate_per_mm2_min"]
    if rate is None or rate != rate:
        click.echo(
            f"nucleation rate: {summary['births']} births; per mm² only with a pixel size "
            f"(crystalseg calibrate {run} --pixel-size UM)"
        )
    else:
        click.echo(f"nucleation rate: {rate:.3g} per mm² per min{interval('rate_per_mm2_min')}")
