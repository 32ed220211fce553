"""Where a run store lives: a folder on this machine, or a URL on object storage.

Every public function that takes a run path turns it into a :data:`RunPath` with
:func:`run_path` first: a plain :class:`pathlib.Path` for a local path (or a
``file://`` URL), a :class:`upath.UPath` for a URL of any other fsspec protocol
(``s3://bucket/run.zarr``). Both are joined with ``/`` and answer ``exists``,
``is_dir``, ``iterdir``, ``read_text``, ``name``, ``parent`` alike, and ``str()`` of
either is what ``zarr.open_group`` and ``xarray.open_zarr`` open (zarr 3 opens a URL
through its ``FsspecStore``). What a local file system does and object storage does
not (rename, hard links, empty folders) goes through the few functions here, which
say what they guarantee where.

Why ``universal_pathlib``: it is the pathlib interface of fsspec, so the code of the
stage runner, written against ``Path``, works on a URL with the operations above
unchanged, and the file system behind it (credentials, endpoint) is fsspec's own,
configured as every fsspec user configures it: the AWS environment variables,
``~/.aws`` profiles, ``AWS_ENDPOINT_URL`` for an S3-compatible server, or fsspec's
config (``FSSPEC_S3_ENDPOINT_URL``). Local paths stay plain ``Path``: nothing changes
for them.

A URL is refused at once, in one line, when its protocol is unknown to fsspec, when
the package that reads it is not installed (``s3://`` needs ``s3fs``), or when it was
mangled into a path (``s3:/bucket``: a shell or ``Path`` joined its two slashes).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, TypeAlias

from upath import UPath

from crystalseg.errors import ConfigError

log = logging.getLogger(__name__)

#: A run store's location: a local folder, or a folder-like prefix on an fsspec file system.
RunPath: TypeAlias = "Path | UPath"
#: What a public function accepts as a run path: a path, a URL string, or a RunPath.
RunLike: TypeAlias = "str | os.PathLike[str] | UPath"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/(?!/)")
#: fsspec protocols that are this machine's own files: given as plain paths.
_LOCAL = {"file", "local"}


def run_path(path: RunLike, *, resolve: bool = False) -> RunPath:
    """The location of a run store (or of an output) given as a path or a URL.

    Parameters
    ----------
    path : a local path (``run.zarr``, ``~/runs/a.zarr``), a ``file://`` URL, or a URL
        of a file system fsspec knows (``s3://bucket/runs/a.zarr``)
    resolve : make a local path absolute (symbolic links resolved); a URL is kept

    Returns
    -------
    Path or UPath
        A local path (as given), or a ``UPath`` of the URL
        whose file system lists afresh on every call (no listing cache: other processes
        write the same store).

    Raises
    ------
    ConfigError
        The protocol is unknown, the package for it is not installed, or the URL lost
        one of its slashes.
    """
    if isinstance(path, UPath) and not isinstance(path, Path):
        return path
    found = _parse(os.fspath(path))  # a Path too: Path("s3://b/r") is the mangled "s3:/b/r"
    return found.resolve() if resolve and isinstance(found, Path) else found


def _parse(text: str) -> RunPath:
    """:func:`run_path` of a string."""
    match = _URL.match(text)
    if match is None:
        mangled = _MANGLED.match(text)
        if mangled and len(mangled.group(1)) > 1 and not Path(text).exists():
            fixed = f"{mangled.group(1)}://{text[mangled.end() :]}"
            raise ConfigError(
                f"'{text}' looks like a URL that lost a slash; expected "
                f"'{mangled.group(1)}://...'. Write it as '{fixed}'"
            )
        return Path(text)
    protocol = match.group(1).lower()
    if protocol in _LOCAL:
        return Path(text[match.end() :] or "/")
    _check_protocol(protocol, text)
    try:
        return UPath(text, use_listings_cache=False)
    except TypeError:  # a file system whose constructor takes no listing-cache option
        return UPath(text)


def _check_protocol(protocol: str, text: str) -> None:
    """Refuse a protocol fsspec does not know or cannot load."""
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError as exc:
        known = ", ".join(f"{p}://" for p in ("s3", "gs", "az", "memory"))
        raise ConfigError(
            f"'{text}' has the protocol '{protocol}://', which no installed file system "
            f"reads; expected a local path or a URL such as {known}. Check the spelling "
            "of the URL"
        ) from exc
    except ImportError as exc:
        package = _package_for(protocol, str(exc))
        raise ConfigError(
            f"'{text}' needs the package {package} to read '{protocol}://' URLs, which is "
            f"not installed; install it (pip install {package}) or give a local path"
        ) from exc


def _package_for(protocol: str, message: str) -> str:
    """The package fsspec names for ``protocol`` ("Install s3fs to access S3")."""
    found = re.search(r"install (\S+)", message, flags=re.IGNORECASE)
    return found.group(1).strip("'\"`.,") if found else f"the fsspec plug-in for {protocol}"


def is_remote(path: RunPath) -> bool:
    """Whether ``path`` (from :func:`run_path`) lies on a file system other than this
    machine's: object storage has no rename, no hard link and no empty folder."""
    return not isinstance(path, Path)


def location_key(path: RunPath) -> str:
    """One name per location, the same however it was written (for registries of locks)."""
    return str(path.resolve()) if isinstance(path, Path) else str(path).rstrip("/")


def storage_options(path: RunPath) -> dict[str, Any]:
    """What ``zarr.open_group`` / ``xarray.open_zarr`` need besides ``str(path)`` to
    reach the same file system as ``path`` (empty for a local path)."""
    return {} if isinstance(path, Path) else dict(path.storage_options)


def remove_tree(path: RunPath) -> None:
    """Delete the folder (or file) ``path`` and everything in it; nothing when missing."""
    if isinstance(path, Path):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        return
    fs, where = path.fs, path.path
    if fs.exists(where):
        fs.rm(where, recursive=True)


def copy_tree(source: RunPath, target: RunPath) -> None:
    """Copy every object under ``source`` to the same place under ``target`` (object
    storage: server-side copies; ``target`` is expected not to exist)."""
    if isinstance(source, Path) and isinstance(target, Path):
        shutil.copytree(source, target)
        return
    if isinstance(source, Path) or isinstance(target, Path):
        raise ConfigError(f"cannot copy '{source}' to '{target}': not on the same file system")
    fs, src, dst = source.fs, source.path.rstrip("/"), target.path.rstrip("/")
    files = [f for f in fs.find(src) if f != src]
    if not files:
        if fs.isfile(src):
            fs.copy(src, dst)
        return
    fs.copy(files, [dst + f[len(src) :] for f in files])


def move_tree(source: RunPath, target: RunPath) -> None:
    """Move ``source`` to ``target`` (which must not exist).

    Locally one rename: atomic, a reader sees the old name or the new one. On object
    storage, which has no rename, a copy of every object and then the deletion of the
    source: not atomic. The stage runner keeps a record around it so that an
    interrupted move is completed (:mod:`crystalseg.store.stages`).
    """
    if isinstance(source, Path) and isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    copy_tree(source, target)
    remove_tree(source)


def make_parent(path: RunPath) -> None:
    """Make the folder ``path`` will be created in (object storage needs none)."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)


def create_exclusive(path: RunPath, data: bytes) -> bool:
    """Create the object ``path`` holding ``data`` unless it exists; False when it does.

    On S3 (AWS, and servers that implement it, e.g. moto) this is one conditional
    ``PUT`` (``If-None-Match: *``), which the server refuses when the object exists:
    atomic, like ``O_EXCL``. A file system whose fsspec driver has no conditional
    write checks first and writes after (not atomic). Only for remote paths: the
    lock has its own local way.
    """
    if isinstance(path, Path):
        raise TypeError("create_exclusive is for remote paths; the lock creates local files")
    try:
        path.fs.pipe_file(path.path, data, mode="create")
    except FileExistsError:
        return False
    return True


def list_files(folder: RunPath) -> list[tuple[str, int, str]]:
    """Every file under ``folder``: (path relative to it, size in bytes, a stamp that
    changes when the file is rewritten: modification time locally, ETag or date on
    object storage), sorted."""
    if isinstance(folder, Path):
        found = []
        for file in folder.rglob("*"):
            if file.is_file():
                stat = file.stat()
                found.append((str(file.relative_to(folder)), stat.st_size, str(stat.st_mtime_ns)))
        return sorted(found)
    root = folder.path.rstrip("/")
    details = folder.fs.find(root, detail=True)
    return sorted(
        (
            name[len(root) + 1 :],
            int(info.get("size") or 0),
            str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or ""),
        )
        for name, info in details.items()
        if info.get("type", "file") == "file"
    )


__all__ = [
    "RunLike",
    "RunPath",
    "copy_tree",
    "create_exclusive",
    "is_remote",
    "list_files",
    "location_key",
    "make_parent",
    "move_tree",
    "remove_tree",
    "run_path",
    "storage_options",
]
