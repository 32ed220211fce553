"""QC overlays: outlines on particle edges, colours from the particle table, frames, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from PIL import Image
from scipy import ndimage as ndi

from crystalseg.cli import cli
from crystalseg.errors import ConfigError, StageStateError
from crystalseg.measure import MeasureSettings, label_instances, measure_run
from crystalseg.measure.run import label_mask_frame
from crystalseg.store import create_run, read_table
from crystalseg.synth import SynthConfig, synthesize_run
from crystalseg.viz import overlay as overlay_module
from crystalseg.viz.overlay import (
    EXCLUDED_COLOR,
    KEPT_COLOR,
    SIZE_CMAP,
    montage,
    overlay_frame,
    overlay_image,
    parse_frames,
    resolve_frames,
    sample_frames,
    write_overlays,
)

KEPT = np.array([round(c * 255) for c in to_rgb(KEPT_COLOR)], dtype=np.uint8)
EXCLUDED = np.array([round(c * 255) for c in to_rgb(EXCLUDED_COLOR)], dtype=np.uint8)
CROSS = ndi.generate_binary_structure(2, 1)


def colored(rgb: np.ndarray, color: np.ndarray) -> np.ndarray:
    return np.all(rgb == color, axis=2)


def inner_edge(region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour outside it (the frame border does not count)."""
    return region & ~ndi.binary_erosion(region, CROSS, border_value=1)


def outline_pixels(rgb: np.ndarray) -> np.ndarray:
    """Every pixel that is not grey."""
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


# --------------------------------------------------------------------------- a run drawn by hand

H, W = 80, 100
PIXEL_UM = 2.0


