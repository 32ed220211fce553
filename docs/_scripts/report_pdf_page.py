"""Make docs/img/report-pdf-page1.png: the first page of a PDF report, rendered headless.

A synthetic run is segmented and measured by the bundled model (as ``crystalseg
measure`` does), its report written as HTML and PDF with batch-record fields (as
``crystalseg report RUN --pdf --meta ...`` does), and the PDF's first page
rendered to PNG by PDFium (pypdfium2, in the ``docs`` extra: a wheel from PyPI,
no system library, no screen).

    python docs/_scripts/report_pdf_page.py [--out docs/img/report-pdf-page1.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The batch-record fields shown in the picture (made up; no real batch).
META = {
    "sample": "API-7 seeded cooling, lot 3",
    "batch": "B-2291",
    "operator": "J. Doe",
    "instrument": "bright-field probe, 10x",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "report-pdf-page1.png")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--scale", type=float, default=1.4, help="pixels per PDF point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "crystallization.zarr"
        _make_run(run, args.frames)
        pdf = _write_report(run, Path(tmp) / "crystallization_report.html")
        _render_first_page(pdf, args.out, args.scale)
    print(args.out)


def _make_run(run: Path, frames: int) -> None:
    from crystalseg.measure import MeasureSettings, measure_run
    from crystalseg.synth import SynthConfig, synthesize_run

    synthesize_run(run, SynthConfig(frames=frames, height=256, width=256, seed=7))
    # segments with the bundled model first; a low minimum count so the small run has D-values
    measure_run(run, settings=MeasureSettings(min_count=5), scheduler="threads")


def _write_report(run: Path, html: Path) -> Path:
    from crystalseg.viz.report import ReportSettings, pdf_path, write_report

    write_report(run, html, settings=ReportSettings(montage_n=4), meta=META, pdf=True)
    return pdf_path(html)


def _render_first_page(pdf: Path, out: Path, scale: float) -> None:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        image = document[0].render(scale=scale).to_pil()
    finally:
        document.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(out, optimize=True)


if __name__ == "__main__":
    main()
