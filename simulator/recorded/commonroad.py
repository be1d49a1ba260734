"""CommonRoad scenarios (XML, format 2020a; 2018b obstacles too): dynamic obstacles' states.

A state's position is the obstacle's centre, its orientation the heading (radians,
counter-clockwise from +x, the same frame as ours) and its velocity the speed; time is an
integer step of the scenario's ``timeStepSize``. A rectangle shape gives length and width, a
circle its diameter for both. Scenarios have no absolute time: each gets its own window of
event time (``start_ts + k * slot_s`` for the k-th file) so that the vehicles of different
scenarios never meet, and its vehicles are named ``<scenario>/<obstacle id>``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajstream.simulator.recorded.records import ImportFailed, Positions

# 2026-01-01T00:00:00Z: recorded traffic sits apart from anything live or simulated.
DEFAULT_START_TS = 1767225600.0
DEFAULT_SLOT_S = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    positions: Positions  # event times relative to the scenario's start (step x dt)
    duration_s: float


def read_commonroad(paths: Sequence[Path], *, start_ts: float = DEFAULT_START_TS,
                    slot_s: float = DEFAULT_SLOT_S) -> tuple[Positions, int]:
    """Every dynamic obstacle of every scenario, the k-th file shifted to its slot
    ``start_ts + k * slot_s``; returns the positions and how many obstacles had no states."""
    if not (math.isfinite(slot_s) and slot_s > 0):
        raise ImportFailed(f"the slot length must be > 0 s, got {slot_s!r}")
    parts: list[Positions] = []
    seen: dict[str, Path] = {}
    skipped = 0
    for k, path in enumerate(paths):
        scenario, empty = read_scenario(path)
        skipped += empty
        if scenario.name in seen:
            raise ImportFailed(f"{path}: scenario {scenario.name} is already in "
                               f"{seen[scenario.name]}; its vehicles would share names")
        seen[scenario.name] = path
        if scenario.duration_s >= slot_s:
            raise ImportFailed(f"{path}: scenario {scenario.name} lasts "
                               f"{scenario.duration_s:g} s, longer than a slot of {slot_s:g} s "
                               "(raise the slot length)")
        p = scenario.positions
        parts.append(Positions(p.vehicle_id, p.ts + (start_ts + k * slot_s), p.x, p.y, p.speed,
                               p.heading, p.length, p.width))
    return Positions.concat(parts), skipped


def read_scenario(path: Path) -> tuple[Scenario, int]:
    """One scenario file; also how many dynamic obstacles it has without any state."""
    if path.is_file() and path.stat().st_size == 0:
        raise ImportFailed(f"{path}: the file is empty")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ImportFailed(f"{path}: not well-formed XML ({exc}); is the file "
                           "truncated?") from exc
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror}") from exc
    if root.tag != "commonRoad":
        raise ImportFailed(f"{path}: not a CommonRoad scenario (the root element is "
                           f"<{root.tag}>, expected <commonRoad>)")
    dt = _number(root.get("timeStepSize"), f"{path}: timeStepSize of <commonRoad>")
    if not dt > 0:
        raise ImportFailed(f"{path}: timeStepSize must be > 0, got {dt:g}")
    name = root.get("benchmarkID") or root.get("scenarioID") or path.stem
    rows: list[tuple[str, float, float, float, float, float, float, float]] = []
    empty = 0
    for el in root:
        dynamic = el.tag == "dynamicObstacle" or (
            el.tag == "obstacle" and (el.findtext("role") or "").strip() == "dynamic")
        if not dynamic:
            continue
        oid = el.get("id")
        if not oid:
            raise ImportFailed(f"{path}: a dynamic obstacle has no id")
        where = f"{path}: obstacle {oid}"
        length, width = _size(el, where)
        states = [s for s in [el.find("initialState"), *el.findall("trajectory/state")]
                  if s is not None]
        if not states:
            empty += 1
            continue
        vid = f"{name}/{oid}"
        steps: set[int] = set()
        for state in states:
            step = _step(state, where)
            if step in steps:
                raise ImportFailed(f"{where}: two states at time step {step}")
            steps.add(step)
            at = f"{where}, time step {step}"
            point = state.find("position/point")
            if point is None:
                raise ImportFailed(f"{at}: the position is not a point (uncertain or "
                                   "lanelet positions are not supported)")
            x = _number(point.findtext("x"), f"{at}: position x")
            y = _number(point.findtext("y"), f"{at}: position y")
            heading = _exact(state, "orientation", at)
            speed = _exact(state, "velocity", at)
            rows.append((vid, step * dt, x, y, speed, heading, length, width))
    if not rows:
        positions = Positions.concat([])
        return Scenario(name, positions, 0.0), empty
    columns = list(zip(*rows, strict=True))
    positions = Positions(np.array(columns[0], dtype=object),
                          *(np.array(c, dtype=np.float64) for c in columns[1:]))
    return Scenario(name, positions, float(positions.ts.max())), empty


def _number(text: str | None, what: str) -> float:
    if text is None or not text.strip():
        raise ImportFailed(f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise ImportFailed(f"{what} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ImportFailed(f"{what} is not finite: {text.strip()!r}")
    return value


def _exact(state: ET.Element, name: str, at: str) -> float:
    """An ``<exact>`` value, NaN when the state does not give it at all."""
    node = state.find(name)
    if node is None:
        return math.nan
    exact = node.find("exact")
    if exact is None:
        raise ImportFailed(f"{at}: {name} has no exact value (intervals are not supported)")
    return _number(exact.text, f"{at}: {name}")


def _step(state: ET.Element, where: str) -> int:
    value = _exact(state, "time", where)
    if math.isnan(value):
        raise ImportFailed(f"{where}: a state has no time")
    if value != int(value) or value < 0:
        raise ImportFailed(f"{where}: time step {value:g} is not a whole number >= 0")
    return int(value)


def _size(el: ET.Element, where: str) -> tuple[float, float]:
    rect = el.find("shape/rectangle")
    if rect is not None:
        return (_number(rect.findtext("length"), f"{where}: rectangle length"),
                _number(rect.findtext("width"), f"{where}: rectangle width"))
    circle = el.find("shape/circle")
    if circle is not None:
        diameter = 2.0 * _number(circle.findtext("radius"), f"{where}: circle radius")
        return diameter, diameter
    return math.nan, math.nan  # a polygon or no shape: the contract's default size applies
