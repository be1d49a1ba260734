"""The baselines' paths: constant velocity and constant turn rate (CTRV)."""

from __future__ import annotations

import numpy as np

from trajstream.model.kinematics import YAW_NOISE_RPS, Kinematics
from trajstream.model.predictors import PathSpec, constant_turn_paths, constant_velocity_paths


def kin(yaw_rate: list[float], speed: float = 25.0, heading: float = 0.3) -> Kinematics:
    n = len(yaw_rate)
    z, one = np.zeros(n), np.ones(n)
    return Kinematics(ts=z, x=z + 5.0, y=z - 2.0, prev_x=z, prev_y=z, dt=z + 0.1,
                      speed=one * speed, heading=one * heading,
                      yaw_rate=np.array(yaw_rate), accel=z, first=z.astype(bool),
                      heading_known=one.astype(bool), speed_now=one * speed)


def test_ctrv_goes_straight_while_the_yaw_rate_is_within_noise() -> None:
    # at 25 m/s a yaw rate of 0.1 rad/s held for 4 s would end 20 m sideways
    k = kin([0.0, 0.1, -0.5 * YAW_NOISE_RPS, YAW_NOISE_RPS])
    offsets = PathSpec().offsets_s
    np.testing.assert_allclose(constant_turn_paths(k, offsets),
                               constant_velocity_paths(k, offsets), atol=1e-9)


def test_ctrv_turns_on_its_circle_beyond_the_noise() -> None:
    w, v, h = 0.5, 10.0, 0.3
    k = kin([w, -w], speed=v, heading=h)
    offsets = PathSpec().offsets_s
    paths = constant_turn_paths(k, offsets)
    for row, sign in ((0, 1.0), (1, -1.0)):
        # the centre lies a radius v / w to the left (right for a right turn)
        cx = 5.0 - sign * v / w * np.sin(h)
        cy = -2.0 + sign * v / w * np.cos(h)
        r = np.hypot(paths[row, :, 0] - cx, paths[row, :, 1] - cy)
        np.testing.assert_allclose(r, v / w, rtol=1e-9)
        chord = np.hypot(paths[row, -1, 0] - 5.0, paths[row, -1, 1] + 2.0)
        np.testing.assert_allclose(chord, 2 * v / w * np.sin(w * offsets[-1] / 2), rtol=1e-9)
