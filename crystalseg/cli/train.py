"""``train``: a U-Net from annotated frames; ``--resume`` takes the recorded options."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from crystalseg.cli.base import (
    Command,
    comma_list,
)
from crystalseg.cli.options import (
    instances_option,
)


@click.command(cls=Command)
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
@instances_option
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
        codes=comma_list(codes),
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
