"""Training: positions files -> windows of features and future-path targets -> Keras fit.

Features come from the same replay (event-time order, batched tracker) the processor and the
evaluator use. Each vehicle segment (the run between resets) is cut into overlapping windows
that start from a zero LSTM state, like a vehicle the processor has just met; in windows that
start mid-segment the first ``burn_in`` steps are left out of the loss, since the processor's
state there would already be warm. Targets are the vehicle's observed positions at
``ts + k * step_s`` in its own frame, as a residual over constant velocity; steps whose
future is not fully covered by fixes are masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trajstream.model.data import Replay, event_time_order, future_positions, read_positions, replay
from trajstream.model.features import FEATURES, N_FEATURES, cv_local, raw_features, to_local
from trajstream.model.predictors import PathSpec
from trajstream.model.weights_io import LstmWeights, NetworkConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; together with the data seeds they determine the weights."""

    seed: int = 7
    units: int = 48
    head_units: int = 64
    seq_len: int = 64
    burn_in: int = 16
    batch_size: int = 64
    epochs: int = 40
    patience: int = 5
    learning_rate: float = 2e-3
    sigma_weight: float = 0.05


@dataclass
class Windows:
    """Training windows: features (W, T, F) raw, targets (W, T, 2P+1) = [residual, mask]."""

    features: np.ndarray
    targets: np.ndarray
    n_steps: int  # records behind the windows
    n_valid: int  # steps that count in the loss


def replay_file(path: str | Path) -> Replay:
    pos, _ = read_positions(path)
    return replay(event_time_order(pos))


def make_windows(rep: Replay, spec: PathSpec, seq_len: int, burn_in: int) -> Windows:
    kin = rep.kin
    feats = raw_features(kin)
    future, valid = future_positions(rep, spec.offsets_s)
    resid = to_local(kin.x, kin.y, kin.heading, future) - cv_local(kin.speed, spec.offsets_s)
    resid = np.where(valid[:, None, None], resid, 0.0).reshape(len(kin), -1)
    order = np.lexsort((rep.pos.ts, rep.segment))
    seg = rep.segment[order]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if order.size else np.zeros(0, int)
    ends = np.r_[starts[1:], order.size]
    stride = seq_len - burn_in
    wf, wt = [], []
    width = resid.shape[1] + 1
    for s, e in zip(starts, ends, strict=True):
        rows = order[s:e]
        for w0 in range(0, max(rows.size - burn_in, 1), stride):
            r = rows[w0 : w0 + seq_len]
            f = np.zeros((seq_len, N_FEATURES), np.float32)
            t = np.zeros((seq_len, width), np.float32)
            f[: r.size] = feats[r]
            t[: r.size, :-1] = resid[r]
            m = valid[r].astype(np.float32)
            if w0 > 0:
                m[:burn_in] = 0.0
            t[: r.size, -1] = m
            if m.any():
                wf.append(f)
                wt.append(t)
    if not wf:
        return Windows(np.zeros((0, seq_len, N_FEATURES), np.float32),
                       np.zeros((0, seq_len, width), np.float32), len(kin), 0)
    targets = np.stack(wt)
    return Windows(np.stack(wf), targets, len(kin), int(targets[..., -1].sum()))


def concat_windows(parts: Sequence[Windows]) -> Windows:
    return Windows(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.targets for p in parts]),
        sum(p.n_steps for p in parts),
        sum(p.n_valid for p in parts),
    )


