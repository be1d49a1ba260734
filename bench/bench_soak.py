"""Hostile soak, longer: ~10% bad records of every kind mixed into a built-in or SUMO run.

The clean run and the same run with the hostile mix (trajstream/simulator/hostile.py) go to
two topics of one broker and are each drained by `trajstream process --until-end` with the
product defaults (LSTM, confluent-kafka). Prints whether the valid traffic's alerts are the
same, every count by reason beside what was injected, and the processing rate of both runs
(records/s from the processors' own summary lines; the ratio is what to read, the machine
is shared). tests/integration/test_soak_hostile.py is the short version with assertions.

Usage:
  python bench/bench_soak.py [--engine builtin|sumo] [--vehicles 200] [--duration 120]
      [--seed 11] [--share 0.10] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import _kit
import orjson

from trajstream.simulator.hostile import mix, summary_counts
from trajstream.stream.kafka import create_topics, make_consumer, make_producer


def _cli(*args: str) -> str:
    """Run a trajstream command; its stderr (exits on failure)."""
    done = subprocess.run([sys.executable, "-m", "trajstream", "--log-level", "INFO", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"trajstream {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stderr


def _read(bootstrap: str, topic: str) -> list[bytes]:
    consumer = make_consumer(bootstrap, [topic], group=None)
    out: list[bytes] = []
    try:
        while True:
            recs = consumer.poll(5000, 1.0)
            out.extend(r.value for r in recs)
            if not recs and consumer.assignment() and consumer.lag() == 0:
                return out
    finally:
        consumer.close()


def _drain(bootstrap: str, records: list[tuple[bytes | None, bytes]], label: str
           ) -> tuple[list[bytes], Counter[str], dict[str, int], float]:
    """Publish, process to the end; (alerts, dead letters by reason, counts, records/s)."""
    tag = uuid.uuid4().hex[:8]
    positions, alerts, dlq = (f"soak-{label}-{t}-{tag}" for t in ("pos", "alerts", "dlq"))
    create_topics(bootstrap, [positions, alerts, dlq], partitions=1)
    producer = make_producer(bootstrap)
    for key, value in records:
        producer.send(positions, value, key)
    producer.flush()
    producer.close()
    err = _cli("process", "--bootstrap", bootstrap, "--positions-topic", positions,
               "--alerts-topic", alerts, "--dlq-topic", dlq, "--group", f"soak-{tag}",
               "--until-end", "--metrics-port", "0")
    counts = summary_counts(err)
    if counts is None:
        sys.exit(f"no summary line from the {label} run:\n{err[-3000:]}")
    rate = float(next(x for x in err.splitlines() if "done:" in x).split("(")[1].split("/s")[0])
    letters = Counter(orjson.loads(v)["reason"] for v in _read(bootstrap, dlq))
    return _read(bootstrap, alerts), letters, counts, rate


def _describe_difference(ref: list[bytes], got: list[bytes]) -> None:
    a = {d["alert_id"]: d for d in map(orjson.loads, ref)}
    b = {d["alert_id"]: d for d in map(orjson.loads, got)}
    changed = [k for k in a.keys() & b.keys() if a[k] != b[k]]
    print(f"  {len(a.keys() - b.keys())} only clean, {len(b.keys() - a.keys())} only hostile, "
          f"{len(changed)} with the same id but other content; same set: {set(ref) == set(got)}")
    for k in changed[:3]:
        x, y = a[k], b[k]
        print(f"  {x['vehicle_a']}|{x['vehicle_b']} at {x['ts']}: "
              f"{ {f: (x[f], y[f]) for f in x if f != 'vehicles' and x[f] != y[f]} }")


def main() -> None:
    ap = _kit.parser(__doc__)
    ap.add_argument("--engine", choices=("builtin", "sumo"), default="builtin",
                    help="simulator engine of the run")
    ap.add_argument("--vehicles", type=int, default=200, help="simulated vehicles")
    ap.add_argument("--duration", type=float, default=120.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=11, help="simulation seed")
    ap.add_argument("--share", type=float, default=0.10,
                    help="hostile records mixed in, as a share of the valid records")
    ap.add_argument("--bootstrap", default=None,
                    help="Kafka bootstrap servers (HOST:PORT) of a running broker; unset: start "
                    "a throwaway one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        pos = Path(tmp) / "positions.jsonl"
        print(f"simulating {args.vehicles} vehicles for {args.duration:g} s ({args.engine}) ...",
              flush=True)
        _cli("simulate", "--engine", args.engine, "--vehicles", str(args.vehicles),
             "--duration", f"{args.duration:g}", "--seed", str(args.seed), "--reckless", "0.3",
             "--no-pace", "--out", str(pos))
        lines = pos.read_bytes().splitlines()
    feed = mix(lines, args.share)
    print(f"{feed.valid:,} valid records + {feed.hostile:,} hostile "
          f"({feed.hostile / feed.valid:.1%})", flush=True)
    with _kit.kafka_broker(args.bootstrap) as bootstrap:
        clean = [(orjson.loads(x)["vehicle_id"].encode(), x) for x in lines]
        ref_alerts, ref_letters, ref, ref_rate = _drain(bootstrap, clean, "clean")
        alerts, letters, got, rate = _drain(bootstrap, feed.records, "hostile")
    same = alerts == ref_alerts
    print(f"\nvalid traffic's alerts: {len(ref_alerts)} clean, {len(alerts)} with the hostile "
          f"mix: {'identical' if same else 'DIFFERENT'}")
    if not same:
        _describe_difference(ref_alerts, alerts)
        print(f"  clean run: {ref}\n  hostile run: {got}")
    want = ref_letters + feed.dead_letters
    print(f"\n{'dead letters':<16} {'expected':>9} {'counted':>9}")
    for reason in sorted(set(want) | set(letters)):
        note = " (the fast clock's last fix may stay unjudged)" if reason == "ahead" else ""
        print(f"{reason:<16} {want[reason]:>9,} {letters[reason]:>9,}{note}")
    print(f"\n{'counted only':<16} {'expected':>9} {'counted':>9}")
    print(f"{'dense':<16} {feed.dense:>9,} {got['dense']:>9,}")
    print(f"{'stale':<16} {ref['stale']:>9,} {got['stale']:>9,}")
    print(f"\n{'corrected':<16} {'at least':>9} {'at most':>9} {'counted':>9}")
    for reason, (most, least) in feed.corrected.items():
        print(f"{reason:<16} {least:>9,} {most:>9,} {got[reason]:>9,}")
    print(f"\nprocessing rate: clean {ref_rate:,.0f} records/s, hostile {rate:,.0f} records/s "
          f"({rate / ref_rate:.2f}x, same broker, same run)")


if __name__ == "__main__":
    main()
