"""Collision-search time on the processor's own ticks (the conflict stage of a real drain).

Runs `trajstream process` on the simulated traffic bench_processor uses (``--vehicles`` at
10 Hz for ``--seconds``, cached under .run/bench/) with the LSTM, keeps the inputs of every
``--every``-th risk assessment after the first 10, then times :func:`stream.risk.assess`
on them (best of ``--repeat`` per tick) and prints the median and total CPU time and the
conflicts found. bench_risk.py times a synthetic city grid instead; this one sees the
fleet, paths and uncertainties the predictor really produces. With ``--save FILE`` the
captured inputs and conflicts are pickled, and ``--check FILE`` times those instead and
checks that every conflict array is equal to the bit (an optimisation must not change a
single alert).

Usage: python bench/bench_risk_ticks.py [--vehicles 5000] [--seconds 10] [--every 6]
    [--repeat 3] [--save FILE | --check FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import pickle  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _kit import parser, simulated_traffic  # noqa: E402

FIELDS = ("a", "b", "ttc", "min_distance", "cpa_t", "cpa_x", "cpa_y", "severity", "probability")


def capture(path: Path, every: int) -> list[tuple[Any, ...]]:
    """(t, fleet, spec, cfg, conflicts) of every ``every``-th assessment of a file run."""
    import trajstream.stream.conflicts as conflicts_mod
    from trajstream.cli import main

    assess = conflicts_mod.assess
    seen: list[tuple[Any, ...]] = []

    def keep(t: float, fleet: Any, spec: Any, cfg: Any) -> Any:
        out = assess(t, fleet, spec, cfg)
        seen.append((t, fleet, spec, cfg, out))
        return out

    conflicts_mod.assess = keep  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                # --no-risk-process: the assessments must run here, where ``keep`` is
                main(["process", "--input", str(path), "--alerts-out", f"{tmp}/alerts.jsonl",
                      "--predictor", "lstm", "--no-risk-process"])
            except SystemExit as exc:
                if exc.code:
                    raise
    finally:
        conflicts_mod.assess = assess  # type: ignore[assignment]
    return seen[10::every]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--vehicles", type=int, default=5000,
                    help="simulated vehicles (the traffic bench_processor uses)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="seconds of simulated 10 Hz traffic")
    ap.add_argument("--seed", type=int, default=3, help="seed of the simulated traffic")
    ap.add_argument("--every", type=int, default=6,
                    help="keep every N-th risk assessment (after the first 10)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs per assessment; the best is kept")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--save", type=Path, help="pickle the captured ticks here")
    group.add_argument("--check", type=Path, help="time these pickled ticks, check conflicts")
    args = ap.parse_args()
    from trajstream.stream.risk import assess

    if args.check is not None:
        with args.check.open("rb") as f:
            ticks = pickle.load(f)
    else:
        ticks = capture(simulated_traffic(args.vehicles, args.seconds, args.seed), args.every)
        if args.save is not None:
            with args.save.open("wb") as f:
                pickle.dump(ticks, f)
    cpu: list[float] = []
    found = differ = 0
    for t, fleet, spec, cfg, ref in ticks:
        best = np.inf
        for _ in range(args.repeat):
            c0 = time.process_time()
            out = assess(t, fleet, spec, cfg)
            best = min(best, time.process_time() - c0)
        cpu.append(best)
        found += len(out)
        differ += sum(not np.array_equal(getattr(out, f), getattr(ref, f), equal_nan=True)
                      for f in FIELDS)
    print(f"{len(ticks)} assessments of ~{int(np.median([len(x[1]) for x in ticks])):,} "
          f"vehicles, {found} conflicts: median {1e3 * float(np.median(cpu)):.1f} CPU ms per "
          f"assessment, total {1e3 * sum(cpu):.0f} ms")
    if args.check is not None:
        print(f"conflict arrays differing from {args.check}: {differ} "
              f"({'same to the bit' if differ == 0 else 'CHANGED'})")


if __name__ == "__main__":
    main()
