"""The model card and training curves written next to the shipped weights."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from trajstream.model.calibration import GAUSSIAN_WITHIN, RAYLEIGH_MEDIAN
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
    cv4 = summary["models"].get("cv", {}).get("rmse", {}).get(hs[-1])
    lines = [
        "| model | " + " | ".join(f"RMSE {h} s" for h in hs) + " | ADE | FDE | x CV at 4 s |",
        "|---|" + "---:|" * (len(hs) + 3),
    ]
    for name, m in summary["models"].items():
        cells = [f"{m['rmse'].get(h, float('nan')):.3f}" for h in hs]
        ratio = f"{m['rmse'][hs[-1]] / cv4:.2f}" if cv4 else "-"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {m['ade']:.3f} | {m['fde']:.3f} | {ratio} |")
    return lines


def _sigma_table(summary: dict) -> list[str]:
    """The LSTM sigma's calibration against the same predictions' errors (none: [])."""
    cal = summary["models"].get("lstm", {}).get("sigma")
    if not cal:
        return []
    hs = [str(h) for h in HORIZONS_S]
    lines = ["| LSTM sigma | " + " | ".join(f"{h} s" for h in hs) + " | 2-D Gaussian |",
             "|---|" + "---:|" * (len(hs) + 1)]
    for label, key, ideal, fmt in (
            ("median error / sigma", "median_z", f"{RAYLEIGH_MEDIAN:.2f}", "{:.2f}"),
            ("within 1 sigma", "within_1", f"{GAUSSIAN_WITHIN[1]:.0%}", "{:.0%}"),
            ("within 2 sigma", "within_2", f"{GAUSSIAN_WITHIN[2]:.1%}", "{:.1%}")):
        cells = [cal.get(h, {}).get(key) for h in hs]
        lines.append(f"| {label} | " + " | ".join("-" if c is None else fmt.format(c)
                                                  for c in cells) + f" | {ideal} |")
    return ["", *lines]


# The bar at 4 s per kind of held-out traffic (LSTM RMSE / CV RMSE); every source
# must also be below CV at every horizon.
RATIO_BOUNDS: dict[str, float] = {"recorded": 0.85, "sumo": 0.8}


def acceptance(tests: dict[str, dict], kinds: dict[str, str]) -> dict:
    """Per held-out source: LSTM/CV at 4 s, below CV at every horizon, and whether it
    meets its bound (recorded <= 0.85, SUMO <= 0.8, others only below CV)."""
    out: dict = {}
    for source, summary in tests.items():
        models = summary["models"]
        if "lstm" not in models or not summary["predictions"]:
            continue
        lstm, cv = models["lstm"]["rmse"], models["cv"]["rmse"]
        ratio = lstm["4"] / cv["4"]
        every = all(lstm[h] < cv[h] for h in lstm)
        bound = RATIO_BOUNDS.get(kinds.get(source, ""))
        out[source] = {"kind": kinds.get(source, "file"), "ratio_4s": round(ratio, 4),
                       "bound_4s": bound, "below_cv_every_horizon": every,
                       "passed": bool(every and (bound is None or ratio <= bound))}
    out["passed"] = all(v["passed"] for v in out.values())
    return out


_INPUTS_NOTE = {
    "own": "- Inputs `own` (`--inputs`): the vehicle's own track only (no neighbour search). "
    "`--inputs neighbours` adds the vehicles around it (model/neighbours.py).",
    "neighbours": "- Inputs `neighbours` (`--inputs`): the vehicle's own track and the vehicles "
    "around it; the processor takes them from the vehicle's own input partition, so "
    "predictions do not depend on how partitions are assigned to processes (with P "
    "vehicle-keyed partitions a vehicle sees about 1/P of its neighbours; the figures here "
    "are one-partition replays).",
}


def write_model_card(path: Path, info: dict) -> Path:
    """Markdown card: data, settings, metrics per held-out source, acceptance, commands."""
    tests, val = info["tests"], info["val"]
    acc = info["acceptance"]
    net = info["network"]
    kinds = info["kinds"]
    trained_on = sorted({f"{f['source']} ({kinds.get(f['source'], 'file')})"
                         for f in info["files"] if f["split"] == "train"})
    mix = info["data_config"] is not None  # else --train-data/--val-data/--test-data
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
        _para("Trained on: " + ", ".join(trained_on) + ", validated and tested on the "
              "files given (`--train-data`, `--val-data`, `--test-data`) as they are: the "
              "test figures are for held-out traffic only as far as those files share no "
              "vehicle.") if not mix else
        _para("Trained on: " + ", ".join(trained_on) + ". Recorded traffic is split by "
              "recording (`simulator/recorded/split.py`: US-101 recordings numbered a multiple "
              "of 3 and Peachtree recordings 1-3 are held out, so Peachtree recording 4 is "
              "trained on and the Peachtree figure below is for a location the training has "
              "seen, at other times; of the training side's recordings, those numbered 1 mod "
              "6 validate, so no Peachtree validates); SUMO is held out by a network kind and a "
              "seed that training never uses; the built-in simulator by seed. "
              "`PEACHTREE.md`: why an earlier model failed there, the remedies and how they were "
              "chosen, and the figure for a location never trained on."),
        "",
        "## Reproduce",
        "",
        "Training (simulates the built-in and SUMO data, then trains and evaluates):" if mix
        else "Training on those files, then evaluating:",
        "",
        "```",
        info["command"],
        "```",
        "",
        "The held-out tables below, from the files the training wrote (`--data-dir`) and the "
        "recorded files, beside this card's `lstm.npz`:" if mix
        else "The test tables below, beside this card's `lstm.npz`:",
        "",
        "```",
        info["evaluate_command"],
        "```",
        "",
        _para(
            f"Trained in {info['train_seconds'] / 60:.1f} min ({info['epochs_run']} epochs, "
            f"best epoch {info['best_epoch']}) on {info['host']}; the whole command "
            + ("(simulating what `--data-dir` did not hold yet, training, evaluation)" if mix
               else "(reading the files, training, evaluation)")
            + f" took {info['total_seconds'] / 60:.1f} min. "
            f"Code: {info.get('code_version', 'unknown')}"
            + (" (the simulated data depend on the simulators' versions; the same version "
               "and seed give byte-identical files)." if mix else ".")
        ),
        "",
        "## Metrics on held-out traffic (metres)",
        "",
        _para("Stateful step model run as the processor runs it (`trajstream model "
              "evaluate`), constant velocity (CV) and constant turn rate (CTRV) beside it in "
              "the same run; `x CV` is RMSE at 4 s over CV's."),
        "",
    ]
    for source, summary in tests.items():
        a = acc.get(source, {})
        bound = a.get("bound_4s")
        lines += [
            f"**{source}** ({kinds.get(source, 'file')}, {summary['predictions']} predictions"
            + (f"; bound {bound:.2f}x CV at 4 s" if bound else "") + "):",
            "",
            *_table(summary),
            *_sigma_table(summary),
            "",
        ]
    cal = info.get("sigma_calibration")
    lines += [
        f"Validation (pooled, {val['predictions']} predictions; early stopping, the residual "
        "shrink and the sigma scale only):",
        "",
        *_table(val),
        *_sigma_table(val),
        "",
    ]
    shrink = info.get("residual_shrink")
    if shrink:
        def at(values: list[float]) -> str:
            return " / ".join(f"{values[int(round(h / 0.2)) - 1]:.2f}" for h in HORIZONS_S)

        lines += [
            "## Residual shrink",
            "",
            _para(
                "The network's path over constant velocity is multiplied, per point, along "
                "and across the heading, by a factor in [0, 1] fitted on the validation set "
                "to minimise the sum over sources of the error relative to constant "
                "velocity's (`model/calibration.py`; folded into the output scale of "
                "`lstm.npz`): corrections learnt mostly from simulators are only partly "
                "borne out on real roads. Along at 1 / 2 / 3 / 4 s: " + at(shrink["along"])
                + "; across: " + at(shrink["across"]) + "."),
            "",
        ]
    if cal:
        raw = cal["uncalibrated"]
        lines += [
            "## Sigma calibration",
            "",
            _para(
                "The network's 1-sigma per point (meant for the risk stage's overlap "
                "probabilities, which do not read it yet: README, \"Warning quality\") is "
                "multiplied by a per-point scale fitted on the "
                "validation set (each source counting alike) so that 86.5% of the errors "
                "fall within 2 sigma, as for a "
                "2-D Gaussian (`model/calibration.py`; stored in `lstm.npz` as `sigma_scale`, "
                "applied by the predictor). Scale at 1 / 2 / 3 / 4 s: "
                + " / ".join(f"{cal['scale'][int(round(h / 0.2)) - 1]:.2f}" for h in HORIZONS_S)
                + "; before it, validation errors within 2 sigma: "
                + " / ".join(f"{raw[str(h)]['within_2']:.1%}" for h in HORIZONS_S)
                + ", median error / sigma: "
                + " / ".join(f"{raw[str(h)]['median_z']:.2f}" for h in HORIZONS_S)
                + ". The held-out tables above show the calibrated sigma."),
            "",
        ]
    lines += [
        "## Acceptance",
        "",
        "| source | kind | LSTM / CV at 4 s | bound | below CV at 1-4 s | passed |",
        "|---|---|---:|---:|---|---|",
    ]
    for source, a in acc.items():
        if source == "passed":
            continue
        bound = f"{a['bound_4s']:.2f}" if a["bound_4s"] else "-"
        lines.append(f"| {source} | {a['kind']} | {a['ratio_4s']:.3f} | {bound} | "
                     f"{'yes' if a['below_cv_every_horizon'] else 'no'} | "
                     f"{'yes' if a['passed'] else 'no'} |")
    lines += [
        "",
        f"All passed: **{'yes' if acc['passed'] else 'no'}**",
        "",
        "## Data",
        "",
        _para(
            "Positions files in the positions contract, replayed exactly as the processor "
            "sees them (a unit test checks it against `stream.engine.Engine`): codec "
            "validation, the engine's admission rules, event-time order, batched sub-steps "
            "per tick, the same `KinematicsTracker`, state reset after a 5 s gap. Targets: "
            "the vehicle's later observed fixes interpolated at ts + k * 0.2 s; predictions "
            "whose 4 s future has a gap > 0.6 s are left out of loss and metrics."
            + (f" Training windows of recorded traffic count {info['recorded_weight']}x."
               if mix else "")
        ),
        "",
        "| split | source | recordings | file (command) | records | scored |",
        "|---|---|---|---|---:|---:|",
    ]
    for f in info["files"]:
        what = f"`{f['command']}`" if f["command"] != "-" else f"`{f['file']}`"
        lines.append(f"| {f['split']} | {f['source']} | {f['recordings']} | {what} | "
                     f"{f['records']} | {f['scored']} |")
    lines += [
        "",
        "## Network",
        "",
        _para(
            f"- Inputs per fix ({len(info['features'])}): {', '.join(info['features'])}; "
            "everything in the vehicle's current heading frame (translation and rotation "
            "invariant), `dt` explicit (irregular sampling). Normalised with training-set "
            "mean/std.", indent="  "),
        _para(
            f"- `LSTMCell({net['units']})` (state per vehicle = h and c = {2 * net['units']} "
            f"floats) -> Dense({net['head_units']}, relu) over [h, features] -> "
            f"Dense({3 * net['points']}): {net['points']} x/y residuals over constant velocity "
            f"plus {net['points']} log-sigmas (a 1-sigma position uncertainty per point, "
            "trained with a Gaussian NLL on detached errors so it does not bias the mean).",
            indent="  "),
        _para(_INPUTS_NOTE[info["train_config"].get("inputs", "neighbours")], indent="  "),
        f"- {info['parameters']} parameters; "
        + ("the size was chosen on built-in data only (`SIZE_SELECTION.md`) and not selected "
           "again for the mix." if (net["units"], net["head_units"]) == (48, 64)
           else "the size set by `--units` and `--head-units`."),
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
        "Plots: `training_curves.png`, `error_by_horizon.png` (a panel per held-out source), "
        "`examples.png`.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path
