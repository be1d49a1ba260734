"""Where vehicles go: a pool of routes from SUMO's randomTrips (random origin and
destination edges, some through the edge of the map, routed by duarouter), from which the
engine draws a route for each vehicle it inserts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from trajstream.errors import ConfigError
from trajstream.simulator.sumo.binaries import run_program

# randomTrips: trips start or end at the map's edge this many times more often than inside
# it (through traffic), and are at least this many blocks long
_FRINGE_FACTOR = 2.0
_MIN_BLOCKS = 2.0


def route_pool(net_file: Path, n_routes: int, seed: int, block_m: float,
               work_dir: Path) -> list[list[str]]:
    """Up to ``n_routes`` routable car routes (lists of edge ids) over the network."""
    routes_file = work_dir / "pool.rou.xml"
    run_program("randomTrips.py", [
        "-n", str(net_file), "-o", str(work_dir / "pool.trips.xml"), "-r", str(routes_file),
        "-b", "0", "-e", str(n_routes), "-p", "1", "--seed", str(seed),
        "--fringe-factor", f"{_FRINGE_FACTOR:g}", "--min-distance",
        f"{_MIN_BLOCKS * block_m:g}", "--vclass", "passenger", "--validate",
    ], cwd=work_dir)
    routes = read_routes(routes_file)
    if not routes:
        raise ConfigError(f"no car can drive between two places of {net_file.name}: "
                          "is it a road network?")
    return routes


def read_routes(routes_file: Path) -> list[list[str]]:
    """The edge lists of a SUMO routes file's vehicles, in file order."""
    if not routes_file.is_file():
        return []
    routes = []
    for _, elem in ET.iterparse(routes_file, events=("end",)):
        if elem.tag == "vehicle":
            route = elem.find("route")
            if route is not None and route.get("edges"):
                routes.append(route.get("edges", "").split())
            elem.clear()
    return routes
