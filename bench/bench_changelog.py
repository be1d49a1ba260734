"""CPU to write one commit's changelog to Kafka: every moved vehicle's state, LSTM-sized.

A commit writes the state of every vehicle that changed since the previous one (at 10 Hz:
all of them). Times, per Kafka client, the changelog writer (stream/changelog.py: a record
per shard of about a hundred vehicles) beside the record per vehicle it replaced (the same
JSON encoder as before, one ``send`` each), both through the processor's producer to a real
broker, flushed; prints the best CPU time (process, client threads included) of
``--repeat`` commits, the steadier figure on a shared machine.

Usage: python bench/bench_changelog.py [--bootstrap HOST:PORT] [--vehicles 5000]
    [--repeat 7] [--clients confluent,kafka-python]
"""

from __future__ import annotations

import binascii
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from _kit import kafka_broker, parser

from trajstream.stream import checkpoint as ck
from trajstream.stream.app import load_predictor
from trajstream.stream.changelog import TOPIC_CONFIG, Changelog
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.kafka import create_topics, make_producer

PARTITIONS = 6


def _per_vehicle(vs: ck.VehicleRows) -> list[bytes]:
    """The values of the record-per-vehicle changelog (version 1), encoded as it was."""
    b64 = binascii.b2a_base64
    rows = np.ascontiguousarray(vs.rows, np.float64)
    rec = np.ascontiguousarray(vs.rec, np.float32)
    rb, cb = rows.reshape(-1).data.cast("B"), rec.reshape(-1).data.cast("B")
    wr, wc = rows.shape[1] * 8, rec.shape[1] * 4
    fmt = b'{"v":1,"p":%d,"s":%d,"row":"%s","rec":"%s","ep":%s}'
    return [fmt % (p, s, b64(rb[i * wr:(i + 1) * wr], newline=False),
                   b64(cb[i * wc:(i + 1) * wc], newline=False),
                   b"null" if (ep := vs.episodes.get(v)) is None else orjson.dumps(ep))
            for i, (v, p, s) in enumerate(zip(vs.ids, vs.partitions, vs.slots, strict=True))]


def _best_cpu_ms(f: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def main() -> None:
    ap = parser(__doc__, bootstrap=True)
    ap.add_argument("--vehicles", type=int, default=5000,
                    help="vehicles whose state one commit writes")
    ap.add_argument("--repeat", type=int, default=7,
                    help="commits timed per writer; the best CPU time is printed")
    ap.add_argument("--clients", default="confluent,kafka-python",
                    help="Kafka clients to time, comma-separated (confluent, kafka-python)")
    args = ap.parse_args()
    cfg = EngineConfig()
    predictor = load_predictor("lstm", cfg.spec)
    width, state = Engine(cfg, predictor).store.row_width(), predictor.state_dim
    n, rng = args.vehicles, np.random.default_rng(0)
    ids = [f"veh-{i}" for i in range(n)]
    vs = ck.VehicleRows(
        ids, [i % PARTITIONS for i in range(n)], list(range(n)), rng.normal(size=(n, width)),
        rng.normal(size=(n, state)).astype(np.float32),
        {v: {"episodes": {"x": {"start": 1.0, "last": 2.0, "severity": "warning"}}}
         for v in ids[::50]})
    cp = ck.Checkpoint(vs, [], {"done": 1})
    print(f"{n:,} vehicles on {PARTITIONS} partitions: state row {width} float64 + {state} "
          f"float32 ({sum(map(len, _per_vehicle(vs))) / n:,.0f} bytes per vehicle record)")
    with kafka_broker(args.bootstrap) as bootstrap:
        for client in args.clients.split(","):
            topic = f"bench-changelog-{uuid.uuid4().hex[:8]}"
            create_topics(bootstrap, [topic], partitions=PARTITIONS, config=TOPIC_CONFIG,
                          client=client)
            producer = make_producer(bootstrap, client=client)
            writer = Changelog(producer, topic, bootstrap=bootstrap, client=client,
                               partitions=PARTITIONS)
            def per_vehicle(producer: Any = producer, topic: str = topic) -> None:
                for v, p, value in zip(vs.ids, vs.partitions, _per_vehicle(vs), strict=True):
                    producer.send(topic, value, v.encode(), p)
                for p in range(PARTITIONS):
                    producer.send(topic, ck.encode_meta(cp.meta, p), ck.meta_key(p), p)
                producer.flush(60.0)

            sent: list[int] = []

            def shards(producer: Any = producer, writer: Changelog = writer,
                       sent: list[int] = sent) -> None:
                writer.forget(range(PARTITIONS))  # every vehicle new: every shard written
                sent.append(writer.write(cp, range(PARTITIONS)))
                producer.flush(60.0)

            before = _best_cpu_ms(per_vehicle, args.repeat)
            after = _best_cpu_ms(shards, args.repeat)
            producer.close()
            print(f"  {client:12s} a record per vehicle ({n + PARTITIONS:,} records) "
                  f"{before:7.1f} CPU ms per commit; shards ({sent[0]} records) {after:7.1f} "
                  f"ms: {before / after:.1f}x less CPU")


if __name__ == "__main__":
    main()
