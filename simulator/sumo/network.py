"""The road network of a SUMO run: the user's own, an OpenStreetMap extract converted by
netconvert, or a city that netgenerate builds (grid, spider or random), sized for the
number of vehicles.

Generated cities have two-way roads of ``lanes`` lanes per direction at ``speed_limit_mps``
and no U-turns. Grid and spider junctions are signalised; random networks get signals where
SUMO's heuristic puts them (busy junctions) and priority rules elsewhere, so drivers also
meet unsignalised right of way. Every signal has an all-red clearance interval.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from trajstream.errors import ConfigError
from trajstream.simulator.sumo.binaries import run_program
from trajstream.simulator.sumo.config import SumoConfig

log = logging.getLogger(__name__)

# Vehicles per lane-km a generated city is sized for: moving traffic with queues at the
# signals (SUMO's default drivers keep 2.5 m gaps; a jam is about 130 per lane-km).
TARGET_DENSITY_PER_LANE_KM = 15.0
_SPIDER_ARMS = 8
_MAX_SIZING_TRIES = 8


def lane_km(net_file: Path) -> float:
    """Total length of the network's driving lanes (internal junction lanes excluded), km."""
    total = 0.0
    for _, elem in ET.iterparse(net_file, events=("end",)):
        if elem.tag == "edge":
            if elem.get("function") is None:
                total += sum(float(lane.get("length", 0.0)) for lane in elem.iter("lane"))
            elem.clear()
    return total / 1000.0


def build_network(cfg: SumoConfig, vehicles: int, seed: int, work_dir: Path) -> Path:
    """The network file the run drives on (written into ``work_dir`` unless it is the
    user's own)."""
    if cfg.net_file is not None:
        return Path(cfg.net_file).resolve()
    out = work_dir / "city.net.xml"
    if cfg.osm_file is not None:
        _convert_osm(cfg, Path(cfg.osm_file).resolve(), out)
        return out
    if cfg.net_size:
        _generate(cfg, cfg.net_size, seed, out)
        return out
    need = vehicles / TARGET_DENSITY_PER_LANE_KM
    size = _first_guess(cfg, need)
    for _ in range(_MAX_SIZING_TRIES):
        _generate(cfg, size, seed, out)
        have = lane_km(out)
        if have >= need or size >= 200:
            break
        # lane-km grows with the square of a grid's or spider's size, linearly for random
        power = 1.0 if cfg.net_kind == "random" else 0.5
        size = min(200, max(size + 1, math.ceil(size * (need / max(have, 1e-3)) ** power)))
    log.info("generated a %s network of size %d: %.1f lane-km for %d vehicles",
             cfg.net_kind, size, lane_km(out), vehicles)
    return out


def _first_guess(cfg: SumoConfig, need_lane_km: float) -> int:
    per_road_km = 2 * cfg.lanes * cfg.block_m / 1000.0  # one two-way road between junctions
    roads = need_lane_km / per_road_km
    if cfg.net_kind == "grid":  # about 2 n^2 roads
        return max(2, math.floor(math.sqrt(roads / 2)))
    if cfg.net_kind == "spider":  # rings and spokes: about 2 * arms * rings roads
        return max(1, math.floor(roads / (2 * _SPIDER_ARMS) * 0.7))
    return max(5, math.floor(roads / 1.5))  # random: about 1.5 roads per junction


def _generate(cfg: SumoConfig, size: int, seed: int, out: Path) -> None:
    common = ["-L", str(cfg.lanes), "-S", f"{cfg.speed_limit_mps:g}", "--no-turnarounds",
              "true", "--tls.allred.time", f"{cfg.all_red_s:g}", "--seed", str(seed),
              "--no-warnings", "-o", out.name]
    block = f"{cfg.block_m:g}"
    if cfg.net_kind == "grid":
        kind = ["--grid", "--grid.number", str(max(2, size)), "--grid.length", block,
                "--grid.attach-length", f"{min(cfg.block_m, 100.0):g}",
                "-j", "traffic_light"]
    elif cfg.net_kind == "spider":
        kind = ["--spider", "--spider.arm-number", str(_SPIDER_ARMS), "--spider.circle-number",
                str(size), "--spider.space-radius", block, "--spider.omit-center",
                "--spider.attach-length", f"{min(cfg.block_m, 100.0):g}",
                "-j", "traffic_light"]
    else:
        kind = ["--rand", "--rand.iterations", str(size),
                "--rand.min-distance", f"{cfg.block_m * 2 / 3:g}",
                "--rand.max-distance", f"{cfg.block_m * 5 / 3:g}",
                "-j", "priority", "--tls.guess"]
    run_program("netgenerate", [*kind, *common], cwd=out.parent)


def _convert_osm(cfg: SumoConfig, osm: Path, out: Path) -> None:
    """An OpenStreetMap extract as a drivable network: car roads only, guessed signals and
    ramps, joined junction clusters, the same all-red clearance as generated cities."""
    args = ["--osm-files", str(osm), "-o", out.name, "--keep-edges.by-vclass", "passenger",
            "--remove-edges.isolated", "--geometry.remove", "--ramps.guess",
            "--junctions.join", "--tls.guess-signals", "--tls.discard-simple", "--tls.join",
            "--tls.allred.time", f"{cfg.all_red_s:g}", "--no-turnarounds", "true",
            "--no-warnings"]
    run_program("netconvert", args, cwd=out.parent)
    if lane_km(out) <= 0.0:
        raise ConfigError(f"{osm} has no roads for cars")
