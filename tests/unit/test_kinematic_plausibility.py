"""Reported speed and heading are checked against the motion (issue 12, finding 3).

Speeds in km/h, ``speed: 0`` on a moving vehicle, compass or degree headings and a unit
switch mid-stream used to be taken as reported: hundreds of false alerts, or every collision
missed. The kinematic estimator now compares each vehicle's reported values with its motion
between fixes over a tolerant window; a mismatch uses the derived value (the fix is kept),
counted by reason. Real motion (GPS noise, stops, hard braking, turns, recorded NGSIM
traffic) is never flagged; a recorded heading that contradicts the recorded positions is.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.unit.test_recorded_import import _data_dir
from trajstream.cli import main
from trajstream.model.kinematics import (
    HEADING_CHECK_MPS,
    HEADING_FLAG,
    HEADING_TOL_RAD,
    SPEED_FLAG,
    KinematicsTracker,
)
from trajstream.model.predictors import ConstantVelocity, PathSpec
from trajstream.stream import state as state_mod
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.state import JUMP_FLAG, StateStore

HZ = 10.0


def _drive(accel: Callable[[float], float], yaw: Callable[[float], float], seconds: float,
           v0: float, *, noise_m: float = 0.3, seed: int = 0, hz: float = HZ,
           ) -> dict[str, np.ndarray]:
    """A vehicle's true speed/heading and noisy fixes at ``hz`` (Euler, 10 ms steps)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * hz)
    out = {k: np.empty(n) for k in ("t", "x", "y", "speed", "heading")}
    x = y = h = 0.0
    v = v0
    fine = int(round(100 / hz))
    for i in range(n):
        t = i / hz
        out["t"][i], out["speed"][i], out["heading"][i] = t, v, h
        out["x"][i] = x + rng.normal(0, noise_m)
        out["y"][i] = y + rng.normal(0, noise_m)
        for j in range(fine):
            tt = t + j / (hz * fine)
            dt = 1 / (hz * fine)
            v = max(0.0, v + accel(tt) * dt)
            h += yaw(tt) * dt
            x += v * math.cos(h) * dt
            y += v * math.sin(h) * dt
    out["heading"] = (out["heading"] + np.pi) % (2 * np.pi) - np.pi
    return out


