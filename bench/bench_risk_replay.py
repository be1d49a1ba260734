"""Tuning harness for the risk stage: capture a run's ticks once, replay them with edited code.

A full `trajstream process` spends most of its time in the predictor; a change to
stream/risk.py or stream/episodes.py only changes what the conflict stage does with the same
predicted ticks. So the ticks of one run (the conflict stage's inputs: fleet, paths, sigmas)
are pickled once per input and predictor, and replayed through the current conflict stage in
a fraction of the time, then scored as `trajstream evaluate` scores them, beside the CV-TTC
warner on the same positions.

**Tuning data only.** The inputs are the tuning side of every held-out rule (README, "Warning
quality"): the scenario library at seeds 0-9, the US-101 recordings whose number is not a
multiple of 3, Peachtree recording 4, and a SUMO grid city at seed 1. The held-out rows
(library seed 100, the other NGSIM recordings, SUMO spider/random seeds 2, 3, 11, 12) are
bench_quality.py's and are not offered here: tune on these, confirm once there.

  inputs [NAMES]       write the tuning inputs (default: us101 peachtree library-0..4;
                       sumo-grid-1 needs SUMO and ~10 min)
  capture NAMES        `trajstream process` (defaults, shipped weights) on each input, the
                       conflict stage's ticks pickled (recapture after changing weights or
                       anything upstream of the conflict stage)
  replay NAMES         the current conflict stage on the captured ticks -> alerts, scored
  score NAMES          score the alerts of the last replay (or --tag) again

Scoring options: --baseline (CV-TTC row), --diag (alerts by relation, severity, justified,
and which of the two vehicles really reached the predicted contact), --per-kind, --missed.
Files live in --dir (default <repo>/out/tuning, git-ignored).

Usage: python bench/bench_risk_replay.py inputs|capture|replay|score [NAMES...] [--dir DIR]
       [--tag TAG] [--baseline] [--diag] [--per-kind] [--missed]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import argparse  # noqa: E402
import gzip  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIBRARY_SEEDS = range(10)  # tuning; seed 100 is held out
DEFAULT_SETS = ("us101", "peachtree", *(f"library-{s}" for s in range(5)))
SUMO_GRID = ("grid", 1, ("--vehicles", "1000", "--duration", "400"))


def tuning_sets() -> tuple[str, ...]:
    return ("us101", "peachtree", *(f"library-{s}" for s in LIBRARY_SEEDS), "sumo-grid-1")


def _check(name: str) -> None:
    if name not in tuning_sets():
        raise SystemExit(f"{name!r} is not a tuning set (one of {', '.join(tuning_sets())}); "
                         "held-out traffic is bench_quality.py's")


def _cli(*args: str) -> None:
    from trajstream.cli import main
    try:
        main(["--log-level", "WARNING", *args])
    except SystemExit as exc:
        if exc.code:
            raise


def _ngsim_tuning(src: Path, dst: Path, location: str) -> None:
    """The records of ``location``'s recordings on the tuning side of the split."""
    from trajstream.simulator.recorded.split import is_held_out, recording_of

    tmp = dst.with_suffix(".tmp")
    with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
        for line in fin:
            vid = orjson.loads(line)["vehicle_id"]
            rec = recording_of(vid)
            if rec is not None and rec.startswith(location) and not is_held_out(vid):
                fout.write(line)
    tmp.rename(dst)


def inputs(names: list[str], d: Path) -> None:
    from trajstream.simulator.recorded.location import recorded_data_dir

    for name in names:
        pos, truth = d / f"{name}.jsonl", d / f"{name}.truth.jsonl"
        if pos.is_file():
            print(f"{name}: exists", file=sys.stderr)
            continue
        if name in ("us101", "peachtree"):
            src = recorded_data_dir() / f"ngsim-{name}.jsonl.gz"
            if not src.is_file():
                print(f"{name}: {src} not found (set TRAJSTREAM_DATA_DIR)", file=sys.stderr)
                continue
            _ngsim_tuning(src, pos, "US101" if name == "us101" else "Peach")
        elif name.startswith("library-"):
            _cli("scenarios", "--seed", name.split("-")[1], "--out", str(pos), "--truth",
                 str(truth))
        else:
            kind, seed, extra = SUMO_GRID
            _cli("simulate", "--engine", "sumo", "--net-kind", kind, "--seed", str(seed),
                 *extra, "--no-pace", "--out", str(pos), "--truth", str(truth))
        print(f"{name}: written", file=sys.stderr)


