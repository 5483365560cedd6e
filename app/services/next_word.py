"""Next-word prediction, completion and scoring with a word-level recurrent language model.

Text is normalized into the model's vocabulary by the model's own ``tokenizer.json``. The
recurrent state after the text travels back to the client as a signed token (see
``state_token``), so a follow-up request sends only its new words and costs the same however
long the earlier text was — and any replica can serve it.

Memory is bounded by construction (``SEQSERVE_MEMORY_BUDGET_MB``): a long text goes through the
model in pieces, each starting from the state the previous one ended in — exact, since that is
what a recurrent model does within one call too — and the batchers stop a batch at the budget
(tokens x rows x bytes per token). Scoring costs one vocabulary-sized row of log-probabilities
per token, so a 5,000-token text in one call took ~600 MB; in pieces it takes a few MB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from app.batching import Batcher, Limits, shared_pool
from app.errors import InputTooLarge, InvalidInput
from app.observability import Timer
from app.registry import ModelRecord, Registry
from app.services.base import TaskService
from app.services.common import check_text, expect, expect_finite
from app.services.state_token import StateCodec
from app.settings import Settings
from contract import lm_cache
from contract.card import NextWordCard
from contract.lm_cache import CacheParams, History

TASK = "next-word"
ARGMAX_K = 16  # top_k up to this k by repeated argmax, beyond it by argpartition
_DETOK = [
    (re.compile(r" @([-.,])@ "), r"\1"),
    (re.compile(r" (?=[.,;:!?)'])"), ""),
    (re.compile(r"(?<=\() "), ""),
]


def detokenize(tokens: list[str]) -> str:
    """WikiText tokens back to readable text ("well @-@ known ," -> "well-known,")."""
    text = " ".join(tokens)
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    return text


@dataclass
class StepItem:
    ids: np.ndarray  # [T] int64
    state: list[np.ndarray]  # each [layers, 1, hidden]
    keep: int = 0  # last-layer outputs of the last ``keep`` positions wanted (the cache)


@dataclass
class StepOut:
    log_probs: np.ndarray  # [vocab], at the last position
    state: list[np.ndarray]
    hidden: np.ndarray | None = None  # [min(T, keep), hidden] when asked for


@dataclass
class ScoreItem:
    ids: np.ndarray
    targets: np.ndarray
    state: list[np.ndarray]
    cache: CacheParams | None = None  # mix in the continuous cache over this text


@dataclass
class ScoreOut:
    log_probs: np.ndarray  # [T]: log p(target t | ids up to t)
    state: list[np.ndarray]  # after the last of ``ids``


@dataclass
class Candidate:
    word: str
    probability: float


@dataclass
class NextWordResult:
    candidates: list[Candidate]
    state: str
    tokens: list[str]
    completion: str | None = None
    completion_tokens: list[str] | None = None
    cache: bool = False


@dataclass
class ScoreResult:
    tokens: int
    log_likelihood: float
    perplexity: float
    cache: bool = False


def pieces(n: int, size: int) -> list[slice]:
    """``range(n)`` cut into consecutive slices of at most ``size`` (the last may be shorter)."""
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


def _group_by_length(lengths: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    return groups


class NextWordModel:
    """One language-model version: tokenizer, two sessions (next, score), batchers, state codec."""

    def __init__(
        self, rec: ModelRecord, registry: Registry, settings: Settings, secret: bytes
    ) -> None:
        card = rec.spec
        assert isinstance(card, NextWordCard)
        self.record = rec
        self.settings = settings
        self.tokenizer = Tokenizer.from_file(str(rec.file("tokenizer")))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        vocab = self.tokenizer.get_vocab()
        self.id_to_token = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            self.id_to_token[i] = tok
        self.unk_id = card.special_tokens.unk.id
        self.eos_id = card.special_tokens.eos.id
        self.start_id = card.start_token.id if card.start_token else self.eos_id
        st = card.state
        self.state_in: list[str] = list(st.inputs)
        self.state_out: list[str] = list(st.outputs)
        self.layers, self.hidden = st.layers, st.hidden_size
        self.next_in = card.onnx.input_names
        cache_out = card.cache.output if card.cache else None
        # the cache's output is fetched only for requests that use the cache
        self.next_out = [n for n in card.onnx.output_names if n != cache_out]
        self.score_in = card.score_onnx.input_names
        self.score_out = [n for n in card.score_onnx.output_names if n != cache_out]
        self.vocab_size = len(self.id_to_token)
        # Working memory per token, in bytes (float32): scoring keeps the logits and their
        # log-softmax for every position (~3 vocabulary rows with the gather); a step keeps the
        # recurrent activations of every position and one vocabulary row at the end.
        self.score_token_bytes = 3 * 4 * self.vocab_size
        self.next_token_bytes = 16 * 4 * self.layers * self.hidden
        budget = settings.memory_budget_mb * 1_000_000
        # A piece is a quarter of the budget, so a few long texts still share a batch.
        self.score_chunk = max(16, budget // self.score_token_bytes // 4)
        self.next_chunk = max(16, budget // self.next_token_bytes // 4)
        # The continuous cache (contract.lm_cache) when the card has one: it keeps the last
        # ``window`` positions' outputs of the request's text, 4 bytes each per hidden unit.
        self.cache_params = (
            CacheParams(card.cache.theta, card.cache.lam, card.cache.window, card.cache.ramp)
            if card.cache
            else None
        )
        self.hidden_name = card.cache.output if card.cache else None
        self.next_session = rec.sessions["model"]
        if "score" not in rec.sessions:
            rec.sessions["score"] = registry.open_session(rec, "score_onnx")
        self.score_session = rec.sessions["score"]
        self.codec = StateCodec(
            secret,
            rec.ref,
            [(self.layers, self.hidden)] * len(self.state_in),
            [k.get_secret_value().encode() for k in settings.state_previous_secrets],
            max_age_s=settings.state_max_age_s,
        )
        self.next_batcher: Batcher[StepItem, StepOut] = Batcher(
            self._run_next,
            f"{rec.ref}/next",
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
            cost=self._next_cost,
            max_batch_cost=budget,
            pool=shared_pool(budget),
        )
        self.score_batcher: Batcher[ScoreItem, ScoreOut] = Batcher(
            self._run_score,
            f"{rec.ref}/score",
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
            cost=self._score_cost,
            max_batch_cost=budget,
            pool=shared_pool(budget),
        )
        # Never suggested or generated: unknown word and end-of-line markers.
        self.banned = np.array(sorted({self.unk_id, self.eos_id}))

    # -- inference (runs in the batchers' threads) -------------------------------------------
    def _stack_state(self, items: list[Any], rows: list[int]) -> dict[str, np.ndarray]:
        return {
            name: np.concatenate([items[r].state[j] for r in rows], axis=1)
            for j, name in enumerate(self.state_in)
        }

    def _run_next(self, items: list[StepItem]) -> list[StepOut]:
        out: list[StepOut | None] = [None] * len(items)
        for n, rows in _group_by_length([len(it.ids) for it in items]).items():
            ids = np.stack([items[r].ids for r in rows])
            state = self._stack_state(items, rows)
            keep = max(items[r].keep for r in rows)
            names = self.next_out if not keep else [*self.next_out, str(self.hidden_name)]
            kept: list[np.ndarray] = []
            for part in pieces(n, self.next_chunk):  # the state carries from piece to piece
                res = self.next_session.run({self.next_in[0]: ids[:, part], **state}, names)
                state = dict(zip(self.state_in, (res[o] for o in self.state_out), strict=True))
                if keep:  # only the last ``keep`` positions are ever needed
                    kept = [*kept, res[names[-1]]]
                    total = sum(h.shape[1] for h in kept)
                    while total - kept[0].shape[1] >= keep:
                        total -= kept.pop(0).shape[1]
            logp = res[self.next_out[0]]
            hidden = np.concatenate(kept, axis=1)[:, -keep:] if keep else None
            for k, r in enumerate(rows):
                # a copy: a view would keep the whole batch's array alive with the result
                want = items[r].keep
                h = hidden[k, -want:].copy() if hidden is not None and want else None
                out[r] = StepOut(logp[k], [res[n][:, k : k + 1] for n in self.state_out], h)
        return [o for o in out if o is not None]

    # A row's working memory is one piece's, however long its text: pieces run one at a time.
    def _next_cost(self, item: StepItem) -> float:
        kept = 4 * self.hidden * min(len(item.ids), item.keep)
        return (
            min(len(item.ids), self.next_chunk) * self.next_token_bytes
            + 16 * self.vocab_size
            + kept
        )

    def _score_cost(self, item: ScoreItem) -> float:
        piece = min(len(item.ids), self.score_chunk)
        if item.cache is None:
            return piece * self.score_token_bytes
        # the cache's history, and one piece's match scores against it: float32 scores and
        # weights, boolean masks and the position arithmetic, ~20 bytes per (query, key) pair
        window = min(len(item.ids), item.cache.window)
        return piece * self.score_token_bytes + (window + piece) * (4 * self.hidden + 20 * piece)

    def _run_score(self, items: list[ScoreItem]) -> list[ScoreOut]:
        out: list[ScoreOut | None] = [None] * len(items)
        for n, rows in _group_by_length([len(it.ids) for it in items]).items():
            ids = np.stack([items[r].ids for r in rows])
            targets = np.stack([items[r].targets for r in rows])
            state = self._stack_state(items, rows)
            cached = [k for k, r in enumerate(rows) if items[r].cache is not None]
            names = [self.score_out[0], *self.state_out]
            if cached:
                names.append(str(self.hidden_name))
            history = {k: History.empty(self.hidden) for k in cached}
            lps = []
            for part in pieces(n, self.score_chunk):  # the state carries from piece to piece
                feeds = {self.score_in[0]: ids[:, part], self.score_in[1]: targets[:, part]}
                res = self.score_session.run({**feeds, **state}, names)
                piece_lp = res[self.score_out[0]]
                for k in cached:  # the cache over the text so far, carried like the state
                    params = items[rows[k]].cache
                    assert params is not None
                    piece_lp[k], history[k] = lm_cache.score(
                        piece_lp[k], res[names[-1]][k], targets[k, part], history[k], params
                    )
                lps.append(piece_lp)
                state = dict(zip(self.state_in, (res[o] for o in self.state_out), strict=True))
            lp = np.concatenate(lps, axis=1)
            for k, r in enumerate(rows):
                out[r] = ScoreOut(lp[k], [state[name][:, k : k + 1] for name in self.state_in])
        return [o for o in out if o is not None]

    def smoke(self) -> None:
        """Both graphs once on a short text before the model takes traffic."""
        ids = np.asarray(self.tokenizer.encode("the game").ids or [self.eos_id], dtype=np.int64)
        out = self._run_next([StepItem(ids, self.zero_state())])[0]
        expect_finite(out.log_probs, (len(self.id_to_token),), "next-word log-probabilities")
        expect(len(out.state) == len(self.state_in), "state outputs differ from the card")
        full = np.concatenate([[self.start_id], ids]).astype(np.int64)
        lp = self._run_score([ScoreItem(full[:-1], full[1:], self.zero_state())])[0].log_probs
        expect_finite(lp, (len(ids),), "token log-probabilities")
        if self.cache_params is not None:  # the cache's output and both cached paths
            p = self.cache_params
            step = self._run_next([StepItem(full, self.zero_state(), p.window + 1)])[0]
            expect(
                step.hidden is not None and step.hidden.shape == (len(full), self.hidden),
                f"cache output {self.hidden_name!r} is not [batch, sequence, {self.hidden}]",
            )
            assert step.hidden is not None
            history = History(step.hidden[:-1], full[1:])
            mixed = lm_cache.next_log_probs(step.log_probs, step.hidden[-1], history, p)
            expect_finite(mixed, (len(self.id_to_token),), "cached next-word log-probabilities")
            item = ScoreItem(full[:-1], full[1:], self.zero_state(), p)
            expect_finite(self._run_score([item])[0].log_probs, (len(ids),), "cached scores")

    # -- request logic ---------------------------------------------------------------------------
    def zero_state(self) -> list[np.ndarray]:
        return [np.zeros((self.layers, 1, self.hidden), dtype=np.float32) for _ in self.state_in]

    def encode(self, text: str, field: str = "text") -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if not ids:
            raise InvalidInput(f"{field} contains no words the model can read")
        limit = self.settings.max_context_tokens
        if len(ids) > limit:
            raise InputTooLarge(f"{field} has {len(ids)} tokens; the limit is {limit}")
        return ids

    def top_k(self, log_probs: np.ndarray, k: int) -> list[Candidate]:
        lp = log_probs.copy()  # float32: a float64 copy of 33k values costs more than the search
        lp[self.banned] = -np.inf
        k = min(k, len(lp) - len(self.banned))  # a tiny vocabulary has fewer than k words
        if k <= ARGMAX_K:  # k passes of argmax: ~4 us each on 33k words, argpartition ~300 us
            idx = []
            for _ in range(k):
                i = int(lp.argmax())  # the lowest id among equal probabilities
                idx.append(i)
                lp[i] = -np.inf
            return [Candidate(self.id_to_token[i], float(np.exp(log_probs[i]))) for i in idx]
        kth = -np.partition(-lp, k - 1)[k - 1]  # the k-th highest log-probability
        above = np.flatnonzero(lp > kth)
        top = np.concatenate([above, np.flatnonzero(lp == kth)[: k - len(above)]])
        top = top[np.lexsort((top, -lp[top]))]  # most probable first, then the lowest id
        return [Candidate(self.id_to_token[i], float(np.exp(lp[i]))) for i in top]

    def choose(
        self, log_probs: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator
    ) -> int:
        lp = log_probs.astype(np.float64, copy=True)
        lp[self.banned] = -np.inf
        if temperature == 0:
            return int(np.argmax(lp))
        if top_k:
            cut = np.partition(lp, -top_k)[-top_k]
            lp[lp < cut] = -np.inf
        z = lp / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    async def predict(
        self,
        text: str,
        k: int,
        state_token: str | None,
        complete: int,
        temperature: float,
        top_k: int | None,
        seed: int | None,
        cache: bool | None = True,
    ) -> NextWordResult:
        self.next_batcher.admit(1)  # refuse before tokenizing when the model is full
        with Timer("tokenize"):
            state = self.codec.decode(state_token) if state_token else self.zero_state()
            ids = self.encode(text)
        feed = ids if state_token else [self.start_id, *ids]
        params = self.cache_params if cache is not False else None
        step = await self.advance(np.asarray(feed, dtype=np.int64), state, params)
        history = query = None
        log_probs = step.log_probs
        if params is not None and step.hidden is not None:
            # the pairs (output at position i, the word at i + 1) of the text read so far
            h = step.hidden
            history = History(h[:-1], np.asarray(feed[len(feed) - len(h) + 1 :], np.int64))
            query = h[-1]
            log_probs = lm_cache.next_log_probs(log_probs, query, history, params)
        result = NextWordResult(
            candidates=self.top_k(log_probs, k),
            state=self.codec.encode(step.state),
            tokens=[self.id_to_token[i] for i in ids],
            cache=params is not None,
        )
        if complete:
            rng = np.random.default_rng(seed)
            generated: list[str] = []
            cur = step
            for i in range(complete):
                nxt = self.choose(log_probs, temperature, top_k, rng)
                generated.append(self.id_to_token[nxt])
                if i + 1 < complete:
                    cur = await self.advance(np.asarray([nxt], dtype=np.int64), cur.state, params)
                    log_probs = cur.log_probs
                    if (
                        params
                        and history is not None
                        and query is not None
                        and cur.hidden is not None
                    ):
                        history = history.extend(query[None, :], np.array([nxt]), params.window)
                        query = cur.hidden[-1]
                        log_probs = lm_cache.next_log_probs(log_probs, query, history, params)
            result.completion_tokens = generated
            result.completion = detokenize(generated)
        return result

    async def advance(
        self, ids: np.ndarray, state: list[np.ndarray], cache: CacheParams | None = None
    ) -> StepOut:
        """The next-word distribution after ``ids`` from ``state`` (the graph reads them in
        pieces of at most ``next_chunk`` tokens, see ``_run_next``); with ``cache``, also the
        outputs of the last ``window + 1`` positions."""
        keep = cache.window + 1 if cache is not None else 0
        return await self.next_batcher.submit(StepItem(ids, state, keep))

    async def token_log_probs(
        self, ids: np.ndarray, state: list[np.ndarray], cache: CacheParams | None = None
    ) -> np.ndarray:
        """log p(ids[t + 1] | ids[: t + 1]) for every t: the graph reads the text in pieces of
        at most ``score_chunk`` tokens, the same numbers one call over it gives (with ``cache``,
        mixed with the continuous cache over ``ids``)."""
        res = await self.score_batcher.submit(ScoreItem(ids[:-1], ids[1:], state, cache))
        return res.log_probs

    async def score(self, text: str, cache: bool | None = True) -> ScoreResult:
        self.score_batcher.admit(1)
        ids = [self.start_id, *self.encode(text)]
        params = self.cache_params if cache is not False else None
        token_lp = await self.token_log_probs(
            np.asarray(ids, dtype=np.int64), self.zero_state(), params
        )
        ll = float(np.sum(token_lp, dtype=np.float64))
        n = len(ids) - 1
        return ScoreResult(
            tokens=n, log_likelihood=ll, perplexity=float(np.exp(-ll / n)), cache=params is not None
        )

    async def close(self) -> None:
        await self.next_batcher.close()
        await self.score_batcher.close()


class NextWordService(TaskService[NextWordModel]):
    task = TASK

    def __init__(self, registry: Registry, settings: Settings, secret: bytes) -> None:
        super().__init__(registry, settings)
        self.secret = secret

    def build(self, rec: ModelRecord) -> NextWordModel:
        return NextWordModel(rec, self.registry, self.settings, self.secret)

    def _model(self, ref: str | None, text: str) -> tuple[ModelRecord, NextWordModel, str]:
        rec, m = self.resolve(ref)
        clean = check_text(text, "text", self.settings.max_context_chars)
        return rec, m, clean

    async def predict(
        self, text: str, model: str | None, **kwargs: Any
    ) -> tuple[ModelRecord, NextWordResult]:
        rec, m, clean = self._model(model, text)
        return rec, await m.predict(clean, **kwargs)

    async def score(
        self, text: str, model: str | None, cache: bool | None = True
    ) -> tuple[ModelRecord, ScoreResult]:
        rec, m, clean = self._model(model, text)
        return rec, await m.score(clean, cache)
