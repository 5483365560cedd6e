"""The continuous cache of a word-level language model (Grave et al. 2016), torch-free.

Training tunes it and serving applies it with these functions, so both compute the same numbers.
The model's last-layer output ``h_i`` at each position is stored with the word that followed it;
at position ``t`` the cache puts probability on the words that followed the stored positions
whose outputs look like ``h_t``:

    p_cache(w) ∝ Σ_{i < t, t - i <= window, x_{i+1} = w} exp(θ · h_t · h_i)
    p(w)       = (1 - λ_n) · p_model(w) + λ_n · p_cache(w),   λ_n = λ · n / (n + ramp)

where ``n`` is how many positions the history holds. The ramp is ours, not the paper's: with a
fixed λ a history of a few words (a short prompt) puts a quarter of the probability on those
few words, which made short texts worse and greedy completions repeat themselves; with the ramp
the cache weighs in as the history grows. Where the history is empty (the first position of a
text) the model's distribution is used as it is. The cache holds only what it has read: the
text of one request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIDDEN_OUTPUT = "hidden"  # the graphs' extra output: last-layer outputs, [batch, seq, hidden]


@dataclass(frozen=True)
class CacheParams:
    theta: float  # flatness of the match: larger trusts only close matches
    lam: float  # weight of the cache in the mixture, once the history is long
    window: int  # how many earlier positions the cache remembers
    ramp: float = 0.0  # history length at which the cache has half its weight


@dataclass
class History:
    """The last ``window`` positions' outputs and the word that followed each."""

    hidden: np.ndarray  # [n, H] float32
    ids: np.ndarray  # [n] int64

    @classmethod
    def empty(cls, size: int) -> History:
        return cls(np.zeros((0, size), np.float32), np.zeros(0, np.int64))

    def extend(self, hidden: np.ndarray, ids: np.ndarray, window: int) -> History:
        """This history with ``(hidden[j], ids[j])`` appended, cut to the last ``window``."""
        h = np.concatenate([self.hidden, hidden.astype(np.float32, copy=False)])[-window:]
        return History(h, np.concatenate([self.ids, ids.astype(np.int64, copy=False)])[-window:])


def _weights(query: np.ndarray, keys: np.ndarray, theta: float, mask: np.ndarray) -> np.ndarray:
    """Softmax over the allowed keys of θ·q·k, one row per query (rows without keys: zeros)."""
    s = theta * (query @ keys.T)
    s = np.where(mask, s, -np.inf)
    top = s.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    e = np.exp(s - top)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def score(
    log_probs: np.ndarray,
    hidden: np.ndarray,
    targets: np.ndarray,
    history: History,
    params: CacheParams,
) -> tuple[np.ndarray, History]:
    """The mixed log-probability of each target of one piece of text, and the history after it.

    ``log_probs[t]`` is the model's log p(targets[t]), ``hidden[t]`` its output at that position;
    ``history`` holds the earlier pieces' positions (the same text), so a text scored in pieces
    gets the same numbers as in one call.
    """
    n, c = len(history.ids), len(targets)
    keys = np.concatenate([history.hidden, hidden.astype(np.float32, copy=False)])
    key_ids = np.concatenate([history.ids, targets.astype(np.int64, copy=False)])
    pos_q = n + np.arange(c)[:, None]  # position of each query among the keys
    pos_k = np.arange(n + c)[None, :]
    mask = (pos_k < pos_q) & (pos_q - pos_k <= params.window)
    w = _weights(hidden.astype(np.float32, copy=False), keys, params.theta, mask)
    p_cache = (w * (key_ids[None, :] == targets[:, None])).sum(axis=1)
    lam = weight(mask.sum(axis=1), params)
    p_model = np.exp(log_probs.astype(np.float64))
    mixed = np.where(
        lam > 0, np.log((1 - lam) * p_model + lam * p_cache), log_probs.astype(np.float64)
    )
    return mixed.astype(np.float32), history.extend(hidden, targets, params.window)


def weight(n: np.ndarray, params: CacheParams) -> np.ndarray:
    """λ_n for histories of ``n`` positions (0 where there is no history)."""
    n = np.asarray(n, dtype=np.float64)
    share = np.divide(n, n + params.ramp, out=np.zeros_like(n), where=n > 0)
    return params.lam * share


def next_log_probs(
    log_probs: np.ndarray, query: np.ndarray, history: History, params: CacheParams
) -> np.ndarray:
    """The mixed next-word distribution (log, over the whole vocabulary) after a text whose last
    output is ``query`` and whose earlier positions are in ``history``."""
    if len(history.ids) == 0:
        return log_probs
    w = _weights(
        query[None, :].astype(np.float32),
        history.hidden,
        params.theta,
        np.ones((1, len(history.ids)), bool),
    )[0]
    words, inverse = np.unique(history.ids, return_inverse=True)
    p_cache = np.bincount(inverse, weights=w, minlength=len(words))
    lam = float(weight(np.array(len(history.ids)), params))
    out = log_probs.astype(np.float32) + np.float32(np.log1p(-lam))
    p_words = (1 - lam) * np.exp(log_probs[words].astype(np.float64)) + lam * p_cache
    out[words] = np.log(p_words).astype(np.float32)
    return out
