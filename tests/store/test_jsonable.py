"""One ``jsonable`` (crystalseg.store.core): what ``json`` round trips give, plus strict JSON.

The checkpoint's ``model.json`` and ``--json`` need NaN as null (``strict=True``); zarr
attributes keep NaN as a float. Both modes are compared with the plain ``json`` round
trip they replace and with ``crystalseg.models.checkpoint.jsonable``.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from crystalseg.models.checkpoint import jsonable as checkpoint_jsonable
from crystalseg.store.core import jsonable


@dataclass(frozen=True)
class _Settings:
    size: float
    where: Path


class _Colour(str, enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


SETTINGS = {
    "int": np.int64(3),
    "float": np.float32(0.5),
    "bool": np.bool_(True),
    "array": np.array([[1, 2], [3, 4]], dtype=np.uint8),
    "tuple": (1, "a", None),
    "path": Path("/data/run.zarr"),
    "pure_path": PurePosixPath("a/b"),
    "nested": {"list": [1.5, {"deep": np.float64(2.25)}], 7: "int key"},
    "enum": _Colour.RED,
    "level": _Level.HIGH,
    "tensor": torch.tensor(0.25),
}


def test_plain_values_round_trip_through_json() -> None:
    out = jsonable(SETTINGS)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["int"] == 3 and type(out["int"]) is int
    assert out["float"] == 0.5 and type(out["float"]) is float
    assert out["bool"] is True
    assert out["array"] == [[1, 2], [3, 4]]
    assert out["tuple"] == [1, "a", None]
    assert out["path"] == "/data/run.zarr" and out["pure_path"] == "a/b"
    assert out["nested"] == {"list": [1.5, {"deep": 2.25}], "7": "int key"}
    assert out["enum"] == "red" and type(out["enum"]) is str
    assert out["level"] == 3 and type(out["level"]) is int
    assert out["tensor"] == 0.25


def test_same_as_the_json_round_trip_it_replaced() -> None:
    """Everything ``json`` writes natively comes out as ``json.loads(json.dumps(x))``."""
    value = {
        "a": [1, 2.5, "x", None, True],
        2: {"b": (3, 4)},
        2.5: "float key",
        True: "bool key",
        None: "none key",
    }
    assert jsonable(value) == json.loads(json.dumps(value))
    assert list(jsonable({True: 1, None: 2})) == ["true", "null"]


def test_nan_kept_unless_strict() -> None:
    value = {"d50": float("nan"), "top": [np.float64(np.inf), -math.inf, 1.0]}
    loose = jsonable(value)
    assert math.isnan(loose["d50"])
    assert loose["top"][:2] == [math.inf, -math.inf]
    assert jsonable(value, strict=True) == {"d50": None, "top": [None, None, 1.0]}
    # strict output is valid JSON for every parser
    json.dumps(jsonable(value, strict=True), allow_nan=False)
    with pytest.raises(ValueError, match="Out of range float values"):
        json.dumps(loose, allow_nan=False)


def test_strict_matches_the_checkpoint_helper() -> None:
    """What ``models.checkpoint.jsonable`` gives, ``jsonable(strict=True)`` gives too
    (so the checkpoint can call this one)."""
    value = {
        **SETTINGS,
        "nan": float("nan"),
        "tensor_nan": torch.tensor(float("nan")),
        "np_inf": np.float32(np.inf),
        "set": {4},
        "frozen": frozenset({"x"}),
        "other": object.__new__(_Unprintable),
        "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "params": [0, 1]}],
    }
    assert jsonable(value, strict=True) == checkpoint_jsonable(value)


class _Unprintable:
    def __str__(self) -> str:
        return "unprintable"


def test_dataclasses_become_their_fields() -> None:
    out = jsonable({"settings": _Settings(size=float("nan"), where=Path("x"))}, strict=True)
    assert out == {"settings": {"size": None, "where": "x"}}
    assert jsonable(_Settings) == str(_Settings)  # the class itself is not an instance
