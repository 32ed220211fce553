"""kill -9 trials: real ``crystalseg`` commands killed at random points, then run again.

Issue 29, "never lose a run": a command that is killed outright (``kill -9``, the
OOM killer, a closed laptop lid) must leave its store readable (or say in one line
that it is incomplete), its lock must be taken over by the next command, and running
the same command again must end with the result an uninterrupted run gives.

Each trial copies a prepared starting state into a fresh folder, starts a real
``crystalseg`` process there, kills it with SIGKILL at a point drawn from a seeded
generator, checks what it left behind, runs the command again and compares the
result with that of an uninterrupted run of the same command (arrays and tables,
not file bytes). Kill points (:class:`KillPoint`): when the stage has marked
``k`` chunks done in its progress record (``_progress/<stage>``, polled every
few milliseconds; ``k`` equal to the number of chunks falls into the finish and
the swap), or after a delay within the command's measured duration (training,
which keeps no progress record in a store).

Stages (:data:`SCENARIOS`): ``import`` (a TIFF stack), ``segment`` (a tiny
checkpoint made by our own code, ``--model``), ``measure`` (a run whose mask is
the synthetic truth), ``measure-segment`` (a run without a mask: measure segments
it first), ``measure-replace`` (``measure --edge keep --overwrite`` over a finished
measurement: the old results must stay readable and unchanged after the kill, and
running again, with or without ``--overwrite``, finishes the replacement) and
``train`` (``crystalseg train PAIRS -o DIR``, finished with ``--resume``).

:func:`concurrent_trials` starts two ``crystalseg measure RUN`` processes on one
store at once: one must be refused with the holder's PID (``refused``) or run after
the other finished and find nothing to do (``serialised``); anything else, a
traceback or a damaged store, is ``broken``.

Every process is pinned to one core (``cores``): on a busy 2-core machine two
PyTorch threads spinning against other work made a 64 x 64 frame 100x slower.

    python benchmarks/kill_resume.py [--trials 10] [--concurrent 10] [--seed 0]
        [--stages import,segment,...] [--workdir DIR]

Prints one JSON document: per stage and in total ``tried``, ``killed`` (the kill
landed before the command ended), ``resumed_identical``, ``differs`` (finished
with another result), ``lost`` (finished results damaged, or the store could not be
finished by running the command again: must be 0), ``tracebacks`` (must be 0),
``lock_taken_over`` (the rerun took over the dead process's lock, with the warning)
and the seconds taken; and the ``concurrent`` counts. ``kill_trials`` and
``concurrent_trials`` return the same dictionaries, for ``benchmarks/faults.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Frames of the imported and segmented runs, and their chunking (frames per chunk).
FRAMES, SIZE, FPC = 16, 48, 2
#: Frames of the synthetic run measured with its true mask.
SYNTH_FRAMES, SYNTH_SIZE = 12, 64

Arrays = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- processes


def cli_command() -> list[str]:
    """How to start the real ``crystalseg`` command: the console script of this Python
    (``crystalseg.cli`` has no ``__main__``), else the same entry point through ``-c``."""
    script = Path(sys.executable).with_name("crystalseg")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from crystalseg.cli import main; main()"]


def _pin(cores: frozenset[int]) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin


def default_cores() -> frozenset[int]:
    """One core this process may run on (the last one)."""
    return frozenset({max(os.sched_getaffinity(0))})


@dataclass
class Proc:
    """A started ``crystalseg`` process and where its output goes."""

    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")


#: Runs the CLI with one function replaced by one that kills the process (SIGKILL) at
#: its nth call whose first argument matches a regular expression, before or after the
#: call: ``-c KILL_IN MODULE:NAME NTH before|after PATTERN -- ARGS``.
KILL_IN = """
import importlib, os, re, signal, sys
where, nth, when, pattern = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
module, name = where.split(":")
target = importlib.import_module(module)
original = getattr(target, name)
calls = [0]
def killing(*args, **kwargs):
    if re.search(pattern, str(args[0] if args else "")):
        calls[0] += 1
        if calls[0] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return original(*args, **kwargs)
