"""Write a measured run's results in the formats its users work in: CSV, Excel, Parquet.

Four tables leave the run store (whichever it holds):

* ``statistics``: one row per frame: frame, time in s and min, and every per-frame
  variable of group ``psd`` (counts, D10/D50/D90 on both bases, D[1,0], D[3,2],
  D[4,3], span, mean aspect ratio and circularity, number density, and whatever
  variables a newer measurement adds, such as interval bounds), found generically.
* ``psd``: the size distributions as a *long* table, one row per frame and size
  bin (frame, time, bin lower/centre/upper, q0, q3 and every other variable of
  ``psd`` along the size bins). Long rather than wide because its headers then
  carry the units once, a pivot table or a plotting tool takes it as it is, and a
  new per-bin variable is one more column rather than 60.
* ``particles``: one row per particle per frame, streamed block by block.
* ``tracks``: the crystals linked across frames, when the run has been tracked.

Every header carries its unit (``ecd_um``, ``area_um2``, ``number_density_per_mm2``;
``_px``/``_px2`` when the run has no pixel size): the unit comes from the
``units`` attribute of the stored variable, mapped by :data:`UNIT_SUFFIXES`, so
new variables come along without code changes. Dimensionless values carry none.

CSV is written for spreadsheets: a UTF-8 byte-order mark (Excel otherwise reads
the file in the system's code page), ``sep`` and ``decimal`` for locales whose
Excel expects ``;`` and ``,``, booleans as 1/0, decimals to :data:`DEFAULT_DIGITS`
significant digits, and a ``<run>_metadata.csv`` beside the tables. Excel files
hold one sheet per table plus a ``metadata`` sheet. Parquet keeps full precision,
the dtypes, and each column's units and description in its field metadata.

Every table is read through :class:`crystalseg.measure.MeasuredRun`. The package
holds one module per job: :mod:`~crystalseg.export.settings` (what and how),
:mod:`~crystalseg.export.tables` (headers with units, the tables, the metadata),
:mod:`~crystalseg.export.writers` (CSV, xlsx, Parquet) and
:mod:`~crystalseg.export.run` (:func:`export_run`, :func:`export_particles`).
"""

from crystalseg.export.run import export_particles, export_run
from crystalseg.export.settings import (
    DEFAULT_DIGITS,
    FORMATS,
    TABLES,
    DecimalMark,
    ExportFormat,
    ExportResult,
    ExportSettings,
    Separator,
    TableName,
)
from crystalseg.export.tables import DUPLICATE_COLUMNS, UNIT_SUFFIXES, column_header
from crystalseg.export.writers import EXCEL_MAX_ROWS, round_significant

__all__ = [
    "DEFAULT_DIGITS",
    "DUPLICATE_COLUMNS",
    "EXCEL_MAX_ROWS",
    "FORMATS",
    "TABLES",
    "UNIT_SUFFIXES",
    "DecimalMark",
    "ExportFormat",
    "ExportResult",
    "ExportSettings",
    "Separator",
    "TableName",
    "column_header",
    "export_particles",
    "export_run",
    "round_significant",
]
