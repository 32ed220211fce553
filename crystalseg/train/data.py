"""Training data: image/mask pairs from files, folders or run stores; crops and splits.

Four sources, freely mixed in one list:

* ``[(image, mask), ...]`` tuples of paths;
* a folder in the ``X.ext`` / ``X_mask.ext`` layout (also ``X_masks.ext`` and
  ``X_cp_masks.ext``, Cellpose's names; files named so are never taken as images);
* a folder holding ``images/`` and ``masks/`` matched by stem (``X`` or ``X_mask``,
  ``X_masks``, ``X_cp_masks``);
* run stores (``*.zarr``) holding frames plus masks: the exact ground truth of a
  synthetic run (group ``truth``, array ``mask``) or a segmented run's ``mask``; or a
  folder of run stores.

Images are BMP, PNG, TIFF or JPEG; masks are PNG, BMP or TIFF. File pairs are read
once up front so bad masks fail before training starts; frames of run stores are
read lazily. Training draws random crops of a fixed size (reflect-padded when an
image is smaller); validation uses whole images.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crystalseg.classes import boundary_class, class_mask_from_labels
from crystalseg.errors import (
    ConfigError,
    CrystalsegWarning,
    FrameMismatchError,
    InputNotFoundError,
    RunFormatError,
    UnsupportedInputError,
)
from crystalseg.io.folder import IMAGE_SUFFIXES, MASK_TAGS, is_mask_file, read_image_file
from crystalseg.models.checkpoint import ModelSpec, intensity_bounds, to_unit
from crystalseg.train.config import DataSettings
from crystalseg.train.masks import (
    MASK_SUFFIXES,
    MaskRule,
    instance_labels,
    read_mask,
)

log = logging.getLogger(__name__)

MASK_TAG = MASK_TAGS[0]

#: Least fraction of a single annotated frame held out for validation (a band along its
#: longer side): a quarter of the frame, enough crystals to score a few epochs by.
HELD_OUT_BAND = 0.25

#: Most crops drawn from one training image per epoch when the crops follow the area
#: (:meth:`SegmentationData.crop_counts`), so one huge frame does not crowd out the rest.
MAX_CROPS_PER_IMAGE = 8

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PairItem:
    """Where one training sample comes from.

    Attributes
    ----------
    name : str
        Shown in messages: the image file name, or ``run.zarr[frame]``.
    image, mask : Path or None
        Files of a file pair.
    run : Path or None
        Run store of a run frame.
    frame : int or None
        Time index within ``run``.
    mask_group : str or None
        ``"truth"`` for a synthetic run's ground truth, ``""`` for the root ``mask``.
    group : str
        Unit of the validation split: frames of one run stay together.
    part : (float, float) or None
        Only this band of the frame, as fractions (start, stop) along its longer side:
        a single annotated frame is split into a training and a held-out band
        (:func:`split_items`). None: the whole frame.
    """

    name: str
    image: Path | None = None
    mask: Path | None = None
    run: Path | None = None
    frame: int | None = None
    mask_group: str | None = None
    group: str = ""
    part: tuple[float, float] | None = None

    def cut(self, array: np.ndarray) -> np.ndarray:
        """``array`` (y, x[, c]) of the whole frame cut to :attr:`part` (itself if None)."""
        if self.part is None:
            return array
        axis = 0 if array.shape[0] >= array.shape[1] else 1
        n = array.shape[axis]
        lo, hi = (round(f * n) for f in self.part)
        return array[lo:hi] if axis == 0 else array[:, lo:hi]

    def matches(self, key: str) -> bool:
        """True if ``key`` names this item (file name, stem, path or run)."""
        key = str(key)
        cands = {self.name}
        if self.image is not None:
            cands |= {self.image.name, self.image.stem, str(self.image)}
        if self.run is not None:
            cands |= {self.run.name, str(self.run), self.run.stem}
        return key in cands


# --------------------------------------------------------------------------------------
# Reading files


def read_image(path: PathLike) -> np.ndarray:
    """Pixels of an image file: (H, W) grey or (H, W, 3|4) colour, uint8/uint16/float.

    The file is read by :func:`crystalseg.io.folder.read_image_file`, the reader of
    ``crystalseg import``; 1-bit images become 0/255 and 32-bit integer ones that fit
    become uint16.

    Raises
    ------
    InputNotFoundError, UnsupportedInputError
    """
    arr = read_image_file(Path(path))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.int32 and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)
    return arr


def _image_bounds(image: np.ndarray, spec: ModelSpec) -> tuple[float, float]:
    lo, hi = intensity_bounds(torch.from_numpy(_torchable(image))[None], spec)
    return float(lo[0]), float(hi[0])


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An image with the channels a model takes: grey for one, RGB for three.

    Parameters
    ----------
    image : ndarray, shape (y, x) or (y, x, c)
        A frame as read from a file; colour frames become grey by the rule of
        ``crystalseg import`` (:func:`crystalseg.io.base.to_grey`).
    channels : int
        1 or 3, the model's input channels.

    Returns
    -------
    ndarray, shape (y, x) for one channel, (y, x, 3) for three
    """
    if image.ndim == 3:
        if channels == 3:
            return np.ascontiguousarray(image[..., :3])
        if image.dtype.kind == "u" and image.dtype.itemsize <= 2:
            from crystalseg.io.base import to_grey

            return to_grey(image)
        w = np.asarray((0.2125, 0.7154, 0.0721), dtype=np.float32)
        return (image[..., :3].astype(np.float32) * w).sum(-1)
    return image


