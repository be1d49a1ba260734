"""Road network geometry and signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajstream.simulator.world import GREEN, LEFT, RIGHT, STRAIGHT, World, WorldConfig


@pytest.fixture(scope="module", params=[1, 2, 3])
def world(request: pytest.FixtureRequest) -> World:
    return World(WorldConfig(grid_n=3, lanes=request.param),
                 np.linspace(0.0, 40.0, 9))


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.mod(a - b + math.pi, 2 * math.pi) - math.pi)


def test_movements_join_their_lanes_without_jumps(world: World) -> None:
    moves = np.flatnonzero(~world.seg_is_link[: world.n_seg])
    origin, nxt = world.seg_origin[moves], world.seg_next[moves]
    x0, y0, h0 = world.pose(origin, world.seg_length[origin])
    x1, y1, h1 = world.pose(moves, np.zeros(moves.shape[0]))
    assert np.allclose(x0, x1) and np.allclose(y0, y1)
    assert _angle_diff(h0, h1).max() < 1e-9
    x2, y2, h2 = world.pose(moves, world.seg_length[moves])
    x3, y3, h3 = world.pose(nxt, np.zeros(moves.shape[0]))
    assert np.allclose(x2, x3) and np.allclose(y2, y3)
    assert _angle_diff(h2, h3).max() < 1e-9


def test_turns_go_where_they_say(world: World) -> None:
    moves = np.flatnonzero(~world.seg_is_link[: world.n_seg])
    _, _, h_in = world.pose(moves, np.zeros(moves.shape[0]))
    _, _, h_out = world.pose(moves, world.seg_length[moves])
    turned = np.mod(h_out - h_in + math.pi, 2 * math.pi) - math.pi
    expected = {STRAIGHT: 0.0, LEFT: math.pi / 2, RIGHT: -math.pi / 2}
    for t, angle in expected.items():
        sel = world.seg_turn[moves] == t
        assert sel.any()
        assert np.allclose(turned[sel], angle)
    # left turns start in the innermost lane, right turns in the curb lane
    lanes = world.seg_lane[world.seg_origin[moves]]
    assert (lanes[world.seg_turn[moves] == LEFT] == 0).all()
    assert (lanes[world.seg_turn[moves] == RIGHT] == world.lanes - 1).all()


def test_lanes_are_a_lane_width_apart_and_traffic_keeps_right(world: World) -> None:
    w = world.config.lane_width_m
    links = world.link_segs
    x, y, h = world.pose(links, np.zeros(links.shape[0]))
    # a lane's offset from its road's centre line, to the right of the direction of travel
    road_line = np.where(np.isclose(np.sin(h), 0.0, atol=1e-9), np.round(y / 150) * 150,
                         np.round(x / 150) * 150)
    across = np.where(np.isclose(np.sin(h), 0.0, atol=1e-9), y, x)
    right = np.where(np.isclose(np.sin(h), 0.0, atol=1e-9), -np.cos(h), np.sin(h))
    offset = (across - road_line) * right
    assert np.allclose(offset, (world.seg_lane[links] + 0.5) * w)


def test_cross_directions_are_never_green_together(world: World) -> None:
    for t in np.arange(0.0, world.config.cycle_s * 2, 0.25):
        state = world.signal_state(float(t)).reshape(-1, 4)
        ew_green = state[:, 0] == GREEN
        ns_green = state[:, 1] == GREEN
        assert not (ew_green & ns_green).any()
        assert (state[:, 0] == state[:, 2]).all() and (state[:, 1] == state[:, 3]).all()


def test_every_approach_gets_green(world: World) -> None:
    seen = np.zeros(world.n_junctions * 4, dtype=bool)
    for t in np.arange(0.0, world.config.cycle_s, 0.5):
        seen |= world.signal_state(float(t)) == GREEN
    assert seen.all()


def test_entry_lanes_start_at_the_edge_of_the_map(world: World) -> None:
    x, y, _ = world.pose(world.entry_segs, np.zeros(world.entry_segs.shape[0]))
    span = (world.config.grid_n - 1) * world.config.block_m
    stub = world.config.stub_m
    outside = (np.isclose(x, -stub) | np.isclose(x, span + stub) | np.isclose(y, -stub)
               | np.isclose(y, span + stub))
    assert outside.all()
    assert world.entry_segs.shape[0] == 4 * world.config.grid_n * world.lanes
