"""Scaling out: the predict stage with 1 and 2 processes on one topic, and the figures of the
capacity model (docs/scaling.md).

Simulated traffic is published once to a positions topic of --partitions partitions. Then:

1. `trajstream process --stage predict --until-end` drains it with 1 process, then (fresh
   group) with 2 processes started together, for --rounds interleaved rounds (the median is
   the figure; the load average is printed with each round). Each process runs in its own
   session, so Linux's per-session CPU share (autogroup) treats the two as two jobs, as two
   services on their own hosts would be; in one session they would share one job's share of
   a busy machine. The throwaway broker has Kafka's default initial rebalance delay (3 s),
   so processes started together join the group in one assignment.
   Two throughput figures per run:
   - steady: positions per second of the group once it has settled, from each process's
     positions-consumed counter (its metrics endpoint, sampled every 0.2 s): from 1 s after
     the last process got its first partitions (a late join's rebalance, restore and records
     read again are over) to the first moment a process has drained its partitions. This
     is the figure the target is about: 2 >= 1.6x one.
   - whole run: positions / the slowest process's own processing time, from its first
     record to its end (summary line; start-up, model loading and the group's forming
     excluded; records read again after a rebalance count once): includes the tail where
     one process has finished and the other still drains.
   Per process, its summary line's breakdown of the main thread's time: on a CPU, waiting
   for a CPU (starved by other work) or idle (waiting for the broker, a rebalance, a
   restore), so a shortfall shows whether the design waits or the machine is busy.
2. The internal topic the 1-process run wrote is read back: records and bytes per vehicle
   and tick, and the halo duplication factor (vehicle rows published / vehicles assessed).
3. `--stage risk --until-end` with 1 process drains it: vehicle-ticks per second.
4. The state changelog: bytes per vehicle in the predict stage's changelog.
5. What splitting the vehicles costs by itself, without Kafka or a second process: the CPU
   time of the predict stage's engine on all the positions against the sum over the two
   halves of the partitions the 2 processes hold (--split-rounds, interleaved): each
   process then steps fleets half as large, so per-step costs are paid twice.

Usage: python bench/bench_scale_out.py [--bootstrap HOST:PORT] [--vehicles 1000]
    [--seconds 180] [--partitions 6] [--predictor lstm] [--tile-m 1000] [--rounds 3]
    [--split-rounds 3]
Without --bootstrap a throwaway broker is started from broker/lib.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from _kit import free_port, kafka_broker, parser

# As `trajstream` does (numpy is imported later, inside the functions): OpenBLAS threads
# spinning on the other core would count in the engine's CPU time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DONE = re.compile(r"done: (\d+) records in ([\d.]+) s \(\d+/s, ([\d.]+) CPU s"
                  r"(?:; main thread ([\d.]+) s waiting for a CPU, ([\d.]+) s idle)?")
ASSIGNED = re.compile(r"^(\S+ \S+) INFO \S+: partitions \[[\d, ]*\] assigned", re.M)
FIRST = re.compile(r"first record ([\d.]+) s after start")
RESTORED = re.compile(r"restored \d+ vehicle state\(s\) .* in ([\d.]+) s")
CONSUMED = re.compile(rb"^trajstream_positions_consumed_total ([\d.e+]+)", re.M)
SAMPLE_S = 0.2
SETTLE_S = 1.0  # after the last first assignment: restore and records read again are over


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trajstream", "--log-level", "INFO", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}


def run(*args: str) -> str:
    p = subprocess.run(_cmd(*args), env=_env(), capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return p.stderr


@dataclass
class Member:
    """One process's summary line and the wall-clock time of its first assignment."""

    records: int
    seconds: float
    cpu_s: float
    wait_s: float | None  # main thread runnable, waiting for a CPU
    idle_s: float | None  # main thread blocked (broker, rebalance, restore)
    assigned_at: float
    first_s: float  # from the start of the run to the first record
    restores: list[float]  # seconds of each changelog restore (one per new assignment)

    @property
    def processing_s(self) -> float:
        return self.seconds - self.first_s

    def line(self) -> str:
        where = ("" if self.wait_s is None else
                 f"; main thread {self.seconds - self.wait_s - (self.idle_s or 0):.1f} s on a "
                 f"CPU, {self.wait_s:.1f} s waiting for one, {self.idle_s:.1f} s idle")
        return (f"{self.records} in {self.seconds:.1f} s, the first after {self.first_s:.1f} s "
                f"({self.cpu_s:.1f} CPU s{where}); {len(self.restores)} changelog restore(s) "
                f"{sum(self.restores):.1f} s")


