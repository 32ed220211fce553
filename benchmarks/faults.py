"""Hostile but realistic use of crystalseg through its real CLI (issue 29), each case in a
subprocess, and a JSON count of how it went.

Every case runs ``crystalseg ...`` as a user would, in a workspace of its own, and is
judged on what a user sees and keeps:

- ``clean_error``: exit status non-zero, exactly one ``Error:`` line, no traceback;
- ``traceback``: Python's traceback reached the terminal (must be 0);
- ``data_lost``: a file the user had before (a recording, a run store's arrays and
  metadata, their own files) changed or vanished (must be 0);
- ``left_behind``: a half-made output stayed (a ``.partial`` file, a store or folder the
  failed command created);
- for cases that must succeed (a planar-RGB stack read as frames), ``ok`` and the check.

Categories: ``bad_input`` (cut-short, empty, oversized, garbage and ambiguous recordings),
``bad_setting`` (out-of-range options), ``output_path`` (outputs into a store, onto a
folder, under a file), ``damaged_store`` (edited attributes, corrupt chunk, missing
array, 0 frames), ``read_only`` (a tmpfs remounted read-only: EROFS; chmod when not root),
``disk_full`` (a small tmpfs filled up: ENOSPC). The two last need the right to mount
(root); without it they are reported as skipped with the reason, not counted.

The stage runner adds two more (see :data:`STAGE_RUNNER_CATEGORIES`): kill -9 at random
points and resume, and two writers at once.

Run::

    python benchmarks/faults.py            # all categories; kill -9 trials take ~30 min
    python benchmarks/faults.py --only kill_resume --kill-trials 2
    python benchmarks/faults.py --only damaged_store,output_path --keep
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

CLI = [sys.executable, "-c", "from crystalseg.cli import main; main()"]
TIMEOUT_S = 600


# ---------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One hostile command and what must hold after it.

    Attributes
    ----------
    name, category : how the case is listed in the JSON
    argv : the crystalseg arguments (after ``crystalseg``)
    protect : paths whose every file must be unchanged afterwards (the user's data)
    absent : paths that must not exist afterwards (half-made outputs)
    expect : "error" (one clean ``Error:`` line) or "ok" (exit 0 and ``check`` passes)
    check : for "ok" cases, returns None when the result is right, else what is wrong
    pattern : a regex the error line must match (what the message must say)
    """

    name: str
    category: str
    argv: list[str]
    protect: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    expect: str = "error"
    check: Callable[[], str | None] | None = None
    pattern: str = ""


@dataclass
class Bases:
    """Stores and recordings made once, copied into each case's workspace."""

    root: Path
    measured: Path  # a measured 3-frame run (truth as its mask)
    unsegmented: Path  # a synthesized run, not segmented
    pairs: Path  # training pairs of the synthetic run

    def run_copy(self, where: Path, kind: str = "measured") -> Path:
        dest = where / "run.zarr"
        shutil.copytree(getattr(self, kind), dest)
        return dest


def make_bases(root: Path) -> Bases:
    import xarray as xr

    from crystalseg.measure import measure_run
    from crystalseg.store import begin_stage, create_array
    from crystalseg.synth import SynthConfig, synthesize_run

    config = SynthConfig(frames=3, height=64, width=64, seed=2, scenario="clear")
    unsegmented = root / "base" / "unsegmented.zarr"
    synthesize_run(unsegmented, config, pairs_dir=root / "base" / "pairs")
    measured = root / "base" / "measured.zarr"
    shutil.copytree(unsegmented, measured)
    labels = xr.open_zarr(measured, group="truth")["labels"].values
    mask = create_array(
        measured,
        "mask",
        dims=("time", "y", "x"),
        shape=labels.shape,
        dtype="uint8",
        chunks=(3, 64, 64),
        attrs={"codes": ["background", "crystal"]},
    )
    mask[:] = (labels > 0).astype(np.uint8)
    stage = begin_stage(
        measured, "segment", settings={"truth": True}, n_frames=3, frames_per_chunk=3
    )
    stage.mark_done(0, 3)
    stage.finish()
    measure_run(measured, scheduler="synchronous")
    return Bases(root, measured, unsegmented, root / "base" / "pairs")


