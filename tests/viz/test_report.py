"""The HTML run report: sections, embedded images, warnings, escaping, CLI, a real browser."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from crystalseg.cli import cli
from crystalseg.dims import FRAME_DIMS, SIZE_BIN, TIME
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.measure import MeasureSettings, measure_run
from crystalseg.store import create_array, create_run, read_table
from crystalseg.viz.report import (
    SECTION_IDS,
    ReportSettings,
    find_warnings,
    frame_ranges,
    render_report,
    report_sha256,
    summary_table,
    write_report,
)
from crystalseg.viz.report_html import SECTION_TITLES

N_FRAMES = 6
EMPTY_FRAMES = (0, 1)
PIXEL_SIZE_UM = 2.0
SIZE = 96
#: Radius (px) of the whole disc in the middle of each non-empty frame.
RADII = {2: 6, 3: 8, 4: 10, 5: 12}
#: Figures of a report with default settings: 6 plots, the montage and the last frame.
N_FIGURES = 8


def _disc_frames(*, edge_disc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Frames (uint8) and class masks: empty frames first, then a growing disc (+ an edge disc)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rng = np.random.default_rng(0)
    images = np.full((N_FRAMES, SIZE, SIZE), 200, dtype=np.uint8)
    masks = np.zeros((N_FRAMES, SIZE, SIZE), dtype=np.uint8)
    for t, r in RADII.items():
        disc = (yy - 48) ** 2 + (xx - 40) ** 2 <= r**2
        small = (yy - 20) ** 2 + (xx - 75) ** 2 <= 4**2
        masks[t][disc | small] = 1
        if edge_disc:
            masks[t][(yy - 70) ** 2 + xx**2 <= 9**2] = 1
    images[masks == 1] = 60
    noise = rng.integers(-5, 6, size=images.shape)
    images = np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)
    return images, masks


def make_measured_run(
    path: Path,
    *,
    pixel_size_um: float | None = PIXEL_SIZE_UM,
    edge_disc: bool = True,
    description: str = "test discs",
    settings: MeasureSettings | None = None,
) -> Path:
    """A measured run of known discs, segmented by construction (no model needed)."""
    images, masks = _disc_frames(edge_disc=edge_disc)
    writer = create_run(
        path,
        shape=images.shape,
        dtype=np.uint8,
        time_s=np.arange(N_FRAMES) * 30.0,
        pixel_size_um=pixel_size_um,
        source={"description": description},
        frames_per_chunk=3,
    )
    writer.write_frames(0, images)
    writer.mark_done(0, N_FRAMES)
    writer.finish()
    mask = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=masks.shape,
        dtype=np.uint8,
        chunks=(3, SIZE, SIZE),
        attrs={"codes": ["background", "crystal"], "flag_meanings": "background crystal"},
    )
    mask[:] = masks
    settings = MeasureSettings(min_count=1) if settings is None else settings
    measure_run(path, settings=settings, scheduler="synchronous")
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_measured_run(
        tmp_path_factory.mktemp("report") / "discs.zarr",
        description="discs <b>&amp; 'quotes'</b> <script>alert(1)</script>",
    )


#: Batch-record fields of the module's report; markup in a value must come out as text.
META = {
    "operator": "J. Doe <qa> & co",
    "sample": "API-7, lot 3",
    "vessel": "R-12",
    "batch": "B-2291",
    "instrument": "EasyViewer 100",
}


#: The SOP file record of the module's report (as ``report --config`` passes it).
SOP = {"file": "sop-7.toml", "sha256": "ab" * 32, "content": {"report": {"basis": "number"}}}


@pytest.fixture(scope="module")
def written(measured: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The module's report written once, as HTML and PDF, with batch-record fields."""
    out = tmp_path_factory.mktemp("written") / "discs_report.html"
    settings = ReportSettings(sop=SOP)
    return write_report(measured, out, settings=settings, meta=META, pdf=True)


@pytest.fixture(scope="module")
def report(written: tuple[Path, list]) -> tuple[str, list]:
    return written[0].read_text(encoding="utf-8"), written[1]


