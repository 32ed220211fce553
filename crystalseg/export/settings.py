"""What to export and how (:class:`ExportSettings`); what was written (:class:`ExportResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from crystalseg.errors import ConfigError
from crystalseg.store.location import RunPath

TableName = Literal["statistics", "psd", "particles", "tracks"]


ExportFormat = Literal["csv", "xlsx", "parquet"]


Separator = Literal[",", ";", "\t"]


DecimalMark = Literal[".", ","]


#: Every table an export can hold, in the order they are written.
TABLES: tuple[TableName, ...] = get_args(TableName)


FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


#: Significant digits of decimal numbers in CSV and Excel. Six keep every value
#: 1000 times finer than what was measured (a particle's size is known to a pixel
#: in hundreds, sizes and times to 1e-3 at best), so no statistic recomputed from
#: the export moves, while the 17 digits of a float64 ("12.345678901234567") are
#: noise that makes the tables hard to read. Parquet keeps full precision.
DEFAULT_DIGITS = 6


@dataclass(frozen=True)
class ExportSettings:
    """What to export and how the files are written.

    Parameters
    ----------
    what : tuple of {"statistics", "psd", "particles", "tracks"}, optional
        Tables to write; None writes every table the run holds (``tracks`` is
        skipped with a note when the run has none; asked for by name, its absence
        is an error).
    format : {"csv", "xlsx", "parquet"}
        CSV (one file per table and ``<run>_metadata.csv``), Excel (one workbook,
        one sheet per table and a ``metadata`` sheet) or Parquet (one file per
        table, metadata in the schema).
    sep : {",", ";", "\\t"}
        CSV column separator. German, French and other Excel installations whose
        decimal mark is a comma expect ``;``.
    decimal : {".", ","}
        CSV decimal mark.
    bom : bool
        Start CSV files with a UTF-8 byte-order mark. Excel needs it to read a CSV
        as UTF-8 (without it, it uses the system's code page); pandas and R skip it.
    digits : int
        Significant digits of decimal numbers in CSV and xlsx (1-17); see
        :data:`DEFAULT_DIGITS`. Integers and Parquet are written exactly.
    sop : mapping, optional
        The standard operating procedure file the export was made from (``file``,
        ``sha256``, ``content``, as ``crystalseg export --config`` records it): rows of
        section ``sop`` in the metadata.

    Notes
    -----
    Booleans (``kept``, ``touches_edge``) are written as 1/0 in CSV and xlsx: Excel
    reads TRUE/FALSE in a CSV only in English installations (German Excel expects
    WAHR/FALSCH and keeps TRUE as text), and even as real booleans SUM and AVERAGE
    skip them, whereas 1/0 are numbers in every locale: ``=SUM(kept)`` counts the
    counted particles and ``=AVERAGE`` gives the fraction. Parquet keeps booleans.
    """

    what: tuple[TableName, ...] | None = None
    format: ExportFormat = "csv"
    sep: Separator = ","
    decimal: DecimalMark = "."
    bom: bool = True
    digits: int = DEFAULT_DIGITS
    sop: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.what is not None:
            what = (self.what,) if isinstance(self.what, str) else tuple(self.what)
            unknown = [w for w in what if w not in TABLES]
            if unknown or not what:
                got = ", ".join(repr(w) for w in unknown) or "nothing"
                raise ConfigError(
                    f"cannot export {got}: expected one or more of {', '.join(TABLES)}; "
                    "e.g. what=('statistics', 'psd')"
                )
            object.__setattr__(self, "what", tuple(dict.fromkeys(what)))
        if self.format not in FORMATS:
            raise ConfigError(
                f"export format {self.format!r} is unknown; use one of {', '.join(FORMATS)}"
            )
        if self.sep not in get_args(Separator):
            raise ConfigError(
                f"CSV separator {self.sep!r} is not supported; use ',', ';' or a tab ('\\t')"
            )
        if self.decimal not in get_args(DecimalMark):
            raise ConfigError(f"decimal mark {self.decimal!r} is not supported; use '.' or ','")
        if self.sep == self.decimal:
            raise ConfigError(
                f"separator and decimal mark are both {self.sep!r}, so a reader cannot tell "
                "the columns apart; use sep=';' with decimal=','"
            )
        if isinstance(self.digits, bool) or not isinstance(self.digits, int):
            raise ConfigError(f"digits must be a whole number, got {self.digits!r}")
        if not 1 <= self.digits <= 17:
            raise ConfigError(
                f"digits={self.digits} is outside 1..17 (a float64 holds 17 significant "
                f"digits); {DEFAULT_DIGITS} is the default"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the metadata of the export."""
        return {
            "what": list(self.what) if self.what is not None else None,
            "format": self.format,
            "sep": self.sep,
            "decimal": self.decimal,
            "bom": self.bom,
            "digits": self.digits,
        }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes
    ----------
    files : tuple of Path
        The files written, tables first.
    rows : dict of str to int
        Table name -> rows written.
    notes : tuple of str
        What was left out and why (e.g. a run without tracks).
    """

    files: tuple[RunPath, ...]
    rows: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


__all__ = [
    "DEFAULT_DIGITS",
    "FORMATS",
    "TABLES",
    "DecimalMark",
    "ExportFormat",
    "ExportResult",
    "ExportSettings",
    "Separator",
    "TableName",
]
