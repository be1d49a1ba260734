"""``trajstream model train|evaluate``."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import cast

import click

from trajstream.cli import WEIGHTS_ENV_HELP, WEIGHTS_ENVVARS, weights_envvars_agree
from trajstream.model import PREDICTORS, SHIPPED_WEIGHTS
from trajstream.model.data import Side
from trajstream.model.predictors import PathSpec


def _opt(*names: str, env: str, **kw):  # noqa: ANN003, ANN202 - thin click.option wrapper
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


@click.group()
def model() -> None:
    """Train and evaluate the LSTM trajectory model."""


@model.command()
@_opt("--seed", env="MODEL_SEED", default=7, type=int,
      help="Seed of everything: simulated data (train/val/test seeds derive from it) and "
      "training.")
@_opt("--out-dir", env="MODEL_OUT_DIR", default="model-out",
      type=click.Path(file_okay=False, path_type=Path),
      help="Where lstm.npz, MODEL_CARD.md, metrics.json and the plots are written (the "
      "processor takes them with --weights DIR/lstm.npz; the shipped ones are in "
      f"{SHIPPED_WEIGHTS.parent}, replaced only when named here).")
@_opt("--data-dir", env="MODEL_DATA_DIR", default=None,
      type=click.Path(file_okay=False, path_type=Path),
      help="Keep (and reuse) the simulated JSONL files here; a temporary directory if unset.")
@_opt("--train-files", env="MODEL_TRAIN_FILES", default=4, type=click.IntRange(1, 64),
      help="Simulated training files, each with its own seed.")
@_opt("--vehicles", env="MODEL_VEHICLES", default=80, type=click.IntRange(1),
      help="Vehicles per simulated training file.")
@_opt("--val-vehicles", env="MODEL_VAL_VEHICLES", default=80, type=click.IntRange(1),
      help="Vehicles in the validation file.")
@_opt("--test-vehicles", env="MODEL_TEST_VEHICLES", default=100, type=click.IntRange(1),
      help="Vehicles in each held-out test file.")
@_opt("--duration-s", env="MODEL_DURATION_S", default=250.0, type=click.FloatRange(10.0),
      help="Simulated seconds per training and validation file.")
@_opt("--test-duration-s", env="MODEL_TEST_DURATION_S", default=300.0,
      type=click.FloatRange(10.0), help="Simulated seconds per test file.")
@_opt("--recorded", env="MODEL_RECORDED", multiple=True,
      type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE.jsonl[.gz]",
      help="Recorded traffic with CommonRoad scenario ids (USA_US101-10_1_T-1/484, as "
      "`trajstream data import --format commonroad` names them), split by recording: the "
      "held-out recordings (simulator/recorded/split.py) are only evaluated on. Other ids "
      "(`--format ngsim`, your own) cannot be split and are refused: split such traffic "
      "yourself into --train-data/--val-data/--test-data. Repeatable.")
@_opt("--recorded-weight", env="MODEL_RECORDED_WEIGHT", default=6, type=click.IntRange(1, 20),
      help="Times each recorded training window counts (recorded vehicles are few and short).")
@_opt("--sumo-train", env="MODEL_SUMO_TRAIN", multiple=True, default=("grid:11", "spider:12"),
      metavar="KIND:SEED", help="SUMO runs to train on: generated city kind and seed "
      "(repeatable; needs trajstream[sumo]).")
@_opt("--sumo-val", env="MODEL_SUMO_VAL", multiple=True, default=("grid:13",),
      metavar="KIND:SEED", help="SUMO runs for validation (early stopping).")
@_opt("--sumo-test", env="MODEL_SUMO_TEST", multiple=True, default=("random:14",),
      metavar="KIND:SEED", help="Held-out SUMO runs: a kind and a seed no train/val run uses.")
@_opt("--sumo-vehicles", env="MODEL_SUMO_VEHICLES", default=150, type=click.IntRange(1),
      help="Vehicles per SUMO run.")
@_opt("--sumo-duration-s", env="MODEL_SUMO_DURATION_S", default=200.0,
      type=click.FloatRange(10.0), help="Simulated seconds per SUMO run (after its warm-up).")
@_opt("--train-data", env="MODEL_TRAIN_DATA", multiple=True,
      type=click.Path(exists=True, dir_okay=False, path_type=Path),
      help="Train on these positions files instead of the mix (simulated and --recorded "
      "traffic; repeatable; needs --val-data and --test-data).")
@_opt("--val-data", env="MODEL_VAL_DATA", multiple=True,
      type=click.Path(exists=True, dir_okay=False, path_type=Path),
      help="Validation positions files (with --train-data): early stopping, the residual "
      "shrink and the sigma calibration are fitted on them, so a file that repeats a "
      "training record is refused.")
@_opt("--test-data", env="MODEL_TEST_DATA", multiple=True,
      type=click.Path(exists=True, dir_okay=False, path_type=Path),
      help="Test positions files (with --train-data): held-out traffic, so a file that "
      "repeats a training or validation record is refused.")
@_opt("--inputs", env="MODEL_INPUTS", default="neighbours",
      type=click.Choice(["own", "neighbours"]),
      help="Network inputs. own: the vehicle's own track only, so its prediction depends on "
      "its own stream alone and is the same however vehicles are split across partitions, "
      "processes and stages. neighbours: also the leader and side-lane vehicles the "
      "processing instance holds (a vehicle's prediction then changes with which other "
      "vehicles share its instance; slower in dense traffic).")
@_opt("--mirror", env="MODEL_MIRROR", default=0.0, type=click.FloatRange(0.0, 1.0),
      help="Share of training windows reflected left-right (a seeded random choice), so "
      "the network learns no turning side from the training cities' layouts.")
@_opt("--units", env="MODEL_UNITS", default=48, type=click.IntRange(4, 512),
      help="LSTM units (the per-vehicle state is 2 x units floats).")
@_opt("--head-units", env="MODEL_HEAD_UNITS", default=64, type=click.IntRange(4, 1024),
      help="Hidden units of the path head.")
@_opt("--epochs", env="MODEL_EPOCHS", default=40, type=click.IntRange(1),
      help="Maximum epochs (early stopping on validation RMSE usually ends sooner).")
@_opt("--patience", env="MODEL_PATIENCE", default=5, type=click.IntRange(1),
      help="Epochs without validation improvement before stopping.")
@_opt("--batch-size", env="MODEL_BATCH_SIZE", default=64, type=click.IntRange(1),
      help="Windows per training batch.")
@_opt("--learning-rate", env="MODEL_LEARNING_RATE", default=2e-3,
      type=click.FloatRange(0.0, min_open=True), help="Adam learning rate.")
@_opt("--seq-len", env="MODEL_SEQ_LEN", default=64, type=click.IntRange(8),
      help="Fixes per training window.")
@_opt("--burn-in", env="MODEL_BURN_IN", default=16, type=click.IntRange(0),
      help="Leading fixes of a mid-track window left out of the loss (state warm-up).")
def train(
    seed: int, out_dir: Path, data_dir: Path | None, train_files: int, vehicles: int,
    val_vehicles: int, test_vehicles: int, duration_s: float, test_duration_s: float,
    recorded: tuple[Path, ...], recorded_weight: int, sumo_train: tuple[str, ...],
    sumo_val: tuple[str, ...], sumo_test: tuple[str, ...], sumo_vehicles: int,
    sumo_duration_s: float, train_data: tuple[Path, ...],
    val_data: tuple[Path, ...], test_data: tuple[Path, ...], inputs: str, units: int,
    head_units: int, epochs: int, patience: int, batch_size: int, learning_rate: float,
    seq_len: int, burn_in: int, mirror: float,
) -> None:
    """Train the LSTM on a mix and write weights, model card and plots.

    The mix: the built-in simulator (train/val/test seeds from --seed), SUMO runs on several
    generated cities (--sumo-*) and recorded traffic (--recorded, split by recording).
    Prints the held-out metrics per source as JSON (the schema of `evaluate --json`).
    """
    from trajstream.model.train import DataConfig, TrainConfig, run_training

    if burn_in >= seq_len:
        raise click.BadParameter(f"must be below --seq-len ({seq_len}), got {burn_in}",
                                 param_hint="--burn-in")
    given = [bool(train_data), bool(val_data), bool(test_data)]
    if any(given) and not all(given):
        raise click.UsageError("--train-data, --val-data and --test-data go together")
    if any(given) and recorded:  # the files replace the whole mix, recorded traffic too
        raise click.UsageError("--recorded is part of the simulated mix, which --train-data "
                               "replaces: give recorded traffic as --train-data/--val-data/"
                               "--test-data files")
    cfg = TrainConfig(seed=seed, units=units, head_units=head_units, seq_len=seq_len,
                      burn_in=burn_in, batch_size=batch_size, epochs=epochs, patience=patience,
                      learning_rate=learning_rate, inputs=inputs, mirror=mirror)
    data = DataConfig(seed=seed, train_files=train_files, vehicles=vehicles,
                      val_vehicles=val_vehicles, test_vehicles=test_vehicles,
                      duration_s=duration_s, test_duration_s=test_duration_s,
                      sumo_train=sumo_train, sumo_val=sumo_val, sumo_test=sumo_test,
                      sumo_vehicles=sumo_vehicles, sumo_duration_s=sumo_duration_s)
    if not any(given):
        data.check()
    _writable_dir(out_dir, "--out-dir")  # before training, not after it
    files = None
    if all(given):
        files = {"train": list(train_data), "val": list(val_data), "test": list(test_data)}
    ctx = click.get_current_context()
    command = _reproducing_command(ctx)
    with tempfile.TemporaryDirectory(prefix="trajstream-data-") as tmp:
        info = run_training(cfg, data, out_dir, data_dir=data_dir or Path(tmp), files=files,
                            recorded=recorded, recorded_weight=recorded_weight,
                            command=command.strip())
    click.echo(json.dumps(info["tests"]))


def _writable_dir(path: Path, option: str) -> None:
    """Create ``path`` now: a directory that cannot be written would fail only at the end,
    after minutes of work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {path}: {exc.strerror or exc}",
                                 param_hint=option) from exc
    if not os.access(path, os.W_OK):
        raise click.BadParameter(f"{path} is not writable", param_hint=option)


