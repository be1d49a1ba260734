"""The streaming step equals the Keras sequence model it was trained as (the parity test),
and load_predictor serves the shipped weights."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from trajstream.errors import ConfigError
from trajstream.model import SHIPPED_WEIGHTS, load_predictor
from trajstream.model.data import event_time_order, parse_positions, replay
from trajstream.model.features import cv_local, raw_features, to_world
from trajstream.model.kinematics import Kinematics
from trajstream.model.neighbours import N_NEIGHBOUR_FEATURES
from trajstream.model.predictors import PathSpec
from trajstream.model.runtime import BUCKETS, ROWS_PER_BLOCK, LstmPredictor, bucket_size
from trajstream.model.synthetic import synthetic_records
from trajstream.model.weights_io import LstmWeights

T = 60  # fixes per vehicle in the parity sequences


@pytest.fixture(scope="module")
def weights() -> LstmWeights:
    return LstmWeights.load(SHIPPED_WEIGHTS)


@pytest.fixture(scope="module")
def sequences():
    """Kinematics of 6 vehicles over their first T fixes, as (T,) list of batches of 6."""
    recs = synthetic_records(11, vehicles=6, duration_s=10.0)
    rep = replay(event_time_order(parse_positions(orjson.dumps(r) for r in recs)[0]))
    rows = [np.flatnonzero(rep.pos.vehicle == v)[:T] for v in range(6)]
    assert all(r.size == T for r in rows)
    return [rep.kin.take(np.array([r[t] for r in rows])) for t in range(T)]


@pytest.fixture(scope="module")
def around():
    """Vehicles around each of the 6 at every step (model/neighbours.py's inputs): some
    zones empty (zeros), the others near/closing values as the processor computes them."""
    rng = np.random.default_rng(5)
    nb = rng.uniform(-3.0, 3.0, (T, 6, N_NEIGHBOUR_FEATURES))
    nb[..., 0] = rng.uniform(0.0, 1.0, (T, 6))  # the leader's nearness
    nb[rng.random((T, 6, N_NEIGHBOUR_FEATURES)) < 0.3] = 0.0
    return list(nb)


def _features(weights: LstmWeights, kin: Kinematics, nb: np.ndarray) -> np.ndarray:
    return raw_features(kin, nb)[:, : weights.config.n_features]


def _keras_outputs(weights: LstmWeights, steps: list[Kinematics],
                   around: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    import keras

    from trajstream.model.network import keras_from_weights

    model = keras_from_weights(weights)
    feats = np.stack([_features(weights, k, nb) for k, nb in zip(steps, around, strict=True)],
                     axis=1)  # (B, T, F)
    norm = ((feats - weights.feat_mean) / weights.feat_std).astype(np.float32)
    out = np.asarray(model(norm))
    # final (h, c) from the same layers, for the state parity
    rnn = model.get_layer("lstm")
    seq = keras.layers.RNN(rnn.cell, return_state=True)
    _, h, c = seq(norm)
    return out, np.asarray(h), np.asarray(c)


@pytest.mark.parametrize("backend", ["numpy", "tf", "tf-xla", "auto"])
def test_step_matches_keras_sequence(weights, sequences, around, backend):
    """One fix at a time through the runtime == the Keras RNN over the whole sequence.

    Compared in the network's own output units (the last Dense layer, before the fixed
    per-point metre scale) and on h/c at 1e-5 (relative for c); absolute paths at 0.1 mm;
    sigmas (the network's times the weights' calibration scale) at 1e-5 relative.
    """
    scale = np.linspace(0.5, 1.5, weights.config.points).astype(np.float32)
    weights = dataclasses.replace(weights, sigma_scale=scale)
    pred = LstmPredictor(weights, backend=backend)
    p = weights.config.points
    u = weights.config.units
    seq_out, seq_h, seq_c = _keras_outputs(weights, sequences, around)
    state = np.zeros((6, pred.state_dim), np.float32)
    for t, kin in enumerate(sequences):
        out, _ = pred.core(_features(weights, kin, around[t]), state)
        np.testing.assert_allclose(out / weights.out_scale, seq_out[:, t] / weights.out_scale,
                                   rtol=0, atol=1e-5, err_msg=f"step {t}")
        paths, new_state, sigma = pred.step_full(kin, state, around[t])
        np.testing.assert_array_equal(pred.step(kin, state, around[t])[0], paths)
        state = new_state
        expect_sigma = np.exp(np.clip(seq_out[:, t, 2 * p :], -4.0, 4.0)) * scale
        np.testing.assert_allclose(sigma, expect_sigma, rtol=1e-5, err_msg=f"step {t}")
        local = cv_local(kin.speed, pred.spec.offsets_s) + seq_out[:, t, : 2 * p].reshape(-1, p, 2)
        expect = to_world(kin.x, kin.y, kin.heading, local)
        np.testing.assert_allclose(paths, expect, rtol=0, atol=1e-4, err_msg=f"step {t}")
    np.testing.assert_allclose(state[:, :u], seq_h, rtol=0, atol=1e-5)
    # c is unbounded (tens in practice): same bound, relative to its size
    np.testing.assert_allclose(state[:, u:], seq_c, rtol=1e-5, atol=1e-5)
    assert np.abs(seq_out).max() > 0.1  # a non-trivial network, not zeros compared with zeros


def test_backends_agree_across_buckets(weights):
    rng = np.random.default_rng(0)
    ref = LstmPredictor(weights, backend="numpy")
    others = [LstmPredictor(weights, backend=b) for b in ("tf", "auto")]
    for n in (1, 63, 65, 600, BUCKETS[-1] + 5):
        x = rng.normal(0, 2, (n, weights.config.n_features)).astype(np.float32)
        s = rng.normal(0, 0.5, (n, ref.state_dim)).astype(np.float32)
        a_out, a_s = ref.core(x, s)
        for other in others:
            b_out, b_s = other.core(x, s)
            assert b_out.shape == a_out.shape and b_s.shape == a_s.shape
            np.testing.assert_allclose(b_out, a_out, atol=2e-5, rtol=1e-5)
            np.testing.assert_allclose(b_s, a_s, atol=2e-5, rtol=1e-5)
    assert [bucket_size(n) for n in (1, 64, 65, 1024, 1025, 10**5)] == [
        64, 64, 256, 1024, 4096, BUCKETS[-1]]


def test_a_batch_stepped_in_blocks_gives_its_rows_the_numbers_of_a_small_batch(sequences):
    """Large batches are stepped in blocks of rows (for the cache): a vehicle's prediction
    must not depend on where in the batch it stands beyond float32 rounding, and the same
    batch must give the same bits every time (replays compare alerts byte for byte). To the
    bit across batch sizes is the BLAS kernel's to give: OpenBLAS's Haswell kernels gave it
    from 7 rows a call on the CPU of 2026-12-05; on an AVX2 AMD EPYC the last bits differ
    with a row's place in any call (paths by up to 6e-5 m; outputs are rounded to 1 cm)."""
    pred = load_predictor("lstm")
    n = 2 * ROWS_PER_BLOCK + 5
    rng = np.random.default_rng(3)
    pick = rng.integers(0, 6, n)
    kin = sequences[10].take(pick)
    kin = dataclasses.replace(kin, x=kin.x + rng.uniform(-500, 500, n),
                              speed=kin.speed * rng.uniform(0.5, 1.5, n))
    state = rng.normal(0, 0.5, (n, pred.state_dim)).astype(np.float32)
    nb = rng.uniform(0.0, 1.0, (n, N_NEIGHBOUR_FEATURES))
    whole = pred.step_full(kin, state, nb)
    for name, w, again in zip(("paths", "state", "sigma"), whole,
                              pred.step_full(kin, state, nb), strict=True):
        np.testing.assert_array_equal(w, again, err_msg=name)
    rows = np.r_[0:7, ROWS_PER_BLOCK - 3: ROWS_PER_BLOCK + 3, n - 4: n]
    part = pred.step_full(kin.take(rows), state[rows], nb[rows])
    # float32 carries ~7 digits: 1e-3 m is a tenth of the output's resolution at +-1 km
    for name, w, p, atol in zip(("paths", "state", "sigma"), whole, part, (1e-3, 1e-5, 1e-5),
                                strict=True):
        assert w.shape[0] == n
        np.testing.assert_allclose(w[rows], p, rtol=1e-5, atol=atol, err_msg=name)


