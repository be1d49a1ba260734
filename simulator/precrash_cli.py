"""``trajstream scenarios``: write the pre-crash scenario library as positions + truth files."""

from __future__ import annotations

import click
import orjson

from trajstream.outputs import OutputFile, refuse_aliases
from trajstream.simulator.precrash import CONFLICTS, SAFE, generate

__all__ = ["scenarios"]

_NAMES = (*CONFLICTS, *SAFE)


@click.command("scenarios", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_path", required=True, metavar="FILE.jsonl",
              envvar="TRAJSTREAM_SCENARIOS_OUT", show_envvar=True,
              help="Positions (the positions contract, sorted by event time).")
@click.option("--truth", "truth_path", required=True, metavar="FILE.jsonl",
              envvar="TRAJSTREAM_SCENARIOS_TRUTH", show_envvar=True,
              help="Truth: one scenario line per scenario, one collision line per contact "
              "(footprint contact time, NHTSA kind, required live lead).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              envvar="TRAJSTREAM_SEED", show_envvar=True,
              help="Random seed; the same seed and options give the same files.")
@click.option("--per-scenario", default=20, show_default=True, type=click.IntRange(min=1),
              envvar="TRAJSTREAM_SCENARIOS_PER_SCENARIO", show_envvar=True,
              help="Random instances of each scenario.")
@click.option("--only", "only", multiple=True, type=click.Choice(_NAMES),
              envvar="TRAJSTREAM_SCENARIOS_ONLY", show_envvar=True,
              show_default="every scenario", help="Scenarios to write (repeatable).")
def scenarios(out_path: str, truth_path: str, seed: int, per_scenario: int,
              only: tuple[str, ...]) -> None:
    """Write the NHTSA pre-crash scenario library: conflicts and safe look-alikes.

    Conflicts: lead vehicle stopped, lead decelerating hard, straight crossing paths, left
    turn across the path, cut-in, opposite-direction drift, three-car pile-up. Safe
    look-alikes: following at 1.5 s headway, queues 2 m apart, smooth stop behind a stopped
    car, side-by-side turns, oncoming traffic in its lane, crossings that miss by 3 s. Each
    instance is randomly placed, rotated and timed, with GPS noise and with or without
    reported speed and heading. Score a run with `trajstream evaluate --truth`.
    """
    refuse_aliases({}, {"--out": out_path, "--truth": truth_path})
    lib = generate(seed, per_scenario, names=only or None)
    for path, records in ((out_path, lib.positions), (truth_path, lib.truth)):
        out = OutputFile(path)
        try:
            out.write(b"".join(orjson.dumps(d) + b"\n" for d in records))
        except BaseException:
            out.discard()
            raise
        out.commit()
    n_conf = sum(1 for e in lib.truth if e["type"] == "collision")
    n_scen = sum(1 for e in lib.truth if e["type"] == "scenario")
    click.echo(f"trajstream: {n_scen} scenarios, {n_conf} collisions, "
               f"{len(lib.positions)} positions", err=True)
