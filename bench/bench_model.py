"""LSTM step throughput (vehicle-steps/s) by batch size, next to naive per-message inference.

The processor calls ``LstmPredictor.step`` once per tick for every vehicle with a fix in it.
This measures that call (features + LSTM step + head + rotation back to x/y) with the shipped
weights at batch 1, 64, 1024 and 8192 for each runtime core (numpy; tf.function; tf.function
with XLA), plus the bare network core, and in the same run the naive approach the design
rules out: ``model.predict`` on one message at a time (and a direct ``model(x)`` call).
Target: >= 200k vehicle-steps/s at batch 1024.

Run: .venv/bin/python bench/bench_model.py [--seconds 1.0] [--naive-calls 30]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the processor runs (stream/cli.py)

import numpy as np  # noqa: E402

from trajstream.model import SHIPPED_WEIGHTS  # noqa: E402
from trajstream.model.kinematics import Kinematics  # noqa: E402
from trajstream.model.runtime import LstmPredictor  # noqa: E402
from trajstream.model.weights_io import LstmWeights  # noqa: E402

BATCHES = (1, 64, 1024, 8192)


def _kinematics(n: int, rng: np.random.Generator) -> Kinematics:
    x, y = rng.uniform(-1000, 1000, (2, n))
    heading = rng.uniform(-np.pi, np.pi, n)
    speed = rng.uniform(0, 25, n)
    dt = rng.uniform(0.08, 0.12, n)
    return Kinematics(
        ts=np.full(n, 1.76e9), x=x, y=y, prev_x=x - speed * np.cos(heading) * dt,
        prev_y=y - speed * np.sin(heading) * dt, dt=dt, speed=speed, heading=heading,
        yaw_rate=rng.normal(0, 0.1, n), accel=rng.normal(0, 1, n), first=np.zeros(n, bool),
    )


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per cell")
    ap.add_argument("--naive-calls", type=int, default=30)
    ap.add_argument("--weights", default=str(SHIPPED_WEIGHTS))
    args = ap.parse_args()
    weights = LstmWeights.load(args.weights)
    rng = np.random.default_rng(0)
    cfg = weights.config
    print(f"LSTM step throughput, units={cfg.units}, head={cfg.head_units}, "
          f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
          "vehicle-steps/s (us per call)")
    rows: list[tuple[str, dict[int, tuple[float, float, float]]]] = []
    for backend in ("numpy", "tf", "tf-xla", "auto"):
        pred = LstmPredictor(weights, backend=backend)
        full: dict[int, tuple[float, float, float]] = {}
        core: dict[int, tuple[float, float, float]] = {}
        for n in BATCHES:
            kin = _kinematics(n, rng)
            state = rng.normal(0, 0.3, (n, pred.state_dim)).astype(np.float32)
            feats = rng.normal(0, 1, (n, cfg.n_features)).astype(np.float32)
            full[n] = _rate(lambda p=pred, k=kin, s=state: p.step(k, s), n, args.seconds)
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


if __name__ == "__main__":
    main()