def test_first_fix_ignores_incoming_state(weights, sequences):
    pred = load_predictor("lstm")
    kin = sequences[0]
    assert kin.first.all()
    a, sa = pred.step(kin, np.zeros((6, pred.state_dim), np.float32))
    b, sb = pred.step(kin, np.full((6, pred.state_dim), 3.0, np.float32))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_load_predictor_shipped_weights(sequences):
    pred = load_predictor("lstm")
    assert pred.name == "lstm"
    assert pred.state_dim == 2 * pred.weights.config.units
    state = np.zeros((6, pred.state_dim), np.float32)
    for kin in sequences[:20]:
        paths, state = pred.step(kin, state)
        assert paths.shape == (6, 20, 2) and state.shape == (6, pred.state_dim)
        assert np.isfinite(paths).all() and np.isfinite(state).all()
        # the first point is within a few metres of CV: a sane model, not noise
        cv = load_predictor("cv").step(kin, np.zeros((6, 0)))[0]
        assert np.abs(paths[:, 0] - cv[:, 0]).max() < 5.0
    _, _, sigma = pred.step_full(sequences[-1], state)
    assert sigma.shape == (6, 20) and (sigma > 0).all()
    assert load_predictor("cv").name == "cv" and load_predictor("ctrv").state_dim == 0


