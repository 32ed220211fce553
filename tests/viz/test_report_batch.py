"""The report's batch-record parts alone: fields, time unit, scale bar, model name, PDF."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure

from crystalseg.errors import ConfigError
from crystalseg.viz.report_figures import finish_overlay, retime_titles
from crystalseg.viz.report_meta import (
    check_meta,
    format_time_in,
    model_identity,
    parse_meta,
    time_unit_for,
)
from crystalseg.viz.scalebar import SCALE_BAR_GID

BUNDLED = Path(__file__).resolve().parents[2] / "crystalseg" / "models" / "default"

# --------------------------------------------------------------------------- fields


def test_parse_meta_reads_lists_escapes_and_repeats() -> None:
    fields = parse_meta(
        ["sample=API-7\\, lot 3, batch = B-2291", "operator=J. Doe,note=a=b \\\\ c"]
    )
    assert fields == {
        "sample": "API-7, lot 3",
        "batch": "B-2291",
        "operator": "J. Doe",
        "note": "a=b \\ c",
    }
    assert parse_meta("") == {}


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30
).filter(lambda s: s.strip() == s and s.isprintable())


@given(st.dictionaries(_text.filter(lambda k: not set(k) & set("=,\\")), _text, max_size=5))
def test_parse_meta_round_trips_escaped_values(fields: dict[str, str]) -> None:
    text = ",".join(
        f"{k}={v.replace(chr(92), chr(92) * 2).replace(',', chr(92) + ',')}"
        for k, v in fields.items()
    )
    assert parse_meta(text) == fields


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sample", "has no '='"),
        ("=S1", "empty or not text"),
        ("sample=", "empty value"),
        ("sample=a,sample=b", "given twice"),
        ("sample=a\\b", "escapes only"),
        ("sample=a\tb", "printable"),
    ],
)
def test_parse_meta_refuses(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_meta(text)


def test_check_meta_orders_standard_fields_first() -> None:
    pairs = check_meta({"vessel": "R1", "instrument": "I", "batch": 7, "sample": "S"})
    assert pairs == (("sample", "S"), ("batch", "7"), ("instrument", "I"), ("vessel", "R1"))
    with pytest.raises(ConfigError, match="not a field name"):
        check_meta({"a=b": "x"})
    with pytest.raises(ConfigError, match="give text"):
        check_meta({"batch": ["B1"]})
    with pytest.raises(ConfigError, match="must be a mapping"):
        check_meta(["batch=B1"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("span", "unit"), [(0, "s"), (600, "s"), (601, "min"), (3 * 3600, "min"), (3 * 3600 + 1, "h")]
)
def test_time_unit_follows_the_run_span(span: float, unit: str) -> None:
    assert time_unit_for(np.array([0.0, span / 2, span])) == unit


def test_time_unit_matches_the_figures_axes() -> None:
    """The report's unit is the unit the plots' time axes use, for short and long runs."""
    import xarray as xr

    from crystalseg.dims import SIZE_BIN, TIME
    from crystalseg.viz.plots import plot_statistics

    for step in (30.0, 300.0, 3000.0):
        t = np.arange(6) * step
        psd = xr.Dataset(
            {
                name: ((TIME,), np.linspace(10, 20, 6), {"units": "um"})
                for name in ("d10_number", "d50_number", "d90_number")
            }
            | {"count_kept": ((TIME,), np.full(6, 50))},
            coords={TIME: t, SIZE_BIN: [1.0, 2.0]},
            attrs={"size_units": "um"},
        )
        fig = plot_statistics(psd, basis="number")
        assert f"({time_unit_for(t)})" in fig.axes[0].get_xlabel()


def test_format_time_in() -> None:
    assert format_time_in(150, "s") == "150 s"
    assert format_time_in(150, "min") == "2.5 min"
    assert format_time_in(6000, "min") == "100 min"
    assert format_time_in(11100, "h") == "3.08 h"
    assert format_time_in(0, "h") == "0 h"
    assert format_time_in(float("nan"), "s") == "?"


def test_frame_titles_take_the_report_unit() -> None:
    """The montage's 't = 100 s' and 't = 2.5 min' become one unit."""
    fig = Figure()
    a, b, c = fig.subplots(1, 3)
    a.set_title("frame 1 · t = 100 s")
    b.set_title("run.zarr: frame 2 · t = 2.5 min")
    c.set_title("a colour bar")
    retime_titles(fig, np.array([0.0, 100.0, 150.0]), "min")
    assert a.get_title() == "frame 1 · t = 1.67 min"
    assert b.get_title() == "run.zarr: frame 2 · t = 2.5 min"
    assert c.get_title() == "a colour bar"


