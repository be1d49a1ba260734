"""Conflict kinds of the NHTSA pre-crash typology, read off the vehicles' recorded motion.

A collision in a truth file may name its kind (the scenario library does); otherwise it is
classified from the two tracks: the angle between the headings at contact, the angle two
seconds before (a left turn across the path starts oncoming), and, for same-direction
contacts, whether one was right behind the other (rear end) or beside it (lane change).
"""

from __future__ import annotations

import math

import numpy as np

from trajstream.stream.evaluation.tracks import Tracks

__all__ = ["KINDS", "classify"]

REAR_END = "rear_end"
CROSSING = "crossing_paths"
LEFT_TURN = "left_turn_across_path"
LANE_CHANGE = "lane_change"
OPPOSITE = "opposite_direction"
OTHER = "other"
KINDS: tuple[str, ...] = (REAR_END, CROSSING, LEFT_TURN, LANE_CHANGE, OPPOSITE, OTHER)

_SAME_RAD = math.radians(35.0)
_OPPOSITE_RAD = math.radians(145.0)
_LOOK_BACK_S = 2.0
_BESIDE_MARGIN_M = 0.3


def classify(tracks: Tracks, a: str, b: str, contact_ts: float) -> str:
    """The pre-crash kind of a contact between vehicles ``a`` and ``b`` at ``contact_ts``."""
    ia, ib = tracks.index.get(a), tracks.index.get(b)
    if ia is None or ib is None:
        return OTHER
    t = np.array([contact_ts - _LOOK_BACK_S, contact_ts - 0.5 * _LOOK_BACK_S, contact_ts])
    t = np.maximum(t, max(tracks.first_seen(ia), tracks.first_seen(ib)))
    xa, ya, ha, _ = tracks.state(ia, t)
    xb, yb, hb, _ = tracks.state(ib, t)
    dh = np.abs(np.angle(np.exp(1j * (hb - ha))))
    if dh[2] <= _SAME_RAD:
        # beside or behind one second before contact, in the frame of the mean heading
        axis = ha[1] + 0.5 * float(np.angle(np.exp(1j * (hb[1] - ha[1]))))
        lat = -(xb[1] - xa[1]) * math.sin(axis) + (yb[1] - ya[1]) * math.cos(axis)
        half = 0.5 * (tracks.width[ia] + tracks.width[ib])
        return REAR_END if abs(lat) < half + _BESIDE_MARGIN_M else LANE_CHANGE
    if dh[2] >= _OPPOSITE_RAD:
        return OPPOSITE
    if dh[0] >= _OPPOSITE_RAD:
        return LEFT_TURN
    return CROSSING
