"""The ``trajstream simulate`` options of the SUMO engine and the config they make."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from trajstream.simulator.sumo.config import NET_KINDS, SumoConfig

_DEFAULTS = SumoConfig()
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

# option name -> parameter name, for the "needs --engine sumo" check
SUMO_ONLY = {"--net-kind": "net_kind", "--net-size": "net_size", "--block": "block",
             "--net": "net", "--osm": "osm", "--sumo-dir": "sumo_dir",
             "--sumo-warmup": "sumo_warmup"}


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


def sumo_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the SUMO engine's options (used only with ``--engine sumo``)."""
    opts = [
        _opt("--net-kind", env="SUMO_NET_KIND", default=_DEFAULTS.net_kind,
             type=click.Choice(NET_KINDS),
             help="[sumo] City that netgenerate builds: a grid of signalised junctions, a "
                  "spider web (rings and 8 spokes) or a random network (signals at busy "
                  "junctions, priority rules elsewhere)."),
        _opt("--net-size", env="SUMO_NET_SIZE", default=_DEFAULTS.net_size,
             type=click.IntRange(0, 200),
             help="[sumo] Junctions per side (grid), rings (spider) or junctions (random); "
                  "0 sizes the city for --vehicles (about 15 per lane-km)."),
        _opt("--block", env="SUMO_BLOCK_M", default=_DEFAULTS.block_m,
             type=click.FloatRange(30.0, 2000.0),
             help="[sumo] Metres between junctions of a generated city (random networks: "
                  "the typical road length)."),
        _opt("--net", env="SUMO_NET", default=None, type=_FILE, metavar="FILE.net.xml",
             help="[sumo] Drive on this SUMO network instead of a generated city."),
        _opt("--osm", env="SUMO_OSM", default=None, type=_FILE, metavar="FILE.osm",
             help="[sumo] Drive on this OpenStreetMap extract (converted with netconvert: "
                  "car roads, guessed signals)."),
        _opt("--sumo-dir", env="SUMO_DIR", default=None,
             type=click.Path(file_okay=False, path_type=Path),
             help="[sumo] Keep the network, routes and vehicle types in this folder "
                  "[default: a temporary folder, removed at the end]."),
        _opt("--sumo-warmup", env="SUMO_WARMUP_S", default=_DEFAULTS.warmup_s,
             type=click.FloatRange(0.0, 3600.0),
             help="[sumo] Simulated seconds before the first published tick (the city fills "
                  "up, queues form)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def sumo_config(kw: dict[str, Any]) -> SumoConfig:
    """The engine's config from the parsed options (raises ConfigError when invalid)."""
    return SumoConfig(net_kind=kw["net_kind"], net_size=kw["net_size"], lanes=kw["lanes"],
                      block_m=kw["block"], net_file=kw["net"], osm_file=kw["osm"],
                      work_dir=kw["sumo_dir"], warmup_s=kw["sumo_warmup"])
