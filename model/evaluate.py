"""Offline accuracy of predictors on a positions file, stepped exactly as the processor does.

Each predictor advances through the file in the engine's batched event-time steps (one tracker
update and one predictor step per fix, all vehicles with a fix in the step together), its
per-vehicle state kept in slot-indexed rows and zeroed on a vehicle's first fix or after a
reset. Every prediction whose 4 s future is covered by the vehicle's later fixes is compared
with the observed (interpolated) positions at ts + k * step_s.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trajstream.errors import TrajstreamError
from trajstream.model.calibration import GAUSSIAN_WITHIN, RAYLEIGH_MEDIAN, calibration
from trajstream.model.data import (
    Replay,
    Side,
    event_time_order,
    future_positions,
    read_positions,
    recorded_side,
    replay,
    source_name,
)
from trajstream.model.features import cv_local, to_local
from trajstream.model.predictors import PathSpec, Predictor

HORIZONS_S: tuple[int, ...] = (1, 2, 3, 4)


@dataclass
class Evaluation:
    """Per-point Euclidean errors (n_valid, P) per predictor, the predicted 1-sigma of the
    same points for predictors that give one, and a few example paths."""

    spec: PathSpec
    errors: dict[str, np.ndarray]
    sigmas: dict[str, np.ndarray] = field(default_factory=dict)
    example_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    example_paths: dict[str, np.ndarray] = field(default_factory=dict)
    example_targets: np.ndarray | None = None
    example_history: list[np.ndarray] = field(default_factory=list)
    # with ``residuals=True``: per predictor its path minus constant velocity, and the
    # observed path minus constant velocity, in the vehicle frame (n_valid, P, 2)
    residuals: dict[str, np.ndarray] = field(default_factory=dict)
    target_residuals: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(next(iter(self.errors.values())).shape[0]) if self.errors else 0

    def summary(self) -> dict:
        """The evaluate command's JSON: RMSE at 1..4 s, ADE and FDE (metres) per model, and
        for a model with a sigma its calibration (model/calibration.py)."""
        models: dict[str, dict] = {}
        for name, err in self.errors.items():
            rmse = {}
            for h in HORIZONS_S:
                k = int(round(h / self.spec.step_s)) - 1
                if k < err.shape[1]:
                    rmse[str(h)] = _r(np.sqrt(np.mean(err[:, k] ** 2)) if err.size else np.nan)
            models[name] = {
                "rmse": rmse,
                "ade": _r(float(err.mean()) if err.size else np.nan),
                "fde": _r(float(err[:, -1].mean()) if err.size else np.nan),
            }
            if name in self.sigmas:
                models[name]["sigma"] = calibration(err, self.sigmas[name], self.spec,
                                                    HORIZONS_S)
        return {"models": models, "predictions": self.count}


def _r(v: float) -> float | None:
    return round(float(v), 4) if np.isfinite(v) else None


def run_predictors(
    rep: Replay,
    predictors: Sequence[Predictor],
    targets: np.ndarray,
    valid: np.ndarray,
    n_examples: int = 0,
    seed: int = 0,
    progress: bool = False,
    residuals: bool = False,
) -> Evaluation:
    """Step every predictor through the replay and collect errors against ``targets``
    (and, with ``residuals``, the paths and targets over constant velocity in the vehicle
    frame: what model/calibration.py's residual shrink is fitted on)."""
    spec = predictors[0].spec
    pos, kin = rep.pos, rep.kin
    nveh = max(len(pos.ids), 1)
    states = {p.name: np.zeros((nveh, p.state_dim), np.float32) for p in predictors}
    out_row = np.cumsum(valid) - 1  # row of each valid record in the error arrays
    errors = {p.name: np.zeros((int(valid.sum()), spec.points), np.float32) for p in predictors}
    sigmas = {p.name: np.zeros((int(valid.sum()), spec.points), np.float32) for p in predictors
              if hasattr(p, "step_full")}
    examples = _pick_examples(rep, valid, n_examples, seed)
    ex_pos = {int(r): i for i, r in enumerate(examples)}
    ex_paths = {p.name: np.zeros((examples.size, spec.points, 2)) for p in predictors}
    n_valid = int(valid.sum())
    res = {p.name: np.zeros((n_valid, spec.points, 2), np.float32) for p in predictors
           if residuals}
    target_res = np.zeros((n_valid, spec.points, 2), np.float32) if residuals else None
    groups = rep.groups
    if progress:
        from tqdm import tqdm

        groups = tqdm(groups, desc="evaluating", unit="step", file=sys.stderr, leave=False)
    for idx in groups:
        k = kin.take(idx)
        slots = pos.vehicle[idx]
        v = valid[idx]
        hit = [(j, ex_pos[int(r)]) for j, r in enumerate(idx) if int(r) in ex_pos]
        for p in predictors:
            st = states[p.name]
            rows = st[slots]
            rows[k.first] = 0.0
            nb = (rep.neighbours[idx],) if getattr(p, "uses_neighbours", False) else ()
            if p.name in sigmas:
                paths, new_rows, sig = p.step_full(k, rows, *nb)  # type: ignore[attr-defined]
            else:
                paths, new_rows = p.step(k, rows, *nb)  # type: ignore[call-arg]
            st[slots] = new_rows
            if v.any():
                d = paths[v] - targets[idx[v]]
                errors[p.name][out_row[idx[v]]] = np.hypot(d[..., 0], d[..., 1])
                if p.name in sigmas:
                    sigmas[p.name][out_row[idx[v]]] = sig[v]
                if residuals:
                    kv = k.take(np.flatnonzero(v))
                    cv = cv_local(kv.speed, spec.offsets_s)
                    res[p.name][out_row[idx[v]]] = to_local(kv.x, kv.y, kv.heading,
                                                            paths[v]) - cv
                    if target_res is not None:
                        target_res[out_row[idx[v]]] = to_local(kv.x, kv.y, kv.heading,
                                                               targets[idx[v]]) - cv
            for j, e in hit:
                ex_paths[p.name][e] = paths[j]
    history = []
    for r in examples:
        same = (pos.vehicle == pos.vehicle[r]) & (rep.segment == rep.segment[r])
        t = pos.ts[r]
        past = same & (pos.ts <= t) & (pos.ts >= t - 3.0)
        history.append(np.stack([pos.x[past], pos.y[past]], -1))
    return Evaluation(
        spec=spec, errors=errors, sigmas=sigmas, example_index=examples, example_paths=ex_paths,
        example_targets=targets[examples] if examples.size else None, example_history=history,
        residuals=res, target_residuals=target_res,
    )


def _pick_examples(rep: Replay, valid: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Valid records, half of them in turns or speed changes (the interesting cases)."""
    if n <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    moving = valid & (rep.kin.speed > 2.0) & ~rep.kin.first
    busy = moving & ((np.abs(rep.kin.yaw_rate) > 0.1) | (np.abs(rep.kin.accel) > 1.0))
    picks: list[int] = []
    for pool, k in ((busy, n // 2), (moving, n)):
        cand = np.setdiff1d(np.flatnonzero(pool), picks)
        take = min(k - len(picks), cand.size)
        if take > 0:
            picks.extend(rng.choice(cand, take, replace=False).tolist())
    return np.array(sorted(picks), dtype=np.int64)


def evaluate_positions(
    path: str | Path,
    predictors: Sequence[Predictor],
    n_examples: int = 0,
    seed: int = 0,
    progress: bool = False,
    side: Side = "all",
) -> Evaluation:
    """Every predictor over one positions file (``side``: see :func:`model.data.recorded_side`)."""
    pos, rejected = read_positions(path)
    pos = recorded_side(pos, side)
    if len(pos) == 0:
        where = "" if side == "all" else f" in the {side} recordings"
        raise TrajstreamError(f"{path}: no valid position records{where} ({rejected} "
                              "rejected)")
    rep = replay(event_time_order(pos))
    targets, valid = future_positions(rep, predictors[0].spec.offsets_s)
    return run_predictors(rep, predictors, targets, valid, n_examples=n_examples, seed=seed,
                          progress=progress)


def evaluate_sources(
    paths: Sequence[str | Path],
    predictors: Sequence[Predictor],
    side: Side = "all",
    n_examples: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Evaluation]:
    """One evaluation per file, named by :func:`model.data.source_name` (files sharing a
    name are merged into one source)."""
    out: dict[str, Evaluation] = {}
    for path in paths:
        ev = evaluate_positions(path, predictors, n_examples=n_examples, seed=seed,
                                progress=progress, side=side)
        name = source_name(path)
        out[name] = merge([out[name], ev]) if name in out else ev
    return out


def merge(evs: Sequence[Evaluation]) -> Evaluation:
    """The evaluations of several files as one (errors pooled; the first one's examples)."""
    first = evs[0]
    errors = {k: np.concatenate([e.errors[k] for e in evs]) for k in first.errors}
    sigmas = {k: np.concatenate([e.sigmas[k] for e in evs]) for k in first.sigmas}
    res = {k: np.concatenate([e.residuals[k] for e in evs]) for k in first.residuals}
    targets = (np.concatenate([e.target_residuals for e in evs])  # type: ignore[misc]
               if first.target_residuals is not None else None)
    return Evaluation(spec=first.spec, errors=errors, sigmas=sigmas, residuals=res,
                      target_residuals=targets,
                      example_index=first.example_index,
                      example_paths=first.example_paths, example_targets=first.example_targets,
                      example_history=first.example_history)


def format_table(source: str, summary: dict) -> list[str]:
    """A source's summary as text: RMSE at 1-4 s, ADE, FDE per model and x CV at 4 s."""
    hs = [str(h) for h in HORIZONS_S]
    cv4 = summary["models"].get("cv", {}).get("rmse", {}).get(hs[-1])
    w = max(6, *(len(n) + 1 for n in summary["models"]))
    head = f"{'model':{w}s}" + "".join(f"{'RMSE ' + h + ' s':>10s}" for h in hs)
    head += f"{'ADE':>8s}{'FDE':>8s}" + (f"{'4 s / CV':>10s}" if cv4 else "")
    lines = [f"{source} ({summary['predictions']} predictions, metres)", head]
    for name, m in summary["models"].items():
        row = f"{name:{w}s}" + "".join(f"{_fmt(m['rmse'].get(h)):>10s}" for h in hs)
        row += f"{_fmt(m['ade']):>8s}{_fmt(m['fde']):>8s}"
        if cv4:
            r4 = m["rmse"].get(hs[-1])
            row += f"{(f'{r4 / cv4:.2f}x' if r4 is not None else '-'):>10s}"
        lines.append(row)
    for name, m in summary["models"].items():
        if "sigma" in m:
            lines += _calibration_lines(name, m["sigma"], hs, w)
    return lines


def _calibration_lines(name: str, cal: dict, hs: list[str], w: int) -> list[str]:
    """A model's sigma against its errors: median |error| / sigma and the share within
    1 and 2 sigma per horizon, a calibrated Gaussian's figures beside."""
    rows = [("median |e|/sigma", "median_z", f"{RAYLEIGH_MEDIAN:.2f}", "{:.2f}"),
            ("within 1 sigma", "within_1", f"{GAUSSIAN_WITHIN[1]:.0%}", "{:.0%}"),
            ("within 2 sigma", "within_2", f"{GAUSSIAN_WITHIN[2]:.0%}", "{:.0%}")]
    lines = [f"{name} sigma calibration" + " " * max(1, w + 10 - len(name) - 19)
             + "".join(f"{h + ' s':>10s}" for h in hs) + f"{'Gaussian':>10s}"]
    for label, key, ideal, fmt in rows:
        cells = [cal.get(h, {}).get(key) for h in hs]
        lines.append(f"  {label:{w + 8}s}" + "".join(
            f"{('-' if c is None else fmt.format(c)):>10s}" for c in cells) + f"{ideal:>10s}")
    return lines


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


_COLORS = {"lstm": "tab:red", "lstm-own": "tab:red", "lstm-neighbours": "tab:purple",
           "cv": "tab:blue", "ctrv": "tab:green"}
_SPARE_COLORS = ("tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def model_colors(names: Iterable[str]) -> dict[str, str]:
    """A colour per model: fixed for the baselines and the LSTM, the spare ones in turn for
    the others (several LSTMs: lstm-neighbours-1, -2), so none takes a baseline's colour."""
    spare = itertools.cycle(_SPARE_COLORS)
    return {n: _COLORS.get(n) or next(spare) for n in dict.fromkeys(names)}


def write_plots(evs: dict[str, Evaluation], out_dir: str | Path) -> list[Path]:
    """error_by_horizon.png (RMSE per model over the horizon, one panel per source) and
    examples.png (from the first source with examples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = model_colors(n for ev in evs.values() for n in ev.errors)
    files = []
    cols = min(3, len(evs))
    rows = (len(evs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for i, (source, ev) in enumerate(evs.items()):
        ax = axes[i // cols][i % cols]
        offs = ev.spec.offsets_s
        for name, err in ev.errors.items():
            if not err.size:
                continue
            ax.plot(offs, np.sqrt(np.mean(err.astype(np.float64) ** 2, axis=0)), marker=".",
                    label=name, color=colors.get(name))
        ax.set_xlabel("horizon (s)")
        ax.set_ylabel("RMSE (m)")
        ax.set_title(f"{source} ({ev.count} predictions)", fontsize=10)
        ax.grid(alpha=0.3)
        if ev.count:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no prediction with a covered 4 s future", ha="center",
                    transform=ax.transAxes)
    for j in range(len(evs), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Prediction error by horizon")
    fig.tight_layout()
    files.append(out / "error_by_horizon.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    ev = next((e for e in evs.values() if e.example_index.size), next(iter(evs.values())))
    n = ev.example_index.size
    if n and ev.example_targets is not None:
        cols = min(3, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
        for i in range(n):
            ax = axes[i // cols][i % cols]
            hist = ev.example_history[i]
            ax.plot(hist[:, 0], hist[:, 1], "k.", ms=3, label="observed (past 3 s)")
            tgt = ev.example_targets[i]
            ax.plot(tgt[:, 0], tgt[:, 1], "k-", lw=2, alpha=0.5, label="actual (next 4 s)")
            for name, paths in ev.example_paths.items():
                ax.plot(paths[i, :, 0], paths[i, :, 1], "-", color=colors.get(name), lw=1.2,
                        label=name)
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.legend(fontsize=7)
        for j in range(n, rows * cols):
            axes[j // cols][j % cols].axis("off")
        fig.suptitle("Example predictions (x/y, metres)")
        fig.tight_layout()
        files.append(out / "examples.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files
