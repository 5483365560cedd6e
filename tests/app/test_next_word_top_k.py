"""Next-word candidates: the k most probable words, most probable first, ties by lowest id,
whichever of the two searches (repeated argmax for small k, partition beyond) runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.services import next_word


def _brute(log_probs: np.ndarray, banned: np.ndarray, k: int) -> list[int]:
    allowed = [i for i in range(len(log_probs)) if i not in set(banned.tolist())]
    return sorted(allowed, key=lambda i: (-log_probs[i], i))[:k]


@pytest.mark.parametrize("k", [1, 5, 16, 17, 40])
@pytest.mark.parametrize("seed", range(8))
def test_top_k_is_the_k_most_probable_with_ties_by_id(
    k: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    log_probs = np.log(rng.dirichlet(np.ones(3000))).astype(np.float32)
    if seed % 2:  # many words tied at the top, more than k
        log_probs[rng.integers(0, 3000, 60)] = log_probs.max()
    banned = np.array([0, 1, int(log_probs.argmax())])  # a banned word is never a candidate
    model = SimpleNamespace(banned=banned, id_to_token=[f"w{i}" for i in range(3000)])
    want = [f"w{i}" for i in _brute(log_probs, banned, k)]
    for argmax_k in (0, 16):  # partition only, then argmax up to 16
        monkeypatch.setattr(next_word, "ARGMAX_K", argmax_k)
        got = next_word.NextWordModel.top_k(model, log_probs, k)  # type: ignore[arg-type]
        assert [c.word for c in got] == want
        assert [c.probability for c in got] == pytest.approx(
            [float(np.exp(log_probs[int(w[1:])])) for w in want]
        )
