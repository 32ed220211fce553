"""Writers of export tables: CSV for spreadsheets, Excel workbooks, Parquet with units.

CSV: a UTF-8 byte-order mark, ``sep`` and ``decimal`` for the locale, booleans as
1/0, decimals to ``digits`` significant digits. Excel: one sheet per table and a
``metadata`` sheet, written in constant memory. Parquet: full precision, each
field's units and description in its metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crystalseg.errors import ConfigError
from crystalseg.export.settings import ExportSettings
from crystalseg.export.tables import Table
from crystalseg.store import file_written_whole
from crystalseg.store.location import RunPath

#: Rows of an Excel sheet, the header included (Excel 2007 and later).
EXCEL_MAX_ROWS = 1_048_576


def for_spreadsheet(block: pd.DataFrame) -> pd.DataFrame:
    """Booleans as 1/0 (see :class:`ExportSettings`)."""
    bools = [c for c in block.columns if block[c].dtype == bool]
    return block.astype(dict.fromkeys(bools, np.int8)) if bools else block


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (NaN, inf and 0 kept).

    Examples
    --------
    >>> round_significant(np.array([123.4567, 0.000123456, -9.87654e7]), 3).tolist()
    [123.0, 0.000123, -98800000.0]
    """
    x = np.asarray(values, dtype=np.float64)
    out = x.copy()
    finite = np.isfinite(x) & (x != 0)
    exponent = digits - 1 - np.floor(np.log10(np.abs(x[finite])))
    # Scale by exact powers of ten only (10**k, k >= 0), so that the result is the
    # float nearest to the rounded decimal: 0.000123, not 0.00012300000000000001.
    up = 10.0 ** np.maximum(exponent, 0)
    down = 10.0 ** np.maximum(-exponent, 0)
    out[finite] = np.round(x[finite] * up / down) * down / up
    return out


def write_csv(table: Table, out: RunPath, settings: ExportSettings) -> None:
    """Stream ``table`` into a CSV file for spreadsheets, as ``settings`` says."""
    encoding = "utf-8-sig" if settings.bom else "utf-8"
    with file_written_whole(out) as tmp, open(tmp, "w", newline="", encoding=encoding) as fh:
        for i, block in enumerate(table.blocks()):
            for_spreadsheet(block).to_csv(
                fh,
                sep=settings.sep,
                decimal=settings.decimal,
                float_format=f"%.{settings.digits}g",
                index=False,
                header=i == 0,
                lineterminator="\r\n",
            )


def write_metadata_csv(
    rows: list[tuple[str, str, Any]], out: RunPath, settings: ExportSettings
) -> None:
    """The metadata rows (section, key, value) as a CSV file."""
    frame = pd.DataFrame(rows, columns=["section", "key", "value"]).astype(str)
    encoding = "utf-8-sig" if settings.bom else "utf-8"
    with file_written_whole(out) as tmp:
        frame.to_csv(tmp, sep=settings.sep, index=False, encoding=encoding, lineterminator="\r\n")


def write_parquet(table: Table, out: RunPath, metadata: dict[str, str]) -> None:
    """Stream the table's blocks into one Parquet file; each field's metadata holds
    its ``units`` and ``long_name`` (and ``source``: the name in the store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    described = {c.header: c for c in table.columns}
    with file_written_whole(out) as tmp:
        writer = None
        try:
            for block in table.blocks():
                arrow = pa.Table.from_pandas(block, preserve_index=False)
                if writer is None:
                    fields = []
                    for f in arrow.schema:
                        c = described[f.name]
                        meta = {"units": c.units, "long_name": c.long_name, "source": c.source}
                        fields.append(f.with_metadata(meta))
                    writer = pq.ParquetWriter(str(tmp), pa.schema(fields, metadata=metadata))
                writer.write_table(arrow.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()


def _cell_rows(block: pd.DataFrame, digits: int) -> list[list[Any]]:
    """Rows of plain Python values for the xlsx writer: decimals rounded, NaN as None
    (an empty cell)."""
    columns: list[np.ndarray] = []
    for name in block.columns:
        values = block[name].to_numpy()
        if values.dtype.kind == "f":
            rounded = round_significant(values, digits).astype(object)
            rounded[~np.isfinite(values)] = None
            columns.append(rounded)
        elif values.dtype.kind in "iub":
            columns.append(values.astype(np.int64).astype(object))
        else:
            text = values.astype(object)
            text[pd.isna(text)] = None
            columns.append(text)
    if not columns:
        return []
    return np.column_stack(columns).tolist() if len(block) else []


def check_excel_rows(tables: Sequence[Table], path: RunPath) -> None:
    """Refuse, before anything is written, a table longer than an Excel sheet."""
    for table in tables:
        if table.rows + 1 > EXCEL_MAX_ROWS:
            others = tuple(t.name for t in tables if t.rows + 1 <= EXCEL_MAX_ROWS)
            raise ConfigError(
                f"the {table.name} table of '{path}' has {table.rows:,} rows, more than the "
                f"{EXCEL_MAX_ROWS - 1:,} an Excel sheet holds below its header; export it as "
                f"CSV or Parquet (format='parquet', what=('{table.name}',)) and the rest "
                f"to Excel without it (what={others!r})"
            )


def write_xlsx(
    tables: Sequence[Table],
    metadata: list[tuple[str, str, Any]],
    out: RunPath,
    settings: ExportSettings,
) -> None:
    """One workbook: a sheet per table and a ``metadata`` sheet, rows streamed to disk."""
    import xlsxwriter

    with file_written_whole(out) as tmp:
        # constant_memory: rows go to disk as they are written (flat memory for big
        # tables); strings never become formulas or links (a value like "=1+1" or a
        # path stays text).
        book = xlsxwriter.Workbook(
            str(tmp),
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        try:
            bold = book.add_format({"bold": True})
            for table in tables:
                sheet = book.add_worksheet(table.name)
                headers = [c.header for c in table.columns]
                sheet.write_row(0, 0, headers, bold)
                for j, header in enumerate(headers):
                    sheet.set_column(j, j, max(10, len(header) + 2))
                sheet.freeze_panes(1, 0)
                row = 1
                for block in table.blocks():
                    for values in _cell_rows(for_spreadsheet(block), settings.digits):
                        sheet.write_row(row, 0, values)
                        row += 1
                if headers:
                    sheet.autofilter(0, 0, max(row - 1, 1), len(headers) - 1)
            sheet = book.add_worksheet("metadata")
            sheet.write_row(0, 0, ["section", "key", "value"], bold)
            sheet.set_column(0, 0, 20)
            sheet.set_column(1, 1, 28)
            sheet.set_column(2, 2, 80)
            sheet.freeze_panes(1, 0)
            for i, (section, key, value) in enumerate(metadata, start=1):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    value = str(value)
                sheet.write_row(i, 0, [section, key, value])
        finally:
            book.close()


__all__ = [
    "EXCEL_MAX_ROWS",
    "check_excel_rows",
    "for_spreadsheet",
    "round_significant",
    "write_csv",
    "write_metadata_csv",
    "write_parquet",
    "write_xlsx",
]