def _reproducing_command(ctx: click.Context) -> str:
    """Every setting that changes the result, spelled out (not --out-dir/--data-dir)."""
    parts = ["trajstream", "model", "train"]
    skip = {"out_dir", "data_dir"}
    if ctx.params.get("train_data"):
        skip |= {"train_files", "vehicles", "val_vehicles", "test_vehicles", "duration_s",
                 "test_duration_s", "recorded", "recorded_weight", "sumo_train", "sumo_val",
                 "sumo_test", "sumo_vehicles", "sumo_duration_s"}
    for param in ctx.command.params:
        if param.name in skip or not isinstance(param, click.Option):
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        for v in value if param.multiple else [value]:
            parts += [flag, Path(v).name if isinstance(v, Path) else str(v)]
    return " ".join(shlex.quote(p) for p in parts)


@model.command()
@_opt("--data", env="MODEL_EVAL_DATA", required=True, multiple=True,
      type=click.Path(exists=True, dir_okay=False, path_type=Path),
      metavar="FILE.jsonl[.gz]",
      help="Positions file (JSONL, the vehicle-positions contract; plain or gzip). "
      "Repeatable: one table per file, named after it (files with the same name "
      "are pooled).")
@_opt("--split", env="MODEL_EVAL_SPLIT", default="all",
      type=click.Choice(["all", "held-out", "train"]),
      help="Recorded traffic with CommonRoad scenario ids (USA_US101-10_1_T-1/484): only the "
      "held-out recordings or only the training ones (the rule in "
      "simulator/recorded/split.py). Other ids (simulated, `data import --format ngsim`) are "
      "kept whole: such traffic is held out by file.")
