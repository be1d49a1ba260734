"""The batched step the processor runs: one LSTM step plus the path head for n vehicles.

The processor gathers the h/c rows of the vehicles in a micro-batch, calls :meth:`step` once,
and scatters the new rows back; the model is never called per message. Two interchangeable
cores compute the same function from the same weights:

- ``numpy``: four small float32 matmuls plus elementwise gates. No per-call framework
  overhead, so it wins at the batch sizes a processor tick produces (see bench/bench_model.py).
- ``tf``: a ``tf.function`` with a fixed input signature (optionally XLA-compiled), with
  batches padded to a few bucket sizes so it compiles at most once per bucket.

Feature normalisation is folded into the first-layer weights at load time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from model.features import N_FEATURES, cv_local, raw_features, to_world
from model.kinematics import Kinematics
from model.predictors import PathSpec
from model.weights_io import LstmWeights
from stream.errors import ConfigError

Backend = Literal["numpy", "tf", "tf-xla"]
BUCKETS: tuple[int, ...] = (64, 256, 1024, 4096, 8192)
_DEFAULT_SPEC = PathSpec()


def bucket_size(n: int) -> int:
    """Smallest bucket holding n rows (batches above the largest are cut into chunks)."""
    for b in BUCKETS:
        if n <= b:
            return b
    return BUCKETS[-1]


class _Folded:
    """Weights rearranged for the step: normalisation folded in, gates ordered i, f, o, g."""

    def __init__(self, w: LstmWeights) -> None:
        u, p = w.config.units, w.config.points
        inv_std = 1.0 / w.feat_std.astype(np.float64)
        shift = w.feat_mean.astype(np.float64) * inv_std
        # Keras gate order is i, f, c(g), o; put the three sigmoid gates side by side.
        order = np.concatenate(
            [np.arange(0, u), np.arange(u, 2 * u), np.arange(3 * u, 4 * u), np.arange(2 * u, 3 * u)]
        )
        kernel = w.kernel.astype(np.float64)[:, order]
        hid_x = w.hidden_w[u:].astype(np.float64)
        # x_norm = x * inv_std - shift, so x_norm @ K = x @ (inv_std * K) - shift @ K
        wx = np.concatenate([kernel, hid_x], axis=1)
        self.wx = (inv_std[:, None] * wx).astype(np.float32)  # (F, 4U + H)
        bx = np.concatenate([w.bias.astype(np.float64)[order], w.hidden_b]) - shift @ wx
        self.bx = bx.astype(np.float32)
        self.wh = w.recurrent[:, order].astype(np.float32)  # (U, 4U)
        self.hid_h = w.hidden_w[:u].astype(np.float32)  # (U, H)
        scale = w.out_scale.astype(np.float64)
        self.wo = (w.out_w.astype(np.float64) * scale).astype(np.float32)  # (H, 3P)
        self.bo = (w.out_b.astype(np.float64) * scale).astype(np.float32)
        self.units = u
        self.points = p


def _numpy_core(
    fw: _Folded, x: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    u = fw.units
    h, c = state[:, :u], state[:, u:]
    xz = x @ fw.wx
    xz += fw.bx
    z = xz[:, : 4 * u]
    z += h @ fw.wh
    gates = z[:, : 3 * u]
    # sigmoid(v) = 0.5 * tanh(0.5 v) + 0.5: one transcendental, no overflow warnings
    np.multiply(gates, 0.5, out=gates)
    np.tanh(gates, out=gates)
    gates *= 0.5
    gates += 0.5
    g = np.tanh(z[:, 3 * u :])
    new_c = gates[:, u : 2 * u] * c
    new_c += gates[:, :u] * g
    new_h = gates[:, 2 * u :] * np.tanh(new_c)
    hid = xz[:, 4 * u :]
    hid += new_h @ fw.hid_h
    np.maximum(hid, 0.0, out=hid)
    out = hid @ fw.wo
    out += fw.bo
    return out, np.concatenate([new_h, new_c], axis=1)


class _TfCore:
    """The same step as a compiled TensorFlow function; batches padded to bucket sizes."""

    def __init__(self, fw: _Folded, xla: bool) -> None:
        import tensorflow as tf

        u = fw.units
        consts = {k: tf.constant(getattr(fw, k)) for k in ("wx", "bx", "wh", "hid_h", "wo", "bo")}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, N_FEATURES], tf.float32),
                tf.TensorSpec([None, 2 * u], tf.float32),
            ],
            jit_compile=xla,
            reduce_retracing=True,
        )
        def step(x, state):  # noqa: ANN001, ANN202
            h, c = state[:, :u], state[:, u:]
            xz = tf.matmul(x, consts["wx"]) + consts["bx"]
            z = xz[:, : 4 * u] + tf.matmul(h, consts["wh"])
            gates = tf.sigmoid(z[:, : 3 * u])
            g = tf.tanh(z[:, 3 * u :])
            new_c = gates[:, u : 2 * u] * c + gates[:, :u] * g
            new_h = gates[:, 2 * u :] * tf.tanh(new_c)
            hid = tf.nn.relu(xz[:, 4 * u :] + tf.matmul(new_h, consts["hid_h"]))
            out = tf.matmul(hid, consts["wo"]) + consts["bo"]
            return out, tf.concat([new_h, new_c], axis=1)

        self._step = step
        self._u = u

    def __call__(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        top = BUCKETS[-1]
        if n > top:
            parts = [self(x[i : i + top], state[i : i + top]) for i in range(0, n, top)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        b = bucket_size(n)
        if b != n:
            x = np.concatenate([x, np.zeros((b - n, x.shape[1]), np.float32)])
            state = np.concatenate([state, np.zeros((b - n, state.shape[1]), np.float32)])
        out, new_state = self._step(x, state)
        return out.numpy()[:n], new_state.numpy()[:n]


class LstmPredictor:
    """The trained LSTM behind the :class:`model.predictors.Predictor` protocol.

    ``state`` rows are ``[h, c]`` (``state_dim = 2 * units``), zeros for a new vehicle. Paths are
    constant velocity in the vehicle frame plus the network's residual, rotated back to x/y.
    """

    name = "lstm"

    def __init__(
        self, weights: LstmWeights, spec: PathSpec = _DEFAULT_SPEC, backend: Backend = "numpy"
    ) -> None:
        cfg = weights.config
        if cfg.points != spec.points or abs(cfg.step_s - spec.step_s) > 1e-9:
            raise ConfigError(
                f"the LSTM weights predict {cfg.points} points every {cfg.step_s} s; "
                f"got a path spec of {spec.points} points every {spec.step_s} s"
            )
        if cfg.n_features != N_FEATURES:
            raise ConfigError(
                f"the LSTM weights expect {cfg.n_features} features, this code makes {N_FEATURES}"
            )
        self.spec = spec
        self.weights = weights
        self.state_dim = 2 * cfg.units
        self.backend = backend
        self._offsets = spec.offsets_s
        self._fw = _Folded(weights)
        self._p = cfg.points
        if backend == "numpy":
            self._core = lambda x, s: _numpy_core(self._fw, x, s)
        elif backend in ("tf", "tf-xla"):
            self._core = _TfCore(self._fw, xla=backend == "tf-xla")
        else:
            raise ConfigError(f"unknown LSTM backend {backend!r}; expected numpy, tf or tf-xla")

    def core(self, features: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network step on un-normalised features: (outputs (n, 3P), new state)."""
        return self._core(np.ascontiguousarray(features, np.float32), state)

    def step_full(
        self, kin: Kinematics, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`step`, also returning a 1-sigma position uncertainty (n, P) in metres."""
        state = np.asarray(state, np.float32)
        if kin.first.any():
            state = state.copy()
            state[kin.first] = 0.0
        out, new_state = self.core(raw_features(kin), state)
        p = self._p
        resid = out[:, : 2 * p].reshape(-1, p, 2)
        local = cv_local(kin.speed, self._offsets) + resid
        paths = to_world(kin.x, kin.y, kin.heading, local)
        sigma = np.exp(np.clip(out[:, 2 * p :], -4.0, 4.0))
        return paths, new_state, sigma

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        paths, new_state, _ = self.step_full(kin, state)
        return paths, new_state
