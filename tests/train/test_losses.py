"""Losses by name, and the small-particle weights of the weighted cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalseg.errors import ConfigError
from crystalseg.train.losses import (
    LOSS_NAMES,
    disc_max_scipy,
    disc_max_torch,
    make_loss,
    small_particle_weights,
)


def test_small_particles_and_their_ring_weigh_more() -> None:
    target = np.zeros((60, 80), np.int64)
    target[10:20, 10:20] = 1  # 100 px: weight sqrt(400 / 100) = 2
    target[40:42, 60:62] = 2  # 4 px: sqrt(100) = 10, clipped to 5
    target[30:60, 0:30] = 1  # 900 px: below 1, clipped to 1
    w = small_particle_weights(target)
    assert w[15, 15] == pytest.approx(2.0)
    assert w[9, 15] == pytest.approx(2.0) and w[8, 15] == pytest.approx(2.0)  # ring of 2 px
    assert w[7, 15] == 1.0  # 3 px away
    assert w[41, 61] == pytest.approx(5.0) and w[41, 63] == pytest.approx(5.0)
    assert w[45, 15] == 1.0 and w[0, 79] == 1.0
    # a batch gives each frame its own weights
    both = small_particle_weights(np.stack([target, np.zeros_like(target)]))
    assert np.array_equal(both[0], w) and np.all(both[1] == 1.0)


def test_weights_of_a_tensor_batch_match_the_array_path() -> None:
    rng = np.random.default_rng(3)
    target = (rng.random((3, 40, 50)) > 0.93).astype(np.int64)  # many small specks
    w = small_particle_weights(target)
    wt = small_particle_weights(torch.from_numpy(target))
    assert isinstance(wt, torch.Tensor) and np.array_equal(wt.numpy(), w)
    # touching rings take the larger weight: a 1-px speck (weight 5) beside a big plate
    plate = np.zeros((30, 30), np.int64)
    plate[:, :20] = 1
    plate[10, 23] = 1  # 3 px from the plate
    w = small_particle_weights(plate)
    assert w[10, 21] == pytest.approx(5.0) and w[10, 25] == pytest.approx(5.0)


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_disc_max_by_rectangles_equals_the_disc_footprint(r: int) -> None:
    x = np.random.default_rng(r).random((2, 23, 31)).astype(np.float32)
    assert np.array_equal(disc_max_torch(torch.from_numpy(x), r).numpy(), disc_max_scipy(x, r))


def test_weighted_ce_is_plain_ce_without_small_particles() -> None:
    rng = np.random.default_rng(0)
    target = np.zeros((2, 40, 40), np.int64)
    target[:, 5:35, 5:35] = 1  # 900 px each
    logits = torch.from_numpy(rng.normal(size=(2, 3, 40, 40)).astype(np.float32))
    y = torch.from_numpy(target)
    assert float(make_loss("wce")(logits, y)) == pytest.approx(float(make_loss("ce")(logits, y)))


def test_missing_a_small_crystal_costs_more_with_weights() -> None:
    target = np.zeros((1, 64, 64), np.int64)
    target[0, 8:40, 8:40] = 1  # a large crystal, found
    target[0, 50:53, 50:53] = 1  # a 9-px crystal, missed
    found = np.zeros((64, 64), bool)
    found[8:40, 8:40] = True
    logits = torch.zeros(1, 2, 64, 64)
    logits[0, 1][torch.from_numpy(found)] = 4.0  # the large one: crystal, the rest background
    logits[0, 0][torch.from_numpy(~found)] = 4.0
    y = torch.from_numpy(target)
    plain, weighted = float(make_loss("ce")(logits, y)), float(make_loss("wce")(logits, y))
    assert weighted > 2 * plain


def test_every_loss_name_builds_and_unknown_names_fail() -> None:
    y = torch.zeros(1, 16, 16, dtype=torch.int64)
    y[0, 4:8, 4:8] = 1
    for name in LOSS_NAMES:
        assert np.isfinite(float(make_loss(name)(torch.randn(1, 2, 16, 16), y)))
    with pytest.raises(ConfigError, match=r"unknown loss 'dice\+cx'"):
        make_loss("dice+cx")
