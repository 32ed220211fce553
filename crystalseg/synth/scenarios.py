"""Named scenarios of synthetic crystallization runs and the settings of one run.

A :class:`Scenario` holds *ranges*: every run draws its own values inside them from
its seed (domain randomisation), so two runs of one scenario differ in crystal
count, sizes, growth, drift and look, while sharing the character the name
promises. :class:`SynthConfig` is what a user sets: frame count and size, seed,
scenario, frame interval, calibration and output dtype.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

from crystalseg.errors import ConfigError

ScenarioName = Literal["clear", "crowded", "bubbles", "needles", "plates", "mixed"]
SCENARIO_NAMES: tuple[str, ...] = get_args(ScenarioName)

Habit = Literal["prism", "needle", "plate"]
#: Crystal habits, in the order of :attr:`Scenario.habit_weights`.
HABITS: tuple[str, ...] = get_args(Habit)

#: Aspect ratio (length / width of the unscaled habit outline) drawn per crystal.
HABIT_ASPECT: dict[str, tuple[float, float]] = {
    "prism": (2.0, 5.0),
    "needle": (6.0, 20.0),
    "plate": (1.0, 1.6),
}

Range = tuple[float, float]

#: Range of a run's factor on every optical density (drawn log-uniformly).
CONTRAST_RANGE: Range = (0.45, 1.6)
#: Least optical density (after blur, times the contrast) that keeps a labelled
#: crystal visible.
MIN_VISIBLE_OD = 0.12


def _check_range(name: str, value: tuple[float, float], *, low: float = 0.0) -> None:
    if len(value) != 2:
        raise ConfigError(f"scenario field '{name}' must be a (low, high) pair, got {value!r}")
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < low or hi < lo:
        raise ConfigError(
            f"scenario field '{name}' = {value!r} is not a range with {low} <= low <= high; "
            "swap or fix the bounds"
        )


@dataclass(frozen=True)
class Scenario:
    """Parameter ranges of one kind of synthetic run.

    Every ``(low, high)`` pair is a range a run draws one value from; counts are per
    megapixel of field of view at zoom 1, so the look holds for any frame size.
    Lengths are maximum Feret diameters in pixels at zoom 1 (a run's random zoom,
    its magnification, scales them).

    Attributes
    ----------
    name : label written to the provenance
    habit_weights : (prism, needle, plate) mean proportions of the habits
    habit_concentration : Dirichlet concentration of a run's habit mix around
        ``habit_weights``; ``inf`` keeps the mix fixed
    seeds_per_mpx : crystals present at t = 0, per megapixel
    nuclei_per_mpx : crystals nucleated during the run (Poisson mean), per megapixel
    induction_fraction : induction time, as a fraction of the run, before nucleation starts
    nucleation_fraction : share of the time after the induction over which the nuclei
        are born (uniformly); 1 spreads them over the rest of the run, smaller values
        make a burst of nucleation followed by growth alone
    seed_length_px : length of the crystals present at t = 0
    nucleus_length_px : length of a crystal when it nucleates
    growth_px : length a crystal gains over the whole run at the run's mean growth rate
    growth_dispersion : log-normal sigma of the growth rate between crystals
    agglomerate_fraction : fraction of crystals that carry an agglomerate of 1-4 others
    min_gap_px : crystals are placed at least this far apart (by a bounding circle of
        their final size), ``None`` lets them overlap freely
    bubbles_per_mpx : air bubbles (distractors) per megapixel
    bubble_radius_px : bubble radius
    drift_px_per_frame : RMS speed of the drift of the whole field
    zoom : magnification factor applied to all lengths in pixels
    depth_spread : standard deviation of a crystal's depth about the focal plane, in
        units of the depth at which a run's full defocus blur applies (depths are
        clipped to -1..1); larger values give more strongly defocused crystals
    contrast : the run's factor on every optical density is drawn log-uniformly
        from this range (smaller: fainter crystals, bubbles and dust alike)
    min_visible_od : least optical density (after blur, times the contrast) that a
        labelled crystal keeps: fainter ones are darkened to it, so that no crystal
        in the truth is invisible (0.12 leaves an edge at least 11 % deep)
    rim_outside : how much of the dark rim band that lies outside a crystal's outline
        is drawn, per crystal from this range (before the blur): 1 draws the band as
        a whole, straddling the edge by up to half its width, as every scenario does;
        0 stops it at the outline, as light refracted inside a transparent crystal
        would, so that the outer edge of the dark band is the crystal's edge
    """

    name: str
    habit_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    habit_concentration: float = 4.0
    seeds_per_mpx: Range = (20.0, 120.0)
    nuclei_per_mpx: Range = (40.0, 250.0)
    induction_fraction: Range = (0.0, 0.4)
    nucleation_fraction: float = 1.0
    seed_length_px: Range = (12.0, 70.0)
    nucleus_length_px: Range = (3.0, 8.0)
    growth_px: Range = (20.0, 90.0)
    growth_dispersion: Range = (0.1, 0.35)
    agglomerate_fraction: Range = (0.0, 0.15)
    min_gap_px: float | None = None
    bubbles_per_mpx: Range = (0.0, 12.0)
    bubble_radius_px: Range = (4.0, 30.0)
    drift_px_per_frame: Range = (0.0, 2.5)
    zoom: Range = (0.6, 1.6)
    depth_spread: float = 0.4
    contrast: Range = CONTRAST_RANGE
    min_visible_od: float = MIN_VISIBLE_OD
    rim_outside: Range = (1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.habit_weights) != len(HABITS) or any(
            not (math.isfinite(w) and w >= 0) for w in self.habit_weights
        ):
            raise ConfigError(
                f"habit_weights must be {len(HABITS)} non-negative numbers for {HABITS}, "
                f"got {self.habit_weights!r}"
            )
        if sum(self.habit_weights) <= 0:
            raise ConfigError(f"habit_weights {self.habit_weights!r} sum to 0; give one a weight")
        if not self.habit_concentration > 0:
            raise ConfigError(
                f"habit_concentration must be > 0 (inf for a fixed mix), "
                f"got {self.habit_concentration}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in {
                "name",
                "habit_weights",
                "habit_concentration",
                "min_gap_px",
                "depth_spread",
                "min_visible_od",
                "nucleation_fraction",
            }:
                continue
            _check_range(f.name, value)
        _check_range("induction_fraction", self.induction_fraction)
        if self.induction_fraction[1] > 1:
            raise ConfigError(
                f"induction_fraction {self.induction_fraction!r} must lie within 0..1 of the run"
            )
        if not 0 < self.nucleation_fraction <= 1:
            raise ConfigError(
                f"nucleation_fraction must lie in (0, 1], got {self.nucleation_fraction!r}"
            )
        if self.rim_outside[1] > 1:
            raise ConfigError(f"rim_outside {self.rim_outside!r} must lie within 0..1")
        for name in ("seed_length_px", "nucleus_length_px", "bubble_radius_px", "zoom", "contrast"):
            if getattr(self, name)[0] <= 0:
                raise ConfigError(f"scenario field '{name}' must be > 0, got {getattr(self, name)}")
        for name in ("depth_spread", "min_visible_od"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.min_gap_px is not None and not self.min_gap_px >= 0:
            raise ConfigError(f"min_gap_px must be >= 0 or None, got {self.min_gap_px}")


SCENARIOS: dict[str, Scenario] = {
    "mixed": Scenario("mixed"),
    "clear": Scenario(
        "clear",
        seeds_per_mpx=(15.0, 50.0),
        nuclei_per_mpx=(15.0, 60.0),
        agglomerate_fraction=(0.0, 0.0),
        min_gap_px=4.0,
        bubbles_per_mpx=(0.0, 0.0),
        drift_px_per_frame=(0.0, 1.5),
    ),
    "crowded": Scenario(
        "crowded",
        seeds_per_mpx=(100.0, 220.0),
        nuclei_per_mpx=(100.0, 280.0),
        induction_fraction=(0.0, 0.2),
        seed_length_px=(15.0, 80.0),
        agglomerate_fraction=(0.2, 0.45),
        bubbles_per_mpx=(0.0, 8.0),
    ),
    "bubbles": Scenario(
        "bubbles",
        seeds_per_mpx=(8.0, 30.0),
        nuclei_per_mpx=(10.0, 40.0),
        agglomerate_fraction=(0.0, 0.0),
        min_gap_px=4.0,
        bubbles_per_mpx=(40.0, 110.0),
        bubble_radius_px=(3.0, 40.0),
    ),
    "needles": Scenario(
        "needles",
        habit_weights=(0.1, 0.9, 0.0),
        habit_concentration=20.0,
        seed_length_px=(25.0, 120.0),
        nucleus_length_px=(6.0, 14.0),
        growth_px=(40.0, 160.0),
        agglomerate_fraction=(0.05, 0.25),
    ),
    "plates": Scenario(
        "plates",
        habit_weights=(0.1, 0.0, 0.9),
        habit_concentration=20.0,
        seed_length_px=(15.0, 60.0),
        growth_px=(15.0, 60.0),
    ),
}


def get_scenario(name: str | Scenario) -> Scenario:
    """The :class:`Scenario` called ``name`` (a Scenario passes through unchanged).

    Raises
    ------
    ConfigError
        Unknown name; the message suggests the closest known one.
    """
    if isinstance(name, Scenario):
        return name
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), SCENARIOS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown scenario {name!r}; {hint}choose one of {', '.join(SCENARIO_NAMES)}"
        ) from None


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic run looks like from outside: size, length, seed and scenario.

    Parameters
    ----------
    frames : number of frames (>= 1)
    height, width : frame size in pixels (>= 16 each)
    seed : non-negative integer; the whole run (population, look, noise) follows from it
    scenario : a name from :data:`SCENARIO_NAMES` or a custom :class:`Scenario`
    interval_s : seconds between frames (> 0)
    pixel_size_um : micrometres per pixel; None draws one per run from the seed
    dtype : ``"uint8"`` or ``"uint16"`` (full 16-bit range)
    calibrated : False writes no pixel size to the store and no micrometre columns, as
        for a recording of unknown magnification
    """

    frames: int = 50
    height: int = 512
    width: int = 512
    seed: int = 0
    scenario: ScenarioName | Scenario = "mixed"
    interval_s: float = 10.0
    pixel_size_um: float | None = None
    dtype: Literal["uint8", "uint16"] = "uint8"
    calibrated: bool = True

    def __post_init__(self) -> None:
        for name, least in (("frames", 1), ("height", 16), ("width", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        get_scenario(self.scenario)
        if not (isinstance(self.interval_s, int | float) and math.isfinite(self.interval_s)):
            raise ConfigError(f"interval_s must be a positive number, got {self.interval_s!r}")
        if self.interval_s <= 0:
            raise ConfigError(f"interval_s must be a positive number, got {self.interval_s!r}")
        if self.pixel_size_um is not None and not (
            isinstance(self.pixel_size_um, int | float)
            and math.isfinite(self.pixel_size_um)
            and self.pixel_size_um > 0
        ):
            raise ConfigError(
                f"pixel_size_um must be a positive number of micrometres or None, "
                f"got {self.pixel_size_um!r}"
            )
        if self.dtype not in ("uint8", "uint16"):
            raise ConfigError(f"dtype must be 'uint8' or 'uint16', got {self.dtype!r}")

    @property
    def scenario_params(self) -> Scenario:
        """The :class:`Scenario` this config names."""
        return get_scenario(self.scenario)
