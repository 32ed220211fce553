"""The plugin in a headless napari viewer: the manifest's reader opens a run, the dock
widget measures it and adds a hand-corrected frame to a training folder.

napari needs Qt and an OpenGL context: Qt's offscreen platform (set in conftest) gets
one from an X display (``pytest-xvfb``, in the test extra, starts Xvfb for the session
when it is installed: ``apt-get install xvfb``). Without them these tests skip, saying
which is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr

from crystalseg.store import read_run_attrs, read_table


def _napari_skip_reason() -> str | None:
    """Why a napari viewer cannot run here, or None when it can."""
    try:
        import napari  # noqa: F401
        import pytestqt  # noqa: F401
    except ImportError as exc:
        return f"napari is not installed ({exc}); pip install 'crystalseg[test]'"
    if not os.environ.get("DISPLAY"):
        return (
            "napari needs an OpenGL context, which Qt's offscreen platform gets from an X "
            "display: install Xvfb (apt-get install xvfb) so pytest-xvfb starts one"
        )
    return None


_reason = _napari_skip_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

MANIFEST = Path(__file__).parents[2] / "crystalseg" / "napari.yaml"


@pytest.fixture
def viewer(make_napari_viewer):
    """A viewer with crystalseg's manifest registered (an editable install from before
    the plugin was added has no entry point for it yet)."""
    from npe2 import PluginManager, PluginManifest

    manager = PluginManager.instance()
    if "crystalseg" not in manager:
        manager.register(PluginManifest.from_file(MANIFEST))
    return make_napari_viewer()


def test_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "crystalseg"
    assert [r.command for r in manifest.contributions.readers] == ["crystalseg.get_reader"]


def test_napari_opens_a_run_calibrated(viewer, measured_run: Path) -> None:
    layers = viewer.open(str(measured_run), plugin="crystalseg")
    assert [layer._type_string for layer in layers] == ["image", "labels", "points"]
    pixel = read_run_attrs(measured_run)["pixel_size_um"]
    image, mask, points = layers
    np.testing.assert_allclose(image.scale, [1.0, pixel, pixel])
    np.testing.assert_allclose(mask.scale, image.scale)
    ds = xr.open_zarr(measured_run)
    np.testing.assert_array_equal(np.asarray(mask.data[1]), ds["mask"][1].values)
    table = read_table(measured_run, "particles")
    assert len(points.data) == len(table)
    np.testing.assert_allclose(points.features["ecd"], table["ecd"])
    # coloured by size: the largest particle gets viridis' yellow end, the smallest its purple
    big, small = int(table["ecd"].idxmax()), int(table["ecd"].idxmin())
    assert points.border_color[big][1] > 0.8 and points.border_color[small][1] < 0.1
    # the world extent is the field of view in micrometres
    assert viewer.layers.extent.world[1][2] == pytest.approx((128 - 1) * pixel)


@pytest.mark.slow  # the measurement runs in a fresh process: ~5-15 s of imports
def test_widget_measures_the_open_run(viewer, measured_run: Path, qtbot) -> None:
    from crystalseg.napari.widget import RunWidget

    viewer.open(str(measured_run), plugin="crystalseg")
    viewer.layers.remove(viewer.layers[-1])  # the particles: the widget brings them back
    widget = RunWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.run_path() == measured_run
    widget.measure()  # in a worker thread, as clicked
    qtbot.waitUntil(lambda: viewer.layers[-1]._type_string == "points", timeout=60_000)
    assert len(viewer.layers[-1].data) == len(read_table(measured_run, "particles"))
    assert "measured run.zarr" in widget.status.text()


def test_widget_adds_a_corrected_frame_to_a_training_folder(
    viewer, measured_run: Path, tmp_path: Path
) -> None:
    from crystalseg.napari.widget import RunWidget

    viewer.open(str(measured_run), plugin="crystalseg")
    widget = RunWidget(viewer)
    viewer.dims.set_current_step(0, 2)
    layer = widget.start_correction()
    original = xr.open_zarr(measured_run)["mask"][2].values
    np.testing.assert_array_equal(layer.data, original)
    layer.paint((5, 5), 1)  # a brush stroke adding crystal
    layer.paint((40, 60), 0)  # and one erasing
    widget.folder.setText(str(tmp_path / "train"))
    image_path, mask_path = widget.add_to_training()
    saved = iio.imread(mask_path)
    np.testing.assert_array_equal(saved, layer.data)
    assert saved[5, 5] == 1 and saved[40, 60] == 0
    assert not np.array_equal(saved, original) or original[5, 5] == 1
    np.testing.assert_array_equal(
        iio.imread(image_path), xr.open_zarr(measured_run)["image"][2].values
    )
    # the run's own mask is untouched
    np.testing.assert_array_equal(xr.open_zarr(measured_run)["mask"][2].values, original)


def test_buttons_say_what_to_do_instead_of_raising(viewer, measured_run: Path) -> None:
    from crystalseg.napari.widget import RunWidget

    widget = RunWidget(viewer)
    widget.measure_button.click()  # nothing open yet
    assert "no run store is open" in widget.status.text()
    viewer.open(str(measured_run), plugin="crystalseg")
    widget.add_button.click()
    assert "choose a training folder first" in widget.status.text()
    widget.folder.setText(str(measured_run.parent / "train"))
    widget.add_button.click()
    assert "no corrected frame" in widget.status.text()
    assert not (measured_run.parent / "train").exists()
