"""What a fleet's telematics would deliver instead of the true state.

GPS noise (Gaussian, ``gps_sigma_m`` per axis) on positions, small noise on reported speed and
heading, dropped messages, timestamp jitter (uniform within +-``jitter_s``), late messages
(held back 2 ticks to ``late_max_s`` and published after newer ones, with their original
event time) and duplicates (the same bytes again, in the same tick or a few ticks later).
Every draw comes from the sensor random stream, so a seed gives the same output. ``clean``
turns all of it off: every vehicle, every tick, exact values, in order.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from trajstream.simulator.config import SimConfig
from trajstream.simulator.messages import Message, encode_positions

SPEED_SIGMA_MPS = 0.1
HEADING_SIGMA_RAD = 0.02
MAX_DUPLICATE_DELAY_TICKS = 5


class Sensors:
    """Turns true states into the messages to publish, tick by tick."""

    def __init__(self, config: SimConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self._late_ticks = max(2, int(round(config.late_max_s * config.hz)))
        self._pending: defaultdict[int, list[Message]] = defaultdict(list)
        self.dropped = 0
        self.delayed = 0
        self.duplicated = 0

    def observe(self, tick: int, ts: float, vid: np.ndarray, x: np.ndarray, y: np.ndarray,
                speed: np.ndarray, heading: np.ndarray, length: np.ndarray,
                width: np.ndarray) -> list[Message]:
        """Messages to publish at ``tick``, in publish order: this tick's on-time ones, then
        earlier late ones and duplicates released now."""
        cfg = self.config
        n = vid.shape[0]
        positions_only = cfg.positions_only
        if cfg.clean:
            ts_a = np.full(n, ts)
            return encode_positions(vid, ts_a, x, y, None if positions_only else speed,
                                    None if positions_only else heading, length, width)
        rng = self.rng
        u = rng.uniform(0.0, 1.0, (4, n))
        keep = u[0] >= cfg.drop_rate
        self.dropped += int(n - keep.sum())
        noise = rng.normal(0.0, 1.0, (4, n))
        ts_a = ts + cfg.jitter_s * (2.0 * u[1] - 1.0)
        xs = x + cfg.gps_sigma_m * noise[0]
        ys = y + cfg.gps_sigma_m * noise[1]
        sp = np.maximum(speed + SPEED_SIGMA_MPS * noise[2], 0.0)
        hd = np.mod(heading + HEADING_SIGMA_RAD * noise[3] + math.pi, 2 * math.pi) - math.pi
        k = np.flatnonzero(keep)
        msgs = encode_positions(vid[k], ts_a[k], xs[k], ys[k], None if positions_only else sp[k],
                                None if positions_only else hd[k], length[k], width[k])
        late = u[2][k] < cfg.late_fraction
        dup = u[3][k] < cfg.duplicate_fraction
        out = msgs
        late_idx, dup_idx = np.flatnonzero(late), np.flatnonzero(dup)
        if late_idx.shape[0] or dup_idx.shape[0]:
            delays = rng.integers(2, self._late_ticks + 1, late_idx.shape[0])
            dup_delays = rng.integers(0, MAX_DUPLICATE_DELAY_TICKS + 1, dup_idx.shape[0])
            for j, d in zip(late_idx.tolist(), delays.tolist(), strict=True):
                self._pending[tick + d].append(msgs[j])
            for j, d in zip(dup_idx.tolist(), dup_delays.tolist(), strict=True):
                self._pending[tick + d].append(msgs[j])
            self.delayed += late_idx.shape[0]
            self.duplicated += dup_idx.shape[0]
            if late_idx.shape[0]:
                out = [msgs[j] for j in np.flatnonzero(~late).tolist()]
        out.extend(self._pending.pop(tick, ()))
        return out

    def drain(self) -> list[Message]:
        """Everything still held back, in release order (the run is over)."""
        out: list[Message] = []
        for tick in sorted(self._pending):
            out.extend(self._pending.pop(tick))
        return out
