"""Chord counts exported by a focused-beam probe (FBRM), read from CSV, so that the
probe's trends can be drawn beside the chord length distribution of the images.

The CSV a probe's software exports (the trend view "saved as CSV"; see
``docs/kinetics.md`` and ``examples/fbrm_example.csv``) has one row per
measurement and:

* one **time** column: the first column whose header names a time (``time``,
  ``date``, ``timestamp``, ``elapsed``, ``relative time``, ``sample time``), else
  the first column. Its values are timestamps (``2026-03-14 09:00:20``, ISO 8601),
  clock durations (``01:02:03``), or numbers in the unit its header names
  (``Time (s)``, ``Time [min]``, ``Elapsed (h)``; a bare number without a unit is
  refused unless ``time_unit`` says what it is);
* one **count** column per chord length bin, whose header names the bin in
  micrometres: a range ``10-50 um``, ``10 - 50 µm``, ``Counts 10-50 microns``,
  ``#/s (10-50)``, or an open end ``<10``, ``< 10 um``, ``>1000``, ``1000+``.
  Columns that name no bin (mean, median, comments) are left out and listed in
  :attr:`FbrmCounts.ignored`.

Comma, semicolon or tab separated; with semicolons a decimal comma is read.
:meth:`FbrmCounts.class_counts` sums the bins into FBRM's standard size classes
(:data:`crystalseg.kinetics.cld.CLD_CLASSES_UM`), splitting a bin that straddles
a class edge in proportion to its logarithmic width on each side.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from crystalseg.errors import InputNotFoundError, UnsupportedInputError
from crystalseg.kinetics.cld import CLD_CLASS_NAMES, CLD_CLASSES_UM

TimeUnit = Literal["auto", "s", "min", "h"]

_SECONDS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0}
_SECONDS.update({"min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0, "m": 60.0})
_SECONDS.update({"h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0})
_TIME_WORDS = ("time", "date", "timestamp", "elapsed", "clock")
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_UNIT = r"\s*(?:um|µm|μm|micron|microns|micrometres|micrometers)?"
_RANGE = re.compile(_NUMBER + _UNIT + r"\s*(?:-|–|to)\s*" + _NUMBER + _UNIT, re.IGNORECASE)
_BELOW = re.compile(r"(?:<|under|below)\s*" + _NUMBER + _UNIT, re.IGNORECASE)
_ABOVE = re.compile(r"(?:>\s*" + _NUMBER + r"|" + _NUMBER + _UNIT + r"\s*\+)", re.IGNORECASE)


@dataclass(frozen=True)
class FbrmCounts:
    """Chord counts of a probe over time.

    Attributes
    ----------
    time_s : ndarray (rows,)
        Seconds since the first row.
    start : Timestamp or None
        Clock time of the first row, when the file gave timestamps.
    lower_um, upper_um : ndarray (bins,)
        Edges of each count column's chord bin, micrometres (0 and inf at open ends).
    counts : ndarray (rows, bins)
        The counts as exported (per second, per measurement: whatever the probe's
        software was set to; the unit is not in the file and is not changed).
    columns : the headers of the count columns
    ignored : the headers of the columns left out (neither time nor a bin)
    source : the file read
    """

    time_s: np.ndarray
    start: pd.Timestamp | None
    lower_um: np.ndarray
    upper_um: np.ndarray
    counts: np.ndarray
    columns: tuple[str, ...]
    ignored: tuple[str, ...]
    source: str

    def class_counts(self) -> pd.DataFrame:
        """The counts summed into FBRM's standard size classes.

        Returns
        -------
        DataFrame, one row per time, one column per class (:data:`CLD_CLASS_NAMES`)
            A bin that straddles a class edge is split in proportion to its
            logarithmic width on each side (a bin open at 0 or at infinity goes
            wholly to the class holding its finite edge). Index: ``time_s``.
        """
        weights = np.zeros((len(self.columns), len(CLD_CLASSES_UM)))
        for b, (lo, hi) in enumerate(zip(self.lower_um, self.upper_um, strict=True)):
            for k, (c_lo, c_hi) in enumerate(CLD_CLASSES_UM):
                weights[b, k] = _overlap(lo, hi, c_lo, c_hi)
        out = pd.DataFrame(self.counts @ weights, columns=list(CLD_CLASS_NAMES))
        out.index = pd.Index(self.time_s, name="time_s")
        return out


def _overlap(lo: float, hi: float, c_lo: float, c_hi: float) -> float:
    """Share of the bin (lo, hi) inside the class (c_lo, c_hi), by log width."""
    if lo <= 0 or not math.isfinite(hi):  # open bin: wholly where its finite edge lies
        edge = hi if lo <= 0 else lo
        inside = c_lo < edge <= c_hi if lo <= 0 else c_lo <= edge < c_hi
        return 1.0 if inside else 0.0
    a, b = max(lo, c_lo), min(hi, c_hi)
    if b <= a:
        return 0.0
    return math.log(b / a) / math.log(hi / lo)


def bin_of_header(header: str) -> tuple[float, float] | None:
    """The chord bin (lower, upper) in µm that a column header names, or None.

    >>> bin_of_header("10-50 um"), bin_of_header("<10"), bin_of_header("1000+ µm")
    ((10.0, 50.0), (0.0, 10.0), (1000.0, inf))
    """
    text = header.strip()
    if found := _RANGE.search(text):
        lo, hi = (float(v.replace(",", ".")) for v in found.groups())
        return (lo, hi) if hi > lo else None
    if found := _BELOW.search(text):
        return 0.0, float(found.group(1).replace(",", "."))
    if found := _ABOVE.search(text):
        value = found.group(1) or found.group(2)
        return float(value.replace(",", ".")), math.inf
    return None


def read_fbrm_csv(path: str | os.PathLike[str], *, time_unit: TimeUnit = "auto") -> FbrmCounts:
    """Read a probe's chord counts from its CSV export.

    Parameters
    ----------
    path : the CSV file (format: module docstring and ``docs/kinetics.md``)
    time_unit : {"auto", "s", "min", "h"}
        Unit of a numeric time column; "auto" takes it from the header (``Time (min)``).

    Returns
    -------
    FbrmCounts

    Raises
    ------
    InputNotFoundError
        No such file.
    UnsupportedInputError
        No column names a chord bin, the time column cannot be read, or the times
        do not increase.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"FBRM file '{path}' does not exist; give the path of its CSV")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    table = pd.read_csv(
        io.StringIO(text), sep=sep, decimal="," if sep == ";" else ".", skipinitialspace=True
    )
    table.columns = [str(c).strip() for c in table.columns]
    time_col = next(
        (c for c in table.columns if any(w in c.lower() for w in _TIME_WORDS)), table.columns[0]
    )
    bins = {c: bin_of_header(c) for c in table.columns if c != time_col}
    columns = [c for c, b in bins.items() if b is not None]
    if not columns:
        raise UnsupportedInputError(
            f"FBRM file '{path}' has no column that names a chord bin (headers: "
            f"{', '.join(table.columns)}); name the count columns by their bins in µm, "
            "such as '10-50 um' or '<10'"
        )
    time_s, start = _times(table[time_col], time_col, time_unit, path)
    counts = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    order = np.argsort([bins[c][0] for c in columns], kind="stable")  # type: ignore[index]
    columns = [columns[i] for i in order]
    return FbrmCounts(
        time_s=time_s,
        start=start,
        lower_um=np.array([bins[c][0] for c in columns]),  # type: ignore[index]
        upper_um=np.array([bins[c][1] for c in columns]),  # type: ignore[index]
        counts=counts[:, order],
        columns=tuple(columns),
        ignored=tuple(c for c in table.columns if c != time_col and c not in columns),
        source=str(path),
    )