def capture(name: str, d: Path) -> None:
    """Process the input with the product's defaults, keeping every tick the conflict stage
    assessed (with the stage's path spec and model name)."""
    import trajstream.stream.conflicts as cm

    orig = cm.ConflictStage.assess
    seen: list[Any] = []

    def keep(self: Any, tick: Any, owns: Any = None, *, partial: bool = False) -> Any:
        seen.append((self.spec, self.model, tick, partial))
        return orig(self, tick, owns, partial=partial)

    cm.ConflictStage.assess = keep  # type: ignore[method-assign]
    try:
        # --no-risk-process: the stage must run here, where ``keep`` wraps it
        _cli("process", "--input", str(d / f"{name}.jsonl"), "--alerts-out",
             str(d / f"{name}.captured.alerts.jsonl"), "--metrics-port", "0",
             "--no-risk-process")
    finally:
        cm.ConflictStage.assess = orig  # type: ignore[method-assign]
    with open(d / f"{name}.ticks.pkl", "wb") as f:
        pickle.dump(seen, f, protocol=5)
    print(f"{name}: captured {len(seen)} ticks", file=sys.stderr)


def replay(name: str, d: Path, tag: str) -> Path:
    from trajstream.stream.conflicts import ConflictStage

    with open(d / f"{name}.ticks.pkl", "rb") as f:
        seen = pickle.load(f)
    spec, model, *_ = seen[0]
    stage = ConflictStage(spec, model)
    out = d / f"{name}.{tag}.alerts.jsonl"
    c0, n = time.process_time(), 0
    with open(out, "wb") as f:
        for _, _, tick, partial in seen:
            for _k, v in stage.assess(tick, partial=partial).alerts:
                f.write(v + b"\n")
                n += 1
    print(f"{name}: replayed {len(seen)} ticks, {n} alerts, "
          f"{time.process_time() - c0:.1f} s CPU", file=sys.stderr)
    return out


def _tracks(pos: Path) -> tuple[Any, Any]:
    from trajstream.stream.evaluation.scoring import ReleaseClock
    from trajstream.stream.evaluation.tracks import Tracks, read_positions

    cache = pos.with_suffix(".tracks.pkl")
    if cache.is_file() and cache.stat().st_mtime > pos.stat().st_mtime:
        return pickle.loads(cache.read_bytes())
    batch = read_positions(pos)
    out = (Tracks.from_batch(batch), ReleaseClock(batch))
    cache.write_bytes(pickle.dumps(out, protocol=5))
    return out


def relation(alert: dict[str, Any]) -> str:
    """Same lane, same direction in another lane, oncoming, or crossing/turning, from the
    alert's own states (heading within 0.3 rad, sideways offset within a lane width)."""
    sa, sb = alert["vehicles"]["a"]["state"], alert["vehicles"]["b"]["state"]
    dh = math.remainder(sb["heading"] - sa["heading"], 2 * math.pi)
    if abs(dh) < 0.3:
        axis = sa["heading"] + 0.5 * dh
        lat = -(sb["x"] - sa["x"]) * math.sin(axis) + (sb["y"] - sa["y"]) * math.cos(axis)
        return "same-lane" if abs(lat) < 2.55 else "same-dir-other-lane"
    return "oncoming" if abs(dh) > math.pi - 0.3 else "crossing/turning"


REACH_M = 2.5  # a vehicle whose centre passes this close to the predicted contact reached it


def reached(alert: dict[str, Any], tracks: Any, horizon_s: float) -> str:
    """Which of the pair really came to the alert's predicted contact point (the midpoint of
    the two predicted centres, ``closest_approach``) within the horizon plus 2 s: "both",
    "one" (the other stopped short, yielded or went another way) or "neither". A false
    warning where "one" reached it is a conflict one driver avoided; "both" is a matter of
    timing (the two passed the point apart in time)."""
    from trajstream.stream.evaluation.tracks import sample_times

    cx, cy = alert["closest_approach"]["x"], alert["closest_approach"]["y"]
    t = sample_times(alert["ts"], alert["ts"] + horizon_s + 2.0, 0.1)
    n = 0
    for v in (alert["vehicle_a"], alert["vehicle_b"]):
        i = tracks.index.get(v)
        if i is None:
            continue
        x, y, _, present = tracks.state(i, t)
        n += bool(np.any(present & (np.hypot(x - cx, y - cy) <= REACH_M)))
    return ("neither", "one", "both")[n]


