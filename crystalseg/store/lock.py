"""One writer at a time: the advisory lock of a run store.

Every command and API call that writes into a run store (import, synth,
segment, measure, calibrate, and the stages to come) holds the store's lock
while it writes: a file ``.NAME.crystalseg-lock`` beside the store ``NAME`` (inside
it, zarr would list it as a stray object), created with
``O_CREAT | O_EXCL`` and holding who holds it (process id, host, the process's
start time, since when, for which stage, the command line). A second writer
gets a :class:`~crystalseg.errors.RunLockedError` that names the holder::

    run store 'r.zarr' is being measured by PID 4242 on lab-pc since
    2026-12-07T10:14:03+00:00 (crystalseg measure r.zarr); wait for it to finish,
    or stop that process

What it guarantees, and what it does not:

- Exclusive creation of a file is atomic on local file systems and on NFS v3+
  and SMB, unlike ``flock``, which some network file systems ignore. So two
  writers on one machine, or on two machines that mount the same share, never
  both hold the lock.
- A lock whose process has died (kill -9, a power cut) is detected and taken
  over with a log message when the holder ran on this host: the recorded
  process is gone, or its id was reused by a process that started later.
  A lock held from another host cannot be checked from here; it is refused
  with the path of the lock file, to be removed by hand once that process is
  known to be gone.
- Readers (``open_run``, plot, report, export) take no lock: a stage writes
  its new results beside the old ones and swaps them in only when complete
  (:mod:`crystalseg.store.stages`), so a reader sees the old results or the
  new ones.
- On object storage (a store at ``s3://bucket/run.zarr``) the lock is the object
  ``s3://bucket/.run.zarr.crystalseg-lock``, created with one conditional ``PUT``
  (``If-None-Match: *``) that the server refuses when the object exists: exclusive
  like ``O_EXCL`` on AWS S3 and on S3-compatible servers that implement conditional
  writes (moto, which the tests run against, does). On a server that ignores the
  condition, or a file system whose fsspec driver has none, the lock is advisory
  only (checked, then written).
  Its holder is recognised as dead only from the host that took it, as above.
- Within one process the lock is re-entrant for the thread that holds it (a
  measurement that segments first holds it once); another thread of the same
  process is refused like another process. Worker processes of a stage (dask
  processes or a cluster's workers) write under their parent's lock.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crystalseg.errors import RunLockedError
from crystalseg.store.location import RunLike, RunPath, create_exclusive, location_key, run_path

log = logging.getLogger(__name__)

#: Suffix of the lock file beside a run store (``.run.zarr.crystalseg-lock``).
LOCK_SUFFIX = ".crystalseg-lock"

#: How each stage is named in the message a second writer gets ("being measured").
_DOING = {
    "import": "imported",
    "synth": "synthesised",
    "segment": "segmented",
    "measure": "measured",
    "calibrate": "calibrated",
    "kinetics": "tracked",
}

_held: dict[str, tuple[int, int]] = {}  # lock path -> (thread id, depth)
_held_guard = threading.Lock()


def lock_path(run: RunLike) -> RunPath:
    """Path of the lock file of run store ``run``: a hidden file (object) beside it."""
    where = run_path(run)
    if isinstance(where, Path):
        where = where.absolute()
    return where.parent / f".{where.name}{LOCK_SUFFIX}"


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its end
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line: starttime
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether the process that wrote a lock still runs (not a later one with its id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


def read_lock(run: RunLike) -> dict[str, Any] | None:
    """Who holds the lock of ``run`` (the recorded fields), or None when nobody does."""
    try:
        text = lock_path(run).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # being written this instant, or damaged
    return value if isinstance(value, dict) else {}


def _describe(run: RunPath, holder: dict[str, Any]) -> str:
    doing = _DOING.get(str(holder.get("stage")), f"written ({holder.get('stage')})")
    command = holder.get("command")
    return (
        f"run store '{run}' is being {doing} by PID {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')} since {holder.get('since', '?')}"
        + (f" ({command})" if command else "")
    )


def _try_create(path: RunPath, record: dict[str, Any]) -> bool:
    """Create the lock file holding ``record``; False when it exists.

    On object storage: one conditional write (:func:`~crystalseg.store.location.create_exclusive`).

    The record is written to a file of this process first and hard-linked to the lock's
    name (atomic, and exclusive like ``O_EXCL``, also on NFS): the lock never exists
    without its holder, so a process killed while taking it leaves no lock that nobody
    can tell from a damaged one (at most its own temporary file). Where the file system
    has no hard links, the lock file is created with ``O_EXCL`` and then written.
    """
    if not isinstance(path, Path):
        return create_exclusive(path, json.dumps(record).encode())
    own = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    own.unlink(missing_ok=True)  # left by a killed process that had this id before
    try:
        _write_new(own, record)  # a full disk or no permission ends here, leaving nothing
        try:
            os.link(own, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            log.debug("no hard link for the lock %s (%s): creating it with O_EXCL", path, exc)
            try:
                _write_new(path, record)
            except FileExistsError:
                return False
    finally:
        own.unlink(missing_ok=True)
    return True


#: errno of a file system without hard links (FAT, some SMB and FUSE mounts)
_NO_HARD_LINKS = {
    errno.EPERM,
    errno.EXDEV,
    errno.EMLINK,
    errno.ENOSYS,
    getattr(errno, "ENOTSUP", errno.EPERM),
    getattr(errno, "EOPNOTSUPP", errno.EPERM),
}


def _write_new(path: Path, record: dict[str, Any]) -> None:
    """Create ``path`` (an error if it exists) holding ``record`` as JSON, on disk; a
    failed write (a full disk) removes the file again."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _acquire(run: RunPath, stage: str) -> RunPath:
    path = lock_path(run)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stage": stage,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    for attempt in range(50):
        if _try_create(path, record):
            return path
        holder = read_lock(run)
        if holder is None:  # released meanwhile
            continue
        if not holder:  # being written by its creator this instant: look again shortly
            if attempt < 20:
                time.sleep(0.05)
                continue
            raise RunLockedError(
                f"run store '{run}' has a damaged lock file '{path}'; if no crystalseg command "
                "is writing this run, delete that file"
            )
        pid = holder.get("pid")
        if holder.get("host") == record["host"] and isinstance(pid, int):
            if not process_alive(pid, holder.get("process_start")):
                log.warning(
                    "%s; that process no longer runs: taking over its lock",
                    _describe(run, holder),
                )
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            raise RunLockedError(
                f"{_describe(run, holder)}; wait for it to finish, or stop that process"
            )
        raise RunLockedError(
            f"{_describe(run, holder)}; wait for it to finish. If that process is known to "
            f"be gone, delete the lock file '{path}'"
        )
    raise RunLockedError(  # pragma: no cover - 50 takeovers in a row
        f"run store '{run}' keeps changing hands; try again"
    )


