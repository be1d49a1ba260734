"""Online prediction error: how far earlier predictions were from where vehicles then were.

Keeping every prediction until its horizon passes would cost P points per fix per vehicle, so
only "anchors" are kept: at most one prediction per vehicle per ``anchor_interval_s``, stored
as the predicted points at the scored horizons (1, 2, 3, 4 s) for each model (the active
predictor and the constant-velocity baseline running alongside). When a later fix of the
vehicle lands within half a sampling interval of ``anchor_ts + h`` (capped at
``max_tolerance_s``), the displacement error at horizon ``h`` is taken, once per anchor and
horizon. Everything is vectorised over the vehicles of a sub-step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trajstream.model.predictors import PathSpec

__all__ = ["OnlineError"]

_EPS_S = 1e-6


class OnlineError:
    """Per-slot rings of anchor predictions and the running error per (model, horizon).

    ``observe`` scores anchors against a new fix, ``due``/``add`` place new anchors, and
    ``reset`` forgets the anchors of slots whose track restarted or that were reused.
    ``horizons`` are the labels of the scored horizons (seconds as text, "1".."4"); those
    beyond the path's horizon are left out.
    """

    anchor_ts: np.ndarray  # (capacity, R) event time of each anchor (NaN: empty)
    next_due: np.ndarray  # (capacity,) earliest unscored target time
    last_anchor_ts: np.ndarray  # (capacity,)
    head: np.ndarray  # (capacity,) anchors placed so far (ring position = head % R)
    scored: np.ndarray  # (capacity, R, H) target scored or passed
    pred: np.ndarray  # (capacity, M, R, H, 2) predicted points per model

    def __init__(
        self,
        spec: PathSpec,
        models: Sequence[str],
        *,
        capacity: int = 1024,
        anchor_interval_s: float = 1.0,
        horizons_s: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
        max_tolerance_s: float = 0.25,
    ) -> None:
        hs = [float(h) for h in horizons_s if float(h) <= spec.horizon_s + _EPS_S]
        self.models = tuple(models)
        self.horizons_s = np.asarray(hs, dtype=np.float64)
        self.horizons = tuple(f"{h:g}" for h in hs)
        # Path point nearest each horizon (exact when the horizon is a multiple of the step).
        self.point_index = np.asarray(
            [max(int(round(h / spec.step_s)) - 1, 0) for h in hs], dtype=np.intp
        )
        self.anchor_interval_s = float(anchor_interval_s)
        self.max_tolerance_s = float(max_tolerance_s)
        top = max(hs) if hs else 0.0
        self.ring = int(math.floor(top / self.anchor_interval_s)) + 2
        self.capacity = 0
        self.sum_m = np.zeros((len(self.models), len(hs)), dtype=np.float64)
        self.count = np.zeros((len(self.models), len(hs)), dtype=np.int64)
        self._alloc(max(capacity, 1))

    def _alloc(self, capacity: int) -> None:
        r, h, m = self.ring, len(self.horizons), len(self.models)

        def grow(name: str, shape: tuple[int, ...], fill: object, dtype: type) -> None:
            new: np.ndarray = np.full(shape, fill, dtype=dtype)
            old = self.__dict__.get(name)
            if old is not None:
                new[: old.shape[0]] = old
            setattr(self, name, new)

        grow("anchor_ts", (capacity, r), np.nan, np.float64)
        grow("next_due", (capacity,), np.inf, np.float64)  # earliest unscored target time
        grow("last_anchor_ts", (capacity,), -np.inf, np.float64)
        grow("head", (capacity,), 0, np.int64)
        grow("scored", (capacity, r, h), False, bool)
        grow("pred", (capacity, m, r, h, 2), np.nan, np.float64)
        self.capacity = capacity

    def ensure_capacity(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._alloc(max(capacity, 2 * self.capacity))

    def reset(self, slots: np.ndarray) -> None:
        self.anchor_ts[slots] = np.nan
        self.last_anchor_ts[slots] = -np.inf
        self.scored[slots] = False
        self.next_due[slots] = np.inf

    def _refresh_due(self, slots: np.ndarray) -> None:
        target = self.anchor_ts[slots][:, :, None] + self.horizons_s
        target = np.where(self.scored[slots] | np.isnan(target), np.inf, target)
        self.next_due[slots] = target.min(axis=(1, 2))

    def observe(
        self, slots: np.ndarray, ts: np.ndarray, x: np.ndarray, y: np.ndarray, dt: np.ndarray
    ) -> list[tuple[str, str, np.ndarray]]:
        """Score the anchors of ``slots`` (unique) against fixes (ts, x, y).

        ``dt`` is each vehicle's time since its previous fix (0 = no previous fix: nothing is
        scored). Returns ``(model, horizon, errors_m)`` for every pair with errors.
        """
        if slots.size == 0 or not self.horizons:
            return []
        # Only vehicles with a target due by now need the full (rows, R, H) check.
        near = np.flatnonzero(ts >= self.next_due[slots] - self.max_tolerance_s - _EPS_S)
        if near.size == 0:
            return []
        slots, ts, x, y, dt = slots[near], ts[near], x[near], y[near], dt[near]
        tol = (np.minimum(0.5 * dt, self.max_tolerance_s) + _EPS_S)[:, None, None]
        target = self.anchor_ts[slots][:, :, None] + self.horizons_s  # (n, R, H)
        open_ = ~self.scored[slots]
        with np.errstate(invalid="ignore"):
            hit = (np.abs(ts[:, None, None] - target) <= tol) & open_
            passed = (ts[:, None, None] - target > tol) & open_  # missed for good
        hit &= (dt > 0)[:, None, None]
        self.scored[slots] |= hit | passed
        self._refresh_due(slots)
        rows = np.flatnonzero(hit.any(axis=(1, 2)))
        if rows.size == 0:
            return []
        hit = hit[rows]
        rs = slots[rows]
        pred = self.pred[rs]  # (k, M, R, H, 2)
        dx = pred[..., 0] - x[rows, None, None, None]
        dy = pred[..., 1] - y[rows, None, None, None]
        err = np.hypot(dx, dy)  # (k, M, R, H)
        out: list[tuple[str, str, np.ndarray]] = []
        for j, label in enumerate(self.horizons):
            mask = hit[:, :, j]
            if not mask.any():
                continue
            for mi, model in enumerate(self.models):
                e = err[:, mi, :, j][mask]
                self.sum_m[mi, j] += float(e.sum())
                self.count[mi, j] += e.size
                out.append((model, label, e))
        return out

    def due(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Mask of the rows whose fix should become a new anchor."""
        return ts - self.last_anchor_ts[slots] >= self.anchor_interval_s - 1e-3

    def add(self, slots: np.ndarray, ts: np.ndarray, paths: Sequence[np.ndarray]) -> None:
        """Anchor the predictions made at ``ts`` for ``slots`` (unique); ``paths[m]`` is model
        m's (n, P, 2) path, in the order of ``models``."""
        if slots.size == 0:
            return
        pos = self.head[slots] % self.ring
        self.head[slots] += 1
        self.anchor_ts[slots, pos] = ts
        self.last_anchor_ts[slots] = ts
        self.scored[slots, pos] = False
        for mi, p in enumerate(paths):
            self.pred[slots, mi, pos] = p[:, self.point_index]
        self._refresh_due(slots)

    def mean_m(self) -> dict[tuple[str, str], float]:
        """Mean error so far per (model, horizon); NaN where nothing was scored yet."""
        out = {}
        for mi, model in enumerate(self.models):
            for j, label in enumerate(self.horizons):
                c = self.count[mi, j]
                out[(model, label)] = float(self.sum_m[mi, j] / c) if c else math.nan
        return out
