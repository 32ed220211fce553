"""Make docs/img/napari.png: napari with a measured run open, headless.

A synthetic run is segmented and measured by the bundled model (as ``crystalseg
measure`` does), opened with the crystalseg reader, the dock widget and napari's
features table docked, and the window grabbed. Runs without a screen: Qt's offscreen
platform gets its OpenGL context from an X display, started here (Xvfb, via
PyVirtualDisplay) when there is none.

    python docs/_scripts/napari_screenshot.py [--out docs/img/napari.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "napari.png")
    parser.add_argument("--n-frames", dest="frames", type=int, default=12)
    args = parser.parse_args()
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1600, 1000), color_depth=24)
        display.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "crystallization.zarr"
            _make_run(run, args.frames)
            _screenshot(run, args.out)
    finally:
        if display is not None:
            display.stop()
    print(args.out)


def _make_run(run: Path, frames: int) -> None:
    from crystalseg.measure import measure_run
    from crystalseg.synth import SynthConfig, synthesize_run

    synthesize_run(run, SynthConfig(frames=frames, height=384, width=384, seed=7))
    measure_run(run, scheduler="threads")  # segments with the bundled model first


def _screenshot(run: Path, out: Path) -> None:
    import napari
    from npe2 import PluginManager, PluginManifest

    from crystalseg.napari.widget import RunWidget

    manager = PluginManager.instance()
    if "crystalseg" not in manager:  # an editable install made before the plugin existed
        manager.register(PluginManifest.from_file(ROOT / "crystalseg" / "napari.yaml"))
    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1500, 900)
    layers = viewer.open(str(run), plugin="crystalseg")
    points = layers[-1]
    viewer.dims.set_current_step(0, len(viewer.layers[0].data) - 1)
    viewer.layers.selection.active = points
    viewer.window.add_dock_widget(RunWidget(viewer), name="crystalseg", area="right")
    viewer.window.add_plugin_dock_widget("napari", "Features table widget", tabify=False)
    viewer.scale_bar.visible = True
    viewer.scale_bar.position = "bottom_left"
    viewer.reset_view()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    main()
