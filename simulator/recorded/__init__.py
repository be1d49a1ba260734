"""Recorded traffic in: researchers' trajectory data sets (CommonRoad scenarios, NGSIM) as
positions in the ``vehicle-positions`` contract, for replay, evaluation and training."""

from trajstream.simulator.recorded.commonroad import read_commonroad
from trajstream.simulator.recorded.ngsim import read_ngsim
from trajstream.simulator.recorded.records import ImportFailed, Positions, message_lines

__all__ = ["ImportFailed", "Positions", "message_lines", "read_commonroad", "read_ngsim"]
