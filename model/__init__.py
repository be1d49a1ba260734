"""Trajectory predictors: the LSTM (shipped weights) and the CV/CTRV physics baselines.

``load_predictor`` is the one entry point the processor needs. The LSTM's default numpy step
needs no TensorFlow; ``backend="tf"``/``"tf-xla"``/``"auto"`` import it lazily (XLA pays off
only for batches of ~1000 vehicles and more: see bench/bench_model.py). Without an explicit
``backend`` the ``TRAJSTREAM_LSTM_BACKEND`` environment variable decides (default ``numpy``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, cast

from trajstream.contracts import PREDICTORS
from trajstream.errors import ConfigError
from trajstream.model.predictors import ConstantTurnRate, ConstantVelocity, PathSpec, Predictor

__all__ = ["PREDICTORS", "SHIPPED_WEIGHTS", "PathSpec", "Predictor", "load_predictor"]

BACKENDS: tuple[str, ...] = ("numpy", "tf", "tf-xla", "auto")
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "lstm.npz"
_DEFAULT_SPEC = PathSpec()


def load_predictor(
    name: str,
    spec: PathSpec = _DEFAULT_SPEC,
    *,
    weights: str | Path | None = None,
    backend: Literal["numpy", "tf", "tf-xla", "auto"] | None = None,
) -> Predictor:
    """A ready predictor by name: "lstm" (``weights`` or the shipped ones), "cv" or "ctrv"."""
    if name == "cv":
        return ConstantVelocity(spec)
    if name == "ctrv":
        return ConstantTurnRate(spec)
    if name == "lstm":
        from trajstream.model.runtime import Backend, LstmPredictor
        from trajstream.model.weights_io import LstmWeights

        chosen = backend or os.environ.get("TRAJSTREAM_LSTM_BACKEND", "numpy")
        if chosen not in BACKENDS:
            raise ConfigError(
                f"unknown LSTM backend {chosen!r} (TRAJSTREAM_LSTM_BACKEND); expected one of "
                f"{', '.join(BACKENDS)}"
            )
        return LstmPredictor(
            LstmWeights.load(weights or SHIPPED_WEIGHTS), spec, backend=cast(Backend, chosen)
        )
    raise ConfigError(f"unknown predictor {name!r}; expected one of {', '.join(PREDICTORS)}")