def _times(
    values: pd.Series, header: str, unit: TimeUnit, path: Path
) -> tuple[np.ndarray, pd.Timestamp | None]:
    """Seconds since the first row, and the first row's clock time when known."""
    numeric = pd.to_numeric(values, errors="coerce")
    start = None
    if numeric.notna().all():
        if unit == "auto":
            found = re.search(r"[\(\[]\s*([a-z]+)\s*[\)\]]", header.lower())
            if found is None or found.group(1) not in _SECONDS:
                raise UnsupportedInputError(
                    f"the time column '{header}' of FBRM file '{path}' holds numbers with no "
                    "unit; name it in the header ('Time (min)') or pass time_unit='s', "
                    "'min' or 'h' (--fbrm-time-unit)"
                )
            factor = _SECONDS[found.group(1)]
        else:
            factor = _SECONDS[unit]
        seconds = numeric.to_numpy(dtype=np.float64) * factor
    else:
        text = values.astype(str).str.strip()
        if text.str.fullmatch(r"\d+:\d{2}(:\d{2}(\.\d+)?)?").all():
            seconds = pd.to_timedelta(
                text.where(text.str.count(":") == 2, "00:" + text)
            ).dt.total_seconds()
            seconds = seconds.to_numpy(dtype=np.float64)
        else:
            stamps = pd.to_datetime(text, errors="coerce")
            if stamps.isna().any():
                bad = text[stamps.isna()].iloc[0]
                raise UnsupportedInputError(
                    f"the time column '{header}' of FBRM file '{path}' holds '{bad}', which is "
                    "neither a number, a duration (hh:mm:ss) nor a timestamp; export the "
                    "relative time or ISO timestamps"
                )
            start = stamps.iloc[0]
            seconds = (stamps - start).dt.total_seconds().to_numpy(dtype=np.float64)
    if len(seconds) and np.any(np.diff(seconds) <= 0):
        k = int(np.flatnonzero(np.diff(seconds) <= 0)[0])
        raise UnsupportedInputError(
            f"the times of FBRM file '{path}' do not increase (row {k + 2} is at "
            f"{seconds[k + 1]:g} s after {seconds[k]:g} s); sort the export by time"
        )
    return seconds - (seconds[0] if len(seconds) else 0.0), start