setattr(target, name, killing)
sys.argv = ["crystalseg", *sys.argv[6:]]
from crystalseg.cli import main
main()
"""


@dataclass(frozen=True)
class KillIn:
    """Kill the command inside a given call: at the ``nth`` call of ``where``
    (``module:function``) whose first argument matches the regular expression
    ``text``, ``before`` or ``after`` it runs. For windows that random kill points
    rarely hit."""

    where: str
    when: Literal["before", "after"] = "before"
    nth: int = 1
    text: str = ""

    def describe(self) -> str:
        return f"{self.when} call {self.nth} of {self.where}" + (
            f" on {self.text!r}" if self.text else ""
        )


def start(
    args: Sequence[str],
    cwd: Path,
    logs: Path,
    tag: str,
    cores: frozenset[int],
    cache: Path,
    kill_in: KillIn | None = None,
) -> Proc:
    """Start ``crystalseg ARGS`` in ``cwd`` in its own session (to find its children)."""
    command = cli_command()
    if kill_in is not None:
        command = [
            sys.executable, "-c", KILL_IN, kill_in.where, str(kill_in.nth), kill_in.when,
            kill_in.text, "--",
        ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["CRYSTALSEG_CACHE_DIR"] = str(cache)
    env.pop("PYTHONWARNINGS", None)
    out, err = logs / f"{tag}.out", logs / f"{tag}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        popen = subprocess.Popen(
            [*command, "-q", *args],
            cwd=cwd,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_pin(cores),
        )
    return Proc(popen, out, err, time.perf_counter())


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` still alive (zombies left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def reap_session(sid: int, wait_s: float = 20.0) -> tuple[int, float, int]:
    """Wait for the leftover processes of a killed command's session (its worker
    processes) to end by themselves; kill the ones that outlive ``wait_s``.

    Returns
    -------
    (left, seconds, hung) : how many were alive at the call, how long until the last
        ended, how many were still alive (working or waiting) after ``wait_s``, killed then
    """
    t0 = time.perf_counter()
    left = session_members(sid)
    while session_members(sid) and time.perf_counter() - t0 < wait_s:
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    hung = session_members(sid)
    for pid in hung:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(left), seconds if left else 0.0, len(hung)


# ----------------------------------------------------------------------------- kill points


@dataclass(frozen=True)
class KillPoint:
    """Where a trial kills its command.

    ``chunks``: once ``count`` chunks are marked done over the progress records of
    the scenario (in order; ``count`` = all of them lands in the finish and swap);
    ``delay``: ``seconds`` after the start.
    """

    kind: Literal["chunks", "delay"]
    count: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind == "chunks":
            return f"after {self.count} chunks marked done"
        return f"after {self.seconds:.2f} s"


def chunks_done(store: Path, record: str) -> int | None:
    """Chunks marked done in ``_progress/<record>`` (None: no such record yet); the
    number of chunk files, each written once its chunk is done (atomically)."""
    folder = store / "_progress" / record
    if not (folder / "zarr.json").exists():
        return None
    try:
        return sum(1 for p in (folder / "c").iterdir() if not p.name.endswith(".partial"))
    except FileNotFoundError:
        return 0


def wait_and_kill(proc: Proc, point: KillPoint, store: Path, records: Sequence[str]) -> bool:
    """Kill ``proc`` with SIGKILL at ``point``; False if it ended before."""
    while proc.popen.poll() is None:
        if point.kind == "delay":
            due = time.perf_counter() - proc.started >= point.seconds
        else:
            total, seen = 0, False
            for record in records:
                done = chunks_done(store, record)
                if done is not None:
                    seen = True
                    total += done
            due = seen and total >= point.count
        if due:
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait()
            return True
        time.sleep(0.003)
    return False


# ----------------------------------------------------------------------------- results


def _store_arrays(store: Path, names: Sequence[str]) -> Arrays:
    import zarr

    group = zarr.open_group(str(store), mode="r", use_consolidated=False)
    return {name: np.asarray(group[name][:]) for name in names}  # type: ignore[index]


def frame_result(names: Sequence[str]) -> Callable[[Path], Arrays]:
    def read(trial: Path) -> Arrays:
        return _store_arrays(trial / "run.zarr", names)

    return read


def measurement_result(trial: Path) -> Arrays:
    """Every variable of group ``psd`` and every column of table ``particles``."""
    import xarray as xr

    from crystalseg.store import read_table

    store = trial / "run.zarr"
    with xr.open_zarr(str(store), group="psd", consolidated=False) as psd:
        arrays = {f"psd/{k}": np.asarray(v.values) for k, v in psd.variables.items()}
    table = read_table(store, "particles")
    arrays.update({f"particles/{c}": table[c].to_numpy() for c in table.columns})
    return arrays


def training_result(trial: Path) -> Arrays:
    """Weights of the best and the last checkpoint, and the training history."""
    from safetensors.numpy import load_file

    out = trial / "trained"
    arrays: Arrays = {}
    for sub in ("", "last"):
        for key, value in load_file(str(out / sub / "model.safetensors")).items():
            arrays[f"{sub or 'best'}/{key}"] = value
    meta = json.loads((out / "last" / "model.json").read_text())["training"]
    history = meta.get("history") or []
    arrays["epochs_done"] = np.array(meta.get("epochs_done"))
    arrays["train_loss"] = np.array([h["train_loss"] for h in history])
    return arrays


def compare(a: Arrays, b: Arrays, *, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    """None when ``a`` and ``b`` hold the same names and equal values (NaN equal to NaN),
    else what differs first; float values within ``rtol``/``atol`` count as equal."""
    if sorted(a) != sorted(b):
        return f"names differ: {sorted(set(a) ^ set(b))}"
    for name in sorted(a):
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.dtype.kind in "fc" and (rtol or atol):
            if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                return f"{name}: max |difference| {np.nanmax(np.abs(x - y)):.3g}"
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return f"{name}: values differ"
    return None


def max_difference(a: Arrays, b: Arrays) -> float:
    """Largest absolute difference over the float arrays of equal shape."""
    worst = 0.0
    for name in a.keys() & b.keys():
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape == y.shape and x.dtype.kind == "f":
            gaps = np.abs(x.astype("f8") - y.astype("f8"))
            gaps = gaps[np.isfinite(gaps)]
            worst = max(worst, float(gaps.max())) if gaps.size else worst
    return worst


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One command to kill, from one starting state.

    Attributes
    ----------
    name : the stage as reported
    base : folder of the prepared workspace copied into each trial ("" nothing)
    args : the command (without ``crystalseg``), run in the trial folder
    reruns : the commands that finish it after a kill; a trial picks one (seeded)
    store : the run store the command writes ("" none: training)
    records : progress records polled for the kill points, in the order written
    chunks : chunks over all ``records``
    result : reads what the command made, for comparison
    before : reads the results that must survive the kill unchanged (a replacement)
    rtol, atol : tolerance of float results (none: every stage resumes bit for bit)
    progress_store : where the progress ``records`` are, when not in ``store`` (a
        store that replaces a whole run is written beside it)
    """

    name: str
    base: str
    args: tuple[str, ...]
    reruns: tuple[tuple[str, ...], ...]
    store: str
    records: tuple[str, ...]
    chunks: int
    result: Callable[[Path], Arrays]
    before: Callable[[Path], Arrays] | None = None
    rtol: float = 0.0
    atol: float = 0.0
    progress_store: str = ""


