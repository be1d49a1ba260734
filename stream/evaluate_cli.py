"""``trajstream evaluate``: score an alerts file against the true motion and collisions."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from trajstream.contracts import ALERT_REQUIRED
from trajstream.errors import TrajstreamError
from trajstream.stream.config import ENGINE_DEFAULTS

__all__ = ["evaluate"]

_NON_NEG = click.FloatRange(min=0.0)


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


def _read_jsonl(path: str | None, what: str) -> list[dict[str, Any]]:
    from trajstream.stream.evaluation.tracks import read_lines

    if path is None:
        return []
    out = []
    for n, line in enumerate(read_lines(path), 1):
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TrajstreamError(f"{path}:{n}: not a JSON {what} line ({exc})") from None
        if not isinstance(d, dict):
            raise TrajstreamError(f"{path}:{n}: a {what} line must be a JSON object")
        out.append(d)
    return out


# a file named on the command line that is not there: a usage error (exit 2), as --input
_FILE = click.Path(exists=True, dir_okay=False)


def _plot_formats() -> list[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def _check_plot(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse at start-up a --plot that could only fail after the whole evaluation: a format
    matplotlib cannot write (it is named by the extension) or a directory that is not there."""
    if not value:
        return None
    path = Path(value)
    ext = path.suffix.lower().lstrip(".")
    formats = _plot_formats()
    if ext not in formats:
        what = f"'.{ext}' is not an image format" if ext else "no extension names the format"
        raise click.BadParameter(f"{value}: {what} (one of {', '.join(formats)})")
    where = path.parent
    if not where.is_dir():
        raise click.BadParameter(f"{value}: directory {where} does not exist")
    if path.is_dir() or not os.access(where, os.W_OK):
        why = "is a directory" if path.is_dir() else f"directory {where} is not writable"
        raise click.BadParameter(f"{value}: {why}")
    return value


def _write_plot(rows: Mapping[str, Any], path: str, min_lead_s: float) -> None:
    """The plot comes after the figures are printed, so a failure here loses nothing but it."""
    from trajstream.stream.evaluation.report import plot_leads

    try:
        plot_leads(rows, path, min_lead_s)
    except OSError as exc:
        raise TrajstreamError(f"--plot {path}: {exc.strerror or exc}") from None


def _check_alerts(alerts: list[dict[str, Any]], path: str) -> None:
    for n, a in enumerate(alerts, 1):
        missing = [f for f in ALERT_REQUIRED if f not in a]
        if missing:
            raise TrajstreamError(f"{path}:{n}: an alert needs {', '.join(missing)}")


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@_opt("--positions", "positions_path", env="EVAL_POSITIONS", required=True,
      type=_FILE, metavar="FILE.jsonl[.gz]",
      help="The positions the alerts were computed from (the true motion: footprints, "
      "vehicle-hours, and the baseline's input).")
@_opt("--alerts", "alerts_path", env="EVAL_ALERTS", required=True, type=_FILE,
      metavar="FILE.jsonl",
      help="Alerts to score, one alert message per line (`trajstream process --alerts-out`).")
@_opt("--truth", "truth_path", env="EVAL_TRUTH", default=None, type=_FILE,
      metavar="FILE.jsonl",
      help="Ground truth: collision events (`trajstream simulate --truth`, the scenario "
      "library), optionally with `kind` and `required_lead_s`, and scenario lines. Without "
      "it the traffic is taken as collision-free (recorded roads).")
@_opt("--tick-lateness-s", env="TICK_LATENESS_S", default=ENGINE_DEFAULTS.tick_lateness_s,
      type=_NON_NEG,
      help="The processor's --tick-lateness-s. An alert reaches subscribers once its tick is "
      "out: the processor's own admission is run over --positions in their order (as a live "
      "feed delivers them), and a tick is out once every vehicle due in it has reported, or "
      "at the latest with a record this far past it.")
@_opt("--processing-s", env="EVAL_PROCESSING_S", default=0.15, type=_NON_NEG,
      help="Delay of batching and processing added to every alert (the default micro-batch "
      "wait of 0.1 s plus a processing time).")
@_opt("--min-lead-s", env="EVAL_MIN_LEAD_S", default=1.0, type=_NON_NEG,
      help="Live lead a collision must be alerted with to count as caught (a collision whose "
      "truth names a required_lead_s is also scored at that lead).")
