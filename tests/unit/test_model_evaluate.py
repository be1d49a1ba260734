"""Replay like the engine, future targets, metrics, and the `model evaluate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from trajstream.model.cli import model as model_cli
from trajstream.model.data import (
    Positions,
    event_time_order,
    future_positions,
    parse_positions,
    replay,
    step_groups,
)
from trajstream.model.evaluate import run_predictors
from trajstream.model.predictors import ConstantTurnRate, ConstantVelocity, PathSpec
from trajstream.model.synthetic import synthetic_records

T0 = 1_764_081_000.0


def _pos(rows: list[tuple[str, float, float, float]]) -> Positions:
    lines = [orjson.dumps({"vehicle_id": v, "ts": T0 + float(t), "x": float(x), "y": float(y)})
             for v, t, x, y in rows]
    return parse_positions(lines)[0]


def test_event_time_order_drops_late_and_stale():
    pos = _pos([
        ("a", 1.0, 0, 0), ("b", 1.1, 0, 0), ("a", 2.0, 1, 0),
        ("b", 1.6, 0, 1),  # 0.4 s behind the newest: within lateness, kept
        ("a", 1.4, 5, 5),  # 0.6 s behind: late, dropped
        ("a", 2.0, 9, 9),  # duplicate time: stale
        ("b", 1.5, 7, 7),  # before b's newest accepted (1.6): stale
        ("a", 2.2, 2, 0),
    ])
    out = event_time_order(pos)
    got = [(out.ids[v], round(t - T0, 3)) for v, t in zip(out.vehicle, out.ts, strict=True)]
    assert got == [("a", 1.0), ("b", 1.1), ("b", 1.6), ("a", 2.0), ("a", 2.2)]


def test_step_groups_one_fix_per_vehicle_in_time_order():
    recs = synthetic_records(5, vehicles=7, duration_s=8.0, rate_hz=14.0)
    pos = event_time_order(parse_positions(orjson.dumps(r) for r in recs)[0])
    groups = step_groups(pos)
    seen = np.concatenate(groups)
    assert np.array_equal(np.sort(seen), np.arange(len(pos)))
    last = {}
    for g in groups:
        veh = pos.vehicle[g]
        assert np.unique(veh).size == veh.size
        for v, t in zip(veh.tolist(), pos.ts[g].tolist(), strict=True):
            assert t > last.get(v, -np.inf)
            last[v] = t
    assert len(groups) < len(pos) / 3  # actually batched


def test_future_positions_interpolate_and_mask_gaps():
    spec = PathSpec()
    t = np.round(np.arange(0.0, 14.0, 0.1), 3)
    t = t[(t < 6.0) | (t > 6.8)]  # a 1.0 s gap between the fixes at 5.9 and 6.9
    rows = [("a", float(ti), 3.0 * ti, -1.0 * ti) for ti in t]
    rep = replay(event_time_order(_pos(rows)))
    tg, valid = future_positions(rep, spec.offsets_s)
    ts = rep.pos.ts - T0
    expect_valid = (ts + 4.0 <= ts.max() + 1e-9) & ~((ts + 4.0 > 5.9 + 1e-6) & (ts < 6.9 - 1e-6))
    assert expect_valid[ts < 5].any() and expect_valid[ts > 6].any()
    np.testing.assert_array_equal(valid, expect_valid)
    q = ts[valid][:, None] + spec.offsets_s
    np.testing.assert_allclose(tg[valid][..., 0], 3.0 * q, atol=1e-6)
    np.testing.assert_allclose(tg[valid][..., 1], -1.0 * q, atol=1e-6)


def test_metrics_zero_for_cv_on_straight_noise_free_track():
    t = np.round(np.arange(0.0, 12.0, 0.1), 3)
    rows = [(v, float(ti), 10.0 * ti + 100 * k, 2.0 * ti) for k, v in enumerate("abc") for ti in t]
    rows.sort(key=lambda r: r[1])
    speed, heading = float(np.hypot(10, 2)), float(np.arctan2(2, 10))
    lines = [orjson.dumps({"vehicle_id": v, "ts": T0 + ti, "x": float(x), "y": float(y),
                           "speed": speed, "heading": heading}) for v, ti, x, y in rows]
    rep = replay(event_time_order(parse_positions(lines)[0]))
    spec = PathSpec()
    tg, valid = future_positions(rep, spec.offsets_s)
    ev = run_predictors(rep, [ConstantVelocity(spec), ConstantTurnRate(spec)], tg, valid)
    s = ev.summary()
    assert s["predictions"] == int(valid.sum()) > 200
    for name in ("cv", "ctrv"):
        assert s["models"][name]["fde"] < 1e-3
        assert s["models"][name]["rmse"]["4"] < 1e-3


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A small simulator run in the positions contract (plus a line the codec rejects)."""
    from trajstream.simulator import SimConfig, iter_ticks

    path = tmp_path_factory.mktemp("eval") / "positions.jsonl"
    cfg = SimConfig(seed=21, vehicles=12, duration_s=20.0, warmup_s=5.0)
    lines = [value for tick in iter_ticks(cfg) for _, value in tick.messages]
    path.write_bytes(b"\n".join(lines) + b"\nnot json\n")
    return path


