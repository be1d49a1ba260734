"""model/sorting.py: the radix-sorted stable argsort is numpy's stable argsort, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from trajstream.model.sorting import stable_argsort


@pytest.mark.parametrize("top", [0, 1, 7, 3000, (1 << 16) - 1, 1 << 16, 200_000,
                                 (1 << 32) - 1, 1 << 32, 1 << 40])
@pytest.mark.parametrize("n", [0, 1, 5, 5000])
def test_same_permutation_as_numpy(top: int, n: int) -> None:
    rng = np.random.default_rng(top + n)
    keys = rng.integers(0, top + 1, n, dtype=np.int64)
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


def test_ties_keep_their_order_and_negative_keys_fall_back() -> None:
    keys = np.array([3, 1, 3, 1, 70_000, 3, 70_000, 0])
    assert stable_argsort(keys).tolist() == [7, 1, 3, 0, 2, 5, 4, 6]
    neg = np.array([2, -1, 2, -5, 0])
    assert np.array_equal(stable_argsort(neg), np.argsort(neg, kind="stable"))