@_opt("--min-history-s", env="EVAL_MIN_HISTORY_S", default=3.0, type=_NON_NEG,
      help="A collision counts only when both vehicles were observed this long before contact.")
@_opt("--horizon-s", env="EVAL_HORIZON_S", default=4.0, type=_NON_NEG,
      help="An alert is justified when the pair's true footprints come within --justified-gap-m "
      "within this time after it.")
@_opt("--justified-gap-m", env="EVAL_JUSTIFIED_GAP_M", default=1.0, type=_NON_NEG,
      help="Gap between true footprints that justifies an alert.")
@_opt("--baseline/--no-baseline", env="EVAL_BASELINE", default=True,
      help="Also run the textbook constant-velocity TTC warner (TTC <= 3 s) on the positions "
      "and score it the same way.")
@_opt("--plot", "plot_path", env="EVAL_PLOT", default=None, metavar="FILE.png",
      callback=_check_plot,
      help="Write a plot of the live lead times (share of collisions alerted at least so early) "
      "after printing the figures; the extension names the format (png, svg, pdf, ...).")
@_opt("--json", "as_json", env="EVAL_JSON", is_flag=True, default=False,
      help="Print every figure as one JSON object instead of the table.")
def evaluate(positions_path: str, alerts_path: str, truth_path: str | None,
             tick_lateness_s: float, processing_s: float, min_lead_s: float,
             min_history_s: float, horizon_s: float, justified_gap_m: float, baseline: bool,
             plot_path: str | None, as_json: bool) -> None:
    """Score alerts against what really happened, beside the textbook baseline.

    Live lead: time from when a subscriber receives an alert (when the positions, in file
    order, complete its tick as the processor releases ticks, plus --processing-s) to the
    contact. Reports recall of collisions with at least --min-lead-s live lead (and at each
    collision's required lead) per conflict kind, the lead-time distribution, precision
    (alerts whose pair really came within --justified-gap-m within --horizon-s), warning
    and critical alerts per vehicle-hour, and for a scenario library the share of safe
    scenarios with a critical alert.
    """
    from trajstream.stream.evaluation import (
        ReleaseClock,
        ScoreConfig,
        Tracks,
        cv_ttc_alerts,
        read_positions,
        score,
    )
    from trajstream.stream.evaluation.report import table
    from trajstream.stream.evaluation.scoring import live_delay

    cfg = ScoreConfig(tick_lateness_s=tick_lateness_s, processing_s=processing_s,
                      min_lead_s=min_lead_s, min_history_s=min_history_s, horizon_s=horizon_s,
                      justified_gap_m=justified_gap_m)
    positions = read_positions(positions_path)
    clock = ReleaseClock(positions, replace(ENGINE_DEFAULTS, tick_lateness_s=tick_lateness_s))
    tracks = Tracks.from_batch(positions)
    alerts = _read_jsonl(alerts_path, "alert")
    _check_alerts(alerts, alerts_path)
    truth = _read_jsonl(truth_path, "truth")
    rows = {"trajstream": score(alerts, truth, tracks, cfg, clock)}
    if baseline:
        rows["cv-ttc"] = score(cv_ttc_alerts(tracks), truth, tracks, cfg, clock)
    delays = [live_delay(float(a["ts"]), cfg, clock) for a in alerts]
    delay = float(np.median(delays)) if delays else cfg.tick_lateness_s + cfg.processing_s
    if as_json:
        doc = {"positions": positions_path, "alerts": alerts_path, "truth": truth_path,
               "live_delay_s": delay, "tick_lateness_s": tick_lateness_s,
               "processing_s": processing_s, "min_lead_s": min_lead_s,
               "vehicles": len(tracks), "rows": rows}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        hours = rows["trajstream"]["vehicle_hours"]
        click.echo(f"{len(tracks)} vehicles, {hours:.2f} vehicle-hours; live lead = contact - "
                   f"(alert ts + release delay + {cfg.processing_s:.2f} s processing; median "
                   f"{delay:.2f} s in all)")
        click.echo(table(rows, min_lead_s))
    if plot_path:
        sys.stdout.flush()
        _write_plot(rows, plot_path, min_lead_s)