def _tiff(path: Path, frames: np.ndarray, **kw: Any) -> Path:
    tifffile.imwrite(path, frames, **kw)
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _noise(n: int = 20, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size), dtype=np.uint8)


def _edit_attrs(run: Path, **attrs: Any) -> None:
    meta = json.loads((run / "zarr.json").read_text())
    meta["attributes"].update(attrs)
    (run / "zarr.json").write_text(json.dumps(meta))


def _frames_of(run: Path, n: int) -> Callable[[], str | None]:
    def check() -> str | None:
        from crystalseg.store import describe_run

        got = describe_run(run)["frames"]
        return None if got == n else f"{got} frames imported, expected {n}"

    return check


def bad_input(w: Path, b: Bases) -> Iterator[Case]:
    """Recordings that are cut short, empty, oversized, garbage or ambiguous."""
    for kind, kw in (
        ("contiguous", {}),
        ("compressed", {"compression": "zlib"}),
        ("imagej", {"imagej": True}),
    ):
        src = _cut(_tiff(w / f"{kind}.tif", _noise(), **kw), 0.6)
        yield Case(
            f"import truncated {kind} TIFF",
            "bad_input",
            ["import", str(src), str(w / f"{kind}.zarr")],
            protect=[src],
            absent=[w / f"{kind}.zarr"],
            pattern="damaged or cut short",
        )
    np.save(w / "empty.npy", np.zeros((0, 64, 64), np.uint8))
    yield Case(
        "import 0-frame .npy",
        "bad_input",
        ["import", str(w / "empty.npy"), str(w / "e.zarr")],
        protect=[w / "empty.npy"],
        absent=[w / "e.zarr"],
        pattern="holds no pixels",
    )
    tifffile.imwrite(w / "huge.tif", shape=(60000, 60000), dtype="uint8")  # sparse file
    yield Case(
        "import 60000x60000 TIFF header",
        "bad_input",
        ["import", str(w / "huge.tif"), str(w / "h.zarr")],
        absent=[w / "h.zarr"],
        pattern="60000 x 60000",
    )
    rng = np.random.default_rng(1)
    for name, magic in (
        ("garbage.tif", b"II*\x00"),
        ("garbage.npy", b"\x93NUMPY"),
        ("garbage.png", b"\x89PNG\r\n\x1a\n"),
    ):
        (w / name).write_bytes(magic + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        yield Case(
            f"import {name}",
            "bad_input",
            ["import", str(w / name), str(w / "g.zarr")],
            protect=[w / name],
            absent=[w / "g.zarr"],
        )
    png = io.BytesIO()
    Image.fromarray(_noise(1)[0]).save(png, format="PNG")
    (w / "cut.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    yield Case(
        "import truncated PNG",
        "bad_input",
        ["import", str(w / "cut.png"), str(w / "p.zarr")],
        protect=[w / "cut.png"],
        absent=[w / "p.zarr"],
    )
    for n in (3, 4):  # tifffile.imwrite's default for (3|4, y, x): planar RGB(A)
        src = _tiff(w / f"planar{n}.tif", _noise(n), photometric="rgb", planarconfig="separate")
        yield Case(
            f"import {n}-frame stack tifffile wrote as planar RGB",
            "bad_input",
            ["import", str(src), str(w / f"planar{n}.zarr"), "--interval", "1"],
            protect=[src],
            expect="ok",
            check=_frames_of(w / f"planar{n}.zarr", n),
        )
    (w / "a_file.zarr").write_text("my notes")
    yield Case(
        "import onto a path that is a file",
        "bad_input",
        ["import", str(_tiff(w / "ok.tif", _noise(2))), str(w / "a_file.zarr")],
        protect=[w / "a_file.zarr"],
    )


def bad_setting(w: Path, b: Bases) -> Iterator[Case]:
    """Options outside what is physically or computationally sane."""
    src = _tiff(w / "src.tif", _noise(4))
    for flag, value, pattern in (
        ("--pixel-size", "1e-300", "outside the physical range"),
        ("--pixel-size", "nan", "outside the physical range"),
        ("--pixel-size", "1e300", "outside the physical range"),
        ("--interval", "0", "outside the physical range"),
        ("--interval", "nan", "outside the physical range"),
        ("--frames-per-chunk", "0", "not in the range"),
        ("--frames-per-chunk", "-2", "not in the range"),
    ):
        yield Case(
            f"import {flag} {value}",
            "bad_setting",
            ["import", str(src), str(w / "n.zarr"), flag, value],
            protect=[src],
            absent=[w / "n.zarr"],
            pattern=pattern,
        )
    run = b.run_copy(w)
    yield Case(
        "measure --bins 1 1000 100000000",
        "bad_setting",
        ["measure", str(run), "--bins", "1", "1000", "100000000"],
        protect=[run],
        pattern="bins",
    )
    for flag, value in (("--pixel-size", "1e-300"), ("--interval", "nan")):
        yield Case(
            f"calibrate {flag} {value}",
            "bad_setting",
            ["calibrate", str(run), flag, value],
            protect=[run],
            pattern="outside the physical range",
        )


def output_path(w: Path, b: Bases) -> Iterator[Case]:
    """Outputs pointed into a store, onto a folder or under a file."""
    run = b.run_copy(w)
    (w / "notes.txt").write_text("mine")
    (w / "folder").mkdir()
    for name, argv, pattern in (
        ("report -o RUN", ["report", str(run), "-o", str(run)], "is the zarr store"),
        ("report -o RUN/r.html", ["report", str(run), "-o", str(run / "r.html")], "inside"),
        ("plot -o RUN/plots", ["plot", str(run), "-o", str(run / "plots")], "inside"),
        ("overlay -o RUN/psd/x", ["overlay", str(run), "-o", str(run / "psd" / "x")], "inside"),
        ("export -o RUN/tables", ["export", str(run), "-o", str(run / "tables")], "inside"),
        ("report -o FOLDER", ["report", str(run), "-o", str(w / "folder")], "is a folder"),
        (
            "report -o FILE/r.html",
            ["report", str(run), "-o", str(w / "notes.txt" / "r.html")],
            "notes.txt",
        ),
        ("plot -o FILE", ["plot", str(run), "-o", str(w / "notes.txt")], "notes.txt"),
        ("overlay -o FILE", ["overlay", str(run), "-o", str(w / "notes.txt")], "notes.txt"),
    ):
        yield Case(
            name,
            "output_path",
            argv,
            protect=[run, w / "notes.txt"],
            absent=[run.with_name("run.zarr.partial"), run / "plots"],
            pattern=pattern,
        )
    (w / "scores.json").mkdir()
    yield Case(
        "evaluate -o FOLDER.json",
        "output_path",
        ["evaluate", str(b.pairs), "--mask-values", "0,255", "-o", str(w / "scores.json")],
        protect=[b.pairs],
        pattern="scores.json",
    )
    yield Case(
        "train -o FILE",
        "output_path",
        [
            "train",
            str(b.pairs),
            "-o",
            str(w / "notes.txt"),
            "--epochs",
            "1",
            "--crop-size",
            "64",
            "--mask-values",
            "0,255",
        ],
        protect=[w / "notes.txt"],
        pattern="notes.txt",
    )


def damaged_store(w: Path, b: Bases) -> Iterator[Case]:
    """Stores whose attributes were edited, a chunk corrupted, an array deleted, or that
    hold 0 frames."""

    def damaged(name: str, kind: str, damage: Callable[[Path], None]) -> Path:
        (w / name).mkdir()
        run = b.run_copy(w / name, kind)
        damage(run)
        return run

    edits: list[tuple[str, Callable[[Path], None], list[str], str]] = [
        (
            "provenance edited into a list",
            lambda r: _edit_attrs(r, provenance=[1, 2]),
            ["info", "measure", "report", "plot", "segment"],
            "provenance",
        ),
        (
            "pixel_size_um edited to text",
            lambda r: _edit_attrs(r, pixel_size_um="0.65 um"),
            ["info", "segment", "measure", "overlay"],
            "pixel_size_um",
        ),
        (
            "format version edited to text",
            lambda r: _edit_attrs(r, crystalseg_format_version="1"),
            ["info"],
            "format version",
        ),
        (
            "image deleted",
            lambda r: shutil.rmtree(r / "image"),
            ["info", "segment", "report", "overlay"],
            "no array 'image'",
        ),
    ]
    for name, damage, commands, pattern in edits:
        for command in commands:
            kind = "unsegmented" if command == "segment" else "measured"
            run = damaged(f"{name}-{command}".replace(" ", "_"), kind, damage)
            yield Case(
                f"{command} on a store with {name}",
                "damaged_store",
                [command, str(run)],
                protect=[run],
                pattern=pattern,
            )

    def corrupt(run: Path) -> None:
        (run / "image" / "c" / "0" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 40)

    for command, kind in (("overlay", "measured"), ("segment", "unsegmented")):
        run = damaged(f"corrupt-{command}", kind, corrupt)
        yield Case(
            f"{command} on a store with a corrupt image chunk",
            "damaged_store",
            [command, str(run)],
            protect=[run],
            pattern="cannot be decoded",
        )

    def zero_frames(run: Path) -> None:
        for array, shape in (("image", [0, 64, 64]), ("time", [0])):
            meta = json.loads((run / array / "zarr.json").read_text())
            meta["shape"] = shape
            (run / array / "zarr.json").write_text(json.dumps(meta))

    for command in ("info", "overlay", "segment"):
        run = damaged(
            f"zero-{command}", "unsegmented" if command == "segment" else "measured", zero_frames
        )
        yield Case(
            f"{command} on a store of 0 frames",
            "damaged_store",
            [command, str(run)],
            protect=[run],
            pattern="0 frames",
        )


# ---------------------------------------------------------------------------- mounts


def _mount(where: Path, *options: str) -> str | None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    return (done.stderr.strip() or "mount failed") if done.returncode else None


MOUNTED: list[Path] = []


def _read_only_folder(w: Path, fill: Callable[[Path], None]) -> Path:
    """A folder filled by ``fill`` and then made read-only: a tmpfs remounted ``ro``
    (root), else chmod a-w (other users)."""
    folder = w / "ro"
    folder.mkdir()
    why = _mount(folder, "size=64m")
    if why is None:
        MOUNTED.append(folder)
        fill(folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return folder
    if os.geteuid() == 0:
        raise _Skip(f"root ignores chmod and cannot mount a read-only tmpfs here ({why})")
    fill(folder)
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return folder


class _Skip(Exception):
    """A category that cannot be tried on this machine (and why)."""


def read_only(w: Path, b: Bases) -> Iterator[Case]:
    """Every writing command against a folder that may not be written (EROFS or EACCES)."""

    def fill(folder: Path) -> None:
        shutil.copytree(b.measured, folder / "run.zarr")
        shutil.copytree(b.unsegmented, folder / "raw.zarr")
        _tiff(folder / "src.tif", _noise(4))
        shutil.copytree(b.pairs, folder / "pairs")

    ro = _read_only_folder(w, fill)
    run, raw = ro / "run.zarr", ro / "raw.zarr"
    for name, argv in (
        ("import into it", ["import", str(ro / "src.tif"), str(ro / "new.zarr")]),
        ("synth into it", ["synth", str(ro / "s.zarr"), "--n-frames", "2", "--size", "64", "64"]),
        ("segment a store in it", ["segment", str(raw)]),
        ("measure a store in it", ["measure", str(raw)]),
        ("calibrate a store in it", ["calibrate", str(run), "--pixel-size", "0.5"]),
        ("plot beside a store in it", ["plot", str(run)]),
        ("report beside a store in it", ["report", str(run)]),
        ("export beside a store in it", ["measure", str(run), "--export", "csv"]),
        ("export command beside a store in it", ["export", str(run), "--format", "xlsx"]),
        ("overlay beside a store in it", ["overlay", str(run), "--frames", "0"]),
        (
            "train into it",
            [
                "train",
                str(ro / "pairs"),
                "-o",
                str(ro / "model"),
                "--epochs",
                "1",
                "--crop-size",
                "64",
                "--mask-values",
                "0,255",
            ],
        ),
        (
            "evaluate into it",
            ["evaluate", str(ro / "pairs"), "--mask-values", "0,255", "-o", str(ro / "scores.csv")],
        ),
    ):
        yield Case(
            f"{name} (read-only)",
            "read_only",
            argv,
            protect=[ro],
            pattern="read-only file system|permission denied",
        )


def disk_full(w: Path, b: Bases) -> Iterator[Case]:
    """Every writing command against a small file system that is full (ENOSPC)."""
    disk = w / "disk"
    disk.mkdir()
    why = _mount(disk, "size=4m")
    if why is not None:
        raise _Skip(f"cannot mount a small tmpfs to fill ({why}); needs root or CAP_SYS_ADMIN")
    MOUNTED.append(disk)
    shutil.copytree(b.measured, disk / "run.zarr")
    shutil.copytree(b.unsegmented, disk / "raw.zarr")
    src = _tiff(w / "src.tif", _noise(40, 128))  # 640 KB of noise: more than is free
    with open(disk / "filler.bin", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    run, raw = disk / "run.zarr", disk / "raw.zarr"
    for name, argv in (
        ("import onto it", ["import", str(src), str(disk / "new.zarr"), "--interval", "1"]),
        ("synth onto it", ["synth", str(disk / "s.zarr"), "--n-frames", "2", "--size", "64", "64"]),
        ("segment a store on it", ["segment", str(raw)]),
        ("calibrate a store on it", ["calibrate", str(run), "--pixel-size", "0.5"]),
        ("plot onto it", ["plot", str(run)]),
        ("report onto it", ["report", str(run)]),
        ("export onto it", ["measure", str(run), "--export", "csv"]),
        ("export command onto it", ["export", str(run), "--format", "parquet"]),
        ("overlay onto it", ["overlay", str(run), "--frames", "0"]),
        (
            "train onto it",
            [
                "train",
                str(b.pairs),
                "-o",
                str(disk / "model"),
                "--epochs",
                "1",
                "--crop-size",
                "64",
                "--mask-values",
                "0,255",
            ],
        ),
    ):
        yield Case(
            f"{name} (disk full)",
            "disk_full",
            argv,
            protect=[run, raw, src],
            absent=[disk / "run_report.html", disk / "run_particles.csv"],
            pattern="no space left",
        )


#: The categories of this helper's scope, in order.
CATEGORIES: dict[str, Callable[[Path, Bases], Iterator[Case]]] = {
    "bad_input": bad_input,
    "bad_setting": bad_setting,
    "output_path": output_path,
    "damaged_store": damaged_store,
    "read_only": read_only,
    "disk_full": disk_full,
}

#: Categories the stage runner adds (issue 29 "kill -9 resumes identical / tried" and
#: "concurrent writers refused / tried"). Each is ``name -> function(workdir, bases) ->
#: dict`` returning at least ``{"tried": n, ...}`` with its own counts, e.g.
#: ``{"tried": 50, "identical": 50}`` or ``{"tried": 9, "refused": 9}``; it goes into the
#: JSON under its name. A refused concurrent writer prints an ``Error:`` line that
#: :func:`is_lock_refusal` recognises (``RunLockedError``).
STAGE_RUNNER_CATEGORIES: dict[str, Callable[[Path, Bases], dict[str, Any]]] = {}

#: Trials of the stage-runner categories (set from the command line).
KILL_TRIALS = {"kill": 8, "concurrent": 8}


def _kill_resume() -> Any:
    """benchmarks/kill_resume.py, loaded beside this script."""
    import importlib.util

    name = "kill_resume"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def kill_and_resume(work: Path, bases: Bases) -> dict[str, Any]:
    """kill -9 at seeded points of every stage, then the same command again: identical?"""
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = _kill_resume().kill_trials(KILL_TRIALS["kill"], workdir=work)
    return result


def concurrent_writers(work: Path, bases: Bases) -> dict[str, Any]:
    """Two measurements of one run started together: refused or serialised, never broken."""
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = _kill_resume().concurrent_trials(
        KILL_TRIALS["concurrent"], workdir=work
    )
    return result


STAGE_RUNNER_CATEGORIES.update({"kill_resume": kill_and_resume, "concurrent": concurrent_writers})


def is_lock_refusal(stderr: str) -> bool:
    """Whether a command was refused because another writer holds the store's lock."""
    return re.search(r"^Error: run store '.*' is being", stderr, re.MULTILINE) is not None


# ---------------------------------------------------------------------------- judging


def digest(paths: list[Path]) -> dict[str, str]:
    """sha1 of every file under ``paths``; a missing path digests as 'missing'."""
    out: dict[str, str] = {}
    for path in paths:
        if not path.exists():
            out[str(path)] = "missing"
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest()
    return out


def _stray(case: Case) -> set[str]:
    """Temporary and lock files beside the case's paths (a command that ended leaves none)."""
    folders = {Path(a).parent for a in case.argv if os.sep in a} | {p.parent for p in case.protect}
    return {str(p) for f in folders for p in f.glob(".*") if p.name.endswith((".partial", "-lock"))}


def judge(case: Case) -> dict[str, Any]:
    before = digest(case.protect)
    stray_before = _stray(case)
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, "-q", *case.argv], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    text = done.stdout + done.stderr
    after = digest(case.protect)
    lost = sorted(k for k in before if after.get(k) != before[k])
    left = [str(p) for p in case.absent if p.exists()] + sorted(_stray(case) - stray_before)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error:")]
    traceback = "Traceback (most recent call last)" in text
    result: dict[str, Any] = {
        "name": case.name,
        "category": case.category,
        "command": "crystalseg " + " ".join(case.argv),
        "exit": done.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "traceback": traceback,
        "data_lost": lost[:5],
        "left_behind": left,
    }
    if case.expect == "ok":
        problem = case.check() if case.check and done.returncode == 0 else None
        result["ok"] = done.returncode == 0 and problem is None and not traceback
        result["message"] = problem or (errors[0] if errors else "")
    else:
        clean = done.returncode != 0 and len(errors) == 1 and not traceback
        result["clean_error"] = clean
        result["message"] = errors[0] if errors else text.strip().splitlines()[-1:]
        if clean and case.pattern and not re.search(case.pattern, errors[0]):
            result["clean_error"] = False
            result["message_misses"] = case.pattern
    return result


@contextmanager
def _workspace(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="crystalseg-faults-"))
    try:
        yield root
    finally:
        for mount in reversed(MOUNTED):
            subprocess.run(["umount", "-l", str(mount)], check=False)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="Comma-separated categories to run.")
    parser.add_argument("--keep", action="store_true", help="Keep the workspace (printed).")
    parser.add_argument(
        "--kill-trials", type=int, default=8, help="kill -9 trials per stage (7 stages)."
    )
    parser.add_argument("--concurrent", type=int, default=8, help="Trials of two writers at once.")
    args = parser.parse_args()
    KILL_TRIALS.update(kill=args.kill_trials, concurrent=args.concurrent)
    only = [c for c in args.only.split(",") if c]
    with _workspace(args.keep) as root:
        bases = make_bases(root)
        cases: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        for name, make in CATEGORIES.items():
            if only and name not in only:
                continue
            work = root / name
            work.mkdir()
            try:
                for case in make(work, bases):
                    cases.append(judge(case))
                    print(json.dumps(cases[-1]), file=sys.stderr, flush=True)
            except _Skip as why:
                skipped[name] = str(why)
        extra = {
            name: measure(root / name, bases)
            for name, measure in STAGE_RUNNER_CATEGORIES.items()
            if not only or name in only
        }
        errors = [c for c in cases if "clean_error" in c]
        oks = [c for c in cases if "ok" in c]
        summary = {
            "cases_tried": len(cases),
            "clean_errors": sum(c["clean_error"] for c in errors),
            "expected_errors": len(errors),
            "succeeded_as_expected": sum(c["ok"] for c in oks),
            "expected_to_succeed": len(oks),
            "tracebacks": sum(c["traceback"] for c in cases),
            "data_lost": sum(bool(c["data_lost"]) for c in cases),
            "left_behind": sum(bool(c["left_behind"]) for c in cases),
            "by_category": {
                cat: {
                    "tried": sum(c["category"] == cat for c in cases),
                    "clean": sum(
                        c.get("clean_error", c.get("ok", False))
                        for c in cases
                        if c["category"] == cat
                    ),
                }
                for cat in dict.fromkeys(c["category"] for c in cases)
            },
            "skipped_categories": skipped,
            **extra,
            "not_clean": [
                c
                for c in cases
                if not c.get("clean_error", c.get("ok"))
                or c["traceback"]
                or c["data_lost"]
                or c["left_behind"]
            ],
            "cases": [f"{c['category']}: {c['name']}" for c in cases],
            "workspace": str(root) if args.keep else None,
        }
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
