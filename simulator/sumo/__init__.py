"""The SUMO engine: city traffic from Eclipse SUMO (another simulator's drivers, crashes that
SUMO decides), published like the built-in engine's. Needs ``pip install 'trajstream[sumo]'``;
importing this package does not import SUMO."""

from trajstream.simulator.sumo.config import NET_KINDS, SumoConfig
from trajstream.simulator.sumo.conflicts import CONFLICT_KINDS
from trajstream.simulator.sumo.run import iter_sumo_ticks

__all__ = ["CONFLICT_KINDS", "NET_KINDS", "SumoConfig", "iter_sumo_ticks"]