class _Collector(HTMLParser):
    """Checks nesting of every non-void element and collects ids, images and references."""

    VOID = frozenset({"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[str] = []
        self.ids: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.references: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.warning_codes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "section":
            self.sections.append(str(a.get("id")))
        if tag == "img":
            self.images.append(a)
        if tag == "li" and a.get("data-code"):
            self.warning_codes.append(str(a["data-code"]))
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.references.append(str(a[key]))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


# --------------------------------------------------------------------------- the document


def test_report_holds_every_section_in_order(report: tuple[str, list]) -> None:
    parsed = _parse(report[0])
    assert parsed.sections == list(SECTION_IDS)
    assert len(parsed.ids) == len(set(parsed.ids)), "ids must be unique"
    # the navigation links every section
    assert [r for r in parsed.references if r.startswith("#")] == [f"#{s}" for s in SECTION_IDS]


def test_report_is_well_formed_and_self_contained(report: tuple[str, list]) -> None:
    text = report[0]
    assert text.startswith("<!DOCTYPE html>")
    parsed = _parse(text)
    assert parsed.errors == []
    assert parsed.stack == []
    assert "script" not in parsed.tags and "link" not in parsed.tags
    for ref in parsed.references:
        assert ref.startswith(("#", "data:image/png;base64,")), ref[:60]
    assert "url(" not in text and "@import" not in text
    assert not re.search(r"(src|href)\s*=\s*['\"]?https?:", text)


def test_embedded_images_decode_as_png(report: tuple[str, list]) -> None:
    parsed = _parse(report[0])
    assert len(parsed.images) == N_FIGURES
    for img in parsed.images:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            assert im.width > 200 and im.height > 150
            # not a blank canvas: a figure has ink
            assert np.asarray(im.convert("L")).std() > 5
        assert img["alt"]


def test_figures_sit_in_their_sections(report: tuple[str, list]) -> None:
    text = report[0]
    plots = text[text.index("<section id='plots'>") : text.index("<section id='overlays'>")]
    overlays = text[text.index("<section id='overlays'>") : text.index("<section id='settings'>")]
    assert plots.count("<img") == 6
    for fig_id in ("fig-psd-heatmap-number", "fig-psd-heatmap-volume", "fig-statistics"):
        assert f"id='{fig_id}'" in plots
    assert overlays.count("<img") == 2
    assert f"id='fig-overlay-{N_FRAMES - 1}'" in overlays and "id='fig-montage'" in overlays


def _embedded(text: str, fig_id: str) -> tuple[str, Image.Image]:
    """The class attribute and the decoded PNG of the figure ``fig_id`` of a report."""
    found = re.search(
        rf"<figure id='{fig_id}'( class='\w+')?><img alt='[^']*' "
        r"src='data:image/png;base64,([^']+)'>",
        text,
    )
    assert found is not None, fig_id
    return found.group(1) or "", Image.open(io.BytesIO(base64.b64decode(found.group(2))))


def test_frame_overlay_is_embedded_full_size(report: tuple[str, list], measured: Path) -> None:
    """The frame overlay keeps its own pixel size (frame >= 1:1) and is never scaled down."""
    from crystalseg.viz.overlay import overlay_frame

    css, image = _embedded(report[0], f"fig-overlay-{N_FRAMES - 1}")
    fig = overlay_frame(measured, -1, color_by="status")
    frame = fig.axes[0].get_window_extent(fig.canvas.get_renderer())  # type: ignore[attr-defined]
    assert frame.width >= SIZE and frame.height >= SIZE
    assert image.size == (int(fig.bbox.width), int(fig.bbox.height))
    assert css == " class='native'"
    assert "figure.native img{max-width:none}" in report[0]
    # The plots and the montage are trimmed and scaled to the page as before.
    css, image = _embedded(report[0], "fig-montage")
    assert css == "" and image.width < 1400


def test_text_from_the_store_is_escaped(report: tuple[str, list]) -> None:
    text = report[0]
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&amp;amp;" in text  # the literal "&amp;" of the description, escaped once more
    assert "discs <b>&amp; 'quotes'</b> <script>alert(1)</script>" in "".join(_parse(text).text)


def test_run_section_states_calibration(report: tuple[str, list]) -> None:
    text = report[0]
    run = text[text.index("<section id='run'>") : text.index("<section id='warnings'>")]
    assert (
        f"{PIXEL_SIZE_UM:g} µm (field {SIZE * PIXEL_SIZE_UM:.0f} × {SIZE * PIXEL_SIZE_UM:.0f}"
        in run
    )
    assert f"{SIZE} × {SIZE} px" in run
    assert f"<td>{N_FRAMES}</td>" in run
    # 5 intervals of 30 s: a run of 150 s counts in seconds, everywhere
    assert "150 s (0 s to 150 s), one frame every 30 s" in run


def test_settings_section_lists_each_stage(report: tuple[str, list]) -> None:
    text = report[0]
    settings = text[text.index("<section id='settings'>") :]
    assert "id='stage-import'" in settings and "id='stage-measure'" in settings
    assert "<th scope='row'>edge</th><td>exclude</td>" in settings
    assert "<th scope='row'>min_area_px</th><td>10</td>" in settings


# --------------------------------------------------------------------------- numbers


def test_summary_table_reads_the_psd_at_start_middle_end(measured: Path) -> None:
    psd = xr.open_zarr(measured, group="psd").load()
    table = summary_table(psd)
    first, last = min(RADII), max(RADII)
    assert table.attrs["frames"] == {"start": first, "middle": (first + last) // 2, "end": last}
    assert table.attrs["times_s"]["end"] == pytest.approx(30.0 * last)
    particles = read_table(measured, "particles")
    for column, frame in table.attrs["frames"].items():
        kept = particles[(particles["frame"] == frame) & particles["kept"]]
        # two whole discs a frame (the edge disc is excluded)
        assert table.loc["count_kept", column] == 2 == len(kept)
        assert table.loc["count_detected", column] == 3
        a, b = sorted(kept["ecd"])
        # quantiles interpolate the cumulative distribution through (F(a), a) and (1, b)
        assert table.loc["d50_number", column] == pytest.approx(a)
        assert table.loc["d90_number", column] == pytest.approx(a + (b - a) * 0.4 / 0.5)
        share = a**3 / (a**3 + b**3)
        assert table.loc["d90_volume", column] == pytest.approx(
            a + (b - a) * (0.9 - share) / (1 - share)
        )
        # the big disc's ECD is close to its true diameter 2 r (in um)
        assert b == pytest.approx(2 * RADII[frame] * PIXEL_SIZE_UM, rel=0.08)
    assert table.loc["d50_number", "units"] == "um"


def test_summary_section_shows_table_values(measured: Path, report: tuple[str, list]) -> None:
    psd = xr.open_zarr(measured, group="psd").load()
    end = max(RADII)
    value = f"{float(psd['d90_volume'].values[end]):.3g}"
    summary = report[0][report[0].index("<section id='summary'>") :]
    summary = summary[: summary.index("</section>")]
    assert f"<td class='num'>{value}<" in summary
    assert "D50, number (µm)" in summary


# --------------------------------------------------------------------------- warnings


def test_empty_frames_and_edge_fraction_are_warned(report: tuple[str, list]) -> None:
    text, problems = report
    by_code = {p.code: p for p in problems}
    assert by_code["empty_frames"].frames == EMPTY_FRAMES
    assert "2 of 6 frames have no particles" in by_code["empty_frames"].message
    assert "frames 0-1" in by_code["empty_frames"].message
    # one of the three particles of each frame touches the edge: 33 % > 25 %
    assert "33% of the particles found touch the frame edge" in by_code["edge_fraction"].message
    assert "no_pixel_size" not in by_code
    codes = _parse(text).warning_codes
    assert sorted(codes) == sorted(p.code for p in problems)


def test_run_without_pixel_size_warns_and_reports_px(tmp_path: Path) -> None:
    run = make_measured_run(tmp_path / "px.zarr", pixel_size_um=None, edge_disc=False)
    out, problems = write_report(run, tmp_path / "px.html", settings=ReportSettings(montage_n=0))
    codes = [p.code for p in problems]
    assert "no_pixel_size" in codes and "edge_fraction" not in codes
    text = out.read_text(encoding="utf-8")
    assert "D50, number (px)" in text
    assert "<strong class='bad'>unknown: sizes are in px" in text
    assert len(_parse(text).images) == 7  # no montage


def _psd(**variables: np.ndarray) -> xr.Dataset:
    n = len(next(iter(variables.values())))
    ds = xr.Dataset(
        {k: ((TIME,), np.asarray(v)) for k, v in variables.items()},
        coords={TIME: np.arange(n) * 10.0, SIZE_BIN: [1.0, 2.0]},
    )
    ds.attrs.update({"pixel_size_um": 1.0, "edge_treatment": "exclude"})
    return ds


def test_find_warnings_on_a_clean_run_is_empty() -> None:
    psd = _psd(count_detected=[4, 5, 6], count_kept=[4, 5, 6], count_edge=[0, 1, 0])
    assert find_warnings(psd, None) == []


def test_edge_fraction_threshold() -> None:
    psd = _psd(count_detected=[10, 10], count_kept=[7, 8], count_edge=[3, 2])  # 25 %
    assert find_warnings(psd, None) == []
    codes = [
        w.code for w in find_warnings(psd, None, settings=ReportSettings(edge_fraction_warning=0.2))
    ]
    assert codes == ["edge_fraction"]


def test_frames_with_only_excluded_particles_are_warned() -> None:
    psd = _psd(count_detected=[3, 2, 4], count_kept=[3, 0, 4], count_edge=[0, 0, 0])
    (warning,) = find_warnings(psd, None)
    assert warning.code == "empty_frames" and warning.frames == (1,)
    assert "none counted" in warning.message


def test_low_focus_frames_are_found_from_particle_sharpness() -> None:
    n = 6
    psd = _psd(count_detected=[8] * n, count_kept=[8] * n, count_edge=[0] * n)
    sharp = {f: 1.0 for f in range(n)}
    sharp[4] = 0.3
    sharp[5] = 0.6  # above half the run's median: not blurred enough to warn
    rows = [
        {"frame": f, "sharpness": sharp[f] * (1 + 0.01 * i), "excluded_reason": ""}
        for f in range(n)
        for i in range(8)
    ]
    (warning,) = find_warnings(psd, pd.DataFrame(rows))
    assert warning.code == "low_focus" and warning.frames == (4,)
    # frames with too few particles are not judged
    few = pd.DataFrame([r for r in rows if r["frame"] != 4 or r["sharpness"] < 0.302])
    assert find_warnings(psd, few) == []


def test_many_low_confidence_exclusions_are_warned() -> None:
    psd = _psd(count_detected=[8, 8], count_kept=[5, 6], count_edge=[0, 0])
    reasons = ["low_confidence"] * 5 + [""] * 11  # 31 % of the detections
    particles = pd.DataFrame({"frame": [0] * 8 + [1] * 8, "excluded_reason": reasons})
    (warning,) = find_warnings(psd, particles)
    assert warning.code == "low_confidence_excluded" and "31%" in warning.message
    assert "crystalseg train" in warning.message
    fewer = particles.assign(excluded_reason=["low_confidence"] * 3 + [""] * 13)
    assert find_warnings(psd, fewer) == []


def test_unfinished_stage_and_outside_bins_are_warned() -> None:
    psd = _psd(
        count_detected=[5, 5],
        count_kept=[5, 5],
        count_edge=[0, 0],
        fraction_outside_number=[0.0, 0.2],
    )
    stages = {"segment": {"status": "running", "frames_done": 3, "frames_total": 8}}
    problems = find_warnings(psd, None, stages=stages)
    assert [p.code for p in problems] == ["unfinished_stage", "outside_bins"]
    assert "(3 of 8 frames)" in problems[0].message
    assert problems[1].frames == (1,) and "20%" in problems[1].message


@pytest.mark.parametrize(
    ("frames", "text"),
    [([], ""), ([3], "3"), ([0, 1, 2, 5, 7, 8], "0-2, 5, 7-8"), ([4, 2, 3, 3], "2-4")],
)
def test_frame_ranges(frames: list[int], text: str) -> None:
    assert frame_ranges(frames) == text


@given(st.sets(st.integers(0, 300), max_size=40))
def test_frame_ranges_round_trip(frames: set[int]) -> None:
    back: set[int] = set()
    for part in filter(None, frame_ranges(frames).split(", ")):
        lo, _, hi = part.partition("-")
        back.update(range(int(lo), int(hi or lo) + 1))
    assert back == frames


@pytest.mark.parametrize(
    "kwargs",
    [
        {"basis": "mass"},
        {"color_by": "area"},
        {"montage_n": -1},
        {"overlay_frames": (0, "last")},
        {"edge_fraction_warning": 1.5},
        {"dpi": 5},
    ],
)
def test_report_settings_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ReportSettings(**kwargs)


def test_unmeasured_run_is_an_error(tmp_path: Path) -> None:
    images, _ = _disc_frames(edge_disc=False)
    writer = create_run(
        tmp_path / "raw.zarr",
        shape=images.shape,
        dtype=np.uint8,
        time_s=np.arange(N_FRAMES, dtype=float),
        pixel_size_um=1.0,
        source={},
    )
    writer.write_frames(0, images)
    writer.mark_done(0, N_FRAMES)
    writer.finish()
    with pytest.raises(StageStateError, match="crystalseg measure"):
        render_report(tmp_path / "raw.zarr")


# --------------------------------------------------------------------------- CLI


def test_cli_report_writes_the_files_and_lists_warnings(measured: Path, tmp_path: Path) -> None:
    """HTML and PDF with the batch-record fields, the sha256 of each printed."""
    out = tmp_path / "sub" / "r.html"
    args = ["-q", "report", str(measured), "-o", str(out), "--frames", "2,-1", "--montage", "0"]
    args += ["--pdf", "--meta", "sample=API-7\\, lot 3,batch=B-2291", "--meta", "operator=QA 1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    pdf = out.with_suffix(".pdf")
    assert result.output.splitlines()[:4] == [
        f"report written to {out} (2 warnings)",
        f"PDF written to {pdf}",
        f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}  {out}",
        f"sha256 {hashlib.sha256(pdf.read_bytes()).hexdigest()}  {pdf}",
    ]
    assert "warning: 2 of 6 frames have no particles" in result.output
    text = out.read_text(encoding="utf-8")
    parsed = _parse(text)
    assert {"fig-overlay-2", "fig-overlay-5"} <= set(parsed.ids)
    assert "fig-montage" not in parsed.ids
    header = text.split("</header>")[0]
    assert "<td>API-7, lot 3</td>" in header and "<td>QA 1</td>" in header


def test_cli_report_errors_are_one_line(measured: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "report", str(measured), "--frames", "0,last"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --frames '0,last' is not a comma-separated list of frame indices or ranges; "
        "e.g. --frames 0,50,-1 or --frames 0-9,-1"
    ]
    result = CliRunner().invoke(cli, ["-q", "report", str(measured), "--frames", "0,6"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: overlay frame 6 is outside the run's 6 frames; give 0..5 (or -6..-1 from the end)\n"
    )
    result = CliRunner().invoke(cli, ["-q", "report", str(tmp_path / "missing.zarr")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: run store") and len(result.output.splitlines()) == 1


def test_cli_default_output_is_beside_the_run(measured: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "report", str(measured), "--montage", "0"])
    assert result.exit_code == 0, result.output
    assert (measured.parent / "discs_report.html").is_file()


# --------------------------------------------------------------------------- a real browser

_CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.images = imgs.length;
  document.body.dataset.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.sections = [...document.querySelectorAll('section')].map(s =>
    s.id + ':' + Math.round(s.getBoundingClientRect().height)).join(',');
});
</script></body>"""


@pytest.mark.skipif(_CHROMIUM is None, reason="needs chromium on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: tuple[str, list], tmp_path: Path) -> None:
    """Chromium lays out every section and decodes every embedded image.

    The probe script is added to a copy for the test only; the report has no script.
    """
    probed = tmp_path / "probed.html"
    probed.write_text(report[0].replace("</body>", _PROBE), encoding="utf-8")
    base = [str(_CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert int(attrs["images"]) == N_FIGURES
    assert int(attrs["decoded"]) == N_FIGURES
    heights = dict(item.split(":") for item in attrs["sections"].split(","))
    assert list(heights) == list(SECTION_IDS)
    assert all(int(h) > 40 for h in heights.values()), heights

    shot = tmp_path / "shot.png"
    page = tmp_path / "report.html"
    page.write_text(report[0], encoding="utf-8")
    subprocess.run(
        [*base, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    with Image.open(shot) as im:
        grey = np.asarray(im.convert("L"))
    assert grey.shape == (2400, 1280)
    assert grey[:60].mean() < 120  # the dark header bar is drawn
    assert (grey < 128).mean() > 0.02  # text and figures, not a blank page


def test_report_of_frames_below_the_minimum_count(tmp_path: Path) -> None:
    """Frames of one counted disc under a minimum count of 4: no D-value in the summary, a
    warning naming the window, and counted + excluded = found in the count table."""
    settings = MeasureSettings(min_area_px=60, min_count=4)  # the small disc is too small
    run = make_measured_run(tmp_path / "few.zarr", settings=settings)
    text, problems = render_report(run, settings=ReportSettings(montage_n=0))
    (warning,) = [p for p in problems if p.code == "below_min_count"]
    assert "--window 120s" in warning.message  # 4 / 1 per frame = 4 frames of 30 s
    assert warning.frames == tuple(RADII)
    summary = text[text.index("<section id='summary'>") :]
    summary = summary[: summary.index("</section>")]
    d50_row = summary[summary.index("D50, number") :]
    d50_row = d50_row[: d50_row.index("</tr>")]
    assert "<td class='num'>–</td>" in d50_row  # no number that looks exact
    whole = summary[summary.index("whole run") :]
    cells = [
        int(c) for c in re.findall(r"<td class='num'>(\d+)</td>", whole[: whole.index("</tr>")])
    ]
    counted, *excluded, found = cells
    assert counted + sum(excluded) == found and sum(excluded) > 0
    assert "excluded: too small" in summary and "excluded: edge" in summary


def test_summary_table_shows_the_interval_of_d50(report: tuple[str, list]) -> None:
    summary = report[0][report[0].index("<section id='summary'>") :]
    assert "95 %:" in summary[: summary.index("</section>")]


# --------------------------------------------------------------------------- batch record


def _section_of(text: str, section: str) -> str:
    part = text[text.index(f"<section id='{section}'>") :]
    return part[: part.index("</section>")]


def test_header_holds_the_batch_record_fields_escaped(report: tuple[str, list]) -> None:
    text = report[0]
    header = text[text.index("<header>") : text.index("</header>")]
    rows = re.findall(r"<tr><th scope='row'>([^<]*)</th><td>([^<]*)</td></tr>", header)
    # the four standard fields first, in their order, then the others as given
    assert [k for k, _ in rows] == ["sample", "batch", "operator", "instrument", "vessel"]
    assert dict(rows)["operator"] == "J. Doe &lt;qa&gt; &amp; co"
    assert "J. Doe <qa> & co" in "".join(_parse(text).text)


def test_settings_are_all_visible_in_print(report: tuple[str, list]) -> None:
    """Every stage's recorded settings are laid out open, and print hides no settings."""
    text = report[0]
    settings = _section_of(text, "settings")
    assert settings.count("<details") == settings.count("<details open>") >= 2
    assert "<code>settings.min_area_px</code>" in settings or "min_area_px" in settings
    css = text[text.index("<style>") : text.index("</style>")]
    printed = css[css.index("@media print") :]
    assert "details{display:none}" not in printed.replace(" ", "")
    assert "details::details-content{content-visibility:visible;display:block}" in printed


def test_one_time_unit_throughout(report: tuple[str, list]) -> None:
    """A run of 150 s: every time the report prints is in s (no 'min' beside 's')."""
    text = " ".join(_parse(report[0]).text)
    units = set(re.findall(r"t = [0-9.]+ (s|min|h)\b", text))
    assert units == {"s"}
    assert "t (s)" in text and "t (min)" not in text


def _dvalue_rows(text: str) -> list[dict[str, str]]:
    """The D-values table of a report: one {column heading: cell} per frame shown."""
    table = text[text.index("<table class='summary dvalues'>") :]
    table = table[: table.index("</table>")]
    head = re.findall(r"<th scope='col'>([^<]*)</th>", table)
    return [
        dict(zip(head, re.findall(r"<td class='num'>([^<]*)</td>", row), strict=True))
        for row in table.split("<tr>")[2:]
    ]


def test_dvalue_table_over_time(report: tuple[str, list], measured: Path) -> None:
    psd = xr.open_zarr(measured, group="psd").load()
    rows = _dvalue_rows(report[0])
    assert [r["frame"] for r in rows] == [str(f) for f in range(N_FRAMES)]
    for frame, row in enumerate(rows):
        d50 = float(psd["d50_number"].values[frame])
        assert row["D50 (µm)"] == (f"{d50:.3g}" if np.isfinite(d50) else "–")
        assert row["t (s)"] == f"{30 * frame}"
        lower, upper = (float(psd[f"d50_number_{b}"].values[frame]) for b in ("lower", "upper"))
        if np.isfinite(lower) and np.isfinite(upper):
            assert row["D50 95 %"] == f"{lower:.3g} to {upper:.3g}"
    assert rows[0]["n counted"] == "0" and rows[-1]["n counted"] == "2"


def test_pdf_beside_the_html_holds_the_tables_and_fields(
    written: tuple[Path, list], report: tuple[str, list]
) -> None:
    from pypdf import PdfReader

    pdf = written[0].with_suffix(".pdf")
    reader = PdfReader(pdf)
    assert len(reader.pages) >= 3
    text = "\n".join(page.extract_text() for page in reader.pages)
    for value in META.values():
        assert value in text
    # the D50 values of the D-values table, as the HTML prints them
    d50 = [row["D50 (µm)"] for row in _dvalue_rows(report[0]) if row["D50 (µm)"] != "–"]
    assert len(d50) == len(RADII)
    lines = [line.split() for line in text.splitlines()]
    for frame, value in zip(RADII, d50, strict=True):
        assert any(line[:2] == [str(frame), str(30 * frame)] and value in line for line in lines)
    # the summary's D50 at the end, and every section title, in order
    summary = _section_of(report[0], "summary")
    end_d50 = re.findall(r"D50, number \(µm\)</th>(.*?)</tr>", summary)[0]
    for cell in re.findall(r"<td class='num'>([^<]*)<", end_d50):
        assert cell in text
    positions = [text.index(title) for title in SECTION_TITLES.values()]
    assert positions == sorted(positions)
    assert reader.metadata is not None and "crystalseg report" in str(reader.metadata.title)
    assert "report.basis number" in text and SOP["sha256"] in text  # the SOP file, as in HTML
    settings = _section_of(report[0], "settings")
    assert "<code>report.basis</code></th><td>number</td>" in settings


def test_each_file_has_its_sha256_beside_it(written: tuple[Path, list]) -> None:
    html = written[0]
    for path in (html, html.with_suffix(".pdf")):
        line = path.with_name(path.name + ".sha256").read_text(encoding="utf-8")
        assert line == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
        assert report_sha256(path) == line.split()[0]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("sample", "--meta item 'sample' has no '='; give key=value, e.g. batch=B-2291"),
        ("batch=B1,batch=B2", "--meta 'batch' is given twice; give each field once"),
    ],
)
def test_cli_report_refuses_bad_meta(measured: Path, meta: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["-q", "report", str(measured), "--meta", meta])
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
