"""SUMO engine throughput and collisions: `simulate --engine sumo` written to JSONL, unpaced.

Prints, per generated network kind, for --vehicles (default 1,000) over --seconds (default
400) after the warm-up:
  - vehicle-updates/s (wall and CPU) of the whole pipeline (libsumo steps, states, ground
    truth, sensors, JSON encoding, file), and of SUMO's own simulation step alone
  - setup time (netgenerate, randomTrips) and warm-up time
  - SUMO's collisions by conflict kind and near misses
Target from the issue: at least 10 collisions in 400 s of a 1,000-vehicle city with the
default reckless fraction (0.1), same seed -> same bytes (checked with --repeat).

Run: .venv/bin/python bench/bench_sumo.py [--vehicles 1000] [--seconds 400]
     [--kinds grid,spider,random] [--seeds 1] [--repeat]
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _kit import parser
from tqdm import tqdm

from trajstream.simulator import SimConfig
from trajstream.simulator.publish import JsonlSink
from trajstream.simulator.sumo import SumoConfig, iter_sumo_ticks
from trajstream.simulator.sumo.binaries import libsumo, version

TTY = sys.stderr.isatty()


class _StepClock:
    """Adds up the wall and CPU time spent inside libsumo's simulationStep."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def wrap(self, ls: Any) -> None:
        step = ls.simulationStep

        def timed(*args: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return step(*args)
            finally:
                self.wall += time.perf_counter() - t0
                self.cpu += time.process_time() - c0

        ls.simulationStep = timed


def run_once(kind: str, seed: int, vehicles: int, seconds: float, reckless: float,
             out: Path) -> dict[str, Any]:
    run = SimConfig(vehicles=vehicles, duration_s=seconds, seed=seed,
                    reckless_fraction=reckless)
    cfg = SumoConfig(net_kind=kind)  # type: ignore[arg-type]
    clock = _StepClock()
    ls = libsumo()
    original = ls.simulationStep
    clock.wrap(ls)
    sink = JsonlSink(out)
    t_start = time.perf_counter()
    ticks = iter_sumo_ticks(run, cfg)
    updates = 0
    events: list[dict] = []
    try:
        first = next(ticks)  # network, routes, SUMO start and warm-up happen here
        setup_s = time.perf_counter() - t_start
        sink.write(first.messages)
        events += first.truth
        clock.wall = clock.cpu = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        with tqdm(total=(run.n_ticks or 1) - 1, desc=f"{kind} {seed}", unit="tick",
                  leave=False, disable=not TTY) as bar:
            for tick in ticks:
                sink.write(tick.messages)
                updates += tick.vehicles
                events += tick.truth
                bar.update()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ticks.close()
        ls.simulationStep = original
        sink.close()
    collisions = [e for e in events if e["type"] == "collision"]
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    return {"updates_wall": updates / wall, "updates_cpu": updates / cpu,
            "sumo_wall": updates / max(clock.wall, 1e-9),
            "sumo_cpu": updates / max(clock.cpu, 1e-9), "setup_s": setup_s, "wall_s": wall,
            "collisions": len(collisions), "near_misses": len(events) - len(collisions),
            "kinds": Counter(e["kind"] for e in collisions), "digest": digest}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--vehicles", type=int, default=1000, help="simulated vehicles")
    ap.add_argument("--seconds", type=float, default=400.0, help="published seconds per run")
    ap.add_argument("--kinds", default="grid,spider,random",
                    help="SUMO network kinds to generate, comma-separated (grid, spider, random)")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds")
    ap.add_argument("--reckless", type=float, default=SimConfig().reckless_fraction,
                    help="fraction of reckless drivers (0: are careful drivers crash-free?)")
    ap.add_argument("--repeat", action="store_true",
                    help="run each configuration twice and compare the output bytes")
    args = ap.parse_args()
    print(f"SUMO {version()} engine: {args.vehicles:,} vehicles, {args.seconds:g} s published "
          f"at 10 Hz after {SumoConfig().warmup_s:g} s warm-up, reckless fraction "
          f"{args.reckless:g}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                r = run_once(kind, seed, args.vehicles, args.seconds, args.reckless,
                             Path(tmp) / "p.jsonl")
                kinds = ", ".join(f"{k} {n}" for k, n in r["kinds"].most_common())
                ok = "OK" if r["collisions"] >= 10 else "MISSED"
                print(f"  {kind:6s} seed {seed}: {r['collisions']:3d} collisions (>= 10 "
                      f"{ok}; {kinds}), {r['near_misses']} near misses")
                print(f"      pipeline {r['updates_wall']:>9,.0f} vehicle-updates/s "
                      f"({r['updates_cpu']:,.0f}/s CPU); SUMO step alone "
                      f"{r['sumo_wall']:,.0f}/s ({r['sumo_cpu']:,.0f}/s CPU); setup and "
                      f"warm-up {r['setup_s']:.0f} s, run {r['wall_s']:.0f} s")
                if args.repeat:
                    again = run_once(kind, seed, args.vehicles, args.seconds, args.reckless,
                                     Path(tmp) / "q.jsonl")
                    same = again["digest"] == r["digest"]
                    print(f"      repeated: {'byte-identical' if same else 'DIFFERENT'} "
                          f"(sha256 {r['digest']})")


if __name__ == "__main__":
    main()