def check_pair_shapes(item: PairItem, image: np.ndarray, raw_mask: np.ndarray) -> None:
    """Refuse a mask that does not match its image pixel for pixel.

    Raises
    ------
    FrameMismatchError
    """
    if image.shape[:2] != raw_mask.shape:
        raise FrameMismatchError(
            f"image '{item.image.name if item.image else item.name}' is "
            f"{image.shape[1]}x{image.shape[0]} px but its mask "
            f"'{item.mask.name if item.mask else 'mask'}' is {raw_mask.shape[1]}x"
            f"{raw_mask.shape[0]}; masks must match their images pixel for pixel"
        )


# --------------------------------------------------------------------------------------
# Discovery


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _is_run_store(p: Path) -> bool:
    return p.is_dir() and (p / "zarr.json").is_file()


def _files(folder: Path) -> list[Path]:
    from natsort import natsorted

    return natsorted((p for p in folder.iterdir() if _is_image(p)), key=lambda q: q.name)


def _find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def _one_mask(image: Path, found: list[Path]) -> Path | None:
    """The single mask found for ``image``; two (e.g. X_mask and X_masks) is an error."""
    if len(found) > 1:
        raise InputNotFoundError(
            f"'{image.name}' has {len(found)} masks ({', '.join(p.name for p in found)}); "
            "keep one of them"
        )
    return found[0] if found else None


def _pairs_in_flat_folder(folder: Path) -> list[PairItem]:
    files = _files(folder)
    masks = [p for p in files if is_mask_file(p)]
    images = [p for p in files if not is_mask_file(p)]
    items, unlabelled = [], []
    used: set[Path] = set()
    for img in images:
        found = [m for tag in MASK_TAGS if (m := _find_mask(folder, img.stem + tag))]
        mask = _one_mask(img, found)
        if mask is None:
            unlabelled.append(img.name)
            continue
        used.add(mask)
        items.append(PairItem(img.name, image=img, mask=mask, group=str(img)))
    orphans = [m.name for m in masks if m not in used]
    if orphans:
        raise InputNotFoundError(
            f"{len(orphans)} mask(s) in '{folder}' have no image, e.g. '{orphans[0]}'; the "
            f"image of 'X{MASK_TAG}.png' must be named 'X.<ext>' in the same folder"
        )
    if unlabelled:
        log.warning(
            "%d image(s) in '%s' have no X%s mask and are skipped, e.g. '%s'",
            len(unlabelled),
            folder,
            MASK_TAG,
            unlabelled[0],
        )
    return items


def _pairs_in_split_folders(images_dir: Path, masks_dir: Path) -> list[PairItem]:
    masks = {p.stem: p for p in _files(masks_dir) if p.suffix.lower() in MASK_SUFFIXES}
    items, unlabelled = [], []
    used: set[str] = set()
    for img in _files(images_dir):
        keys = [k for k in (img.stem, *(img.stem + t for t in MASK_TAGS)) if k in masks]
        mask = _one_mask(img, [masks[k] for k in keys])
        if mask is None:
            unlabelled.append(img.name)
            continue
        used.add(keys[0])
        items.append(PairItem(img.name, image=img, mask=mask, group=str(img)))
    orphans = sorted(set(masks) - used)
    if orphans:
        raise InputNotFoundError(
            f"{len(orphans)} mask(s) in '{masks_dir}' match no image in '{images_dir}' by "
            f"stem, e.g. '{masks[orphans[0]].name}'; name masks like their images"
        )
    if unlabelled:
        log.warning(
            "%d image(s) in '%s' have no mask in '%s' and are skipped, e.g. '%s'",
            len(unlabelled),
            images_dir,
            masks_dir,
            unlabelled[0],
        )
    return items


