"""The pre-crash scenario library: exact contacts, knowable leads, safe look-alikes, contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajstream.simulator import precrash
from trajstream.simulator.precrash import CONFLICTS, DT, SAFE, Motion, Plan, resolve_contacts
from trajstream.simulator.truth import axis_separation


def _sep(a: Motion, b: Motion, k: int) -> float:
    x, y = np.array([a.x[k], b.x[k]]), np.array([a.y[k], b.y[k]])
    h = np.array([a.heading[k], b.heading[k]])
    return float(axis_separation(x, y, h, np.array([a.length, b.length]),
                                 np.array([a.width, b.width]), np.array([0]), np.array([1]))[0])


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_conflicts_touch_exactly_when_reported_and_were_knowable(name: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        plan, contacts = precrash._draw(rng, name)
        assert contacts
        kind, lead = CONFLICTS[name]
        for i, j, k in contacts:
            a, b = plan.motions[i], plan.motions[j]
            assert _sep(a, b, k) <= 0.0 < _sep(a, b, k - 1)  # first touch on the 2 ms grid
            onset = min(plan.onset[v] for v in (i, j) if v in plan.onset)
            assert k * DT - onset >= lead + 1.0
    if name == "pile_up":
        assert len(contacts) == 2


@pytest.mark.parametrize("name", SAFE)
def test_safe_look_alikes_never_touch(name: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        plan, contacts = precrash._draw(rng, name)
        assert contacts == []


def test_wrecks_stop_where_they_touch() -> None:
    t = np.arange(0.0, 4.0, DT)
    still = Motion(np.full_like(t, 20.0), np.zeros_like(t), np.zeros_like(t), np.zeros_like(t))
    mover = Motion(10.0 * t, np.zeros_like(t), np.zeros_like(t), np.full_like(t, 10.0))
    plan = Plan([still, mover])
    [(i, j, k)] = resolve_contacts(plan)
    assert (i, j) == (0, 1)
    assert k * DT == pytest.approx((20.0 - 4.5) / 10.0, abs=DT)
    assert plan.motions[1].x[-1] == plan.motions[1].x[k] and plan.motions[1].speed[-1] == 0.0


def test_library_files_follow_the_contracts_and_are_reproducible() -> None:
    lib = precrash.generate(seed=5, per_scenario=2)
    again = precrash.generate(seed=5, per_scenario=2)
    assert lib.positions == again.positions and lib.truth == again.truth
    ts = [p["ts"] for p in lib.positions]
    assert ts == sorted(ts)
    scen = [e for e in lib.truth if e["type"] == "scenario"]
    assert len(scen) == 2 * (len(CONFLICTS) + len(SAFE))
    assert {e["reported"] for e in scen} == {True, False}
    owner = {v: e for e in scen for v in e["vehicles"]}
    for p in lib.positions:
        s = owner[p["vehicle_id"]]
        assert s["ts"] <= p["ts"] <= s["end_ts"] + 1e-6
        assert ("speed" in p) == ("heading" in p) == s["reported"]
        assert all(math.isfinite(p[k]) for k in ("x", "y"))
    for e in lib.truth:
        if e["type"] == "collision":
            s = owner[e["vehicle_a"]]
            assert e["vehicle_a"] < e["vehicle_b"] and owner[e["vehicle_b"]] is s
            assert s["conflict"] and e["kind"] == CONFLICTS[s["kind"]][0]
            assert e["required_lead_s"] == CONFLICTS[s["kind"]][1]
    # every vehicle is observed for at least 3 s before its contact
    first = {}
    for p in lib.positions:
        first.setdefault(p["vehicle_id"], p["ts"])
    for e in lib.truth:
        if e["type"] == "collision":
            assert e["ts"] - max(first[e["vehicle_a"]], first[e["vehicle_b"]]) >= 3.0
