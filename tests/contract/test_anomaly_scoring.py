"""The anomaly scoring core (contract.anomaly): causality, bad inputs, ranges.

A causal stand-in for the graph (an exponential moving average of the input as the mean, a
fixed scale) runs the tests without any model; the shipped ONNX graph, when present, is run
through onnxruntime for the same properties.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract import anomaly as sc

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "models" / "anomaly").glob("*/*/card.json"))

CARD = {
    "scoring": {
        **sc.DEFAULT_SCORING,
        "warmup": 50,
        "long": 300,
        "min_history": 30,
        "suppress": 20,
        "spatial_tolerance": 0.01,
    }
}


def ema_graph(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal stand-in for the GRU: x [B, T, 1] -> (mean, log_scale) [B, T]."""
    u = x[..., 0].astype(np.float64)
    mean = np.zeros_like(u)
    if u.shape[1] == 0:
        return mean.astype(np.float32), mean.astype(np.float32)
    m = u[:, 0].copy()
    for t in range(u.shape[1]):
        m = 0.7 * m + 0.3 * u[:, t]
        mean[:, t] = m
    return mean.astype(np.float32), np.full_like(mean, -0.5, dtype=np.float32)


def score(values: np.ndarray, card: dict = CARD, graph=ema_graph) -> np.ndarray:
    x = sc.prepare(values, card)
    mean, log_scale = graph(x[None, :, None] if x.ndim == 1 else x[None])
    return sc.finish(values, {"mean": mean[0], "log_scale": log_scale[0]}, card)


def series(n: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 50 + 5 * np.sin(2 * np.pi * t / 20) + rng.normal(0, 0.5, n)
    v[600:610] += 25  # an anomaly
    return v


def test_scores_in_unit_interval_and_finds_the_anomaly():
    s = score(series())
    assert s.shape == (800,)
    assert np.all((s >= 0) & (s <= 1))
    assert np.all(s[: CARD["scoring"]["warmup"]] == 0)
    assert s[598:612].max() >= CARD["scoring"]["threshold"]
    assert s[598:612].max() == s[200:].max()


@pytest.mark.parametrize("cut", [0, 1, 49, 50, 51, 120, 333, 605, 799])
def test_prefix_consistency(cut):
    v = series()
    full = score(v)
    part = score(v[:cut])
    assert part.shape == (cut,)
    np.testing.assert_array_equal(part, full[:cut])


def test_future_values_do_not_change_past_scores():
    v = series()
    w = v.copy()
    w[500:] = w[500:] * 3 + 1000  # rewrite the future
    np.testing.assert_array_equal(score(v)[:500], score(w)[:500])


@pytest.mark.parametrize("lags", [[], [24, 48, 288]])
def test_prepare_is_prefix_consistent_after_warmup(lags):
    card = {"scoring": {**CARD["scoring"], "lags": lags}}
    v = series()
    x = sc.prepare(v, card)
    assert x.shape == ((800, 1 + len(lags)) if lags else (800,)) and x.dtype == np.float32
    np.testing.assert_array_equal(sc.prepare(v[:300], card), x[:300])


def test_lag_features_look_back_one_period_before_the_target():
    c = np.arange(10, dtype=np.float64)
    f = sc.lag_features(c, [3])
    # step t predicts t+1: the lag-3 input is c[t + 1 - 3], clamped to the first value
    assert f[:, 0].tolist() == c.tolist()
    assert f[:, 1].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert sc.lag_features(np.zeros((2, 5)), [2, 4]).shape == (2, 5, 3)


def test_nan_and_inf_score_zero_and_are_carried_forward():
    v = series()
    v[[100, 101, 300, 650]] = np.nan
    v[400] = np.inf
    x = sc.prepare(v, CARD)
    assert np.all(np.isfinite(x))
    assert x[100] == x[99] and x[101] == x[99]
    s = score(v)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert s[[100, 101, 300, 400, 650]].tolist() == [0.0] * 5


def test_leading_and_all_missing():
    v = series()
    v[:10] = np.nan
    assert np.all(np.isfinite(sc.prepare(v, CARD)))
    assert np.all(score(np.full(200, np.nan)) == 0)


@pytest.mark.parametrize("value", [0.0, 7.0, -3e12, 1e-30])
def test_constant_series_scores_zero(value):
    v = np.full(700, value)
    x = sc.prepare(v, CARD)
    assert np.all(x == 0)
    assert np.all(score(v) == 0)


def test_huge_magnitudes_are_finite_and_clipped():
    v = series() * 1e300
    x = sc.prepare(v, CARD)
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= CARD["scoring"]["clip"]
    s = score(v)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    v = series()
    v[700] = 1e308
    s = score(v)
    assert np.all(np.isfinite(s)) and s[700] >= CARD["scoring"]["threshold"]


@pytest.mark.parametrize("n", [0, 1, 2, 49])
def test_shorter_than_warmup_is_all_zero(n):
    v = series()[:n]
    assert sc.prepare(v, CARD).shape == (n,)
    s = score(v)
    assert s.shape == (n,) and np.all(s == 0)
    assert sc.prepare(v, {"scoring": {**CARD["scoring"], "lags": [5]}}).shape == (n, 2)


def test_scale_is_the_same_for_shifted_and_scaled_series():
    v = series()
    a, b = score(v), score(v * 1000 + 5e6)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_suppression_keeps_one_alarm_per_event():
    p = {
        **CARD["scoring"],
        "suppress": 5,
        "refractory": 0,
        "threshold": 0.5,
        "suppress_factor": 0.0,
    }
    s = np.array([0, 0.9, 0.9, 0.9, 0, 0, 0, 0.9, 0, 0.6])
    out = sc.suppress(s, p)
    assert out.tolist() == [0, 0.9, 0, 0, 0, 0, 0, 0.9, 0, 0]


def test_refractory_period_lets_only_strong_alarms_through():
    p = {
        **CARD["scoring"],
        "suppress": 2,
        "refractory": 6,
        "refractory_threshold": 0.95,
        "threshold": 0.5,
        "suppress_factor": 0.0,
    }
    s = np.array([0.9, 0.9, 0, 0, 0.7, 1.0, 0, 0, 0, 0, 0, 0, 0.6])
    out = sc.suppress(s, p)
    # 0: fires; 1: suppressed; 4: weak inside the refractory period; 5: strong, fires;
    # 12: 7 points after the last alarm, past the refractory period, fires
    assert np.flatnonzero(out >= 0.5).tolist() == [0, 5, 12]


def test_outputs_length_mismatch_is_an_error():
    v = series()
    with pytest.raises(ValueError):
        sc.finish(v, {"mean": np.zeros(10), "log_scale": np.zeros(10)}, CARD)


def test_upper_tail_matches_reference_values():
    import math

    xs = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 20.0])
    ref = [math.log10(0.5 * math.erfc(x / math.sqrt(2))) for x in xs]
    np.testing.assert_allclose(sc._log10_upper_tail(xs), ref, rtol=1e-5, atol=1e-7)


