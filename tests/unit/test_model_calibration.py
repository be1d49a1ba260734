"""The sigma calibration: its figures on errors of known distribution, and the fitted scale;
the residual shrink."""

from __future__ import annotations

import numpy as np

from trajstream.model.calibration import (
    GAUSSIAN_WITHIN,
    RAYLEIGH_MEDIAN,
    calibration,
    fit_residual_shrink,
    fit_sigma_scale,
    per_source_weights,
)
from trajstream.model.predictors import PathSpec


def _gaussian_errors(rng: np.random.Generator, sigma: np.ndarray, n: int) -> np.ndarray:
    """Euclidean errors of a 2-D Gaussian with per-axis sigma (n, P)."""
    xy = rng.normal(0.0, 1.0, (n, sigma.shape[-1], 2)) * sigma[..., None]
    return np.hypot(xy[..., 0], xy[..., 1])


def test_calibrated_gaussian_shows_the_reference_figures():
    rng = np.random.default_rng(1)
    spec = PathSpec()
    sigma = rng.uniform(0.2, 3.0, (40_000, spec.points))  # a different sigma per prediction
    cal = calibration(_gaussian_errors(rng, sigma, 40_000), sigma, spec, (1, 2, 3, 4))
    assert set(cal) == {"1", "2", "3", "4"}
    for c in cal.values():
        assert abs(c["median_z"] - RAYLEIGH_MEDIAN) < 0.02
        assert abs(c["within_1"] - GAUSSIAN_WITHIN[1]) < 0.01
        assert abs(c["within_2"] - GAUSSIAN_WITHIN[2]) < 0.01


def test_fitted_scale_undoes_a_wrong_sigma_per_point():
    rng = np.random.default_rng(2)
    p = 20
    true = rng.uniform(0.5, 2.0, (30_000, p))
    wrong = np.linspace(0.5, 2.0, p)  # the predictor's sigma off by this factor per point
    err = _gaussian_errors(rng, true, 30_000)
    scale = fit_sigma_scale(err, true / wrong)
    assert scale.shape == (p,) and scale.dtype == np.float32
    np.testing.assert_allclose(scale, wrong, rtol=0.03)
    cal = calibration(err, true / wrong * scale, PathSpec(), (4,))
    assert abs(cal["4"]["within_2"] - GAUSSIAN_WITHIN[2]) < 0.005


def test_heavy_tails_fit_the_two_sigma_share_not_the_median():
    """A mixture of small errors and a few large misses (real traffic): the scale puts 86.5%
    within 2 sigma, and the median error is then well below the Gaussian's."""
    rng = np.random.default_rng(3)
    sigma = np.ones((20_000, 1))
    err = _gaussian_errors(rng, sigma, 20_000)
    err[:3000] *= 6.0  # 15% large misses
    scale = fit_sigma_scale(err, sigma)
    cal = calibration(err, sigma * scale, PathSpec(step_s=4.0), (4,))["4"]
    assert abs(cal["within_2"] - GAUSSIAN_WITHIN[2]) < 0.005
    assert cal["median_z"] < 0.8 * RAYLEIGH_MEDIAN


def test_no_predictions_give_ones_and_empty_figures():
    empty = np.zeros((0, 20))
    np.testing.assert_array_equal(fit_sigma_scale(empty, empty), np.ones(20))
    assert calibration(empty, empty, PathSpec(), (1,)) == {
        "1": {"median_z": None, "within_1": None, "within_2": None}}


def test_sources_count_alike_however_many_predictions_each_holds():
    """A big simulated source with a right sigma and a small recorded one whose errors are
    3x its sigma: weighted, each holds its share of the fit, so the 2-sigma share over the
    two sources taken alike is the Gaussian's."""
    rng = np.random.default_rng(4)
    big, small = 40_000, 800
    sigma = np.ones((big + small, 3))
    err = _gaussian_errors(rng, sigma, big + small)
    err[big:] *= 3.0
    w = per_source_weights([big, small])
    assert w.shape == (big + small,) and abs(w[:big].sum() - w[big:].sum()) < 1e-9
    plain = fit_sigma_scale(err, sigma)
    alike = fit_sigma_scale(err, sigma, w)
    assert (plain < 1.1).all() and (alike > 1.3).all()
    within = (err <= 2.0 * alike * sigma)
    shares = [within[:big].mean(0), within[big:].mean(0)]
    np.testing.assert_allclose((shares[0] + shares[1]) / 2.0, GAUSSIAN_WITHIN[2], atol=0.005)
    # equal weights give the plain quantile's answer (to the sample spacing)
    np.testing.assert_allclose(fit_sigma_scale(err, sigma, np.ones(big + small)), plain,
                               rtol=1e-3)


def test_residual_shrink_weighs_sources_alike_and_only_shrinks():
    rng = np.random.default_rng(3)
    p = PathSpec().points

    def source(n: int, gain: np.ndarray, cv_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Targets of CV error ``cv_m``; residuals the targets times ``gain`` (P, 2) plus
        nothing else, so the least-squares factor of this source alone is 1 / gain."""
        t = rng.normal(0.0, cv_m, (n, p, 2))
        return t * gain, t

    exact = np.ones((p, 2))
    over = np.full((p, 2), 2.0)  # a source whose corrections are twice what happens
    (r1, t1), (r2, t2) = source(100, over, 1.0), source(10_000, exact, 1.0)
    k = fit_residual_shrink(np.r_[r1, r2], np.r_[t1, t2], [100, 10_000])
    # each source alike: the joint factor sits between 1/2 and 1, not at the big one's 1
    assert k.shape == (p, 2) and np.all(k > 0.55) and np.all(k < 0.7)
    # a source's weight is its inverse CV error: the same errors scaled count alike
    (r3, t3) = r2 * 10.0, t2 * 10.0
    np.testing.assert_allclose(fit_residual_shrink(np.r_[r1, r3], np.r_[t1, t3], [100, 10_000]),
                               k, rtol=1e-5)
    # one exact source: factor 1; corrections smaller than what happens are not grown
    np.testing.assert_allclose(fit_residual_shrink(r2, t2, [10_000]), 1.0, rtol=1e-6)
    assert np.all(fit_residual_shrink(t2 * 0.5, t2, [10_000]) == 1.0)
