"""The predictor interface and the physics baselines.

A predictor is batched and stateful: each call advances every vehicle of the batch by one
observation and returns its predicted path over the horizon. Recurrent state (the LSTM's h/c)
is a float row per vehicle that the stream's state store keeps; stateless predictors have
``state_dim == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trajstream.model.kinematics import YAW_NOISE_RPS, Kinematics


@dataclass(frozen=True, slots=True)
class PathSpec:
    """Prediction horizon and spacing: points at ``step_s``, ``2*step_s``, ..., ``horizon_s``."""

    horizon_s: float = 4.0
    step_s: float = 0.2

    @property
    def points(self) -> int:
        return int(round(self.horizon_s / self.step_s))

    @property
    def offsets_s(self) -> np.ndarray:
        return self.step_s * np.arange(1, self.points + 1, dtype=np.float64)


class Predictor(Protocol):
    """Batched, stateful trajectory predictor."""

    name: str
    state_dim: int
    spec: PathSpec

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``state`` (n, state_dim) by the fixes in ``kin``.

        Returns ``(paths, new_state)``: paths of shape (n, spec.points, 2) holding absolute x/y
        at ``kin.ts + spec.offsets_s``. Rows of ``state`` for vehicles with ``kin.first`` are
        zeros.
        """
        ...


def constant_velocity_paths(kin: Kinematics, offsets_s: np.ndarray) -> np.ndarray:
    """Straight-line extrapolation at the current speed and heading."""
    vx = kin.speed * np.cos(kin.heading)
    vy = kin.speed * np.sin(kin.heading)
    t = offsets_s[None, :]
    return np.stack([kin.x[:, None] + vx[:, None] * t, kin.y[:, None] + vy[:, None] * t], -1)


def constant_turn_paths(kin: Kinematics, offsets_s: np.ndarray) -> np.ndarray:
    """Constant turn rate and velocity (CTRV); a straight line while the yaw rate is within
    the estimator's noise (``YAW_NOISE_RPS``): at 25 m/s a noise of 0.1 rad/s bends a 4 s
    path 20 m sideways, across the oncoming lane."""
    w = kin.yaw_rate[:, None]
    h = kin.heading[:, None]
    v = kin.speed[:, None]
    t = offsets_s[None, :]
    turning = np.abs(w) > YAW_NOISE_RPS
    safe_w = np.where(turning, w, 1.0)
    dx = np.where(turning, v / safe_w * (np.sin(h + w * t) - np.sin(h)), v * np.cos(h) * t)
    dy = np.where(turning, v / safe_w * (np.cos(h) - np.cos(h + w * t)), v * np.sin(h) * t)
    return np.stack([kin.x[:, None] + dx, kin.y[:, None] + dy], -1)


class ConstantVelocity:
    """Constant-velocity baseline (stateless)."""

    name = "cv"
    state_dim = 0

    def __init__(self, spec: PathSpec = PathSpec()) -> None:
        self.spec = spec
        self._offsets = spec.offsets_s

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return constant_velocity_paths(kin, self._offsets), state


class ConstantTurnRate:
    """Constant turn rate and velocity (CTRV) baseline (stateless)."""

    name = "ctrv"
    state_dim = 0

    def __init__(self, spec: PathSpec = PathSpec()) -> None:
        self.spec = spec
        self._offsets = spec.offsets_s

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return constant_turn_paths(kin, self._offsets), state
