"""Reading annotation masks and mapping their stored values to class indices.

Masks arrive as 0/255 (the classic binary export), 0/1, or palette/indexed images.
The loss needs class indices ``0..n_classes-1``; a stray 255 reaching it as "class
255" is the classic silent failure. So every mask goes through one explicit,
validated rule:

* ``mask_values=None`` (auto): values that are already class indices are kept; with
  two classes, a mask of values within {0, 255} maps 255 to class 1; anything else is
  an error.
* ``mask_values=(v0, v1, ...)``: the stored value of each class, in code order.
* ``mask_values={value: class}``: several stored values may share a class (class given
  by index or by code name).

A value that maps to no class raises :class:`~crystalseg.errors.MaskValueError`
naming the file, the values found, the codes and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalseg.errors import ConfigError, InputNotFoundError, MaskValueError, UnsupportedInputError

log = logging.getLogger(__name__)

#: Suffixes of the mask formats read (lossless only: JPEG would smear class values).
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

#: What a user may pass as ``mask_values``.
MaskValues = Sequence[int] | Mapping[int, int | str] | None


@dataclass(frozen=True)
class MaskRule:
    """A validated mapping from stored mask values to class indices.

    Attributes
    ----------
    codes : tuple of str
        Class names; index ``i`` is class ``codes[i]``.
    table : tuple of (value, class index) pairs, or None
        Explicit mapping; None means the auto rule.
    """

    codes: tuple[str, ...]
    table: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.codes) < 2:
            raise ConfigError(
                f"codes {list(self.codes)} must name at least two classes, background first"
            )
        if self.table is not None:
            values = [v for v, _ in self.table]
            if len(set(values)) != len(values):
                raise ConfigError(f"mask_values {self.describe()} lists a stored value twice")
            for v, c in self.table:
                if not 0 <= c < len(self.codes):
                    raise ConfigError(f"mask_values maps {v} to class {c}; codes {self.codes}")
                if v < 0:
                    raise ConfigError(f"mask_values holds a negative value {v}")

    @classmethod
    def from_user(cls, codes: Sequence[str], mask_values: MaskValues = None) -> MaskRule:
        """Build the rule from ``codes`` and a user's ``mask_values`` (see module docstring).

        Raises
        ------
        ConfigError
            Wrong number of values, a duplicate value, or an unknown class name.
        """
        codes = tuple(str(c) for c in codes)
        if mask_values is None:
            return cls(codes, None)
        if isinstance(mask_values, str):
            return cls.from_user(codes, parse_mask_values(mask_values))
        if isinstance(mask_values, Mapping):
            table = []
            for value, cls_ in mask_values.items():
                if isinstance(cls_, str):
                    if cls_ not in codes:
                        raise ConfigError(
                            f"mask_values names class '{cls_}', which is not in codes {list(codes)}"
                        )
                    idx = codes.index(cls_)
                else:
                    idx = int(cls_)
                table.append((int(value), idx))
            return cls(codes, tuple(sorted(table)))
        values = [int(v) for v in mask_values]
        if len(values) != len(codes):
            raise ConfigError(
                f"mask_values {values} gives {len(values)} values for {len(codes)} codes "
                f"{list(codes)}; give one stored value per class, in code order"
            )
        return cls(codes, tuple(sorted((v, i) for i, v in enumerate(values))))

    def describe(self) -> str:
        """Human-readable rule, e.g. ``"auto"`` or ``"0->background, 255->crystal"``."""
        if self.table is None:
            return "auto"
        return ", ".join(f"{v}->{self.codes[c]}" for v, c in self.table)

    def to_json(self) -> dict[str, int] | str:
        """JSON form for provenance: ``"auto"`` or ``{"255": 1, ...}``."""
        if self.table is None:
            return "auto"
        return {str(v): c for v, c in self.table}

    def lookup(self, found: np.ndarray, *, name: str) -> np.ndarray:
        """Class index for each value in ``found`` (sorted unique stored values).

        Raises
        ------
        MaskValueError
            A value maps to no class.
        """
        n = len(self.codes)
        found = np.asarray(found, dtype=np.int64)
        shown = _values_text(found)
        if self.table is not None:
            table = dict(self.table)
            bad = [int(v) for v in found if int(v) not in table]
            if bad:
                raise MaskValueError(
                    f"mask '{name}' holds values {_values_text(np.asarray(bad))} that map to no "
                    f"class under mask_values {{{self.describe()}}} (values found {shown}); "
                    "add them to --mask-values or fix the masks"
                )
            return np.asarray([table[int(v)] for v in found], dtype=np.uint8)
        if found.size == 0 or (found.min() >= 0 and found.max() < n):
            return found.astype(np.uint8)
        if n == 2 and set(found.tolist()) <= {0, 255}:
            return (found == 255).astype(np.uint8)
        vals = sorted(int(v) for v in np.unique(found))
        if len(vals) < n:  # fewer values than classes: name which class each one is
            example = ",".join(f"{v}={c}" for v, c in zip(vals, self.codes, strict=False))
        else:  # all of them, or the lowest and the n - 1 highest
            picked = vals if len(vals) == n else [vals[0], *vals[-(n - 1) :]]
            example = ",".join(str(v) for v in picked)
        extra = " (or 0/255 for two classes)" if n == 2 else ""
        raise MaskValueError(
            f"mask '{name}' holds values {shown}; expected class indices 0..{n - 1}{extra} "
            f"for codes {list(self.codes)}. Pass --mask-values {example} (one stored value "
            "per class, in code order) or rescale the masks; if each value is one crystal "
            "(Cellpose, napari or QuPath label images), pass --instances"
        )

    def apply(self, mask: np.ndarray, *, name: str) -> np.ndarray:
        """Class indices (H, W) uint8 of a mask of stored values (H, W)."""
        found, inverse = np.unique(mask, return_inverse=True)
        classes = self.lookup(found, name=name)
        return classes[inverse.reshape(mask.shape)]


def _values_text(values: np.ndarray, limit: int = 12) -> str:
    vals = [int(v) for v in np.unique(values)]
    text = ", ".join(str(v) for v in vals[:limit])
    if len(vals) > limit:
        text += f", ... ({len(vals)} values)"
    return "{" + text + "}"


def parse_mask_values(text: str) -> tuple[int, ...] | dict[int, int | str]:
    """Parse a CLI ``--mask-values``: ``"0,255"`` or ``"0=background,128=crystal,255=crystal"``.

    Raises
    ------
    ConfigError
        Not integers, or a mix of both forms.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError("--mask-values is empty; give e.g. 0,255")
    try:
        if all("=" in p for p in parts):
            out: dict[int, int | str] = {}
            for p in parts:
                value, cls_ = (s.strip() for s in p.split("=", 1))
                out[int(value)] = int(cls_) if cls_.lstrip("-").isdigit() else cls_
            return out
        if any("=" in p for p in parts):
            raise ValueError
        return tuple(int(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(
            f"--mask-values '{text}' is not a list of integers (0,255) or of value=class "
            "pairs (0=background,255=crystal)"
        ) from exc


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Stored values (H, W) of a mask file; palette images give their indices.

    RGB masks are accepted only when the three channels are equal (a grey mask saved as
    RGB); colour-coded masks must be converted to indexed or grey first.

    Raises
    ------
    InputNotFoundError, UnsupportedInputError
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"mask '{p}' does not exist")
    suffix = p.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise UnsupportedInputError(
            f"mask '{p.name}' is a {suffix or 'suffix-less'} file; masks must be lossless "
            f"({', '.join(MASK_SUFFIXES)})"
        )
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = np.asarray(tifffile.imread(str(p)))
        else:
            from PIL import Image

            with Image.open(p) as im:
                # "P" (palette) gives indices, "1" gives bool, "L"/"I;16" give values
                arr = np.array(im)
    except Exception as exc:
        raise UnsupportedInputError(f"cannot read mask '{p.name}': {exc}") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            colours = np.unique(rgb.reshape(-1, 3), axis=0)
            shown = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:4])
            more = f" and {len(colours) - 4} more" if len(colours) > 4 else ""
            raise UnsupportedInputError(
                f"mask '{p.name}' is a colour image (RGB colours {shown}{more}); expected one "
                "value per class. Save it as a grey or palette (indexed) image, e.g. "
                "PIL: Image.open(f).convert('L').save(f), ImageJ: Image > Type > 8-bit"
            )
        arr = rgb[..., 0]
    if arr.ndim != 2:
        raise UnsupportedInputError(
            f"mask '{p.name}' has shape {arr.shape}; expected one 2-D image (y, x)"
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise MaskValueError(
                f"mask '{p.name}' holds non-integer values; save masks as integer images"
            )
        arr = arr.astype(np.int64)
    return arr


def to_class_indices(
    mask: np.ndarray, codes: Sequence[str], mask_values: MaskValues = None, *, name: str = "mask"
) -> np.ndarray:
    """Map a mask of stored values (H, W) to class indices (H, W) uint8.

    Parameters
    ----------
    mask : ndarray (H, W), integer
    codes : class names, background first
    mask_values : see :class:`MaskRule`
    name : file name used in error messages

    Raises
    ------
    MaskValueError
        A stored value maps to no class.
    """
    return MaskRule.from_user(codes, mask_values).apply(np.asarray(mask), name=name)


def instance_labels(raw: np.ndarray, name: str) -> np.ndarray:
    """An instance mask (one integer id per crystal, 0 background; Cellpose, napari,
    QuPath label images) as int64 labels.

    Raises
    ------
    MaskValueError
        Negative ids (0 must be the background), or one id over several separate
        regions: a class mask (e.g. 0/255) read as instances would score every
        crystal as one.
    """
    if raw.dtype.kind == "i" and raw.size and raw.min() < 0:
        raise MaskValueError(f"instance mask '{name}' holds negative ids; use 0 for background")
    labels = raw.astype(np.int64)
    ids = np.unique(labels[labels > 0])
    if len(ids) == 1:
        from scipy import ndimage as ndi

        regions = ndi.label(labels > 0)[1]
        if regions > 1:
            raise MaskValueError(
                f"mask '{name}' holds one id ({ids[0]}) over {regions} separate regions: it "
                "is a class mask, not one id per crystal; leave out --instances "
                "(instances=False)"
            )
    return labels
