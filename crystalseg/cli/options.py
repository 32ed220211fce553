"""Options and click types that several commands share, so that a flag reads and
checks the same everywhere: the run argument, one frame-list type, one resize type,
the model / device options of segmenting and the particle filters of measuring."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click


class RunLocation(click.ParamType):
    """A run store (or an output) given as a local path or as a URL on object storage
    (``s3://bucket/run.zarr``): a ``Path``, or a ``UPath`` for a URL
    (:func:`crystalseg.store.run_path`). ``click.Path`` would turn ``s3://b/r`` into the
    local ``s3:/b/r``; a URL no installed file system reads is one ``Error:`` line."""

    name = "PATH|URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from crystalseg.store import run_path

        return run_path(value)


#: The type of every run argument and of outputs that may go to object storage.
run_location = RunLocation()

run_argument = click.argument("run", type=run_location)


def expand_run_folders(
    ctx: click.Context, param: click.Parameter, value: tuple[Any, ...]
) -> tuple[Any, ...]:
    """RUN [RUN ...]: each run as given, except a local folder that is not itself a run
    store (no ``zarr.json``) but holds ``*.zarr`` folders, which stands for those,
    sorted by name. A run store is a zarr group, so this reads one way only; a folder
    with neither stays as given and fails as a run would (naming it). URLs are taken
    as given (give each run of a bucket)."""
    runs: list[Any] = []
    for path in value:
        inner = (
            sorted(p for p in path.glob("*.zarr") if p.is_dir())
            if isinstance(path, Path) and path.is_dir() and not (path / "zarr.json").exists()
            else []
        )
        runs.extend(inner or [path])
    return tuple(runs)


runs_argument = click.argument(
    "runs",
    nargs=-1,
    required=True,
    metavar="RUN...",
    type=run_location,
    callback=expand_run_folders,
)


class FrameList(click.ParamType):
    """Frame indices and inclusive ranges such as ``0,50,-1`` or ``0-9,-1`` (negative:
    from the end), as a tuple of int (:func:`crystalseg.viz.overlay.parse_frames`).

    One type for every ``--frames`` option, so that each reads and refuses a list the
    same way; a list that is not one becomes one ``Error:`` line naming the option.
    """

    name = "LIST"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        from crystalseg.errors import ConfigError
        from crystalseg.viz.overlay import parse_frames

        if isinstance(value, list | tuple):  # from an SOP file: [0, 50, -1] or ["0-9"]
            value = ",".join(str(v) for v in value)
        try:
            return parse_frames(str(value))
        except ConfigError:
            raise ConfigError(
                f"--frames {value!r} is not a comma-separated list of frame indices or "
                "ranges; e.g. --frames 0,50,-1 or --frames 0-9,-1"
            ) from None


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the summary as one JSON document on stdout (logs and progress: stderr).",
)


class CommaList(click.ParamType):
    """Names separated by commas (``statistics,psd``), or a TOML list of them from an
    SOP file, as a tuple of str."""

    name = "LIST"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list | tuple) else str(value).split(",")
        return tuple(s for s in (str(v).strip() for v in items) if s)


def n_frames_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--n-frames N``, the number of frames a command makes (synth, demo); the
    ``--frames N`` it replaces fails with a line naming the new flag (``--frames`` is
    a list of frame indices everywhere else)."""

    def refuse_old(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        from crystalseg.errors import ConfigError

        if value is not None:
            raise ConfigError(
                f"--frames is a list of frame indices in crystalseg; the number of frames "
                f"to make is --n-frames (e.g. --n-frames {value})"
            )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--frames", hidden=True, expose_value=False, callback=refuse_old, default=None
        )(func)
        return click.option(
            "--n-frames",
            type=int,
            default=40,
            show_default=True,
            help=help,
        )(func)

    return decorate


def check_bins(value: tuple[float, float, int] | None) -> tuple[float, float, int] | None:
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


size_option = click.option(
    "--size",
    nargs=2,
    type=int,
    default=(512, 512),
    show_default=True,
    metavar="H W",
    help="Frame height and width in pixels.",
)


instances_option = click.option(
    "--instances",
    is_flag=True,
    help="Masks hold one integer id per crystal (0 background), as Cellpose, napari or "
    "QuPath export them.",
)


def scheduler_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="dask.distributed scheduler (tcp://host:8786); default: all cores here.",
    )(func)


def model_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model",
        type=click.Path(path_type=Path),
        default=None,
        help="Checkpoint directory from crystalseg train (default: the bundled model).",
    )(func)


tta_option = click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: average the model over 8 flips/turns of each frame "
    "(fewer false detections, 8x the inference time).",
)

precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "int8", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Number format of the model. auto: bf16 on a GPU; on the CPU int8 where the CPU "
    "has VNNI, int8 is faster and its masks agree with fp32 (measured once per model), "
    "else fp32. int8 forces the quantized model (CPU, ONNX Runtime); fp32 forbids it.",
)


class ResizeFactor(click.ParamType):
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