def _scrape(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            m = CONSUMED.search(r.read())
    except OSError:
        return None
    return float(m.group(1)) if m else None


def _wall(stamp: str) -> float:
    """A log line's asctime (local time, milliseconds after a comma) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def steady_rate(samples: list[list[tuple[float, float]]], settled_at: float) -> float | None:
    """Positions per second of all members together from ``settled_at`` to the first moment
    one of them has consumed all it will (its counter's last rise), from each member's
    counter samples ``(wall time, count)``; None when the window is shorter than 1 s."""
    ends = []
    for s in samples:
        final = s[-1][1]
        ends.append(next(t for t, c in s if c >= final))
    t0, t1 = settled_at, min(ends)
    if t1 - t0 < 1.0:
        return None

    def at(s: list[tuple[float, float]], t: float) -> float:
        before = [(ts, c) for ts, c in s if ts <= t]
        after = [(ts, c) for ts, c in s if ts >= t]
        if not before:
            return 0.0
        if not after:
            return s[-1][1]
        (ta, ca), (tb, cb) = before[-1], after[0]
        return ca if tb == ta else ca + (cb - ca) * (t - ta) / (tb - ta)

    return sum(at(s, t1) - at(s, t0) for s in samples) / (t1 - t0)


def parallel(n: int, *args: str) -> tuple[list[Member], float | None]:
    """Run ``n`` copies at once, each in its own session; each one's summary, and the
    group's steady rate (:func:`steady_rate`)."""
    ports = [free_port() for _ in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp:
        logs = [Path(tmp) / f"member-{i}.log" for i in range(n)]
        procs = []
        for port, log in zip(ports, logs, strict=True):
            with log.open("w") as f:
                procs.append(subprocess.Popen(
                    _cmd(*args, "--metrics-port", str(port)), env=_env(),
                    stdout=subprocess.DEVNULL, stderr=f, start_new_session=True))
        samples: list[list[tuple[float, float]]] = [[] for _ in range(n)]

        def sample() -> None:
            while any(p.poll() is None for p in procs):
                for i, (p, port) in enumerate(zip(procs, ports, strict=True)):
                    if p.poll() is None and (c := _scrape(port)) is not None:
                        samples[i].append((time.time(), c))
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = []
        for p, log in zip(procs, logs, strict=True):
            p.wait(timeout=3600)
            err = log.read_text()
            if p.returncode != 0:
                raise SystemExit(f"failed: {' '.join(args)}\n{err[-3000:]}")
            m = DONE.findall(err)[-1]
            out.append(Member(int(m[0]), float(m[1]), float(m[2]),
                              float(m[3]) if m[3] else None, float(m[4]) if m[4] else None,
                              _wall(ASSIGNED.findall(err)[0]), float(FIRST.findall(err)[0]),
                              [float(x) for x in RESTORED.findall(err)]))
        sampler.join()
    settled = max(m.assigned_at for m in out) + SETTLE_S
    return out, steady_rate([s for s in samples if s], settled)


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


def split_cpu(path: Path, partitions: int, predictor: str, tile_m: float
              ) -> tuple[float, float]:
    """CPU seconds of the predict-stage engine on every position of ``path``, and the sum
    over the partition halves ``[0, P/2)`` and ``[P/2, P)`` (Kafka's key partitioner)."""
    import numpy as np
    import orjson
    from kafka.partitioner.default import murmur2

    from trajstream.stream.app import load_predictor
    from trajstream.stream.codec import CodecConfig, decode_batch
    from trajstream.stream.config import DEFAULTS, EngineConfig
    from trajstream.stream.engine import Engine
    from trajstream.stream.metrics import Metrics
    from trajstream.stream.predict_stage import TilePublisher
    from trajstream.stream.tiles import TileGrid

    values = path.read_bytes().splitlines()
    keys = [orjson.loads(v)["vehicle_id"].encode() for v in values]
    part = np.array([(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys])
    cfg = EngineConfig()
    model = load_predictor(predictor, cfg.spec)
    grid = TileGrid(tile_m, DEFAULTS.max_speed_mps * cfg.horizon_s + DEFAULTS.halo_margin_m,
                    partitions)

    def cpu(mine: list[int]) -> float:
        idx = np.flatnonzero(np.isin(part, mine))
        ks, vs, ps = [keys[i] for i in idx], [values[i] for i in idx], part[idx]
        eng = Engine(cfg, model, Metrics(), publisher=TilePublisher(grid, model.name,
                                                                    partitions))
        t0 = time.process_time()
        for lo in range(0, len(vs), 5000):  # the processor's default batch
            batch, _ = decode_batch(ks[lo:lo + 5000], vs[lo:lo + 5000], CodecConfig())
            eng.process(batch, lo, partitions=ps[lo:lo + 5000][batch.index])
        eng.flush()
        return time.process_time() - t0

    half = partitions // 2
    whole = cpu(list(range(partitions)))
    return whole, cpu(list(range(half))) + cpu(list(range(half, partitions)))


def main() -> None:
    ap = parser(__doc__, bootstrap=True)
    ap.add_argument("--vehicles", type=int, default=1000, help="simulated vehicles")
    # 180 s: a 2-process drain then lasts ~20 s, of which ~6 s is the join (the broker's 3 s
    # initial rebalance delay and start-up); with 60 s only ~6 s of it was steady.
    ap.add_argument("--seconds", type=int, default=180,
                    help="seconds of simulated 10 Hz traffic published to the topic")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the positions topic")
    ap.add_argument("--predictor", default="lstm",
                    help="predictor of the predict stage (cv, ctrv, lstm)")
    ap.add_argument("--tile-m", default="1000",
                    help="side (m) of the square tiles the risk stage is keyed by")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved 1- and 2-process runs; the median is reported")
    ap.add_argument("--split-rounds", type=int, default=3,
                    help="rounds of the engine-only split measurement (5.); 0 skips it")
    a = ap.parse_args()
    with kafka_broker(a.bootstrap) as bootstrap, \
            tempfile.TemporaryDirectory(prefix="bench-scale-out-data-") as data_dir:
        from trajstream.stream.kafka import create_topics

        pos = Path(data_dir) / "positions.jsonl"
        run("simulate", "--vehicles", str(a.vehicles), "--duration", str(a.seconds),
            "--seed", "1", "--no-pace", "--out", str(pos))
        u = uuid.uuid4().hex[:6]
        topic = f"bench-scaling-{u}"
        create_topics(bootstrap, [topic], partitions=a.partitions)
        run("replay", str(pos), "--bootstrap", bootstrap, "--topic", topic, "--no-pace")
        n = sum(1 for _ in pos.open("rb"))
        print(f"{n} positions ({a.vehicles} vehicles, {a.seconds} s at 10 Hz), "
              f"{a.partitions} partitions, predictor {a.predictor}, {os.cpu_count()} CPUs")

        steady: dict[int, list[float]] = {1: [], 2: []}
        whole: dict[int, list[float]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        ratios: dict[str, list[float]] = {"steady": [], "whole": [], "cpu": []}
        internal_topic = ""
        for rnd in range(1, a.rounds + 1):
            print(f"round {rnd} (load average {os.getloadavg()[0]:.1f}):")
            for procs in (1, 2):
                group = f"g-{u}-{rnd}-{procs}"
                internal_topic_k = f"bench-predicted-{u}-{rnd}-{procs}"
                res, rate = parallel(procs, "process", "--bootstrap", bootstrap,
                                     "--positions-topic", topic, "--stage", "predict",
                                     "--internal-topic", internal_topic_k, "--group", group,
                                     "--predictor", a.predictor, "--tile-m", a.tile_m,
                                     "--until-end")
                total = sum(m.records for m in res)
                whole[procs].append(n / max(m.processing_s for m in res))
                cpu[procs].append(sum(m.cpu_s for m in res))
                if rate is not None:
                    steady[procs].append(rate)
                shown = "(window under 1 s)" if rate is None else f"{rate:,.0f} positions/s"
                print(f"  predict stage, {procs} process(es): steady {shown}; whole run "
                      f"{whole[procs][-1]:,.0f} positions/s, {n / cpu[procs][-1]:,.0f} per "
                      f"CPU second; {total - n} records read twice after a rebalance")
                for m in res:
                    print(f"    {m.line()}")
                if procs == 1 and rnd == 1:
                    internal_topic = internal_topic_k
                    vehicles_cl, bytes_cl = changelog_bytes(bootstrap, f"{group}-changelog")
            if len(steady[1]) == len(steady[2]) == rnd:
                ratios["steady"].append(steady[2][-1] / steady[1][-1])
            ratios["whole"].append(whole[2][-1] / whole[1][-1])
            ratios["cpu"].append(cpu[2][-1] / cpu[1][-1])
            print("  2 / 1: steady " + (f"{ratios['steady'][-1]:.2f}x" if
                  len(ratios["steady"]) == rnd else "-") + f", whole run "
                  f"{ratios['whole'][-1]:.2f}x; CPU for the same positions "
                  f"{ratios['cpu'][-1]:.2f}x one process's")
        med = statistics.median
        print(f"median of {a.rounds} round(s): 1 process "
              + (f"{med(steady[1]):,.0f} positions/s steady, " if steady[1] else "")
              + f"{med(whole[1]):,.0f} whole run; 2 processes / 1: steady "
              + (f"{med(ratios['steady']):.2f}x" if ratios["steady"] else "-")
              + f" (target 1.6x), whole run {med(ratios['whole']):.2f}x; CPU for the same "
              f"positions {med(ratios['cpu']):.2f}x (1.00x: the work splits without "
              f"overhead)")

        recs, size, rows, distinct = topic_stats(bootstrap, internal_topic)
        ticks = a.seconds / 0.2
        print(f"internal topic (tile {a.tile_m} m): {recs} records, {size / 1e6:.1f} MB; "
              f"{size / max(rows, 1):.0f} bytes per vehicle row; halo duplication "
              f"{rows / max(distinct, 1):.2f} rows per vehicle-tick; "
              f"{distinct / ticks:.0f} vehicles per tick")
        err = run("process", "--bootstrap", bootstrap, "--stage", "risk", "--internal-topic",
                  internal_topic, "--positions-topic", topic, "--group", f"g-{u}-risk",
                  "--alerts-topic", f"bench-alerts-{u}", "--tile-m", a.tile_m,
                  "--metrics-port", "0", "--until-end")
        m = DONE.findall(err)
        r_recs, r_s = int(m[-1][0]), float(m[-1][1])
        print(f"risk stage, 1 process: {r_recs} records in {r_s:.1f} s; "
              f"{rows / r_s:,.0f} vehicle rows/s ({distinct / r_s:,.0f} vehicle-ticks/s)")
        print(f"predict changelog: {vehicles_cl} vehicles, {bytes_cl / max(vehicles_cl, 1):.0f}"
              f" bytes per vehicle")
        splits = []
        for _ in range(a.split_rounds):
            whole_s, halves_s = split_cpu(pos, a.partitions, a.predictor, float(a.tile_m))
            splits.append(halves_s / whole_s)
            print(f"engine alone (no Kafka): all positions {whole_s:.2f} CPU s, the two halves "
                  f"{halves_s:.2f} CPU s: {splits[-1]:.2f}x", flush=True)
        if splits:
            print(f"splitting the vehicles in two costs {statistics.median(splits):.2f}x the "
                  f"CPU by itself (median of {len(splits)})")


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"({time.monotonic() - t0:.0f} s)")
