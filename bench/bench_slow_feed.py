"""Warning quality of fleets reporting at 1 Hz, beside the textbook baseline.

`make quality` runs at 10 Hz, the rate of its inputs. Many fleets report once a second, and
often all at the same instants (telematics units on the GPS second). This keeps every tenth
fix of the held-out SUMO runs that `bench/bench_quality.py` generated (out/sumo/), two ways:

- **own phase**: each vehicle keeps the fixes of its own tenth of the second (a hash of its
  id), as an unsynchronised fleet reports;
- **synchronised**: every vehicle keeps the fixes on the whole second;
- **synchronised, complete**: the same with no fix missing: where SUMO's feed dropped or
  delayed a vehicle's whole-second fix (1% each, by design), it is interpolated between
  the vehicle's neighbouring fixes, and the file is in time order. Ticks of a synchronised
  feed go out before the next second only when no vehicle missed its fix (one that did
  holds them until it is given up on, with the next second's records); in a fleet of
  1,000 with 1% dropped, some vehicle misses every second.

Each thinned file runs through `trajstream process` (defaults) and `trajstream evaluate`
against SUMO's collisions, which prints the CV-TTC warner on the same positions beside it.
The recall counts the live lead (when a subscriber would receive the alert), so it shows how
long a slow feed's ticks wait for their release.

Usage: python bench/bench_slow_feed.py [--out-dir DIR]   (run bench/bench_quality.py first)
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import CACHE, SUMO_RUNS, evaluate, pool, process, table  # noqa: E402

MODES = ("own-phase", "synchronised", "synchronised-complete")


def thin(src: Path, dst: Path, mode: str) -> int:
    """Every tenth fix of ``src`` (fixes on the 0.1 s grid) into ``dst``; fixes kept."""
    if mode == "synchronised-complete":
        return _complete_seconds(src, dst)
    kept = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for line in fin:
            rec = orjson.loads(line)
            step = round(rec["ts"] * 10) % 10
            phase = 0 if mode == "synchronised" else zlib.crc32(
                str(rec["vehicle_id"]).encode()) % 10
            if step == phase:
                fout.write(line)
                kept += 1
    return kept


def _complete_seconds(src: Path, dst: Path) -> int:
    """Each vehicle's fix at every whole second of its track, interpolated (position and
    speed) between its fixes within 0.3 s either side where the feed lacks it; time order."""
    steps: dict[Any, dict[int, dict[str, Any]]] = defaultdict(dict)
    with open(src, "rb") as fin:
        for line in fin:
            rec = orjson.loads(line)
            steps[rec["vehicle_id"]][round(rec["ts"] * 10)] = rec
    out = []
    for by_step in steps.values():
        known = sorted(by_step)
        for s in range(-(-known[0] // 10) * 10, known[-1] + 1, 10):
            if s in by_step:
                out.append(by_step[s])
                continue
            i = bisect.bisect(known, s)
            if i == 0 or i == len(known) or s - known[i - 1] > 3 or known[i] - s > 3:
                continue
            a, b = by_step[known[i - 1]], by_step[known[i]]
            w = (s - known[i - 1]) / (known[i] - known[i - 1])
            rec = {**a, "ts": s / 10}
            for f in ("x", "y", "speed"):
                if f in a and f in b:
                    rec[f] = a[f] + w * (b[f] - a[f])
            out.append(rec)
    out.sort(key=lambda r: r["ts"])
    with open(dst, "wb") as fout:
        fout.writelines(orjson.dumps(r) + b"\n" for r in out)
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="keep the thinned positions, alerts and plots here (default: temp)")
    args = ap.parse_args()
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_slow_feed-"))
    out.mkdir(parents=True, exist_ok=True)
    sumo_dir = CACHE / "sumo"
    runs = [(kind, seed) for kind, seed in SUMO_RUNS
            if (sumo_dir / f"{kind}-{seed}.truth.jsonl").is_file()]
    if not runs:
        sys.exit(f"no SUMO runs in {sumo_dir}: run bench/bench_quality.py first")
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        per_run: dict[str, dict[str, Any]] = {}
        for kind, seed in runs:
            name = f"{kind}-{seed}-{mode}"
            pos = out / f"{name}.jsonl"
            kept = thin(sumo_dir / f"{kind}-{seed}.jsonl", pos, mode)
            alerts = out / f"{name}.alerts.jsonl"
            secs = process(pos, alerts)
            per_run[name] = evaluate(pos, alerts, sumo_dir / f"{kind}-{seed}.truth.jsonl",
                                     out / f"{name}.leads.png")
            print(f"  sumo {name}: {kept} fixes, processed in {secs:.1f} s", file=sys.stderr)
        results.update({f"sumo-{n}": r for n, r in per_run.items()})
        pooled = pool(per_run)
        if pooled:
            results[f"sumo-1hz-{mode}"] = pooled
    print(f"SUMO held-out runs at 1 Hz ({', '.join(f'{k} {s}' for k, s in runs)}), "
          "processor defaults:")
    print(table(results))
    print(f"files and lead-time plots: {out}")


if __name__ == "__main__":
    main()
