"""How well the LSTM's predicted sigma matches its realised error, and the per-point scale
that calibrates it.

The network's sigma is trained as the per-axis 1-sigma of an isotropic 2-D Gaussian position
error (model/network.py's NLL), and the risk stage reads it as the path's 1-sigma along the
heading (stream/risk.py). How well it matches the errors differs from one training run to the
next. A per-point scale fitted on validation data pins it to one meaning: as many errors
fall within 2 sigma as a 2-D Gaussian's (86.5%). Real errors are heavier-tailed than a
Gaussian (at 4 s their median is only ~0.65 sigma while ~88% are within 2 sigma), so no
single scale matches both; the 2-sigma share is the one a collision warner depends on: how
often a vehicle ends up far from where it was predicted. Every validation source counts
alike (a simulated city holds ~50x the predictions of the recorded validation). The median
of ``|error| / sigma`` and the 1-sigma share are reported beside it.
"""

from __future__ import annotations

import numpy as np

from trajstream.model.predictors import PathSpec

RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))  # median |e| / sigma of a 2-D Gaussian
# Shares of a calibrated 2-D Gaussian's errors within 1 and 2 sigma (the reference columns)
GAUSSIAN_WITHIN = {1: float(1.0 - np.exp(-0.5)), 2: float(1.0 - np.exp(-2.0))}
SCALE_BOUNDS = (0.1, 10.0)


def fit_sigma_scale(errors: np.ndarray, sigmas: np.ndarray,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Per point (P,): the factor that puts the Gaussian's share of ``errors`` within
    ``2 * factor * sigmas``. ``errors`` and ``sigmas`` (n, P) are Euclidean errors and the
    sigmas the predictor gave for them, ``weights`` (n,) what each prediction counts (None:
    alike; see :func:`per_source_weights`); ones when there is no prediction."""
    if not len(errors):
        return np.ones(errors.shape[1], np.float32)
    z = errors.astype(np.float64) / np.maximum(sigmas.astype(np.float64), 1e-6)
    if weights is None:
        scale = np.quantile(z, GAUSSIAN_WITHIN[2], axis=0) / 2.0
    else:
        order = np.argsort(z, axis=0)
        cum = np.cumsum(np.asarray(weights, np.float64)[order], axis=0)
        k = (cum < GAUSSIAN_WITHIN[2] * cum[-1]).sum(axis=0)  # first row reaching the share
        cols = np.arange(z.shape[1])
        scale = z[order[np.minimum(k, len(z) - 1), cols], cols] / 2.0
    return np.clip(scale, *SCALE_BOUNDS).astype(np.float32)


def per_source_weights(counts: list[int]) -> np.ndarray:
    """Row weights giving each source (``counts`` predictions each, rows in that order) the
    same total: a few thousand recorded predictions count as much as a simulated city's
    hundreds of thousands, so the sigma is calibrated for real traffic too."""
    return np.concatenate([np.full(n, 1.0 / max(n, 1)) for n in counts])


def calibration(errors: np.ndarray, sigmas: np.ndarray, spec: PathSpec,
                horizons_s: tuple[int, ...]) -> dict[str, dict[str, float | None]]:
    """Per horizon: median ``|e| / sigma`` (calibrated: 1.18) and the shares of errors
    within 1 and 2 sigma (calibrated: 0.39 and 0.86)."""
    out: dict[str, dict[str, float | None]] = {}
    for h in horizons_s:
        k = int(round(h / spec.step_s)) - 1
        if k >= errors.shape[1]:
            continue
        if not len(errors):
            out[str(h)] = {"median_z": None, "within_1": None, "within_2": None}
            continue
        z = errors[:, k].astype(np.float64) / np.maximum(sigmas[:, k].astype(np.float64), 1e-6)
        out[str(h)] = {"median_z": round(float(np.median(z)), 4),
                       "within_1": round(float(np.mean(z <= 1.0)), 4),
                       "within_2": round(float(np.mean(z <= 2.0)), 4)}
    return out


def fit_residual_shrink(residuals: np.ndarray, targets: np.ndarray,
                        counts: list[int]) -> np.ndarray:
    """Per point and axis (P, 2: along, across the heading) the factor in [0, 1] on the
    network's path over constant velocity that minimises the validation error relative to
    constant velocity's, each source alike.

    ``residuals`` and ``targets`` (n, P, 2) are the predicted and observed paths minus
    constant velocity in the vehicle frame, rows grouped by source (``counts`` each). A
    network trained on a simulator-heavy mix is sure of corrections that real roads only
    partly bear out (on recorded validation its least-squares factor is ~0.3 sideways at
    1 s, ~0.75 along); on simulated validation ~0.9-1. Weighting each source's squared
    error by the inverse of its constant-velocity error makes the fit minimise the sum of
    the per-source ratios to CV, the figure the acceptance reads, so a few thousand recorded
    predictions count as much as a simulated city's hundreds of thousands.
    """
    p = residuals.shape[1]
    num, den = np.zeros((p, 2)), np.zeros((p, 2))
    start = 0
    for n in counts:
        r = residuals[start: start + n].astype(np.float64)
        t = targets[start: start + n].astype(np.float64)
        start += n
        if not n:
            continue
        cv_mse = np.maximum((t * t).sum(-1).mean(0), 1e-9)[:, None]  # (P, 1)
        num += (r * t).sum(0) / (n * cv_mse)
        den += (r * r).sum(0) / (n * cv_mse)
    return np.clip(np.where(den > 0, num / np.maximum(den, 1e-12), 1.0), 0.0, 1.0).astype(
        np.float32)