_SEGMENT = ("--model", "model", "--backend", "torch", "--resize", "1")
_TRAIN = (
    "train", "pairs", "-o", "trained", "--init", "none", "--epochs", "3", "--crop-size", "64",
    "--batch-size", "2", "--valid-fraction", "0.34", "--seed", "0", "--device", "cpu",
)  # fmt: skip
_REPLACE = ("measure", "run.zarr", "--edge", "keep", "--min-area", "4")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "import",
            "",
            ("import", "frames.tif", "run.zarr", "--frames-per-chunk", str(FPC), "--interval", "5"),
            (),
            "run.zarr",
            ("import",),
            FRAMES // FPC,
            frame_result(("image", "time")),
        ),
        Scenario(
            "import-replace",
            "imported.zarr",
            (
                "import",
                "frames.tif",
                "run.zarr",
                "--frames-per-chunk",
                str(FPC),
                "--interval",
                "2",
                "--overwrite",
            ),
            (),
            "run.zarr",
            ("import",),
            FRAMES // FPC,
            frame_result(("image", "time")),
            before=frame_result(("image", "time")),
            progress_store="run.zarr.crystalseg-new",
        ),
        Scenario(
            "segment",
            "imported.zarr",
            ("segment", "run.zarr", *_SEGMENT),
            (),
            "run.zarr",
            ("segment",),
            FRAMES // FPC,
            frame_result(("mask", "probability")),
        ),
        Scenario(
            "measure",
            "truth.zarr",
            ("measure", "run.zarr"),
            (),
            "run.zarr",
            ("measure",),
            SYNTH_FRAMES // FPC,
            measurement_result,
        ),
        Scenario(
            "measure-segment",
            "imported.zarr",
            ("measure", "run.zarr", "--model", "model", "--resize", "1", "--no-stream"),
            (),
            "run.zarr",
            ("segment", "measure"),
            2 * (FRAMES // FPC),
            measurement_result,
        ),
        Scenario(
            "measure-replace",
            "measured.zarr",
            (*_REPLACE, "--overwrite"),
            ((*_REPLACE, "--overwrite"), _REPLACE),
            "run.zarr",
            ("measure.next",),
            SYNTH_FRAMES // FPC,
            measurement_result,
            before=measurement_result,
        ),
        Scenario(
            "train",
            "pairs",
            _TRAIN,
            (("train", "pairs", "-o", "trained", "--resume"),),
            "",
            (),
            0,
            training_result,  # exact: a resume goes on bit for bit (6 of 6 random kills)
        ),
    )
}


