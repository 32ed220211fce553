"""Bring a run store written by an earlier crystalseg up to the present layout in place.

Only metadata changes (and the copy of the mask its OME-Zarr label image needs): no
frame, mask, probability or result is rewritten or removed, so an upgraded store
reads the same numbers as before.
"""

from __future__ import annotations

import logging

import zarr

from crystalseg.dims import PROBABILITY
from crystalseg.store.core import PROBABILITY_ATTRS, read_run_attrs
from crystalseg.store.location import RunLike, run_path
from crystalseg.store.ome import write_ome_metadata
from crystalseg.store.stages import writing

log = logging.getLogger(__name__)

#: CF attributes that made xarray decode the uint8 probability to float64.
_CF_SCALING = ("scale_factor", "add_offset")


def upgrade_run(path: RunLike) -> list[str]:
    """Add what later releases write to an existing run store: the OME-Zarr image and
    label metadata (:func:`~crystalseg.store.ome.write_ome_metadata`), the frames'
    coordinates in micrometres, and a ``probability`` read as the uint8 it is stored as.

    Every stage writes the same when it finishes, so a store that is segmented or
    measured again is upgraded anyway; this is for stores that are only read.
    Running it twice changes nothing more.

    Parameters
    ----------
    path : path of the run store

    Returns
    -------
    list of str
        What was changed, in words (empty when the store was up to date).
    """
    path = run_path(path)
    read_run_attrs(path)  # a run store this crystalseg reads, or a clear error
    changes: list[str] = []
    with writing(path, "upgrade"):
        group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        before = group.attrs.get("ome")
        had_labels = "labels" in group
        if PROBABILITY in group:
            prob = group[PROBABILITY]
            old = dict(prob.attrs.asdict())
            if any(key in old for key in _CF_SCALING):
                for key in _CF_SCALING:
                    prob.attrs.pop(key, None)
                prob.attrs.update(PROBABILITY_ATTRS)
                changes.append("probability: read as uint8 0..255 (CF scale_factor removed)")
        ome = write_ome_metadata(path)
        if ome != before:
            changes.append("OME-Zarr 0.5 image metadata (axes, units, scale) on the root group")
        if "labels" in group and not had_labels:
            changes.append("OME-Zarr label image labels/mask (a copy of the mask)")
    for change in changes:
        log.info("upgraded %s: %s", path, change)
    return changes