resize_option = click.option(
    "--resize",
    type=ResizeFactor(),
    default="auto",
    show_default=True,
    help="Resize frames by this factor before the model (masks keep the frame size): "
    "0.5 or 0.25 for crystals far larger in pixels than the model knows (high "
    "magnification, wide blurred edges). 'auto' picks one factor per run where the "
    "model's masks are most stable across scales (1 for crystals of the size it knows).",
)


@dataclass(frozen=True)
class Area:
    """An area as given to ``--min-area``: ``value`` in ``unit``, and the text."""

    value: float
    unit: Literal["px", "um2"]
    text: str


class MinArea(click.ParamType):
    """``--min-area``: ``12`` or ``12px`` (pixels, whole), ``20um2`` (also ``20µm²``,
    ``20 um^2``): an :class:`Area`. Plain numbers are pixels, as before units were
    accepted: a run without a pixel size has no other area, and the stored settings
    (``min_area_px``) are pixels either way."""

    name = "AREA"

    def convert(self, value: Any, param: Any, ctx: Any) -> Area:
        if isinstance(value, Area):
            return value
        text = str(value).strip()
        match = _AREA.fullmatch(text.lower().replace("µ", "u").replace("²", "2"))
        number = float(match["number"]) if match else math.nan
        unit = "px" if match is None or match["unit"] in (None, "px") else "um2"
        if not (math.isfinite(number) and number > 0) or (unit == "px" and number % 1):
            self.fail(
                f"{value!r} is not an area: give whole pixels (12 or 12px) or um2 (20um2)",
                param,
                ctx,
            )
        return Area(number, unit, text)  # type: ignore[arg-type]


_AREA = re.compile(r"(?P<number>[0-9.eE+-]+)\s*(?P<unit>px|um2|um\^2|um\*\*2)?")


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
        type=MinArea(),
        default="10px",
        show_default=True,
        help="Least particle area: pixels ('12' or '12px'), or um2 on a calibrated run "
        "('20um2', converted with the run's pixel size; the conversion is printed and "
        "recorded). Smaller particles are dropped before measuring.",
    ),
    click.option(
        "--split",
        type=click.Choice(["auto", "watershed", "boundary", "hybrid", "distance", "none"]),
        default="auto",
        show_default=True,
        help="How touching crystals are split (auto: hybrid, i.e. the boundary class and "
        "necks, if the model has a boundary class, else the watershed; distance: "
        "watershed of the distance to background and boundary class).",
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


def measure_filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of :class:`~crystalseg.measure.MeasureSettings` that decide which
    particles are counted and how (``measure`` and ``evaluate`` share them)."""
    for option in reversed(_MEASURE_FILTER_OPTIONS):
        func = option(func)
    return func


def measure_settings(
    opts: dict[str, Any],
    *,
    pixel_size_um: float | None,
    calibrate: str = "crystalseg calibrate RUN --pixel-size UM",
    **extra: Any,
) -> tuple[Any, dict[str, Any] | None]:
    """MeasureSettings from the options of :func:`measure_filter_options` (popped), and
    the conversion of a ``--min-area`` given in um2 (None for pixels), said on stderr;
    ``calibrate`` is how the caller sets the pixel size it lacks.

    Raises
    ------
    ConfigError
        ``--min-area`` in um2 without a pixel size.
    """
    from crystalseg.errors import ConfigError
    from crystalseg.measure import MeasureSettings
    from crystalseg.measure.settings import min_area_px_from_um2

    area: Area = opts.pop("min_area")
    conversion = None
    if area.unit == "px":
        min_area_px = int(area.value)
    elif pixel_size_um is None:
        raise ConfigError(
            f"--min-area {area.text} is an area in um2, but there is no pixel size to "
            f"convert it with; give it in pixels (e.g. --min-area 12px) or set the pixel "
            f"size ({calibrate})"
        )
    else:
        min_area_px = min_area_px_from_um2(area.value, pixel_size_um)
        conversion = {
            "given": area.text,
            "um2": area.value,
            "pixel_size_um": pixel_size_um,
            "px": min_area_px,
        }
        click.echo(
            f"note: --min-area {area.value:g} um2 is {area.value / pixel_size_um**2:.4g} px "
            f"at {pixel_size_um:g} um/px: particles under {min_area_px} px are dropped",
            err=True,
        )
    min_confidence = opts.pop("min_confidence")
    settings = MeasureSettings(
        edge=opts.pop("edge"),
        min_area_px=min_area_px,
        split=opts.pop("split"),
        trim_boundary=opts.pop("trim_boundary"),
        join_occluded=opts.pop("join_occluded"),
        min_sharpness=opts.pop("min_sharpness"),
        min_confidence=MeasureSettings.min_confidence if min_confidence is None else min_confidence,
        **extra,
    )
    return settings, conversion


color_by_option = click.option(
    "--color-by",
    type=click.Choice(["status", "size"]),
    default="status",
    show_default=True,
    help="Outline colour: counted (blue) or excluded (vermillion), or the particle's size.",
)


def montage_option(default: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--montage",
        "montage_n",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="Frames, spread over the run, in the montage (0: none).",
    )
