"""The report of a measured run, for a browser and for the batch record: HTML, and PDF beside it.

The report reads what the stages wrote and recomputes no measurement: the run's
metadata and calibration (:func:`crystalseg.store.describe_run`), the model that
drew the masks (a readable name, version and short sha256), the settings of every
stage (the store's provenance), the figures of :mod:`crystalseg.viz.plots` and
:mod:`crystalseg.viz.overlay`, a table of D10/D50/D90 and counts at the start,
middle and end of the run and D-values over time (from group ``psd``), and
warnings about things that make the numbers less trustworthy.

A header block holds the batch-record fields the caller gives (``meta``: sample,
batch, operator, instrument, any other key). Every time in a report is in one
unit, chosen from the run's duration. :func:`write_report` writes the HTML and,
when asked, the same content as PDF beside it, each with a ``.sha256`` file in
the format of ``sha256sum``, so the copy filed with a batch record can be checked
(``sha256sum -c run_report.pdf.sha256``).

The work is split by job: :mod:`~crystalseg.viz.report_checks` (settings and
warnings), :mod:`~crystalseg.viz.report_meta` (fields, time unit, model name),
:mod:`~crystalseg.viz.report_figures` (figures as PNG),
:mod:`~crystalseg.viz.report_data` (the content, gathered once),
:mod:`~crystalseg.viz.report_html` and :mod:`~crystalseg.viz.report_pdf` (the
two renderers).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crystalseg.errors import ConfigError
from crystalseg.store import check_output_outside_run, file_written_whole, make_folder
from crystalseg.store.location import RunLike, RunPath, run_path
from crystalseg.summary import counted
from crystalseg.viz.report_checks import (
    ReportSettings,
    ReportWarning,
    find_warnings,
    frame_ranges,
)
from crystalseg.viz.report_data import (
    SUMMARY_ROWS,
    ReportContent,
    gather_report,
    summary_frames,
    summary_table,
)
from crystalseg.viz.report_figures import png_bytes
from crystalseg.viz.report_html import SECTION_IDS, render_html
from crystalseg.viz.report_meta import ModelIdentity, check_meta, model_identity, parse_meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: Suffix of the file that holds a report file's sha256 (``sha256sum`` format), after
#: the report's own name: ``run_report.html.sha256``.
CHECKSUM_SUFFIX = ".sha256"


def figure_to_base64(fig: Figure, *, dpi: int = 100) -> str:
    """PNG bytes of a matplotlib figure, base64-encoded; closes the figure."""
    return base64.b64encode(png_bytes(fig, dpi=dpi, tight=True)).decode("ascii")


def render_report(
    run: RunLike,
    *,
    settings: ReportSettings | None = None,
    meta: Mapping[str, Any] | None = None,
) -> tuple[str, list[ReportWarning]]:
    """The HTML text of the report of a measured run, and its warnings.

    Parameters
    ----------
    run : path of a measured run store
    settings : ReportSettings, optional
    meta : mapping of str to str, optional
        Batch-record fields shown in the report's header: ``sample``, ``batch``,
        ``operator``, ``instrument`` first, then any other key
        (:func:`~crystalseg.viz.report_meta.check_meta`).

    Returns
    -------
    html : str
        A complete, self-contained HTML document.
    warnings : list of ReportWarning
        What the warnings section lists.

    Raises
    ------
    StageStateError
        The run has no finished measurement.
    InputNotFoundError, RunFormatError
        No run store at ``run``.
    ConfigError
        Bad settings or meta, an overlay frame outside the run.
    """
    content = gather_report(run, settings=settings, meta=meta)
    return render_html(content), list(content.warnings)


def sha256_line(data: bytes, name: str) -> str:
    """A line of ``sha256sum`` output: the hex digest, two spaces, the file's name."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def report_sha256(path: RunLike) -> str:
    """sha256 (hex) of a report file as it is on disk now: compare it with the one printed."""
    return hashlib.sha256(run_path(path).read_bytes()).hexdigest()


def pdf_path(html_path: RunLike) -> RunPath:
    """Where the PDF of a report goes: beside the HTML, same name, ``.pdf``."""
    return run_path(html_path).with_suffix(".pdf")


def _write_with_checksum(path: RunPath, data: bytes) -> None:
    """The file, then its ``.sha256`` beside it (both replaced whole, never half-written).

    The old checksum goes first: a write cut short leaves a report without a checksum,
    never one whose checksum vouches for other bytes.
    """
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    checksum.unlink(missing_ok=True)
    with file_written_whole(path) as tmp:
        tmp.write_bytes(data)
    with file_written_whole(checksum) as tmp:
        tmp.write_text(sha256_line(data, path.name), encoding="utf-8")


def write_report(
    run: RunLike,
    output: RunLike | None = None,
    *,
    settings: ReportSettings | None = None,
    meta: Mapping[str, Any] | None = None,
    pdf: bool = False,
) -> tuple[RunPath, list[ReportWarning]]:
    """Write the self-contained HTML report of a measured run, and its PDF if asked.

    Parameters
    ----------
    run : path of a measured run store
    output : path of the HTML file (default ``<run stem>_report.html`` beside the run);
        an existing file is replaced.
    settings : ReportSettings, optional
    meta : mapping of str to str, optional
        Batch-record fields for the header (see :func:`render_report`).
    pdf : bool
        Also write the same content as PDF beside the HTML (:func:`pdf_path`).

    Returns
    -------
    path : Path of the written HTML report
    warnings : list of ReportWarning listed in it

    Each file written gets ``<name>.sha256`` beside it (``sha256sum`` format);
    :func:`report_sha256` gives the digest of a file as it is on disk.

    Raises
    ------
    ConfigError
        ``output`` is a folder; bad settings or meta; ``pdf`` without fpdf2 installed.
    """
    run = run_path(run)
    out = run_path(output) if output is not None else run.with_name(f"{run.stem}_report.html")
    check_output_outside_run(out)
    if out.is_dir():
        raise ConfigError(
            f"report output '{out}' is a folder; expected an HTML file name, e.g. "
            f"'{out / (run.stem + '_report.html')}'"
        )
    check_meta(meta)
    if pdf:
        from crystalseg.viz.report_pdf import check_pdf_renderer

        check_pdf_renderer()  # before the work
    make_folder(out.parent)  # a file in the way fails before the work
    content = gather_report(run, settings=settings, meta=meta)
    _write_with_checksum(out, render_html(content).encode("utf-8"))
    if pdf:
        from crystalseg.viz.report_pdf import render_pdf

        _write_with_checksum(pdf_path(out), render_pdf(content))
    log.info(
        "report of %s written to %s%s (%s)",
        run,
        out,
        " and .pdf" if pdf else "",
        counted(len(content.warnings), "warning"),
    )
    return out, list(content.warnings)


__all__ = [
    "CHECKSUM_SUFFIX",
    "SECTION_IDS",
    "SUMMARY_ROWS",
    "ModelIdentity",
    "ReportContent",
    "ReportSettings",
    "ReportWarning",
    "check_meta",
    "figure_to_base64",
    "find_warnings",
    "frame_ranges",
    "model_identity",
    "parse_meta",
    "pdf_path",
    "render_report",
    "report_sha256",
    "sha256_line",
    "summary_frames",
    "summary_table",
    "write_report",
]