def disc(cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


SHAPES = {
    "big": disc(30, 30, 8),  # kept
    "small": disc(55, 70, 4),  # kept
    "edge": np.zeros((H, W), bool),  # touches the right edge: excluded
    "speck": np.zeros((H, W), bool),  # 4 px < min_area_px: dropped before measuring
}
SHAPES["edge"][10:20, 88:] = True
SHAPES["speck"][70:72, 20:22] = True


@pytest.fixture(scope="module")
def drawn_run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    """3 frames: the shapes above twice, then an empty frame; measured with defaults."""
    path = tmp_path_factory.mktemp("drawn") / "drawn.zarr"
    n = 3
    writer = create_run(
        path,
        shape=(n, H, W),
        dtype="uint8",
        time_s=np.array([0.0, 30.0, 600.0]),
        pixel_size_um=PIXEL_UM,
        source={"test": "drawn"},
        frames_per_chunk=2,
    )
    foreground = np.zeros((H, W), bool)
    for region in SHAPES.values():
        foreground |= region
    frames = np.full((n, H, W), 200, np.uint8)
    frames[:2][:, foreground] = 60
    writer.write_frames(0, frames)
    writer.mark_done(0, n)
    writer.finish()
    masks = np.zeros((n, H, W), np.uint8)
    masks[:2][:, foreground] = 1
    store_mask(path, masks)
    measure_run(path, scheduler="synchronous")
    return path


def test_drawn_run_outlines_are_exactly_the_inner_edges(drawn_run: Path) -> None:
    rgb = overlay_image(drawn_run, 0)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    kept = inner_edge(SHAPES["big"]) | inner_edge(SHAPES["small"])
    excluded = inner_edge(SHAPES["edge"]) | SHAPES["speck"]  # a 2x2 speck is all edge
    np.testing.assert_array_equal(colored(rgb, KEPT), kept)
    np.testing.assert_array_equal(colored(rgb, EXCLUDED), excluded)
    np.testing.assert_array_equal(outline_pixels(rgb), kept | excluded)
    # The rest is the raw frame in grey, stretched between its percentiles: 60 -> 0, 200 -> 255.
    rest = ~(kept | excluded)
    foreground = np.logical_or.reduce(list(SHAPES.values()))
    assert np.all(rgb[rest & foreground] == 0)
    assert np.all(rgb[rest & ~foreground] == 255)


def test_drawn_run_size_colours_span_the_colour_map(drawn_run: Path) -> None:
    rgb = overlay_image(drawn_run, 1, color_by="size")
    table = read_table(drawn_run, "particles")
    kept = table[table["kept"]]
    # The run's kept sizes run from the small disc (bottom of the map) to the big one (top).
    assert kept["ecd"].min() == pytest.approx(2 * np.sqrt(SHAPES["small"].sum() / np.pi) * PIXEL_UM)
    for name, end in (("big", 1.0), ("small", 0.0)):
        expected = (np.asarray(SIZE_CMAP(end)[:3]) * 255 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(colored(rgb, expected), inner_edge(SHAPES[name]))
    np.testing.assert_array_equal(
        colored(rgb, EXCLUDED), inner_edge(SHAPES["edge"]) | SHAPES["speck"]
    )


def test_empty_frame_has_no_outlines(drawn_run: Path) -> None:
    rgb = overlay_image(drawn_run, -1)
    assert not outline_pixels(rgb).any()
    fig = overlay_frame(drawn_run, -1, color_by="status")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["kept: 0", "excluded: 0"]


def test_overlay_frame_title_legend_and_colour_bar(drawn_run: Path) -> None:
    fig = overlay_frame(drawn_run, 1, color_by="status")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert "frame 1" in ax.get_title() and "t = 30 s" in ax.get_title()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["kept: 2", "excluded: 2 (1 touches edge, 1 below min area)"]
    # Four outlines (two kept, two excluded) as vector contours.
    (lines,) = ax.collections
    assert len(lines.get_segments()) == 4

    fig = overlay_frame(drawn_run, 1, color_by="size")
    assert len(fig.axes) == 2  # the frame and its colour bar
    assert fig.axes[1].get_ylabel() == "ECD (µm), kept particles"
    assert fig.axes[1].get_ylim() == pytest.approx(
        sorted(read_table(drawn_run, "particles").query("kept")["ecd"].agg(["min", "max"]))
    )


def test_overlay_frame_draws_into_a_given_axes(drawn_run: Path) -> None:
    fig = Figure()
    ax: Axes = fig.add_subplot(1, 2, 2)
    assert overlay_frame(drawn_run, 0, color_by="status", ax=ax) is fig
    assert ax.get_title().endswith("frame 0 · t = 0 s") and len(ax.images) == 1


def test_montage_axes_and_titles(drawn_run: Path) -> None:
    fig = montage(drawn_run, n=9)  # only 3 frames: all of them
    assert [ax.get_title() for ax in fig.axes] == [
        "frame 0 · t = 0 s",
        "frame 1 · t = 30 s",
        "frame 2 · t = 10.0 min",
    ]
    assert len(montage(drawn_run, n=2).axes) == 2
    assert len(montage(drawn_run, frames=[-1, 0], color_by="size").axes) == 3  # + colour bar
    assert [ax.get_title() for ax in montage(drawn_run, frames=[-1, 0]).axes] == [
        "frame 2 · t = 10.0 min",
        "frame 0 · t = 0 s",
    ]


def test_write_overlays_files(drawn_run: Path, tmp_path: Path) -> None:
    paths = write_overlays(drawn_run, tmp_path / "out", frames=[0, -1], montage_n=2)
    assert [p.name for p in paths] == ["frame_00000.png", "frame_00002.png", "montage.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= W
    default = write_overlays(drawn_run, tmp_path / "default", montage_n=0)
    assert [p.name for p in default] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    with pytest.raises(ConfigError, match=r"valid indices are 0\.\.2"):
        write_overlays(drawn_run, tmp_path / "bad", frames=[3])


def test_changed_mask_is_refused(drawn_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "changed.zarr"
    shutil.copytree(drawn_run, path)
    mask = zarr.open_group(str(path), mode="r+")["mask"]
    frame = np.asarray(mask[0])
    frame[SHAPES["small"]] = 0  # the table still holds the small disc
    mask[0] = frame
    with pytest.raises(StageStateError, match=r"into 3 particles .* 4 rows.*--overwrite"):
        overlay_image(path, 0)
    overlay_image(path, 1)  # the other frames still match


def measured_frame(
    path: Path, store_mask, mask: np.ndarray, codes: tuple[str, ...], settings: MeasureSettings
) -> Path:
    """A one-frame run of ``mask`` (class ``codes``; dark crystals on a bright ground)
    with the mask stored as its segmentation, measured with ``settings``."""
    writer = create_run(
        path,
        shape=(1, H, W),
        dtype="uint8",
        time_s=np.zeros(1),
        pixel_size_um=None,
        source={"test": path.name},
    )
    writer.write_frames(0, np.where(mask > 0, 60, 200)[None].astype("u1"))
    writer.mark_done(0, 1)
    writer.finish()
    store_mask(path, mask[None], codes=codes)
    measure_run(path, settings=settings, scheduler="synchronous")
    return path


def test_classes_left_out_are_drawn_as_excluded(tmp_path: Path, store_mask) -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[SHAPES["big"]] = 1
    mask[SHAPES["small"]] = 2
    codes = ("background", "needle", "plate")
    settings = MeasureSettings(classes=("needle",))
    path = measured_frame(tmp_path / "classes.zarr", store_mask, mask, codes, settings)
    rgb = overlay_image(path, 0)
    np.testing.assert_array_equal(colored(rgb, KEPT), inner_edge(SHAPES["big"]))
    np.testing.assert_array_equal(colored(rgb, EXCLUDED), inner_edge(SHAPES["small"]))
    fig = overlay_frame(path, 0, color_by="status")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["kept: 1", "excluded: 1 (1 class not measured)"]
    fig = overlay_frame(path, 0, color_by="size")
    assert fig.axes[1].get_ylabel() == "ECD (px), kept particles"


# --------------------------------------------------------------------------- a boundary class

RIM_CODES = ("background", "needle", "plate", "boundary")
RIM = RIM_CODES.index("boundary")
SQUARE = np.ones((3, 3), bool)


def rimmed_mask(parts: dict[int, np.ndarray]) -> np.ndarray:
    """Class mask of the regions ``{class: region}`` with each crystal's rim drawn as a
    model draws it: two pixels wide, the crystal's inner edge and the ring just outside."""
    mask = np.zeros((H, W), np.uint8)
    rim = np.zeros((H, W), bool)
    for cls, region in parts.items():
        mask[region] = cls
        pieces, n = ndi.label(region, SQUARE)
        for piece in (pieces == i for i in range(1, n + 1)):
            rim |= inner_edge(piece) | (ndi.binary_dilation(piece, SQUARE) & ~piece)
    mask[rim] = RIM
    return mask


def test_trimmed_rim_is_not_drawn_as_excluded(tmp_path: Path, store_mask) -> None:
    """The outer rim band that the measurement trims off belongs to no particle: only the
    particle at the edge and the speck (a crystal drawn all rim, 9 px) are excluded."""
    speck = np.zeros((H, W), bool)
    speck[70, 20] = True
    crystals = SHAPES["big"] | SHAPES["small"] | SHAPES["edge"] | speck
    mask = rimmed_mask({RIM_CODES.index("needle"): crystals})
    speck_piece = ndi.binary_dilation(speck, SQUARE)
    assert np.all(mask[speck_piece] == RIM)
    settings = MeasureSettings()
    assert settings.trim_boundary and speck_piece.sum() < settings.min_area_px
    path = measured_frame(tmp_path / "rim.zarr", store_mask, mask, RIM_CODES, settings)
    labels = label_mask_frame(mask, settings=settings, codes=RIM_CODES)
    # The measurement trimmed the outer band of the big disc and of the edge particle (the
    # small disc's is over TRIM_MAX_FRACTION of it and stays): 2 unlabelled rim pieces.
    trimmed = (mask > 0) & (labels == 0) & ~speck_piece
    assert ndi.label(trimmed, SQUARE)[1] == 2 and np.all(mask[trimmed] == RIM)

    fig = overlay_frame(path, 0, color_by="status")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["kept: 2", "excluded: 2 (1 touches edge, 1 below min area)"]
    rgb = overlay_image(path, 0)
    edge_label = labels[SHAPES["edge"]].max()
    speck_label = labels[70, 20]  # in the table, excluded as too small
    assert speck_label > 0 and np.array_equal(labels == speck_label, speck_piece)
    np.testing.assert_array_equal(
        colored(rgb, KEPT),
        inner_edge((labels > 0) & (labels != edge_label) & (labels != speck_label)),
    )
    np.testing.assert_array_equal(
        colored(rgb, EXCLUDED), inner_edge(labels == edge_label) | inner_edge(speck_piece)
    )
    assert not outline_pixels(rgb)[trimmed].any()


def test_class_left_out_with_its_rim_is_one_excluded_particle(tmp_path: Path, store_mask) -> None:
    """A crystal of a class not measured is drawn as excluded, rim included, while the
    rim trimmed off the measured crystal is not."""
    mask = rimmed_mask(
        {RIM_CODES.index("needle"): SHAPES["big"], RIM_CODES.index("plate"): SHAPES["small"]}
    )
    settings = MeasureSettings(classes=("needle",))
    path = measured_frame(tmp_path / "rim_classes.zarr", store_mask, mask, RIM_CODES, settings)
    labels = label_mask_frame(mask, settings=settings, codes=RIM_CODES)
    assert labels.max() == 1 and np.any(ndi.binary_dilation(SHAPES["big"], SQUARE) & (labels == 0))

    fig = overlay_frame(path, 0, color_by="status")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["kept: 1", "excluded: 1 (1 class not measured)"]
    rgb = overlay_image(path, 0)
    np.testing.assert_array_equal(colored(rgb, KEPT), inner_edge(labels == 1))
    np.testing.assert_array_equal(
        colored(rgb, EXCLUDED), inner_edge(ndi.binary_dilation(SHAPES["small"], SQUARE))
    )


# --------------------------------------------------------------------------- a synthetic run


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory: pytest.TempPathFactory, store_mask) -> Path:
    path = tmp_path_factory.mktemp("synth") / "mixed.zarr"
    cfg = SynthConfig(frames=4, height=160, width=160, seed=7, scenario="crowded")
    synthesize_run(path, cfg, frames_per_chunk=2)
    store_mask(path, np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:]))
    measure_run(path, settings=MeasureSettings(min_area_px=12), scheduler="synchronous")
    return path


@pytest.mark.parametrize("color_by", ["status", "size"])
def test_synthetic_outlines_lie_on_particle_edges(synth_run: Path, color_by: str) -> None:
    """Every outline pixel is a particle pixel next to another label or the background,
    every kept particle is outlined, and each particle's colour follows its table row."""
    masks = zarr.open_group(str(synth_run), mode="r")["mask"]
    table = read_table(synth_run, "particles")
    settings = MeasureSettings(min_area_px=12)
    seen = {"edge": 0, "kept": 0}
    for frame in range(4):
        mask = np.asarray(masks[frame])
        labels = label_instances(mask, min_area_px=settings.min_area_px, keep_small=True)
        dropped, _ = ndi.label((mask > 0) & (labels == 0), structure=np.ones((3, 3)))
        every = np.where(dropped > 0, dropped + labels.max(), labels)
        differs = np.zeros(every.shape, bool)
        for axis in (0, 1):
            step = np.diff(every, axis=axis) != 0
            lead = [slice(None)] * 2
            lead[axis] = slice(0, -1)
            trail = [slice(None)] * 2
            trail[axis] = slice(1, None)
            differs[tuple(lead)] |= step
            differs[tuple(trail)] |= step
        rgb = overlay_image(synth_run, frame, color_by=color_by)
        outline = outline_pixels(rgb)
        assert outline.any()
        assert np.all(every[outline] > 0)
        assert np.all(differs[outline])

        rows = table[table["frame"] == frame]
        assert sorted(rows["label"]) == list(range(1, labels.max() + 1))
        for row in rows.itertuples():
            mine = outline & (labels == row.label)
            if row.kept:
                assert mine.any(), f"kept particle {row.label} of frame {frame} has no outline"
                assert not colored(rgb, EXCLUDED)[mine].any()
                if color_by == "status":
                    assert colored(rgb, KEPT)[mine].all()
                seen["kept"] += 1
            else:
                assert colored(rgb, EXCLUDED)[mine].all()
                seen["edge"] += row.excluded_reason == "edge"
    assert seen["kept"] >= 5 and seen["edge"] >= 3  # the run exercises both


# --------------------------------------------------------------------------- frames, errors


def test_resolve_and_parse_frames() -> None:
    assert resolve_frames([0, 50, -1], 60) == [0, 50, 59]
    assert resolve_frames([-60, 0, -1, 59], 60) == [0, 59]
    assert parse_frames(" 0, 50,-1 ") == (0, 50, -1)
    with pytest.raises(ConfigError, match=r"frame 60 is out of range.*0\.\.59.*-60\.\.-1"):
        resolve_frames([60], 60)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_frames([-61], 60)
    with pytest.raises(ConfigError, match="not an integer"):
        resolve_frames([1.5], 60)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"e\.g\. 0,50,-1"):
        parse_frames("first,last")
    assert sample_frames(100, 9) == [0, 12, 25, 37, 50, 62, 74, 87, 99]
    assert sample_frames(3, 9) == [0, 1, 2]


