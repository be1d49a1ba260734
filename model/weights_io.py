"""The trained network as plain arrays: what ships in ``model/weights/`` and what every
runtime (numpy step, compiled TensorFlow step, Keras sequence model) is built from.

Stored as ``.npz`` rather than a Keras file so that loading the predictor needs neither
TensorFlow nor a matching Keras version.
"""

from __future__ import annotations

import hashlib
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
# Optional (files written before it load with ones): per point, the factor that turns the
# network's sigma into a calibrated one (model/calibration.py; fitted on validation data).
_OPTIONAL = {"sigma_scale": 1.0}


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
    sigma_scale: np.ndarray | None = None  # (P,); None: uncalibrated (ones)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sigma_scale is None:
            object.__setattr__(self, "sigma_scale",
                               np.ones(self.config.points, np.float32))

    def state_digest(self) -> str:
        """A digest of what computes the recurrent state (normalisation and LSTM cell): a
        state written under other weights means nothing to these (the head may differ)."""
        h = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for name in ("feat_mean", "feat_std", "kernel", "recurrent", "bias"):
            h.update(np.ascontiguousarray(getattr(self, name), np.float32).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        header = {"format": FORMAT, "config": asdict(self.config), "meta": self.meta}
        arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header))}
        arrays.update({name: np.asarray(getattr(self, name), np.float32)
                       for name in (*_ARRAYS, *_OPTIONAL)})
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    @staticmethod
    def load(path: str | Path) -> LstmWeights:
        """Weights from ``path``; a missing, truncated, empty, foreign, wrong-shaped or
        non-finite file is a ConfigError (one line), never a crash or NaN predictions."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [n for n in ("header", *_ARRAYS) if n not in npz.files]
                if missing:
                    raise ConfigError(f"cannot load LSTM weights from {path}: no array "
                                      f"{', '.join(missing)}")
                header = json.loads(str(npz["header"]))
                arrays = {name: npz[name].astype(np.float32) for name in _ARRAYS}
                arrays.update({name: npz[name].astype(np.float32) for name in _OPTIONAL
                               if name in npz.files})
        except ConfigError:
            raise
        except OSError as exc:
            raise ConfigError(f"cannot load LSTM weights from {path}: "
                              f"{exc.strerror or exc}") from exc
        except Exception as exc:  # BadZipFile, EOFError (0 bytes), a pickle, bad JSON...
            # numpy's own words for a non-.npz file invite loading it as a pickle: not ours
            why = ("not a .npz archive" if "pickle" in str(exc)
                   else f"{type(exc).__name__}: {exc}")
            raise ConfigError(f"cannot load LSTM weights from {path}: not a trajstream "
                              f"weights file ({why})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            got = header.get("format") if isinstance(header, dict) else None
            raise ConfigError(f"{path}: expected weights format {FORMAT!r}, got {got!r}")
        try:
            config = NetworkConfig(**header["config"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: bad network config in the header: {exc}") from exc
        _check_arrays(path, config, arrays)
        return LstmWeights(config=config, meta=header.get("meta", {}), **arrays)


def _expected_shapes(c: NetworkConfig) -> dict[str, tuple[int, ...]]:
    u, f, h, p = c.units, c.n_features, c.head_units, c.points
    return {"feat_mean": (f,), "feat_std": (f,), "kernel": (f, 4 * u),
            "recurrent": (u, 4 * u), "bias": (4 * u,), "hidden_w": (u + f, h),
            "hidden_b": (h,), "out_w": (h, 3 * p), "out_b": (3 * p,), "out_scale": (3 * p,),
            "sigma_scale": (p,)}


def _check_arrays(path: str | Path, config: NetworkConfig,
                  arrays: dict[str, np.ndarray]) -> None:
    """Shapes as the header's network, every value finite, feature scales positive."""
    for name, shape in _expected_shapes(config).items():
        if name not in arrays:
            continue  # an optional array the file does not hold
        got = arrays[name].shape
        if got != shape:
            raise ConfigError(f"{path}: array {name} has shape {got}, the network in the "
                              f"header needs {shape}")
        if not np.isfinite(arrays[name]).all():
            raise ConfigError(f"{path}: array {name} holds NaN or infinite values")
    if not (arrays["feat_std"] > 0).all():
        raise ConfigError(f"{path}: feat_std must be > 0")
    if "sigma_scale" in arrays and not (arrays["sigma_scale"] > 0).all():
        raise ConfigError(f"{path}: sigma_scale must be > 0")