def _track(d: dict[str, np.ndarray], speed: np.ndarray, heading: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed one vehicle through a checking tracker; returns flags, speeds and headings used."""
    tk = KinematicsTracker(1, check_reported=True)
    s = np.array([0])
    flags, used_speed, used_heading = [], [], []
    for i in range(d["t"].size):
        k = tk.update(s, d["t"][i:i + 1] + 1e9, d["x"][i:i + 1], d["y"][i:i + 1],
                      speed[i:i + 1], heading[i:i + 1])
        flags.append(int(tk.flags[0]))
        used_speed.append(float(k.speed[0]))
        used_heading.append(float(k.heading[0]))
    return np.array(flags), np.array(used_speed), np.array(used_heading)


REAL = {
    "cruise with GPS noise": (lambda t: 0.0, lambda t: 0.0, 20.0, 15.0),
    "hard braking to a stop, then standing": (
        lambda t: -8.0 if 2.0 <= t < 4.5 else 0.0, lambda t: 0.0, 10.0, 20.0),
    "pulling away from a stop": (lambda t: 3.0 if t >= 2.0 else 0.0, lambda t: 0.0, 10.0, 0.0),
    "turning at a junction": (lambda t: 0.0, lambda t: 0.35 if 1.0 <= t < 5.5 else 0.0,
                              8.0, 8.0),
    "stop and go": (lambda t: 2.5 * math.sin(t), lambda t: 0.05 * math.cos(t / 2), 30.0, 6.0),
    "stopped dead within a fix (a crash)": (
        lambda t: -1500.0 if 4.0 <= t < 4.01 else 0.0, lambda t: 0.0, 8.0, 15.0),
}


@pytest.mark.parametrize("noise_m", [0.3, 0.0])
@pytest.mark.parametrize("name", list(REAL))
def test_real_motion_is_never_flagged(name: str, noise_m: float) -> None:
    """In GPS-grade noise and with exact fixes (whose fit window is only 3 fixes: the check
    still judges over the whole window)."""
    accel, yaw, seconds, v0 = REAL[name]
    for seed in range(3):
        d = _drive(accel, yaw, seconds, v0, noise_m=noise_m, seed=seed)
        flags, _, _ = _track(d, d["speed"], d["heading"])
        assert not flags.any(), (name, seed, np.flatnonzero(flags))


@pytest.mark.parametrize("hz", [1.0, 0.5])
@pytest.mark.parametrize("name", list(REAL))
def test_real_motion_of_a_slow_feed_is_never_flagged(name: str, hz: float) -> None:
    """Below ~2 Hz the check judges the newest 3 fixes (it judged nothing before)."""
    accel, yaw, seconds, v0 = REAL[name]
    for seed in range(5):
        d = _drive(accel, yaw, seconds + 6 / hz, v0, seed=seed, hz=hz)
        flags, _, _ = _track(d, d["speed"], d["heading"])
        assert not flags.any(), (name, seed, np.flatnonzero(flags))


def _cruise(seconds: float = 10.0, v0: float = 12.0, hz: float = HZ) -> dict[str, np.ndarray]:
    return _drive(lambda t: 0.0, lambda t: 0.02, seconds, v0, hz=hz)


@pytest.mark.parametrize("mistake,bit", [
    ("km/h", SPEED_FLAG), ("speed 0 while moving", SPEED_FLAG),
    ("compass heading", HEADING_FLAG), ("heading in degrees", HEADING_FLAG)])
def test_unit_mistakes_are_flagged_and_the_derived_motion_used(mistake: str, bit: int) -> None:
    d = _cruise()
    speed, heading = d["speed"].copy(), d["heading"].copy()
    if mistake == "km/h":
        speed *= 3.6
    elif mistake == "speed 0 while moving":
        speed[:] = 0.0
    elif mistake == "compass heading":
        heading = (np.pi / 2 - heading) % (2 * np.pi)
    else:
        heading = np.degrees(heading) % (2 * np.pi)  # small degree values pass the codec
    flags, used_speed, used_heading = _track(d, speed, heading)
    # judged once the fit is sure enough (under a second with 0.3 m of GPS noise; degrees
    # are right at heading 0, so wrong only once the heading has moved): every later fix
    # is flagged, and only for its reason
    assert not (flags & ~bit).any() and (flags[20:] == bit).all(), flags
    assert np.abs(used_speed[20:] - d["speed"][20:]).max() < 1.5
    err = np.angle(np.exp(1j * (used_heading[20:] - d["heading"][20:])))
    assert np.abs(err).max() < 0.15


@pytest.mark.parametrize("hz", [1.0, 0.5])
@pytest.mark.parametrize("mistake,bit", [("km/h", SPEED_FLAG), ("compass heading", HEADING_FLAG)])
def test_a_slow_feed_s_unit_mistakes_are_flagged_from_its_fourth_fix(
        mistake: str, bit: int, hz: float) -> None:
    """A 1 Hz fleet sending km/h was never checked (too few fixes within 1.5 s). It is
    judged from its third fix, and flagged when the next judgement agrees."""
    d = _cruise(seconds=20.0 / hz, hz=hz)
    speed, heading = d["speed"].copy(), d["heading"].copy()
    if mistake == "km/h":
        speed *= 3.6
    else:
        heading = (np.pi / 2 - heading) % (2 * np.pi)
    flags, used_speed, used_heading = _track(d, speed, heading)
    assert not flags[:3].any() and (flags[3:] == bit).all(), flags
    assert np.abs(used_speed[3:] - d["speed"][3:]).max() < 1.5


def test_a_switch_to_km_h_mid_stream_is_flagged_from_the_switch_and_stays_through_a_stop(
        ) -> None:
    d = _drive(lambda t: -3.0 if t >= 8.0 else 0.0, lambda t: 0.0, 14.0, 12.0)
    speed = d["speed"].copy()
    switch = 40
    speed[switch:] *= 3.6
    flags, used_speed, _ = _track(d, speed, d["heading"])
    assert not flags[:switch].any()
    first = switch + int(np.argmax(flags[switch:] > 0))
    assert first - switch <= 10  # within a second
    # once found wrong the unit is not trusted again on this track, down to the stop
    assert (flags[first:] == SPEED_FLAG).all()
    assert used_speed[-1] < 0.5 and speed[-1] == 0.0


def test_a_distrusted_speed_does_not_make_the_heading_distrusted_while_nothing_is_judged(
        ) -> None:
    """Speed in km/h, flagged within the first seconds; the fixes then come once a second,
    too few for the fit to judge anything: the heading, never found wrong, stays used."""
    d = _drive(lambda t: 0.0, lambda t: 0.0, 10.0, 12.0, noise_m=0.1)
    keep = np.r_[np.arange(30), np.arange(30, 100, 10)]
    d = {k: v[keep] for k, v in d.items()}
    flags, _, used_heading = _track(d, d["speed"] * 3.6, d["heading"])
    assert (flags[20:] & SPEED_FLAG).all()
    assert not (flags & HEADING_FLAG).any()
    assert np.abs(used_heading[-5:]).max() < 0.05


def test_a_position_jump_restarts_the_track_and_is_flagged() -> None:
    store = StateStore(4)
    s = np.array([0])
    one = np.ones(1)
    nan = np.full(1, np.nan)
    for i in range(20):
        x = np.array([10.0 * i / HZ + (5000.0 if i >= 10 else 0.0)])
        _, started = store.update(s, np.array([1e9 + i / HZ]), x, np.zeros(1), nan, nan,
                                  4.5 * one, 1.8 * one)
        assert bool(started[0]) == (i in (0, 10))
        assert int(store.flags[0]) == (JUMP_FLAG if i == 10 else 0)
    assert store.jumps == 1


# -- through the engine, on simulated traffic with collisions -----------------------------

SIM = ["--vehicles", "60", "--duration", "30", "--seed", "11", "--reckless", "0.3"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    d = tmp_path_factory.mktemp("kin")
    pos, truth = d / "pos.jsonl", d / "truth.jsonl"
    assert main(["--log-level", "ERROR", "simulate", *SIM, "--no-pace", "--out", str(pos),
                 "--truth", str(truth)]) == 0
    rows = [orjson.loads(x) for x in pos.read_bytes().splitlines()]
    collisions = [orjson.loads(x) for x in truth.read_bytes().splitlines()
                  if orjson.loads(x).get("type") == "collision"]
    assert collisions
    return rows, collisions


def _run(rows: list[dict]) -> tuple[list[dict], dict]:
    eng = Engine(EngineConfig(), ConstantVelocity(PathSpec()))
    lines = [orjson.dumps(r) for r in rows]
    alerts = []
    for i in range(0, len(lines), 500):
        batch, _ = decode_batch(None, lines[i:i + 500], CodecConfig())
        alerts += eng.process(batch, i).alerts
    alerts += eng.flush().alerts
    return [orjson.loads(v) for _, v in alerts], eng.summary()


def _warned(alerts: list[dict], collisions: list[dict]) -> int:
    """Collisions with a critical alert for the pair before contact."""
    return sum(any({a["vehicle_a"], a["vehicle_b"]} == {c["vehicle_a"], c["vehicle_b"]}
                   and a["ts"] <= c["ts"] and a["severity"] == "critical" for a in alerts)
               for c in collisions)


def _km_h(r: dict, t0: float) -> dict:
    return {**r, "speed": r["speed"] * 3.6} if "speed" in r else r


def _zero(r: dict, t0: float) -> dict:
    return {**r, "speed": 0.0} if "speed" in r else r


def _compass(r: dict, t0: float) -> dict:
    return {**r, "heading": (math.pi / 2 - r["heading"]) % (2 * math.pi)} if "heading" in r \
        else r


def _switch(r: dict, t0: float) -> dict:
    return _km_h(r, t0) if r["ts"] > t0 + 15.0 else r


HOSTILE = {"km/h": (_km_h, "speed"), "speed 0": (_zero, "speed"),
           "compass heading": (_compass, "heading"), "km/h from mid-stream": (_switch, "speed")}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_unit_mistakes_in_a_feed_are_counted_and_the_collisions_still_warned(
        sim: tuple[list[dict], list[dict]], name: str) -> None:
    rows, collisions = sim
    spoil, reason = HOSTILE[name]
    t0 = rows[0]["ts"]
    clean_alerts, clean = _run(rows)
    assert clean["corrected_speed"] == clean["corrected_heading"] == 0
    assert clean["corrected_jump"] == 0
    # what the processor can do at best without any reported speed/heading: derive them
    derived_alerts, _ = _run([{k: v for k, v in r.items() if k not in ("speed", "heading")}
                              for r in rows])
    hostile = [spoil(r, t0) for r in rows]
    spoilt = sum(a != b for a, b in zip(hostile, rows, strict=True))
    alerts, s = _run(hostile)
    other = "heading" if reason == "speed" else "speed"
    assert s[f"corrected_{other}"] == 0 and s["corrected_jump"] == 0
    # nearly every spoilt fix is caught (not those of a track's first fixes or of a vehicle
    # too slow to judge); once caught, the vehicle's later fixes too (3.6 x 0 is 0)
    carrying = sum(reason in r for r in hostile)
    assert 0.8 * spoilt <= s[f"corrected_{reason}"] <= carrying, (spoilt, carrying, s)
    assert _warned(alerts, collisions) >= _warned(clean_alerts, collisions)
    n_crit = sum(a["severity"] == "critical" for a in alerts)
    assert n_crit <= 1.5 * sum(a["severity"] == "critical" for a in derived_alerts) + 5


def test_without_the_check_speed_0_missed_every_collision(
        sim: tuple[list[dict], list[dict]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The original failure, with the check switched off."""
    rows, collisions = sim
    monkeypatch.setattr(state_mod, "KinematicsTracker",
                        lambda *a, **kw: KinematicsTracker(*a, **{**kw, "check_reported": False}))
    monkeypatch.setattr(StateStore, "update", _update_without_flags(StateStore.update))
    alerts, _ = _run([_zero(r, 0.0) for r in rows])
    assert _warned(alerts, collisions) == 0


def _update_without_flags(update: Callable) -> Callable:
    def wrapped(self: StateStore, *a, **kw):  # type: ignore[no-untyped-def]
        self.kin.flags = np.zeros(a[0].size, dtype=np.int8)
        return update(self, *a, **kw)
    return wrapped


def _heading_off_course(rows: list[dict]) -> set[str]:
    """Vehicles whose reported heading points away from where their positions go: the mean
    reported direction more than the check's tolerance off the course from the first fix to
    the last, over a track at more than ``HEADING_CHECK_MPS`` (a recording error)."""
    tracks: dict[str, list[dict]] = {}
    for r in rows:
        tracks.setdefault(r["vehicle_id"], []).append(r)
    off = set()
    for v, t in tracks.items():
        dx, dy, dt = t[-1]["x"] - t[0]["x"], t[-1]["y"] - t[0]["y"], t[-1]["ts"] - t[0]["ts"]
        if dt <= 0 or math.hypot(dx, dy) / dt <= HEADING_CHECK_MPS:
            continue
        c = sum(math.cos(r["heading"]) for r in t)
        s = sum(math.sin(r["heading"]) for r in t)
        cos_off = (c * dx + s * dy) / (math.hypot(c, s) * math.hypot(dx, dy))
        if cos_off < math.cos(HEADING_TOL_RAD):
            off.add(v)
    return off


def test_recorded_ngsim_traffic_is_flagged_only_where_the_recording_contradicts_itself(
        caplog: pytest.LogCaptureFixture) -> None:
    """Real roads (Peachtree Street: signals, queues, turns, tracking glitches): no speed
    and no jump is flagged, and a heading only on the one vehicle (recorded in two
    overlapping scenarios) that drives at 7 m/s on a course 159 degrees off its recorded
    heading for its whole track."""
    path = _data_dir() / "ngsim-peachtree.jsonl.gz"
    if not path.exists():
        pytest.skip(f"recorded NGSIM data not found in {path.parent} (set TRAJSTREAM_DATA_DIR)")
    rows = [orjson.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
    caplog.set_level(logging.WARNING, logger="trajstream")
    _, s = _run(rows)
    assert s["accepted"] == len(rows)
    assert (s["corrected_speed"], s["corrected_jump"]) == (0, 0)
    flagged = {r.getMessage().split()[1] for r in caplog.records
               if "reported heading disagrees" in r.getMessage()}
    assert flagged == _heading_off_course(rows) == {"USA_Peach-4_2_T-1/88",
                                                    "USA_Peach-4_7_T-1/88"}
    # its first fixes pass unjudged (too few to fit a course); the rest of its track is flagged
    assert 0 < s["corrected_heading"] <= sum(r["vehicle_id"] in flagged for r in rows)


def test_the_summary_line_counts_corrections_by_reason(
        sim: tuple[list[dict], list[dict]], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trajstream")
    rows, _ = sim
    src = tmp_path / "kmh.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(_km_h(r, 0.0)) for r in rows) + b"\n")
    assert main(["--log-level", "INFO", "process", "--input", str(src), "--alerts-out",
                 str(tmp_path / "a.jsonl"), "--predictor", "cv", "--metrics-port", "0"]) == 0
    err = [r.getMessage() for r in caplog.records]
    done = [x for x in err if "done:" in x]
    assert done and "corrected " in done[-1] and " 0 heading, 0 jump" in done[-1], done
    warned = [x for x in err if "km/h, mph or speed 0" in x]
    vehicles = {r["vehicle_id"] for r in rows}
    assert 0 < len(warned) <= len(vehicles)  # once per vehicle