def test_dvalue_table_of_pooled_windows() -> None:
    """One row per window: its frames, middle time in the report's unit, pooled count,
    D-values and their intervals as the report prints them."""
    import xarray as xr

    from crystalseg.dims import TIME
    from crystalseg.viz.report_data import dvalue_table

    d50 = np.array([12.345, np.nan])
    windows = xr.Dataset(
        {
            "d10_number": ((TIME,), [8.0, np.nan]),
            "d50_number": ((TIME,), d50),
            "d50_number_lower": ((TIME,), [11.0, np.nan]),
            "d50_number_upper": ((TIME,), [13.56, np.nan]),
            "d90_number": ((TIME,), [20.0, np.nan]),
            "count_kept": ((TIME,), [42, 3]),
        },
        coords={
            TIME: [45.0, 105.0],
            "frame_start": ((TIME,), [0, 4]),
            "frame_stop": ((TIME,), [4, 5]),
        },
        attrs={"size_units": "um"},
    )
    header, first, second = dvalue_table(windows, basis="number", unit="min")
    assert header == [
        "frames",
        "t (min)",
        "n counted",
        "D10 (µm)",
        "D50 (µm)",
        "D50 95 %",
        "D90 (µm)",
    ]
    assert first == ["0-3", "0.75", "42", "8", "12.3", "11 to 13.6", "20"]
    assert second == ["4", "1.75", "3", "–", "–", "–", "–"]


# --------------------------------------------------------------------------- scale bar


def test_a_figure_without_a_bar_gets_one_from_the_report() -> None:
    """Drawn by the one scale-bar function, crystalseg.viz.scalebar.add_scale_bar."""
    fig = Figure()
    ax = fig.subplots()
    ax.imshow(np.zeros((96, 96)))
    ax.set_title("frame 0 · t = 0 s")
    finish_overlay(fig, np.zeros(1), "s", pixel_size_um=2.0)
    bars = [a for a in ax.get_children() if a.get_gid() == SCALE_BAR_GID]
    assert len(bars) == 1


def test_every_montage_panel_gets_one_bar_and_the_report_unit(measured_template: Path) -> None:
    """The real montage of a measured run: a bar on each frame (none added twice), and
    its titles in minutes when the report counts in minutes."""
    import xarray as xr

    from crystalseg.viz.overlay import montage

    with xr.open_zarr(measured_template, group="psd") as psd:
        pixel = psd.attrs["pixel_size_um"]
        times = np.asarray(psd["time"].values, dtype=float)
    fig = montage(measured_template, n=4)
    for _ in range(2):  # a second pass adds nothing
        finish_overlay(fig, times, "min", pixel_size_um=pixel)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 4
    for ax, t in zip(panels, times, strict=True):
        bars = [a for a in ax.get_children() if a.get_gid() == SCALE_BAR_GID]
        assert len(bars) == 1
        assert ax.get_title().endswith(f"t = {format_time_in(t, 'min')}")
        assert " s" not in ax.get_title()


# --------------------------------------------------------------------------- model


def _bundled_mask_attrs() -> dict:
    """The mask attrs segment writes for the bundled model (segment/run.py), from its JSON."""
    meta = json.loads((BUNDLED / "model.json").read_text(encoding="utf-8"))
    return {
        "model_sha256": meta["weights"]["sha256"],
        "model_path": str(BUNDLED),
        "model_encoder": meta["spec"]["encoder"],
        "model_crystalseg_version": meta["crystalseg_version"],
        "model_created": meta["created"],
    }


def test_bundled_model_gets_a_readable_name_and_version() -> None:
    attrs = _bundled_mask_attrs()
    model = model_identity(attrs)
    assert model is not None and model.derived
    assert model.name == "crystalseg default (U-Net, mobilenet_v2 encoder)"
    assert model.version == f"{attrs['model_created'][:10]}, crystalseg 0.1.0"
    assert model.short_sha256 == attrs["model_sha256"][:12] and len(model.short_sha256) == 12


def test_recorded_model_name_wins_and_no_model_is_none() -> None:
    attrs = _bundled_mask_attrs() | {"model_name": "needles-v2", "model_version": "2.1"}
    model = model_identity(attrs)
    assert model is not None and (model.name, model.version, model.derived) == (
        "needles-v2",
        "2.1",
        False,
    )
    other = model_identity({"model_sha256": "ab" * 32, "model_path": "/data/models/plates"})
    assert other is not None and other.name == "plates" and other.version == "date unknown"
    assert model_identity({"codes": ["background", "crystal"]}) is None


# --------------------------------------------------------------------------- PDF renderer


def test_missing_pdf_renderer_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from crystalseg.viz.report_pdf import check_pdf_renderer

    monkeypatch.setitem(sys.modules, "fpdf", None)  # as if fpdf2 were not installed
    with pytest.raises(ConfigError, match=r"needs fpdf2, which is not installed: pip install"):
        check_pdf_renderer()