# ----------------------------------------------------------------------------- workspace


def tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A small random U-Net saved as a real checkpoint, its head scaled so that its
    classes are decisive (as ``tests/segment/conftest.py``'s ``make_checkpoint``)."""
    import torch

    from crystalseg.models import ModelSpec, build_model, save_checkpoint

    spec = ModelSpec(
        encoder="mobilenet_v2", codes=("background", "crystal"), decoder_channels=(16,) * 5
    )
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        head: Any = model.segmentation_head[0]  # type: ignore[index]
        head.weight.mul_(40.0)
        head.bias.zero_()
    return save_checkpoint(
        directory, model, spec, training={"seed": seed}, metrics=[], data_fingerprint="kill"
    )


def store_truth_mask(path: Path) -> None:
    """The synthetic truth ``truth/mask`` as the run's finished segmentation, recorded as
    a segment stage (as ``tests/conftest.py``'s ``store_mask``), so measuring needs no model."""
    import zarr

    from crystalseg.dims import DEFAULT_CODES, FRAME_DIMS
    from crystalseg.store import begin_stage, create_array, get_array

    mask = np.asarray(get_array(zarr.open_group(str(path), mode="r"), "truth/mask", path)[:])
    n, h, w = mask.shape
    arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=mask.shape,
        dtype="uint8",
        chunks=(FPC, h, w),
        attrs={"codes": list(DEFAULT_CODES)},
    )
    arr[:] = mask
    stage = begin_stage(path, "segment", settings={"truth": True}, n_frames=n, frames_per_chunk=FPC)
    stage.mark_done(0, n)
    stage.finish()


def blob_frames(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 frames of smooth random blobs."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), (0, 3, 3))
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-12)
    return np.round(noise * 255).astype("uint8")


def prepare_workspace(root: Path, stages: Sequence[str] = tuple(SCENARIOS)) -> Path:
    """The starting states of the scenarios in ``root`` (made once, copied per trial)."""
    import tifffile

    from crystalseg.importing import import_run
    from crystalseg.measure import measure_run
    from crystalseg.synth import SynthConfig, synthesize_run

    root.mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    frames = blob_frames(FRAMES, SIZE, seed=1)
    if not (root / "frames.tif").exists():
        tifffile.imwrite(root / "frames.tif", frames)
    needs = {SCENARIOS[s].base for s in stages}
    if needs & {"imported.zarr"} and not (root / "imported.zarr").exists():
        import_run(root / "frames.tif", root / "imported.zarr", frames_per_chunk=FPC, interval_s=5)
    if {"segment", "measure-segment"} & set(stages) and not (root / "model").exists():
        tiny_checkpoint(root / "model")
    if needs & {"truth.zarr", "measured.zarr"} and not (root / "truth.zarr").exists():
        config = SynthConfig(frames=SYNTH_FRAMES, height=SYNTH_SIZE, width=SYNTH_SIZE, seed=3)
        synthesize_run(root / "truth.zarr", config, frames_per_chunk=FPC)
        store_truth_mask(root / "truth.zarr")
    if "measured.zarr" in needs and not (root / "measured.zarr").exists():
        shutil.copytree(root / "truth.zarr", root / "measured.zarr")
        measure_run(root / "measured.zarr", scheduler="synchronous")
    if "pairs" in needs and not (root / "pairs").exists():
        # 'clear': crystals in every frame (the default 'mixed' run has none yet)
        config = SynthConfig(frames=6, height=64, width=64, seed=5, scenario="clear")
        synthesize_run(root / "pairs.zarr", config, pairs_dir=root / "pairs")
    return root


def _fresh_trial(root: Path, scenario: Scenario, tag: str) -> Path:
    trial = root / "trials" / tag
    if trial.exists():
        shutil.rmtree(trial)
    trial.mkdir(parents=True)
    if scenario.base:
        target = trial / ("pairs" if scenario.base == "pairs" else "run.zarr")
        shutil.copytree(root / scenario.base, target)
    for shared in ("frames.tif", "model"):
        if (root / shared).exists():
            os.symlink(root / shared, trial / shared)
    return trial


