"""Processor throughput draining a pre-filled positions topic, and batch latency.

For each fleet size (default 1k, 5k and 20k vehicles) a topic with 6 partitions (the
docker-compose layout) is filled with simulated traffic (``--seconds`` of it at 10 Hz, GPS
noise, drops, late and duplicate messages included). Then, per predictor and Kafka client,
the processor drains it in this process with exactly the loop `trajstream process
--until-end` runs (Kafka source, decode, dead letters, engine, alerts to a Kafka topic,
flush and commit). Prints positions/s from the first record to the end, positions per CPU
second (less sensitive to a busy machine), and the p50/p99 wall time of one micro-batch.

Target: >= 50k positions/s with the constant-velocity predictor and confluent-kafka.

Usage:
  python bench/bench_processor.py [--bootstrap HOST:PORT] [--vehicles 1000,5000,20000]
      [--seconds 10] [--predictors cv,lstm] [--clients confluent,kafka-python]
      [--max-batch-records 5000] [--profile DIR]

Without --bootstrap (or $TRAJSTREAM_BENCH_BOOTSTRAP) a throwaway broker is started from
kafka/lib. Generated traffic is cached under .run/bench/ between runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".run" / "bench"
PARTITIONS = 6


def _broker(tmp: Path) -> tuple[str, Any]:
    spec = importlib.util.spec_from_file_location("trajstream_bench_broker",
                                                  REPO / "kafka" / "broker.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    broker = mod.start_broker(mod.free_port(), mod.free_port(), tmp / "kafka", wait_s=120)
    return str(broker.bootstrap), broker


def _traffic(vehicles: int, seconds: float, seed: int) -> Path:
    """Positions of a simulated run as JSONL (cached): one line per message."""
    from trajstream.simulator import SimConfig, iter_ticks

    path = CACHE / f"traffic-{vehicles}v-{seconds:g}s-seed{seed}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    t0 = time.perf_counter()
    with tmp.open("wb") as f:
        for tick in iter_ticks(SimConfig(vehicles=vehicles, duration_s=seconds, seed=seed)):
            f.write(b"".join(v + b"\n" for _, v in tick.messages))
    tmp.rename(path)
    print(f"  simulated {vehicles} vehicles x {seconds:g} s in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return path


def _fill(bootstrap: str, path: Path) -> tuple[str, int]:
    import orjson

    from trajstream.stream.kafka import create_topics, make_producer

    topic = f"bench-positions-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic], partitions=PARTITIONS)
    producer = make_producer(bootstrap, client="confluent")
    n = 0
    t0 = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            value = line.rstrip(b"\n")
            producer.send(topic, value, orjson.loads(value)["vehicle_id"].encode())
            n += 1
    producer.flush(120.0)
    producer.close()
    print(f"  filled {topic}: {n:,} records in {time.perf_counter() - t0:.1f} s", flush=True)
    return topic, n


def _drain(bootstrap: str, topic: str, predictor: str, client: str, max_batch: int,
           profile_dir: Path | None, label: str) -> dict[str, Any]:
    from trajstream.stream.app import Processor, build_io, load_predictor
    from trajstream.stream.config import ProcessorConfig
    from trajstream.stream.metrics import Metrics

    cfg = ProcessorConfig(
        source="kafka", bootstrap=bootstrap, positions_topic=topic,
        alerts_topic=f"{topic}-alerts", group=f"bench-{uuid.uuid4().hex[:8]}",
        kafka_client=client, until_end=True, predictor=predictor,  # type: ignore[arg-type]
        max_batch_records=max_batch, commit_interval_s=1.0,
    )
    proc = Processor(cfg, build_io(cfg), load_predictor(predictor, cfg.engine.spec), Metrics())
    proc.keep_batch_latencies()
    profiler = None
    if profile_dir is not None:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    cpu0 = time.process_time()
    summary = proc.run()
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    if profiler is not None:
        profiler.stop()
        assert profile_dir is not None
        profile_dir.mkdir(parents=True, exist_ok=True)
        out = profile_dir / f"{label}.txt"
        out.write_text(profiler.output_text(unicode=False, color=False))
        print(f"    profile: {out}")
    assert proc.first_record_at is not None, "nothing consumed"
    elapsed = end - proc.first_record_at
    lat = np.asarray(proc.batch_seconds)
    return {
        "records": summary["consumed"], "elapsed_s": elapsed,
        "rate": summary["consumed"] / elapsed, "cpu_rate": summary["consumed"] / cpu,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
        "batches": len(lat), "late": summary["late"], "stale": summary["stale"],
        "alerts": summary["warning"] + summary["critical"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=os.environ.get("TRAJSTREAM_BENCH_BOOTSTRAP"))
    ap.add_argument("--vehicles", default="1000,5000,20000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--predictors", default="cv,lstm")
    ap.add_argument("--clients", default="confluent,kafka-python")
    ap.add_argument("--max-batch-records", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None,
                    help="write a pyinstrument profile of each drain into this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    broker = None
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap = args.bootstrap
        if not bootstrap:
            bootstrap, broker = _broker(Path(tmp))
        try:
            rows = []
            for vehicles in [int(v) for v in args.vehicles.split(",")]:
                print(f"{vehicles} vehicles:", flush=True)
                topic, n = _fill(bootstrap, _traffic(vehicles, args.seconds, args.seed))
                for predictor in args.predictors.split(","):
                    for client in args.clients.split(","):
                        label = f"{vehicles}v-{predictor}-{client}"
                        r = _drain(bootstrap, topic, predictor, client, args.max_batch_records,
                                   args.profile, label)
                        rows.append((vehicles, predictor, client, r))
                        print(f"    {predictor:4s} {client:12s} {r['rate']:>9,.0f} positions/s "
                              f"({r['cpu_rate']:>9,.0f} per CPU s)  batch p50 "
                              f"{r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms", flush=True)
        finally:
            if broker is not None:
                broker.stop()
    print(f"\nprocessor draining a pre-filled topic ({PARTITIONS} partitions, "
          f"{args.seconds:g} s of 10 Hz traffic per fleet, batches of up to "
          f"{args.max_batch_records} records, {os.cpu_count()} CPUs)")
    print(f"{'vehicles':>8} {'predictor':>9} {'client':>12} {'records':>10} {'positions/s':>12} "
          f"{'per CPU s':>10} {'p50 ms':>7} {'p99 ms':>7} {'late':>6} {'alerts':>6}")
    for vehicles, predictor, client, r in rows:
        print(f"{vehicles:>8} {predictor:>9} {client:>12} {r['records']:>10,} {r['rate']:>12,.0f} "
              f"{r['cpu_rate']:>10,.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['late']:>6} "
              f"{r['alerts']:>6}")
    cv = [r["rate"] for v, p, c, r in rows if p == "cv" and c == "confluent"]
    if cv:
        verdict = "meets" if min(cv) >= 50_000 else "BELOW"
        print(f"target >= 50,000 positions/s (cv, confluent): {verdict} "
              f"(min {min(cv):,.0f}, median {statistics.median(cv):,.0f})")


if __name__ == "__main__":
    main()
