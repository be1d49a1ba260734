"""``trajstream data import``: recorded traffic from researchers' formats as a positions file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from trajstream.outputs import refuse_aliases
from trajstream.simulator.publish import JsonlSink, OutputClosed, Progress
from trajstream.simulator.recorded.commonroad import (
    DEFAULT_SLOT_S,
    DEFAULT_START_TS,
    read_commonroad,
)
from trajstream.simulator.recorded.ngsim import MIN_TRAVEL_M, Units, read_ngsim
from trajstream.simulator.recorded.records import ImportFailed, Positions, message_lines

_FORMAT_OPTIONS = {"commonroad": ("start_ts", "slot_s"), "ngsim": ("units",)}
_WRITE_BATCH = 10_000


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Recorded traffic: bring researchers' trajectory data sets in as positions files."""


@data.command("import")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_opt("--format", "fmt", env="IMPORT_FORMAT", required=True,
      type=click.Choice(["commonroad", "ngsim"]),
      help="commonroad: CommonRoad scenario XML (dynamic obstacles); ngsim: NGSIM vehicle "
           "trajectory CSV or text files.")
@_opt("--out", env="IMPORT_OUT", required=True,
      type=click.Path(dir_okay=False, allow_dash=True),
      help="Positions JSONL file to write, sorted by event time ('-' for stdout).")
@_opt("--units", env="IMPORT_UNITS", default="feet", type=click.Choice(["feet", "metres"]),
      help="NGSIM: unit of positions, sizes and speeds in the files (the originals are in "
           "feet; some re-exports are metric). A wrong choice is detected from the vehicle "
           "sizes.")
@_opt("--start-ts", env="IMPORT_START_TS", default=DEFAULT_START_TS,
      type=click.FloatRange(min=0.0),
      help="CommonRoad: event time of the first scenario's time step 0 (s since the epoch; "
           "the default is 2026-01-01T00:00:00Z).")
@_opt("--slot-s", env="IMPORT_SLOT_S", default=DEFAULT_SLOT_S,
      type=click.FloatRange(min=0.0, min_open=True),
      help="CommonRoad: event-time window of each scenario (s): the k-th INPUT (k = 0, 1, "
           "...) starts at --start-ts + k x this, so scenarios never meet in time.")
def import_(inputs: tuple[Path, ...], fmt: str, out: str, units: str, start_ts: float,
            slot_s: float) -> None:
    """Convert recorded trajectories to the positions contract (one JSON object per line).

    \b
    CommonRoad (format 2020a): every dynamic obstacle's states (centre, orientation,
      velocity, time step x timeStepSize) with its rectangle's length and width; vehicles
      are named <scenario>/<obstacle id>.
    NGSIM (US-101, I-80, Lankershim, Peachtree; headed CSV or the original text files):
      feet to metres, milliseconds to seconds, the front bumper moved back to the centre,
      a heading from the past motion (NGSIM has none), the recorded speed; vehicles are
      named <Location or file name>/<Vehicle_ID>, duplicate rows are dropped.

    Then `trajstream replay FILE` publishes the file to Kafka, or `trajstream process
    --input FILE` runs the processor on it.
    """
    ctx = click.get_current_context()
    for other, names in _FORMAT_OPTIONS.items():
        for name in names:
            given = ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
            if other != fmt and given:
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(f"{flag} applies to --format {other} only")
    refuse_aliases({f"INPUT {n + 1}": p for n, p in enumerate(inputs)}, {"--out": out})
    progress = Progress("import: read")
    try:
        if fmt == "commonroad":
            positions, stateless = read_commonroad(list(inputs), start_ts=start_ts,
                                                   slot_s=slot_s)
            detail = _count(len(inputs), "scenario")
            if stateless:
                detail += f"; {_count(stateless, 'obstacle')} without states left out"
        else:
            ngsim = read_ngsim(list(inputs), units=cast(Units, units),
                               progress=lambda rows: progress.update(rows))
            positions = ngsim.positions
            detail = (f"{_count(ngsim.rows, 'row')}; "
                      f"{_count(ngsim.duplicates, 'duplicate row')} dropped")
            if ngsim.standing:
                detail += (f"; {_count(ngsim.standing, 'vehicle')} never moved "
                           f"{MIN_TRAVEL_M:g} m, taken to face along the road")
    finally:
        progress.close()
    if not len(positions):  # an empty output would only be refused by the next command
        raise ImportFailed(f"no positions to write ({detail})")
    written = write_positions(positions, out)
    if written is not None:
        click.echo(f"trajstream data import: wrote {written:,} positions of "
                   f"{positions.vehicles:,} vehicles ({detail}) to {out}", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def write_positions(positions: Positions, out: str | Path) -> int | None:
    """Writes the file; returns how many lines, None when stdout's reader went away."""
    sink = JsonlSink(out)
    progress = Progress("import: write")
    written = 0
    try:
        batch: list[tuple[bytes, bytes]] = []
        for line in message_lines(positions):
            batch.append((b"", line))
            if len(batch) == _WRITE_BATCH:
                sink.write(batch)
                written += len(batch)
                progress.update(len(batch))
                batch = []
        sink.write(batch)
        written += len(batch)
        sink.close()
    except OutputClosed:
        return None
    except BaseException:
        sink.abort()
        raise
    finally:
        progress.close()
    return written
