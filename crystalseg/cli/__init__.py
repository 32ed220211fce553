"""The ``crystalseg`` command line: commands parse, resolve paths and call one library function.

The group is here; each command lives in a module of its own (``runs``: import,
calibrate, info, upgrade; ``synth``: synth, demo; ``train``, ``segment``, ``measure``,
``evaluate``, ``plot``: plot, overlay; ``report``, ``export``, ``kinetics``), built from
the shared options and click types of :mod:`crystalseg.cli.options` and the error
handling, logging and progress bars of :mod:`crystalseg.cli.base`.
"""

from __future__ import annotations

import click

from crystalseg.cli.base import Group, configure_logging
from crystalseg.cli.evaluate import evaluate
from crystalseg.cli.export import export_cmd
from crystalseg.cli.kinetics import kinetics_cmd
from crystalseg.cli.measure import measure
from crystalseg.cli.plot import overlay, plot
from crystalseg.cli.report import report
from crystalseg.cli.runs import calibrate, import_cmd, info, upgrade
from crystalseg.cli.segment import segment
from crystalseg.cli.synth import demo, synth
from crystalseg.cli.train import train

__all__ = ["cli", "main"]


@click.group(cls=Group)
@click.version_option(package_name="crystalseg")
@click.option("-v", "--verbose", count=True, help="Debug log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """crystalseg: particle size and shape distributions from crystallization time-lapses."""
    configure_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet}


for _command in (
    import_cmd, calibrate, info, upgrade, synth, demo, train, segment, measure, evaluate,
    plot, overlay, report, export_cmd, kinetics_cmd,
):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="crystalseg")
