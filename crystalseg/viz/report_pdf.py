"""The report as PDF, for the batch record, from :class:`~crystalseg.viz.report_data.ReportContent`.

Rendered with fpdf2: pure Python, installed from PyPI with no system library (no
cairo, pango or a browser, unlike WeasyPrint or headless Chrome), maintained by
the py-pdf organisation, with tables that break across pages and repeat their
heading row, and PNG images embedded as they are. Text is set in DejaVu Sans,
the font that ships inside matplotlib (a dependency already), embedded as a
subset, so µ, ×, ², – and every other character of the report print and are
found again by text extraction.

Same content as the HTML, in the same order: header with the batch-record
fields, run/calibration/model, warnings, summary, D-values over time, counts,
kinetics, the figures, the overlays with their scale bars, every recorded
setting of every stage. A4 portrait; each page has the run's name, the batch
(when given) and "page N of M" in its footer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from crystalseg.errors import ConfigError
from crystalseg.viz.report_data import ReportContent, interval_text, number_text, unit_text
from crystalseg.viz.report_html import (
    COUNT_TABLE_FRAMES,
    SECTION_IDS,
    SECTION_TITLES,
    SUMMARY_NOTE,
    count_label,
)

if TYPE_CHECKING:
    from fpdf import FPDF

    from crystalseg.viz.report_figures import ReportFigure

#: How to install the PDF renderer, for the message when it is missing.
PDF_INSTALL = "pip install 'fpdf2>=2.8' (a dependency of crystalseg; reinstall crystalseg)"

_FONT = "dejavu"
_MONO = "dejavumono"
_MARGIN_MM = 15.0
_BODY_PT = 9.0
_SMALL_PT = 7.5
#: Tallest figure (mm) of each figure section: two plots a page, one overlay.
_FIGURE_MAX_MM = {"plots": 110.0, "overlays": 200.0}


def check_pdf_renderer() -> None:
    """Raise ConfigError saying how to install fpdf2 when it is not importable."""
    try:
        import fpdf  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the PDF report needs fpdf2, which is not installed: {PDF_INSTALL}"
        ) from None


def _font_files() -> dict[tuple[str, str], Path]:
    """The DejaVu fonts inside matplotlib: (family, style) -> file."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return {
        (_FONT, ""): folder / "DejaVuSans.ttf",
        (_FONT, "B"): folder / "DejaVuSans-Bold.ttf",
        (_FONT, "I"): folder / "DejaVuSans-Oblique.ttf",
        (_MONO, ""): folder / "DejaVuSansMono.ttf",
    }


