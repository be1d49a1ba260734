"""The SUMO engine's settings (the road network and the demand), validated at start-up.

What a run shares with the built-in engine (vehicles, duration, rate, seed, reckless
fraction, sensor effects, start time) stays in :class:`~trajstream.simulator.SimConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from trajstream.errors import ConfigError

NetKind = Literal["grid", "spider", "random"]
NET_KINDS: tuple[str, ...] = get_args(NetKind)


@dataclass(frozen=True)
class SumoConfig:
    """Network and demand of a SUMO run; with the run's seed it decides the output bytes.

    The network is the user's (``net_file``, or ``osm_file`` converted by netconvert) or one
    that netgenerate builds: ``net_kind`` grid (``net_size`` junctions per side, ``block_m``
    apart), spider (``net_size`` rings ``block_m`` apart on 8 arms) or random (about
    ``net_size`` junctions); ``net_size`` 0 sizes it for the number of vehicles. Signals get
    an all-red clearance of ``all_red_s`` (without it SUMO lets left turners still in the
    junction be hit by the next phase, even among careful drivers).

    Vehicles that crash stop for ``crash_hold_s`` and are then removed; vehicles stuck in a
    jam for ``jam_timeout_s`` are removed too (never teleported: positions never jump).
    ``warmup_s`` of traffic run before the first published tick. ``work_dir`` keeps the
    generated files (network, routes, vehicle types) instead of a temporary folder.
    """

    net_kind: NetKind = "grid"
    net_size: int = 0
    lanes: int = 2
    block_m: float = 150.0
    speed_limit_mps: float = 13.89
    net_file: Path | None = None
    osm_file: Path | None = None
    work_dir: Path | None = None
    warmup_s: float = 60.0
    crash_hold_s: float = 5.0
    jam_timeout_s: float = 180.0
    all_red_s: float = 3.0
    lane_change_s: float = 3.0
    route_pool: int = 2000

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, value: object) -> ConfigError:
            return ConfigError(f"{name} must be {expected}, got {value!r}")

        if self.net_kind not in NET_KINDS:
            raise bad("net_kind", " or ".join(NET_KINDS), self.net_kind)
        if not 0 <= self.net_size <= 200:
            raise bad("net_size", "0 (auto) or 1..200", self.net_size)
        if not 1 <= self.lanes <= 4:
            raise bad("lanes", "1..4", self.lanes)
        if self.net_file is not None and self.osm_file is not None:
            raise ConfigError("give a SUMO network or an OpenStreetMap file, not both")
        for name in ("net_file", "osm_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise bad(name, "an existing file", str(path))
        limits = {"block_m": (30.0, 2000.0), "speed_limit_mps": (1.0, 60.0),
                  "warmup_s": (0.0, 3600.0), "crash_hold_s": (0.0, 600.0),
                  "jam_timeout_s": (10.0, 3600.0), "all_red_s": (0.0, 10.0),
                  "lane_change_s": (0.0, 10.0)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise bad(name, f"between {lo:g} and {hi:g}", value)
        if not 10 <= self.route_pool <= 1_000_000:
            raise bad("route_pool", "10..1000000", self.route_pool)

    @property
    def generated(self) -> bool:
        """True when netgenerate builds the network (no file of the user's)."""
        return self.net_file is None and self.osm_file is None