def test_scoring_core_imports_no_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys, contract.anomaly; "
        "bad = [m for m in ('torch', 'onnxruntime', 'fastapi') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.skipif(not SHIPPED, reason="no shipped anomaly model")
@pytest.mark.parametrize("card_path", SHIPPED, ids=lambda p: p.parent.parent.name)
def test_shipped_model_through_onnxruntime(card_path):
    import onnxruntime as ort

    card = json.loads(card_path.read_text())
    assert card["task"] == "anomaly"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(card_path.parent / card["onnx"]["file"]), opts)
    in_name = card["onnx"]["inputs"][0]["name"]
    out_names = [o["name"] for o in card["onnx"]["outputs"]]

    def graph(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = sess.run(out_names, {in_name: x.astype(np.float32)})
        return mean, log_scale

    n = int(card["scoring"]["warmup"]) + 600
    v = series(n, seed=3)
    v[n - 150] += 60
    full = score(v, card, graph)
    assert np.all((full >= 0) & (full <= 1))
    assert full[n - 150] >= card["threshold"]
    for cut in (int(card["scoring"]["warmup"]) + 1, n - 151, n - 149):
        np.testing.assert_allclose(score(v[:cut], card, graph), full[:cut], atol=1e-6)
    # batching: right-padding one row to another's length does not change its scores
    a, b = sc.prepare(v[:400], card), sc.prepare(v, card)
    f = card["onnx"]["inputs"][0]["shape"][-1]
    batch = np.full((2, n, f), sc.PAD_VALUE, np.float32)
    batch[0, :400], batch[1] = a.reshape(400, f), b.reshape(n, f)
    mean, log_scale = graph(batch)
    s0 = sc.finish(v[:400], {"mean": mean[0, :400], "log_scale": log_scale[0, :400]}, card)
    np.testing.assert_allclose(s0, full[:400], atol=1e-6)
    flat = score(np.full(n, 3.0), card, graph)  # a constant series: ~0, never an alarm
    assert flat.max() < 0.1 and flat.max() < card["threshold"]


def test_score_series_is_prepare_graph_finish():
    v = series()
    np.testing.assert_array_equal(sc.score_series(v, ema_graph, CARD), score(v))