def normalisation(w: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature mean/std over real steps and the per-point output scale (RMS residual, m)."""
    real = np.abs(w.features).sum(-1) > 0
    f = w.features[real].astype(np.float64)
    mean, std = f.mean(0), np.maximum(f.std(0), 1e-3)
    k = FEATURES.index("first")
    mean[k], std[k] = 0.0, 1.0
    mask = w.targets[..., -1] > 0
    r = w.targets[mask][:, :-1].astype(np.float64)
    p = r.shape[1] // 2
    rms = np.sqrt(np.mean(r.reshape(-1, p, 2) ** 2, axis=(0, 2))) if r.size else np.ones(p)
    scale = np.r_[np.repeat(np.maximum(rms, 0.05), 2), np.ones(p)]
    return mean.astype(np.float32), std.astype(np.float32), scale.astype(np.float32)


class _TqdmProgress:
    """Keras callback factory: one tqdm bar over batches per epoch, only on a terminal."""

    @staticmethod
    def make(steps: int, epochs: int):  # noqa: ANN205 - keras.callbacks.Callback subclass
        import keras
        from tqdm import tqdm

        class Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}",
                                file=sys.stderr, leave=False)

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                self.bar.update(1)
                if logs and batch % 10 == 0:
                    self.bar.set_postfix(rmse=f"{logs.get('rmse_m', 0.0):.3f}")

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.bar.close()

        return Cb()


def fit(
    train: Windows,
    val: Windows,
    cfg: TrainConfig,
    spec: PathSpec = PathSpec(),  # noqa: B008 - frozen
    progress: bool | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[LstmWeights, dict[str, list[float]]]:
    """Train the sequence model; returns the weights (best on validation) and the history."""
    import keras

    from trajstream.model.network import build_sequence_model, masked_losses, weights_from_keras

    keras.utils.set_random_seed(cfg.seed)
    net = NetworkConfig(units=cfg.units, head_units=cfg.head_units, n_features=N_FEATURES,
                        points=spec.points, step_s=spec.step_s)
    mean, std, scale = normalisation(train)
    model = build_sequence_model(net, scale)
    loss, rmse_m = masked_losses(spec.points, cfg.sigma_weight)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0), loss=loss,
                  metrics=[rmse_m])

    def norm(w: Windows) -> np.ndarray:
        real = (np.abs(w.features).sum(-1, keepdims=True) > 0).astype(np.float32)
        return ((w.features - mean) / std * real).astype(np.float32)

    steps = int(np.ceil(train.features.shape[0] / cfg.batch_size))
    if progress is None:
        progress = sys.stderr.isatty()
    callbacks: list = [
        keras.callbacks.EarlyStopping(monitor="val_rmse_m", patience=cfg.patience,
                                      restore_best_weights=True, mode="min"),
        keras.callbacks.ReduceLROnPlateau(monitor="val_rmse_m", factor=0.5,
                                          patience=max(1, cfg.patience // 2), mode="min"),
    ]
    if progress:
        callbacks.append(_TqdmProgress.make(steps, cfg.epochs))
    t0 = time.monotonic()

    class _Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            log.info("epoch %d: rmse %.3f m, val rmse %.3f m (%.0f s)", epoch + 1,
                     logs.get("rmse_m", np.nan), logs.get("val_rmse_m", np.nan),
                     time.monotonic() - t0)
            if on_epoch:
                on_epoch(epoch, logs)

    callbacks.append(_Log())
    hist = model.fit(
        norm(train), train.targets, validation_data=(norm(val), val.targets),
        batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0,
        callbacks=callbacks,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    weights = weights_from_keras(model, net, mean, std,
                                 meta={"train_config": asdict(cfg), "features": list(FEATURES)})
    return weights, history


# Simulator settings of the training files, cycled: half at the simulator's defaults (what the
# processor sees in the demo), the rest widen the input distribution: no reported speed or
# heading, sparser and noisier fixes with more gaps, more lanes and reckless drivers.
TRAIN_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("default", ()),
    ("positions-only", ("--positions-only",)),
    ("default", ()),
    ("sparse-noisy", ("--hz", "5", "--gps-sigma", "0.5", "--drop-rate", "0.05")),
    ("default", ()),
    ("aggressive", ("--reckless", "0.3", "--lanes", "3")),
)
# Extra held-out sets, reported in the model card next to the default test set.
TEST_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("positions-only", ("--positions-only",)),
    ("sparse-noisy", ("--hz", "5", "--gps-sigma", "0.5", "--drop-rate", "0.05")),
)


@dataclass(frozen=True)
class SimFile:
    """One simulated positions file: which split, seed and simulator options."""

    split: str
    seed: int
    vehicles: int
    duration_s: float
    variant: str = "default"
    args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        tag = self.split if self.split.endswith(self.variant) else f"{self.split}-{self.variant}"
        return f"{tag}-seed{self.seed}-v{self.vehicles}-d{self.duration_s:g}.jsonl"


@dataclass(frozen=True)
class DataConfig:
    """Simulated data: separate seeds for train, validation and test, derived from ``seed``."""

    seed: int = 7
    train_files: int = 6
    vehicles: int = 80
    duration_s: float = 250.0
    val_vehicles: int = 80
    test_vehicles: int = 100
    test_duration_s: float = 300.0

    def plan(self) -> list[SimFile]:
        base = 1000 * self.seed
        files = [
            SimFile("train", base + 1 + i, self.vehicles, self.duration_s,
                    *TRAIN_VARIANTS[i % len(TRAIN_VARIANTS)])
            for i in range(self.train_files)
        ]
        files.append(SimFile("val", base + 500, self.val_vehicles, self.duration_s))
        files.append(SimFile("test", base + 900, self.test_vehicles, self.test_duration_s))
        files += [
            SimFile(f"test-{name}", base + 901 + i, self.test_vehicles, self.test_duration_s,
                    name, args)
            for i, (name, args) in enumerate(TEST_VARIANTS)
        ]
        return files


def simulate_file(path: Path, f: SimFile) -> Path:
    """Write a positions JSONL file with the simulator CLI (the positions contract).

    The child gets no TRAJSTREAM_* variables, so the data depend on the plan alone.
    """
    import os
    import subprocess

    tmp = path.with_suffix(".partial")
    cmd = [
        sys.executable, "-m", "trajstream", "simulate", "--out", str(tmp), "--no-pace",
        "--seed", str(f.seed), "--vehicles", str(f.vehicles), "--duration", f"{f.duration_s:g}",
        *f.args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0 or not tmp.exists():
        from trajstream.errors import TrajstreamError

        raise TrajstreamError(
            f"simulator failed ({' '.join(cmd[2:])}): {res.stderr.strip()[-500:]}"
        )
    tmp.replace(path)
    return path


def simulate_datasets(data: DataConfig, data_dir: Path) -> dict[str, list[Path]]:
    """Generate (or reuse, when already present) the positions files of every split."""
    from concurrent.futures import ThreadPoolExecutor

    data_dir.mkdir(parents=True, exist_ok=True)
    plan = data.plan()
    todo = [f for f in plan if not (data_dir / f.name).exists()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda f: simulate_file(data_dir / f.name, f), todo))
    files: dict[str, list[Path]] = {}
    for f in plan:
        files.setdefault(f.split, []).append(data_dir / f.name)
    return files


def _code_version() -> str:
    """The checkout's commit and whether simulator/ differs from it (the data depend on it)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "simulator", "model"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with local changes in simulator/ or model/" if dirty.strip()
                               else "")


