"""Throughput cost of --exactly-once: drain one pre-filled topic with and without it.

The same simulated traffic (1 partition) is drained by `trajstream process --until-end`
three ways: state changelog off (the plain at-least-once loop), changelog on (the default),
and --exactly-once (a Kafka transaction per commit interval: outputs, changelog and offsets).
Each with a fresh group; prints positions/s from the processor's own summary line and wall
time. Commit interval: --commit-interval-s (default 1 s, the CLI default).

Usage: python bench/bench_exactly_once.py [--bootstrap HOST:PORT] [--vehicles 300]
    [--seconds 60] [--predictor cv] [--commit-interval-s 1.0] [--repeat 3]
Without --bootstrap a throwaway broker is started from broker/lib.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _kit import kafka_broker, parser


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    p = subprocess.run([sys.executable, "-m", "trajstream", "--log-level", "INFO", *args],
                       env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return p.stderr


def main() -> None:
    ap = parser(__doc__, bootstrap=True)
    ap.add_argument("--vehicles", type=int, default=300, help="simulated vehicles")
    ap.add_argument("--seconds", type=int, default=60,
                    help="seconds of simulated traffic in the topic")
    ap.add_argument("--predictor", default="cv",
                    help="predictor of `trajstream process` (cv, ctrv, lstm)")
    ap.add_argument("--commit-interval-s", default="1.0",
                    help="commit interval (s) passed to `trajstream process`")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the three modes; the median is printed")
    a = ap.parse_args()
    with kafka_broker(a.bootstrap) as bootstrap:
        d = Path(tempfile.mkdtemp(prefix="bench-eos-data-"))
        pos = d / "positions.jsonl"
        run("simulate", "--vehicles", str(a.vehicles), "--duration", str(a.seconds),
            "--seed", "1", "--no-pace", "--out", str(pos))
        topic = f"bench-eos-{uuid.uuid4().hex[:6]}"
        run("replay", str(pos), "--bootstrap", bootstrap, "--topic", topic, "--no-pace")
        n = sum(1 for _ in pos.open("rb"))
        print(f"{n} positions ({a.vehicles} vehicles, {a.seconds} s), predictor "
              f"{a.predictor}, commit interval {a.commit_interval_s} s")
        modes = {"no changelog": ["--no-changelog"], "changelog (default)": [],
                 "exactly-once": ["--exactly-once"]}
        results: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(a.repeat):
            for mode, extra in modes.items():
                g = f"g-{uuid.uuid4().hex[:6]}"
                t0 = time.monotonic()
                err = run("process", "--bootstrap", bootstrap, "--positions-topic", topic,
                          "--alerts-topic", f"{topic}-alerts-{g}", "--group", g,
                          "--predictor", a.predictor, "--metrics-port", "0", "--until-end",
                          "--commit-interval-s", a.commit_interval_s, *extra)
                wall = time.monotonic() - t0
                m = re.search(r"done: (\d+) records .*?\((\d+)/s[,)]", err)
                got, rate = (int(m.group(1)), float(m.group(2))) if m else (0, float("nan"))
                if got < n:
                    raise SystemExit(f"{mode}: consumed {got} of {n} positions")
                results[mode].append(rate)
                print(f"  {mode:<20} {rate:>8.0f} positions/s  (wall {wall:.1f} s incl. start)")
        base = statistics.median(results["changelog (default)"])
        for mode, rates in results.items():
            med = statistics.median(rates)
            print(f"{mode:<20} median {med:>8.0f} positions/s  {med / base - 1:+.1%} vs default")


if __name__ == "__main__":
    main()
