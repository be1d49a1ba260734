"""Processor throughput draining a pre-filled positions topic, and batch latency.

For each fleet size (default 1k, 5k and 20k vehicles) a topic with 6 partitions (the
docker-compose layout) is filled with simulated traffic (``--seconds`` of it at 10 Hz, GPS
noise, drops, late and duplicate messages included). Then, per predictor and Kafka client,
the processor drains it in this process with exactly the loop `trajstream process
--until-end` runs (Kafka source, decode, dead letters, engine, alerts to a Kafka topic,
flush and commit). Prints positions/s from the first record to the end, positions per CPU
second (less sensitive to a busy machine), the p50/p99 wall time of one micro-batch, and
beside them the raw consume rate of each client on the same topic in the same run (the
library alone, no processing: the ceiling; read before and after the drains, and their
mean taken, since other work on a shared machine moves it) and the ratios issue 13's
acceptance names, on the wall clock and per CPU second. kafka-python's ceiling is read
with the batch record parser the processor's consumer uses (stream/kafka/_recordbatch.py),
so the ratio compares like with like; the library's own per-record parsing (slower) is
printed beside it as ``kp-own-parse``.

Target: >= 50k positions/s with the constant-velocity predictor and confluent-kafka.

Usage:
  python bench/bench_processor.py [--bootstrap HOST:PORT] [--vehicles 1000,5000,20000]
      [--seconds 10] [--predictors cv,lstm] [--clients confluent,kafka-python]
      [--max-batch-records 5000] [--profile DIR]

Without --bootstrap (or $TRAJSTREAM_BENCH_BOOTSTRAP) a throwaway broker is started from
broker/lib. Generated traffic is cached under .run/bench/ between runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import itertools  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _kit import kafka_broker, parser, simulated_traffic  # noqa: E402

PARTITIONS = 6
OWN_PARSER = "kp-own-parse"  # the raw kafka-python read with the library's per-record parser


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


def _raw_consume(bootstrap: str, topic: str, client: str, n: int, max_batch: int,
                 batch_parser: bool = False) -> tuple[float, float]:
    """The client's own consume ceiling: records/s reading the whole topic with the library
    itself (same fetch settings as the processor's consumer, touching each value, nothing
    else), from the first record to the last; and records per CPU second of the process
    over the same span (client threads included, as in the drains). ``batch_parser``:
    kafka-python with the processor's batch record parser installed."""
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    got, first, cpu0 = 0, None, 0.0
    deadline = time.monotonic() + 600
    if client == "confluent":
        from confluent_kafka import Consumer

        from trajstream.stream.kafka._confluent import _CONSUMER_DEFAULTS

        c = Consumer({**_CONSUMER_DEFAULTS, "bootstrap.servers": bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        try:
            while got < n and time.monotonic() < deadline:
                msgs = c.consume(num_messages=max_batch, timeout=0.5)
                if msgs and first is None:
                    first, cpu0 = time.monotonic(), time.process_time()
                got += sum(1 for m in msgs if m.error() is None and m.value() is not None)
        finally:
            c.close()
    else:
        from kafka import KafkaConsumer

        from trajstream.stream.kafka._kafkapython import _CONSUMER_DEFAULTS as KP
        from trajstream.stream.kafka._recordbatch import as_tuples, install

        kc = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=group,
                           auto_offset_reset="earliest", **KP)
        fast = batch_parser and install(kc)
        try:
            while got < n and time.monotonic() < deadline:
                for recs in kc.poll(timeout_ms=500, max_records=max_batch).values():
                    if recs and first is None:
                        first, cpu0 = time.monotonic(), time.process_time()
                    got += sum(1 for r in as_tuples(recs, fast) if r[3] is not None)
        finally:
            kc.close(autocommit=False)
    assert first is not None and got >= n, f"raw {client} consume read {got} of {n}"
    return got / (time.monotonic() - first), got / (time.process_time() - cpu0)


def _drain(bootstrap: str, topic: str, predictor: str, client: str, max_batch: int,
           profile_dir: Path | None, label: str, risk_process: bool) -> dict[str, Any]:
    from trajstream.stream.app import Processor, build_io, load_predictor
    from trajstream.stream.config import ProcessorConfig
    from trajstream.stream.metrics import Metrics

    cfg = ProcessorConfig(
        source="kafka", bootstrap=bootstrap, positions_topic=topic,
        alerts_topic=f"{topic}-alerts", group=f"bench-{uuid.uuid4().hex[:8]}",
        kafka_client=client, until_end=True, predictor=predictor,  # type: ignore[arg-type]
        max_batch_records=max_batch, commit_interval_s=1.0, risk_process=risk_process,
    )
    proc = Processor(cfg, build_io(cfg), load_predictor(predictor, cfg.engine.spec), Metrics())
    proc.keep_batch_latencies()
    profiler = None
    if profile_dir is not None:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    summary = proc.run()
    end = time.monotonic()
    cpu = summary["cpu_s"]  # the risk process's included
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
    ap = parser(__doc__, bootstrap=True)
    ap.add_argument("--vehicles", default="1000,5000,20000",
                    help="fleet sizes, comma-separated (a topic is filled for each)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="seconds of simulated 10 Hz traffic per fleet")
    ap.add_argument("--predictors", default="cv,lstm",
                    help="predictors to drain with, comma-separated (cv, ctrv, lstm)")
    ap.add_argument("--clients", default="confluent,kafka-python",
                    help="Kafka clients to drain and read with, comma-separated (confluent, "
                    "kafka-python)")
    ap.add_argument("--max-batch-records", type=int, default=5000,
                    help="most records per micro-batch of the processor and per raw consume call")
    ap.add_argument("--seed", type=int, default=3, help="seed of the simulated traffic")
    ap.add_argument("--risk", default="process",
                    help="where the conflict stage runs, comma-separated: process (the "
                    "default on 2+ CPUs), inline; both give an A/B in one run")
    ap.add_argument("--profile", type=Path, default=None,
                    help="write a pyinstrument profile of each drain into this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with kafka_broker(args.bootstrap) as bootstrap:
        rows = []
        # (vehicles, client) -> [(records/s, records per CPU s)], measured before and after
        # the drains of that fleet: their mean is the ceiling the drains are compared with
        raws: dict[tuple[int, str], list[tuple[float, float]]] = {}
        clients = args.clients.split(",")
        for vehicles in [int(v) for v in args.vehicles.split(",")]:
            print(f"{vehicles} vehicles:", flush=True)
            topic, n = _fill(bootstrap, simulated_traffic(vehicles, args.seconds, args.seed))

            def raw_round(vehicles: int = vehicles, topic: str = topic, n: int = n) -> None:
                for client in clients:
                    # kafka-python twice: with the processor's batch parser (the ceiling of
                    # its ratio) and with the library's own per-record parser
                    reads = [(client, client == "kafka-python")]
                    if client == "kafka-python":
                        reads.append((OWN_PARSER, False))
                    for name, parser in reads:
                        wall, cpu = _raw_consume(bootstrap, topic, client, n,
                                                 args.max_batch_records, parser)
                        raws.setdefault((vehicles, name), []).append((wall, cpu))
                        print(f"    raw  {name:12s} {wall:>9,.0f} records/s ({cpu:>9,.0f} "
                              f"per CPU s; the client alone)", flush=True)

            raw_round()
            for predictor, client, risk in itertools.product(
                    args.predictors.split(","), clients, args.risk.split(",")):
                label = f"{vehicles}v-{predictor}-{client}-{risk}"
                r = _drain(bootstrap, topic, predictor, client, args.max_batch_records,
                           args.profile, label, risk == "process")
                r["risk"] = risk
                rows.append((vehicles, predictor, client, r))
                print(f"    {predictor:4s} {client:12s} {risk:7s} {r['rate']:>9,.0f} positions/s "
                          f"({r['cpu_rate']:>9,.0f} per CPU s)  batch p50 "
                          f"{r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms", flush=True)
            raw_round()
    raw = {k: statistics.mean(w for w, _ in v) for k, v in raws.items()}
    raw_cpu = {k: statistics.mean(c for _, c in v) for k, v in raws.items()}
    print(f"\nprocessor draining a pre-filled topic ({PARTITIONS} partitions, "
          f"{args.seconds:g} s of 10 Hz traffic per fleet, batches of up to "
          f"{args.max_batch_records} records, {os.cpu_count()} CPUs); raw: the client alone, "
          f"mean of a read before and after the drains; x raw: positions/s over raw records/s, "
          f"x CPU: the same per CPU second")
    print(f"{'vehicles':>8} {'predictor':>9} {'client':>12} {'risk':>7} {'records':>10} "
          f"{'positions/s':>12} "
          f"{'per CPU s':>10} {'x raw':>6} {'x CPU':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'late':>6} {'alerts':>6}")
    for (vehicles, client), rate in raw.items():
        spread = "-".join(f"{w / 1000:.0f}k" for w, _ in raws[(vehicles, client)])
        print(f"{vehicles:>8} {'raw':>9} {client:>12} {'':>7} {'':>10} {rate:>12,.0f} "
              f"{raw_cpu[(vehicles, client)]:>10,.0f}  ({spread})")
    for vehicles, predictor, client, r in rows:
        key = (vehicles, client)
        print(f"{vehicles:>8} {predictor:>9} {client:>12} {r['risk']:>7} {r['records']:>10,} "
              f"{r['rate']:>12,.0f} "
              f"{r['cpu_rate']:>10,.0f} {r['rate'] / raw[key]:>6.2f} "
              f"{r['cpu_rate'] / raw_cpu[key]:>6.2f} "
              f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['late']:>6} {r['alerts']:>6}")
    # Replay determinism: the drains of one topic drop the same records late (each judged
    # against its own partition) and give the same alerts per predictor, whatever the client
    # and however its fetches interleaved the partitions.
    for vehicles in sorted({v for v, *_ in rows}):
        late = {r["late"] for v, p, c, r in rows if v == vehicles}
        alerts = {p: {r["alerts"] for v, q, c, r in rows if v == vehicles and q == p}
                  for p in {p for v, p, c, r in rows if v == vehicles}}
        same = len(late) == 1 and all(len(a) == 1 for a in alerts.values())
        print(f"{vehicles} vehicles: late drops {sorted(late)}, alerts "
              f"{ {p: sorted(a) for p, a in sorted(alerts.items())} }: "
              f"{'the same in every drain' if same else 'DIFFER between drains'}")
    print("\nacceptance (issue 13), ratios of this run:")
    for vehicles, predictor, client, r in rows:
        x = r["rate"] / raw[(vehicles, client)]
        if predictor == "lstm" and client == "confluent":
            ok = r["rate"] >= 100_000 and x >= 0.5
            print(f"  {vehicles} vehicles, lstm + confluent, risk {r['risk']}: "
                  f"{r['rate']:,.0f} positions/s "
                  f"(>= 100,000) and {x:.2f}x raw confluent (>= 0.5): "
                  f"{'met' if ok else 'NOT met'}")
        elif client == "kafka-python":
            xc = r["cpu_rate"] / raw_cpu[(vehicles, client)]
            own = r["rate"] / raw[(vehicles, OWN_PARSER)]
            print(f"  {vehicles} vehicles, {predictor} + kafka-python, risk {r['risk']}: "
                  f"{x:.2f}x raw kafka-python "
                  f"with the same batch parser (>= 0.6): {'met' if x >= 0.6 else 'NOT met'} "
                  f"(per CPU second {xc:.2f}x; {own:.2f}x the library's own per-record "
                  f"parsing)")
    cv = [r["rate"] for v, p, c, r in rows if p == "cv" and c == "confluent"]
    if cv:
        verdict = "meets" if min(cv) >= 50_000 else "BELOW"
        print(f"target >= 50,000 positions/s (cv, confluent): {verdict} "
              f"(min {min(cv):,.0f}, median {statistics.median(cv):,.0f})")


if __name__ == "__main__":
    main()
