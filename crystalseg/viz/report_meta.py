"""The batch-record fields, the time unit and the model name of a run's report.

- :func:`check_meta` and :func:`parse_meta`: sample, batch, operator, instrument
  and any other field, checked before any work (text from the command line or an
  SOP file);
- :func:`time_unit_for` and :func:`format_time_in`: one time unit per report,
  chosen from the run's duration by the rule the figures' time axes follow
  (:mod:`crystalseg.viz.plots`), used in every caption, table and frame title;
- :func:`model_identity`: a readable model name and version beside the short
  sha256 of its weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crystalseg.dims import TIME
from crystalseg.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

# --------------------------------------------------------------------------- batch record

#: Batch-record fields shown first, in this order; any other key follows in the order given.
META_KEYS: tuple[str, ...] = ("sample", "batch", "operator", "instrument")

#: Longest key and value of a batch-record field (a value is one line of the header).
META_KEY_MAX = 40
META_VALUE_MAX = 200


def check_meta(meta: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The batch-record fields of a report, checked, in the order the header shows them.

    Parameters
    ----------
    meta : mapping of str to str, optional
        ``{"sample": "API-7 lot 3", "batch": "B-2291", "operator": "J. Doe",
        "instrument": "EasyViewer 100", ...}``; any other key is shown too.
        Numbers are accepted and shown as written by ``str``.

    Returns
    -------
    tuple of (key, value)
        :data:`META_KEYS` first (those given), then the other keys in their order.

    Raises
    ------
    ConfigError
        A key that is empty, longer than :data:`META_KEY_MAX`, holds ``=`` or
        ``,`` or a character that does not print (a newline, a tab); a value that
        is empty, longer than :data:`META_VALUE_MAX` or holds such a character.
    """
    if meta is None:
        return ()
    if not isinstance(meta, Mapping):
        raise ConfigError(
            f"meta must be a mapping such as {{'sample': 'S1', 'batch': 'B7'}}, "
            f"got {type(meta).__name__}"
        )
    pairs: list[tuple[str, str]] = []
    for key, value in meta.items():
        k = key.strip() if isinstance(key, str) else key
        if not isinstance(k, str) or not k:
            raise ConfigError(f"meta key {key!r} is empty or not text; give a name such as 'batch'")
        if len(k) > META_KEY_MAX or not k.isprintable() or any(c in k for c in "=,"):
            raise ConfigError(
                f"meta key {key!r} is not a field name: keys are at most {META_KEY_MAX} "
                "printable characters without '=' or ','; e.g. 'batch' or 'vessel id'"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(
                f"meta {k!r} is {type(value).__name__} {value!r}; give text such as 'B-2291'"
            )
        v = str(value).strip()
        if not v:
            raise ConfigError(f"meta {k!r} has an empty value; give one or leave the field out")
        if len(v) > META_VALUE_MAX or not v.isprintable():
            raise ConfigError(
                f"meta {k!r} value {v[:60]!r} is not one line of at most {META_VALUE_MAX} "
                "printable characters (no newline or tab); shorten it"
            )
        if any(k == seen for seen, _ in pairs):
            raise ConfigError(f"meta {k!r} is given twice; give each field once")
        pairs.append((k, v))
    order = {key: i for i, key in enumerate(META_KEYS)}
    return tuple(sorted(pairs, key=lambda kv: order.get(kv[0], len(order))))


def parse_meta(texts: str | Sequence[str]) -> dict[str, str]:
    """Batch-record fields from ``key=value`` text, as the command line gives them.

    Each text is a comma-separated list of ``key=value``; several texts add up.
    A value runs to the next unescaped comma and may hold ``=``; write a comma in
    a value as ``\\,`` and a backslash as ``\\\\``. Spaces around keys and values
    are dropped. ``sample=API-7\\, lot 3,batch=B-2291`` gives
    ``{"sample": "API-7, lot 3", "batch": "B-2291"}``.

    Raises
    ------
    ConfigError
        An item without ``=``, a backslash before anything but ``,`` or ``\\``,
        a field given twice, or a key or value :func:`check_meta` refuses.
    """
    items: list[str] = []
    for text in [texts] if isinstance(texts, str) else list(texts):
        current: list[str] = []
        chars = iter(text)
        for c in chars:
            if c == "\\":
                nxt = next(chars, "")
                if nxt not in (",", "\\"):
                    raise ConfigError(
                        f"meta {text!r}: a backslash escapes only ',' or '\\', not {nxt!r}; "
                        "write a comma in a value as '\\,'"
                    )
                current.append(nxt)
            elif c == ",":
                items.append("".join(current))
                current = []
            else:
                current.append(c)
        items.append("".join(current))
    out: dict[str, str] = {}
    for item in items:
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                f"meta item {item.strip()!r} has no '='; give key=value, e.g. batch=B-2291"
            )
        if key.strip() in out:
            raise ConfigError(f"meta {key.strip()!r} is given twice; give each field once")
        out[key.strip()] = value.strip()
    check_meta(out)
    return out


