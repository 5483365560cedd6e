"""The change detectors of contract.anomaly (level shift, variance change) and their place in
``finish``: each fires on its synthetic event and not on stationary noise, is causal, and is
off in the nab-gru:1 card (which scores exactly as before)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract import anomaly as sc

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "models" / "anomaly" / "nab-gru" / "1"

ON = {
    **sc.DEFAULT_SCORING,
    "warmup": 100,
    "shift_short": 10,
    "shift_long": 300,
    "var_short": 20,
    "var_long": 300,
}


def noise(n: int = 1500, seed: int = 0) -> np.ndarray:
    return 10 + np.random.default_rng(seed).normal(0, 1, n)


def change(values: np.ndarray, **knobs: object) -> np.ndarray:
    p = {**ON, **knobs}
    u = sc.normalise(values, p)
    valid = np.ones(len(values), bool)
    valid[: p["warmup"] + 1] = False
    return sc.change_scores(np.clip(u, -p["clip"], p["clip"]), valid, p)


def ema_graph(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = x[..., 0].astype(np.float64)
    mean = np.zeros_like(u)
    m = u[:, 0].copy() if u.shape[1] else np.zeros(u.shape[0])
    for t in range(u.shape[1]):
        m = 0.7 * m + 0.3 * u[:, t]
        mean[:, t] = m
    return mean.astype(np.float32), np.full_like(mean, -0.5, dtype=np.float32)


def score(values: np.ndarray, card: dict) -> np.ndarray:
    return sc.score_series(values, ema_graph, card)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationary_noise_raises_no_change_alarm(seed):
    s = change(noise(seed=seed))  # the default knobs: shift_scale 1, var_log_ratio 1.5
    assert s.max() < 0.4


def test_level_shift_fires_the_shift_detector_soon_after_the_shift():
    v = noise()
    v[1000:] += 5.0  # five noise sds (z 3.9 against the reference window scores 0.4)
    s = change(v, var_short=0)
    assert s[:1000].max() < 0.4
    hits = np.flatnonzero(s >= 0.4)
    assert len(hits) and 1000 <= hits[0] <= 1010
    # the variance detector alone barely reacts to a clean level shift
    assert change(v, shift_short=0)[1000:].max() < change(v, var_short=0)[1000:].max()


@pytest.mark.parametrize("factor", [4.0, 0.1])  # variance up, and a near flat-line
def test_variance_change_fires_the_variance_detector(factor):
    v = noise()
    v[1000:] = 10 + (v[1000:] - 10) * factor
    s = change(v, shift_short=0)
    assert s[:1000].max() < 0.4
    hits = np.flatnonzero(s >= 0.4)
    assert len(hits) and 1000 <= hits[0] <= 1040  # within two short windows


def test_detectors_off_score_zero_and_wait_for_full_windows():
    v = noise()
    v[1000:] += 5
    assert change(v, shift_short=0, var_short=0).max() == 0
    s = change(v)
    assert np.all(s[: ON["warmup"] + 1 + 10 + 300 - 1] == 0)


def test_spike_and_level_shift_alarm_through_finish_and_noise_does_not():
    # range check off: new extremes of Gaussian noise are its business (tested elsewhere)
    card = {"scoring": {**ON, "long": 300, "min_history": 30, "spatial_tolerance": 0.0}}
    off = {"scoring": {**card["scoring"], "shift_short": 0, "var_short": 0}}
    v = noise(seed=5)
    thr = sc.threshold(card)
    # on noise the change detectors add no alarm to those of the likelihood
    assert np.array_equal(
        np.flatnonzero(score(v, card) >= thr), np.flatnonzero(score(v, off) >= thr)
    )
    spike = v.copy()
    spike[1200] += 12
    assert score(spike, card)[1200:1202].max() >= thr  # the likelihood, at most a step late
    shift = v.copy()
    shift[1200:] += 5.0
    hits = np.flatnonzero(score(shift, card)[1100:] >= sc.threshold(card)) + 1100
    assert len(hits) and 1200 <= hits[0] <= 1215


@pytest.mark.parametrize("cut", [0, 1, 99, 101, 410, 999, 1001, 1200, 1499])
def test_change_detectors_are_causal(cut):
    card = {"scoring": {**ON, "long": 300, "min_history": 30}}
    v = noise(seed=7)
    v[1000:] += 3
    v[1200:] *= 3
    full = score(v, card)
    np.testing.assert_array_equal(score(v[:cut], card), full[:cut])
    np.testing.assert_array_equal(change(v[:cut]), change(v)[:cut])


def test_missing_values_score_zero_with_detectors_on():
    card = {"scoring": {**ON, "long": 300, "min_history": 30}}
    v = noise(seed=8)
    v[1000:] += 3
    v[[1005, 1300]] = np.nan
    s = score(v, card)
    assert s[1005] == 0 and s[1006] == 0 and s[1300] == 0
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))


def test_defaults_keep_the_change_detectors_off():
    assert sc.DEFAULT_SCORING["shift_short"] == 0 and sc.DEFAULT_SCORING["var_short"] == 0
    v = noise(seed=9)
    v[1000:] += 3
    base = {"scoring": {**sc.DEFAULT_SCORING, "warmup": 100}}
    knobs_only = {"scoring": {**base["scoring"], "shift_long": 50, "var_long": 50}}
    np.testing.assert_array_equal(score(v, base), score(v, knobs_only))


@pytest.mark.skipif(not (V1 / "model.onnx").is_file(), reason="nab-gru:1 not present")
def test_nab_gru_1_scores_as_when_it_was_published():
    """The card's own smoke example (alarm positions recorded at export) still comes out."""
    from training.anomaly.export import example_scores
    from training.common.onnx_utils import ort_session

    card = json.loads((V1 / "card.json").read_text())
    assert not {"shift_short", "var_short"} & set(card["scoring"])
    sess = ort_session(V1 / "model.onnx", threads=1)
    ex = example_scores(sess, {"onnx": card["onnx"], "scoring": card["scoring"]})
    assert ex["alarms"] == card["metrics"]["example"]["alarms"]
    assert ex["score_at_spike"] == pytest.approx(card["metrics"]["example"]["score_at_spike"])
