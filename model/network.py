"""The Keras sequence model used for training, built around one ``LSTMCell``.

``keras.layers.RNN(LSTMCell)`` runs the cell over whole sequences for training; the streaming
runtime (model/runtime.py) runs the same cell weights one observation at a time. Inputs are
normalised features (model/features.py); outputs per step are the path residual over
constant velocity in the vehicle frame (metres, x/y interleaved per point) followed by one
log-sigma per point. Importing this module imports TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from trajstream.model.weights_io import LstmWeights, NetworkConfig


class FixedScale(keras.layers.Layer):
    """Multiplies by a constant per channel so the last Dense layer works in unit scale."""

    def __init__(self, scale: np.ndarray, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._init_scale = np.asarray(scale, np.float32)

    def build(self, input_shape: tuple) -> None:
        self.scale = self.add_weight(
            shape=self._init_scale.shape,
            initializer=keras.initializers.Constant(self._init_scale),
            trainable=False,
            name="scale",
        )

    def call(self, x):  # noqa: ANN001, ANN201 - Keras tensors
        return x * self.scale


def build_sequence_model(cfg: NetworkConfig, out_scale: np.ndarray) -> keras.Model:
    """(batch, time, F) normalised features -> (batch, time, 3P) residual means + log-sigmas."""
    inputs = keras.Input(shape=(None, cfg.n_features), name="features")
    cell = keras.layers.LSTMCell(cfg.units, name="cell")
    h = keras.layers.RNN(cell, return_sequences=True, name="lstm")(inputs)
    z = keras.layers.Concatenate(name="skip")([h, inputs])
    z = keras.layers.Dense(cfg.head_units, activation="relu", name="hidden")(z)
    z = keras.layers.Dense(
        3 * cfg.points, name="out", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)
    )(z)
    out = FixedScale(out_scale, name="scale")(z)
    return keras.Model(inputs, out, name="trajectory_lstm")


def masked_losses(points: int, sigma_weight: float = 0.05):  # noqa: ANN201 - Keras loss fns
    """Loss and metric over y_true = [residual targets (2P), mask (1)] per step.

    The loss is the mean squared Euclidean error per point (m^2) over valid steps, plus a
    small Gaussian negative log-likelihood for the sigma head computed on the *detached*
    errors, so the uncertainty head never pulls the mean away from the least-squares fit.
    """
    two_p = 2 * points

    def split(y_true, y_pred):  # noqa: ANN001, ANN202
        target = y_true[..., :two_p]
        mask = y_true[..., two_p]
        err = y_pred[..., :two_p] - target
        sq = err[..., 0::2] ** 2 + err[..., 1::2] ** 2  # (B, T, P) squared distance
        n = ops.maximum(ops.sum(mask), 1.0)
        return sq, mask, n

    def loss(y_true, y_pred):  # noqa: ANN001, ANN202
        sq, mask, n = split(y_true, y_pred)
        mse = ops.sum(ops.mean(sq, axis=-1) * mask) / n
        log_sigma = ops.clip(y_pred[..., two_p:], -4.0, 4.0)
        nll = ops.stop_gradient(sq) * 0.5 * ops.exp(-2.0 * log_sigma) + 2.0 * log_sigma
        return mse + sigma_weight * ops.sum(ops.mean(nll, axis=-1) * mask) / n

    def rmse_m(y_true, y_pred):  # noqa: ANN001, ANN202
        sq, mask, n = split(y_true, y_pred)
        return ops.sqrt(ops.sum(ops.mean(sq, axis=-1) * mask) / n)

    return loss, rmse_m


def weights_from_keras(
    model: keras.Model,
    cfg: NetworkConfig,
    feat_mean: np.ndarray,
    feat_std: np.ndarray,
    meta: dict | None = None,
) -> LstmWeights:
    cell = model.get_layer("lstm").cell
    hidden = model.get_layer("hidden")
    out = model.get_layer("out")
    f32 = np.float32
    return LstmWeights(
        config=cfg,
        feat_mean=np.asarray(feat_mean, f32),
        feat_std=np.asarray(feat_std, f32),
        kernel=np.asarray(cell.kernel.numpy(), f32),
        recurrent=np.asarray(cell.recurrent_kernel.numpy(), f32),
        bias=np.asarray(cell.bias.numpy(), f32),
        hidden_w=np.asarray(hidden.kernel.numpy(), f32),
        hidden_b=np.asarray(hidden.bias.numpy(), f32),
        out_w=np.asarray(out.kernel.numpy(), f32),
        out_b=np.asarray(out.bias.numpy(), f32),
        out_scale=np.asarray(model.get_layer("scale").scale.numpy(), f32),
        meta=dict(meta or {}),
    )


def keras_from_weights(w: LstmWeights) -> keras.Model:
    """The sequence model carrying exactly the given weights (for parity checks, fine-tuning)."""
    model = build_sequence_model(w.config, w.out_scale)
    cell = model.get_layer("lstm").cell
    cell.kernel.assign(w.kernel)
    cell.recurrent_kernel.assign(w.recurrent)
    cell.bias.assign(w.bias)
    model.get_layer("hidden").set_weights([w.hidden_w, w.hidden_b])
    model.get_layer("out").set_weights([w.out_w, w.out_b])
    return model
