"""Dimension and variable names shared by every stage (defined once, imported everywhere)."""

from __future__ import annotations

TIME = "time"
Y = "y"
X = "x"
PARTICLE = "particle"
SIZE_BIN = "size_bin"
LENGTH_BIN = "length_bin"
WIDTH_BIN = "width_bin"
#: Chord length bins and FBRM size classes of the chord length distribution (kinetics).
CHORD_BIN = "chord_bin"
CHORD_CLASS = "chord_class"
#: One tracked crystal (the track table), and one point of a track (one particle row).
TRACK = "track"
TRACK_POINT = "track_point"

FRAME_DIMS = (TIME, Y, X)

IMAGE = "image"
MASK = "mask"
#: The model's foreground probability per pixel (uint8, round(255 p)), when stored.
PROBABILITY = "probability"

#: Class codes used by synthetic ground truth and the default model.
DEFAULT_CODES = ("background", "crystal")