def _run_items(run: Path, frame_step: int) -> list[PairItem]:
    import zarr

    try:
        root = zarr.open_group(str(run), mode="r")
    except Exception as exc:
        raise RunFormatError(f"'{run}' is not a readable run store ({exc})") from exc
    keys = set(root.keys())
    if "image" not in keys:
        raise RunFormatError(f"run store '{run}' has no 'image' array; re-import the recording")
    truth = root["truth"] if "truth" in keys else None
    if isinstance(truth, zarr.Group) and "mask" in set(truth.keys()):
        mask_group, mask = "truth", truth["mask"]
    elif "mask" in keys:
        mask_group, mask = "", root["mask"]
        log.warning(
            "run '%s' has no ground truth; training on its segmented 'mask' (model output)",
            run.name,
        )
    else:
        raise RunFormatError(
            f"run store '{run}' holds no masks (neither truth/mask nor a segmented mask); "
            "annotate it or segment it first"
        )
    image = root["image"]
    if not isinstance(image, zarr.Array) or not isinstance(mask, zarr.Array):
        raise RunFormatError(f"run store '{run}': 'image' and 'mask' must be arrays")
    if tuple(mask.shape) != tuple(image.shape):
        raise FrameMismatchError(
            f"run '{run.name}': mask shape {tuple(mask.shape)} differs from image shape "
            f"{tuple(image.shape)}; the store is inconsistent"
        )
    return [
        PairItem(f"{run.name}[{t}]", run=run, frame=t, mask_group=mask_group, group=str(run))
        for t in range(0, image.shape[0], frame_step)
    ]


def discover_pairs(
    source: PathLike | Sequence[PathLike | tuple[PathLike, PathLike]], *, frame_step: int = 1
) -> list[PairItem]:
    """All (image, mask) sources in ``source`` (see module docstring for the layouts).

    Raises
    ------
    InputNotFoundError
        A path does not exist, a mask has no image, or nothing was found.
    UnsupportedInputError
        A folder in none of the layouts.
    """
    if isinstance(source, (str, os.PathLike)):
        entries: list[Any] = [source]
    else:
        entries = list(source)
    items: list[PairItem] = []
    for entry in entries:
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise ConfigError(f"expected (image, mask) pairs, got {entry!r}")
            img, mask = Path(entry[0]), Path(entry[1])
            for p in (img, mask):
                if not p.is_file():
                    raise InputNotFoundError(f"'{p}' does not exist")
            items.append(PairItem(img.name, image=img, mask=mask, group=str(img)))
            continue
        p = Path(entry)
        if not p.exists():
            raise InputNotFoundError(f"data '{p}' does not exist")
        before = len(items)
        if _is_run_store(p):
            items += _run_items(p, frame_step)
        elif p.is_dir() and (p / "images").is_dir() and (p / "masks").is_dir():
            items += _pairs_in_split_folders(p / "images", p / "masks")
        elif p.is_dir():
            runs = sorted(q for q in p.iterdir() if _is_run_store(q))
            if runs:
                for run in runs:
                    items += _run_items(run, frame_step)
            else:
                items += _pairs_in_flat_folder(p)
        else:
            raise UnsupportedInputError(
                f"'{p}' is a file; pass (image, mask) pairs, a folder of X.png/X_mask.png "
                "pairs, a folder with images/ and masks/, or run stores"
            )
        if len(items) == before and len(entries) > 1:  # one of several holds nothing
            raise InputNotFoundError(
                f"data '{p}' holds no image/mask pairs (X.png + X{MASK_TAG}.png, images/ + "
                "masks/, or run stores); remove it from DATA or add its annotations"
            )
    if not items:
        raise InputNotFoundError(
            f"no image/mask pairs found in {[str(e) for e in entries][:3]}; expected "
            f"X.png + X{MASK_TAG}.png pairs, images/ + masks/ folders or run stores"
        )
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        log.info("several samples are named '%s'; messages name their full paths", dup)
    return items


# --------------------------------------------------------------------------------------
# Fingerprint and split


def data_fingerprint(items: Sequence[PairItem], rule: MaskRule, instances: bool = False) -> str:
    """What identifies a training set: 16 hex digits of a sha256.

    Hashes the files' content (pairs) or the stores' file names and sizes (runs),
    with the class codes and mask rule. A checkpoint records it
    (``data_fingerprint`` in ``model.json``); ``crystalseg evaluate`` compares it to
    warn when a model is scored on the frames it was trained on.
    """
    h = hashlib.sha256()
    h.update(repr((rule.codes, "instances" if instances else rule.to_json())).encode())
    seen_runs: set[Path] = set()
    for item in items:
        if item.run is not None:
            if item.run in seen_runs:
                continue
            seen_runs.add(item.run)
            h.update(f"run:{item.run.name}".encode())
            for f in sorted(item.run.rglob("*")):
                if f.is_file():
                    h.update(f"{f.relative_to(item.run)}:{f.stat().st_size}".encode())
            continue
        for file in (item.image, item.mask):
            if file is not None:
                h.update(file.name.encode())
                h.update(hashlib.sha256(file.read_bytes()).digest())
    return h.hexdigest()[:16]


