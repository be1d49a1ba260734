"""How big should the LSTM be? Accuracy against step cost for a few sizes, same data.

Trains each size for the same (short) number of epochs on the training data of
`trajstream model train` (simulated with the default seed, or reused from --data-dir), then
prints validation RMSE at 1-4 s from the stateful replay and the numpy step throughput at
batch 1024. Short runs rank the sizes; the shipped model trains longer.

Run: .venv/bin/python bench/bench_model_size.py --data-dir /tmp/trajdata [--units 16,32,48,64]
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the processor (trajstream/cli.py)

import numpy as np  # noqa: E402
from _kit import parser  # noqa: E402

from trajstream.model.data import future_positions  # noqa: E402
from trajstream.model.evaluate import run_predictors  # noqa: E402
from trajstream.model.predictors import ConstantVelocity, PathSpec  # noqa: E402
from trajstream.model.runtime import LstmPredictor  # noqa: E402
from trajstream.model.train import (  # noqa: E402
    DataConfig,
    TrainConfig,
    concat_windows,
    fit,
    make_windows,
    replay_file,
    simulate_datasets,
)


def _step_rate(pred: LstmPredictor, n: int = 1024, seconds: float = 1.0) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n, pred.weights.config.n_features)).astype(np.float32)
    s = rng.normal(0, 0.3, (n, pred.state_dim)).astype(np.float32)
    for _ in range(3):
        pred.core(x, s)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pred.core(x, s)
        calls += 1
    return n * calls / (time.perf_counter() - t0)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep/reuse the simulated training data here; unset: simulate into a "
                    "temporary folder")
    ap.add_argument("--units", default="16,32,48,64",
                    help="LSTM sizes (units) to train and compare, comma-separated")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs per size")
    ap.add_argument("--train-files", type=int, default=DataConfig.train_files,
                    help="how many of the simulated training files to train on")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = PathSpec()
    base = TrainConfig()
    data = DataConfig(sumo_train=(), sumo_val=(), sumo_test=())  # the built-in simulator
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, list[Path]] = {}
        for f, path in zip(data.plan(), simulate_datasets(data, args.data_dir or Path(tmp)),
                           strict=True):
            files.setdefault(f.split, []).append(path)
        parts = [make_windows(replay_file(p), spec, base.seq_len, base.burn_in)
                 for p in files["train"][: args.train_files]]
        train = concat_windows(parts)
        val_rep = replay_file(files["val"][0])
    val = make_windows(val_rep, spec, base.seq_len, base.burn_in)
    targets, valid = future_positions(val_rep, spec.offsets_s)
    cv = run_predictors(val_rep, [ConstantVelocity(spec)], targets, valid).summary()
    print(f"{len(train.features)} training windows, {args.epochs} epochs per size; "
          f"validation: {int(valid.sum())} predictions (stateful replay)")
    print(f"{'units':>5s} {'params':>7s} {'train min':>9s} {'RMSE 1s':>8s} {'2s':>6s} {'3s':>6s} "
          f"{'4s':>6s} {'4s/CV':>6s} {'steps/s @1024':>14s}")
    cv4 = cv["models"]["cv"]["rmse"]["4"]
    print(f"{'cv':>5s} {'-':>7s} {'-':>9s} " + " ".join(
        f"{cv['models']['cv']['rmse'][h]:>{8 if h == '1' else 6}.3f}" for h in "1234")
        + f" {1.0:>6.2f} {'-':>14s}")
    for units in [int(u) for u in args.units.split(",")]:
        cfg = TrainConfig(units=units, epochs=args.epochs, patience=args.epochs)
        t0 = time.monotonic()
        w, _ = fit(train, val, cfg, spec, progress=False)
        minutes = (time.monotonic() - t0) / 60
        pred = LstmPredictor(w, spec)
        s = run_predictors(val_rep, [pred], targets, valid).summary()["models"]["lstm"]["rmse"]
        params = sum(getattr(w, a).size for a in ("kernel", "recurrent", "bias", "hidden_w",
                                                   "hidden_b", "out_w", "out_b"))
        print(f"{units:>5d} {params:>7d} {minutes:>9.1f} " + " ".join(
            f"{s[h]:>{8 if h == '1' else 6}.3f}" for h in "1234")
            + f" {s['4'] / cv4:>6.2f} {_step_rate(pred):>14,.0f}", flush=True)


if __name__ == "__main__":
    main()
