"""The simulator's one configuration object, validated at start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trajstream.errors import ConfigError
from trajstream.simulator.world import WorldConfig, lane_km

DEFAULT_START_TS = 1764547200.0  # 2025-12-01T00:00:00Z
_TARGET_DENSITY_PER_LANE_KM = 20.0
# Largest automatic map (200 x 200 junctions holds about 960,000 vehicles): a cap that
# large fleets hit would pack them denser, and a benchmark across fleet sizes would then
# compare different traffic.
_MAX_GRID_N = 200


@dataclass(frozen=True)
class SimConfig:
    """Everything that decides a run; the same config (and seed) gives byte-identical output.

    ``vehicles`` is the target number present: vehicles that leave are replaced at the edges
    of the map. ``reckless_fraction`` of drivers run red lights, skip yielding, drive into
    queues distracted, cut in and brake, or drift out of lane; 0 gives collision-free traffic.
    The sensor settings (GPS noise, drops, jitter, late and duplicate messages) are ignored
    when ``clean``. ``grid_n`` 0 sizes the map for the number of vehicles.
    """

    vehicles: int = 200
    duration_s: float = 60.0
    hz: float = 10.0
    seed: int = 0
    reckless_fraction: float = 0.1
    gps_sigma_m: float = 0.3
    drop_rate: float = 0.01
    jitter_s: float = 0.02
    late_fraction: float = 0.01
    duplicate_fraction: float = 0.005
    clean: bool = False
    positions_only: bool = False
    start_ts: float = DEFAULT_START_TS
    grid_n: int = 0
    lanes: int = 2
    block_m: float = 150.0
    speed_limit_mps: float = 13.9
    warmup_s: float = 30.0
    near_miss_gap_m: float = 1.0
    late_max_s: float = 2.0
    crash_hold_s: float = 5.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, value: object) -> ConfigError:
            return ConfigError(f"{name} must be {expected}, got {value!r}")

        if self.vehicles < 1:
            raise bad("vehicles", ">= 1", self.vehicles)
        if math.isnan(self.duration_s) or self.duration_s < 0:
            raise bad("duration_s", ">= 0 (inf runs until stopped)", self.duration_s)
        for name in ("warmup_s", "gps_sigma_m", "jitter_s", "late_max_s", "crash_hold_s",
                     "near_miss_gap_m"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise bad(name, "a finite number >= 0", value)
        if not math.isfinite(self.hz) or self.hz <= 0 or self.hz > 1000:
            raise bad("hz", "> 0 and <= 1000", self.hz)
        for name in ("reckless_fraction", "drop_rate", "late_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise bad(name, "between 0 and 1", value)
        if self.drop_rate >= 1.0:
            raise bad("drop_rate", "< 1 (every message dropped)", self.drop_rate)
        if not math.isfinite(self.start_ts) or self.start_ts < 0:
            raise bad("start_ts", "seconds since the epoch", self.start_ts)
        if self.grid_n < 0 or self.grid_n > 60:
            raise bad("grid_n", "0 (auto) or 1..60", self.grid_n)
        if not 1 <= self.lanes <= 4:
            raise bad("lanes", "1..4", self.lanes)
        min_block = 2 * WorldConfig(lanes=self.lanes).zone_half_m + 30.0
        if not min_block <= self.block_m <= 2000.0:
            raise bad("block_m", f"between {min_block:g} and 2000", self.block_m)
        if not 1.0 <= self.speed_limit_mps <= 60.0:
            raise bad("speed_limit_mps", "between 1 and 60", self.speed_limit_mps)

    @property
    def dt_s(self) -> float:
        return 1.0 / self.hz

    @property
    def substeps(self) -> int:
        """Physics steps per published tick: the engine never steps more than 0.1 s (car
        following and contacts need it), whatever --hz says."""
        return max(1, math.ceil(self.dt_s / 0.1 - 1e-9))

    @property
    def n_ticks(self) -> int | None:
        """Ticks to publish; None for a run without end (``duration_s`` inf)."""
        if math.isinf(self.duration_s):
            return None
        return int(round(self.duration_s * self.hz))

    def world_config(self) -> WorldConfig:
        """The map: ``grid_n`` junctions per side, or the smallest grid that holds the
        vehicles at about 20 per lane-km (moving traffic with queues at the signals)."""
        stub = min(120.0, self.block_m)
        n = self.grid_n
        if n == 0:
            n = 2
            while n < _MAX_GRID_N and lane_km(n, self.lanes, self.block_m, stub) * \
                    _TARGET_DENSITY_PER_LANE_KM < self.vehicles:
                n += 1
        return WorldConfig(grid_n=n, lanes=self.lanes, block_m=self.block_m, stub_m=stub)