def split_items(
    items: Sequence[PairItem],
    *,
    valid_fraction: float,
    valid: Sequence[PathLike] | None,
    seed: int,
) -> tuple[list[PairItem], list[PairItem]]:
    """Train and validation items, fixed by ``seed``; whole runs go to one side.

    Several runs or files: whole ones are held out; one run: its last frames; one frame
    (one image/mask pair, a one-frame run): a band of it, the last ``valid_fraction``
    (at least :data:`HELD_OUT_BAND`, at most half) of its longer side, and the training
    item is the rest of that frame (:attr:`PairItem.part`).

    Raises
    ------
    ConfigError
        A name in ``valid`` matches no item, or no training item would remain.
    """
    if valid is not None:
        keys = [os.fspath(v) for v in valid]
        unmatched = [k for k in keys if not any(i.matches(k) for i in items)]
        if unmatched:
            raise ConfigError(
                f"validation names {unmatched[:3]} match no training sample; use file names, "
                "stems or run paths"
            )
        val = [i for i in items if any(i.matches(k) for k in keys)]
    elif valid_fraction <= 0:
        val = []
    else:
        groups = sorted({i.group for i in items})
        rng = np.random.default_rng(seed)
        if len(groups) >= 2:
            n = min(len(groups) - 1, max(1, round(valid_fraction * len(groups))))
            chosen = {groups[j] for j in rng.permutation(len(groups))[:n]}
            val = [i for i in items if i.group in chosen]
        elif len(items) >= 2:
            # one run: hold out its last frames (a time block leaks less than random frames)
            n = min(len(items) - 1, max(1, round(valid_fraction * len(items))))
            val = list(items[-n:])
            log.info("one run only: validating on its last %d frames", n)
        else:
            # one frame: hold out a band of it (the far end of its longer side), so that
            # the schedule is still judged on pixels it never trained on
            item = items[0]
            cut = 1.0 - min(0.5, max(HELD_OUT_BAND, valid_fraction))
            train_part = replace(item, name=f"{item.name}[0-{cut:.0%}]", part=(0.0, cut))
            val = [replace(item, name=f"{item.name}[{cut:.0%}-100%]", part=(cut, 1.0))]
            log.info(
                "one annotated frame: validating on a held-out band of it (the last %.0f %% "
                "of its longer side), training on the rest",
                100 * (1.0 - cut),
            )
            return [train_part], val
    val_ids = {id(i) for i in val}
    train = [i for i in items if id(i) not in val_ids]
    if not train:
        raise ConfigError("no training samples left after the validation split; lower it")
    return train, val


# --------------------------------------------------------------------------------------
# The data object


