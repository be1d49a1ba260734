"""LSTM step throughput (vehicle-steps/s) by batch size, next to naive per-message inference,
and the shipped model's accuracy against constant velocity on held-out traffic.

The processor calls ``LstmPredictor.step`` once per tick for every vehicle with a fix in it.
This measures that call (the vehicles around each one from the tracker, features, LSTM step,
head, rotation back to x/y) with the shipped weights at batch 1, 64, 1024 and 8192 for each
runtime core (numpy; tf.function; tf.function with XLA), in the built-in simulator's city at
that many vehicles, plus the bare network core, and in the same run the naive approach the design
rules out: ``model.predict`` on one message at a time (and a direct ``model(x)`` call).
Target: >= 200k vehicle-steps/s at batch 1024.

Accuracy (``--accuracy``, the default): LSTM RMSE at 4 s over CV's on the held-out recorded
traffic (the held-out NGSIM recordings, $TRAJSTREAM_DATA_DIR or shared/data beside the
repository) and the held-out SUMO and built-in runs of ``trajstream model train``'s defaults
(simulated into --sim-dir, reused when there), against the bounds (recorded <= 0.85, SUMO <=
0.8) and below CV at every horizon 1-4 s.

Run: .venv/bin/python bench/bench_model.py [--seconds 1.0] [--naive-calls 30] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the processor runs (trajstream/cli.py)

import numpy as np  # noqa: E402
from _kit import parser

from trajstream.model import SHIPPED_WEIGHTS  # noqa: E402
from trajstream.model.kinematics import Kinematics, KinematicsTracker  # noqa: E402
from trajstream.model.neighbours import neighbour_features  # noqa: E402
from trajstream.model.runtime import LstmPredictor  # noqa: E402
from trajstream.model.weights_io import LstmWeights  # noqa: E402

BATCHES = (1, 64, 1024, 8192)


def _traffic(n: int, rng: np.random.Generator) -> tuple[Kinematics, np.ndarray,
                                                       KinematicsTracker]:
    """A tick of the built-in simulator's city with n vehicles (its own density: signalised
    junctions, queues, multi-lane roads), tracked over 2 s of fixes: (every vehicle's latest
    kinematics as one batch, their slots, the tracker holding them)."""
    from trajstream.model.data import event_time_order, parse_positions, step_groups
    from trajstream.simulator import SimConfig, iter_ticks

    cfg = SimConfig(seed=int(rng.integers(1 << 16)), vehicles=n, duration_s=2.0,
                    warmup_s=20.0, clean=True)
    pos = event_time_order(parse_positions(
        [value for tick in iter_ticks(cfg) for _, value in tick.messages])[0])
    tracker = KinematicsTracker(len(pos.ids))
    for idx in step_groups(pos):
        tracker.update(pos.vehicle[idx], pos.ts[idx], pos.x[idx], pos.y[idx], pos.speed[idx],
                       pos.heading[idx])
    m = len(pos.ids)
    t = tracker
    dt = np.full(m, 0.1)
    kin = Kinematics(ts=t.ts[:m].copy(), x=t.x[:m].copy(), y=t.y[:m].copy(),
                     prev_x=t.x[:m] - t.speed[:m] * np.cos(t.heading[:m]) * dt,
                     prev_y=t.y[:m] - t.speed[:m] * np.sin(t.heading[:m]) * dt, dt=dt,
                     speed=t.speed[:m].copy(), heading=t.heading[:m].copy(),
                     yaw_rate=t.yaw_rate[:m].copy(), accel=t.accel[:m].copy(),
                     first=np.zeros(m, bool))
    keep = np.arange(min(n, m))
    return kin.take(keep), keep, tracker


def _rate(fn, n: int, seconds: float) -> tuple[float, float, float]:  # noqa: ANN001
    """Best of 5 runs: (wall seconds per call, vehicle-steps per wall second, vehicle-steps
    per CPU second of this process). The CPU figure is less sensitive to a busy machine."""
    for _ in range(3):
        fn()  # warm-up (and XLA compile for this bucket)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(5):
        calls, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            fn()
            calls += 1
            el = time.perf_counter() - t0
            if el >= seconds / 5 and calls >= 3:
                break
        best = min(best, el / calls)
        best_cpu = min(best_cpu, (time.process_time() - c0) / calls)
    return best, n / best, n / best_cpu


def _naive(weights: LstmWeights, calls: int) -> list[tuple[str, float]]:
    """Per-message Keras inference on a one-step stateful model (one vehicle per call)."""
    import keras

    from trajstream.model.network import keras_from_weights

    seq = keras_from_weights(weights)
    u, f = weights.config.units, weights.config.n_features
    x_in = keras.Input((1, f))
    h_in, c_in = keras.Input((u,)), keras.Input((u,))
    rnn = keras.layers.RNN(seq.get_layer("lstm").cell, return_sequences=True, return_state=True)
    h_seq, h, c = rnn(x_in, initial_state=[h_in, c_in])
    z = seq.get_layer("skip")([h_seq, x_in])
    out = seq.get_layer("scale")(seq.get_layer("out")(seq.get_layer("hidden")(z)))
    step = keras.Model([x_in, h_in, c_in], [out, h, c])
    x = np.zeros((1, 1, f), np.float32)
    s = np.zeros((1, u), np.float32)
    res = []
    for label, fn in (
        ("naive model.predict per message", lambda: step.predict([x, s, s], verbose=0)),
        ("naive model(x) per message", lambda: step([x, s, s])),
    ):
        fn()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        res.append((label, (time.perf_counter() - t0) / calls))
    return res


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per cell")
    ap.add_argument("--naive-calls", type=int, default=30,
                    help="calls timed for naive per-message inference (model.predict, model(x))")
    ap.add_argument("--weights", default=str(SHIPPED_WEIGHTS),
                    help="LSTM weights file to time and evaluate")
    ap.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                    help="also the held-out accuracy against CV (simulates the SUMO and "
                    "built-in test runs unless --sim-dir has them)")
    ap.add_argument("--sim-dir", type=Path, default=None,
                    help="keep/reuse the simulated held-out runs here")
    args = ap.parse_args()
    weights = LstmWeights.load(args.weights)
    rng = np.random.default_rng(0)
    cfg = weights.config
    print(f"LSTM step throughput, units={cfg.units}, head={cfg.head_units}, "
          f"{cfg.n_features} inputs (vehicles around as inputs: "
          f"{'yes' if LstmPredictor(weights).uses_neighbours else 'no'}), "
          f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
          "vehicle-steps/s (us per call)")
    rows: list[tuple[str, dict[int, tuple[float, float, float]]]] = []
    for backend in ("numpy", "tf", "tf-xla", "auto"):
        pred = LstmPredictor(weights, backend=backend)
        full: dict[int, tuple[float, float, float]] = {}
        core: dict[int, tuple[float, float, float]] = {}
        for n in BATCHES:
            kin, slots, tracker = _traffic(n, rng)
            state = rng.normal(0, 0.3, (n, pred.state_dim)).astype(np.float32)
            feats = rng.normal(0, 1, (n, cfg.n_features)).astype(np.float32)

            def step(p=pred, k=kin, s=state, sl=slots, tr=tracker):  # noqa: ANN001, ANN202
                nb = neighbour_features(k, sl, tr) if p.uses_neighbours else None
                return p.step(k, s, nb)

            full[n] = _rate(step, n, args.seconds)
            core[n] = _rate(lambda p=pred, f=feats, s=state: p.core(f, s), n, args.seconds)
        rows.append((f"step ({backend})", full))
        rows.append((f"  network core only ({backend})", core))
    head = f"{'':36s}" + "".join(f"{'batch ' + str(n):>22s}" for n in BATCHES)
    print(head)
    for label, cells in rows:
        print(f"{label:36s}" + "".join(
            f"{cells[n][1]:>12,.0f} ({cells[n][0] * 1e6:>6.0f})" for n in BATCHES))
    print("\nper CPU second of this process (TF uses several threads, so lower than wall):")
    for label, cells in rows:
        print(f"{label:36s}" + "".join(f"{cells[n][2]:>12,.0f}{'':10s}" for n in BATCHES))
    naive = _naive(weights, args.naive_calls)
    for label, sec in naive:
        print(f"{label:36s}{1 / sec:>12,.0f} ({sec * 1e6:>6.0f})   [batch 1, one call per message]")
    predict_rate = 1 / naive[0][1]
    for i in (0, 2, 4, 6):
        label, cells = rows[i]
        wall, cpu = cells[1024][1], cells[1024][2]
        print(f"{label} at batch 1024: {wall:,.0f} vehicle-steps/s wall, {cpu:,.0f} per CPU s "
              f"({'meets' if wall >= 200_000 else 'BELOW'} the 200k target on the wall clock); "
              f"{wall / predict_rate:,.0f}x naive model.predict per message")
    if args.accuracy:
        accuracy(args.weights, args.sim_dir)


def accuracy(weights: str, sim_dir: Path | None) -> None:
    """Held-out LSTM / CV at 4 s per source against the bounds of the model's acceptance."""
    from trajstream.model import load_predictor
    from trajstream.model.card import RATIO_BOUNDS
    from trajstream.model.evaluate import evaluate_sources
    from trajstream.model.train import DataConfig, simulate_file
    from trajstream.simulator.recorded.location import recorded_data_dir

    data_dir = recorded_data_dir()
    recorded = [p for p in sorted(data_dir.glob("ngsim-*.jsonl.gz"))]
    if not recorded:
        print(f"\nno recorded traffic in {data_dir} (set TRAJSTREAM_DATA_DIR): recorded rows "
              "skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        sims = {}
        for f in DataConfig().plan():
            if f.split == "test" and f.variant in ("default", "grid", "spider", "random"):
                path = (sim_dir or Path(tmp)) / f.name
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    simulate_file(path, f)
                sims[path] = "sumo" if f.engine == "sumo" else "builtin"
        preds = [load_predictor(n, weights=weights) for n in ("lstm", "cv")]
        kinds = {p.name.removesuffix(".jsonl.gz"): "recorded" for p in recorded}
        kinds.update({p.name.removesuffix(".jsonl"): k for p, k in sims.items()})
        evs = evaluate_sources(recorded, preds, side="held-out")
        evs.update(evaluate_sources(list(sims), preds))
    print("\nheld-out accuracy (RMSE at 4 s, m; recorded: the held-out recordings only)")
    print(f"{'source':42s} {'kind':9s} {'LSTM':>7s} {'CV':>7s} {'LSTM/CV':>8s} {'bound':>6s} "
          f"{'<CV 1-4 s':>10s} {'meets':>6s}")
    for name, ev in evs.items():
        m = ev.summary()["models"]
        lstm, cv = m["lstm"]["rmse"], m["cv"]["rmse"]
        ratio = lstm["4"] / cv["4"]
        every = all(lstm[h] < cv[h] for h in lstm)
        bound = RATIO_BOUNDS.get(kinds[name])
        ok = every and (bound is None or ratio <= bound)
        print(f"{name:42s} {kinds[name]:9s} {lstm['4']:>7.2f} {cv['4']:>7.2f} {ratio:>7.3f}x "
              f"{(f'{bound:.2f}' if bound else '-'):>6s} {('yes' if every else 'no'):>10s} "
              f"{('yes' if ok else 'NO'):>6s}")


if __name__ == "__main__":
    main()
