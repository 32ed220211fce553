"""What every command shares that is not an option: the error handling (a
:class:`~crystalseg.errors.CrystalsegError` or a failing file system becomes one
``Error:`` line), logging through progress bars, progress bars fed by the library's
callbacks, and the run summary that import, calibrate, synth and info print."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from crystalseg.errors import CrystalsegError, explain_failure


def _given_paths(params: dict[str, Any]) -> list[Path]:
    """The paths among a command's parameters, run stores first (error messages name them)."""
    paths: list[Path] = []
    for value in params.values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Path):
                paths.append(item)
    return sorted(paths, key=lambda p: p.suffix != ".zarr")


class Command(click.Command):
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


class Group(click.Group):
    """Turns a :class:`CrystalsegError` into one line on stderr and exit status 1, and
    Ctrl-C into a line saying the work can be resumed and exit status 130."""

    command_class = Command

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


def configure_logging(verbose: int, quiet: bool) -> None:
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
def progress_bar(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (frames, rate, time left) fed by the library's progress callbacks."""
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="frame", disable=quiet, file=sys.stderr) as bar:
        yield bar.update


@contextmanager
def stage_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
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


def run_info(run: Path) -> dict[str, Any]:
    """:func:`~crystalseg.store.describe_run` plus why its measurement is out of date
    (``measure_outdated``, None when it is not)."""
    from crystalseg.measure.run import measurement_outdated
    from crystalseg.store import describe_run

    return {**describe_run(run), "measure_outdated": measurement_outdated(run)}


def echo_info(run: Path) -> None:
    from crystalseg.summary import format_run_info

    click.echo(format_run_info(run_info(run)))


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())
