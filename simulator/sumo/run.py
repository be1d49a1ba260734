"""A SUMO run as a stream of ticks, like the built-in engine's: network and demand ->
libsumo steps -> ground truth -> sensors -> messages.

Ground truth has the built-in engine's format (``trajstream.simulator.truth``), so every
tool reads both: collisions are SUMO's (one event per pair at the step SUMO registered the
contact, at the midpoint of the two centres), with three more fields: ``kind`` (pre-crash
conflict kind, see conflicts.py), ``collider`` (the vehicle SUMO holds responsible) and
``sumo_type`` (SUMO's own collision type). Near misses are the built-in engine's: footprints
within ``near_miss_gap_m`` while closing in at 2 m/s or more, without a SUMO collision.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from trajstream.simulator.config import SimConfig
from trajstream.simulator.messages import vehicle_name
from trajstream.simulator.sensors import Sensors
from trajstream.simulator.sim import Tick
from trajstream.simulator.sumo.config import SumoConfig
from trajstream.simulator.sumo.demand import route_pool
from trajstream.simulator.sumo.drivers import DriverMix, vtypes_xml
from trajstream.simulator.sumo.engine import Collision, SumoEngine, VehicleStates
from trajstream.simulator.sumo.network import build_network
from trajstream.simulator.truth import ClosePairs, TruthTracker, close_pairs

log = logging.getLogger(__name__)


def _tool_seed(seq: np.random.SeedSequence) -> int:
    """A seed for SUMO's programs (they take a 31-bit integer)."""
    return int(seq.generate_state(1)[0] % (2**31 - 1))


def iter_sumo_ticks(run: SimConfig, cfg: SumoConfig) -> Iterator[Tick]:
    """Run SUMO: ``run.n_ticks`` ticks at ``run.hz`` (endless if None) after ``cfg.warmup_s``
    unpublished seconds; the same configs (seed included) and SUMO version give the same
    bytes. The last tick also carries late messages and open near-miss episodes. SUMO
    is closed (and generated files removed, unless ``cfg.work_dir``) when the iterator ends
    or is closed."""
    net_seq, demand_seq, sumo_seq, engine_seq, sensor_seq = \
        np.random.SeedSequence(run.seed).spawn(5)
    with ExitStack() as stack:
        if cfg.work_dir is not None:
            work = Path(cfg.work_dir).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="trajstream-sumo-")))
        net = build_network(cfg, run.vehicles, _tool_seed(net_seq), work)
        routes = route_pool(net, cfg.route_pool, _tool_seed(demand_seq), cfg.block_m, work)
        vtypes = work / "drivers.add.xml"
        vtypes.write_text(vtypes_xml())
        sub = run.substeps
        step_s = run.dt_s / sub
        rng = np.random.default_rng(engine_seq)
        engine = stack.enter_context(SumoEngine(
            cfg, net_file=net, vtypes_file=vtypes, routes=routes, vehicles=run.vehicles,
            step_s=step_s, sumo_seed=_tool_seed(sumo_seq),
            mix=DriverMix(run.reckless_fraction, rng), rng=rng))
        for _ in range(int(round(cfg.warmup_s / step_s))):
            engine.step()
        yield from _ticks(run, engine, Sensors(run, np.random.default_rng(sensor_seq)))


def _ticks(run: SimConfig, engine: SumoEngine, sensors: Sensors) -> Iterator[Tick]:
    truth = TruthTracker(near_miss_gap_m=run.near_miss_gap_m,
                         release_gap_m=run.near_miss_gap_m + 0.5)
    last = -1 if run.n_ticks is None else run.n_ticks - 1
    ticks = itertools.count() if run.n_ticks is None else range(run.n_ticks)
    sub = run.substeps
    present = np.zeros(0, dtype=np.int64)
    for k in ticks:
        ts = round(run.start_ts + k * run.dt_s, 6)
        events: list[dict] = []
        for j in range(sub):
            s, collisions = engine.step()
            t_sub = ts if j == sub - 1 else round(ts - (sub - 1 - j) * engine.step_s, 6)
            events += _truth_step(truth, t_sub, s, collisions, run.near_miss_gap_m)
        gone = np.setdiff1d(present, s.vid, assume_unique=True)
        if gone.shape[0]:
            engine.forget(gone)
        present = s.vid
        messages = sensors.observe(k, ts, s.vid, s.x, s.y, s.speed, s.heading, s.length,
                                   s.width)
        if k == last:
            messages.extend(sensors.drain())
            events.extend(truth.finish())
        yield Tick(ts, messages, events, int(s.vid.shape[0]))


def _truth_step(truth: TruthTracker, ts: float, s: VehicleStates,
                collisions: list[Collision], near_miss_gap_m: float) -> list[dict]:
    """Feed one step to the tracker: SUMO's collisions are the only contacts; footprints
    that overlap without one count toward near misses (gap 0)."""
    pairs = close_pairs(s.x, s.y, s.heading, s.length, s.width, near_miss_gap_m)
    info: dict[tuple[str, str], Collision] = {}
    speed = s.speed
    if collisions:
        speed = speed.copy()
        idx = {v: i for i, v in enumerate(s.vid.tolist())}
        ca, cb = [], []
        for c in collisions:
            ia, ib = idx.get(c.collider), idx.get(c.victim)
            if ia is None or ib is None:
                log.warning("collision of %s and %s not recorded: a vehicle is gone",
                            vehicle_name(c.collider), vehicle_name(c.victim))
                continue
            speed[ia], speed[ib] = c.collider_speed, c.victim_speed
            ca.append(min(ia, ib))
            cb.append(max(ia, ib))
            names = sorted((vehicle_name(c.collider), vehicle_name(c.victim)))
            info[(names[0], names[1])] = c
        n = len(ca)
        pairs = ClosePairs(np.concatenate([pairs.a, np.array(ca, dtype=np.int64)]),
                           np.concatenate([pairs.b, np.array(cb, dtype=np.int64)]),
                           np.concatenate([pairs.gap, np.zeros(n)]),
                           np.concatenate([np.zeros(pairs.a.shape[0], dtype=bool),
                                           np.ones(n, dtype=bool)]))
    else:
        pairs = ClosePairs(pairs.a, pairs.b, pairs.gap, np.zeros(pairs.a.shape[0], dtype=bool))
    vx, vy = speed * np.cos(s.heading), speed * np.sin(s.heading)
    events = truth.update(ts, s.vid, pairs, s.x, s.y, vx, vy)
    for e in events:
        found = info.get((e["vehicle_a"], e["vehicle_b"]))
        if e["type"] == "collision" and found is not None:
            e.update(kind=found.kind, collider=vehicle_name(found.collider),
                     sumo_type=found.sumo_type)
    return events

