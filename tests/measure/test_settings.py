"""MeasureSettings refuses bin counts that would not fit in memory, before any work."""

from __future__ import annotations

import pytest

from crystalseg.errors import ConfigError
from crystalseg.measure.settings import MAX_BINS, MeasureSettings


def test_the_bin_count_is_limited() -> None:
    assert MeasureSettings(bins=(1, 1000, MAX_BINS)).bin_edges().shape == (MAX_BINS + 1,)
    with pytest.raises(ConfigError, match=r"100000000 size bins asked for; expected 1 to 200"):
        MeasureSettings(bins=(1, 1000, 100_000_000))
    with pytest.raises(ConfigError, match=r"201 size bins asked for"):
        MeasureSettings(bins=(1, 1000, MAX_BINS + 1))
