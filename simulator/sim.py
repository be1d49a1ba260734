"""A run of the simulator as a stream of ticks: engine -> ground truth -> sensors -> messages."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from trajstream.simulator.config import SimConfig
from trajstream.simulator.engine import Engine
from trajstream.simulator.messages import Message
from trajstream.simulator.sensors import Sensors
from trajstream.simulator.truth import TruthTracker


@dataclass(frozen=True)
class Tick:
    """One tick of output: event time, the messages to publish now (key, JSON value; sensor
    processed, in publish order), the ground-truth events finalised now, vehicles present."""

    ts: float
    messages: list[Message]
    truth: list[dict]
    vehicles: int


def iter_ticks(config: SimConfig) -> Iterator[Tick]:
    """Run the simulation: ``config.n_ticks`` ticks (endless if None) at ``config.hz`` after
    an unpublished warm-up that lets queues form; deterministic for a given config (seed
    included). The last tick also carries what was still held back: late messages and open
    near-miss episodes."""
    engine_seed, sensor_seed = np.random.SeedSequence(config.seed).spawn(2)
    engine = Engine(config, np.random.default_rng(engine_seed))
    for _ in range(engine.warmup_steps):
        engine.step()
    engine.behaviours_on = True
    truth = TruthTracker(near_miss_gap_m=config.near_miss_gap_m,
                         release_gap_m=config.near_miss_gap_m + 0.5)
    sensors = Sensors(config, np.random.default_rng(sensor_seed))
    last = -1 if config.n_ticks is None else config.n_ticks - 1
    ticks = itertools.count() if config.n_ticks is None else range(config.n_ticks)
    sub = config.substeps
    for k in ticks:
        ts = round(config.start_ts + k * config.dt_s, 6)
        events: list[dict] = []
        for j in range(sub):  # contacts are checked at every physics step
            r = engine.step()
            vx, vy = r.speed * np.cos(r.heading), r.speed * np.sin(r.heading)
            t_sub = ts if j == sub - 1 else round(ts - (sub - 1 - j) * engine.dt, 6)
            events += truth.update(t_sub, r.vid, r.pairs, r.x, r.y, vx, vy)
        messages = sensors.observe(k, ts, r.vid, r.x, r.y, r.speed, r.heading, r.length,
                                   r.width)
        if k == last:
            messages.extend(sensors.drain())
            events.extend(truth.finish())
        yield Tick(ts, messages, events, engine.n)
