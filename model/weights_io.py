"""The trained network as plain arrays: what ships in ``model/weights/`` and what every
runtime (numpy step, compiled TensorFlow step, Keras sequence model) is built from.

Stored as ``.npz`` rather than a Keras file so that loading the predictor needs neither
TensorFlow nor a matching Keras version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trajstream.errors import ConfigError

FORMAT = "trajstream.lstm/v1"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Shape of the network. ``units`` is the LSTM size (state_dim = 2 * units)."""

    units: int = 48
    head_units: int = 64
    n_features: int = 8
    points: int = 20
    step_s: float = 0.2


_ARRAYS = (
    "feat_mean",  # (F,)   feature normalisation
    "feat_std",  # (F,)
    "kernel",  # (F, 4U)  LSTM input kernel, Keras gate order i, f, c, o
    "recurrent",  # (U, 4U)
    "bias",  # (4U,)
    "hidden_w",  # (U + F, H)  head hidden layer over [h, normalised features]
    "hidden_b",  # (H,)
    "out_w",  # (H, 3P)  head output: P x/y residual means then P log-sigmas
    "out_b",  # (3P,)
    "out_scale",  # (3P,)  metres per unit of network output (1 for log-sigmas)
)


@dataclass(frozen=True)
class LstmWeights:
    """All parameters of the trajectory network, float32, plus free-form metadata."""

    config: NetworkConfig
    feat_mean: np.ndarray
    feat_std: np.ndarray
    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray
    hidden_w: np.ndarray
    hidden_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    out_scale: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        header = {"format": FORMAT, "config": asdict(self.config), "meta": self.meta}
        arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header))}
        arrays.update({name: np.asarray(getattr(self, name), np.float32) for name in _ARRAYS})
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    @staticmethod
    def load(path: str | Path) -> LstmWeights:
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["header"]))
                arrays = {name: npz[name].astype(np.float32) for name in _ARRAYS}
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot load LSTM weights from {path}: {exc}") from exc
        if header.get("format") != FORMAT:
            raise ConfigError(
                f"{path}: expected weights format {FORMAT!r}, got {header.get('format')!r}"
            )
        return LstmWeights(config=NetworkConfig(**header["config"]), meta=header["meta"], **arrays)
