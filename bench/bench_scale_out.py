"""Scaling out: the predict stage with 1 and 2 processes on one topic, and the figures of the
capacity model (docs/scaling.md).

Simulated traffic is published once to a positions topic of --partitions partitions. Then:

1. `trajstream process --stage predict --until-end` drains it with 1 process, then (fresh
   group) with 2 processes started together (on a machine with >= 2 free cores each gets
   its own). Throughput = positions / the slowest member's own processing time (from its
   summary line; start-up and model loading excluded; records a member reads again after
   the other joined count once). Target: 2 >= 1.6x one. Also the CPU seconds of the
   members (summary line): on shared cores, CPU for the same positions compares 2 with 1
   where the wall clock cannot.
2. The internal topic the 1-process run wrote is read back: records and bytes per vehicle
   and tick, and the halo duplication factor (vehicle rows published / vehicles assessed).
3. `--stage risk --until-end` with 1 process drains it: vehicle-ticks per second.
4. The state changelog: bytes per vehicle in the predict stage's changelog.

Usage: python bench/bench_scale_out.py [--bootstrap HOST:PORT] [--vehicles 1000]
    [--seconds 60] [--partitions 6] [--predictor lstm] [--tile-m 1000]
Without --bootstrap a throwaway broker is started from broker/lib.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _kit import kafka_broker

DONE = re.compile(r"done: (\d+) records in ([\d.]+) s")
CPU = re.compile(r"done: .*?, ([\d.]+) CPU s\)")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trajstream", "--log-level", "INFO", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}


def run(*args: str) -> str:
    p = subprocess.run(_cmd(*args), env=_env(), capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return p.stderr


def parallel(n: int, *args: str) -> list[tuple[int, float, float]]:
    """Run ``n`` copies at once; each one's (records, seconds, CPU seconds) from its summary
    line."""
    procs = [subprocess.Popen(_cmd(*args), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(args)}\n{err[-3000:]}")
        m = DONE.findall(err)
        out.append((int(m[-1][0]), float(m[-1][1]), float(CPU.findall(err)[-1])))
    return out


def topic_stats(bootstrap: str, topic: str) -> tuple[int, int, int, int]:
    """(records, bytes, vehicle rows, distinct (tick, vehicle)) of the internal topic."""
    from trajstream.stream import internal
    from trajstream.stream.kafka import make_consumer

    c = make_consumer(bootstrap, [topic], group=None, client="confluent")
    recs = size = rows = 0
    seen: set[tuple[int, str]] = set()
    try:
        idle = 0
        while idle < 20:
            batch = c.poll(5000, 0.5)
            if not batch:
                idle += 1 if c.assignment() and c.lag() == 0 else 0
                continue
            for r in batch:
                recs += 1
                size += len(r.value)
                d = internal.decode(r.value)
                if isinstance(d, internal.TickRows):
                    rows += len(d.tick)
                    seen.update((d.k, v) for v in d.tick.ids.tolist())
    finally:
        c.close()
    return recs, size, rows, len(seen)


def changelog_bytes(bootstrap: str, topic: str) -> tuple[int, int]:
    """(vehicle records, bytes) of the latest state per key in a changelog."""
    from trajstream.stream.kafka import partition_count, read_to_end

    parts = list(range(partition_count(bootstrap, topic, client="confluent") or 0))
    latest: dict[bytes, int] = {}
    for key, value, _ in read_to_end(bootstrap, topic, parts, client="confluent"):
        if key is not None and not key.startswith(b"\xff"):
            latest[key] = 0 if value is None else len(value)
    live = [v for v in latest.values() if v]
    return len(live), sum(live)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=os.environ.get("TRAJSTREAM_BENCH_BOOTSTRAP"))
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--predictor", default="lstm")
    ap.add_argument("--tile-m", default="1000")
    a = ap.parse_args()
    with kafka_broker(a.bootstrap) as bootstrap:
        from trajstream.stream.kafka import create_topics

        d = Path(tempfile.mkdtemp(prefix="bench-scaling-data-"))
        pos = d / "positions.jsonl"
        run("simulate", "--vehicles", str(a.vehicles), "--duration", str(a.seconds),
            "--seed", "1", "--no-pace", "--out", str(pos))
        u = uuid.uuid4().hex[:6]
        topic = f"bench-scaling-{u}"
        create_topics(bootstrap, [topic], partitions=a.partitions)
        run("replay", str(pos), "--bootstrap", bootstrap, "--topic", topic, "--no-pace")
        n = sum(1 for _ in pos.open("rb"))
        print(f"{n} positions ({a.vehicles} vehicles, {a.seconds} s at 10 Hz), "
              f"{a.partitions} partitions, predictor {a.predictor}, {os.cpu_count()} CPUs")

        rates: dict[int, float] = {}
        cpu: dict[int, float] = {}
        internal_topic = ""
        for procs in (1, 2):
            group, internal_topic_k = f"g-{u}-{procs}", f"bench-predicted-{u}-{procs}"
            res = parallel(procs, "process", "--bootstrap", bootstrap, "--positions-topic",
                           topic, "--stage", "predict", "--internal-topic", internal_topic_k,
                           "--group", group, "--predictor", a.predictor, "--tile-m", a.tile_m,
                           "--metrics-port", "0", "--until-end")
            total = sum(r for r, _, _ in res)
            slowest = max(s for _, s, _ in res)
            rates[procs] = n / slowest  # re-reads after the join's rebalance not counted
            cpu[procs] = sum(c for _, _, c in res)
            per = ", ".join(f"{r} in {s:.1f} s ({c:.1f} CPU s)" for r, s, c in res)
            print(f"predict stage, {procs} process(es): {rates[procs]:,.0f} positions/s, "
                  f"{n / cpu[procs]:,.0f} per CPU second [{per}; {total - n} records read "
                  f"twice after the rebalance]")
            if procs == 1:
                internal_topic = internal_topic_k
                vehicles_cl, bytes_cl = changelog_bytes(bootstrap, f"{group}-changelog")
        print(f"  2 processes / 1 process: {rates[2] / rates[1]:.2f}x (target 1.6x; on a "
              f"machine whose cores are shared it is what it is); CPU seconds for the same "
              f"positions: {cpu[2] / cpu[1]:.2f}x one process's (1.00x: the work splits "
              f"without overhead, so 2 free cores give 2x)")

        recs, size, rows, distinct = topic_stats(bootstrap, internal_topic)
        ticks = a.seconds / 0.2
        print(f"internal topic (tile {a.tile_m} m): {recs} records, {size / 1e6:.1f} MB; "
              f"{size / max(rows, 1):.0f} bytes per vehicle row; halo duplication "
              f"{rows / max(distinct, 1):.2f} rows per vehicle-tick; "
              f"{distinct / ticks:.0f} vehicles per tick")
        err = run("process", "--bootstrap", bootstrap, "--stage", "risk", "--internal-topic",
                  internal_topic, "--positions-topic", topic, "--group", f"g-{u}-1",
                  "--alerts-topic", f"bench-alerts-{u}", "--tile-m", a.tile_m,
                  "--metrics-port", "0", "--until-end")
        m = DONE.findall(err)
        r_recs, r_s = int(m[-1][0]), float(m[-1][1])
        print(f"risk stage, 1 process: {r_recs} records in {r_s:.1f} s; "
              f"{rows / r_s:,.0f} vehicle rows/s ({distinct / r_s:,.0f} vehicle-ticks/s)")
        print(f"predict changelog: {vehicles_cl} vehicles, {bytes_cl / max(vehicles_cl, 1):.0f}"
              f" bytes per vehicle")


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"({time.monotonic() - t0:.0f} s)")