# ----------------------------------------------------------------------------- one trial


@dataclass
class Trial:
    """What one kill left, and how running the command again ended.

    Attributes
    ----------
    killed : the kill landed before the command ended
    done_at_kill : chunks marked done when the command died
    after_kill : "ok" (opens), "incomplete" (a one-line error says so), "absent" (not
        created yet), "swapping" (killed in a replacement's swap: the next writer
        completes it), "replaced" (killed after a replacement's swap: the new results
        complete in place) or "broken: ..." (anything else)
    before_intact : a replacement's old results read back unchanged after the kill
        (None: no replacement, killed in its swap, or after it)
    lock_left : the dead process's PID when its lock file was left behind
    lock_taken_over : the rerun said it took over that lock, and released it
    orphans : processes of the killed command still running after it died (its
        measurement workers), ``orphans_s`` until the last ended by itself, and
        ``orphans_hung`` still running 20 s after the kill (killed by the trial)
    rerun_with_orphans : the command was run again while they still ran
    chunks_after_death : chunks the orphans marked done after the command died (when
        they were waited for)
    rerun_code : exit status of each command run after the kill
    difference : None when the result equals the uninterrupted run's, else what differs
    tracebacks : "Traceback" lines in the output of the commands run after the kill
    """

    stage: str
    point: str
    killed: bool = False
    done_at_kill: int | None = None
    after_kill: str = ""
    before_intact: bool | None = None
    lock_left: int | None = None
    lock_taken_over: bool | None = None
    orphans: int = 0
    orphans_s: float = 0.0
    orphans_hung: int = 0
    rerun_with_orphans: bool = False
    chunks_after_death: int = 0
    reruns: list[str] = field(default_factory=list)
    rerun_code: list[int] = field(default_factory=list)
    difference: str | None = "not compared"
    max_difference: float = 0.0
    tracebacks: int = 0
    stderr: str = ""

    @property
    def identical(self) -> bool:
        return self.difference is None and all(c == 0 for c in self.rerun_code[-1:])

    @property
    def lost(self) -> bool:
        """Finished results damaged by the kill, or a store that running the command
        again could not finish."""
        broken = self.after_kill.startswith("broken")
        return (
            broken or self.before_intact is False or not self.rerun_code or self.rerun_code[-1] != 0
        )


def store_state(store: Path) -> str:
    """How a store reads after a kill (see :attr:`Trial.after_kill`)."""
    from crystalseg.errors import CrystalsegError
    from crystalseg.store import open_run, stage_info

    if not store.exists():
        # killed between the two renames that put a new store in the place of the old
        retired = store.with_name(f"{store.name}.crystalseg-old")
        return "swapping" if retired.exists() else "absent"
    try:
        stages = stage_info(store)
    except CrystalsegError as exc:
        return _one_line(exc)
    except Exception as exc:  # what a kill must never cause
        return f"broken: {type(exc).__name__}: {exc}"
    if any(k.endswith(".next") and v.get("status") == "swapping" for k, v in stages.items()):
        return "swapping"
    try:
        open_run(store)
    except CrystalsegError as exc:
        return _one_line(exc)
    except Exception as exc:
        return f"broken: {type(exc).__name__}: {exc}"
    return "ok"


def _one_line(exc: Exception) -> str:
    text = str(exc)
    if "\n" in text:
        return f"broken: a message of several lines: {text!r}"
    return "incomplete" if "incomplete" in text or "does not exist" in text else f"broken: {text}"


