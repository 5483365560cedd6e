"""Next-word prediction, completion and scoring with a word-level recurrent language model.

Text is normalized into the model's vocabulary by the model's own ``tokenizer.json``. The
recurrent state after the text travels back to the client as a signed token (see
``state_token``), so a follow-up request sends only its new words and costs the same however
long the earlier text was — and any replica can serve it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from app.batching import Batcher, Limits
from app.errors import InputTooLarge, InvalidInput
from app.observability import Timer
from app.registry import ModelRecord, Registry
from app.services.base import TaskService
from app.services.common import check_text, expect, expect_finite
from app.services.state_token import StateCodec
from app.settings import Settings
from contract.card import NextWordCard

TASK = "next-word"
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


@dataclass
class StepOut:
    log_probs: np.ndarray  # [vocab], at the last position
    state: list[np.ndarray]


@dataclass
class ScoreItem:
    ids: np.ndarray
    targets: np.ndarray
    state: list[np.ndarray]


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


@dataclass
class ScoreResult:
    tokens: int
    log_likelihood: float
    perplexity: float


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
        self.next_out = card.onnx.output_names
        self.score_in = card.score_onnx.input_names
        self.score_out = card.score_onnx.output_names
        self.next_session = rec.sessions["model"]
        if "score" not in rec.sessions:
            rec.sessions["score"] = registry.open_session(rec, "score_onnx")
        self.score_session = rec.sessions["score"]
        self.codec = StateCodec(
            secret,
            rec.ref,
            [(self.layers, self.hidden)] * len(self.state_in),
            [k.get_secret_value().encode() for k in settings.state_previous_secrets],
        )
        self.next_batcher: Batcher[StepItem, StepOut] = Batcher(
            self._run_next,
            f"{rec.ref}/next",
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
        )
        self.score_batcher: Batcher[ScoreItem, np.ndarray] = Batcher(
            self._run_score,
            f"{rec.ref}/score",
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
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
        for _, rows in _group_by_length([len(it.ids) for it in items]).items():
            feeds = {
                self.next_in[0]: np.stack([items[r].ids for r in rows]),
                **self._stack_state(items, rows),
            }
            res = self.next_session.run(feeds, self.next_out)
            logp = res[self.next_out[0]]
            for k, r in enumerate(rows):
                out[r] = StepOut(logp[k], [res[n][:, k : k + 1] for n in self.state_out])
        return [o for o in out if o is not None]

    def _run_score(self, items: list[ScoreItem]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(items)
        for _, rows in _group_by_length([len(it.ids) for it in items]).items():
            feeds = {
                self.score_in[0]: np.stack([items[r].ids for r in rows]),
                self.score_in[1]: np.stack([items[r].targets for r in rows]),
                **self._stack_state(items, rows),
            }
            res = self.score_session.run(feeds, [self.score_out[0]])
            for k, r in enumerate(rows):
                out[r] = res[self.score_out[0]][k]
        return [o for o in out if o is not None]

    def smoke(self) -> None:
        """Both graphs once on a short text before the model takes traffic."""
        ids = np.asarray(self.tokenizer.encode("the game").ids or [self.eos_id], dtype=np.int64)
        out = self._run_next([StepItem(ids, self.zero_state())])[0]
        expect_finite(out.log_probs, (len(self.id_to_token),), "next-word log-probabilities")
        expect(len(out.state) == len(self.state_in), "state outputs differ from the card")
        full = np.concatenate([[self.start_id], ids]).astype(np.int64)
        lp = self._run_score([ScoreItem(full[:-1], full[1:], self.zero_state())])[0]
        expect_finite(lp, (len(ids),), "token log-probabilities")

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
        idx = np.argpartition(-lp, k - 1)[:k]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        return [Candidate(self.id_to_token[i], float(np.exp(lp[i]))) for i in idx]

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
    ) -> NextWordResult:
        self.next_batcher.admit(1)  # refuse before tokenizing when the model is full
        with Timer("tokenize"):
            state = self.codec.decode(state_token) if state_token else self.zero_state()
            ids = self.encode(text)
        feed = ids if state_token else [self.start_id, *ids]
        step = await self.next_batcher.submit(StepItem(np.asarray(feed, dtype=np.int64), state))
        result = NextWordResult(
            candidates=self.top_k(step.log_probs, k),
            state=self.codec.encode(step.state),
            tokens=[self.id_to_token[i] for i in ids],
        )
        if complete:
            rng = np.random.default_rng(seed)
            generated: list[str] = []
            cur = step
            for i in range(complete):
                nxt = self.choose(cur.log_probs, temperature, top_k, rng)
                generated.append(self.id_to_token[nxt])
                if i + 1 < complete:
                    cur = await self.next_batcher.submit(
                        StepItem(np.asarray([nxt], dtype=np.int64), cur.state)
                    )
            result.completion_tokens = generated
            result.completion = detokenize(generated)
        return result

    async def score(self, text: str) -> ScoreResult:
        self.score_batcher.admit(1)
        ids = [self.start_id, *self.encode(text)]
        item = ScoreItem(
            np.asarray(ids[:-1], dtype=np.int64),
            np.asarray(ids[1:], dtype=np.int64),
            self.zero_state(),
        )
        token_lp = await self.score_batcher.submit(item)
        ll = float(np.sum(token_lp, dtype=np.float64))
        n = len(ids) - 1
        return ScoreResult(tokens=n, log_likelihood=ll, perplexity=float(np.exp(-ll / n)))

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

    async def score(self, text: str, model: str | None) -> tuple[ModelRecord, ScoreResult]:
        rec, m, clean = self._model(model, text)
        return rec, await m.score(clean)
