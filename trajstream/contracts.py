"""The message contracts every part of trajstream shares: topics, schemas, vehicle defaults.

Changing anything here changes what other programs read or write: bump the schema version.

**Positions** (topic ``vehicle-positions``, key = vehicle_id, value = UTF-8 JSON object):
``{"vehicle_id", "ts", "x", "y"}`` (``vehicle_id`` a string, or an integer that means its
decimal string) plus optional ``speed`` (m/s), ``heading`` (radians,
counter-clockwise from +x), ``length``/``width`` (m). ``ts`` is the event time in seconds
since the Unix epoch; ``x``/``y`` are metres in a local planar frame (x east, y north), or
``lat``/``lon`` (WGS84 degrees) projected around a configured origin. Unknown fields are
ignored. A JSONL file with one such object per line is the offline form of the topic.

**Alerts** (topic ``collision-alerts``, key = ``"<a>|<b>"`` with a < b): schema
:data:`ALERT_SCHEMA`; see ``trajstream.stream.episodes.alert_message`` for the fields.

**Predicted kinematics** (topic ``<group>-predicted-kinematics``, internal: between
``trajstream process --stage predict`` and ``--stage risk``): binary records, see
``trajstream.stream.internal``; key = the risk partition, or ``progress``.

**Predictions** (topic ``trajectory-predictions``, key = vehicle_id):
``{vehicle_id, ts, model, dt, points: [[x, y], ...]}`` plus, from a predictor that estimates
its uncertainty (the LSTM), an optional ``sigma: [s, ...]``: the 1-sigma position
uncertainty of each point in metres (one per point). Readers must accept messages without it
(the CV and CTRV baselines, and processors older than the field).
"""

from __future__ import annotations

from typing import Final

POSITIONS_TOPIC: Final = "vehicle-positions"
ALERTS_TOPIC: Final = "collision-alerts"
PREDICTIONS_TOPIC: Final = "trajectory-predictions"
PREDICTED_TOPIC: Final = "predicted-kinematics"

ALERT_SCHEMA: Final = "trajstream.alert/v1"
# The alert fields a reader cannot do without (the alerts follower, the evaluator).
ALERT_REQUIRED: Final[tuple[str, ...]] = ("vehicle_a", "vehicle_b", "severity", "ts")

# A vehicle that does not report its size is taken to be a mid-size car.
DEFAULT_LENGTH_M: Final = 4.5
DEFAULT_WIDTH_M: Final = 1.8

# Trajectory predictors the processor and the evaluator know by name.
PREDICTORS: Final[tuple[str, ...]] = ("lstm", "cv", "ctrv")
