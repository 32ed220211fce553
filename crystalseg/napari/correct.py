"""Add a frame of a run with its corrected mask to a training folder.

The human-in-the-loop of Cellpose: look at the segmentation in napari, correct a frame
by hand, add it to a folder of image/mask pairs, fine-tune the model on that folder
(``crystalseg train FOLDER``), measure again. The folder is the flat ``X.png`` /
``X_mask.png`` layout that :func:`crystalseg.train.data.discover_pairs` reads, the
mask holding class indices (0 background, 1 crystal, ...), as the run's mask does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import zarr

from crystalseg.dims import DEFAULT_CODES, IMAGE, MASK
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.measure.run import read_mask_codes
from crystalseg.store import get_array, open_run

log = logging.getLogger(__name__)


def training_pair_name(run: str | os.PathLike[str], frame: int) -> str:
    """``X`` of the pair ``X.png``/``X_mask.png``: the run's name and the frame index,
    so that frames of several runs share a folder without clashing."""
    return f"{Path(run).stem}_{int(frame):05d}"


def save_training_pair(
    run: str | os.PathLike[str],
    frame: int,
    mask: np.ndarray,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write frame ``frame`` of ``run`` and its corrected ``mask`` as a training pair.

    Parameters
    ----------
    run : path of the run store
    frame : index of the frame along time
    mask : ndarray (y, x), integer
        The corrected class mask of that frame (values are class indices of the
        run's mask, e.g. 0 background, 1 crystal).
    folder : the training folder (created if missing)
    overwrite : replace a pair of the same name (without it, that is an error)

    Returns
    -------
    (image path, mask path)

    Raises
    ------
    ConfigError
        The frame is outside the run, the mask does not match the frame's size or
        holds values that are not class indices of the run.
    StageStateError
        The pair exists and ``overwrite`` is False.
    """
    ds = open_run(Path(run))
    n, ny, nx = ds[IMAGE].shape
    if not 0 <= int(frame) < n:
        raise ConfigError(f"frame {frame} is outside the run's {n} frames (0..{n - 1})")
    mask = np.asarray(mask)
    if mask.shape != (ny, nx):
        raise ConfigError(
            f"the corrected mask is {mask.shape[1]}x{mask.shape[0]} pixels but the frames "
            f"are {nx}x{ny}; correct a copy of the frame's mask"
        )
    codes = _codes(Path(run))
    values = np.unique(mask)
    if values.min() < 0 or values.max() >= len(codes):
        raise ConfigError(
            f"the corrected mask holds values {values.tolist()}; expected class indices "
            f"0..{len(codes) - 1} for {list(codes)}; paint with those labels only (0 erases)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = training_pair_name(run, frame)
    image_path, mask_path = folder / f"{name}.png", folder / f"{name}_mask.png"
    existing = [p for p in (image_path, mask_path) if p.exists()]
    if existing and not overwrite:
        raise StageStateError(
            f"'{existing[0]}' exists; pass overwrite=True to replace that pair, or choose "
            "another folder"
        )
    iio.imwrite(image_path, np.asarray(ds[IMAGE][int(frame)].values))
    iio.imwrite(mask_path, mask.astype(np.uint8))
    log.info("added frame %d of %s to %s as %s", frame, run, folder, name)
    return image_path, mask_path


def _codes(run: Path) -> tuple[str, ...]:
    group = zarr.open_group(str(run), mode="r", use_consolidated=False)
    if MASK not in group:
        return DEFAULT_CODES
    return read_mask_codes(get_array(group, MASK, run))
