"""``kinetics``: tracks, growth and nucleation rates and the CLD of a measured run."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from crystalseg.cli.base import (
    Command,
)
from crystalseg.cli.options import (
    run_argument,
)


@click.command("kinetics", cls=Command)
@run_argument
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

    from crystalseg.errors import ConfigError
    from crystalseg.kinetics.nucleation import NucleationSettings
    from crystalseg.kinetics.run import KineticsSettings, format_kinetics, kinetics_run
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
    click.echo(format_kinetics(summary, run))
