"""Resident memory under vehicle churn: one million distinct ids through the engine.

Every event-time second ``--per-second`` new vehicles appear, each sends ``--fixes`` fixes
0.5 s apart, then falls silent forever; TTL eviction (``--ttl-s``) must free them, so the
state store, the stale-check index, the episode tracker and the online-error rings stay
bounded however many ids pass through. Runs the pure engine (no Kafka, cv predictor) on
columnar batches, prints VmRSS (from /proc/self/status) every 100k ids and the final figure.

Usage: python bench/bench_churn.py [--ids 1000000] [--per-second 2000] [--fixes 2] [--ttl-s 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from _kit import parser

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M  # noqa: E402
from trajstream.model.predictors import ConstantVelocity, PathSpec  # noqa: E402
from trajstream.stream.codec import PositionBatch  # noqa: E402
from trajstream.stream.config import EngineConfig  # noqa: E402
from trajstream.stream.engine import Engine  # noqa: E402

T0 = 1764547200.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--ids", type=int, default=1_000_000,
                    help="distinct vehicle ids passed through the engine")
    ap.add_argument("--per-second", type=int, default=2000,
                    help="new vehicles appearing per event-time second")
    ap.add_argument("--fixes", type=int, default=2,
                    help="fixes each vehicle sends (0.5 s apart) before falling silent")
    ap.add_argument("--ttl-s", type=float, default=5.0,
                    help="engine TTL (s): a vehicle silent this long is evicted")
    a = ap.parse_args()
    eng = Engine(EngineConfig(ttl_s=a.ttl_s, reset_gap_s=min(5.0, a.ttl_s)),
                 ConstantVelocity(PathSpec()))
    rng = np.random.default_rng(0)
    seconds = a.ids // a.per_second
    t_start, next_report, peak = time.monotonic(), 0, 0.0
    base_rss = rss_mb()
    print(f"start: VmRSS {base_rss:.0f} MB; {a.ids} ids, {a.per_second}/s, {a.fixes} fixes "
          f"each, ttl {a.ttl_s:g} s")
    seq = 0
    for s in range(seconds + int(a.ttl_s) + 3):
        # cohorts born at seconds s-fixes/2 .. s send their fixes within [s, s+1)
        parts = []
        for k in range(a.fixes):
            born = s - k // 2
            if not 0 <= born < seconds:
                continue
            ids = np.arange(born * a.per_second, (born + 1) * a.per_second)
            ts = T0 + born + 0.5 * k + rng.uniform(0, 0.1, ids.size)
            parts.append((ids, ts))
        if not parts:
            ids_all = np.empty(0, dtype=np.int64)
            ts_all = np.empty(0)
        else:
            ids_all = np.concatenate([p[0] for p in parts])
            ts_all = np.concatenate([p[1] for p in parts])
        order = np.argsort(ts_all, kind="stable")
        ids_all, ts_all = ids_all[order], ts_all[order]
        n = ids_all.size
        x = (ids_all % 1000) * 50.0 + (ts_all - T0) * 10.0
        y = (ids_all // 1000 % 1000) * 50.0
        batch = PositionBatch(
            vehicle_id=np.array([f"v{i}" for i in ids_all.tolist()], dtype=object),
            ts=ts_all, x=x, y=y, speed=np.full(n, 10.0), heading=np.zeros(n),
            length=np.full(n, DEFAULT_LENGTH_M), width=np.full(n, DEFAULT_WIDTH_M),
            index=np.arange(n),
        )
        eng.process(batch, seq)
        seq += n
        done_ids = min((s + 1) * a.per_second, a.ids)
        if done_ids >= next_report or s == seconds - 1:
            r = rss_mb()
            peak = max(peak, r)
            print(f"{done_ids:>9} ids  event {s:>4} s  resident vehicles {len(eng.store):>6}  "
                  f"slots {eng.store.capacity:>6}  seen-index {eng.admission.seen:>6}  "
                  f"VmRSS {r:7.1f} MB  ({time.monotonic() - t_start:5.0f} s)")
            next_report += 100_000
    eng.flush()
    final = rss_mb()
    print(f"final: {a.ids} distinct ids, {eng.stats['evicted']} evicted, "
          f"{len(eng.store)} resident; VmRSS {final:.1f} MB (start {base_rss:.1f}, "
          f"peak {max(peak, final):.1f}); {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