def test_evaluate_command_prints_schema_and_plots(small_file, tmp_path):
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(small_file), "--plots",
                                         str(tmp_path / "plots"), "--examples", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["positions"]
    assert set(out) == {"models", "predictions"}
    assert out["predictions"] > 100
    assert set(out["models"]) == {"lstm", "cv", "ctrv"}
    for name, m in out["models"].items():
        # the LSTM's sigma against its own errors; the baselines give no sigma
        assert set(m) == {"rmse", "ade", "fde"} | ({"sigma"} if name == "lstm" else set())
        assert set(m["rmse"]) == {"1", "2", "3", "4"}
        assert all(v > 0 for v in m["rmse"].values())
        assert m["rmse"]["1"] < m["rmse"]["4"]
    assert out["models"]["lstm"]["fde"] != out["models"]["cv"]["fde"]
    cal = out["models"]["lstm"]["sigma"]
    assert set(cal) == {"1", "2", "3", "4"}
    for c in cal.values():
        assert c["median_z"] > 0 and 0 < c["within_1"] <= c["within_2"] <= 1
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(small_file)])
    assert res.exit_code == 0, res.output
    text = res.output.splitlines()
    at = next(i for i, ln in enumerate(text) if ln.startswith("lstm sigma calibration"))
    assert text[at + 2].split()[:3] == ["within", "1", "sigma"]
    assert text[at + 3].split()[-1] == "86%"  # the Gaussian's share beside the model's
    for png in ("error_by_horizon.png", "examples.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_plots_of_several_lstms_draw_no_model_in_a_baselines_colour(small_file, tmp_path,
                                                                      monkeypatch):
    """Two --weights side by side (lstm-neighbours-1, -2) had no colour of their own, so
    matplotlib's cycle drew the first in CV's blue: the LSTM and CV could not be told apart."""
    import matplotlib.colors
    from matplotlib.figure import Figure

    from trajstream.model import SHIPPED_WEIGHTS

    seen: dict[str, dict[str, str]] = {}
    save = Figure.savefig

    def record(fig, path, **kw):  # noqa: ANN001, ANN003, ANN202
        seen[Path(path).name] = {ln.get_label(): matplotlib.colors.to_hex(ln.get_color())
                                 for ax in fig.axes for ln in ax.get_lines()
                                 if not ln.get_label().startswith(("_", "observed", "actual"))}
        return save(fig, path, **kw)

    monkeypatch.setattr(Figure, "savefig", record)
    res = CliRunner().invoke(model_cli, [
        "evaluate", "--data", str(small_file), "--plots", str(tmp_path), "--examples", "1",
        "--weights", str(SHIPPED_WEIGHTS), "--weights", str(SHIPPED_WEIGHTS)])
    assert res.exit_code == 0, res.output
    for png in ("error_by_horizon.png", "examples.png"):
        colors = seen[png]
        assert set(colors) == {"lstm-neighbours-1", "lstm-neighbours-2", "cv", "ctrv"}
        assert len(set(colors.values())) == 4, colors


