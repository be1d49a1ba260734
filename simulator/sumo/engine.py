"""One SUMO simulation in this process (libsumo): keeps the city at its number of vehicles,
steps it, and reads back every vehicle's state and SUMO's collisions.

Vehicles are inserted on demand: whenever fewer than ``vehicles`` are driving or waiting to
enter, new ones get a route from the pool and a driver type from the mix, both drawn from
the engine's random stream, and enter anywhere free on their first edge. Their SUMO ids are
consecutive integers, published as ``veh-<id>``.

SUMO reports a vehicle's front bumper and an angle in degrees clockwise from north; the
state here is the centre of the footprint (half a length behind the bumper, along the
heading) and the heading in radians counter-clockwise from +x.

Collisions are SUMO's own: physical contact only (``collision.mingap-factor`` 0), checked
on lanes and inside junctions (reported as warnings, handled here); both vehicles stand
still from the next step on and are removed after ``crash_hold_s``.
Lane changes are continuous (``lanechange.duration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from trajstream.errors import ConfigError
from trajstream.simulator.sumo.binaries import libsumo
from trajstream.simulator.sumo.config import SumoConfig
from trajstream.simulator.sumo.conflicts import Approach, conflict_kind
from trajstream.simulator.sumo.drivers import DriverMix

_LATERAL_CHANGE_M = 0.2  # off the lane centre by more than this: changing lanes
_running = False  # libsumo holds one simulation per process


@dataclass(frozen=True)
class VehicleStates:
    """Every vehicle present after a step, ordered by id."""

    vid: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    length: np.ndarray
    width: np.ndarray


@dataclass(frozen=True)
class Collision:
    """A contact SUMO registered in the last step."""

    collider: int  # the vehicle SUMO holds (more) responsible
    victim: int
    sumo_type: str  # collision, side, frontal, junction, ...
    kind: str  # pre-crash conflict kind (see conflicts.py)
    collider_speed: float  # m/s at contact (the states read after the step are stopped)
    victim_speed: float


def centre_pose(front_x: np.ndarray, front_y: np.ndarray, angle_deg: np.ndarray,
                length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SUMO's front bumper and angle (degrees clockwise from north) -> the footprint's centre
    and the heading in radians counter-clockwise from +x (-pi..pi)."""
    angle = np.radians(angle_deg)
    ux, uy = np.sin(angle), np.cos(angle)
    half = 0.5 * length
    return front_x - half * ux, front_y - half * uy, np.arctan2(uy, ux)


