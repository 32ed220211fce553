"""Options and click types that several commands share, so that a flag reads and
checks the same everywhere: the run argument, one frame-list type, one resize type,
the model / device options of segmenting and the particle filters of measuring."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

run_argument = click.argument("run", type=click.Path(path_type=Path))


class FrameList(click.ParamType):
    """Frame indices such as ``0,50,-1`` (negative: from the end), as a tuple of int.

    One type for every ``--frames`` option, so that each reads and refuses a list the
    same way; a list that is not one becomes one ``Error:`` line naming the option.
    """

    name = "LIST"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        from crystalseg.errors import ConfigError

        if isinstance(value, tuple):
            return value
        try:
            frames = tuple(int(f) for f in str(value).split(",") if f.strip())
        except ValueError:
            frames = ()
        if not frames:
            raise ConfigError(
                f"--frames {value!r} is not a comma-separated list of frame indices; "
                "e.g. --frames 0,50,-1"
            )
        return frames


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


def measure_filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of :class:`~crystalseg.measure.MeasureSettings` that decide which
    particles are counted and how (``measure`` and ``evaluate`` share them)."""
    for option in reversed(_MEASURE_FILTER_OPTIONS):
        func = option(func)
    return func


def measure_settings(opts: dict[str, Any], **extra: Any) -> Any:
    """MeasureSettings from the options of :func:`measure_filter_options` (popped)."""
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