def _recorded_lines(scenario: str, n: int = 60) -> list[bytes]:
    """A vehicle speeding up at 1 m/s^2 on a straight road, with an NGSIM-style id."""
    return [orjson.dumps({"vehicle_id": f"{scenario}/1", "ts": T0 + 0.1 * i,
                          "x": 1.2 * i + 0.005 * i * i, "y": 0.0, "speed": 12.0 + 0.1 * i,
                          "heading": 0.0}) for i in range(n)]


def test_evaluate_command_tables_per_source_gzip_and_recorded_split(small_file, tmp_path):
    import gzip

    held = _recorded_lines("USA_US101-3_1_T-1")  # recording 3: held out
    trained = [ln.replace(b"US101-3_", b"US101-4_") for ln in held]  # recording 4: training
    rec = tmp_path / "recorded.jsonl.gz"
    lines = [ln for pair in zip(held, trained, strict=True) for ln in pair]  # in time order
    rec.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    counts = {}
    for split in ("all", "held-out", "train"):
        res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(rec), "--data",
                                             str(small_file), "--split", split, "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert list(out) == ["recorded", "positions"]
        counts[split] = (out["recorded"]["predictions"], out["positions"]["predictions"])
    assert counts["held-out"][0] == counts["train"][0] > 0
    assert counts["all"][0] == 2 * counts["held-out"][0]
    assert counts["all"][1] == counts["held-out"][1] == counts["train"][1]  # not recorded
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(rec), "--models", "cv,ctrv"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("recorded (") and "RMSE 4 s" in lines[1]
    assert lines[2].split()[0] == "cv" and lines[2].split()[-1] == "1.00x"


def test_evaluate_command_bad_gzip_is_one_line(tmp_path, capsys):
    import gzip

    from trajstream.cli import main

    bad = tmp_path / "broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"vehicle_id": "a", "ts": 1.0, "x": 0, "y": 0}\n' * 99)[:-30])
    assert main(["model", "evaluate", "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trajstream: error: cannot read positions file") and "\n" not in err


def test_evaluate_command_rejects_bad_models(small_file):
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(small_file), "--models",
                                         "cv,gru"])
    assert res.exit_code != 0
    assert "--models" in res.output


class _Recorder:
    """Wraps a predictor inside the real engine and records every step it is asked for."""

    uses_neighbours = True  # the engine hands it the vehicles around (recorded as well)

    def __init__(self, inner):
        self.inner, self.name, self.state_dim, self.spec = (
            inner, inner.name, inner.state_dim, inner.spec)
        self.calls = []
        self.neighbours = []

    def step(self, kin, state, neighbours):
        if self.inner.uses_neighbours:
            paths, new_state = self.inner.step(kin, state, neighbours)
        else:
            paths, new_state = self.inner.step(kin, state)
        self.calls.append((kin, paths, state.copy()))
        self.neighbours.append(neighbours)
        return paths, new_state


