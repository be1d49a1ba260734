"""CPU to encode one commit's changelog records: every moved vehicle's state, LSTM-sized.

A commit writes the state of every vehicle that changed since the previous one (at 10 Hz:
all of them). Times :func:`stream.checkpoint.encode_vehicles` (the writer's encoder: one
formatting step per vehicle over two shared buffers) beside the per-vehicle way it replaced
(a ``VehicleState`` per vehicle, two ``base64.b64encode`` and an ``orjson.dumps`` of a dict),
checks both give the same bytes, and prints the best CPU time of ``--repeat`` runs (the
steadier figure on a shared machine).

Usage: python bench/bench_changelog.py [--vehicles 5000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable

import numpy as np
import orjson

from trajstream.stream import checkpoint as ck
from trajstream.stream.app import load_predictor
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine


def _per_vehicle(vs: ck.VehicleRows) -> list[bytes]:
    def b64(a: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()

    states = [ck.VehicleState(v, p, s, vs.rows[i], vs.rec[i], vs.episodes.get(v))
              for i, (v, p, s) in enumerate(zip(vs.ids, vs.partitions, vs.slots, strict=True))]
    return [orjson.dumps({"v": 1, "p": v.partition, "s": v.slot, "row": b64(v.row),
                          "rec": b64(v.rec.astype(np.float32)), "ep": v.episodes})
            for v in states]


def _best_cpu_ms(f: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    cfg = EngineConfig()
    predictor = load_predictor("lstm", cfg.spec)
    width, state = Engine(cfg, predictor).store.row_width(), predictor.state_dim
    n, rng = args.vehicles, np.random.default_rng(0)
    ids = [f"veh-{i}" for i in range(n)]
    vs = ck.VehicleRows(
        ids, [i % 6 for i in range(n)], list(range(n)), rng.normal(size=(n, width)),
        rng.normal(size=(n, state)).astype(np.float32),
        {v: {"episodes": {"x": {"start": 1.0, "last": 2.0, "severity": "warning"}}}
         for v in ids[::50]})
    new = ck.encode_vehicles(vs)
    assert new == _per_vehicle(vs), "the encoders disagree"
    print(f"{n:,} vehicles: state row {width} float64 + {state} float32, "
          f"{sum(map(len, new)) / n:,.0f} bytes per record")
    for name, f in (("per vehicle (before)", lambda: _per_vehicle(vs)),
                    ("encode_vehicles", lambda: ck.encode_vehicles(vs))):
        ms = _best_cpu_ms(f, args.repeat)
        print(f"  {name:22} {ms:7.1f} CPU ms per commit ({n / ms * 1e3:,.0f} records per CPU s)")


if __name__ == "__main__":
    main()
