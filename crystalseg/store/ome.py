"""OME-Zarr 0.5 metadata of a run store, so that napari, Fiji and ``ome-zarr`` open it
calibrated while ``xarray.open_zarr`` reads it as before.

OME-Zarr puts its metadata on *groups*: an image is a group whose ``ome`` attribute
holds ``multiscales`` (axes and the path of each resolution level, relative to the
group), and its label images are groups under ``labels/``. The run store keeps its
arrays at the root, where xarray reads them, and describes them from there::

    run.zarr/                 attrs.ome.multiscales: axes time/y/x, level 0 = "image"
        image  time  mask  probability  y_um  x_um   (what xarray reads, unchanged)
        labels/               attrs.ome.labels = ["mask"]
            mask/             attrs.ome.image-label (classes, colours, source "../../")
                0             a copy of ``mask``, level 0 of the label image

So the root group *is* the OME-Zarr image (one resolution level, the full frames)
and ``labels/mask`` its label image. Groups are invisible to ``xarray.open_zarr(run)``,
which reads only the root's arrays. The label image needs its own array: a path in
``multiscales`` is relative to its group and may not climb out of it (zarr refuses
``../``), so the mask is copied there, chunk by chunk, each time a new mask is
finished (a uint8 class mask compresses to a few per cent of the frames).
The axes are named as the arrays' ``dimension_names`` (``time``, ``y``, ``x``), which
OME-Zarr 0.5 requires; their types (time, space, space) tell a viewer which is which.

The scale of each axis comes from the calibration: the median frame interval in
seconds, the pixel size in micrometres. Without a pixel size the y/x axes carry no
unit and scale 1 (pixels), which is what OME-Zarr means by an uncalibrated axis.

The same calibration gives xarray its view: ``y_um`` and ``x_um``, the pixel centres
in micrometres (pixel i at i times the pixel size, as OME-Zarr and napari place it),
as non-dimension coordinates of the frames (named in the ``coordinates`` attribute
of ``image``); absent while the pixel size is unknown.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import zarr

from crystalseg.dims import FRAME_DIMS, IMAGE, MASK, TIME, X, Y
from crystalseg.store.core import (
    consolidate,
    default_compressor,
    get_array,
    node_attrs,
    open_group,
    read_run_attrs,
)
from crystalseg.store.location import RunLike, RunPath, list_files, run_path

log = logging.getLogger(__name__)


OME_VERSION = "0.5"
#: The OME-Zarr group of label images under the image (the store's root).
LABELS_GROUP = "labels"
#: The one resolution level of the label image: a copy of the store's mask.
LABEL_LEVEL = "0"
#: Non-dimension coordinates of the frames in micrometres (written when calibrated).
Y_UM, X_UM = f"{Y}_um", f"{X}_um"
#: A colour per class index of the mask (RGBA 0-255): background clear, crystal orange,
#: then a few distinct ones for further classes.
CLASS_COLOURS = (
    (0, 0, 0, 0),
    (255, 140, 0, 160),
    (30, 144, 255, 160),
    (50, 205, 50, 160),
    (220, 20, 60, 160),
)


def frame_scale(path: RunLike) -> dict[str, Any]:
    """The calibration of the frames as OME-Zarr sees it: seconds per frame (the median
    interval; 1 with a single frame) and micrometres per pixel (1 when unknown).

    Returns
    -------
    dict
        ``interval_s``, ``pixel_size_um`` (None when unknown) and ``scale``, the
        (t, y, x) scale of the OME-Zarr coordinate transformation.
    """
    attrs = read_run_attrs(path)
    time = np.asarray(get_array(open_group(path, "r"), TIME, path)[:], dtype="float64")
    steps = np.diff(time)
    interval = float(np.median(steps)) if len(steps) else 0.0
    interval = interval if np.isfinite(interval) and interval > 0 else 1.0
    pixel = attrs.get("pixel_size_um")
    step = float(pixel) if pixel else 1.0
    return {"interval_s": interval, "pixel_size_um": pixel, "scale": [interval, step, step]}


def _multiscales(name: str, dataset: str, scale: list[float], calibrated: bool) -> list[Any]:
    space = {"type": "space", **({"unit": "micrometer"} if calibrated else {})}
    return [
        {
            "name": name,
            "axes": [
                {"name": TIME, "type": "time", "unit": "second"},
                {"name": Y, **space},
                {"name": X, **space},
            ],
            "datasets": [
                {"path": dataset, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]


def _image_label(codes: list[str]) -> dict[str, Any]:
    return {
        "colors": [
            {"label-value": i, "rgba": list(CLASS_COLOURS[i % len(CLASS_COLOURS)])}
            for i in range(len(codes))
        ],
        "properties": [{"label-value": i, "class": str(c)} for i, c in enumerate(codes)],
        "source": {"image": "../../"},
    }


def write_ome_metadata(path: RunLike) -> dict[str, Any]:
    """Describe the store's ``image`` (and ``mask``) as an OME-Zarr 0.5 image (and its
    label image), and give xarray the frames' coordinates in micrometres.

    Call it, with the store's lock held, whenever the image, the calibration or the
    mask changed (the stage runner does, when a stage finishes and when the
    calibration is set); calling it again rewrites the same metadata. Only metadata
    and two small coordinate arrays are written; the frames are not read.

    Parameters
    ----------
    path : path of the run store

    Returns
    -------
    dict
        The root's ``ome`` attribute as written.
    """
    path = run_path(path)
    read_run_attrs(path)
    group = open_group(path, "r+")
    image = get_array(group, IMAGE, path)
    cal = frame_scale(path)
    calibrated = cal["pixel_size_um"] is not None
    ome = {
        "version": OME_VERSION,
        "multiscales": _multiscales(path.stem, IMAGE, cal["scale"], calibrated),
    }
    group.attrs["ome"] = ome
    _write_coordinates(group, image, cal["pixel_size_um"])
    if MASK in group:
        mask = get_array(group, MASK, path)
        codes = [str(c) for c in node_attrs(mask).get("codes") or ["background", "crystal"]]
        labels = group.require_group(LABELS_GROUP)
        labels.attrs["ome"] = {"version": OME_VERSION, "labels": [MASK]}
        label = labels.require_group(MASK)
        label.attrs["ome"] = {
            "version": OME_VERSION,
            "image-label": _image_label(codes),
            "multiscales": _multiscales(MASK, LABEL_LEVEL, cal["scale"], calibrated),
        }
        _copy_mask(path, mask, label)
    elif LABELS_GROUP in group:  # the mask is gone: its label image with it
        del group[LABELS_GROUP]
    consolidate(path)
    log.debug("OME-Zarr metadata of %s: scale %s", path, cal["scale"])
    return ome


def _copy_mask(path: RunPath, mask: zarr.Array, label: zarr.Group) -> None:
    """Copy ``mask`` into the label image, unless the copy there is of the same mask
    (same files: names, sizes and modification times of the mask's chunks)."""
    source = _files_fingerprint(path / MASK)
    if LABEL_LEVEL in label and node_attrs(label).get("crystalseg_copy_of") == source:
        return
    copy = label.create_array(
        LABEL_LEVEL,
        shape=mask.shape,
        chunks=mask.chunks,
        dtype=mask.dtype,
        fill_value=0,
        dimension_names=FRAME_DIMS,
        compressors=default_compressor(),
        overwrite=True,
    )
    step = int(mask.chunks[0])
    for start in range(0, int(mask.shape[0]), step):
        copy[start : start + step] = mask[start : start + step]
    label.attrs["crystalseg_copy_of"] = source
    log.info("copied the mask of %s into its OME-Zarr label image", path)


def _files_fingerprint(folder: RunPath) -> str:
    """A checksum of the names, sizes and modification times (ETags on object storage)
    of the files in ``folder``: changes whenever zarr writes any of them, costs one
    ``stat`` per chunk (one listing on object storage)."""
    digest = hashlib.sha1()
    for name, size, stamp in list_files(folder):
        digest.update(f"{name} {size} {stamp}\n".encode())
    return digest.hexdigest()


def _write_coordinates(group: zarr.Group, image: zarr.Array, pixel_size_um: Any) -> None:
    """``y_um``/``x_um`` (pixel centres in micrometres) beside the frames, or none."""
    names = f"{Y_UM} {X_UM}"
    if pixel_size_um is None:
        for name in (Y_UM, X_UM):
            if name in group:
                del group[name]
        if node_attrs(image).get("coordinates") == names:
            del image.attrs["coordinates"]
        return
    for name, dim, size in ((Y_UM, Y, image.shape[1]), (X_UM, X, image.shape[2])):
        arr = group.create_array(
            name,
            shape=(size,),
            chunks=(size,),
            dtype="float64",
            fill_value=0.0,
            dimension_names=(dim,),
            compressors=None,
            overwrite=True,
        )
        arr[:] = np.arange(size, dtype="float64") * float(pixel_size_um)
        arr.attrs.update(
            {"units": "um", "long_name": f"{dim} of the pixel centre (pixel i at i * pixel size)"}
        )
    image.attrs["coordinates"] = names