class SumoEngine:
    """A running libsumo simulation; use as a context manager (one at a time per process)."""

    def __init__(self, cfg: SumoConfig, *, net_file: Path, vtypes_file: Path,
                 routes: list[list[str]], vehicles: int, step_s: float, sumo_seed: int,
                 mix: DriverMix, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.vehicles = vehicles
        self.step_s = step_s
        self.mix = mix
        self.rng = rng
        self._routes = routes
        self._args = [
            "sumo", "-n", str(net_file), "-a", str(vtypes_file),
            "--step-length", f"{step_s:g}", "--seed", str(sumo_seed), "--begin", "0",
            "--collision.action", "warn",
            "--collision.check-junctions", "true", "--collision.mingap-factor", "0",
            "--time-to-teleport", f"{cfg.jam_timeout_s:g}", "--time-to-teleport.remove",
            "true", "--lanechange.duration", f"{cfg.lane_change_s:g}",
            "--no-step-log", "true", "--no-warnings", "true", "--xml-validation", "never",
        ]
        self._ls: ModuleType | None = None
        self._next_id = 0
        self._size: dict[int, tuple[float, float]] = {}
        self._wrecks: dict[int, float] = {}  # crashed vehicle -> SUMO time to remove it
        self._hit: dict[int, set[int]] = {}  # vehicle -> those it collided with
        self._burst = max(10, vehicles // 20)  # insertions per step while filling up
        self.inserted = 0

    def __enter__(self) -> SumoEngine:
        global _running
        if _running:
            raise ConfigError("one SUMO simulation at a time per process")
        ls = libsumo()
        ls.start(self._args)
        _running = True
        self._ls = ls
        for i, edges in enumerate(self._routes):
            ls.route.add(f"r{i}", edges)
        return self

    def __exit__(self, *exc: object) -> None:
        global _running
        if self._ls is not None:
            self._ls.close()
            self._ls = None
            _running = False

    @property
    def ls(self) -> Any:
        assert self._ls is not None, "use SumoEngine as a context manager"
        return self._ls

    def step(self) -> tuple[VehicleStates, list[Collision]]:
        """Insert vehicles up to the target, advance one step, read states and collisions."""
        ls = self.ls
        self._top_up()
        ls.simulationStep()
        for name in ls.simulation.getDepartedIDList():
            ls.vehicle.subscribe(name, (ls.VAR_POSITION, ls.VAR_ANGLE, ls.VAR_SPEED))
        states = self._states(ls.vehicle.getAllSubscriptionResults())
        collisions = []
        now = ls.simulation.getTime()
        for c in ls.simulation.getCollisions():  # SUMO repeats a contact while it lasts
            a, b = int(c.collider), int(c.victim)
            if b in self._hit.get(a, ()):
                continue
            self._hit.setdefault(a, set()).add(b)
            self._hit.setdefault(b, set()).add(a)
            collisions.append(self._collision(c))
            for vid in (a, b):
                if vid not in self._wrecks:
                    self._wreck(str(vid))
                    self._wrecks[vid] = now + self.cfg.crash_hold_s
        for vid in [v for v, until in self._wrecks.items() if until <= now + 1e-9]:
            del self._wrecks[vid]
            try:
                ls.vehicle.unsubscribe(str(vid))
                ls.vehicle.remove(str(vid))
            except ls.TraCIException:
                pass  # already gone
        return states, collisions

    def _wreck(self, name: str) -> None:
        """A crashed vehicle stands still from the next step on (SUMO's own collision stop
        brakes it like a driver would, through the other car) until it is removed."""
        ls = self.ls
        try:
            ls.vehicle.setSpeedMode(name, 0)  # no acceleration or braking limits
            ls.vehicle.setSpeed(name, 0.0)
            ls.vehicle.setLaneChangeMode(name, 0)
        except ls.TraCIException:
            pass  # already gone

    def _top_up(self) -> None:
        ls = self.ls
        waiting = len(ls.simulation.getPendingVehicles())
        n = min(self.vehicles - ls.vehicle.getIDCount() - waiting, self._burst)
        if n <= 0:
            return
        types = self.mix.draw(n)
        routes = self.rng.integers(0, len(self._routes), n)
        for vtype, route in zip(types, routes.tolist(), strict=True):
            vid = self._next_id
            self._next_id += 1
            ls.vehicle.add(str(vid), f"r{route}", typeID=vtype, depart="now",
                           departLane="best", departPos="random_free", departSpeed="max")
            self._size[vid] = self.mix.size[vtype]
        self.inserted += n

    def _states(self, results: dict[str, dict[int, Any]]) -> VehicleStates:
        n = len(results)
        ls = self.ls
        pos_key, angle_key, speed_key = ls.VAR_POSITION, ls.VAR_ANGLE, ls.VAR_SPEED
        vid = np.fromiter((int(k) for k in results), dtype=np.int64, count=n)
        values = list(results.values())
        front = np.array([v[pos_key] for v in values], dtype=np.float64).reshape(n, 2)
        angle_deg = np.fromiter((v[angle_key] for v in values), np.float64, n)
        speed = np.fromiter((v[speed_key] for v in values), np.float64, n)
        size = self._size
        dims = np.array([size[i] for i in vid.tolist()], dtype=np.float64).reshape(n, 2)
        order = np.argsort(vid, kind="stable")
        x, y, heading = centre_pose(front[:, 0], front[:, 1], angle_deg, dims[:, 0])
        return VehicleStates(vid[order], x[order], y[order], heading[order],
                             np.maximum(speed[order], 0.0), dims[order, 0], dims[order, 1])

    def forget(self, gone: np.ndarray) -> None:
        """Drop the sizes of vehicles no longer present (bounded memory in endless runs)."""
        for vid in gone.tolist():
            self._size.pop(vid, None)
            self._hit.pop(vid, None)

    def _collision(self, c: Any) -> Collision:
        a, b = self._approach(c.collider), self._approach(c.victim)
        return Collision(int(c.collider), int(c.victim), str(c.type),
                         conflict_kind(str(c.type), a, b), float(c.colliderSpeed),
                         float(c.victimSpeed))

    def _approach(self, name: str) -> Approach:
        """Where a vehicle came from: the edge and lane before the junction it is in (or the
        edge it is on), that lane's heading at its end, and the turn it takes there."""
        ls = self.ls
        try:
            lane_id = ls.vehicle.getLaneID(name)
            route = ls.vehicle.getRoute(name)
            idx = ls.vehicle.getRouteIndex(name)
            lateral = ls.vehicle.getLateralLanePosition(name)
        except ls.TraCIException:  # already gone: nothing to derive the approach from
            return Approach(math.nan, "", "", -1, False)
        if not route or idx < 0:
            return Approach(math.nan, "", "", -1, False)
        edge = route[min(idx, len(route) - 1)]
        to_edge = route[idx + 1] if idx + 1 < len(route) else ""
        on_junction = lane_id.startswith(":")
        lane, turn = -1, ""
        for k in range(ls.edge.getLaneNumber(edge)):
            for link in ls.lane.getLinks(f"{edge}_{k}"):
                approached, via, direction = link[0], link[4], link[6]
                if to_edge and approached.rsplit("_", 1)[0] != to_edge:
                    continue
                if not turn:
                    turn = direction
                if on_junction and via == lane_id:
                    lane, turn = k, direction
        if not on_junction:
            lane = ls.vehicle.getLaneIndex(name)
        shape = ls.lane.getShape(f"{edge}_{max(lane, 0)}")
        (x0, y0), (x1, y1) = shape[-2], shape[-1]
        return Approach(math.atan2(y1 - y0, x1 - x0), turn, edge, lane,
                        abs(lateral) > _LATERAL_CHANGE_M)
