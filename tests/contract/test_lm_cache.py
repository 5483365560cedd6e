"""The continuous cache (contract.lm_cache) against the formula written out as loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contract import lm_cache
from contract.lm_cache import CacheParams, History

V, H = 12, 6


def _text(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model log-probs of the targets, outputs and targets of a random text (small vocabulary,
    so words repeat and the cache has something to find)."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, H)).astype(np.float32)
    targets = rng.integers(0, V, size=n)
    rows = rng.normal(size=(n, V))
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return rows.astype(np.float32), hidden, targets


def _reference(rows: np.ndarray, hidden: np.ndarray, targets: np.ndarray, p: CacheParams):
    """Grave et al.'s formula, one position and one stored position at a time."""
    out = []
    for t in range(len(targets)):
        keys = [i for i in range(t) if t - i <= p.window]
        model = math.exp(rows[t, targets[t]])
        lam = p.lam * len(keys) / (len(keys) + p.ramp) if keys else 0.0
        if not keys:
            out.append(math.log(model))
            continue
        s = [p.theta * float(hidden[t] @ hidden[i]) for i in keys]
        top = max(s)
        w = [math.exp(x - top) for x in s]
        cache = sum(wi for wi, i in zip(w, keys, strict=True) if targets[i] == targets[t]) / sum(w)
        out.append(math.log((1 - lam) * model + lam * cache))
    return np.array(out)


@pytest.mark.parametrize(("window", "ramp"), [(1, 0.0), (3, 0.0), (50, 0.0), (50, 7.5)])
def test_score_matches_the_formula(window: int, ramp: float) -> None:
    rows, hidden, targets = _text(0, 40)
    p = CacheParams(theta=0.7, lam=0.3, window=window, ramp=ramp)
    lp = rows[np.arange(len(targets)), targets]
    mixed, _ = lm_cache.score(lp, hidden, targets, History.empty(H), p)
    np.testing.assert_allclose(mixed, _reference(rows, hidden, targets, p), rtol=0, atol=1e-5)


def test_score_in_pieces_equals_one_call() -> None:
    rows, hidden, targets = _text(1, 57)
    p = CacheParams(theta=0.5, lam=0.2, window=9, ramp=4.0)
    lp = rows[np.arange(len(targets)), targets]
    whole, _ = lm_cache.score(lp, hidden, targets, History.empty(H), p)
    parts, history = [], History.empty(H)
    for a, b in ((0, 5), (5, 6), (6, 30), (30, 57)):
        piece, history = lm_cache.score(lp[a:b], hidden[a:b], targets[a:b], history, p)
        parts.append(piece)
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    assert len(history.ids) == 9  # the history never grows past the window


def test_next_word_distribution_agrees_with_score_and_sums_to_one() -> None:
    """/next-word's distribution after a text gives each word the probability /next-word/score
    gives it as the next target: the two routes share one definition."""
    rows, hidden, targets = _text(2, 30)
    p = CacheParams(theta=0.9, lam=0.25, window=12, ramp=5.0)
    t = len(targets) - 1
    history = History(hidden[:t][-p.window :], targets[:t][-p.window :])
    dist = lm_cache.next_log_probs(rows[t], hidden[t], history, p)
    assert math.isclose(float(np.exp(dist.astype(np.float64)).sum()), 1.0, abs_tol=1e-5)
    for w in range(V):
        tg = targets.copy()
        tg[t] = w
        lp = rows[np.arange(len(tg)), tg]
        mixed, _ = lm_cache.score(lp, hidden, tg, History.empty(H), p)
        assert dist[w] == pytest.approx(mixed[t], abs=1e-5)


def test_empty_history_leaves_the_model_alone() -> None:
    rows, hidden, _ = _text(3, 1)
    p = CacheParams(theta=1.0, lam=0.5, window=10)
    np.testing.assert_array_equal(
        lm_cache.next_log_probs(rows[0], hidden[0], History.empty(H), p), rows[0]
    )


def test_a_repeated_word_gains_probability() -> None:
    """The point of the cache: a word seen in the text becomes likelier where its context
    recurs."""
    rows, hidden, targets = _text(4, 20)
    hidden[19] = hidden[5]  # the same context as position 5, whose next word was targets[5]
    targets[19] = targets[5]
    lp = rows[np.arange(20), targets]
    mixed, _ = lm_cache.score(lp, hidden, targets, History.empty(H), CacheParams(2.0, 0.3, 100))
    assert mixed[19] > lp[19]


def test_the_ramp_keeps_a_short_history_from_taking_over() -> None:
    """A two-word history with the ramp moves the distribution far less than without it."""
    rows, hidden, targets = _text(5, 3)
    history = History(hidden[:2], targets[:2])
    flat = lm_cache.next_log_probs(rows[2], hidden[2], history, CacheParams(1.0, 0.25, 100))
    ramped = lm_cache.next_log_probs(
        rows[2], hidden[2], history, CacheParams(1.0, 0.25, 100, ramp=100.0)
    )
    moved = np.abs(np.exp(flat) - np.exp(rows[2])).sum()
    assert np.abs(np.exp(ramped) - np.exp(rows[2])).sum() < moved / 10