def test_unmeasured_and_unsegmented_runs_are_refused(tmp_path: Path, store_mask) -> None:
    path = tmp_path / "bare.zarr"
    writer = create_run(
        path,
        shape=(2, 16, 16),
        dtype="uint8",
        time_s=np.array([0.0, 1.0]),
        pixel_size_um=None,
        source={"test": "bare"},
    )
    writer.write_frames(0, np.zeros((2, 16, 16), np.uint8))
    writer.mark_done(0, 2)
    writer.finish()
    with pytest.raises(StageStateError, match=r"no mask.*crystalseg measure"):
        overlay_image(path, 0)
    store_mask(path, np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(StageStateError, match=r"not measured.*crystalseg measure"):
        montage(path)
    with pytest.raises(ConfigError, match="color_by"):
        overlay_frame(path, 0, color_by="area")  # type: ignore[arg-type]


def cli_run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_overlay(drawn_run: Path, tmp_path: Path) -> None:
    code, out = cli_run(
        "overlay", str(drawn_run), "--frames", "0,-1", "--montage", "2", "-o", str(tmp_path / "o")
    )
    assert code == 0, out
    assert f"3 overlay images written to {tmp_path / 'o'}" in out
    for name in ("frame_00000.png", "frame_00002.png", "montage.png"):
        assert (tmp_path / "o" / name).is_file() and name in out

    code, out = cli_run("overlay", str(drawn_run), "--frames", "5", "-o", str(tmp_path / "x"))
    assert_one_line_error(code, out, "frame 5 is out of range", "0..2")
    code, out = cli_run("overlay", str(drawn_run), "--frames", "a,b", "-o", str(tmp_path / "x"))
    assert_one_line_error(code, out, "e.g. --frames 0,50,-1")
    code, out = cli_run("overlay", str(tmp_path / "missing.zarr"))
    assert_one_line_error(code, out, "does not exist")


def test_cli_overlay_unmeasured(tmp_path: Path) -> None:
    path = tmp_path / "run.zarr"
    synthesize_run(path, SynthConfig(frames=2, height=32, width=32, seed=1, scenario="clear"))
    code, out = cli_run("overlay", str(path))
    assert_one_line_error(code, out, f"crystalseg measure {path}")


# --------------------------------------------------------------------------- figure layout


def _inside(inner: Bbox, outer: Bbox, tol: float = 0.5) -> bool:
    return (
        inner.x0 >= outer.x0 - tol
        and inner.y0 >= outer.y0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y1 <= outer.y1 + tol
    )


LONG_REASON = "touches the edge of the field of view, so its true size is unknown"


@pytest.mark.parametrize("color_by", ["status", "size"])
def test_frame_figure_shows_the_frame_full_size_with_all_text_inside(
    drawn_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, color_by: str
) -> None:
    """Saved at its own dpi, the frame fills at least W x H pixels (a whole-number zoom);
    title, legend (wrapped when long) and colour bar lie inside the figure, around the frame."""
    monkeypatch.setitem(overlay_module._REASON_TEXT, "edge", LONG_REASON)
    fig = overlay_frame(drawn_run, 1, color_by=color_by)  # type: ignore[arg-type]
    path = tmp_path / "frame.png"
    fig.savefig(path, dpi=fig.dpi)
    with Image.open(path) as im:
        assert im.size == (int(fig.bbox.width), int(fig.bbox.height))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    frame = ax.get_window_extent(renderer)
    zoom = frame.width / W
    assert zoom >= 1 and zoom == pytest.approx(round(zoom), abs=1e-6)
    assert frame.height == pytest.approx(H * zoom, abs=1e-6)
    legend = ax.get_legend().get_window_extent(renderer)
    title = ax.title.get_window_extent(renderer)
    assert _inside(legend, fig.bbox) and legend.y1 <= frame.y0 + 0.5
    assert _inside(title, fig.bbox) and title.y0 >= frame.y1 - 0.5
    if color_by == "size":
        bar = fig.axes[1].get_tightbbox(renderer)
        assert bar is not None and _inside(bar, fig.bbox) and bar.x0 >= frame.x1
    else:
        texts = [t.get_text().replace("\n", " ") for t in ax.get_legend().get_texts()]
        assert texts == ["kept: 2", f"excluded: 2 (1 {LONG_REASON}, 1 below min area)"]
        assert "\n" in ax.get_legend().get_texts()[1].get_text()  # wrapped, not cut
    # Little wasted space: the frame takes most of the figure.
    assert frame.width * frame.height >= 0.6 * fig.bbox.width * fig.bbox.height


def test_frame_figure_pixels_are_the_frame_pixels(tmp_path: Path, store_mask) -> None:
    """The saved frame is the raw frame repeated zoom x zoom: no resampling, no blur."""
    h, w = 37, 53
    path = tmp_path / "noise.zarr"
    writer = create_run(
        path,
        shape=(1, h, w),
        dtype="uint8",
        time_s=np.zeros(1),
        pixel_size_um=None,
        source={"test": "noise"},
    )
    writer.write_frames(0, np.random.default_rng(1).integers(0, 256, (1, h, w), dtype=np.uint8))
    writer.mark_done(0, 1)
    writer.finish()
    store_mask(path, np.zeros((1, h, w), np.uint8), fpc=1)
    measure_run(path, scheduler="synchronous")
    grey = overlay_image(path, 0)[..., 0]  # no particles: the grey frame itself
    fig = overlay_frame(path, 0, color_by="status")
    png = tmp_path / "noise.png"
    fig.savefig(png, dpi=fig.dpi)
    with Image.open(png) as im:
        saved = np.asarray(im.convert("L"))
    box = fig.axes[0].get_window_extent(fig.canvas.get_renderer())  # type: ignore[attr-defined]
    zoom = round(box.width / w)
    assert zoom == 10  # 53 px wide -> about 512 px
    top = saved.shape[0] - round(box.y1)
    crop = saved[top : top + h * zoom, round(box.x0) : round(box.x0) + w * zoom]
    expected = np.kron(grey, np.ones((zoom, zoom), np.uint8))
    inner = (slice(2, -2), slice(2, -2))  # the axes frame is drawn over the outermost pixels
    # Equal up to the grey colour map's rounding (one level); a shift by one pixel of noise
    # or any smoothing would differ by tens of levels.
    diff = np.abs(crop[inner].astype(int) - expected[inner].astype(int))
    assert diff.max() <= 1


def test_montage_legend_wraps_inside_the_figure(
    drawn_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(overlay_module._REASON_TEXT, "edge", LONG_REASON)
    fig = montage(drawn_run, frames=[1])  # one narrow panel, a long legend
    fig.savefig(tmp_path / "montage.png", dpi=fig.dpi)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    (legend,) = fig.legends
    assert _inside(legend.get_window_extent(renderer), fig.bbox)
    assert _inside(fig.axes[0].get_window_extent(renderer), fig.bbox)
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[1].replace("\n", " ") == f"excluded: 2 (1 {LONG_REASON}, 1 below min area)"


def test_montage_grid_follows_the_frame_shape() -> None:
    from crystalseg.viz.overlay import _montage_columns

    # Square frames: ceil(sqrt(n)) columns, as before.
    assert [_montage_columns(n, 1.0) for n in range(1, 11)] == [1, 2, 2, 2, 3, 3, 3, 3, 3, 4]
    assert _montage_columns(4, 0.3) == 4  # tall frames side by side
    assert _montage_columns(4, 3.0) == 1  # wide frames stacked
