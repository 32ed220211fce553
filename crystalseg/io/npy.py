"""NumPy ``.npy`` stacks, memory-mapped so that only the frames read are loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from crystalseg.errors import UnsupportedInputError
from crystalseg.io.base import ArrayFrameSource, unlabelled_axes

logger = logging.getLogger(__name__)


class NpySource(ArrayFrameSource):
    """Frames of a ``.npy`` file, opened with ``np.load(mmap_mode="r")``.

    The array has no axis names: ``(y, x)`` is one frame, ``(t, y, x)`` a
    stack, and a last axis of 3 or 4 is RGB(A) (see
    :func:`crystalseg.io.base.unlabelled_axes`).

    Parameters
    ----------
    path : Path
        An existing ``.npy`` file.
    channel : int or None
        Colour sample to keep; None turns RGB(A) into grey.
    """

    def __init__(self, path: Path, *, channel: int | None = None) -> None:
        path = Path(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UnsupportedInputError(
                f"'{path}' is not a readable .npy array ({exc}); expected an array saved with "
                "np.save. Save the stack again with np.save(path, frames)."
            ) from exc
        if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for .npz
            raise UnsupportedInputError(
                f"'{path}' is an .npz archive, not one array; expected a .npy stack. Save the "
                "frames alone with np.save(path, frames)."
            )
        self.description = f"NumPy array {path}"
        self._setup(array, unlabelled_axes(array.shape), channel=channel, what=f"'{path}'")
        self.pixel_size_um = None
        self.time_s = None
        self.time_source = "none"
        self.metadata = {
            "format": "npy",
            "files": [str(path)],
            "file_count": 1,
            **self._axes_metadata(),
        }

    def close(self) -> None:
        # dropping the memmap unmaps the file once no frame view is left (read() copies)
        self._array = None
