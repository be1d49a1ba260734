"""The evaluation's scoring logic on hand-made tracks whose answers are known exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from trajstream.errors import ConfigError, TrajstreamError
from trajstream.stream.codec import PositionBatch
from trajstream.stream.config import EngineConfig
from trajstream.stream.evaluate_cli import _check_plot, evaluate
from trajstream.stream.evaluation import BaselineConfig, ScoreConfig, Tracks, cv_ttc_alerts, score
from trajstream.stream.evaluation.kinds import classify
from trajstream.stream.evaluation.scoring import ReleaseClock, collision_outcomes, justified
from trajstream.stream.evaluation.tracks import footprint_gap, read_positions

T0 = 1_767_225_600.0


def line(vid: str, x0: float, y0: float, heading: float, speed: float, t0: float = 0.0,
         t1: float = 10.0, hz: float = 10.0, reported: bool = True) -> list[dict[str, Any]]:
    out = []
    for k in range(int(round((t1 - t0) * hz)) + 1):
        t = t0 + k / hz
        d = {"vehicle_id": vid, "ts": T0 + t, "x": x0 + speed * math.cos(heading) * t,
             "y": y0 + speed * math.sin(heading) * t}
        if reported:
            d.update(speed=speed, heading=heading)
        out.append(d)
    return out


def batch_of(*vehicles: list[dict[str, Any]]) -> PositionBatch:
    recs = sorted((r for v in vehicles for r in v), key=lambda r: r["ts"])
    n = len(recs)
    nan = float("nan")
    return PositionBatch(
        vehicle_id=np.array([r["vehicle_id"] for r in recs], dtype=object),
        ts=np.array([r["ts"] for r in recs]), x=np.array([r["x"] for r in recs]),
        y=np.array([r["y"] for r in recs]),
        speed=np.array([r.get("speed", nan) for r in recs]),
        heading=np.array([r.get("heading", nan) for r in recs]),
        length=np.full(n, 4.5), width=np.full(n, 1.8), index=np.arange(n))


def tracks_of(*vehicles: list[dict[str, Any]]) -> Tracks:
    return Tracks.from_batch(batch_of(*vehicles))


def alert(a: str, b: str, t: float, severity: str = "warning") -> dict[str, Any]:
    return {"vehicle_a": min(a, b), "vehicle_b": max(a, b), "ts": T0 + t, "severity": severity}


def collision(a: str, b: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"type": "collision", "vehicle_a": min(a, b), "vehicle_b": max(a, b), "ts": T0 + t,
            **kw}


def test_vehicle_hours_count_each_fix_interval() -> None:
    tr = tracks_of(line("a", 0, 0, 0, 10), line("b", 0, 5, 0, 10, t1=5.0))
    assert tr.vehicle_hours() * 3600 == pytest.approx(10.1 + 5.1)


def test_headings_from_motion_when_not_reported() -> None:
    tr = tracks_of(line("a", 0, 0, 1.0, 5.0, reported=False))
    assert np.allclose(tr.heading, 1.0, atol=1e-6)
    x, y, h, present = tr.state(0, np.array([T0 - 1, T0 + 2.05, T0 + 11]))
    assert present.tolist() == [False, True, False]
    assert x[1] == pytest.approx(5.0 * 2.05 * math.cos(1.0))


def test_footprint_gap_is_exact_for_aligned_and_rotated_boxes() -> None:
    z = np.zeros(1)
    # side by side, 3 m apart centre to centre: 1.2 m between the sides
    assert footprint_gap(z, z, z, 4.5, 1.8, z, z + 3, z, 4.5, 1.8)[0] == pytest.approx(1.2)
    # b rotated 90 deg, its side 1 m ahead of a's front
    g = footprint_gap(z, z, z, 4.5, 1.8, z + 2.25 + 1.0 + 0.9, z, z + math.pi / 2, 4.5, 1.8)
    assert g[0] == pytest.approx(1.0)
    assert footprint_gap(z, z, z, 4.5, 1.8, z + 4.0, z, z, 4.5, 1.8)[0] == 0.0


@pytest.mark.parametrize(("b", "contact", "kind"), [
    (line("b", 60, 0, 0, 0.0), 60 - 4.5, "rear_end"),  # into a stopped car ahead
    (line("b", 20, 200, math.pi, 20.0), None, "opposite_direction"),
    (line("b", 60, -60, math.pi / 2, 10.0), None, "crossing_paths"),
])
def test_kind_from_the_tracks(b: list[dict[str, Any]], contact: float | None, kind: str) -> None:
    tr = tracks_of(line("a", 0, 0, 0, 10.0, t1=8.0), b)
    assert classify(tr, "a", "b", T0 + 5.5) == kind


def test_lane_change_and_left_turn_kinds() -> None:
    # b beside a in the next lane, then cutting across into a
    recs = []
    for k in range(81):
        t = k / 10
        lat = 3.5 - max(0.0, t - 4.0) * 1.0
        recs.append({"vehicle_id": "b", "ts": T0 + t, "x": 2.0 + 10 * t, "y": lat})
    tr = tracks_of(line("a", 0, 0, 0, 10.0, t1=8.0), recs)
    assert classify(tr, "a", "b", T0 + 5.8) == "lane_change"
    # b oncoming, then turning left across a's path
    recs = []
    x, y, h = 60.0, 1.75, math.pi
    for k in range(81):
        t = k / 10
        recs.append({"vehicle_id": "b", "ts": T0 + t, "x": x, "y": y, "heading": h,
                     "speed": 8.0})
        if t >= 3.0:
            h = min(h + 0.08 * 8 / 3, 1.5 * math.pi)
        x += 0.8 * math.cos(h)
        y += 0.8 * math.sin(h)
    tr = tracks_of(line("a", 0, 0, 0, 10.0, t1=8.0), recs)
    assert classify(tr, "a", "b", T0 + 5.0) == "left_turn_across_path"


def test_live_lead_counts_the_release_of_the_tick_and_processing() -> None:
    tr = tracks_of(line("a", 0, 0, 0, 10, t1=8), line("b", 100, 0, 0, 0.0, t1=8))
    cfg = ScoreConfig(tick_lateness_s=0.05, processing_s=0.15, min_history_s=3.0)
    truth = [collision("a", "b", 6.0, kind="rear_end", required_lead_s=2.0),
             collision("a", "c", 6.0)]
    alerts = [alert("a", "b", 3.0), alert("a", "b", 4.0, "critical"), alert("b", "a", 6.5)]
    # a 10 Hz feed: the tick at 3.0 s is out with the fix at 3.0 s, the last its vehicles
    # were due to send in it (stream/cadence.py)
    feed = batch_of(line("a", 0, 0, 0, 10, t1=8))
    clock = ReleaseClock(feed)
    out = collision_outcomes(alerts, truth, tr, cfg, clock)
    assert out[0].alert_ts == T0 + 3.0 and out[0].live_lead_s == pytest.approx(2.85)
    assert out[1].alert_ts is None
    # on evidence alone: once the fix at 3.1 s (> 3.05 s) has arrived
    evidence = ReleaseClock(feed, EngineConfig(release_on_cadence=False))
    assert collision_outcomes(alerts, truth, tr, cfg, evidence)[0].live_lead_s == \
        pytest.approx(2.75)
    # without a clock: a record right at the tick's end + tick_lateness_s
    assert collision_outcomes(alerts, truth, tr, cfg)[0].live_lead_s == pytest.approx(2.8)
    # a vehicle that pauses holds the tick it was due in until the next record
    gap = ReleaseClock(batch_of(line("a", 0, 0, 0, 10, t1=3.0),
                                line("a", 0, 0, 0, 10, t0=3.9, t1=4.8)))
    assert gap.release(T0 + 3.0) == pytest.approx(T0 + 3.0)
    assert gap.release(T0 + 3.1) == pytest.approx(T0 + 3.9)
    r = score(alerts, truth, tr, cfg, clock)
    assert r["eligible"] == 1  # vehicle c was never observed
    assert r["recall_min_lead"] == r["recall_required_lead"] == 1.0
    assert r["per_kind"]["rear_end"]["recall_required_lead"] == 1.0
    late = score(alerts, truth, tr, ScoreConfig(tick_lateness_s=0.05, processing_s=1.2), clock)
    assert late["per_kind"]["rear_end"]["recall_required_lead"] == 0.0  # 6 - (3 + 1.2) < 2 s


def test_collisions_without_history_are_not_eligible() -> None:
    tr = tracks_of(line("a", 0, 0, 0, 10, t1=8), line("b", 60, 0, 0, 0.0, t0=4.0, t1=8))
    r = score([], [collision("a", "b", 5.5)], tr, ScoreConfig(min_history_s=3.0))
    assert r["eligible"] == 0 and r["too_little_history"] == 1 and r["recall_min_lead"] is None


def test_alerts_long_before_contact_belong_to_an_earlier_episode() -> None:
    tr = tracks_of(line("a", 0, 0, 0, 1, t1=30), line("b", 30, 0, 0, 0.0, t1=30))
    out = collision_outcomes([alert("a", "b", 1.0)], [collision("a", "b", 25.5)], tr,
                             ScoreConfig(max_lead_s=10.0))
    assert out[0].alert_ts is None


def test_precision_judges_the_true_footprints() -> None:
    a = line("a", 0, 0, 0, 10)
    close = line("b", 0, 2.6, 0, 10)  # 0.8 m sideways gap all along
    far = line("c", 0, 3.5, 0, 10)  # 1.7 m
    tr = tracks_of(a, close, far)
    ok = justified([alert("a", "b", 1.0), alert("a", "c", 1.0)], [], tr, ScoreConfig())
    assert ok.tolist() == [True, False]
    # a collision in the truth justifies its pair's alerts even if the tracks end before it
    ok = justified([alert("a", "c", 1.0)], [collision("a", "c", 3.0)], tr, ScoreConfig())
    assert ok.tolist() == [True]


def test_alert_rates_and_safe_scenarios() -> None:
    tr = tracks_of(line("a", 0, 0, 0, 10, t1=3599.9, hz=1), line("b", 0, 3.5, 0, 10,
                                                                  t1=3599.9, hz=1))
    truth = [{"type": "scenario", "scenario": "s1", "kind": "side_by_side", "conflict": False,
              "vehicles": ["a", "b"]}]
    r = score([alert("a", "b", 5, "critical"), alert("a", "b", 50)], truth, tr, ScoreConfig())
    assert r["critical_per_vehicle_hour"] == pytest.approx(0.5, rel=1e-3)
    assert r["warning_per_vehicle_hour"] == pytest.approx(0.5, rel=1e-3)
    assert r["safe_scenarios"]["with_critical"] == 1
    assert r["safe_scenarios"]["per_kind"]["side_by_side"] == {"n": 1, "critical": 1, "any": 1}


def test_recall_and_safe_scenarios_by_feed() -> None:
    # two rear-end conflicts (one per feed), two safe pairs (one per feed)
    tr = tracks_of(line("a", 0, 0, 0, 10), line("b", 80, 0, 0, 0.0),
                   line("c", 0, 20, 0, 10, reported=False), line("d", 80, 20, 0, 0.0,
                                                                  reported=False),
                   line("e", 0, 40, 0, 10), line("f", 0, 43.5, 0, 10),
                   line("g", 0, 60, 0, 10, reported=False), line("h", 0, 63.5, 0, 10,
                                                                 reported=False))
    truth = [
        {"type": "scenario", "scenario": "s1", "kind": "lead_stopped", "conflict": True,
         "vehicles": ["a", "b"], "reported": True},
        {"type": "scenario", "scenario": "s2", "kind": "lead_stopped", "conflict": True,
         "vehicles": ["c", "d"], "reported": False},
        {"type": "scenario", "scenario": "s3", "kind": "side_by_side", "conflict": False,
         "vehicles": ["e", "f"], "reported": True},
        {"type": "scenario", "scenario": "s4", "kind": "side_by_side", "conflict": False,
         "vehicles": ["g", "h"], "reported": False},
        collision("a", "b", 7.55, kind="rear_end", required_lead_s=2.0, scenario="s1"),
        collision("c", "d", 7.55, kind="rear_end", required_lead_s=2.0, scenario="s2"),
    ]
    # s1 alerted 4 s ahead, s2 only 0.5 s; a critical on the positions-only safe pair
    alerts = [alert("a", "b", 3.5), alert("c", "d", 7.0), alert("g", "h", 2.0, "critical"),
              alert("e", "f", 2.0)]
    r = score(alerts, truth, tr, ScoreConfig())
    assert r["per_feed"] == {
        "speed+heading": {"collisions": 1, "recall_required_lead": 1.0, "safe": 1,
                          "safe_with_critical": 0},
        "positions only": {"collisions": 1, "recall_required_lead": 0.0, "safe": 1,
                           "safe_with_critical": 1},
    }
    # traffic that is not a library has no feeds
    assert score(alerts, truth[4:], tr, ScoreConfig())["per_feed"] is None


def test_baseline_alerts_a_head_on_pair_at_its_ttc() -> None:
    # centres 100 m apart closing at 20 m/s: fronts touch when 4.5 m apart, at t = 4.775 s
    tr = tracks_of(line("a", 0, 0, 0, 10), line("b", 100, 0, math.pi, 10))
    out = cv_ttc_alerts(tr, BaselineConfig())
    assert [o["severity"] for o in out] == ["warning", "critical"]
    assert out[0]["ts"] == pytest.approx(T0 + 1.8)  # first tick with ttc <= 3 s
    assert out[0]["ttc"] == pytest.approx(2.975, abs=0.01)
    assert out[1]["ts"] == pytest.approx(T0 + 3.4)


@pytest.mark.parametrize("reported", [True, False])
def test_baseline_is_quiet_for_parallel_lanes_and_standstill(reported: bool) -> None:
    tr = tracks_of(line("a", 0, 0, 0, 14, reported=reported),
                   line("b", 0, 3.5, 0, 14, reported=reported),
                   line("c", 200, 50, 0, 0.0, reported=reported),
                   line("d", 204, 50, 0, 0.0, reported=reported))
    assert cv_ttc_alerts(tr) == []


def test_score_config_rejects_negative_values() -> None:
    with pytest.raises(ConfigError, match="min_lead_s"):
        ScoreConfig(min_lead_s=-1.0)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "(the file is empty)"),
        (b"hello\nworld\n", "(2 lines read: not_json 2; e.g. "),
        # an alerts file given as --positions: JSON objects, none a position
        (b'{"vehicle_a": "a", "vehicle_b": "b", "ts": 1.0, "severity": "warning"}\n',
         "(1 line read: missing_field 1; e.g. vehicle_id is missing)"),
    ],
)
def test_a_positions_file_without_a_valid_position_is_an_error(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(TrajstreamError) as exc:
        read_positions(path)
    assert str(exc.value).startswith(f"{path}: no valid positions {why}")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("lead.txt", "'.txt' is not an image format (one of "),
        ("lead", "no extension names the format"),
        ("missing/lead.png", "does not exist"),
        (".", "no extension names the format"),
    ],
)
def test_plot_refused_at_start_up(tmp_path: Path, name: str, needle: str) -> None:
    pos = tmp_path / "p.jsonl"
    pos.write_bytes(b"")  # never read: --plot is refused while the options are parsed
    res = CliRunner().invoke(evaluate, ["--positions", str(pos), "--alerts", str(pos),
                                        "--plot", str(tmp_path / name)])
    assert res.exit_code == 2, res.output
    assert "'--plot'" in res.output and needle in res.output


def test_plot_in_a_format_and_directory_that_exist_is_taken(tmp_path: Path) -> None:
    no_ctx: Any = None
    for name in ("lead.png", "lead.SVG", "lead.pdf"):
        assert _check_plot(no_ctx, no_ctx, str(tmp_path / name)) == str(tmp_path / name)


@pytest.mark.parametrize("missing", ["--positions", "--alerts", "--truth"])
def test_a_file_that_is_not_there_is_a_usage_error(tmp_path, capsys, missing: str) -> None:
    from trajstream.cli import main

    there = tmp_path / "there.jsonl"
    there.write_bytes(b"")
    args = {"--positions": there, "--alerts": there, "--truth": there}
    args[missing] = tmp_path / "absent.jsonl"
    argv = ["evaluate", *(x for k, v in args.items() for x in (k, str(v)))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"Invalid value for '{missing}'" in err and "does not exist" in err, err
