"""What the PDF adds to a report: time and size beside the HTML made from the same content.

A synthetic run (its true mask standing as the segmentation, so no model runs) is
measured, then the report's content is gathered once (reading the run, drawing every
figure) and rendered both ways. Prints one JSON document:

- ``gather_s``: reading the run and drawing the figures (shared by both files);
- ``html_s`` and ``pdf_s``: each renderer on that content, and ``pdf_over_html``;
- ``html_bytes`` and ``pdf_bytes``, ``pdf_pages``.

Usage: ``python benchmarks/bench_report.py [--frames 40] [--size 384]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    import zarr
    from pypdf import PdfReader

    from crystalseg.dims import DEFAULT_CODES, FRAME_DIMS
    from crystalseg.measure import MeasureSettings, measure_run
    from crystalseg.store import begin_stage, create_array
    from crystalseg.synth import SynthConfig, synthesize_run
    from crystalseg.viz.report_data import gather_report
    from crystalseg.viz.report_html import render_html
    from crystalseg.viz.report_pdf import render_pdf

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run.zarr"
        config = SynthConfig(frames=args.frames, height=args.size, width=args.size, seed=3)
        synthesize_run(run, config)
        truth = np.asarray(zarr.open_group(str(run), mode="r")["truth/mask"][:])
        mask = create_array(
            run,
            "mask",
            dims=FRAME_DIMS,
            shape=truth.shape,
            dtype="uint8",
            chunks=(4, *truth.shape[1:]),
            attrs={"codes": list(DEFAULT_CODES)},
        )
        mask[:] = truth
        stage = begin_stage(
            run, "segment", settings={"truth": True}, n_frames=len(truth), frames_per_chunk=4
        )
        stage.mark_done(0, len(truth))
        stage.finish()
        measure_run(run, settings=MeasureSettings(min_count=5), scheduler="synchronous")

        start = time.perf_counter()
        content = gather_report(run, meta={"sample": "S1", "batch": "B1"})
        gathered = time.perf_counter()
        html = render_html(content).encode("utf-8")
        rendered = time.perf_counter()
        pdf = render_pdf(content)
        done = time.perf_counter()
        (Path(tmp) / "r.pdf").write_bytes(pdf)
        pages = len(PdfReader(Path(tmp) / "r.pdf").pages)
    html_s, pdf_s = rendered - gathered, done - rendered
    print(
        json.dumps(
            {
                "frames": args.frames,
                "size_px": args.size,
                "gather_s": round(gathered - start, 3),
                "html_s": round(html_s, 3),
                "pdf_s": round(pdf_s, 3),
                "pdf_over_html": round(pdf_s / html_s, 1),
                "pdf_over_gather": round(pdf_s / (gathered - start), 3),
                "html_bytes": len(html),
                "pdf_bytes": len(pdf),
                "pdf_pages": pages,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