class SegmentationData:
    """Image/mask pairs ready for training: crops, batches, validation images.

    Build with :func:`pairs`. Images are kept as stored (integer dtype) and scaled to 0..1
    by the model's :class:`~crystalseg.models.ModelSpec` when batches are drawn, so the
    same data serves models with different normalisation.

    Attributes
    ----------
    settings : DataSettings, what it was read with
    codes : tuple of str
    rule : MaskRule
    train_items, valid_items : tuple of PairItem
    crop_size, batch_size : int or None (batch None: chosen by the learner for the device)
    channels : 1 or 3
    fingerprint : str
    """

    def __init__(
        self,
        items: Sequence[PairItem],
        settings: DataSettings,
        *,
        batch_size: int | None = None,
        seed: int = 0,
        cache_mb: float = 2048,
    ) -> None:
        rule = MaskRule.from_user(settings.codes, settings.mask_values)
        self.settings = settings
        self.codes = rule.codes
        self.rule = rule
        self.instances = bool(settings.instances)
        self.crop_size = int(settings.crop_size)
        self.batch_size = batch_size
        self.channels = settings.channels
        self.seed = int(seed)
        self.foreground_bias = float(settings.foreground_bias)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 2**20)
        self._bounds: dict[tuple[int, tuple[Any, ...]], tuple[float, float]] = {}
        self._fg: dict[int, np.ndarray] = {}
        self._areas: dict[int, int] = {}
        self._instances: dict[int, np.ndarray | None] = {}
        self._runs: dict[Path, Any] = {}
        train, val = split_items(
            items, valid_fraction=settings.valid_fraction, valid=settings.valid, seed=seed
        )
        self.train_items = tuple(train)
        self.valid_items = tuple(val)
        # a single frame split into bands gives new items; otherwise the order given
        kept = {id(it) for it in (*train, *val)}
        self.items = tuple(items) if all(id(it) in kept for it in items) else (*train, *val)
        self._index = {id(it): k for k, it in enumerate(self.items)}
        self._run_items: dict[Path, list[PairItem]] = {}
        for it in self.items:
            if it.run is not None:
                self._run_items.setdefault(it.run, []).append(it)
        self._valid_keys = {self._index[id(it)] for it in self.valid_items}
        self._check_files()
        self.fingerprint = data_fingerprint(items, rule, self.instances)
        #: crops per training image per epoch as given; None: by area (:meth:`crop_counts`)
        self.crops_per_image_given = settings.crops_per_image
        self._crop_counts: np.ndarray | None = None
        self.crops_per_image = settings.crops_per_image or self._auto_crops_per_image()

    # ---- loading

    def _check_files(self) -> None:
        """Read every file pair once: sizes must match and every mask value map to a class;
        warn when no mask holds a pixel of any class but background: a model learns from
        them only to draw nothing (the loss falls to 0.0000). Some empty masks among
        others are fine (frames before nucleation)."""
        empty = []
        for item in self.items:
            if item.image is not None and not self.load(item)[1].any():
                empty.append(item.mask.name if item.mask is not None else item.name)
        n_files = sum(item.image is not None for item in self.items)
        if empty and len(empty) == n_files:
            warnings.warn(
                f"none of the {n_files} training masks holds a pixel of "
                f"{', '.join(repr(c) for c in self.codes[1:])} (e.g. '{empty[0]}'); the model "
                "would learn to draw nothing. Check that the masks mark the crystals and that "
                "the mask values map to the classes (mask_values, e.g. 0,255)",
                CrystalsegWarning,
                stacklevel=3,
            )

    def _open_run(self, run: Path) -> Any:
        if run not in self._runs:
            try:
                from crystalseg.store import open_run

                ds = open_run(run)
            except ImportError:  # pragma: no cover - the store ships with crystalseg
                import xarray as xr

                ds = xr.open_zarr(str(run))
            truth = None
            try:
                import xarray as xr

                truth = xr.open_zarr(str(run), group="truth")
            except Exception:
                truth = None
            self._runs[run] = (ds, truth)
        return self._runs[run]

    def _read(self, item: PairItem) -> tuple[np.ndarray, np.ndarray]:
        assert item.image is not None and item.mask is not None
        image, raw = read_image(item.image), read_mask(item.mask)
        if item.part is not None:  # a band of the frame: the whole must match first
            check_pair_shapes(item, image, raw)
            image, raw = item.cut(image), item.cut(raw)
        if self.instances:  # one id per crystal: classes (and boundary) from the labels
            labels = instance_labels(raw, item.mask.name)
            key = self._index[id(item)]
            if key in self._valid_keys:  # what instance_truth returns
                self._instances[key] = labels
            raw = class_mask_from_labels(labels, self.codes)
        return self._checked(item, image, raw)

    def _read_frames(self, items: Sequence[PairItem]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Image and class mask of frames of one run, read in one pass.

        The frames of a run share its time chunks, so reading them together decodes each
        chunk once instead of once per frame.
        """
        ds, truth = self._open_run(items[0].run)  # type: ignore[arg-type]
        frames = [int(it.frame) for it in items]  # type: ignore[arg-type]
        images = [it.cut(im) for it, im in zip(items, ds["image"][frames].values, strict=True)]
        if items[0].mask_group == "truth" and boundary_class(self.codes) is not None:
            # synthetic truth holds instance labels: derive the boundary class from them
            labels = [
                it.cut(lab) for it, lab in zip(items, truth["labels"][frames].values, strict=True)
            ]
            raw_masks = [class_mask_from_labels(lab, self.codes) for lab in labels]
            for it, lab in zip(items, labels, strict=True):
                key = self._index[id(it)]
                if key in self._valid_keys:  # what instance_truth would read again
                    self._instances[key] = lab
        else:
            src = truth if items[0].mask_group == "truth" else ds
            raw_masks = [it.cut(m) for it, m in zip(items, src["mask"][frames].values, strict=True)]
        return [self._checked(*args) for args in zip(items, images, raw_masks, strict=True)]

    def _time_chunk(self, item: PairItem) -> int:
        """Index of the time chunk of its run that holds ``item``'s frame."""
        assert item.run is not None
        chunks = self._open_run(item.run)[0]["image"].chunks
        if not chunks:
            return 0
        return int(np.searchsorted(np.cumsum(chunks[0]), int(item.frame or 0), side="right"))

    def _chunk_key(self, item: PairItem) -> tuple[Path, int, str | None]:
        """Items with the same key are read in one pass by :meth:`_read_frames`: one run,
        one time chunk, one mask group."""
        assert item.run is not None
        return item.run, self._time_chunk(item), item.mask_group

    def _chunk_mates(self, item: PairItem) -> list[PairItem]:
        """``item`` and the uncached items of its run whose frames share its time chunk."""
        assert item.run is not None
        key = self._chunk_key(item)
        mates = [
            it
            for it in self._run_items[item.run]
            if it is not item
            and self._index[id(it)] not in self._cache
            and self._chunk_key(it) == key
        ]
        return [item, *mates]

    def _checked(
        self, item: PairItem, image: np.ndarray, raw_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        check_pair_shapes(item, image, raw_mask)
        name = item.mask.name if item.mask is not None else item.name
        mask = self.rule.apply(raw_mask, name=name)
        return to_channels(image, self.channels), mask

    def load(self, item: PairItem) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W[, 3]) as stored and class mask (H, W) uint8 of ``item`` (cached)."""
        key = self._index[id(item)]
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if item.run is None:
            pair = self._read(item)
            self._keep(key, pair)
            return pair
        group = self._chunk_mates(item)
        for it, got in zip(group, self._read_frames(group), strict=True):
            self._keep(self._index[id(it)], got)
            if it is item:
                pair = got
        return pair

    def _keep(self, key: int, pair: tuple[np.ndarray, np.ndarray]) -> None:
        size = pair[0].nbytes + pair[1].nbytes
        if size <= self._cache_limit:
            self._cache[key] = pair
            self._cache_bytes += size
            while self._cache_bytes > self._cache_limit:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old[0].nbytes + old[1].nbytes

    def _auto_crops_per_image(self) -> int:
        """Mean of :meth:`crop_counts` (what :meth:`summary` records), at least 1."""
        return max(1, round(float(np.mean(self.crop_counts()))))

    def item_area(self, item: PairItem) -> int:
        """Annotated pixels of ``item``: its frame (or band of it), every pixel of which
        its mask labels, background included."""
        key = self._index[id(item)]
        if key not in self._areas:
            if item.run is not None:
                h, w = self._open_run(item.run)[0]["image"].shape[-2:]
                self._areas[key] = int(item.cut(np.empty((h, w), dtype=bool)).size)
            else:
                self._areas[key] = int(self.load(item)[1].size)
        return self._areas[key]

    def annotated_area(self) -> int:
        """Annotated pixels of the training items (frames or bands of them)."""
        return int(sum(self.item_area(item) for item in self.train_items))

    def pixel_size_um(self) -> float | None:
        """The pixel size of the training frames where all of them are run frames that
        record one (µm); else None."""
        sizes = set()
        for item in self.train_items:
            if item.run is None:
                return None
            value = self._open_run(item.run)[0].attrs.get("pixel_size_um")
            if not value:
                return None
            sizes.add(float(value))
        return sizes.pop() if len(sizes) == 1 else None

    def crop_counts(self) -> np.ndarray:
        """Crops drawn from each training item per epoch (before any floor on the steps).

        ``crops_per_image`` when given; else in proportion to the item's annotated area:
        one crop per crop-sized area, at least 1 and at most
        :data:`MAX_CROPS_PER_IMAGE`. The learner raises the total to its floor of
        optimizer steps (:attr:`~crystalseg.train.Learner.min_steps_per_epoch`) in the
        same proportions, so a single annotated frame still trains.
        """
        if self._crop_counts is None:
            if self.crops_per_image_given:
                counts = np.full(len(self.train_items), int(self.crops_per_image_given))
            else:
                per = self.crop_size**2
                counts = np.array(
                    [
                        min(MAX_CROPS_PER_IMAGE, max(1, math.ceil(self.item_area(i) / per)))
                        for i in self.train_items
                    ],
                    dtype=np.int64,
                )
            self._crop_counts = counts.astype(np.int64)
        return self._crop_counts

    def bounds(self, item: PairItem, spec: ModelSpec) -> tuple[float, float]:
        """Raw intensities mapping to 0 and 1 for ``item`` under ``spec`` (whole image)."""
        key = (self._index[id(item)], (spec.scaling, spec.percentiles))
        if key not in self._bounds:
            self._bounds[key] = _image_bounds(self.load(item)[0], spec)
        return self._bounds[key]

    def preload(self, spec: ModelSpec | None = None, *, workers: int | None = None) -> int:
        """Read the frames of run stores (and their intensity bounds under ``spec``) in
        ``workers`` threads, as far as the cache holds them; returns how many were read.

        The first epoch would read them one by one in the training loop; on a GPU that
        loop is the bottleneck, so reading ahead in parallel saves most of an epoch.
        Batches are the same either way.
        """
        todo_items = [
            it for it in self.items if it.run is not None and self._index[id(it)] not in self._cache
        ]
        if not todo_items:
            return 0
        workers = workers or min(8, os.cpu_count() or 1)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:  # opening a run costs tens of ms
            list(pool.map(self._open_run, dict.fromkeys(it.run for it in todo_items)))
        groups: dict[tuple[Path, int, str | None], list[PairItem]] = {}
        for item in todo_items:
            groups.setdefault(self._chunk_key(item), []).append(item)

        def read(group: list[PairItem]) -> tuple[list[PairItem], list[Any], list[Any]]:
            got = self._read_frames(group)
            bounds = [_image_bounds(image, spec) if spec else None for image, _ in got]
            return group, got, bounds

        n = 0
        todo = list(groups.values())
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(todo), 2 * workers):  # a few groups in flight
                read_bytes = 0
                for group, got, bounds in pool.map(read, todo[start : start + 2 * workers]):
                    for item, pair, bound in zip(group, got, bounds, strict=True):
                        key = self._index[id(item)]
                        self._keep(key, pair)
                        if spec is not None:
                            self._bounds[(key, (spec.scaling, spec.percentiles))] = bound
                        read_bytes += pair[0].nbytes + pair[1].nbytes
                        n += 1
                if self._cache_bytes + read_bytes > self._cache_limit:
                    break  # another such batch would push out frames just read
        return n

    # ---- sampling

    def _foreground(self, key: int, mask: np.ndarray) -> np.ndarray:
        if key not in self._fg:
            idx = np.flatnonzero(mask.ravel())
            if idx.size > 20000:
                idx = np.random.default_rng(key).choice(idx, 20000, replace=False)
            self._fg[key] = idx
        return self._fg[key]

    def random_crop(
        self, item: PairItem, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``crop_size`` square of image and mask, reflect-padded if needed.

        With probability ``foreground_bias`` the crop is centred near a foreground pixel,
        so sparse crystals are seen often enough; validation stays on whole images.
        """
        image, mask = self.load(item)
        fg = self._foreground(self._index[id(item)], mask)
        s = self.crop_size
        h0, w0 = mask.shape
        top = left = 0
        if h0 < s or w0 < s:
            py, px = max(0, s - h0), max(0, s - w0)
            top, left = py // 2, px // 2
            pad = ((top, py - top), (left, px - left))
            image = np.pad(image, pad + ((0, 0),) * (image.ndim - 2), mode="reflect")
            mask = np.pad(mask, pad, mode="reflect")
        h, w = mask.shape
        if fg.size and self.foreground_bias > 0 and rng.random() < self.foreground_bias:
            oy, ox = divmod(int(fg[rng.integers(fg.size)]), w0)
            jitter = rng.integers(-(s // 4), s // 4 + 1, size=2)
            y0 = int(np.clip(oy + top - s // 2 + jitter[0], 0, h - s))
            x0 = int(np.clip(ox + left - s // 2 + jitter[1], 0, w - s))
        else:
            y0 = int(rng.integers(0, h - s + 1))
            x0 = int(rng.integers(0, w - s + 1))
        return image[y0 : y0 + s, x0 : x0 + s], mask[y0 : y0 + s, x0 : x0 + s]

    def epoch_crops(self, min_crops: int = 0) -> int:
        """Crops in one epoch: those of :meth:`crop_counts`, at least ``min_crops``."""
        return max(int(self.crop_counts().sum()), int(min_crops))

    def train_batches(
        self,
        spec: ModelSpec,
        rng: np.random.Generator,
        *,
        batch_size: int | None = None,
        min_crops: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of random crops: (x (B, C, S, S) float32 on 0..1, y (B, S, S) int64).

        Every training image gives its :meth:`crop_counts` crops, in random order; when
        they are fewer than ``min_crops``, whole rounds of them are repeated and the
        epoch cut at ``min_crops``, so the images keep their shares.
        """
        bs = batch_size or self.batch_size or 8
        base = np.repeat(np.arange(len(self.train_items)), self.crop_counts())
        n = self.epoch_crops(min_crops)
        rounds = math.ceil(n / base.size)
        order = np.concatenate([base[rng.permutation(base.size)] for _ in range(rounds)])[:n]
        for start in range(0, order.size, bs):
            crops, masks, los, his = [], [], [], []
            for j in order[start : start + bs]:
                item = self.train_items[int(j)]
                img, mask = self.random_crop(item, rng)
                lo, hi = self.bounds(item, spec)
                crops.append(img.astype(np.float32))
                masks.append(mask)
                los.append(lo)
                his.append(hi)
            # one scaling of the whole batch: per-crop torch calls cost more than the maths
            x = to_unit(
                torch.from_numpy(np.stack(crops)),
                spec,
                lo=torch.tensor(los, dtype=torch.float32),
                hi=torch.tensor(his, dtype=torch.float32),
            )
            yield x, torch.from_numpy(np.stack(masks).astype(np.int64))

    def instance_truth(self, item: PairItem) -> np.ndarray | None:
        """True instance labels (H, W) of a synthetic run's frame or of an instance mask
        file (``instances``), else None (cached; a validation frame read through its
        labels keeps them from that read)."""
        key = self._index[id(item)]
        if item.run is None and self.instances:
            if key not in self._instances:
                self._read(item)
            return self._instances.get(key)
        if item.run is None or item.mask_group != "truth":
            return None
        if key not in self._instances:
            _, truth = self._open_run(item.run)
            labels = None
            if truth is not None and "labels" in truth:
                labels = item.cut(np.asarray(truth["labels"][int(item.frame or 0)].values))
            self._instances[key] = labels
        return self._instances[key]

    def class_frequencies(self, limit: int = 16) -> np.ndarray:
        """Pixel fraction of each class over (up to ``limit``) training images."""
        counts = np.zeros(len(self.codes), dtype=np.int64)
        for item in self.train_items[:limit]:
            counts += np.bincount(self.load(item)[1].ravel(), minlength=len(self.codes))
        return counts / max(1, counts.sum())

    def summary(self) -> dict[str, Any]:
        """What the checkpoint records about the data."""
        return {
            "codes": list(self.codes),
            "mask_values": "instances" if self.instances else self.rule.to_json(),
            "n_train": len(self.train_items),
            "n_valid": len(self.valid_items),
            "valid_items": [i.name for i in self.valid_items][:200],
            "crop_size": self.crop_size,
            "crops_per_image": self.crops_per_image,
            "crops_per_epoch": int(self.crop_counts().sum()),
            "annotated_area_px": self.annotated_area(),
            "channels": self.channels,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return (
            f"SegmentationData({len(self.train_items)} train, {len(self.valid_items)} valid, "
            f"codes={list(self.codes)}, crop {self.crop_size}, mask values {self.rule.describe()})"
        )


def _torchable(image: np.ndarray) -> np.ndarray:
    """``image`` as an array ``torch.from_numpy`` can wrap and the caller may change.

    uint16 becomes int32 (torch has few uint16 kernels); uint8 and float32 stay, made
    contiguous and writeable; any other dtype becomes float32.
    """
    if image.dtype == np.uint16:
        return image.astype(np.int32)
    if image.dtype == np.uint8 or image.dtype == np.float32:
        image = np.ascontiguousarray(image)
        return image if image.flags.writeable else image.copy()
    return image.astype(np.float32)


def pairs(
    data: DataSettings | PathLike | Sequence[PathLike | tuple[PathLike, PathLike]],
    *,
    batch_size: int | None = None,
    seed: int = 0,
    cache_mb: float = 2048,
    **settings: Any,
) -> SegmentationData:
    """Training data from image/mask pairs, folders or run stores.

    Parameters
    ----------
    data : DataSettings, path or sequence
        The :class:`~crystalseg.train.config.DataSettings` to read, or its ``paths``:
        ``[(image, mask), ...]``, a folder of ``X.ext``/``X_mask.ext`` pairs, a folder
        with ``images/`` and ``masks/``, a run store, a folder of run stores, or a list
        mixing them.
    batch_size : int, optional
        Crops per batch; None lets the learner choose (8 on a CPU, 32 on a GPU).
    seed : int
        Fixes the split and, through the learner, the crops.
    cache_mb : float
        Memory for decoded images; file pairs beyond it are read again when needed.
    **settings
        Fields of :class:`~crystalseg.train.config.DataSettings` (``codes``,
        ``mask_values``, ``instances``, ``valid_fraction``, ``valid``, ``crop_size``,
        ``crops_per_image``, ``foreground_bias``, ``channels``, ``frame_step``), given
        one by one: ``pairs("frames/", codes=["background", "crystal"], crop_size=128)``;
        with a ``DataSettings``, they replace its fields.

    Returns
    -------
    SegmentationData

    Raises
    ------
    ConfigError, InputNotFoundError, UnsupportedInputError, MaskValueError, FrameMismatchError
    """
    if isinstance(data, DataSettings):
        chosen = replace(data, **settings) if settings else data
    else:
        chosen = DataSettings(data, **settings)  # type: ignore[arg-type]
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    found = discover_pairs(list(chosen.paths), frame_step=chosen.frame_step)
    return SegmentationData(found, chosen, batch_size=batch_size, seed=seed, cache_mb=cache_mb)