def test_replay_steps_exactly_like_the_engine(small_file):
    """The offline replay (evaluate, training features) == what stream.engine.Engine does:
    the same fixes applied, the same kinematics, the same LSTM state and paths."""
    from trajstream.model import load_predictor
    from trajstream.stream.codec import CodecConfig, decode_batch
    from trajstream.stream.config import EngineConfig
    from trajstream.stream.engine import Engine

    lines = small_file.read_bytes().splitlines()
    # One vehicle's messages arrive ~0.5 s late, so the watermark (not only per-vehicle
    # order) decides which of them the engine still uses.
    slow = [i for i, ln in enumerate(lines) if b'"veh-3"' in ln]
    moved = {i + 60: lines[i] for i in slow}
    rest = [ln for i, ln in enumerate(lines) if i not in set(slow)]
    lines = []
    for i, ln in enumerate(rest):
        lines.append(ln)
        if i in moved:
            lines.append(moved[i])
    rec = _Recorder(load_predictor("lstm"))
    engine = Engine(EngineConfig(), rec)
    for i in range(0, len(lines), 700):  # arbitrary micro-batches
        batch, _ = decode_batch(None, lines[i : i + 700], CodecConfig())
        engine.process(batch)
    engine.flush()
    e_kin = {f: np.concatenate([getattr(k, f) for k, _, _ in rec.calls])
             for f in ("ts", "x", "y", "speed", "heading", "yaw_rate", "accel", "dt", "first")}
    e_paths = np.concatenate([p for _, p, _ in rec.calls])
    e_state_nonzero = np.concatenate([np.abs(s).sum(1) > 0 for _, _, s in rec.calls])

    rep = replay(event_time_order(parse_positions(lines)[0]))
    pos = rep.pos
    assert engine.stats["late"] > 10 and engine.stats["stale"] > 0  # disorder of both kinds
    assert len(pos) == e_kin["ts"].size == engine.stats["accepted"]
    index = {(t, x, y): i for i, (t, x, y) in enumerate(zip(pos.ts, pos.x, pos.y, strict=True))}
    rows = np.array([index[k] for k in zip(e_kin["ts"], e_kin["x"], e_kin["y"], strict=True)])
    assert np.unique(rows).size == rows.size
    for f in ("speed", "heading", "yaw_rate", "accel", "dt", "first"):
        np.testing.assert_allclose(e_kin[f], getattr(rep.kin, f)[rows], atol=1e-9, err_msg=f)
    np.testing.assert_array_equal(e_state_nonzero, ~rep.kin.first[rows])

    # the LSTM run over the replay's groups gives the engine's paths
    spec = PathSpec()
    tg, valid = future_positions(rep, spec.offsets_s)
    lstm = load_predictor("lstm")
    state = np.zeros((len(pos.ids), lstm.state_dim), np.float32)
    paths = np.zeros((len(pos), spec.points, 2))
    for idx in rep.groups:
        k = rep.kin.take(idx)
        st = state[pos.vehicle[idx]]
        st[k.first] = 0.0
        nb = rep.neighbours[idx] if lstm.uses_neighbours else None
        paths[idx], state[pos.vehicle[idx]] = lstm.step(k, st, nb)
    np.testing.assert_allclose(e_paths, paths[rows], atol=1e-4)
    # the vehicles around each one: the same in the engine as in the replay (and some seen)
    e_nb = np.concatenate(rec.neighbours)
    np.testing.assert_allclose(e_nb, rep.neighbours[rows], atol=1e-9)
    around = e_nb[:, [0, 3, 5, 7, 9]] > 0  # someone in a zone (12 vehicles: sparse)
    assert around[:, 0].sum() > 10 and around.any(1).sum() > 50


def test_evaluate_command_errors_and_short_files(tmp_path, small_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"garbage\n{}\n")
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(bad)])
    assert res.exit_code != 0 and "no valid position records (2 rejected)" in str(res.exception)
    short = tmp_path / "short.jsonl"  # too short for any 4 s future: counts zero, no crash
    short.write_bytes(b"\n".join(small_file.read_bytes().splitlines()[:40]) + b"\n")
    res = CliRunner().invoke(model_cli, ["evaluate", "--data", str(short), "--plots",
                                         str(tmp_path / "p"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["short"]
    assert out["predictions"] == 0 and out["models"]["lstm"]["fde"] is None


def test_evaluate_refuses_a_plots_directory_it_cannot_write_before_evaluating(
        tmp_path, small_file, capsys):
    from trajstream.cli import main

    a_file = tmp_path / "f"
    a_file.write_text("")
    assert main(["model", "evaluate", "--data", str(small_file), "--plots",
                 str(a_file / "plots")]) == 2
    err = capsys.readouterr()
    assert "Invalid value for --plots: cannot create" in err.err and err.out == "", err
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"garbage\n")
    assert main(["model", "evaluate", "--data", str(bad)]) == 1  # read, nothing valid
