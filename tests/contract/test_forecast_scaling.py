"""contract.forecast's equivariant scaling and per-series calibration, without a model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.forecast import (
    Scaling,
    backtest_origins,
    conformal_quantile,
    plan_backtests,
    series_ratio,
)

RULES = ("floorlog", "affine")


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), log_a=st.floats(-5, 5), b=st.floats(-1e4, 1e4))
def test_graph_inputs_do_not_move_under_shift_and_scale(
    rule: str, seed: int, log_a: float, b: float
) -> None:
    """The graph sees the same numbers for x and a*x + b, and decoding maps back equivariantly."""
    sc = Scaling(rule, 0.02, 24)
    x = np.random.default_rng(seed).normal(0, 1, (3, 96)).cumsum(axis=1)
    a = 10.0**log_a
    n, m = sc.stats(x), sc.stats(a * x + b)
    assert np.allclose(sc.encode(x, n), sc.encode(a * x + b, m), atol=1e-6)
    g = np.random.default_rng(seed + 1).normal(0, 1, (3, 24))
    span = a * np.ptp(x, axis=1, keepdims=True)
    assert np.all(np.abs(sc.decode(g, m) - (a * sc.decode(g, n) + b)) <= 1e-7 * span)


@pytest.mark.parametrize("rule", RULES)
def test_floor_ceiling_and_constant_windows(rule: str) -> None:
    sc = Scaling(rule, 0.02, 24)
    x = np.vstack([np.full(48, 7.0), np.abs(np.random.default_rng(0).normal(0, 1, 48))])
    n = sc.stats(x)
    assert n.scale[0] == 0 and (sc.encode(x, n)[0] == 0).all()
    out = sc.decode(np.array([[-100.0, 0.0, 100.0]] * 2), n)
    assert (out[0] == 7.0).all()  # a constant window gives that constant, whatever the graph
    lo, hi = x[1].min(), x[1].max()
    assert out[1, 0] == lo and out[1, 2] == hi + 5 * (hi - lo)  # floor and ceiling
    assert np.isfinite(out).all()


def test_roundtrip_floorlog() -> None:
    sc = Scaling("floorlog", 0.1, 24)
    x = np.random.default_rng(2).gamma(2.0, 3.0, (4, 72))
    n = sc.stats(x)
    assert np.allclose(sc.decode(sc.encode(x, n), n), x)


def test_backtest_origins_and_plan() -> None:
    assert backtest_origins(200, 48, 24, 24, 3) == [176, 152, 128]
    assert backtest_origins(71, 48, 24, 24, 3) == []  # 47 values before the cut: no window
    assert backtest_origins(72, 48, 24, 24, 3) == [48]
    sc = Scaling("floorlog", 0.02, 24)
    v = np.sin(np.arange(300) / 3.0) + 2
    bt = plan_backtests(sc, v, 48, 24, 2, 2, 24)
    assert bt is not None and bt.inputs.shape == (2, 48) and bt.targets.shape == (2, 24)
    assert np.array_equal(bt.targets[0], v[-24:]) and np.array_equal(bt.targets[1], v[-48:-24])
    assert plan_backtests(sc, v[:80], 48, 24, 2, 2, 24) is None  # one origin < min_origins
    flat = np.r_[np.full(100, 3.0), v[:24]]  # the backtest window is constant: no error scale
    assert plan_backtests(sc, flat, 48, 24, 1, 1, 24) is None


def test_series_ratio_is_the_conformal_quantile_of_scores_over_k() -> None:
    k = np.array([1.0, 2.0])
    scores = np.array([[0.5, 1.0], [1.0, 4.0], [2.0, 2.0]])  # ratios .5 .5 1 2 2 1
    assert series_ratio(scores, k, 50) == 1.0
    assert series_ratio(scores, k, 99) == 2.0  # too few scores for 99%: the largest
    assert conformal_quantile(np.arange(1.0, 11.0), 80, axis=None) == 9.0  # ceil(11*.8)/10


def test_a_target_below_the_floor_is_capped_not_infinite() -> None:
    """Below the window's floor no interval reaches (bounds are floored): the score stops where
    the lower bound hits the floor instead of growing without limit."""
    from contract.forecast import g_scores

    sc = Scaling("floorlog", 0.02, 24)
    x = np.abs(np.sin(np.arange(48) / 4.0)) + 1.0  # floor 1.0
    n = sc.stats(x[None])
    med = np.full((1, 2), np.log(0.5 + 0.02))  # median at (x - min)/std = 0.5
    q = np.stack([med - 0.1, med, med + 0.1], axis=-1)
    y = np.array([[1.0 - 1e6, 1.0 - 1e-9]])  # far and just below the floor
    s = g_scores(sc, y, med, q, n)
    cap = (np.log(0.52) - np.log(0.02)) / 0.1
    assert np.allclose(s, cap)
    above = g_scores(sc, np.array([[5.0, 5.0]]), med, q, n)
    assert (above > 0).all() and np.isfinite(above).all()


def test_series_factor_leaves_out_floor_targets_clips_and_needs_enough_scores() -> None:
    from contract.forecast import Backtests, series_factor

    sc = Scaling("floorlog", 0.02, 24)
    win = (np.sin(np.arange(48) / 4.0) + 2.0)[None]
    n = sc.stats(win)
    med = np.full((1, 40), np.log(0.5 + 0.02))
    q = np.stack([med - 0.1, med, med + 0.1], axis=-1)
    k = np.ones(40)

    def factor(y: np.ndarray, **kw: float) -> float | None:
        bt = Backtests(sc.encode(win, n), y[None], n)
        args = {"max_ratio": 4.0, "min_scores": 24} | kw
        return series_factor(sc, bt, med, q, k, 80.0, args["max_ratio"], int(args["min_scores"]))

    on_median = sc.decode(med, n)[0]
    assert factor(on_median) == 0.25  # zero error: clipped at 1 / max_ratio
    far = on_median + 50.0
    assert factor(far) == 4.0  # huge error: clipped at max_ratio
    below = np.r_[np.full(10, n.floor[0] - 1.0), on_median[10:]]
    assert factor(below) == 0.25  # the 10 uncoverable targets are left out, not scored
    assert factor(below, min_scores=31) is None  # 30 scores left: use the global table