class _KineticsText(HTMLParser):
    """Rows (th, td) and paragraphs of the kinetics section's HTML body, as text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self._cell: list[str] | None = None
        self._para: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "p":
            self._para = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p" and self._para is not None:
            self.notes.append(" ".join("".join(self._para).split()))
            self._para = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._para):
            if part is not None:
                part.append(data)


class _Pdf:
    """An A4 document with the report's fonts, headings, tables and figures."""

    def __init__(self, content: ReportContent) -> None:
        from fpdf import FPDF

        footer_text = content.title + "".join(
            f" · {k} {v}" for k, v in content.meta if k == "batch"
        )

        class Document(FPDF):
            def footer(self) -> None:
                self.set_y(-10)
                self.set_font(_FONT, "", 7)
                self.set_text_color(90)
                self.cell(0, 4, f"{footer_text} · page {self.page_no()} of {{nb}}", align="C")

        pdf = Document(orientation="portrait", unit="mm", format="A4")
        for (family, style), path in _font_files().items():
            pdf.add_font(family, style, str(path))
        pdf.set_margins(_MARGIN_MM, _MARGIN_MM, _MARGIN_MM)
        pdf.set_auto_page_break(True, margin=14)
        pdf.set_title(f"{content.title}: crystalseg report")
        pdf.set_creator("crystalseg")
        pdf.set_subject("crystalseg run report")
        pdf.set_keywords(" ".join(f"{k}={v}" for k, v in content.meta))
        pdf.alias_nb_pages()
        pdf.add_page()
        self.pdf: FPDF = pdf
        self.width = pdf.w - 2 * _MARGIN_MM

    def text(self, text: str, *, size: float = _BODY_PT, style: str = "", grey: int = 0) -> None:
        pdf = self.pdf
        pdf.set_font(_FONT, style, size)
        pdf.set_text_color(grey)
        pdf.multi_cell(self.width, size * 0.45, text, new_x="LMARGIN", new_y="NEXT", align="L")
        pdf.ln(1)

    def heading(self, text: str, level: int = 2, *, keep_mm: float = 25.0) -> None:
        """A heading, on a new page unless ``keep_mm`` of what follows fits below it."""
        pdf = self.pdf
        if pdf.y + 12 + keep_mm > pdf.h - pdf.b_margin:  # no heading alone at a page's foot
            pdf.add_page()
        pdf.ln(2 if level == 2 else 1)
        size = 13.0 if level == 2 else 10.5
        pdf.set_font(_FONT, "B", size)
        pdf.set_text_color(22, 50, 79)
        pdf.multi_cell(self.width, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def table(
        self,
        rows: Sequence[Sequence[str]],
        *,
        heading: bool = True,
        widths: Sequence[float] | None = None,
        size: float = _BODY_PT,
        numeric_from: int | None = None,
    ) -> None:
        """Rows of text; the first is the heading row (repeated on each page) if ``heading``."""
        from fpdf.fonts import FontFace

        pdf = self.pdf
        pdf.set_font(_FONT, "", size)
        pdf.set_text_color(0)
        align = ["LEFT"] * len(rows[0])
        if numeric_from is not None:
            align[numeric_from:] = ["RIGHT"] * (len(rows[0]) - numeric_from)
        with pdf.table(
            width=self.width if widths is None or sum(widths) > self.width else sum(widths),
            col_widths=tuple(widths) if widths else None,
            first_row_as_headings=heading,
            headings_style=FontFace(emphasis="BOLD", fill_color=(238, 242, 246)),
            line_height=size * 0.5,
            text_align=tuple(align),
            align="LEFT",
            borders_layout="SINGLE_TOP_LINE" if heading else "HORIZONTAL_LINES",
        ) as table:
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(str(value))
        pdf.ln(2)

    def figure_size(self, figure: ReportFigure, max_height: float) -> tuple[float, float]:
        """Width and height (mm) of a figure on the page: the text width, at most
        ``max_height`` high, its aspect kept."""
        from PIL import Image

        with Image.open(io.BytesIO(figure.png)) as im:
            px_w, px_h = im.size
        width = self.width
        height = width * px_h / px_w
        if height > max_height:
            height = max_height
            width = height * px_w / px_h
        return width, height

    def figure(self, figure: ReportFigure, *, max_height: float = 150.0) -> None:
        pdf = self.pdf
        width, height = self.figure_size(figure, max_height)
        if pdf.y + height + 10 > pdf.h - pdf.b_margin:
            pdf.add_page()
        pdf.image(
            io.BytesIO(figure.png),
            x=pdf.l_margin + (self.width - width) / 2,
            w=width,
            h=height,
            alt_text=figure.caption,
            title=figure.fig_id,
        )
        self.text(figure.caption, size=_SMALL_PT, grey=70)
        pdf.ln(1)


def _header(doc: _Pdf, content: ReportContent) -> None:
    doc.text(content.title, size=18, style="B")
    n = len(content.warnings)
    doc.text(
        f"crystalseg run report, generated {content.generated}; {n} warning{'s' if n != 1 else ''}",
        grey=60,
    )
    if content.meta:
        doc.table([(k, v) for k, v in content.meta], heading=False, widths=(40, 140))


def _summary(doc: _Pdf, content: ReportContent) -> None:
    heads = content.summary_heads
    if not heads:
        doc.text("The run has no frames.")
        return
    intervals = content.summary.attrs.get("intervals", {})
    rows: list[list[str]] = [["quantity", *(f"{c}\n{sub}" for c, sub in heads)]]
    for variable, row in content.summary.iterrows():
        units = unit_text(row["units"])
        label = row["quantity"] + ("" if units in ("1", "") else f" ({units})")
        cells = []
        for c, _ in heads:
            bounds = interval_text(intervals.get(variable, {}).get(c))
            cells.append(number_text(row[c]) + (f"\n95 %: {bounds}" if bounds else ""))
        rows.append([label, *cells])
    doc.table(rows, widths=(45, 45, 45, 45), numeric_from=1)
    if not content.counted_any:
        doc.text("No particle was counted in any frame.", style="B")
    else:
        doc.text(SUMMARY_NOTE.format(min_count=content.min_count), size=_SMALL_PT, grey=70)
    doc.heading(f"D-values over time ({content.basis} basis)", 3)
    doc.table(content.dvalues, size=8, numeric_from=0)
    if content.window_dvalues:
        doc.heading(
            f"D-values over time ({content.basis} basis, pooled windows of {content.window})", 3
        )
        doc.table(content.window_dvalues, size=8, numeric_from=0)
    counts = content.counts
    if counts is not None:
        doc.heading("Particles counted and excluded", 3)
        columns = list(counts.columns)
        head = ["particles", *(count_label(c) for c in columns)]
        frames = content.summary.attrs["frames"]
        picked = [
            [f"{k} (frame {f})", *(str(int(counts.loc[f][c])) for c in columns)]
            for k, f in frames.items()
        ]
        total = counts.sum()
        picked.append(["whole run", *(str(int(total[c])) for c in columns)])
        doc.table([head, *picked], size=8, numeric_from=1)
        shown = counts.iloc[:COUNT_TABLE_FRAMES]
        every = [[f"frame {f}", *(str(int(r[c])) for c in columns)] for f, r in shown.iterrows()]
        doc.text(f"Every frame ({len(shown)} of {len(counts)}):", size=_SMALL_PT, grey=70)
        doc.table([head, *every], size=7, numeric_from=1)


def _kinetics(doc: _Pdf, content: ReportContent) -> None:
    if content.kinetics_html is None:
        doc.text(
            "No kinetics yet: 'crystalseg kinetics RUN' tracks the crystals across frames "
            "and adds growth and nucleation rates here."
        )
        return
    parsed = _KineticsText()
    parsed.feed(content.kinetics_html)
    parsed.close()
    rows = [r for r in parsed.rows if len(r) == 2]
    if rows:
        doc.table(rows, heading=False, widths=(60, 120))
    for note in parsed.notes:
        doc.text(note, size=_SMALL_PT, grey=70)
    if content.kinetics_figure is not None:
        doc.figure(content.kinetics_figure)


def _settings(doc: _Pdf, content: ReportContent) -> None:
    if content.sop:
        doc.heading("report: standard operating procedure", 3)
        doc.table([("SOP file", "value"), *content.sop], size=7, widths=(70, 110))
    if not content.stages:
        doc.text("No stage has recorded its settings.")
    for stage in content.stages:
        doc.heading(f"{stage.name}: {stage.status}", 3)
        doc.text(f"{stage.when}; crystalseg {stage.crystalseg_version}", size=_SMALL_PT, grey=70)
        if stage.highlights:
            doc.table(stage.highlights, heading=False, widths=(45, 135))
        if stage.everything:
            doc.table([("recorded setting", "value"), *stage.everything], size=7, widths=(70, 110))


def render_pdf(content: ReportContent) -> bytes:
    """The PDF of a report's content: the HTML report's sections, in its order.

    Raises
    ------
    ConfigError
        fpdf2 is not installed (the message says how to install it).
    """
    check_pdf_renderer()
    doc = _Pdf(content)
    _header(doc, content)
    for section in SECTION_IDS:
        first = {"plots": content.plots[:1], "overlays": content.overlays[:1]}.get(section)
        keep = doc.figure_size(first[0], _FIGURE_MAX_MM[section])[1] + 10 if first else 25.0
        doc.heading(SECTION_TITLES[section], keep_mm=keep)
        if section == "run":
            doc.table(content.run_rows, heading=False, widths=(35, 145))
        elif section == "warnings":
            if not content.warnings:
                doc.text("No warnings: the checks found nothing odd.")
            for warning in content.warnings:
                doc.text(f"• {warning.message}")
        elif section == "summary":
            _summary(doc, content)
        elif section == "kinetics":
            _kinetics(doc, content)
        elif section == "plots":
            for figure in content.plots:
                doc.figure(figure, max_height=_FIGURE_MAX_MM["plots"])
        elif section == "overlays":
            doc.text(
                "Particle outlines drawn on the raw frames: check that the segmentation "
                "follows the crystals. Scale bar at the lower right of each frame; times in "
                f"{content.time_unit}.",
                size=_SMALL_PT,
                grey=70,
            )
            for figure in content.overlays:
                doc.figure(figure, max_height=_FIGURE_MAX_MM["overlays"])
            if not content.overlays:
                doc.text("No overlays.")
        elif section == "settings":
            _settings(doc, content)
    return bytes(doc.pdf.output())


__all__ = ["PDF_INSTALL", "check_pdf_renderer", "render_pdf"]
