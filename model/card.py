"""The model card and training curves written next to the shipped weights."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from trajstream.model.evaluate import HORIZONS_S


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history.get("rmse_m", [])) + 1)
    ax.plot(epochs, history.get("rmse_m", []), marker=".", label="train")
    ax.plot(epochs, history.get("val_rmse_m", []), marker=".", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE over the 20 points (m)")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _para(text: str, indent: str = "") -> str:
    return textwrap.fill(text, width=92, subsequent_indent=indent, break_on_hyphens=False)


def _table(summary: dict) -> list[str]:
    hs = [str(h) for h in HORIZONS_S]
    lines = [
        "| model | " + " | ".join(f"RMSE {h} s" for h in hs) + " | ADE | FDE |",
        "|---|" + "---:|" * (len(hs) + 2),
    ]
    for name, m in summary["models"].items():
        cells = [f"{m['rmse'].get(h, float('nan')):.3f}" for h in hs]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['ade']:.3f} | {m['fde']:.3f} |")
    return lines


def acceptance(summary: dict) -> dict:
    """The issue's bar: LSTM RMSE at 4 s <= 0.65 x CV's, and below CV at every horizon."""
    lstm, cv = summary["models"]["lstm"]["rmse"], summary["models"]["cv"]["rmse"]
    ratio = lstm["4"] / cv["4"]
    every = all(lstm[h] < cv[h] for h in lstm)
    return {"ratio_4s": round(ratio, 4), "below_cv_every_horizon": every,
            "passed": bool(ratio <= 0.65 and every)}


def write_model_card(path: Path, info: dict) -> Path:
    """Markdown card: data, settings, metrics, acceptance and the reproducing command."""
    test, val = info["test"], info["val"]
    acc = acceptance(test)
    net = info["network"]
    lines = [
        "# Model card: trajstream LSTM trajectory predictor",
        "",
        _para(
            "Predicts each vehicle's next 4 s of motion (a point every 0.2 s) from its stream "
            "of position messages, one recurrent step per message, in the vehicle's own frame, "
            "as a residual over constant velocity. Shipped as `lstm.npz` (plain float32 "
            "arrays; loaded by `model.load_predictor(\"lstm\")`; the default numpy step needs "
            "no TensorFlow)."
        ),
        "",
        "## Reproduce",
        "",
        "```",
        info["command"],
        "```",
        "",
        _para(
            f"Trained in {info['train_seconds'] / 60:.1f} min ({info['epochs_run']} epochs, "
            f"best epoch {info['best_epoch']}) on {info['host']}; the whole command "
            f"(simulation, training, evaluation) took {info['total_seconds'] / 60:.1f} min. "
            f"Code: {info.get('code_version', 'unknown')} (the simulated data depend on the "
            "simulator's version; the same version and seed give byte-identical files)."
        ),
        "",
        "## Data",
        "",
        _para(
            "Positions files from the simulator (`trajstream simulate --no-pace`; city grid "
            "with signals, queues, turns, lane changes and reckless drivers; GPS noise, drops, "
            "jitter, late and duplicate messages), in the positions contract as JSONL, "
            "replayed exactly as the processor sees them (a unit test checks it against "
            "`stream.engine.Engine`): codec validation, the engine's admission rules (late "
            "behind the watermark, stale, dense), event-time order, batched sub-steps per "
            "tick, the same `KinematicsTracker`, state reset after a 5 s gap. Targets: the "
            "vehicle's later observed (noisy) fixes, "
            "interpolated at ts + k * 0.2 s; predictions whose 4 s future has a gap > 0.6 s "
            "between fixes are left out of loss and metrics. Each split has its own seeds."
        ),
        "",
        "| split | variant | seed | vehicles | duration (s) | records | scored |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for f in info["files"]:
        lines.append(
            f"| {f['split']} | {f['variant']} | {f['seed'] if f['seed'] is not None else '-'} | "
            f"{f['vehicles'] or '-'} | {f['duration_s'] or '-'} | {f['records']} | "
            f"{f['scored']} |"
        )
    lines += [
        "",
        _para("Variants (simulator options): " + "; ".join(
            f"`{name}`: {' '.join(args) or 'simulator defaults'}" for name, args in
            info.get("variants", {}).items()) + ". Train \"scored\" counts the steps in the "
            "loss (burn-in excluded); val/test count the predictions compared with the observed "
            "future."),
        "",
        "## Network",
        "",
        _para(
            f"- Inputs per fix ({len(info['features'])}): {', '.join(info['features'])}; "
            "displacements rotated into the current heading frame (translation and rotation "
            "invariant), `dt` explicit (irregular sampling). Normalised with training-set "
            "mean/std.", indent="  "),
        _para(
            f"- `LSTMCell({net['units']})` (state per vehicle = h and c = {2 * net['units']} "
            f"floats) -> Dense({net['head_units']}, relu) over [h, features] -> "
            f"Dense({3 * net['points']}): {net['points']} x/y residuals over constant velocity "
            f"plus {net['points']} log-sigmas (a 1-sigma position uncertainty per point, "
            "trained with a Gaussian NLL on detached errors so it does not bias the mean).",
            indent="  "),
        f"- {info['parameters']} parameters. Size chosen by evaluation: see "
        "`SIZE_SELECTION.md` (`bench/bench_model_size.py`).",
        _para(
            "- Serving: `model.runtime.LstmPredictor` steps all vehicles of a processor tick in "
            "one batched call (numpy core by default; `tf.function` cores with fixed input "
            "signature, optional XLA, bucket padding); `bench/bench_model.py` measures it.",
            indent="  "),
        "",
        "## Settings",
        "",
        "```json",
        json.dumps({"train": info["train_config"], "data": info["data_config"]}, indent=2),
        "```",
        "",
        "## Metrics (metres)",
        "",
        f"Held-out test set ({test['predictions']} predictions), stateful step model run as "
        "the processor runs it:",
        "",
        *_table(test),
        "",
        f"Validation set ({val['predictions']} predictions):",
        "",
        *_table(val),
        "",
    ]
    for split, summary in info.get("extra_tests", {}).items():
        lines += [
            f"Extra held-out set `{split}` ({summary['predictions']} predictions; not part of "
            "the acceptance):",
            "",
            *_table(summary),
            "",
        ]
    lines += [
        "## Acceptance",
        "",
        f"- LSTM RMSE at 4 s / CV RMSE at 4 s = **{acc['ratio_4s']:.3f}** (target <= 0.65)",
        f"- LSTM below CV at every horizon: **{'yes' if acc['below_cv_every_horizon'] else 'no'}"
        "**",
        f"- Passed: **{'yes' if acc['passed'] else 'no'}**",
        "",
        "Plots: `training_curves.png`, `error_by_horizon.png`, `examples.png` (test set).",
        "",
    ]
    path.write_text("\n".join(lines))
    return path
