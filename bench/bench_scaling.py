"""Per-tick cost of the engine against fleet size (1k to 100k vehicles): table and plot.

For each fleet size, simulated traffic (10 Hz, GPS noise, drops, late and duplicate messages
included; cached under .run/bench/) is decoded and fed to the engine one tick of messages at
a time, exactly the calls `trajstream process` makes per micro-batch (admission, vehicle
stage with the predictor, conflict stage every ``risk_interval_s``). After ``--warmup-s`` of
event time, the wall and CPU time of the following ticks are summed and divided by their
number: the mean cost of one 0.1 s tick, risk assessments included. Decoding is not in the
figure (it is per record and measured by bench_processor). Prints the table, the ratio
t(100k)/t(10k) (linear growth: 10; target <= 12) and writes a log-log plot.

Usage:
  python bench/bench_scaling.py [--vehicles 1000,2000,5000,10000,20000,50000,100000]
      [--predictor lstm] [--seconds 3] [--warmup-s 1.5] [--plot docs/img/scaling.png]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _kit import parser
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".run" / "bench"


def _ticks(vehicles: int, seconds: float, seed: int) -> list[list[bytes]]:
    """The messages of each tick of a simulated run (cached as JSONL, a blank line ends a
    tick)."""
    from trajstream.simulator import SimConfig, iter_ticks

    path = CACHE / f"ticks-{vehicles}v-{seconds:g}s-seed{seed}.jsonl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        with tmp.open("wb") as f:
            cfg = SimConfig(vehicles=vehicles, duration_s=seconds, seed=seed)
            for tick in tqdm(iter_ticks(cfg), total=int(round(seconds * cfg.hz)),
                             desc=f"simulating {vehicles} vehicles", leave=False):
                f.write(b"".join(v + b"\n" for _, v in tick.messages) + b"\n")
        tmp.rename(path)
    out: list[list[bytes]] = [[]]
    with path.open("rb") as f:
        for line in f:
            if line == b"\n":
                out.append([])
            else:
                out[-1].append(line.rstrip(b"\n"))
    return [t for t in out if t]


def _measure(vehicles: int, predictor_name: str, seconds: float, warmup_s: float,
             seed: int) -> dict[str, float]:
    from trajstream.stream.app import load_predictor
    from trajstream.stream.codec import CodecConfig, decode_batch
    from trajstream.stream.config import ENGINE_DEFAULTS
    from trajstream.stream.engine import Engine
    from trajstream.stream.metrics import Metrics

    ticks = _ticks(vehicles, seconds, seed)
    batches = [decode_batch(None, msgs, CodecConfig())[0] for msgs in ticks]
    engine = Engine(ENGINE_DEFAULTS, load_predictor(predictor_name, ENGINE_DEFAULTS.spec),
                    Metrics())
    warm = int(round(warmup_s * 10))
    seq = 0
    wall = cpu = 0.0
    alerts = 0
    for k, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        out = engine.process(batch, seq)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        seq += len(batch)
        if k >= warm:
            wall += dt
            cpu += dc
            alerts += len(out.alerts)
    n = len(batches) - warm
    return {"vehicles": vehicles, "ticks": n, "wall_ms": 1e3 * wall / n,
            "cpu_ms": 1e3 * cpu / n, "records": sum(len(b) for b in batches[warm:]) / n,
            "alerts": alerts}


def _plot(rows: list[dict[str, float]], path: Path, predictor: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = np.array([r["vehicles"] for r in rows], dtype=float)
    cpu = np.array([r["cpu_ms"] for r in rows])
    wall = np.array([r["wall_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.loglog(v, cpu, "o-", label="CPU ms per tick")
    ax.loglog(v, wall, "s--", alpha=0.6, label="wall ms per tick")
    ax.loglog(v, cpu[0] * v / v[0], ":", color="grey", label="linear from the smallest fleet")
    ax.axhline(100.0, color="red", lw=0.8, label="0.1 s tick (real time at 10 Hz)")
    ax.set_xlabel("vehicles")
    ax.set_ylabel("ms per 0.1 s tick")
    from trajstream.stream.config import ENGINE_DEFAULTS

    ax.set_title(f"engine cost per tick ({predictor}, risk every "
                 f"{ENGINE_DEFAULTS.risk_interval_s:g} s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--vehicles", default="1000,2000,5000,10000,20000,50000,100000",
                    help="fleet sizes, comma-separated")
    ap.add_argument("--predictor", default="lstm", choices=["lstm", "cv", "ctrv"],
                    help="predictor of the engine's vehicle stage")
    ap.add_argument("--seconds", type=float, default=3.0, help="simulated seconds per fleet")
    ap.add_argument("--warmup-s", type=float, default=1.5,
                    help="event time before measuring (state, predictor warm-up)")
    ap.add_argument("--seed", type=int, default=3, help="seed of the simulated traffic")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "scaling.png",
                    help="where to write the log-log plot")
    args = ap.parse_args()
    rows = []
    for vehicles in [int(v) for v in args.vehicles.split(",")]:
        r = _measure(vehicles, args.predictor, args.seconds, args.warmup_s, args.seed)
        rows.append(r)
        print(f"  {vehicles:>7} vehicles: {r['cpu_ms']:8.1f} CPU ms / tick "
              f"({r['wall_ms']:.1f} wall)", flush=True)
    print(f"\nengine cost per 0.1 s tick, {args.predictor}, mean over "
          f"{rows[0]['ticks']:.0f} ticks after {args.warmup_s:g} s, {os.cpu_count()} CPUs")
    print(f"{'vehicles':>8} {'records/tick':>12} {'CPU ms':>8} {'wall ms':>8} "
          f"{'us/vehicle':>10} {'alerts':>6}")
    for r in rows:
        print(f"{r['vehicles']:>8,} {r['records']:>12,.0f} {r['cpu_ms']:>8.1f} "
              f"{r['wall_ms']:>8.1f} {1e3 * r['cpu_ms'] / r['vehicles']:>10.1f} "
              f"{r['alerts']:>6}")
    by = {int(r["vehicles"]): r for r in rows}
    if 10_000 in by and 100_000 in by:
        ratio = by[100_000]["cpu_ms"] / by[10_000]["cpu_ms"]
        print(f"t(100k) / t(10k) = {ratio:.1f} (CPU; linear = 10, target <= 12): "
              f"{'met' if ratio <= 12 else 'NOT met'}")
    _plot(rows, args.plot, args.predictor)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
