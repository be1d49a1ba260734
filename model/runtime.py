"""The batched step the processor runs: one LSTM step plus the path head for n vehicles.

The processor gathers the h/c rows of the vehicles in a micro-batch, calls :meth:`step` once,
and scatters the new rows back; the model is never called per message. Two interchangeable
cores compute the same function from the same weights:

- ``numpy``: one gate matmul over ``[x, h]``, one ``tanh`` over the gate block, three small
  head matmuls, all float32 and in place where possible. No per-call framework overhead, so
  it wins at the batch sizes a processor tick produces (see bench/bench_model.py).
- ``tf``: a ``tf.function`` with a fixed input signature (optionally XLA-compiled), with
  batches padded to a few bucket sizes so it compiles at most once per bucket. About 0.5 ms
  per call, but XLA's fused elementwise pass is faster from ~1000 rows on.
- ``auto``: numpy below ``AUTO_XLA_MIN_ROWS`` rows, XLA from there (buckets compiled at
  construction, so no compile stalls mid-stream; imports TensorFlow).

Feature normalisation is folded into the first-layer weights at load time. The processor
runs with single-threaded BLAS (trajstream/cli.py): these matmuls are too small to split.
Large batches are stepped in blocks of rows (``ROWS_PER_BLOCK``): the gate block of a whole
100k-vehicle tick is ~80 MB, and out of cache a row cost twice what it costs in a block of
2048. The same batch gives the same bits every time; across batch sizes a row's numbers agree
to float32 rounding, and to the bit only where the CPU's BLAS kernel makes them so.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from trajstream.errors import ConfigError
from trajstream.model.features import N_FEATURES, N_OWN_FEATURES, raw_features
from trajstream.model.kinematics import Kinematics
from trajstream.model.predictors import PathSpec
from trajstream.model.weights_io import LstmWeights

Backend = Literal["numpy", "tf", "tf-xla", "auto"]
AUTO_XLA_MIN_ROWS = 512  # "auto": numpy below, XLA from here (where XLA measured faster)
BUCKETS: tuple[int, ...] = (64, 256, 1024, 4096, 8192)
# numpy core: most rows per block (the TF cores take their largest bucket). A batch is cut
# into equal blocks, not into full ones and a remainder: on the CPU of the 2026-12-05
# measurements (OpenBLAS's Haswell kernels) calls below ~7 rows take another kernel whose
# last bits differ, and equal blocks keep a vehicle's prediction independent of its place in
# the batch to the bit. On an AVX2 AMD EPYC (2026-12-06) the last bits differ with a row's
# place in any call.
ROWS_PER_BLOCK = 2048
_DEFAULT_SPEC = PathSpec()


def bucket_size(n: int) -> int:
    """Smallest bucket holding n rows (batches above the largest are cut into chunks)."""
    for b in BUCKETS:
        if n <= b:
            return b
    return BUCKETS[-1]


class _Folded:
    """Weights rearranged for the step.

    - Feature normalisation is folded into the input weights.
    - Input and recurrent kernels are stacked, so the gates are one matmul over ``[x, h]``.
    - Gates are ordered i, f, o, g, and the sigmoid gates' columns are pre-scaled by 1/2:
      sigmoid(v) = (tanh(v / 2) + 1) / 2, so one ``tanh`` over the whole gate block serves
      all four gates (one transcendental pass over contiguous memory).
    """

    def __init__(self, w: LstmWeights) -> None:
        u, f = w.config.units, w.config.n_features
        inv_std = 1.0 / w.feat_std.astype(np.float64)
        shift = w.feat_mean.astype(np.float64) * inv_std
        order = np.concatenate(
            [np.arange(0, u), np.arange(u, 2 * u), np.arange(3 * u, 4 * u), np.arange(2 * u, 3 * u)]
        )
        kernel = w.kernel.astype(np.float64)[:, order]
        # x_norm = x * inv_std - shift, so x_norm @ K = x @ (inv_std * K) - shift @ K
        recurrent = w.recurrent.astype(np.float64)[:, order]
        gates = np.concatenate([inv_std[:, None] * kernel, recurrent])
        gates_b = w.bias.astype(np.float64)[order] - shift @ kernel
        gates[:, : 3 * u] *= 0.5
        gates_b[: 3 * u] *= 0.5
        self.w_gates = gates.astype(np.float32)  # (F + U, 4U)
        self.b_gates = gates_b.astype(np.float32)
        hid_x = w.hidden_w[u:].astype(np.float64)
        self.hid_x = (inv_std[:, None] * hid_x).astype(np.float32)  # (F, H)
        self.hid_b = (w.hidden_b.astype(np.float64) - shift @ hid_x).astype(np.float32)
        self.hid_h = w.hidden_w[:u].astype(np.float32)  # (U, H)
        scale = w.out_scale.astype(np.float64)
        self.wo = (w.out_w.astype(np.float64) * scale).astype(np.float32)  # (H, 3P)
        self.bo = (w.out_b.astype(np.float64) * scale).astype(np.float32)
        self.units = u
        self.n_features = f
        self.points = w.config.points


def _numpy_core(
    fw: _Folded, x: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    u, f, n = fw.units, fw.n_features, x.shape[0]
    xh = np.empty((n, f + u), np.float32)
    xh[:, :f] = x
    xh[:, f:] = state[:, :u]
    t = xh @ fw.w_gates
    t += fw.b_gates
    np.tanh(t, out=t)  # i, f, o as tanh(v/2); g as tanh(v)
    ti, tf_, to, g = t[:, :u], t[:, u : 2 * u], t[:, 2 * u : 3 * u], t[:, 3 * u :]
    new = np.empty((n, 2 * u), np.float32)
    h, c = new[:, :u], new[:, u:]
    tf_ += 1.0
    np.multiply(tf_, state[:, u:], out=c)  # 2 f c
    ti += 1.0
    ti *= g
    c += ti  # 2 (f c + i g)
    c *= 0.5
    np.tanh(c, out=h)
    to += 1.0
    h *= to
    h *= 0.5  # o tanh(c)
    hid = x @ fw.hid_x
    hid += h @ fw.hid_h
    hid += fw.hid_b
    np.maximum(hid, 0.0, out=hid)
    out = hid @ fw.wo
    out += fw.bo
    return out, new


class _TfCore:
    """The same step as a compiled TensorFlow function; batches padded to bucket sizes."""

    def __init__(self, fw: _Folded, xla: bool) -> None:
        import tensorflow as tf

        u = fw.units
        names = ("w_gates", "b_gates", "hid_x", "hid_h", "hid_b", "wo", "bo")
        k = {name: tf.constant(getattr(fw, name)) for name in names}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, fw.n_features], tf.float32),
                tf.TensorSpec([None, 2 * u], tf.float32),
            ],
            jit_compile=xla,
            reduce_retracing=True,
        )
        def step(x, state):  # noqa: ANN001, ANN202
            h, c = state[:, :u], state[:, u:]
            t = tf.tanh(tf.matmul(tf.concat([x, h], axis=1), k["w_gates"]) + k["b_gates"])
            i = (t[:, :u] + 1.0) * 0.5
            f = (t[:, u : 2 * u] + 1.0) * 0.5
            o = (t[:, 2 * u : 3 * u] + 1.0) * 0.5
            new_c = f * c + i * t[:, 3 * u :]
            new_h = o * tf.tanh(new_c)
            hid = tf.nn.relu(tf.matmul(x, k["hid_x"]) + tf.matmul(new_h, k["hid_h"]) + k["hid_b"])
            out = tf.matmul(hid, k["wo"]) + k["bo"]
            return out, tf.concat([new_h, new_c], axis=1)

        self._step = step

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


def _world_paths(
    x: np.ndarray, y: np.ndarray, heading: np.ndarray, speed: np.ndarray,
    offsets_s: np.ndarray, res_fwd: np.ndarray, res_lat: np.ndarray, out: np.ndarray,
) -> None:
    """CV in the vehicle frame plus the residual, rotated and offset to x/y (float64),
    written to ``out`` (n, points, 2).

    The same as ``to_world(x, y, heading, cv_local(speed, offsets) + residual)`` with fewer
    temporaries.
    """
    c = np.cos(heading)[:, None]
    s = np.sin(heading)[:, None]
    fwd = speed[:, None] * offsets_s + res_fwd
    lat = res_lat.astype(np.float64)
    out[..., 0] = x[:, None] + c * fwd - s * lat
    out[..., 1] = y[:, None] + s * fwd + c * lat


class LstmPredictor:
    """The trained LSTM behind the :class:`model.predictors.Predictor` protocol.

    ``state`` rows are ``[h, c]`` (``state_dim = 2 * units``), zeros for a new vehicle. Paths are
    constant velocity in the vehicle frame plus the network's residual, rotated back to x/y.
    When ``uses_neighbours``, callers pass the vehicles around each one
    (:func:`model.neighbours.neighbour_features` over the tracker they just updated).
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
        if cfg.n_features not in (N_FEATURES, N_OWN_FEATURES):
            raise ConfigError(
                f"the LSTM weights expect {cfg.n_features} features, this code makes "
                f"{N_FEATURES} (or the vehicle's own {N_OWN_FEATURES})"
            )
        # Weights trained on the vehicle's own track alone ignore the neighbour inputs.
        self.uses_neighbours = cfg.n_features == N_FEATURES
        self._n_features = cfg.n_features
        self.spec = spec
        self.weights = weights
        self.state_dim = 2 * cfg.units
        self.backend = backend
        self._offsets = spec.offsets_s
        self._fw = _Folded(weights)
        self._sigma_scale = np.asarray(weights.sigma_scale, np.float32)
        self._p = cfg.points
        self._rows = ROWS_PER_BLOCK if backend == "numpy" else BUCKETS[-1]
        if backend == "numpy":
            self._core = lambda x, s: _numpy_core(self._fw, x, s)
        elif backend in ("tf", "tf-xla"):
            self._core = _TfCore(self._fw, xla=backend == "tf-xla")
        elif backend == "auto":
            xla = _TfCore(self._fw, xla=True)
            u, f = cfg.units, cfg.n_features
            for b in BUCKETS:  # compile now, not in the middle of the stream
                if b >= AUTO_XLA_MIN_ROWS:
                    xla(np.zeros((b, f), np.float32), np.zeros((b, 2 * u), np.float32))
            self._core = lambda x, s: (
                xla(x, s) if x.shape[0] >= AUTO_XLA_MIN_ROWS else _numpy_core(self._fw, x, s))
        else:
            raise ConfigError(
                f"unknown LSTM backend {backend!r}; expected numpy, tf, tf-xla or auto")

    def core(self, features: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network step on un-normalised features: (outputs (n, 3P), new state)."""
        return self._core(np.ascontiguousarray(features, np.float32), state)

    def step_full(
        self, kin: Kinematics, state: np.ndarray, neighbours: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`step`, also returning a 1-sigma position uncertainty (n, P) in metres:
        the network's, times the weights' calibration scale per point (model/calibration.py)."""
        state = np.asarray(state, np.float32)
        if kin.first.any():
            state = state.copy()
            state[kin.first] = 0.0
        feats = np.ascontiguousarray(raw_features(kin, neighbours)[:, : self._n_features],
                                     np.float32)
        n, p = feats.shape[0], self._p
        paths = np.empty((n, p, 2))
        new_state = np.empty((n, self.state_dim), np.float32)
        sigma = np.empty((n, p), np.float32)
        blocks = -(-n // self._rows)  # equal blocks: none of a few rows (see ROWS_PER_BLOCK)
        bounds = [n * i // blocks for i in range(blocks + 1)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            b = slice(lo, hi)
            out, new_state[b] = self._core(feats[b], state[b])
            _world_paths(kin.x[b], kin.y[b], kin.heading[b], kin.speed[b], self._offsets,
                         out[:, 0 : 2 * p : 2], out[:, 1 : 2 * p : 2], paths[b])
            np.exp(np.clip(out[:, 2 * p :], -4.0, 4.0), out=sigma[b])
        sigma *= self._sigma_scale
        return paths, new_state, sigma

    def step(
        self, kin: Kinematics, state: np.ndarray, neighbours: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paths and new state; ``neighbours``: model/neighbours.py's inputs (None: nobody
        around, what a vehicle alone on the road sees)."""
        paths, new_state, _ = self.step_full(kin, state, neighbours)
        return paths, new_state