def test_sigma_scale_round_trips_and_old_files_load_uncalibrated(weights, tmp_path):
    p = weights.config.points
    assert weights.sigma_scale.shape == (p,)
    old = tmp_path / "old.npz"  # a file from before the calibration: no sigma_scale array
    with np.load(SHIPPED_WEIGHTS) as npz:
        np.savez(old, **{k: npz[k] for k in npz.files if k != "sigma_scale"})
    np.testing.assert_array_equal(LstmWeights.load(old).sigma_scale, np.ones(p))
    scaled = dataclasses.replace(weights, sigma_scale=np.full(p, 0.7, np.float32))
    scaled.save(tmp_path / "scaled.npz")
    back = LstmWeights.load(tmp_path / "scaled.npz")
    np.testing.assert_array_equal(back.sigma_scale, scaled.sigma_scale)
    _, _, s1 = LstmPredictor(weights).step_full(*_first_step(weights))
    _, _, s2 = LstmPredictor(back).step_full(*_first_step(weights))
    np.testing.assert_allclose(s2, 0.7 * s1 / weights.sigma_scale, rtol=1e-6)
    for bad in (np.zeros(p), np.ones(p + 1)):
        dataclasses.replace(weights, sigma_scale=bad.astype(np.float32)).save(tmp_path / "b.npz")
        with pytest.raises(ConfigError, match="sigma_scale"):
            LstmWeights.load(tmp_path / "b.npz")


def _first_step(weights: LstmWeights) -> tuple[Kinematics, np.ndarray]:
    recs = synthetic_records(3, vehicles=4, duration_s=3.0)
    rep = replay(event_time_order(parse_positions(orjson.dumps(r) for r in recs)[0]))
    return rep.kin.take(rep.groups[0]), np.zeros((rep.groups[0].size, 2 * weights.config.units),
                                                 np.float32)


def test_load_predictor_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown predictor"):
        load_predictor("gru")
    with pytest.raises(ConfigError, match="20 points every 0.2 s"):
        load_predictor("lstm", PathSpec(horizon_s=3.0))
    bad = tmp_path / "w.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ConfigError, match="cannot load LSTM weights"):
        load_predictor("lstm", weights=bad)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("TRAJSTREAM_LSTM_BACKEND", "tf")
    assert load_predictor("lstm").backend == "tf"
    assert load_predictor("lstm", backend="numpy").backend == "numpy"
    monkeypatch.setenv("TRAJSTREAM_LSTM_BACKEND", "cuda")
    with pytest.raises(ConfigError, match="unknown LSTM backend 'cuda'"):
        load_predictor("lstm")


def test_baselines_and_numpy_lstm_do_not_import_tensorflow():
    code = (
        "import sys, numpy as np; from model import load_predictor;"
        "[load_predictor(n) for n in ('cv', 'ctrv', 'lstm')];"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRAJSTREAM_LSTM_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out == ["False", "False"]
