"""The report as one self-contained HTML file, from a gathered ReportContent.

Everything (CSS, images) is inside the one file: no scripts, no fonts, no links
to anything outside it, so it opens offline and survives being e-mailed. Every
piece of text that comes from the store or the caller goes through
:func:`html.escape`. Printed, nothing is hidden: the settings are laid out open,
and a browser that prints folded ``<details>`` shows their content too.

Each section has a fixed ``id`` (:data:`SECTION_IDS`) so that readers, tests and
scripts can find it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crystalseg.store import crystalseg_version
from crystalseg.viz.report_checks import ReportWarning
from crystalseg.viz.report_data import (
    ReportContent,
    interval_text,
    number_text,
    unit_text,
)

if TYPE_CHECKING:
    import pandas as pd

    from crystalseg.viz.report_figures import ReportFigure

#: ``id`` of every section of the report, in page order.
SECTION_IDS: tuple[str, ...] = (
    "run",
    "warnings",
    "summary",
    "kinetics",
    "plots",
    "overlays",
    "settings",
)

#: Title of each section (both renderers).
SECTION_TITLES: dict[str, str] = {
    "run": "Run, calibration and model",
    "warnings": "Warnings",
    "summary": "Summary",
    "kinetics": "Kinetics",
    "plots": "Size distribution over time",
    "overlays": "Segmentation overlays",
    "settings": "Settings of each stage",
}

#: Frames listed one by one in the report's per-frame count table (more are sampled).
COUNT_TABLE_FRAMES = 400

#: Text under the summary table (both renderers); ``{min_count}`` is filled in.
SUMMARY_NOTE = (
    "Start and end are the first and last frames with D-values (at least {min_count} "
    "counted particles; else with any); the middle is halfway between them. Below each "
    "value: its 95 % interval, the range that covers the value of the crystal population "
    "in view in 95 % of frames. It is sampling noise only: segmentation bias (outlines "
    "drawn too wide or too narrow, crystals missed) is not in it."
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#1b1b1b;background:#fff;line-height:1.45}
header{background:#16324f;color:#fff;padding:1.2em 2em}
header h1{margin:0;font-size:1.5em}header p{margin:.3em 0 0;opacity:.85}
table.meta{margin:.6em 0 0;border-collapse:collapse}
table.meta th,table.meta td{border:1px solid #5b7590;padding:.2em .7em;color:inherit}
table.meta th{font-weight:600;text-align:left}
nav{padding:.6em 2em;background:#eef2f6;border-bottom:1px solid #d5dde5}
nav a{margin-right:1.2em;color:#16324f;text-decoration:none;font-weight:600}
main{padding:0 2em 2em;max-width:1200px}
section{border-bottom:1px solid #e3e7eb;padding:1em 0}
h2{color:#16324f;font-size:1.25em}h3{font-size:1.05em;margin:.8em 0 .2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #d5dde5;padding:.25em .6em;text-align:left;vertical-align:top}
table.kv th{background:#f5f7f9;font-weight:600;white-space:nowrap}
table.summary th{background:#f5f7f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
ul.warnings{padding-left:1.2em}li.warning{margin:.3em 0;padding:.3em .6em;
background:#fff4e5;border-left:4px solid #e69f00;list-style:none}
.ok{color:#1a7f37}.bad{color:#b3261e}.note{color:#555;font-size:.9em}
div.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
figure{margin:.5em 0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e3e7eb}
figure.native{overflow-x:auto}figure.native img{max-width:none}
figcaption{font-size:.9em;color:#444}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#16324f}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
@media print{nav{display:none}header{background:none;color:#000}
table.meta th,table.meta td{border-color:#000}
section{break-inside:auto}table,figure,h3{break-inside:avoid}
details>summary{list-style:none;cursor:auto}
details::details-content{content-visibility:visible;display:block}
figure.native{overflow:visible}figure.native img{max-width:100%}
div.figures{display:block}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: Sequence[tuple[str, str]], *, css: str = "kv") -> str:
    """A two-column table of (already escaped) header and value cells."""
    body = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='{css}'><tbody>{body}</tbody></table>"


def _section(section_id: str, body: str) -> str:
    title = SECTION_TITLES[section_id]
    return f"<section id='{section_id}'><h2>{_e(title)}</h2>{body}</section>"


def figure_html(figure: ReportFigure) -> str:
    """A ``<figure>`` with the PNG inline; ``native`` ones are never scaled down on screen."""
    css = " class='native'" if figure.native else ""
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f"<figure id='{_e(figure.fig_id)}'{css}><img alt='{_e(figure.caption)}' "
        f"src='data:image/png;base64,{data}'><figcaption>{_e(figure.caption)}</figcaption>"
        "</figure>"
    )


def _header(content: ReportContent) -> str:
    n_warn = len(content.warnings)
    meta = ""
    if content.meta:
        meta = _table([(_e(k), _e(v)) for k, v in content.meta], css="meta")
    return (
        f"<header><h1>{_e(content.title)}</h1>"
        f"<p>crystalseg run report, generated {_e(content.generated)}; "
        f"{n_warn} warning{'s' if n_warn != 1 else ''}</p>{meta}</header>"
    )


def _run_section(content: ReportContent) -> str:
    rows = []
    for label, text in content.run_rows:
        cell = _e(text)
        if label == "Store":
            cell = f"<code>{cell}</code>"
        elif label == "Pixel size" and text.startswith("unknown"):
            cell = f"<strong class='bad'>{cell}</strong>"
        rows.append((_e(label), cell))
    return _section("run", _table(rows))


def _warnings_section(warnings_: Sequence[ReportWarning]) -> str:
    if not warnings_:
        return _section("warnings", "<p class='ok'>No warnings: the checks found nothing odd.</p>")
    items = "".join(
        f"<li class='warning' data-code='{_e(w.code)}'>{_e(w.message)}</li>" for w in warnings_
    )
    return _section("warnings", f"<ul class='warnings'>{items}</ul>")


def _summary_section(content: ReportContent) -> str:
    table = content.summary
    heads = content.summary_heads
    if not heads:
        return _section("summary", "<p>The run has no frames.</p>")
    head = "".join(f"<th scope='col'>{_e(c)}<br><small>{_e(sub)}</small></th>" for c, sub in heads)
    body = []
    intervals = table.attrs.get("intervals", {})
    for variable, row in table.iterrows():
        units = unit_text(row["units"])
        label = row["quantity"] + ("" if units in ("1", "") else f" ({units})")
        cells = ""
        for c, _ in heads:
            bounds = interval_text(intervals.get(variable, {}).get(c))
            under = f"<br><small>95 %: {_e(bounds)}</small>" if bounds else ""
            cells += f"<td class='num'>{_e(number_text(row[c]))}{under}</td>"
        body.append(f"<tr><th scope='row'>{_e(label)}</th>{cells}</tr>")
    if not content.counted_any:
        note = "<p class='bad'>No particle was counted in any frame.</p>"
    else:
        note = f"<p class='note'>{_e(SUMMARY_NOTE.format(min_count=content.min_count))}</p>"
    table_html = (
        f"<table class='summary'><thead><tr><th scope='col'>quantity</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return _section("summary", table_html + note + _dvalues_html(content) + _counts_html(content))


def _dvalues_html(content: ReportContent) -> str:
    """D10/D50/D90 over time (and of pooled windows), with intervals where the run has them."""
    out = ""
    tables = [("dvalues", "", content.dvalues)]
    if content.window_dvalues:
        what = f", pooled windows of {content.window}"
        tables.append(("window-dvalues", what, content.window_dvalues))
    for table_id, what, (header, *rows) in tables:
        head = "".join(f"<th scope='col'>{_e(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td class='num'>{_e(v)}</td>" for v in row) + "</tr>" for row in rows
        )
        out += (
            f"<h3 id='{table_id}'>D-values over time ({_e(content.basis)} basis{_e(what)})</h3>"
            f"<table class='summary {table_id}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    return out


def count_label(column: str) -> str:
    """Header of a column of the count table: ``counted``, ``excluded: too small``."""
    return column if column in ("counted", "found") else "excluded: " + column.replace("_", " ")


def _counts_html(content: ReportContent) -> str:
    """Counted and excluded particles by reason: the summary's frames, the whole run, and
    (folded on screen, open in print) every frame; counted plus excluded is found."""
    counts = content.counts
    if counts is None:
        return ""
    columns = list(counts.columns)
    head = "".join(f"<th scope='col'>{_e(count_label(c))}</th>" for c in columns)

    def row(label: str, values: Any) -> str:
        cells = "".join(f"<td class='num'>{int(values[c]):d}</td>" for c in columns)
        return f"<tr><th scope='row'>{_e(label)}</th>{cells}</tr>"

    frames: Mapping[str, int] = content.summary.attrs["frames"]
    picked = [row(f"{k} (frame {f})", counts.loc[f]) for k, f in frames.items()]
    picked.append(row("whole run", counts.sum()))
    shown: pd.DataFrame = counts
    sampled = ""
    if len(counts) > COUNT_TABLE_FRAMES:
        keep = np.unique(np.linspace(0, len(counts) - 1, COUNT_TABLE_FRAMES).round().astype(int))
        shown = counts.iloc[keep]
        sampled = f" ({len(keep)} of {len(counts)} frames, evenly spaced)"
    per_frame = "".join(row(f"frame {f}", r) for f, r in shown.iterrows())
    table = (
        "<table class='summary counts'><thead><tr><th scope='col'>particles</th>"
        f"{head}</tr></thead>"
    )
    return (
        "<h3>Particles counted and excluded</h3>"
        f"{table}<tbody>{''.join(picked)}</tbody></table>"
        "<p class='note'>Every object the segmentation found is in the particle table: "
        "counted in the distributions or excluded with its reason.</p>"
        f"<details><summary>Every frame{_e(sampled)}</summary>{table}"
        f"<tbody>{per_frame}</tbody></table></details>"
    )


def _kinetics_section(content: ReportContent) -> str:
    if content.kinetics_html is None:
        body = (
            "<p>No kinetics yet: <code>crystalseg kinetics RUN</code> tracks the crystals "
            "across frames and adds growth and nucleation rates here.</p>"
        )
    else:
        figure = content.kinetics_figure
        body = content.kinetics_html + (figure_html(figure) if figure is not None else "")
    return _section("kinetics", body)


def _settings_section(content: ReportContent) -> str:
    """Every recorded setting of every stage, open: a printed report shows them all."""
    parts = []
    if content.sop:
        rows = [(f"<code>{_e(k)}</code>", _e(v)) for k, v in content.sop]
        parts.append(
            "<div class='stage'><h3 id='stage-report-sop'>report: standard operating "
            f"procedure</h3>{_table(rows)}</div>"
        )
    if not content.stages:
        parts.append("<p>No stage has recorded its settings.</p>")
    for stage in content.stages:
        ok = "ok" if stage.status == "finished" else "bad"
        head = (
            f"<h3 id='stage-{_e(stage.name)}'>{_e(stage.name)} "
            f"<small class='{ok}'>{_e(stage.status)}</small></h3>"
            f"<p class='note'>{_e(stage.when)}; crystalseg {_e(stage.crystalseg_version)}</p>"
        )
        table = _table([(_e(k), _e(v)) for k, v in stage.highlights]) if stage.highlights else ""
        every = _table([(f"<code>{_e(k)}</code>", _e(v)) for k, v in stage.everything])
        details = f"<details open><summary>all recorded settings</summary>{every}</details>"
        parts.append(f"<div class='stage'>{head}{table}{details}</div>")
    return _section("settings", "".join(parts))


def render_html(content: ReportContent) -> str:
    """The complete, self-contained HTML document of a report's content."""
    plots = "".join(figure_html(f) for f in content.plots)
    overlays = "".join(figure_html(f) for f in content.overlays) or "<p>No overlays.</p>"
    sections = [
        _run_section(content),
        _warnings_section(content.warnings),
        _summary_section(content),
        _kinetics_section(content),
        _section("plots", f"<div class='figures'>{plots}</div>"),
        _section(
            "overlays",
            "<p class='note'>Particle outlines drawn on the raw frames: check that the "
            "segmentation follows the crystals. Scale bar at the lower right of each "
            f"frame; times in {_e(content.time_unit)}.</p>" + overlays,
        ),
        _settings_section(content),
    ]
    nav = "".join(f"<a href='#{sid}'>{_e(SECTION_TITLES[sid])}</a>" for sid in SECTION_IDS)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='generator' content='crystalseg {_e(crystalseg_version())}'>"
        f"<title>{_e(content.title)}: crystalseg report</title><style>{_CSS}</style></head>"
        f"<body>{_header(content)}<nav>{nav}</nav><main>{''.join(sections)}</main></body>"
        "</html>\n"
    )


__all__ = [
    "COUNT_TABLE_FRAMES",
    "SECTION_IDS",
    "SECTION_TITLES",
    "SUMMARY_NOTE",
    "count_label",
    "figure_html",
    "render_html",
]
