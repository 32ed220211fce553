"""The exceptions crystalseg raises.

Every fault a user can fix raises a subclass of :class:`CrystalsegError`; each
subclass also inherits the matching built-in, so ``except ValueError`` keeps
working for callers that do not know crystalseg. The CLI prints the message of
a ``CrystalsegError`` as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import zlib
from collections.abc import Sequence


class CrystalsegError(Exception):
    """Base class of every error a user can act on."""


class InputNotFoundError(CrystalsegError, FileNotFoundError):
    """A path given by the user does not exist."""


class UnsupportedInputError(CrystalsegError, ValueError):
    """A path exists but no reader understands it (not an image, unknown layout)."""


class FrameMismatchError(CrystalsegError, ValueError):
    """Frames of one recording differ in size, channels or dtype."""


class RunFormatError(CrystalsegError, ValueError):
    """A run store is missing, incomplete, or written by an incompatible version."""


class StageStateError(CrystalsegError, RuntimeError):
    """A stage cannot run in the store's current state (e.g. output exists, no --overwrite)."""


class RunLockedError(StageStateError):
    """Another process (or thread) is writing the run store; one writer at a time."""


class MaskValueError(CrystalsegError, ValueError):
    """A mask holds values that map to no class."""


class CheckpointError(CrystalsegError, ValueError):
    """A model checkpoint is unreadable, unsafe or incompatible."""


class ConfigError(CrystalsegError, ValueError):
    """A setting is out of range or inconsistent with another."""


class CrystalsegWarning(UserWarning):
    """Something the caller should change, though the result is still usable."""


class StorageError(CrystalsegError, OSError):
    """The file system refused a read or write: no space, read-only, no permission, a file
    where a folder is wanted (or the reverse). Raised by :func:`explain_failure`."""


class DamagedRunError(RunFormatError):
    """A run store's data or metadata cannot be decoded (a corrupt chunk, edited attributes)."""


#: errno values: what happened, and the one fix to try.
_OS_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "no space left on the device",
        "Free space (or choose a folder on another disk) and run the same command again; "
        "what was finished is kept",
    ),
    errno.EDQUOT: (
        "the disk quota is exhausted",
        "Free space within the quota and run the same command again; what was finished is kept",
    ),
    errno.EROFS: (
        "read-only file system",
        "Write the output to a writable folder, or copy the run store there first",
    ),
    errno.EACCES: (
        "permission denied",
        "Check the permissions (ls -l), or write the output to a folder of your own",
    ),
    errno.EPERM: (
        "operation not permitted",
        "Check the permissions (ls -l), or write the output to a folder of your own",
    ),
    errno.EISDIR: (
        "a folder is there where a file is needed",
        "Give a file name instead (e.g. NAME.html inside that folder)",
    ),
    errno.ENOTDIR: (
        "a part of the path is a file where a folder is needed",
        "Choose a path whose parents are folders",
    ),
    errno.EEXIST: (
        "a file of that name exists where a folder is to be made",
        "Choose another path, or move that file away",
    ),
    errno.EIO: (
        "the disk or network share reported an input/output error",
        "Check the device (dmesg, the share's connection) and run the same command again",
    ),
    errno.EMFILE: (
        "too many open files",
        "Raise the limit (ulimit -n 4096) and run the same command again",
    ),
    errno.ENAMETOOLONG: ("file name too long", "Choose a shorter path"),
}

#: Words of the exceptions codecs raise on bytes they cannot decode (numcodecs' Zstd and
#: Blosc raise bare RuntimeErrors, zlib its own error, zarr a checksum mismatch).
_CODEC_WORDS = ("decompress", "compressed data", "checksum", "invalid input data", "zstd", "blosc")


def explain_failure(
    exc: BaseException, *, paths: Sequence[str | os.PathLike[str]] = ()
) -> CrystalsegError | None:
    """The one-line :class:`CrystalsegError` for a failure of the file system or of a
    damaged store, or None when ``exc`` is neither (a bug, which keeps its traceback).

    The CLI calls this on whatever a command raised, so every command reports a full
    disk, a read-only folder, a missing permission or a corrupt chunk the same way,
    naming the file and what to do, instead of each library function catching them.

    Parameters
    ----------
    exc : the exception a command raised
    paths : the paths the command was given (run stores first); named when the
        exception itself does not say which file failed (codecs never do)

    Returns
    -------
    StorageError (for an ``OSError``), DamagedRunError (for bytes no codec decodes), or
    None.
    """
    if isinstance(exc, CrystalsegError):
        return exc
    given = [str(p) for p in paths]
    if isinstance(exc, OSError) and exc.errno is not None:
        name = exc.filename if exc.filename is not None else (given[0] if given else "?")
        if exc.errno == errno.EISDIR and exc.filename2 is not None:  # os.replace onto a folder
            name = exc.filename2
        name = re.sub(r"\.([^/]+)\.\d+\.partial$", r"\1", os.fsdecode(name))  # the target
        for store in (p for p in given if p.rstrip("/").endswith(".zarr")):
            full, root = os.path.abspath(name), os.path.abspath(store)
            inside = full.startswith(root + os.sep)  # a chunk, zarr's temporary file
            beside = os.path.dirname(full) == os.path.dirname(root) and os.path.basename(
                full
            ).startswith(f".{os.path.basename(root)}.")  # the store's lock file
            if inside or beside:
                name = store  # the path the user gave
                break
        what, fix = _OS_FAULTS.get(
            exc.errno, (exc.strerror or str(exc), "Check the path and run the command again")
        )
        error = StorageError(f"'{name}': {what}. {fix}")
        error.errno = exc.errno
        return error
    text = str(exc).lower()
    codec = isinstance(exc, zlib.error) or (
        isinstance(exc, (RuntimeError, ValueError)) and any(w in text for w in _CODEC_WORDS)
    )
    if codec:
        zarrs = [p for p in given if p.rstrip("/").endswith(".zarr")]
        where = f"run store '{zarrs[0]}'" if zarrs else f"'{given[0]}'" if given else "a store"
        return DamagedRunError(
            f"a chunk of {where} cannot be decoded ({exc}); the store is damaged (a copy cut "
            "short or a failing disk). Re-import the recording into a new store, or restore "
            "the store from a backup"
        )
    return None