@contextmanager
def run_lock(run: RunLike, stage: str) -> Iterator[None]:
    """Hold the lock of run store ``run`` (existing or about to be made) for ``stage``.

    Re-entrant in the thread that holds it. Raises :class:`RunLockedError` when
    another process or thread holds it.
    """
    key = location_key(lock_path(run))
    me = threading.get_ident()
    with _held_guard:
        owner = _held.get(key)
        if owner is not None and owner[0] == me:
            _held[key] = (me, owner[1] + 1)
            reentered = True
        elif owner is not None:
            raise RunLockedError(
                f"run store '{run}' is being written by another thread of this process; "
                "run one stage at a time on a store"
            )
        else:
            reentered = False
    if not reentered:
        _acquire(run_path(run), stage)
        with _held_guard:
            _held[key] = (me, 1)
    try:
        yield
    finally:
        with _held_guard:
            thread, depth = _held[key]
            if depth > 1:
                _held[key] = (thread, depth - 1)
                release = False
            else:
                del _held[key]
                release = True
        if release:
            _release(run_path(run))


def _release(run: RunPath) -> None:
    """Remove the lock file if it is still ours (a takeover may have replaced it)."""
    holder = read_lock(run)
    if holder and holder.get("pid") == os.getpid():
        try:
            lock_path(run).unlink()
        except FileNotFoundError:  # pragma: no cover - removed by hand meanwhile
            pass


def lock_owner() -> dict[str, Any]:
    """This process as a lock records it (``pid``, ``host``, ``process_start``)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
    }


def holds_lock(run: RunLike) -> bool:
    """Whether this thread holds the lock of ``run``."""
    owner = _held.get(location_key(lock_path(run)))
    return owner is not None and owner[0] == threading.get_ident()


__all__ = [
    "LOCK_SUFFIX",
    "holds_lock",
    "lock_owner",
    "lock_path",
    "process_alive",
    "read_lock",
    "run_lock",
]
