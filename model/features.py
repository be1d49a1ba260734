"""Per-step network inputs and the vehicle-centric frame the network predicts in.

Everything is expressed relative to the vehicle's current position and heading, so a
trajectory that is translated or rotated gives the same features and the same predicted path
in the vehicle frame: the network never sees absolute coordinates. ``dt`` is an input because
fixes arrive at irregular intervals.

The path is predicted as a residual over constant velocity (CV) in the vehicle frame, where
CV is simply ``(speed * t, 0)``; a zero residual reproduces the CV baseline exactly.
"""

from __future__ import annotations

import numpy as np

from trajstream.model.kinematics import Kinematics
from trajstream.model.neighbours import NEIGHBOUR_FEATURES

OWN_FEATURES: tuple[str, ...] = (
    "disp_fwd_m",  # displacement since the previous fix, along the current heading
    "disp_lat_m",  # ... and to the left of it
    "dt_s",  # event time since the previous fix (0 on the first fix)
    "speed_mps",
    "yaw_rate_rps",
    "accel_mps2",
    "first",  # 1 on a vehicle's first fix (or the first after a reset)
    "disp_resid_m",  # disp_fwd - speed * dt: how far the last fix is off the CV estimate
)
N_OWN_FEATURES = len(OWN_FEATURES)
# the vehicle's own track, then the vehicles around it (model/neighbours.py)
FEATURES: tuple[str, ...] = OWN_FEATURES + NEIGHBOUR_FEATURES
N_FEATURES = len(FEATURES)
MAX_DT_S = 5.0  # longer gaps reset the state in the processor; clip so outliers stay bounded


def raw_features(kin: Kinematics, neighbours: np.ndarray | None = None) -> np.ndarray:
    """Un-normalised features (n, N_FEATURES) float64, invariant to translation and rotation.

    ``neighbours`` are :func:`model.neighbours.neighbour_features` (None: nobody around).
    """
    c, s = np.cos(kin.heading), np.sin(kin.heading)
    dx = kin.x - kin.prev_x
    dy = kin.y - kin.prev_y
    fwd = c * dx + s * dy
    lat = -s * dx + c * dy
    dt = np.clip(kin.dt, 0.0, MAX_DT_S)
    first = kin.first.astype(np.float64)
    out = np.zeros((len(kin), N_FEATURES))
    out[:, :N_OWN_FEATURES] = np.stack(
        [fwd, lat, dt, kin.speed, kin.yaw_rate, kin.accel, first, fwd - kin.speed * dt], axis=-1
    )
    if neighbours is not None:
        out[:, N_OWN_FEATURES:] = neighbours
    return out


def cv_local(speed: np.ndarray, offsets_s: np.ndarray) -> np.ndarray:
    """Constant-velocity path in the vehicle frame, (n, P, 2)."""
    fwd = speed[:, None] * offsets_s[None, :]
    return np.stack([fwd, np.zeros_like(fwd)], axis=-1)


def to_local(
    x: np.ndarray, y: np.ndarray, heading: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Absolute points (n, P, 2) -> vehicle frame of (x, y, heading) per row."""
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    dx = points[..., 0] - x[:, None]
    dy = points[..., 1] - y[:, None]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


def to_world(
    x: np.ndarray, y: np.ndarray, heading: np.ndarray, local: np.ndarray
) -> np.ndarray:
    """Vehicle-frame points (n, P, 2) -> absolute x/y (float64)."""
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    lx = local[..., 0].astype(np.float64)
    ly = local[..., 1].astype(np.float64)
    return np.stack([x[:, None] + c * lx - s * ly, y[:, None] + s * lx + c * ly], axis=-1)
