"""The crystalseg dock widget: measure the open run, correct a mask frame by hand and
add it to a training folder.

The run is the one the selected layer came from (layers opened by the crystalseg
reader name their run store in ``metadata["crystalseg_run"]``). Measuring runs in a
worker thread, so napari stays responsive, and replaces the particles layer when it
finishes. Correcting copies the shown frame's mask into a new, editable labels layer
(the run's mask is read lazily from the store and stays untouched); "Add to training
folder" writes the frame and the corrected mask as ``X.png``/``X_mask.png``.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from crystalseg.dims import MASK
from crystalseg.errors import CrystalsegError, StageStateError
from crystalseg.napari.correct import save_training_pair
from crystalseg.napari.reader import RUN_KEY, particle_points, read_run

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

#: Metadata key of the correction layer: the frame it corrects.
FRAME_KEY = "crystalseg_frame"


class RunWidget(QWidget):
    """Dock widget acting on the run store of the selected (or first) crystalseg layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.measure_button = QPushButton("Measure run")
        self.measure_button.clicked.connect(self._clicked(self.measure))
        self.correct_button = QPushButton("Correct this frame's mask")
        self.correct_button.clicked.connect(self._clicked(self.start_correction))
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("training folder")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.add_button = QPushButton("Add to training folder")
        self.add_button.clicked.connect(self._clicked(self.add_to_training))
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        for widget in (self.measure_button, self.correct_button):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.add_button)
        layout.addWidget(self.status)
        layout.addStretch()
        self._worker: Any = None

    # ------------------------------------------------------------------ the open run

    def run_path(self) -> Path:
        """The run store of the selected layer, or of the first crystalseg layer.

        Raises
        ------
        StageStateError
            No layer of a run store is open.
        """
        active = self.viewer.layers.selection.active
        candidates = [active, *self.viewer.layers] if active is not None else self.viewer.layers
        for layer in candidates:
            run = layer.metadata.get(RUN_KEY)
            if run:
                return Path(run)
        raise StageStateError("no run store is open; open a run.zarr folder in napari first")

    def _layer(self, kind: str) -> Any:
        run = str(self.run_path())
        for layer in self.viewer.layers:
            if layer.metadata.get(RUN_KEY) == run and layer._type_string == kind:
                if kind != "labels" or FRAME_KEY not in layer.metadata:
                    return layer
        return None

    def _clicked(self, action: Callable[[], Any]) -> Callable[[], None]:
        """A button's slot: run ``action``; a crystalseg error is shown, not raised
        (it says what to do, e.g. open a run first)."""

        def slot() -> None:
            try:
                action()
            except CrystalsegError as exc:
                self._say(str(exc))

        return slot

    def _say(self, text: str) -> None:
        self.status.setText(text)
        log.info("%s", text)

    # ------------------------------------------------------------------ measure

    def measure(self, *, block: bool = False) -> None:
        """Measure the open run (segmenting it first if it has no mask) and show the
        particles; in a worker thread, or here when ``block``. The measurement runs
        in a separate process, so napari stays responsive and its OpenGL libraries
        never meet torch's."""
        from crystalseg.measure import MeasureOptions
        from crystalseg.pipeline import segment_and_measure

        path = self.run_path()
        self._say(f"measuring {path.name} …")
        self.measure_button.setEnabled(False)

        def work() -> None:
            # In a fresh process: torch may import triton, whose LLVM crashes a process
            # that has Mesa's software OpenGL (llvmpipe, also LLVM) loaded, as napari
            # has on machines without a GPU driver (segfault, reproduced on Xvfb).
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                options = MeasureOptions(scheduler="threads")
                pool.submit(segment_and_measure, path, options=options).result()

        if block:
            try:
                work()
            finally:
                self.measure_button.setEnabled(True)
            self._show_measured(path)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(work)
        worker.returned.connect(lambda _: self._show_measured(path))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: self.measure_button.setEnabled(True))
        self._worker = worker
        worker.start()

    def _failed(self, exc: BaseException) -> None:
        self._say(f"measure failed: {exc}")

    def _show_measured(self, path: Path) -> None:
        """Add (or replace) the mask and particles layers of ``path`` after measuring."""
        layers = {kind: (data, kwargs) for data, kwargs, kind in read_run(path)}
        if self._layer("labels") is None and "labels" in layers:
            data, kwargs = layers["labels"]
            self.viewer.add_labels(data, **kwargs)
        old = self._layer("points")
        if old is not None:
            self.viewer.layers.remove(old)
        if "points" in layers:
            data, kwargs = layers["points"]
            self.viewer.add_points(data, **kwargs)
        points = particle_points(path)
        self._say(f"measured {path.name}: {0 if points is None else len(points[0])} particles")

    # ------------------------------------------------------------------ correct

    def current_frame(self) -> int:
        """Index of the frame the viewer shows."""
        return int(self.viewer.dims.current_step[0])

    def start_correction(self) -> Any:
        """Copy the shown frame's mask into a new labels layer to paint on; returns it."""
        mask_layer = self._layer("labels")
        if mask_layer is None:
            raise StageStateError(
                f"run '{self.run_path()}' has no {MASK} to correct; measure (or segment) it first"
            )
        frame = self.current_frame()
        data = np.array(mask_layer.data[frame], dtype=np.uint8)
        layer = self.viewer.add_labels(
            data,
            name=f"{self.run_path().stem} correction (frame {frame})",
            scale=mask_layer.scale[1:],
            metadata={RUN_KEY: str(self.run_path()), FRAME_KEY: frame},
        )
        layer.mode = "paint"
        layer.selected_label = 1
        self._say(f"paint frame {frame} (label 1 crystal, 0 erases), then add it")
        return layer

    def add_to_training(self, folder: str | Path | None = None) -> tuple[Path, Path]:
        """Write the corrected frame (the selected correction layer, or the last one) and
        its image to the training folder."""
        target = Path(folder) if folder is not None else Path(self.folder.text().strip())
        if not str(target) or str(target) == ".":
            raise StageStateError("choose a training folder first")
        layers = [layer for layer in self.viewer.layers if FRAME_KEY in layer.metadata]
        active = self.viewer.layers.selection.active
        layer = active if active in layers else (layers[-1] if layers else None)
        if layer is None:
            raise StageStateError("no corrected frame: click 'Correct this frame's mask' first")
        try:
            paths = save_training_pair(
                layer.metadata[RUN_KEY], layer.metadata[FRAME_KEY], layer.data, target
            )
        except CrystalsegError as exc:
            self._say(str(exc))
            raise
        self._say(f"added {paths[0].name} and {paths[1].name} to {target}")
        return paths

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Training folder")
        if chosen:
            self.folder.setText(chosen)