def _line(r: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    s = (f"coll={r['eligible']} rec>=1s={pct(r['recall_min_lead'])} "
         f"rec@req={pct(r['recall_required_lead'])} prec={pct(r['precision'])} "
         f"alerts={r['alerts']} crit={r['critical']} "
         f"crit/vh={r['critical_per_vehicle_hour'] or 0:.2f} "
         f"warn/vh={r['warning_per_vehicle_hour'] or 0:.1f}")
    safe = r.get("safe_scenarios")
    if safe:
        s += f" safe-crit={safe['with_critical']}/{safe['n']}"
    return s


def score(name: str, d: Path, alerts_path: Path, args: argparse.Namespace) -> None:
    from trajstream.stream.evaluation.baseline import cv_ttc_alerts
    from trajstream.stream.evaluation.scoring import ScoreConfig, justified
    from trajstream.stream.evaluation.scoring import score as score_alerts

    pos, truth_path = d / f"{name}.jsonl", d / f"{name}.truth.jsonl"
    truth = ([orjson.loads(x) for x in truth_path.read_bytes().splitlines() if x.strip()]
             if truth_path.is_file() else [])
    tracks, clock = _tracks(pos)
    cfg = ScoreConfig()
    alerts = [orjson.loads(x) for x in alerts_path.read_bytes().splitlines() if x.strip()]
    r = score_alerts(alerts, truth, tracks, cfg, clock)
    print(f"{name:<12} trajstream {_line(r)}")
    if args.per_kind:
        for k, v in r["per_kind"].items():
            print(f"   {k:<24} {v['collisions']:>3} rec>=1s={v['recall_min_lead']:.2f} "
                  f"rec@req={v['recall_required_lead']:.2f}")
    if args.baseline:
        rb = score_alerts(cv_ttc_alerts(tracks), truth, tracks, cfg, clock)
        print(f"{'':<12} cv-ttc     {_line(rb)}")
    if args.diag:
        ok = justified(alerts, truth, tracks, cfg)
        c = Counter((relation(a), a["severity"], bool(j), reached(a, tracks, cfg.horizon_s))
                    for a, j in zip(alerts, ok, strict=True))
        print(f"   {'relation':<20} {'severity':<8} {'':<11} {'total':>6}  reached the contact: "
              "both / one / neither")
        for key in sorted({k[:3] for k in c}):
            n = [c[(*key, r)] for r in ("both", "one", "neither")]
            print(f"   {key[0]:<20} {key[1]:<8} {'justified' if key[2] else 'unjustified':<11}"
                  f" {sum(n):>6}  {n[0]} / {n[1]} / {n[2]}")
    if args.missed:
        for m in r["missed"]:
            print("   missed", m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("inputs", "capture", "replay", "score"),
                    help="inputs: write the tuning inputs; capture: pickle a run's "
                    "conflict-stage ticks; replay: run the current conflict stage on them "
                    "and score; score: score the last replay's alerts again")
    ap.add_argument("names", nargs="*", help=f"tuning sets: {', '.join(tuning_sets())}")
    ap.add_argument("--dir", type=Path, default=REPO / "out" / "tuning",
                    help="where the inputs, captured ticks and alerts live (default: "
                    "%(default)s)")
    ap.add_argument("--tag", default="replay", help="name of the replayed alerts files")
    ap.add_argument("--baseline", action="store_true", help="also score CV-TTC")
    ap.add_argument("--diag", action="store_true", help="alerts by relation and severity")
    ap.add_argument("--per-kind", action="store_true", help="recall per conflict kind")
    ap.add_argument("--missed", action="store_true", help="list the missed collisions")
    args = ap.parse_args()
    for k in [k for k in os.environ if k.startswith("TRAJSTREAM_") and k != "TRAJSTREAM_DATA_DIR"]:
        del os.environ[k]  # the product's defaults, whatever the shell sets
    names = args.names or list(DEFAULT_SETS)
    for n in names:
        _check(n)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.command == "inputs":
        inputs(names, args.dir)
    for n in names:
        if args.command == "capture":
            capture(n, args.dir)
        elif args.command == "replay":
            score(n, args.dir, replay(n, args.dir, args.tag), args)
        elif args.command == "score":
            score(n, args.dir, args.dir / f"{n}.{args.tag}.alerts.jsonl", args)


if __name__ == "__main__":
    main()