def run_training(
    cfg: TrainConfig,
    data: DataConfig,
    out_dir: Path,
    *,
    data_dir: Path,
    files: dict[str, list[Path]] | None = None,
    command: str = "",
    progress: bool | None = None,
) -> dict:
    """Simulate (unless ``files`` are given), train, evaluate on val/test, write weights,
    metrics, plots and the model card into ``out_dir``. Returns the test summary and more.

    ``files`` maps split -> positions files: "train", "val", "test" and optionally extra
    held-out sets named "test-<variant>", reported next to the test set.
    """
    import os
    import platform

    from trajstream.model.card import acceptance, plot_history, write_model_card
    from trajstream.model.evaluate import Evaluation, run_predictors, write_plots
    from trajstream.model.predictors import ConstantTurnRate, ConstantVelocity, Predictor
    from trajstream.model.runtime import LstmPredictor

    t_start = time.monotonic()
    spec = PathSpec()
    code_version = _code_version()
    plan = {f.name: f for f in data.plan()}
    simulated = files is None
    if files is None:
        log.info("simulating train/val/test data into %s", data_dir)
        files = simulate_datasets(data, data_dir)
    log.info("replaying positions and building windows")
    rows: list[dict] = []

    def describe(split: str, path: Path, rep: Replay, scored: int) -> None:
        f = plan.get(path.name) if simulated else None
        rows.append({
            "split": split, "file": path.name, "variant": f.variant if f else "-",
            "seed": f.seed if f else None, "vehicles": f.vehicles if f else None,
            "duration_s": f.duration_s if f else None, "records": len(rep.pos),
            "scored": scored,
        })

    parts = []
    for path in files["train"]:
        rep = replay_file(path)
        parts.append(make_windows(rep, spec, cfg.seq_len, cfg.burn_in))
        describe("train", path, rep, parts[-1].n_valid)
    train_w = concat_windows(parts)
    del parts
    val_reps = [replay_file(p) for p in files["val"]]
    val_w = concat_windows([make_windows(r, spec, cfg.seq_len, cfg.burn_in) for r in val_reps])
    log.info("train: %d windows (%d scored steps), val: %d windows", len(train_w.features),
             train_w.n_valid, len(val_w.features))
    t_fit = time.monotonic()
    weights, history = fit(train_w, val_w, cfg, spec, progress=progress)
    train_s = time.monotonic() - t_fit
    del train_w, val_w

    predictors: list[Predictor] = [
        LstmPredictor(weights, spec), ConstantVelocity(spec), ConstantTurnRate(spec)]

    def evaluate(split: str, paths: list[Path], reps: list[Replay] | None = None,
                 n_examples: int = 0) -> Evaluation:
        evs = []
        for i, path in enumerate(paths):
            rep = reps[i] if reps else replay_file(path)
            tg, valid = future_positions(rep, spec.offsets_s)
            evs.append(run_predictors(rep, predictors, tg, valid,
                                      n_examples=n_examples if i == 0 else 0, seed=cfg.seed))
            describe(split, path, rep, evs[-1].count)
        merged = evs[0]
        merged.errors = {k: np.concatenate([e.errors[k] for e in evs]) for k in merged.errors}
        return merged

    log.info("evaluating (stateful replay) on the validation and test sets")
    val_ev = evaluate("val", files["val"], val_reps)
    test_ev = evaluate("test", files["test"], n_examples=6)
    test, val = test_ev.summary(), val_ev.summary()
    extra = {split: evaluate(split, paths).summary()
             for split, paths in files.items() if split.startswith("test-")}

    out_dir.mkdir(parents=True, exist_ok=True)
    best = int(np.argmin(history["val_rmse_m"])) + 1
    meta = dict(weights.meta, test=test, val=val, best_epoch=best)
    weights = LstmWeights(**{**weights.__dict__, "meta": meta})
    weights.save(out_dir / "lstm.npz")
    plot_history(history, out_dir / "training_curves.png")
    write_plots({"test": test_ev}, out_dir)

    n_params = int(sum(np.asarray(getattr(weights, a)).size for a in (
        "kernel", "recurrent", "bias", "hidden_w", "hidden_b", "out_w", "out_b")))
    info = {
        "command": command,
        "code_version": code_version,
        "train_seconds": train_s,
        "total_seconds": time.monotonic() - t_start,
        "epochs_run": len(history["val_rmse_m"]),
        "best_epoch": best,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "files": rows,
        "features": list(FEATURES),
        "network": asdict(weights.config),
        "parameters": n_params,
        "train_config": asdict(cfg),
        "data_config": asdict(data) if simulated else None,
        "variants": dict(TRAIN_VARIANTS + TEST_VARIANTS) if simulated else {},
        "test": test,
        "val": val,
        "extra_tests": extra,
        "history": history,
        "acceptance": acceptance(test),
    }
    (out_dir / "metrics.json").write_text(json.dumps(
        {k: info[k] for k in ("command", "test", "val", "extra_tests", "acceptance", "history",
                              "epochs_run", "best_epoch", "train_seconds", "total_seconds")},
        indent=2))
    write_model_card(out_dir / "MODEL_CARD.md", info)
    log.info("test: %s", json.dumps(test))
    return info
