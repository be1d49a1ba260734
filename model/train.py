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

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trajstream.errors import ConfigError
from trajstream.model.data import (
    MAX_TARGET_GAP_S,
    Positions,
    Replay,
    event_time_order,
    future_positions,
    read_positions,
    recorded_side,
    replay,
    source_name,
)
from trajstream.model.features import (
    FEATURES,
    OWN_FEATURES,
    cv_local,
    raw_features,
    to_local,
)
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
    # "own": the vehicle's own track only, so its prediction depends on its own stream alone
    # (the same however vehicles are split over partitions, processes and stages);
    # "neighbours": also the vehicles around it, which the processing instance must hold.
    inputs: str = "neighbours"
    # Share of training windows reflected left-right (features and targets): traffic has no
    # preferred turning side a network should learn from one simulated city's layout.
    mirror: float = 0.0

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURES if self.inputs == "neighbours" else OWN_FEATURES


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


def make_windows(
    rep: Replay, spec: PathSpec, seq_len: int, burn_in: int, n_features: int = len(FEATURES)
) -> Windows:
    """Windows over the first ``n_features`` inputs (the own track's, or all of them)."""
    kin = rep.kin
    feats = raw_features(kin, rep.neighbours)[:, :n_features]
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
            f = np.zeros((seq_len, n_features), np.float32)
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
        return Windows(np.zeros((0, seq_len, n_features), np.float32),
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


def _mirror_columns(features: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Inputs that change sign under a left-right reflection, and left/right pairs to swap."""
    negate = [features.index(f) for f in ("disp_lat_m", "yaw_rate_rps") if f in features]
    pairs = [(features.index(f), features.index(f.replace("left", "right")))
             for f in features if f.startswith("left_")]
    return negate, pairs


def mirrored(w: Windows, features: Sequence[str], share: float, seed: int) -> Windows:
    """``w`` with a seeded random ``share`` of its windows reflected left-right: lateral
    inputs negated, left and right neighbour zones swapped, the lateral target negated."""
    if share <= 0.0 or not len(w.features):
        return w
    pick = np.random.default_rng(seed).random(len(w.features)) < share
    f, t = w.features.copy(), w.targets.copy()
    negate, pairs = _mirror_columns(features)
    sub = f[pick]
    sub[..., negate] *= -1.0
    for a, b in pairs:
        sub[..., [a, b]] = sub[..., [b, a]]
    f[pick] = sub
    t[pick, :, 1:-1:2] *= -1.0  # [x0, y0, x1, y1, ..., mask]: the y of every point
    return Windows(f, t, w.n_steps, w.n_valid)


def normalisation(w: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature mean/std over real steps and the per-point output scale (RMS residual, m)."""
    real = np.abs(w.features).sum(-1) > 0
    f = w.features[real].astype(np.float64)
    mean, std = f.mean(0), np.maximum(f.std(0), 1e-3)
    k = OWN_FEATURES.index("first")
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
    nf = len(cfg.features)  # the own track's inputs come first: windows of more are cut
    train, val = (Windows(w.features[..., :nf], w.targets, w.n_steps, w.n_valid)
                  for w in (train, val))
    train = mirrored(train, cfg.features, cfg.mirror, cfg.seed)
    net = NetworkConfig(units=cfg.units, head_units=cfg.head_units,
                        n_features=len(cfg.features),
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
                                 meta={"train_config": asdict(cfg),
                                       "features": list(cfg.features)})
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
    """One simulated positions file: which split, seed and simulator options.

    ``engine`` "builtin" runs the built-in simulator with ``args``; "sumo" runs SUMO on a
    generated city of kind ``variant`` (grid, spider, random).
    """

    split: str
    seed: int
    vehicles: int
    duration_s: float
    variant: str = "default"
    args: tuple[str, ...] = ()
    engine: str = "builtin"

    @property
    def name(self) -> str:
        if self.engine == "sumo":
            return (f"sumo-{self.variant}-seed{self.seed}-v{self.vehicles}"
                    f"-d{self.duration_s:g}.jsonl")
        tag = self.split if self.split.endswith(self.variant) else f"{self.split}-{self.variant}"
        return f"builtin-{tag}-seed{self.seed}-v{self.vehicles}-d{self.duration_s:g}.jsonl"

    @property
    def command(self) -> list[str]:
        """The ``trajstream simulate`` arguments that write this file (without ``--out``)."""
        cmd = ["simulate", "--no-pace", "--seed", str(self.seed), "--vehicles",
               str(self.vehicles), "--duration", f"{self.duration_s:g}"]
        if self.engine == "sumo":
            cmd += ["--engine", "sumo", "--net-kind", self.variant]
        return cmd + list(self.args)


def parse_sumo_runs(values: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``("grid:11", "spider:12")`` -> ``(("grid", 11), ("spider", 12))``."""
    from trajstream.simulator.sumo.config import NET_KINDS

    out = []
    for v in values:
        kind, _, seed = v.partition(":")
        if kind not in NET_KINDS or not seed.isdigit():
            raise ConfigError(f"a SUMO run is KIND:SEED with KIND one of {', '.join(NET_KINDS)}"
                              f", got {v!r}")
        out.append((kind, int(seed)))
    return tuple(out)


@dataclass(frozen=True)
class DataConfig:
    """Simulated data: separate seeds for train, validation and test, derived from ``seed``
    (built-in simulator), and SUMO runs as KIND:SEED per split.

    The SUMO test runs are held out by network kind *and* seed: neither appears in training
    or validation.
    """

    seed: int = 7
    train_files: int = 4
    vehicles: int = 80
    duration_s: float = 250.0
    val_vehicles: int = 80
    test_vehicles: int = 100
    test_duration_s: float = 300.0
    sumo_train: tuple[str, ...] = ("grid:11", "spider:12")
    sumo_val: tuple[str, ...] = ("grid:13",)
    sumo_test: tuple[str, ...] = ("random:14",)
    sumo_vehicles: int = 150
    sumo_duration_s: float = 200.0

    def check(self) -> None:
        trained = parse_sumo_runs(self.sumo_train + self.sumo_val)
        for kind, seed in parse_sumo_runs(self.sumo_test):
            if kind in {k for k, _ in trained} or seed in {s for _, s in trained}:
                raise ConfigError(
                    f"the SUMO test run {kind}:{seed} must use a network kind and a seed that "
                    "no training or validation run uses")

    def plan(self) -> list[SimFile]:
        self.check()
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
        for split, runs in (("train", self.sumo_train), ("val", self.sumo_val),
                            ("test", self.sumo_test)):
            files += [SimFile(split, seed, self.sumo_vehicles, self.sumo_duration_s, kind,
                              engine="sumo") for kind, seed in parse_sumo_runs(runs)]
        return files


def simulate_file(path: Path, f: SimFile) -> Path:
    """Write a positions JSONL file with the simulator CLI (the positions contract).

    The child gets no TRAJSTREAM_* variables, so the data depend on the plan alone.
    """
    import os
    import subprocess

    tmp = path.with_suffix(".partial")
    cmd = [sys.executable, "-m", "trajstream", *f.command, "--out", str(tmp)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0 or not tmp.exists():
        from trajstream.errors import TrajstreamError

        raise TrajstreamError(
            f"simulator failed ({' '.join(cmd[2:])}): {res.stderr.strip()[-500:]}"
        )
    tmp.replace(path)
    return path


def simulate_datasets(data: DataConfig, data_dir: Path, progress: bool = False) -> list[Path]:
    """Generate (or reuse, when already present) the positions file of every plan entry."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    data_dir.mkdir(parents=True, exist_ok=True)
    plan = data.plan()
    todo = [f for f in plan if not (data_dir / f.name).exists()]
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(
            total=len(todo), desc="simulating", unit="file", file=sys.stderr,
            disable=not progress or not todo) as bar:
        for _ in pool.map(lambda f: simulate_file(data_dir / f.name, f), todo):
            bar.update(1)
    return [data_dir / f.name for f in plan]


@dataclass(frozen=True)
class Part:
    """Some of a positions file's records for one split, and the source it reports as."""

    split: str  # "train", "val" or "test"
    path: Path
    source: str
    recorded: str = "all"  # recorded traffic only: "fit", "val" or "held-out" recordings


VAL_RECORDING_MOD = 6  # training-side recordings numbered 1 mod 6 validate (early stopping)


def recorded_parts(path: Path) -> list[Part]:
    """A recorded file on all three splits by the held-out rule (simulator/recorded/split.py);
    the training side's recordings numbered 1 mod 6 are the validation set."""
    name = source_name(path)
    return [Part("train", path, name, "fit"), Part("val", path, name, "val"),
            Part("test", path, name, "held-out")]


def check_recorded(path: Path, pos: Positions) -> None:
    """Refuse recorded traffic the held-out rule cannot split: ids that name no recording
    (``i-80/12`` from ``data import --format ngsim``, a fleet's own ids) would be kept on
    every side, trained on and then scored as held out."""
    from trajstream.simulator.recorded.split import recording_of

    alien = [v for v in pos.ids if recording_of(v) is None]
    if alien:
        raise ConfigError(
            f"--recorded {path}: {len(alien)} of {len(pos.ids)} vehicle ids name no "
            f"recording (e.g. {alien[0]!r}; the held-out rule needs CommonRoad scenario ids "
            f"like 'USA_US101-10_1_T-1/484'), so they would be trained on and tested on "
            f"alike: split the file yourself and give --train-data, --val-data, --test-data")


def _record_keys(pos: Positions) -> np.ndarray:
    """A hash per record of its vehicle id, time and position (8 bytes a record)."""
    ids = np.asarray(pos.ids, dtype=object)[pos.vehicle]
    rows = zip(ids.tolist(), pos.ts.tolist(), pos.x.tolist(), pos.y.tolist(), strict=True)
    return np.fromiter(map(hash, rows), np.int64, count=len(pos))


def check_held_out(files: dict[str, list[Path]], cache: dict[Path, Positions]) -> None:
    """Refuse validation files that repeat training records, and test files that repeat
    training or validation records (the same vehicle, time and position): early stopping,
    the residual shrink and the sigma calibration would be fitted on traffic the model
    learns from, and test figures would be reported as held-out traffic and not be."""
    trained = np.concatenate([_record_keys(_read(path, cache)) for path in files["train"]])
    _refuse_repeats("--val-data", files["val"], trained, "--train-data", cache,
                    "early stopping and the calibration would be fitted on traffic the model "
                    "learns from")
    seen = np.concatenate([trained, *(_record_keys(_read(path, cache))
                                      for path in files["val"])])
    _refuse_repeats("--test-data", files["test"], seen, "--train-data/--val-data", cache,
                    "the test would score traffic the model learnt from")


def _refuse_repeats(flag: str, paths: list[Path], seen: np.ndarray, seen_flags: str,
                    cache: dict[Path, Positions], why: str) -> None:
    """ConfigError for the first of ``paths`` with records whose keys are in ``seen``."""
    for path in paths:
        shared = int(np.isin(_record_keys(_read(path, cache)), seen).sum())
        if shared:
            raise ConfigError(
                f"{flag} {path}: {shared} of its {len(cache[path])} records (vehicle, time "
                f"and position) are also in {seen_flags}, so {why}: give held-out traffic")


def _nothing_to_score(split: str, parts: Sequence[Part], records: int,
                      spec: PathSpec) -> ConfigError:
    names = ", ".join(sorted({p.path.name for p in parts}))
    return ConfigError(
        f"no {split} data to score: {names} ({records} position records kept) hold no "
        f"vehicle tracked for {spec.horizon_s:g} s without a gap over {MAX_TARGET_GAP_S:g} s")


def select_recorded(pos: Positions, which: str) -> Positions:
    """The records of ``which`` recordings: "fit" (training), "val", "held-out" or "all"."""
    if which == "all":
        return pos
    if which == "held-out":
        return recorded_side(pos, "held-out")
    from trajstream.simulator.recorded.split import recording_of

    train = recorded_side(pos, "train")

    def is_val(vid: str) -> bool:
        rec = recording_of(vid)
        return rec is not None and int(rec.rsplit("-", 1)[1]) % VAL_RECORDING_MOD == 1

    val = np.array([is_val(v) for v in train.ids], dtype=bool)
    keep = val if which == "val" else ~val
    return train.take(np.flatnonzero(keep[train.vehicle]))


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


def _read(path: Path, cache: dict[Path, Positions]) -> Positions:
    """A positions file, read once; records the codec rejects (NaN, out of range) are
    dropped, and said so: a file of them would otherwise just look empty."""
    if path not in cache:
        cache[path], rejected = read_positions(path)
        if rejected:
            log.warning("%s: %d record(s) rejected by the positions contract, %d kept",
                        path, rejected, len(cache[path]))
    return cache[path]


def _load_part(part: Part, cache: dict[Path, Positions]) -> Replay:
    return replay(event_time_order(select_recorded(_read(part.path, cache), part.recorded)))


def plan_parts(
    data: DataConfig, data_dir: Path, recorded: Sequence[Path], progress: bool = False
) -> list[Part]:
    """Every file of the mix on its splits: built-in and SUMO runs (simulated into
    ``data_dir`` unless already there) and the recorded files by the held-out rule."""
    paths = simulate_datasets(data, data_dir, progress)
    parts = [Part("test" if f.split.startswith("test") else f.split, path,
                  source_name(path)) for f, path in zip(data.plan(), paths, strict=True)]
    for path in recorded:
        parts += recorded_parts(path)
    return parts


def run_training(
    cfg: TrainConfig,
    data: DataConfig,
    out_dir: Path,
    *,
    data_dir: Path,
    recorded: Sequence[Path] = (),
    recorded_weight: int = 1,
    files: dict[str, list[Path]] | None = None,
    command: str = "",
    progress: bool | None = None,
) -> dict:
    """Simulate (unless ``files`` are given), train, evaluate on val/test, write weights,
    metrics, plots and the model card into ``out_dir``. Returns the per-source test
    summaries and more.

    Without ``files`` the mix is the built-in simulator and SUMO runs of ``data`` plus the
    ``recorded`` files (split by recording; their training windows repeated
    ``recorded_weight`` times). ``files`` maps "train"/"val"/"test" to positions files used
    whole instead; every test file is its own source.
    """
    import os
    import platform

    from tqdm import tqdm

    from trajstream.model.calibration import (
        fit_residual_shrink,
        fit_sigma_scale,
        per_source_weights,
    )
    from trajstream.model.card import acceptance, plot_history, write_model_card
    from trajstream.model.evaluate import Evaluation, merge, run_predictors, write_plots
    from trajstream.model.predictors import ConstantTurnRate, ConstantVelocity, Predictor
    from trajstream.model.runtime import LstmPredictor

    t_start = time.monotonic()
    spec = PathSpec()
    code_version = _code_version()
    if progress is None:
        progress = sys.stderr.isatty()
    cache: dict[Path, Positions] = {}
    for path in recorded:  # before simulating: a file the rule cannot split stops at once
        check_recorded(path, _read(path, cache))
    if files is None:
        log.info("simulating built-in and SUMO data into %s", data_dir)
        parts = plan_parts(data, data_dir, recorded, progress)
    else:
        parts = [Part(split, p, source_name(p)) for split, ps in files.items() for p in ps]
        check_held_out(files, cache)
        for part in (p for p in parts if p.split == "test"):  # nothing to score: stop now
            rep = _load_part(part, cache)
            if not future_positions(rep, spec.offsets_s)[1].any():
                raise _nothing_to_score("test", [part], len(rep.pos), spec)
    plan = {data_dir / f.name: f for f in data.plan()} if files is None else {}
    rows: list[dict] = []

    def describe(part: Part, rep: Replay, scored: int) -> None:
        f = plan.get(part.path)
        rows.append({
            "split": part.split, "source": part.source, "file": part.path.name,
            "recordings": part.recorded if part.recorded != "all" else "-",
            "command": "trajstream " + " ".join(f.command) if f else "-",
            "records": len(rep.pos), "scored": scored,
        })

    def windows(split: str) -> Windows:
        out = []
        records = 0
        todo = [p for p in parts if p.split == split]
        for part in tqdm(todo, desc=f"{split} windows", unit="file", file=sys.stderr,
                         disable=not progress):
            rep = _load_part(part, cache)
            records += len(rep.pos)
            if not len(rep.pos):
                continue  # e.g. a recorded file held out entirely
            w = make_windows(rep, spec, cfg.seq_len, cfg.burn_in, len(cfg.features))
            describe(part, rep, w.n_valid)
            out += [w] * (recorded_weight if part.recorded != "all" else 1)
        if not any(w.n_valid for w in out):
            raise _nothing_to_score(split, todo, records, spec)
        return concat_windows(out)

    log.info("replaying positions and building windows")
    train_w, val_w = windows("train"), windows("val")
    log.info("train: %d windows (%d scored steps), val: %d windows", len(train_w.features),
             train_w.n_valid, len(val_w.features))
    t_fit = time.monotonic()
    weights, history = fit(train_w, val_w, cfg, spec, progress=progress)
    train_s = time.monotonic() - t_fit
    del train_w, val_w

    predictors: list[Predictor] = [
        LstmPredictor(weights, spec), ConstantVelocity(spec), ConstantTurnRate(spec)]

    def evaluate(split: str, residuals: bool = False) -> dict[str, Evaluation]:
        evs: dict[str, Evaluation] = {}
        todo = [p for p in parts if p.split == split]
        for part in tqdm(todo, desc=f"evaluating {split}", unit="file", file=sys.stderr,
                         disable=not progress):
            rep = _load_part(part, cache)
            if not len(rep.pos):
                continue
            tg, valid = future_positions(rep, spec.offsets_s)
            ev = run_predictors(rep, predictors, tg, valid, n_examples=6, seed=cfg.seed,
                                residuals=residuals)
            if split == "test":  # the validation files are described by their windows
                describe(part, rep, ev.count)
            evs[part.source] = merge([evs[part.source], ev]) if part.source in evs else ev
        return evs

    log.info("evaluating (stateful replay) on the validation and test sets")
    val_evs = list(evaluate("val", residuals=True).values())
    val_counts = [e.count for e in val_evs]
    val_ev = merge(val_evs)
    # the residual shrink, fitted on validation, each source alike (model/calibration.py),
    # folded into the output scale (the Keras model and the step carry it alike)
    observed = val_ev.target_residuals
    assert observed is not None  # evaluated with residuals=True
    shrink = fit_residual_shrink(val_ev.residuals["lstm"], observed, val_counts)
    weights = dataclasses.replace(weights, out_scale=np.r_[
        weights.out_scale[: 2 * spec.points] * shrink.reshape(-1),
        weights.out_scale[2 * spec.points:]].astype(np.float32))
    d = val_ev.residuals["lstm"] * shrink - observed
    val_ev.errors["lstm"] = np.hypot(d[..., 0], d[..., 1]).astype(np.float32)
    val_ev.residuals, val_ev.target_residuals = {}, None
    del val_evs, d, observed
    # the sigma's calibration scale, fitted on validation, each source alike
    # (model/calibration.py)
    raw_sigma = val_ev.summary()["models"]["lstm"]["sigma"]
    scale = fit_sigma_scale(val_ev.errors["lstm"], val_ev.sigmas["lstm"],
                            per_source_weights(val_counts))
    weights = dataclasses.replace(weights, sigma_scale=scale)
    val_ev.sigmas["lstm"] = val_ev.sigmas["lstm"] * scale
    val = val_ev.summary()
    predictors[0] = LstmPredictor(weights, spec)
    test_evs = evaluate("test")
    tests = {name: ev.summary() for name, ev in test_evs.items()}
    kinds = {p.source: _kind(p, plan) for p in parts}

    out_dir.mkdir(parents=True, exist_ok=True)
    best = int(np.argmin(history["val_rmse_m"])) + 1
    meta = dict(weights.meta, tests=tests, val=val, best_epoch=best)
    weights = dataclasses.replace(weights, meta=meta)
    weights.save(out_dir / "lstm.npz")
    plot_history(history, out_dir / "training_curves.png")
    write_plots(test_evs, out_dir)

    n_params = int(sum(np.asarray(getattr(weights, a)).size for a in (
        "kernel", "recurrent", "bias", "hidden_w", "hidden_b", "out_w", "out_b")))
    test_files = sorted({str(p.path) for p in parts if p.split == "test"})
    held = [p for p in parts if p.split == "test" and p.recorded == "held-out"]
    evaluate_cmd = ("trajstream model evaluate --weights lstm.npz"  # these, not the shipped
                    + (" --split held-out" if held else "")
                    + "".join(f" --data {Path(f).name}" for f in test_files))
    info = {
        "command": command,
        "evaluate_command": evaluate_cmd,
        "code_version": code_version,
        "train_seconds": train_s,
        "total_seconds": time.monotonic() - t_start,
        "epochs_run": len(history["val_rmse_m"]),
        "best_epoch": best,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "files": rows,
        "features": list(cfg.features),
        "network": asdict(weights.config),
        "parameters": n_params,
        "train_config": asdict(cfg),
        "data_config": asdict(data) if files is None else None,
        "recorded_weight": recorded_weight,
        "variants": dict(TRAIN_VARIANTS + TEST_VARIANTS) if files is None else {},
        "kinds": kinds,
        "tests": tests,
        "val": val,
        "residual_shrink": {"along": [round(float(v), 4) for v in shrink[:, 0]],
                            "across": [round(float(v), 4) for v in shrink[:, 1]]},
        "sigma_calibration": {"scale": [round(float(v), 4) for v in scale],
                              "uncalibrated": raw_sigma},
        "history": history,
        "acceptance": acceptance(tests, kinds),
    }
    (out_dir / "metrics.json").write_text(json.dumps(info, indent=2))  # the card's input
    write_model_card(out_dir / "MODEL_CARD.md", info)
    log.info("tests: %s", json.dumps(tests))
    return info


def _kind(part: Part, plan: dict[Path, SimFile]) -> str:
    """What traffic a source is: "recorded", "sumo", "builtin" or "file" (given as is)."""
    if part.recorded != "all":
        return "recorded"
    f = plan.get(part.path)
    return "file" if f is None else ("sumo" if f.engine == "sumo" else "builtin")