class Runner:
    """Runs trials in a prepared workspace; the uninterrupted result of each scenario
    is made once (a real command, never killed) and kept."""

    def __init__(self, root: Path, *, cores: frozenset[int] | None = None) -> None:
        self.root = root
        self.cores = cores or default_cores()
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._reference: dict[str, tuple[Arrays, float]] = {}
        self._count = 0

    def _tag(self, scenario: Scenario, what: str) -> str:
        self._count += 1
        return f"{scenario.name}-{what}-{self._count}"

    def _start(
        self, args: Sequence[str], trial: Path, tag: str, kill_in: KillIn | None = None
    ) -> Proc:
        return start(args, trial, self.logs, tag, self.cores, self.root / "cache", kill_in)

    def reference(self, scenario: Scenario) -> tuple[Arrays, float]:
        """Result and wall time of an uninterrupted run of the scenario's command."""
        if scenario.name not in self._reference:
            tag = self._tag(scenario, "reference")
            trial = _fresh_trial(self.root, scenario, tag)
            proc = self._start(scenario.args, trial, tag)
            code = proc.popen.wait()
            seconds = time.perf_counter() - proc.started
            if code != 0:
                raise RuntimeError(
                    f"{scenario.name}: the uninterrupted run failed:\n{proc.stderr()}"
                )
            self._reference[scenario.name] = (scenario.result(trial), seconds)
            shutil.rmtree(trial)
        return self._reference[scenario.name]

    def trial(
        self,
        scenario: Scenario,
        point: KillPoint | KillIn,
        *,
        rerun: int = 0,
        wait_orphans: bool = True,
        keep: bool = False,
    ) -> Trial:
        """Run the command, kill it at ``point``, check the store, run ``reruns[rerun]``
        (or the command itself) until it finishes, compare with the reference.

        With ``wait_orphans`` the processes the killed command leaves (measurement
        workers finishing their chunk) end before the store is checked and the command
        run again; without, the command runs again at once, as a user would."""
        expected, _ = self.reference(scenario)
        tag = self._tag(scenario, "trial")
        trial = _fresh_trial(self.root, scenario, tag)
        store = trial / scenario.store if scenario.store else trial / "trained"
        progress = trial / scenario.progress_store if scenario.progress_store else store
        old = scenario.before(trial) if scenario.before is not None else None
        record = Trial(scenario.name, point.describe())

        if isinstance(point, KillIn):
            proc = self._start(scenario.args, trial, tag, point)
            record.killed = proc.popen.wait() == -signal.SIGKILL
        else:
            proc = self._start(scenario.args, trial, tag)
            record.killed = wait_and_kill(proc, point, progress, scenario.records)
        if scenario.records:
            done = [chunks_done(progress, r) for r in scenario.records]
            record.done_at_kill = sum(d for d in done if d is not None)
        orphans = session_members(proc.pid)
        record.rerun_with_orphans = bool(orphans) and not wait_orphans
        if wait_orphans:
            record.orphans, record.orphans_s, record.orphans_hung = reap_session(proc.pid)
            if scenario.records and record.done_at_kill is not None:
                done = [chunks_done(progress, r) for r in scenario.records]
                record.chunks_after_death = sum(d for d in done if d is not None) - (
                    record.done_at_kill
                )
        if scenario.store:
            self._check_after_kill(record, scenario, store, trial, old, expected, proc.pid)

        command = (
            scenario.reruns[rerun % len(scenario.reruns)] if scenario.reruns else scenario.args
        )
        self._finish(record, scenario, trial, command, tag)
        if not wait_orphans:
            record.orphans, record.orphans_s, record.orphans_hung = reap_session(proc.pid)
            record.orphans = max(record.orphans, len(orphans))
        if record.rerun_code and record.rerun_code[-1] == 0:
            got = scenario.result(trial)
            record.difference = compare(got, expected, rtol=scenario.rtol, atol=scenario.atol)
            record.max_difference = max_difference(got, expected)
        if scenario.store and record.lock_left is not None:
            from crystalseg.store.lock import lock_path

            took = f"PID {record.lock_left}" in record.stderr and "taking over its lock" in (
                record.stderr
            )
            record.lock_taken_over = took and not lock_path(store).exists()
        if not keep and record.identical:
            shutil.rmtree(trial)
        return record

    def _check_after_kill(
        self,
        record: Trial,
        scenario: Scenario,
        store: Path,
        trial: Path,
        old: Arrays | None,
        new: Arrays,
        pid: int,
    ) -> None:
        """The store after the kill: readable, its lock, the old results of a replacement
        unchanged (or the new ones complete in their place, when killed after the swap)."""
        from crystalseg.store import read_lock

        record.after_kill = store_state(store)
        holder = read_lock(store)
        if holder is not None:
            record.lock_left = holder.get("pid") if holder else -1
            if record.lock_left != pid:
                record.after_kill = f"broken: lock file {holder!r} is not the dead process's"
        if old is not None and scenario.before is not None and record.after_kill != "swapping":
            try:
                now = scenario.before(trial)
            except Exception:  # unreadable old results: lost
                record.before_intact = False
                return
            record.before_intact = compare(old, now) is None
            if not record.before_intact and compare(now, new) is None:
                record.before_intact = None  # the replacement was complete: swapped in
                record.after_kill = "replaced"

    def _finish(
        self, record: Trial, scenario: Scenario, trial: Path, command: Sequence[str], tag: str
    ) -> None:
        """Run ``command`` after the kill; training killed before its first epoch was
        saved has nothing to resume (a one-line error says so): it is started again."""
        commands = [tuple(command)]
        if (
            scenario.name == "train"
            and not (trial / "trained" / "last" / "training_state.json").exists()
        ):
            commands = [tuple(command), scenario.args]
        for i, args in enumerate(commands):
            proc = self._start(args, trial, f"{tag}-rerun{i}")
            code = proc.popen.wait()
            reap_session(proc.pid, wait_s=5.0)
            err = proc.stderr()
            record.reruns.append(" ".join(args))
            record.rerun_code.append(code)
            record.stderr += err
            record.tracebacks += err.count("Traceback")
            if code == 0:
                return
            if i == 0 and len(commands) > 1:
                lines = [line for line in err.splitlines() if line.strip()]
                if not (len(lines) == 1 and "no training state to resume" in lines[0]):
                    return


