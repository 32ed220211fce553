"""Kinetics from the time axis: crystals tracked across frames, growth and
nucleation rates with intervals, and the chord length distribution (CLD) a
focused-beam probe would see.

:func:`kinetics_run` is the stage (``crystalseg kinetics RUN``); the array code
lives in :mod:`~crystalseg.kinetics.cld`, :mod:`~crystalseg.kinetics.tracking`,
:mod:`~crystalseg.kinetics.growth` and :mod:`~crystalseg.kinetics.nucleation`;
:mod:`~crystalseg.kinetics.accuracy` scores tracks against known identities.
See ``docs/kinetics.md`` for how to read the numbers and where they fail.
"""

from crystalseg.kinetics.cld import ChordSettings, chord_lengths, frame_cld
from crystalseg.kinetics.growth import GrowthSettings
from crystalseg.kinetics.nucleation import NucleationSettings
from crystalseg.kinetics.run import (
    KineticsSettings,
    kinetics_run,
    open_cld,
    read_kinetics,
    read_tracks,
)
from crystalseg.kinetics.tracking import TrackSettings

__all__ = [
    "ChordSettings",
    "GrowthSettings",
    "KineticsSettings",
    "NucleationSettings",
    "TrackSettings",
    "chord_lengths",
    "frame_cld",
    "kinetics_run",
    "open_cld",
    "read_kinetics",
    "read_tracks",
]
