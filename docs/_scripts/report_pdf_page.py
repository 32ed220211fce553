"""Make docs/img/report-pdf-page1.png: the first page of a PDF report, rendered headless.

A synthetic run (the demo's scene) is segmented and measured by the bundled model
(as ``crystalseg measure`` does) and its kinetics computed; its report is written
as HTML and PDF with batch-record fields (as ``crystalseg report RUN --pdf --meta
...`` does), and the PDF's first page rendered to PNG by PDFium (pypdfium2, in the
``docs`` extra: a wheel from PyPI, no system library, no screen).

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
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.4, help="pixels per PDF point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "crystallization.zarr"
        _make_run(run, args.frames)
        pdf = _write_report(run, Path(tmp) / "crystallization_report.html")
        _render_first_page(pdf, args.out, args.scale)
    print(args.out)


def _make_run(run: Path, frames: int) -> None:
    from crystalseg.demo import DEMO_SCENARIO
    from crystalseg.kinetics import kinetics_run
    from crystalseg.measure import MeasureOptions, MeasureSettings
    from crystalseg.pipeline import segment_and_measure
    from crystalseg.synth import SynthConfig, synthesize_run

    config = SynthConfig(frames=frames, height=320, width=320, seed=7, scenario=DEMO_SCENARIO)
    synthesize_run(run, config)
    # segmented by the bundled model, then measured; a low minimum count so that the
    # small field has D-values in most frames
    options = MeasureOptions(MeasureSettings(min_count=5), scheduler="threads")
    segment_and_measure(run, options=options)
    kinetics_run(run)


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
