"""The kind of conflict behind a SUMO collision, in the terms of the NHTSA pre-crash typology
(Najm et al., 2007): rear-end, lane change, opposite direction, left turn across path
(LTAP/OD), crossing paths (straight crossing and turning into the path).

SUMO says how it saw the contact (``collision``: same lane, the leader is the victim;
``side``: caused by a lane change; ``frontal``: on the lane of the opposite direction;
``junction``: footprints overlapping inside an intersection). Inside an intersection the
kind comes from where the two vehicles came from: the headings of the lanes they approached
on, and the turn each was making.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REAR_END = "rear_end"
LANE_CHANGE = "lane_change"
OPPOSITE_DIRECTION = "opposite_direction"
LEFT_TURN_ACROSS_PATH = "left_turn_across_path"
CROSSING_PATHS = "crossing_paths"
CONFLICT_KINDS: tuple[str, ...] = (REAR_END, LANE_CHANGE, OPPOSITE_DIRECTION,
                                   LEFT_TURN_ACROSS_PATH, CROSSING_PATHS)

# SUMO link directions: s straight, l/L (partially) left, r/R right, t turnaround
_LEFT_TURNS = frozenset("lLt")
SAME_APPROACH_DEG = 30.0  # approach headings within this are one direction of travel
OPPOSITE_APPROACH_DEG = 150.0  # ... and beyond this, opposite directions


@dataclass(frozen=True)
class Approach:
    """How one vehicle came into the conflict."""

    heading: float  # radians CCW from +x: the end of the lane it approached on
    turn: str  # SUMO link direction it was taking there ("" when unknown)
    edge: str  # the edge it approached on
    lane: int  # the lane index it approached on (-1 when unknown)
    changing_lane: bool  # in the middle of a lane change at contact


def approach_angle_deg(a: float, b: float) -> float:
    """Angle between two headings, 0..180 degrees."""
    d = abs(math.remainder(a - b, 2 * math.pi))
    return math.degrees(d)


def conflict_kind(sumo_type: str, a: Approach, b: Approach) -> str:
    """The pre-crash kind of a collision between the vehicles that approached as ``a``
    and ``b`` (order does not matter)."""
    if sumo_type == "frontal":
        return OPPOSITE_DIRECTION
    if sumo_type == "side":
        return LANE_CHANGE
    if sumo_type != "junction":  # same lane ("collision", "swap")
        return LANE_CHANGE if a.changing_lane or b.changing_lane else REAR_END
    angle = approach_angle_deg(a.heading, b.heading)
    if angle <= SAME_APPROACH_DEG:
        same_lane = a.edge == b.edge and a.lane == b.lane and a.lane >= 0
        return REAR_END if same_lane else LANE_CHANGE
    if angle >= OPPOSITE_APPROACH_DEG:
        if a.turn in _LEFT_TURNS or b.turn in _LEFT_TURNS:
            return LEFT_TURN_ACROSS_PATH
        return OPPOSITE_DIRECTION
    return CROSSING_PATHS
