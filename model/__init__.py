"""Trajectory predictors: the LSTM (shipped weights) and the CV/CTRV physics baselines.

``load_predictor`` is the one entry point the processor needs. The LSTM's default numpy step
needs no TensorFlow; ``backend="tf"``/``"tf-xla"`` imports it lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from model.predictors import ConstantTurnRate, ConstantVelocity, PathSpec, Predictor
from stream.errors import ConfigError

__all__ = ["PREDICTORS", "SHIPPED_WEIGHTS", "PathSpec", "Predictor", "load_predictor"]

PREDICTORS: tuple[str, ...] = ("lstm", "cv", "ctrv")
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "lstm.npz"
_DEFAULT_SPEC = PathSpec()


def load_predictor(
    name: str,
    spec: PathSpec = _DEFAULT_SPEC,
    *,
    weights: str | Path | None = None,
    backend: Literal["numpy", "tf", "tf-xla"] = "numpy",
) -> Predictor:
    """A ready predictor by name: "lstm" (``weights`` or the shipped ones), "cv" or "ctrv"."""
    if name == "cv":
        return ConstantVelocity(spec)
    if name == "ctrv":
        return ConstantTurnRate(spec)
    if name == "lstm":
        from model.runtime import LstmPredictor
        from model.weights_io import LstmWeights

        return LstmPredictor(LstmWeights.load(weights or SHIPPED_WEIGHTS), spec, backend=backend)
    raise ConfigError(f"unknown predictor {name!r}; expected one of {', '.join(PREDICTORS)}")
