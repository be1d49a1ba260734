"""Live latency: positions published at a fixed rate, alerts read back as they appear.

For each rate (default 5k, 20k and 50k positions/s: 500, 2,000 and 5,000 simulated vehicles
at 10 Hz) a fresh positions topic (6 partitions) and alerts topic are made, `trajstream
process` runs as its own process on them (product defaults: LSTM, the chosen Kafka client),
and this process publishes the simulated traffic paced in real time (a tick of event time
per 0.1 s of wall time, event time = wall time) while it reads the alerts topic. Reports:

- processing latency: per record, from the poll that returned it to the end of its
  micro-batch (outputs handed to the producer), read from the processor's
  ``trajstream_processing_seconds`` histogram after a warm-up (p50/p99 interpolated in the
  buckets; max = the upper bound of the highest non-empty bucket);
- end to end: from the produce time of a tick's positions to an alert of that tick being
  readable on the alert topic (alert ``ts`` = the tick's event time);
- where the processor's time went over the same window, from its histograms: polls with
  their micro-batches, LSTM steps, risk assessments and commit points (how often, mean,
  highest bucket, share of the wall clock);
- beside them the event-time delay the pipeline adds by design: a tick is assessed once
  every vehicle that may still report in it has (its cadence), at the latest once a fix
  more than ``--tick-lateness-s`` (0.05 s) past it has arrived. The simulator drops and
  delays a few fixes on purpose, and a vehicle missing its fix holds the tick until the
  next step's records show it missed it: the next fix (0.1 s), as on evidence alone (a
  fleet on the 0.1 s grid that delivers every fix has its ticks out with their own). An
  alert cannot appear sooner than that after its positions. End to end minus this delay
  is what the processor and Kafka add.

Targets (issue 13): processing p99 <= 50 ms at 20k positions/s, end to end p99 <= 150 ms
plus the event-time delay.

Usage:
  python bench/bench_latency.py [--bootstrap HOST:PORT] [--rates 5000,20000,50000]
      [--seconds 20] [--warmup-s 5] [--kafka-client confluent|kafka-python]

Without --bootstrap (or $TRAJSTREAM_BENCH_BOOTSTRAP) a throwaway broker is started from
broker/lib. Run it on an otherwise quiet machine: a publisher that falls behind its pace is
reported (the figures then describe a slower rate).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from _kit import free_port, kafka_broker, parser  # noqa: E402

PARTITIONS = 6
HZ = 10.0
SIM_START_TS = 1_764_547_200.0  # event times are shifted onto the wall clock when published


def _ticks(vehicles: int, seconds: float, seed: int) -> list[list[tuple[bytes, float, bytes]]]:
    """Per tick, (key, event time, value) of the simulated positions."""
    from trajstream.simulator import SimConfig, iter_ticks

    out = []
    cfg = SimConfig(vehicles=vehicles, duration_s=seconds, seed=seed, hz=HZ,
                    start_ts=SIM_START_TS)
    for tick in iter_ticks(cfg):
        rows = []
        for key, value in tick.messages:
            d = orjson.loads(value)
            rows.append((key if isinstance(key, bytes) else str(key).encode(), float(d["ts"]),
                         value))
        out.append(rows)
    return out


def _shift(value: bytes, ts: float, offset: float) -> bytes:
    d = orjson.loads(value)
    d["ts"] = round(ts + offset, 3)
    return orjson.dumps(d)


def _scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
               .read().decode())


# The loop's phases, each a histogram of the processor: (label, metric family).
PHASES = (("poll + batch", "trajstream_batch_seconds"),
          ("LSTM step", "trajstream_inference_seconds"), ("risk", "trajstream_risk_seconds"),
          ("commit", "trajstream_commit_seconds"))


def _metrics(port: int) -> dict[str, Any]:
    """Cumulative bucket counts of trajstream_processing_seconds (le -> count), and the sum,
    count and buckets of each of PHASES' families (``family -> (sum, count, {le: n})``),
    with the wall time of the scrape under ``"at"``."""
    proc: dict[float, float] = {}
    phases: dict[str, list[Any]] = {f: [0.0, 0.0, {}] for _, f in PHASES}
    for line in _scrape(port).splitlines():
        name, _, value = line.partition(" ")
        family = name.split("{", 1)[0].rsplit("_", 1)[0]
        if line.startswith("trajstream_processing_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            proc[float(le)] = float(line.rsplit(" ", 1)[1])
        elif family in phases:
            kind = name.split("{", 1)[0].rsplit("_", 1)[1]
            if kind == "sum":
                phases[family][0] = float(value)
            elif kind == "count":
                phases[family][1] = float(value)
            elif kind == "bucket":
                le = line.split('le="', 1)[1].split('"', 1)[0]
                phases[family][2][float(le)] = float(line.rsplit(" ", 1)[1])
    return {"proc": proc, "phases": phases, "at": time.monotonic()}


def _phase_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Per phase over the measured window: how often, mean and highest bucket, and the
    share of the wall clock it took."""
    wall = after["at"] - before["at"]
    out = []
    for label, family in PHASES:
        s1, n1, b1 = after["phases"][family]
        s0, n0, b0 = before["phases"][family]
        n, total = n1 - n0, s1 - s0
        if n <= 0:
            continue
        bounds = sorted(b1)
        counts = np.diff([0.0, *[b1[b] - b0.get(b, 0.0) for b in bounds]])
        top = bounds[int(np.nonzero(counts)[0][-1])]
        out.append(f"{label} {n / wall:.1f}/s mean {total / n * 1e3:.1f} ms max<= "
                   f"{top * 1e3:.0f} ms ({100 * total / wall:.0f}% of the wall clock)")
    return "; ".join(out)


