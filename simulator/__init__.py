"""Traffic simulator: a city grid with signals, IDM drivers, a few reckless ones, sensor
realism and ground truth, emitting positions in the ``vehicle-positions`` contract."""

from trajstream.simulator.config import SimConfig
from trajstream.simulator.sim import Tick, iter_ticks

__all__ = ["SimConfig", "Tick", "iter_ticks"]