# ----------------------------------------------------------------------------- many trials


def kill_points(
    scenario: Scenario, n: int, rng: np.random.Generator, duration_s: float
) -> list[KillPoint]:
    """``n`` kill points: chunk counts spread over 0..chunks (the first trials cover the
    start, the middle and the end), or delays within the uninterrupted duration."""
    if scenario.chunks:
        fixed = [0, scenario.chunks // 2, scenario.chunks]
        counts = fixed[:n] + [int(c) for c in rng.integers(0, scenario.chunks + 1, max(0, n - 3))]
        return [KillPoint("chunks", count=c) for c in counts]
    return [KillPoint("delay", seconds=float(s)) for s in rng.uniform(0.3, 0.95, n) * duration_s]


def kill_trials(
    trials: int = 10,
    *,
    stages: Sequence[str] = tuple(SCENARIOS),
    seed: int = 0,
    workdir: Path | None = None,
    cores: frozenset[int] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``trials`` kill -9 trials of each stage; the counts per stage and in total.

    Returns
    -------
    dict
        Per stage and under ``"total"``: tried, killed, resumed_identical, differs, lost,
        tracebacks, lock_left, lock_taken_over, orphans, seconds; per stage also
        ``failures``: the trials that did not resume identically, described.
    """
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="crystalseg-kill-")) if workdir is None else workdir
    rng = np.random.default_rng(seed)
    try:
        prepare_workspace(root, stages)
        runner = Runner(root, cores=cores)
        report: dict[str, Any] = {}
        for name in stages:
            scenario = SCENARIOS[name]
            t0 = time.perf_counter()
            _, duration = runner.reference(scenario)
            results = []
            for i, point in enumerate(kill_points(scenario, trials, rng, duration)):
                rerun = int(rng.integers(0, 2)) if i > 1 else i
                # every other trial runs the command again at once, as a user would,
                # while the killed command's workers may still finish their chunks
                result = runner.trial(scenario, point, rerun=rerun, wait_orphans=i % 2 == 0)
                results.append(result)
                if log is not None:
                    log(f"{name} {point.describe()}: {_summary(result)}")
            report[name] = {
                **_counts(results),
                "orphans_max_s": round(max([r.orphans_s for r in results] or [0.0]), 2),
                "uninterrupted_s": round(duration, 2),
                "seconds": round(time.perf_counter() - t0, 1),
                "failures": [
                    _failure(r) for r in results if not r.identical or r.lost or r.tracebacks
                ],
            }
        report["total"] = {
            key: sum(report[s][key] for s in stages) for key in (*_counts([]).keys(), "seconds")
        }
        return report
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def _counts(results: Sequence[Trial]) -> dict[str, int]:
    return {
        "tried": len(results),
        "killed": sum(r.killed for r in results),
        "resumed_identical": sum(r.identical for r in results),
        "differs": sum(r.difference not in (None, "not compared") for r in results),
        "lost": sum(r.lost for r in results),
        "tracebacks": sum(r.tracebacks for r in results),
        "lock_left": sum(r.lock_left is not None for r in results),
        "lock_taken_over": sum(bool(r.lock_taken_over) for r in results),
        "orphans": sum(r.orphans for r in results),
        "orphans_hung": sum(r.orphans_hung for r in results),
        "reruns_with_orphans": sum(r.rerun_with_orphans for r in results),
        "chunks_after_death": sum(r.chunks_after_death for r in results),
        "incomplete_after_kill": sum(r.after_kill == "incomplete" for r in results),
        "swapping_after_kill": sum(r.after_kill == "swapping" for r in results),
    }


def _summary(r: Trial) -> str:
    return (
        f"killed={r.killed} done={r.done_at_kill} after={r.after_kill or '-'} "
        f"lock={r.lock_left} taken_over={r.lock_taken_over} orphans={r.orphans} "
        f"(ended after {r.orphans_s:.1f} s, hung {r.orphans_hung}, "
        f"rerun meanwhile {r.rerun_with_orphans}, chunks they did {r.chunks_after_death}) "
        f"codes={r.rerun_code} diff={r.difference} max_diff={r.max_difference:.2g}"
    )


def _failure(r: Trial) -> dict[str, Any]:
    return {
        "point": r.point,
        "summary": _summary(r),
        "reruns": r.reruns,
        "stderr_tail": r.stderr.strip().splitlines()[-3:],
    }


# ----------------------------------------------------------------------------- concurrent


def concurrent_trials(
    trials: int = 10,
    *,
    seed: int = 0,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Two ``crystalseg measure RUN`` started together on one store, ``trials`` times.

    The second one starts after a seeded delay of up to 1.2 times the duration of an
    uninterrupted measurement. ``refused``: one exited 1 with
    one line naming the holder's PID; ``serialised``: both exited 0 (the later one
    found the measurement finished); ``broken``: anything else (a traceback, another
    exit, a store whose measurement is not the uninterrupted one).

    Each process gets its own core when there are two.
    """
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="crystalseg-concurrent-")) if workdir is None else workdir
    rng = np.random.default_rng(seed)
    cores = sorted(os.sched_getaffinity(0))
    pins = [frozenset({cores[0]}), frozenset({cores[-1]})]
    counts = {"tried": 0, "refused": 0, "serialised": 0, "broken": 0}
    t0 = time.perf_counter()
    try:
        prepare_workspace(root, ["measure"])
        runner = Runner(root)
        scenario = SCENARIOS["measure"]
        expected, duration = runner.reference(scenario)
        broken: list[str] = []
        for i in range(trials):
            trial = _fresh_trial(root, scenario, f"concurrent-{i}")
            delay = float(rng.uniform(0.0, 1.2 * duration))
            first = start(
                scenario.args, trial, runner.logs, f"concurrent-{i}-a", pins[0], root / "cache"
            )
            time.sleep(delay)
            second = start(
                scenario.args, trial, runner.logs, f"concurrent-{i}-b", pins[1], root / "cache"
            )
            codes = (first.popen.wait(), second.popen.wait())
            errs = (first.stderr(), second.stderr())
            counts["tried"] += 1
            outcome = _concurrent_outcome(codes, errs, (first.pid, second.pid))
            if outcome != "broken":
                try:
                    difference = compare(scenario.result(trial), expected)
                except Exception as exc:
                    difference = f"{type(exc).__name__}: {exc}"
                if difference is not None:
                    outcome = "broken"
                    broken.append(f"trial {i}: result {difference}")
            else:
                broken.append(f"trial {i}: codes {codes}, stderr {[e[-300:] for e in errs]}")
            counts[outcome] += 1
            if log is not None:
                log(f"concurrent {i} (second after {delay:.2f} s): {outcome} {codes}")
            shutil.rmtree(trial)
        return {**counts, "seconds": round(time.perf_counter() - t0, 1), "failures": broken}
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def _concurrent_outcome(
    codes: tuple[int, int], errs: tuple[str, str], pids: tuple[int, int]
) -> str:
    if any("Traceback" in e for e in errs):
        return "broken"
    if codes == (0, 0):
        return "serialised"
    if sorted(codes) == [0, 1]:
        loser = codes.index(1)
        lines = [line for line in errs[loser].splitlines() if line.strip()]
        holder = pids[1 - loser]
        if (
            len(lines) == 1
            and lines[0].startswith("Error: run store")
            and f"is being measured by PID {holder}" in lines[0]
        ):
            return "refused"
    return "broken"


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="kill trials per stage")
    parser.add_argument("--concurrent", type=int, default=10, help="concurrent-measure trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(SCENARIOS))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the trials' files here")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per trial on stderr")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        if args.verbose:
            print(line, file=sys.stderr, flush=True)

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
        "settings": {"trials_per_stage": args.trials, "seed": args.seed, "frames": FRAMES},
    }
    report["kill"] = kill_trials(
        args.trials,
        stages=stages,
        seed=args.seed,
        workdir=None if args.workdir is None else args.workdir / "kill",
        log=say,
    )
    if args.concurrent:
        report["concurrent"] = concurrent_trials(
            args.concurrent,
            seed=args.seed,
            workdir=None if args.workdir is None else args.workdir / "concurrent",
            log=say,
        )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
