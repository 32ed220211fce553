"""Synthetic crystallization runs with exact ground truth: demo, tests and training data.

A run is drawn once from its seed (crystals, their nucleation and growth, drift,
bubbles, and the look of the optics and camera); any frame then renders on its
own, in any order, to the same pixels.

>>> from crystalseg.synth import SynthConfig, SyntheticRun
>>> run = SyntheticRun(SynthConfig(frames=10, height=128, width=128, seed=0))
>>> frame = run.render(9)          # image, labels, class_mask, crystals, distractors
>>> bool(frame.crystals["area_px"].sum() == frame.class_mask.sum())
True

``synthesize_run(path, config)`` writes a whole run, with its truth, to a run store.
"""

from crystalseg.synth.optics import Appearance
from crystalseg.synth.render import SyntheticRun, SynthFrame
from crystalseg.synth.scenarios import (
    SCENARIO_NAMES,
    SCENARIOS,
    Scenario,
    ScenarioName,
    SynthConfig,
    get_scenario,
)
from crystalseg.synth.write import synthesize_run

__all__ = [
    "SCENARIOS",
    "SCENARIO_NAMES",
    "Appearance",
    "Scenario",
    "ScenarioName",
    "SynthConfig",
    "SynthFrame",
    "SyntheticRun",
    "get_scenario",
    "synthesize_run",
]
