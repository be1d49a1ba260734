"""City road network: a square grid of two-way multi-lane roads crossing at signalised junctions.

Everything a vehicle drives on is a *segment* with a 1-D coordinate ``s`` (metres along it):
link lanes (straight, from one junction zone to the next or to the edge of the map) and
junction movements (straight, or a quarter-circle arc for a turn, inside the junction zone).
Segments are rows of numpy tables so the engine looks up geometry for all vehicles at once.

Geometry: right-hand traffic, lane 0 is the innermost lane (next to the centre line), lanes are
``lane_width_m`` apart. A junction zone is the square of half-size ``zone_half_m`` (lanes x lane
width + a corner allowance) around each crossing; every movement starts and ends on its edge,
so outside the zones vehicles are always in a lane. Left turns go from lane 0 to lane 0, right
turns from the curb lane to the curb lane, straight movements keep their lane.

Signals: two phases (east-west, north-south), each green, yellow, all-red; every junction has
its own offset. Left turns are permissive: they yield to oncoming straight and right traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EAST, NORTH, WEST, SOUTH = 0, 1, 2, 3
STRAIGHT, LEFT, RIGHT = 0, 1, 2
GREEN, YELLOW, RED = 0, 1, 2

_UX = np.array([1.0, 0.0, -1.0, 0.0])
_UY = np.array([0.0, 1.0, 0.0, -1.0])


@dataclass(frozen=True)
class WorldConfig:
    """Road network parameters; ``grid_n`` junctions per side."""

    grid_n: int = 3
    lanes: int = 2
    block_m: float = 150.0
    stub_m: float = 120.0
    lane_width_m: float = 3.5
    corner_m: float = 4.0
    green_s: float = 20.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0

    @property
    def zone_half_m(self) -> float:
        # at least 12 m: opposing left turns pass each other, turning cars straighten out
        # before they pass those waiting at the stop lines
        return max(self.lanes * self.lane_width_m + self.corner_m, 12.0)

    @property
    def cycle_s(self) -> float:
        return 2.0 * (self.green_s + self.yellow_s + self.all_red_s)


def lane_km(grid_n: int, lanes: int, block_m: float, stub_m: float) -> float:
    """Total lane length of a grid, used to size the map for a number of vehicles."""
    road_m = (grid_n - 1) * block_m + 2 * stub_m
    return 2 * grid_n * 2 * lanes * road_m / 1000.0


class World:
    """Segment, junction and approach tables of one grid (immutable after construction).

    Segment ids index every ``seg_*`` array; one extra row at ``n_seg`` is a sentinel that is
    never occupied (lookups of a missing neighbour point there). Approach ``j * 4 + d`` is the
    traffic arriving at junction ``j`` travelling in direction ``d``.
    """

    def __init__(self, config: WorldConfig, signal_offsets_s: np.ndarray | None = None) -> None:
        if config.grid_n < 1 or config.lanes < 1:
            raise ValueError("grid_n and lanes must be >= 1")
        self.config = c = config
        n, nl, w, half = c.grid_n, c.lanes, c.lane_width_m, c.zone_half_m
        if c.block_m <= 2 * half + 10.0:
            raise ValueError(f"block_m must exceed {2 * half + 10.0:.1f} m for {nl} lanes")
        self.n_junctions = n * n
        coords = np.arange(n, dtype=float) * c.block_m
        self.junction_x = np.repeat(coords, n)  # junction id = i * n + j at (coords[i], coords[j])
        self.junction_y = np.tile(coords, n)

        rows: dict[str, list] = {k: [] for k in (
            "x0", "y0", "h0", "cx", "cy", "r", "th0", "sg", "arc", "length", "link", "lane",
            "approach", "junction", "origin", "turn", "is_link", "start_boundary")}

        def add(**kw: float) -> int:
            for k in rows:
                rows[k].append(kw.get(k, -1 if k in ("link", "lane", "approach", "junction",
                                                      "origin", "turn") else 0.0))
            return len(rows["x0"]) - 1

        # links: (direction, road index, position in the node sequence) -> lane segment ids
        link_lanes: dict[tuple[int, int, int], list[int]] = {}
        node_axis = np.concatenate(([-c.stub_m], coords, [coords[-1] + c.stub_m]))
        n_links = 0
        for d in range(4):
            sign = 1.0 if d in (EAST, NORTH) else -1.0
            rnx, rny = _UY[d], -_UX[d]  # right-hand normal
            for road in range(n):
                line = coords[road]
                seq = node_axis if sign > 0 else node_axis[::-1]
                for p in range(n + 1):
                    a0, a1 = seq[p], seq[p + 1]
                    start_j = p - 1 if p >= 1 else -1  # index along the road of the junction
                    end_j = p if p < n else -1
                    if sign < 0:
                        start_j = (n - p) if p >= 1 else -1
                        end_j = (n - 1 - p) if p < n else -1
                    a_start = a0 + sign * half if start_j >= 0 else a0
                    a_end = a1 - sign * half if end_j >= 0 else a1
                    if d in (EAST, WEST):  # horizontal road at y = line; along-axis is x
                        jid_end = end_j * n + road if end_j >= 0 else -1
                        bx, by = a_start, line
                    else:
                        jid_end = road * n + end_j if end_j >= 0 else -1
                        bx, by = line, a_start
                    ids = []
                    for k in range(nl):
                        off = (k + 0.5) * w
                        ids.append(add(
                            x0=bx + off * rnx, y0=by + off * rny, h0=d * math.pi / 2,
                            length=abs(a_end - a_start), link=n_links, lane=k,
                            approach=jid_end * 4 + d if jid_end >= 0 else -1,
                            junction=jid_end, is_link=1.0,
                            start_boundary=1.0 if start_j < 0 else 0.0))
                    link_lanes[(d, road, p)] = ids
                    n_links += 1

        def incoming(jid: int, d: int) -> list[int]:
            i, j = divmod(jid, n)
            if d in (EAST, WEST):
                p = i if d == EAST else n - 1 - i
                return link_lanes[(d, j, p)]
            p = j if d == NORTH else n - 1 - j
            return link_lanes[(d, i, p)]

        def outgoing(jid: int, d: int) -> list[int]:
            i, j = divmod(jid, n)
            if d in (EAST, WEST):
                p = i + 1 if d == EAST else n - i
                return link_lanes[(d, j, p)]
            p = j + 1 if d == NORTH else n - j
            return link_lanes[(d, i, p)]

        n_link_segs = len(rows["x0"])
        self.n_link_segs = n_link_segs
        link_moves = np.full((n_link_segs + 1, 3), -1, dtype=np.int64)
        seg_next: dict[int, int] = {}
        for jid in range(self.n_junctions):
            jx, jy = self.junction_x[jid], self.junction_y[jid]
            for d in range(4):
                inc, ux, uy = incoming(jid, d), _UX[d], _UY[d]
                rnx, rny = _UY[d], -_UX[d]
                for k in range(nl):
                    off = (k + 0.5) * w
                    m = add(x0=jx - half * ux + off * rnx, y0=jy - half * uy + off * rny,
                            h0=d * math.pi / 2, length=2 * half, approach=jid * 4 + d,
                            junction=jid, origin=inc[k], turn=STRAIGHT)
                    link_moves[inc[k], STRAIGHT] = m
                    seg_next[m] = outgoing(jid, d)[k]
                for turn, d2, lane, radius, sg in (
                    (LEFT, (d + 1) % 4, 0, half + 0.5 * w, 1.0),
                    (RIGHT, (d + 3) % 4, nl - 1, half - (nl - 0.5) * w, -1.0),
                ):
                    cx = jx - half * ux + half * _UX[d2]
                    cy = jy - half * uy + half * _UY[d2]
                    m = add(cx=cx, cy=cy, r=radius, th0=d2 * math.pi / 2 + math.pi, sg=sg,
                            arc=1.0, h0=d * math.pi / 2, length=radius * math.pi / 2,
                            approach=jid * 4 + d, junction=jid, origin=inc[lane], turn=turn)
                    link_moves[inc[lane], turn] = m
                    seg_next[m] = outgoing(jid, d2)[lane]

        self.n_seg = n_seg = len(rows["x0"])
        add()  # sentinel row, never occupied
        f = {k: np.asarray(v, dtype=float) for k, v in rows.items()}
        self.seg_x0, self.seg_y0, self.seg_h0 = f["x0"], f["y0"], f["h0"]
        self.seg_ux, self.seg_uy = np.cos(f["h0"]), np.sin(f["h0"])
        self.seg_cx, self.seg_cy, self.seg_r = f["cx"], f["cy"], f["r"]
        self.seg_th0, self.seg_sg = f["th0"], f["sg"]
        self.seg_arc = f["arc"] > 0
        self.seg_length = f["length"]
        self.seg_length[n_seg] = 1e9
        self.seg_is_link = f["is_link"] > 0
        self.seg_lane = f["lane"].astype(np.int64)
        self.seg_approach = f["approach"].astype(np.int64)
        self.seg_junction = f["junction"].astype(np.int64)
        self.seg_origin = f["origin"].astype(np.int64)
        self.seg_turn = f["turn"].astype(np.int64)
        self.seg_next = np.full(n_seg + 1, n_seg, dtype=np.int64)
        for m, nxt in seg_next.items():
            self.seg_next[m] = nxt
        link_moves[link_moves < 0] = n_seg
        # (n_link_segs + 1, 3): the movement segment per turn, the sentinel where none
        self.link_moves = link_moves
        # neighbouring lanes of the same link (sentinel when none)
        self.seg_left = np.full(n_seg + 1, n_seg, dtype=np.int64)
        self.seg_right = np.full(n_seg + 1, n_seg, dtype=np.int64)
        lk = np.flatnonzero(self.seg_is_link)
        self.seg_left[lk[self.seg_lane[lk] > 0]] = lk[self.seg_lane[lk] > 0] - 1
        self.seg_right[lk[self.seg_lane[lk] < nl - 1]] = lk[self.seg_lane[lk] < nl - 1] + 1
        self.entry_segs = np.flatnonzero(f["start_boundary"] > 0)
        self.link_segs = lk
        self.lanes = nl
        n_app = self.n_junctions * 4
        self.approach_group = np.arange(n_app) % 2  # 0: east-west, 1: north-south
        self.approach_oncoming = (np.arange(n_app) // 4) * 4 + (np.arange(n_app) % 4 + 2) % 4
        if signal_offsets_s is None:
            signal_offsets_s = np.zeros(self.n_junctions)
        self.signal_offsets_s = np.asarray(signal_offsets_s, dtype=float)
        lo, hi = -c.stub_m - half, coords[-1] + c.stub_m + half
        self.bounds = (lo, lo, hi, hi)

    def turn_speed(self, lateral_accel: float) -> np.ndarray:
        """Comfortable speed on each segment: sqrt(a_lat * r) on arcs, infinite on straights."""
        v = np.full(self.n_seg + 1, np.inf)
        v[self.seg_arc] = np.sqrt(lateral_accel * self.seg_r[self.seg_arc])
        return v

    def signal_state(self, t_s: float) -> np.ndarray:
        """GREEN / YELLOW / RED for every approach at simulation time ``t_s``."""
        c = self.config
        half_cycle = c.green_s + c.yellow_s + c.all_red_s
        tc = np.mod(t_s + self.signal_offsets_s, c.cycle_s)  # per junction
        ew = np.where(tc < c.green_s, GREEN, np.where(tc < c.green_s + c.yellow_s, YELLOW, RED))
        tn = tc - half_cycle
        ns = np.where((tn >= 0) & (tn < c.green_s), GREEN,
                      np.where((tn >= c.green_s) & (tn < c.green_s + c.yellow_s), YELLOW, RED))
        return np.stack([ew, ns, ew, ns], axis=1).reshape(-1)

    def pose(self, seg: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre-line position and heading (radians) at ``s`` metres along each segment."""
        h = self.seg_h0[seg]
        x = self.seg_x0[seg] + s * self.seg_ux[seg]
        y = self.seg_y0[seg] + s * self.seg_uy[seg]
        arc = self.seg_arc[seg]
        if arc.any():
            sa, ss = seg[arc], s[arc]
            sg, r = self.seg_sg[sa], self.seg_r[sa]
            th = self.seg_th0[sa] + sg * ss / r
            x[arc] = self.seg_cx[sa] + r * np.cos(th)
            y[arc] = self.seg_cy[sa] + r * np.sin(th)
            h = h.copy()
            h[arc] = th + sg * (math.pi / 2)
        return x, y, h
