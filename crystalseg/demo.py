"""The one-command tour: a synthetic run measured with the bundled model, plotted and reported.

``crystalseg demo [DIR]`` calls :func:`run_demo`, which writes into one folder::

    DIR/
        run.zarr/          the synthetic run store: frames, truth, mask, particles, psd
        figures/           PSD heatmap, D10/D50/D90 over time, PSD curves, shape (PNG)
        overlays/          particle outlines on the first, middle and last frames, montage
        particles.csv      one row per particle per frame, for a spreadsheet
        report.html        everything above in one self-contained page
        .crystalseg-demo   marks the folder as a demo folder (safe to replace)

Each step is the library function a user would call on a real recording, so
the demo is also the shortest example of the pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crystalseg.errors import ConfigError, CrystalsegError, StageStateError
from crystalseg.store import PROVENANCE_KEY, RunPath, read_run_attrs
from crystalseg.synth import SynthConfig
from crystalseg.synth.scenarios import SCENARIO_NAMES, Scenario, ScenarioName, get_scenario

log = logging.getLogger(__name__)

#: File that marks a folder as written by :func:`run_demo`.
DEMO_MARKER = ".crystalseg-demo"
DEFAULT_DIRECTORY = Path("crystalseg-demo")

#: What the demo writes inside its folder; only these are replaced on a rerun.
RUN_NAME = "run.zarr"
FIGURES_DIR = "figures"
OVERLAYS_DIR = "overlays"
PARTICLES_CSV = "particles.csv"
REPORT_NAME = "report.html"
_OUTPUTS = (RUN_NAME, FIGURES_DIR, OVERLAYS_DIR, PARTICLES_CSV, REPORT_NAME, DEMO_MARKER)

#: The demo's scene: a crystallization as a microscope records it. No crystals at
#: first; after an induction of an eighth of the run a burst of nucleation (the first
#: third after it) of ~1400 crystals per megapixel, which then grow (to ~50 px long), so
#: that a 512 x 512 frame holds tens and then over a hundred crystals, few touching,
#: and the PSD moves to larger sizes. Kept out of the training scenarios
#: (:data:`~crystalseg.synth.SCENARIO_NAMES`): the bundled model never saw it.
DEMO_SCENARIO = Scenario(
    "nucleation",
    habit_weights=(0.55, 0.15, 0.30),
    habit_concentration=20.0,
    seeds_per_mpx=(0.0, 0.0),
    nuclei_per_mpx=(1300.0, 1500.0),
    induction_fraction=(0.1, 0.15),
    nucleation_fraction=0.35,
    nucleus_length_px=(4.0, 7.0),
    growth_px=(40.0, 50.0),
    growth_dispersion=(0.2, 0.3),
    agglomerate_fraction=(0.0, 0.02),
    min_gap_px=2.0,
    bubbles_per_mpx=(0.0, 3.0),
    bubble_radius_px=(4.0, 12.0),
    drift_px_per_frame=(0.0, 0.5),
    zoom=(1.0, 1.2),
    depth_spread=0.3,
)
#: Pooled windows of the demo's measurement (six frames of 10 s).
DEMO_WINDOW = "60s"
#: Scene types of the demo: its own (default) and the synthetic scenarios.
DEMO_SCENARIOS: tuple[str, ...] = (DEMO_SCENARIO.name, *SCENARIO_NAMES)

#: Callback ``(step, frames_done, frames_total)`` of the steps "synth", "segment" and
#: "measure"; the figures and the report (seconds) are logged instead.
DemoProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoResult:
    """Where :func:`run_demo` wrote everything.

    Attributes
    ----------
    directory : the demo folder
    run : the measured run store
    report : the HTML report
    figures : PSD figures (PNG)
    overlays : overlay PNGs (frames, then the montage)
    particles_csv : the particle table as CSV
    warnings : the report's warnings, one sentence each
    seconds : wall time of the whole demo
    """

    directory: Path
    run: Path
    report: RunPath
    figures: tuple[RunPath, ...]
    overlays: tuple[RunPath, ...]
    particles_csv: RunPath
    warnings: tuple[str, ...]
    seconds: float

    def files(self) -> list[RunPath]:
        """Every file the demo promises (the run store counts as one)."""
        return [self.run, self.report, self.particles_csv, *self.figures, *self.overlays]


def _check_directory(directory: Path, *, overwrite: bool) -> None:
    """Refuse a folder that holds something other than an earlier demo, unless overwrite."""
    if directory.exists() and not directory.is_dir():
        raise StageStateError(
            f"'{directory}' is a file, not a folder; choose another demo folder, "
            "e.g. 'crystalseg demo crystalseg-demo'"
        )
    run = directory / RUN_NAME
    if (run.exists() or run.is_symlink()) and not _made_by_demo(directory):
        raise StageStateError(
            f"'{run}' was not made by the demo; the demo never replaces it. Move it away or "
            "choose another demo folder, e.g. 'crystalseg demo crystalseg-demo'"
        )
    if not directory.exists() or (directory / DEMO_MARKER).exists() or overwrite:
        return
    if any(directory.iterdir()):
        raise StageStateError(
            f"'{directory}' exists and is not a crystalseg demo folder; choose an empty or new "
            "folder, or pass --overwrite to replace the demo's files in it "
            f"({', '.join(_OUTPUTS[:-1])})"
        )


def _made_by_demo(directory: Path) -> bool:
    """Whether ``directory/run.zarr`` is the run an earlier demo synthesised there: the
    folder's marker names the run's creation time (markers of releases that did not
    record it vouch for the folder)."""
    try:
        marker = json.loads((directory / DEMO_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or not marker.get("demo"):
        return False
    if "run_created" not in marker:
        return True
    try:
        created = read_run_attrs(directory / RUN_NAME).get(PROVENANCE_KEY, {}).get("created")
    except (CrystalsegError, OSError):
        return False
    return bool(created == marker["run_created"])


def _clear_outputs(directory: Path) -> None:
    for name in _OUTPUTS:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def run_demo(
    directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
    *,
    frames: int = 40,
    size: tuple[int, int] = (512, 512),
    scenario: ScenarioName | Literal["nucleation"] = "nucleation",
    seed: int = 0,
    overwrite: bool = False,
    progress: DemoProgress | None = None,
    scheduler: Literal["processes", "threads", "synchronous"] = "processes",
) -> DemoResult:
    """Synthesise a short run, measure it with the bundled model, write plots and a report.

    Parameters
    ----------
    directory : folder to write into (created); see the module docstring for its layout
    frames : frames of the synthetic run (>= 2)
    size : (height, width) of the frames in pixels (>= 64 each)
    scenario : scene type: "nucleation" (:data:`DEMO_SCENARIO`, nucleation then growth of
        tens to hundreds of crystals a frame) or a synthetic scenario of
        :data:`crystalseg.synth.SCENARIO_NAMES`
    seed : the run follows from it; the same seed gives the same run
    overwrite : replace the demo's files in a folder that is not an earlier demo
        folder (other files in it are left alone). An earlier demo folder is
        always replaced.
    progress : callable (step, done, total), optional
        Called as the synth, segment and measure steps advance, with frames done.
    scheduler : {"processes", "threads", "synchronous"}
        Local dask scheduler of the measurement (processes need the caller's
        script to be importable, i.e. guarded by ``if __name__ == "__main__"``).

    Returns
    -------
    DemoResult

    Raises
    ------
    StageStateError
        ``directory`` holds other files and ``overwrite`` is False.
    ConfigError
        Too few frames or too small a frame.
    """
    from crystalseg.export import export_particles
    from crystalseg.kinetics import kinetics_run
    from crystalseg.measure import MeasureOptions, MeasureSettings
    from crystalseg.pipeline import segment_and_measure
    from crystalseg.synth import synthesize_run
    from crystalseg.viz.overlay import write_overlays
    from crystalseg.viz.plots import plot_run
    from crystalseg.viz.report import ReportSettings, write_report

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ConfigError(f"the demo needs frames >= 2, got {frames!r}")
    if len(size) != 2 or not all(isinstance(v, int) and v >= 64 for v in size):
        raise ConfigError(f"size must be (height, width) of at least 64 px each, got {size!r}")
    scene = DEMO_SCENARIO if scenario == DEMO_SCENARIO.name else get_scenario(scenario)
    config = SynthConfig(frames=frames, height=size[0], width=size[1], seed=seed, scenario=scene)
    directory = Path(directory)
    _check_directory(directory, overwrite=overwrite)

    def report(step: str, done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    _clear_outputs(directory)
    (directory / DEMO_MARKER).write_text(
        json.dumps({"demo": True, "config": _config_dict(config)}, indent=2) + "\n",
        encoding="utf-8",
    )
    run = directory / RUN_NAME
    log.info("synthesising %d frames of %d x %d px into %s", frames, *size, run)
    report("synth", 0, frames)
    synthesize_run(run, config, progress=lambda done: report("synth", done, frames))
    created = read_run_attrs(run).get(PROVENANCE_KEY, {}).get("created")
    (directory / DEMO_MARKER).write_text(
        json.dumps({"demo": True, "config": _config_dict(config), "run_created": created}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    log.info("segmenting with the bundled model and measuring %s", run)
    # Pooled windows of a minute: the first frames after nucleation hold too few crystals
    # for D-values of their own.
    options = MeasureOptions(
        MeasureSettings(window=DEMO_WINDOW), progress=report, scheduler=scheduler
    )
    segment_and_measure(run, options=options)
    log.info("tracking the crystals: growth and nucleation rates, chord lengths")
    kinetics_run(run, progress=lambda done, total: report("kinetics", done, total))
    particles_csv = export_particles(run, directory / PARTICLES_CSV, format="csv")

    log.info("writing figures, overlays and the report")
    figures = plot_run(run, directory / FIGURES_DIR, formats=("png",), basis="number")
    overlays = write_overlays(run, directory / OVERLAYS_DIR, color_by="status", montage_n=9)
    report_path, problems = write_report(
        run, directory / REPORT_NAME, settings=ReportSettings(montage_n=6)
    )
    seconds = time.perf_counter() - start
    log.info("demo finished in %.0f s", seconds)
    return DemoResult(
        directory=directory,
        run=run,
        report=report_path,
        figures=tuple(figures),
        overlays=tuple(overlays),
        particles_csv=particles_csv,
        warnings=tuple(w.message for w in problems),
        seconds=seconds,
    )


def _config_dict(config: SynthConfig) -> dict[str, Any]:
    return {
        "frames": config.frames,
        "height": config.height,
        "width": config.width,
        "seed": config.seed,
        "scenario": config.scenario_params.name,
    }


def format_demo(result: DemoResult) -> str:
    """What ``crystalseg demo`` prints: where everything is and what to try next."""
    lines = [
        f"demo finished in {result.seconds:.0f} s; everything is in {result.directory}/",
        f"  report       {result.report}   <- open this in a browser",
        f"  run store    {result.run}",
        f"  particles    {result.particles_csv}",
    ]
    lines += [f"  figure       {p}" for p in result.figures]
    lines += [f"  overlay      {p}" for p in result.overlays]
    if result.warnings:
        lines.append(f"  warnings     {len(result.warnings)} (listed in the report)")
    lines += [
        "next:",
        f"  crystalseg info {result.run}",
        f"  python -c \"import xarray as xr; print(xr.open_zarr('{result.run}', group='psd'))\"",
        "  crystalseg import YOUR_FRAMES/ run.zarr --pixel-size UM --interval S && "
        "crystalseg measure run.zarr && crystalseg report run.zarr",
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_DIRECTORY",
    "DEMO_MARKER",
    "DemoProgress",
    "DemoResult",
    "format_demo",
    "run_demo",
]