def _drained(port: int, timeout_s: float) -> float:
    """Wait until the processor's consumer lag is 0; the seconds that took (it fell behind
    the rate when this is more than a moment)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        for line in _scrape(port).splitlines():
            if line.startswith("trajstream_consumer_lag_records ") and \
                    float(line.rsplit(" ", 1)[1]) == 0:
                return time.monotonic() - t0
        time.sleep(0.25)
    return float("inf")


def _hist_quantiles(before: dict[float, float], after: dict[float, float]
                    ) -> tuple[float, float, float, int]:
    """p50, p99 (linear within a bucket) and the bound of the highest non-empty bucket."""
    bounds = sorted(after)
    cum = np.array([after[b] - before.get(b, 0.0) for b in bounds])
    total = int(cum[-1])
    if total == 0:
        return float("nan"), float("nan"), float("nan"), 0
    edges = [0.0, *bounds]

    def q(p: float) -> float:
        target = p * total
        i = int(np.searchsorted(cum, target, side="left"))
        lo_c = cum[i - 1] if i else 0.0
        lo, hi = edges[i], edges[i + 1]
        if not np.isfinite(hi):
            return lo
        frac = 0.0 if cum[i] == lo_c else (target - lo_c) / (cum[i] - lo_c)
        return lo + frac * (hi - lo)

    counts = np.diff(np.concatenate([[0.0], cum]))
    top = bounds[int(np.nonzero(counts)[0][-1])]
    return q(0.5), q(0.99), top, total


def _wait_metrics(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"trajstream process exited early ({proc.returncode})")
        try:
            _metrics(port)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("trajstream process did not serve /metrics in time")


def _run(bootstrap: str, rate: int, seconds: float, warmup_s: float, client: str,
         seed: int, risk: str) -> dict[str, Any]:
    from confluent_kafka import Consumer

    from trajstream.stream.kafka import create_topics, make_producer
    from trajstream.stream.kafka._confluent import _CONSUMER_DEFAULTS

    vehicles = max(1, int(round(rate / HZ)))
    ticks = _ticks(vehicles, seconds + warmup_s, seed)
    tag = uuid.uuid4().hex[:8]
    positions, alerts = f"lat-positions-{tag}", f"lat-alerts-{tag}"
    create_topics(bootstrap, [positions], partitions=PARTITIONS)
    create_topics(bootstrap, [alerts], partitions=1)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajstream", "process", "--bootstrap", bootstrap,
         "--positions-topic", positions, "--alerts-topic", alerts, "--group", f"lat-{tag}",
         "--kafka-client", client, "--metrics-port", str(port), "--from-latest",
         "--risk-process" if risk == "process" else "--no-risk-process"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    reader = Consumer({**_CONSUMER_DEFAULTS, "bootstrap.servers": bootstrap,
                       "group.id": f"lat-reader-{tag}", "auto.offset.reset": "earliest",
                       "fetch.wait.max.ms": 5})
    reader.subscribe([alerts])
    seen: list[tuple[float, float]] = []  # (read wall time, alert event time)
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for m in reader.consume(num_messages=1000, timeout=0.05):
                value = m.value()
                if m.error() is None and value is not None:
                    seen.append((time.time(), float(orjson.loads(value)["ts"])))

    try:
        _wait_metrics(port, proc, 180.0)
        t_reader = threading.Thread(target=read, daemon=True)
        t_reader.start()
        time.sleep(3.0)  # the processor's consumer joins its group (from the latest offset)
        producer = make_producer(bootstrap, client="confluent", config={"linger.ms": 1})
        start = time.time() + 0.5
        offset = start - SIM_START_TS
        behind = 0.0
        before: dict[str, Any] | None = None
        for k, rows in enumerate(ticks):
            due = start + k / HZ
            now = time.time()
            if now < due:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
            for key, ts, value in rows:
                producer.send(positions, _shift(value, ts, offset), key)
            if before is None and k / HZ >= warmup_s:
                before = _metrics(port)
        producer.flush(30.0)
        producer.close()
        time.sleep(0.5)  # the lag gauge is refreshed every second
        drain_s = _drained(port, 120.0)
        time.sleep(1.0)  # the last ticks pass the watermark and are published
        after = _metrics(port)
    finally:
        done.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.close()
    assert before is not None, "the run ended inside the warm-up"
    p50, p99, top, n = _hist_quantiles(before["proc"], after["proc"])
    t_warm = start + warmup_s
    # alert ts is a tick's event time, which the publisher put on the wall clock
    e2e = np.array([read_at - ts for read_at, ts in seen if ts >= t_warm])
    return {"rate": rate, "risk": risk, "vehicles": vehicles, "behind_s": behind, "proc_p50": p50,
            "proc_p99": p99, "proc_max": top, "proc_n": n, "e2e": e2e, "drain_s": drain_s,
            "phases": _phase_table(before, after)}


def main() -> None:
    ap = parser(__doc__, bootstrap=True)
    ap.add_argument("--rates", default="5000,20000,50000",
                    help="positions/s to publish, comma-separated (10 Hz: rate/10 vehicles)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    ap.add_argument("--warmup-s", type=float, default=5.0,
                    help="published before measuring (model load, group join, first ticks)")
    ap.add_argument("--kafka-client", default="confluent", choices=["confluent", "kafka-python"],
                    help="Kafka client of the `trajstream process` under test (the publisher "
                    "always uses confluent)")
    ap.add_argument("--seed", type=int, default=5, help="seed of the simulated traffic")
    ap.add_argument("--risk", default="process",
                    help="where the conflict stage runs, comma-separated: process (the "
                    "default on 2+ CPUs), inline; both give an A/B in one run")
    args = ap.parse_args()
    from trajstream.stream.config import ENGINE_DEFAULTS

    # the first 10 Hz fix later than the tick + tick_lateness_s releases it (the simulator's
    # dropped and delayed fixes: the cadence holds each tick until then too)
    delay = (math.floor(ENGINE_DEFAULTS.tick_lateness_s * HZ + 1e-9) + 1) / HZ
    rows = []
    with kafka_broker(args.bootstrap) as bootstrap:
        for rate in [int(r) for r in args.rates.split(",")]:
            for risk in args.risk.split(","):
                print(f"{rate:,} positions/s, risk {risk} ...", flush=True)
                rows.append(_run(bootstrap, rate, args.seconds, args.warmup_s,
                                 args.kafka_client, args.seed, risk))
    print(f"\nlive latency, {args.kafka_client}, LSTM, {args.seconds:g} s measured per rate "
          f"after {args.warmup_s:g} s warm-up, {os.cpu_count()} CPUs; event-time delay by "
          f"design {delay * 1e3:.0f} ms (the next fix after tick + tick lateness: dropped and "
          f"delayed fixes)")
    print(f"{'positions/s':>11} {'risk':>7} {'vehicles':>8} {'proc p50':>9} {'p99':>7} "
          f"{'max<=':>7} "
          f"{'e2e p50':>8} {'p99':>7} {'max':>7} {'e2e-delay p99':>13} {'alerts':>6} "
          f"{'pub late':>8} {'backlog':>8}")
    for r in rows:
        e = r["e2e"] * 1e3
        pe = (np.percentile(e, 50), np.percentile(e, 99), e.max()) if e.size else (np.nan,) * 3
        print(f"{r['rate']:>11,} {r['risk']:>7} {r['vehicles']:>8} {r['proc_p50'] * 1e3:>7.1f}ms "
              f"{r['proc_p99'] * 1e3:>5.1f}ms {r['proc_max'] * 1e3:>5.0f}ms {pe[0]:>6.0f}ms "
              f"{pe[1]:>5.0f}ms {pe[2]:>5.0f}ms {pe[1] - delay * 1e3:>11.0f}ms {e.size:>6} "
              f"{r['behind_s'] * 1e3:>6.0f}ms {r['drain_s']:>7.1f}s")
    print("where the processor's time went (measured window; a poll + batch includes the "
          "poll's wait and its LSTM steps and risk assessments, a commit point comes after "
          "its batch):")
    for r in rows:
        print(f"  {r['rate']:>7,}/s, risk {r['risk']}: {r['phases']}")
    print("pub late: how far the publisher fell behind its pace at worst; backlog: seconds the "
          "processor needed after the last publish to reach the end (> ~1 s: it did not keep "
          "up with the rate, and latency grows with the run)")
    for r in rows:
        if r["rate"] == 20_000:
            e = r["e2e"] * 1e3
            p99 = float(np.percentile(e, 99)) if e.size else float("nan")
            print(f"targets at 20k/s, risk {r['risk']}: processing p99 "
                  f"{r['proc_p99'] * 1e3:.1f} ms (<= 50): "
                  f"{'met' if r['proc_p99'] <= 0.05 else 'NOT met'}; end to end p99 {p99:.0f} "
                  f"ms (<= 150 + {delay * 1e3:.0f}): "
                  f"{'met' if p99 <= 150 + delay * 1e3 else 'NOT met'}")


if __name__ == "__main__":
    main()
