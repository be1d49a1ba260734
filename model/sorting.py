"""A stable argsort of small non-negative integers (slots, grid cells) by radix sort.

``np.argsort(kind="stable")`` sorts 64-bit integers with timsort: ~0.3 ms for 5,000 slots or
grid cells in random order, paid per tick and per sub-step. numpy radix-sorts integers of 16
bits or fewer, an order of magnitude faster; keys below 2**32 take two such passes (low
half, then high half, each stable). A stable sort's permutation is unique, so the result is
exactly ``np.argsort(keys, kind="stable")``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stable_argsort"]

_U16 = 1 << 16


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for a 1-d integer array, radix-sorted when every
    key is in [0, 2**32)."""
    if keys.size == 0:
        return np.argsort(keys, kind="stable")
    lo, hi = int(keys.min()), int(keys.max())
    if lo < 0 or hi >= _U16 * _U16:
        return np.argsort(keys, kind="stable")
    if hi < _U16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    order = np.argsort((keys & (_U16 - 1)).astype(np.uint16), kind="stable")
    return order[np.argsort((keys[order] >> 16).astype(np.uint16), kind="stable")]
