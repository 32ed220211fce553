"""crystalseg: particle size and shape distributions from crystallization time-lapses.

The public API. Importing crystalseg does not import torch; the training and
segmentation functions import it when first used.
"""

from __future__ import annotations

from typing import Any

from crystalseg.errors import CrystalsegError, CrystalsegWarning
from crystalseg.importing import import_run
from crystalseg.io import open_source
from crystalseg.store import (
    create_run,
    describe_run,
    open_run,
    read_table,
    set_calibration,
    stage_info,
    write_table,
)
from crystalseg.synth import SynthConfig, SyntheticRun, synthesize_run

__version__ = "0.1.0"

# name -> module, imported on first use because they pull in torch
_LAZY = {
    "pairs": "crystalseg.train",
    "unet_learner": "crystalseg.train",
    "train_model": "crystalseg.train",
    "TrainSettings": "crystalseg.train",
    "load_checkpoint": "crystalseg.models",
    "segment_run": "crystalseg.segment",
    "measure_run": "crystalseg.measure",
    "MeasureOptions": "crystalseg.measure",
    "segment_and_measure": "crystalseg.pipeline",
    "export_particles": "crystalseg.export",
    "export_run": "crystalseg.export",
    "ExportSettings": "crystalseg.export",
    "MeasureSettings": "crystalseg.measure",
    "MeasuredRun": "crystalseg.measure",
    "evaluate_model": "crystalseg.evaluate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalseg' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "CrystalsegError",
    "CrystalsegWarning",
    "SynthConfig",
    "SyntheticRun",
    "__version__",
    "create_run",
    "describe_run",
    "import_run",
    "open_run",
    "open_source",
    "read_table",
    "set_calibration",
    "stage_info",
    "synthesize_run",
    "write_table",
    *_LAZY,
]
