"""The pre-crash conflict kind of a SUMO collision, from SUMO's type and the approaches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajstream.simulator.sumo.conflicts import (
    CONFLICT_KINDS,
    CROSSING_PATHS,
    LANE_CHANGE,
    LEFT_TURN_ACROSS_PATH,
    OPPOSITE_DIRECTION,
    REAR_END,
    Approach,
    approach_angle_deg,
    conflict_kind,
)
from trajstream.simulator.sumo.engine import centre_pose

EAST, NORTH, WEST, SOUTH = 0.0, math.pi / 2, math.pi, -math.pi / 2


def _ap(heading: float, turn: str = "s", edge: str = "e1", lane: int = 0,
        changing: bool = False) -> Approach:
    return Approach(heading, turn, edge, lane, changing)


@pytest.mark.parametrize(("sumo_type", "a", "b", "kind"), [
    # on a lane: SUMO's own types
    ("collision", _ap(EAST), _ap(EAST), REAR_END),
    ("collision", _ap(EAST, changing=True), _ap(EAST), LANE_CHANGE),
    ("side", _ap(EAST), _ap(EAST, lane=1), LANE_CHANGE),
    ("frontal", _ap(EAST), _ap(WEST), OPPOSITE_DIRECTION),
    # in a junction: from the approaches
    ("junction", _ap(EAST, "l"), _ap(WEST, "s", "e2"), LEFT_TURN_ACROSS_PATH),
    ("junction", _ap(WEST, "s", "e2"), _ap(EAST, "L"), LEFT_TURN_ACROSS_PATH),
    ("junction", _ap(EAST, "s"), _ap(WEST, "r", "e2"), OPPOSITE_DIRECTION),
    ("junction", _ap(EAST, "s"), _ap(NORTH, "s", "e2"), CROSSING_PATHS),
    ("junction", _ap(EAST, "l"), _ap(SOUTH, "s", "e2"), CROSSING_PATHS),
    ("junction", _ap(EAST, "r"), _ap(EAST + 0.1, "s"), REAR_END),
    ("junction", _ap(EAST, "l", lane=1), _ap(EAST, "l", lane=0), LANE_CHANGE),
    ("junction", _ap(EAST, "s", "ramp"), _ap(EAST + 0.3, "s", "main"), LANE_CHANGE),
])
def test_conflict_kind(sumo_type: str, a: Approach, b: Approach, kind: str) -> None:
    assert conflict_kind(sumo_type, a, b) == kind
    assert conflict_kind(sumo_type, b, a) == kind, "the order of the two vehicles is moot"
    assert kind in CONFLICT_KINDS


def test_unknown_approach_in_a_junction_is_still_a_kind() -> None:
    unknown = Approach(math.nan, "", "", -1, False)
    assert conflict_kind("junction", unknown, _ap(EAST)) in CONFLICT_KINDS


def test_approach_angle_wraps_around() -> None:
    assert approach_angle_deg(math.radians(170), math.radians(-170)) == pytest.approx(20)
    assert approach_angle_deg(EAST, WEST) == pytest.approx(180)
    assert approach_angle_deg(NORTH, EAST) == pytest.approx(90)


def test_centre_pose_from_sumo_front_bumper_and_compass_angle() -> None:
    # SUMO angles: 0 north, 90 east, clockwise; positions are the front bumper
    front_x = np.array([10.0, 10.0, 10.0, 10.0])
    front_y = np.array([20.0, 20.0, 20.0, 20.0])
    angle = np.array([90.0, 0.0, 180.0, 270.0])
    length = np.array([4.0, 5.0, 4.0, 6.0])
    x, y, heading = centre_pose(front_x, front_y, angle, length)
    np.testing.assert_allclose(x, [8.0, 10.0, 10.0, 13.0], atol=1e-9)
    np.testing.assert_allclose(y, [20.0, 17.5, 22.0, 20.0], atol=1e-9)
    np.testing.assert_allclose(np.cos(heading), [1, 0, 0, -1], atol=1e-9)
    np.testing.assert_allclose(np.sin(heading), [0, 1, -1, 0], atol=1e-9)
    assert np.all(np.abs(heading) <= math.pi)