# --------------------------------------------------------------------------- time

TimeUnit = Literal["s", "min", "h"]

#: Seconds in one of each report time unit.
SECONDS_PER_UNIT: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}


def time_unit_for(time_s: Any) -> TimeUnit:
    """The one time unit of a report: s up to 10 min of run, min up to 3 h, then h.

    The same rule as the time axes of :mod:`crystalseg.viz.plots`, so the figures,
    captions and tables of a report all count in the same unit.
    """
    t = np.asarray(time_s, dtype=np.float64)
    span = float(np.nanmax(t) - np.nanmin(t)) if t.size and np.isfinite(t).any() else 0.0
    if span <= 600:
        return "s"
    if span <= 3 * 3600:
        return "min"
    return "h"


def format_time_in(seconds: float, unit: TimeUnit) -> str:
    """A time in the report's unit: ``150 s``, ``2.5 min``, ``3.08 h`` (``?`` if unknown)."""
    if seconds is None or not math.isfinite(float(seconds)):
        return "?"
    value = float(seconds) / SECONDS_PER_UNIT[unit]
    if abs(value) >= 100 or value == int(value):
        text = f"{value:.0f}" if value == round(value) else f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}"


def times_s(psd: xr.Dataset) -> np.ndarray:
    """Seconds since the first frame, shape (time,), from the psd's time coordinate."""
    n = int(psd.sizes.get(TIME, 0))
    if TIME not in psd.coords:
        return np.full(n, np.nan)
    t = np.asarray(psd[TIME].values)
    if np.issubdtype(t.dtype, np.datetime64):
        return (t - t[0]) / np.timedelta64(1, "s") if n else np.zeros(0)
    return t.astype(np.float64)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelIdentity:
    """The model that drew the masks, as a reader names it.

    Attributes
    ----------
    name : str
        The checkpoint's ``name`` when it records one; else derived: ``crystalseg
        default`` for the bundled model, the checkpoint folder's name otherwise,
        followed by the architecture (``U-Net, mobilenet_v2 encoder``).
    version : str
        The checkpoint's ``version`` when it records one; else the date it was
        trained and the crystalseg that trained it (``2026-11-27, crystalseg 0.1.0``).
    sha256 : str
        sha256 of the weights (the full digest; :attr:`short_sha256` for print).
    derived : bool
        True when name and version were derived rather than recorded.
    """

    name: str
    version: str
    sha256: str
    derived: bool

    @property
    def short_sha256(self) -> str:
        """The first 12 hex digits, as ``crystalseg info`` prints them."""
        return self.sha256[:12]


def model_identity(mask_attrs: Mapping[str, Any]) -> ModelIdentity | None:
    """Name, version and sha256 of the model that segmented a run, from its mask attrs.

    The mask records the model when ``crystalseg segment`` drew it (``model_sha256``,
    ``model_path``, ``model_encoder``, ``model_created``, ``model_crystalseg_version``;
    ``model_name``/``model_version`` where the checkpoint has them). A checkpoint's
    ``model.json`` has no name field, so the name is derived from where it was loaded
    and its encoder, the version from when and by which crystalseg it was trained;
    both are marked ``derived``. None when the mask was not made by a model.
    """
    sha = mask_attrs.get("model_sha256")
    if not sha:
        return None
    recorded_name, recorded_version = mask_attrs.get("model_name"), mask_attrs.get("model_version")
    path = str(mask_attrs.get("model_path") or "").replace("\\", "/").rstrip("/")
    if recorded_name:
        name = str(recorded_name)
    else:
        bundled = path.endswith("crystalseg/models/default")
        base = "crystalseg default" if bundled else (path.rsplit("/", 1)[-1] or "unnamed model")
        encoder = mask_attrs.get("model_encoder")
        name = f"{base} (U-Net, {encoder} encoder)" if encoder else base
    if recorded_version:
        version = str(recorded_version)
    else:
        created = str(mask_attrs.get("model_created") or "")[:10] or "date unknown"
        made_by = mask_attrs.get("model_crystalseg_version")
        version = f"{created}, crystalseg {made_by}" if made_by else created
    derived = not (recorded_name and recorded_version)
    return ModelIdentity(name=name, version=version, sha256=str(sha), derived=derived)


__all__ = [
    "META_KEYS",
    "META_KEY_MAX",
    "META_VALUE_MAX",
    "SECONDS_PER_UNIT",
    "ModelIdentity",
    "TimeUnit",
    "check_meta",
    "format_time_in",
    "model_identity",
    "parse_meta",
    "time_unit_for",
    "times_s",
]
