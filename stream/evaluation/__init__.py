"""Judging collision warnings against what really happened (``trajstream evaluate``).

Pure scoring on files: the positions (true motion), the truth (collisions, scenarios) and an
alerts stream; the textbook constant-velocity TTC warner runs on the same positions.
"""

from trajstream.stream.evaluation.baseline import BaselineConfig, cv_ttc_alerts
from trajstream.stream.evaluation.scoring import ReleaseClock, ScoreConfig, score
from trajstream.stream.evaluation.tracks import Tracks, read_positions

__all__ = ["BaselineConfig", "ReleaseClock", "ScoreConfig", "Tracks", "cv_ttc_alerts",
           "read_positions", "score"]