@click.option("--weights", envvar=list(WEIGHTS_ENVVARS), show_envvar=True, show_default=True,
              default=(str(SHIPPED_WEIGHTS),), multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              callback=weights_envvars_agree,
              help="LSTM weights (.npz). Repeatable: several LSTMs side by side in the same "
              "run, named by their inputs (lstm-own, lstm-neighbours); the variable takes "
              "space-separated files. " + WEIGHTS_ENV_HELP)
@_opt("--models", env="MODEL_EVAL_MODELS", default=",".join(PREDICTORS),
      help="Comma-separated predictors to compare.")
@_opt("--plots", env="MODEL_PLOTS_DIR", default=None,
      type=click.Path(file_okay=False, path_type=Path),
      help="Write error_by_horizon.png (a panel per source) and examples.png here.")
@_opt("--examples", env="MODEL_EXAMPLES", default=6, type=click.IntRange(0, 24),
      help="Example trajectories in examples.png.")
@_opt("--examples-seed", env="MODEL_EXAMPLES_SEED", default=0, type=int,
      help="Seed for picking the example trajectories.")
@_opt("--json", "as_json", env="MODEL_EVAL_JSON", is_flag=True, default=False,
      help="Print one JSON object {source: {models, predictions}} instead of tables.")
def evaluate(data: tuple[Path, ...], split: str, weights: tuple[Path, ...], models: str,
             plots: Path | None, examples: int, examples_seed: int, as_json: bool) -> None:
    """Run the stateful step model over positions files as the processor does and print,
    per file, RMSE at 1-4 s, ADE and FDE (metres) of every model, with the ratio to
    constant velocity at 4 s.
    """
    from trajstream.model import load_predictor
    from trajstream.model.evaluate import evaluate_sources, format_table, write_plots

    names = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in names if m not in PREDICTORS]
    if bad or not names:
        raise click.BadParameter(
            f"expected a comma-separated subset of {','.join(PREDICTORS)}, got {models!r}",
            param_hint="--models")
    if plots is not None:  # before the evaluation, not after it
        _writable_dir(plots, "--plots")
    spec = PathSpec()
    preds = []
    for n in names:
        if n != "lstm":
            preds.append(load_predictor(n, spec))
            continue
        lstms = [load_predictor(n, spec, weights=w) for w in weights]
        if len(lstms) > 1:
            _name_by_inputs(lstms)
        preds += lstms
    evs = evaluate_sources(data, preds, side=cast(Side, split),
                           n_examples=examples if plots else 0, seed=examples_seed,
                           progress=sys.stderr.isatty())
    summaries = {name: ev.summary() for name, ev in evs.items()}
    if as_json:
        click.echo(json.dumps(summaries))
    else:
        for name, summary in summaries.items():
            click.echo("\n".join(format_table(name, summary)) + "\n")
    if plots is not None:  # after the figures: a plot failing at the end loses only itself
        write_plots(evs, plots)


def _name_by_inputs(lstms: list) -> None:
    """Several LSTMs in one table: lstm-own / lstm-neighbours (numbered when alike)."""
    labels = ["lstm-" + ("neighbours" if p.uses_neighbours else "own") for p in lstms]
    for i, (p, label) in enumerate(zip(lstms, labels, strict=True)):
        p.name = label if labels.count(label) == 1 else f"{label}-{i + 1}"
