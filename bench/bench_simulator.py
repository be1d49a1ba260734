"""Simulator throughput: the engine alone, JSONL output unpaced, Kafka publishing per client.

Prints, for --vehicles (default 5,000) at 10 Hz after the warm-up:
  1. engine only (traffic + ground truth, no messages): vehicle-updates/s
  2. the whole pipeline (sensors, JSON encoding) writing JSONL unpaced: vehicle-updates/s
  3. publishing pre-encoded position messages with each Kafka client: msgs/s
  4. `simulate` to Kafka with confluent-kafka, unpaced (msgs/s) and paced in real time
     (does it keep 5,000 vehicles x 10 Hz = 50,000 msgs/s, and how far behind does it fall)
Targets: engine >= 200k vehicle-updates/s; 5,000 vehicles at 10 Hz sustained with confluent.

Run: .venv/bin/python bench/bench_simulator.py [--vehicles 5000] [--seconds 20]
     [--bootstrap HOST:PORT | --no-kafka]
Without --bootstrap a throwaway broker is started from broker/lib (as `make test` does).
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
from _kit import kafka_broker, parser
from tqdm import tqdm

from trajstream.simulator import SimConfig, iter_ticks
from trajstream.simulator.engine import Engine
from trajstream.simulator.publish import JsonlSink, KafkaSink, Pacer

TTY = sys.stderr.isatty()


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="tick", leave=False, disable=not TTY)


def engine_only(cfg: SimConfig) -> tuple[float, float]:
    """(updates/s wall, updates/s CPU) of Engine.step, ground-truth contacts included."""
    engine = Engine(cfg, np.random.default_rng(cfg.seed))
    for _ in range(int(cfg.warmup_s * cfg.hz)):
        engine.step()
    updates, n = 0, cfg.n_ticks or 0
    t0, c0 = time.perf_counter(), time.process_time()
    with _bar(n, "engine") as bar:
        for _ in range(n):
            updates += engine.step().vid.shape[0]
            bar.update()
    return updates / (time.perf_counter() - t0), updates / (time.process_time() - c0)


def jsonl_unpaced(cfg: SimConfig, path: Path) -> tuple[float, float, float]:
    """(updates/s wall, updates/s CPU, msgs/s wall) of iter_ticks -> JSONL, after warm-up."""
    sink = JsonlSink(path)
    updates = messages = 0
    ticks = iter_ticks(cfg)
    first = next(ticks)  # the warm-up runs inside the first next()
    sink.write(first.messages)
    t0, c0 = time.perf_counter(), time.process_time()
    with _bar((cfg.n_ticks or 1) - 1, "jsonl") as bar:
        for tick in ticks:
            sink.write(tick.messages)
            updates += tick.vehicles
            messages += len(tick.messages)
            bar.update()
    sink.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return updates / wall, updates / cpu, messages / wall


def kafka_publish(bootstrap: str, client: str, messages: list[tuple[bytes, bytes]]) -> float:
    """msgs/s of sending pre-encoded messages (keyed by vehicle id) and flushing them."""
    sink = KafkaSink(bootstrap, f"bench-sim-{client}-{uuid.uuid4().hex[:8]}", client=client)
    t0 = time.perf_counter()
    step = 10_000
    with tqdm(total=len(messages), desc=client, unit="msg", leave=False,
              disable=not TTY) as bar:
        for i in range(0, len(messages), step):
            sink.write(messages[i:i + step])
            bar.update(min(step, len(messages) - i))
        sink.close()  # flush: every message acknowledged
    return len(messages) / (time.perf_counter() - t0)


def simulate_to_kafka(cfg: SimConfig, bootstrap: str, pace: bool) -> tuple[float, float]:
    """(msgs/s, the most it fell behind schedule in s) of the whole simulate -> Kafka path."""
    sink = KafkaSink(bootstrap, f"bench-sim-e2e-{uuid.uuid4().hex[:8]}", client="confluent")
    pacer = Pacer() if pace else None
    ticks = iter_ticks(cfg)
    first = next(ticks)
    messages = len(first.messages)
    sink.write(first.messages)
    t0 = time.perf_counter()
    behind = 0.0
    with _bar((cfg.n_ticks or 1) - 1, "paced" if pace else "unpaced") as bar:
        for tick in ticks:
            if pacer is not None:
                pacer.wait(tick.ts)
            sink.write(tick.messages)
            messages += len(tick.messages)
            behind = max(behind, (time.perf_counter() - t0) - (tick.ts - first.ts))
            bar.update()
    sink.close()
    return messages / (time.perf_counter() - t0), behind


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--vehicles", type=int, default=5000, help="simulated vehicles")
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds (not timed)")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    ap.add_argument("--no-kafka", action="store_true", help="engine and JSONL only")
    ap.add_argument("--kafka-python-messages", type=int, default=100_000,
                    help="kafka-python is slow: publish only this many with it")
    args = ap.parse_args()

    cfg = SimConfig(vehicles=args.vehicles, duration_s=args.seconds, warmup_s=args.warmup)
    grid = cfg.world_config().grid_n
    print(f"simulator: {args.vehicles:,} vehicles, {grid}x{grid} junctions, 10 Hz, "
          f"{args.seconds:g} s simulated per run (after {args.warmup:g} s warm-up)")
    wall, cpu = engine_only(cfg)
    print(f"  engine only            {wall:>12,.0f} vehicle-updates/s  ({cpu:,.0f}/s CPU)"
          f"   target >= 200,000  {'OK' if wall >= 200_000 else 'MISSED'}")
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu, msgs = jsonl_unpaced(cfg, Path(tmp) / "positions.jsonl")
    print(f"  JSONL unpaced          {wall:>12,.0f} vehicle-updates/s  ({cpu:,.0f}/s CPU, "
          f"{msgs:,.0f} msgs/s)   target >= 200,000  {'OK' if wall >= 200_000 else 'MISSED'}")
    if args.no_kafka:
        return

    messages = [m for t in iter_ticks(replace(cfg, duration_s=min(args.seconds, 10.0)))
                for m in t.messages]
    with kafka_broker(args.bootstrap) as bootstrap:
        print(f"  Kafka at {bootstrap}, {len(messages):,} pre-encoded position messages")
        for client in ("confluent", "kafka-python"):
            batch = messages if client == "confluent" else messages[:args.kafka_python_messages]
            rate = kafka_publish(bootstrap, client, batch)
            print(f"  publish {client:14s} {rate:>12,.0f} msgs/s  ({len(batch):,} messages, "
                  f"flushed)")
        rate, _ = simulate_to_kafka(cfg, bootstrap, pace=False)
        need = args.vehicles * cfg.hz
        print(f"  simulate -> Kafka      {rate:>12,.0f} msgs/s unpaced (confluent); "
              f"{args.vehicles:,} x 10 Hz needs {need:,.0f}")
        _, behind = simulate_to_kafka(cfg, bootstrap, pace=True)
        ok = behind < 1.0
        print(f"  paced in real time     {'sustained' if ok else 'NOT sustained'}: at most "
              f"{behind:.2f} s behind schedule over {args.seconds:g} s")


if __name__ == "__main__":
    main()
