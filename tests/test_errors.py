"""explain_failure: real failures of the file system and of codecs as one-line errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numcodecs
import pytest

from crystalseg.errors import (
    ConfigError,
    DamagedRunError,
    RunFormatError,
    StorageError,
    explain_failure,
)


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_a_folder_where_a_file_is_wanted(tmp_path: Path) -> None:
    exc = _raised(lambda: open(tmp_path, "w"))  # a real IsADirectoryError
    error = explain_failure(exc, paths=[tmp_path])
    assert isinstance(error, StorageError) and isinstance(error, OSError)
    assert error.errno == errno.EISDIR
    assert str(error) == (
        f"'{tmp_path}': a folder is there where a file is needed. Give a file name instead "
        "(e.g. NAME.html inside that folder)"
    )


def test_a_replace_onto_a_folder_names_the_target(tmp_path: Path) -> None:
    (tmp_path / "a.partial").write_text("x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("y")
    exc = _raised(lambda: os.replace(tmp_path / "a.partial", tmp_path / "out"))
    assert str(explain_failure(exc)).startswith(f"'{tmp_path / 'out'}': a folder is there")


def test_a_file_in_the_path_and_a_missing_permission(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    exc = _raised(lambda: open(tmp_path / "f" / "g", "w"))
    assert "a part of the path is a file where a folder is needed" in str(explain_failure(exc))
    denied = explain_failure(PermissionError(errno.EACCES, "Permission denied", "/x"))
    assert str(denied) == (
        "'/x': permission denied. Check the permissions (ls -l), or write the output to a "
        "folder of your own"
    )


def test_the_no_space_and_read_only_messages() -> None:
    full = explain_failure(OSError(errno.ENOSPC, "No space left on device", "/d/r.zarr/c/0"))
    assert str(full).startswith("'/d/r.zarr/c/0': no space left on the device. Free space")
    assert "what was finished is kept" in str(full)
    ro = explain_failure(OSError(errno.EROFS, "Read-only file system"), paths=["/ro/r.zarr"])
    assert str(ro).startswith("'/ro/r.zarr': read-only file system. Write the output")


def test_a_chunk_no_codec_decodes_is_a_damaged_store() -> None:
    exc = _raised(lambda: numcodecs.Zstd().decode(b"not zstd at all"))
    error = explain_failure(exc, paths=[Path("notes.txt"), Path("/data/r.zarr")])
    assert isinstance(error, DamagedRunError) and isinstance(error, RunFormatError)
    assert str(error).startswith("a chunk of run store '/data/r.zarr' cannot be decoded (Zstd")
    assert "Re-import the recording" in str(error)


@pytest.mark.parametrize(
    "exc", [KeyError("image"), ValueError("a bug"), RuntimeError("a bug"), OSError("no errno")]
)
def test_anything_else_is_left_alone(exc: BaseException) -> None:
    assert explain_failure(exc, paths=["/r.zarr"]) is None


def test_a_crystalseg_error_passes_as_it_is() -> None:
    error = ConfigError("bad")
    assert explain_failure(error) is error


def test_a_store_s_inner_or_lock_file_is_named_as_the_store_given(tmp_path: Path) -> None:
    run = tmp_path / "r.zarr"
    for inner in (run / "image" / "c" / "0" / "0" / "0", tmp_path / ".r.zarr.crystalseg-lock"):
        error = explain_failure(OSError(errno.EROFS, "Read-only file system", str(inner)),
                                paths=[run])  # fmt: skip
        assert str(error).startswith(f"'{run}': read-only file system."), error
    partial = tmp_path / ".r_report.html.123.partial"
    error = explain_failure(OSError(errno.ENOSPC, "No space", str(partial)), paths=[run])
    assert str(error).startswith(f"'{tmp_path / 'r_report.html'}': no space left")
