"""Sentiment: tokenize with the model's own tokenizer.json, batch, decode probabilities.

Texts longer than the model's ``max_length`` tokens are cut to it and the result says so
(``truncated: true``) — never silently. A batch is run in sub-batches of similar length, so a
long review does not make short texts pay for its padding.

Memory is bounded by ``SEQSERVE_MEMORY_BUDGET_MB``: a recurrent classifier keeps every token's
activations (~5 KB per token for the shipped BiLSTM: 13 texts of 5,000 tokens took 325 MB), so
the batcher stops a batch at the budget in tokens and each graph call takes at most that many.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from app.batching import Batcher, Limits, shared_pool
from app.errors import InputTooLarge, InvalidInput
from app.observability import Timer
from app.registry import ModelRecord, Registry
from app.services.base import TaskService
from app.services.common import OFF_LOOP_CHARS, check_text, expect, expect_finite, off_loop
from app.settings import Settings
from contract.card import SentimentCard
from contract.text import pad_sorted

TASK = "sentiment"
# Working memory per token in one graph call, bytes (measured on sst2-imdb-bilstm, the largest).
TOKEN_BYTES = 5_000


@dataclass
class Prediction:
    label: str
    score: float
    probabilities: dict[str, float]
    tokens: int
    truncated: bool


def length_buckets(
    lengths: list[int], slack: float = 1.25, max_tokens: int = 65_536
) -> list[list[int]]:
    """Split items into runs of similar length so padding stays within ``slack`` of the real work.

    Items are taken shortest first; a run closes when adding the next item would make its padded
    size (rows x longest) exceed ``slack`` x its real tokens, or ``max_tokens``. A 2,000-token
    review therefore never makes the 20-token texts batched with it pay for 2,000 steps.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    runs: list[list[int]] = []
    run: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        padded = n * (len(run) + 1)  # n is the longest so far
        if run and (padded > slack * (real + n) + 8 or padded > max_tokens):
            runs.append(run)
            run, real = [], 0
        run.append(i)
        real += n
    if run:
        runs.append(run)
    return runs


class SentimentModel:
    """One loaded sentiment model version with its tokenizer and batcher."""

    def __init__(
        self, rec: ModelRecord, settings: Settings, alone: Callable[[], bool] = lambda: False
    ) -> None:
        self.record = rec
        self.alone = alone
        card = rec.spec
        assert isinstance(card, SentimentCard)
        self.labels: list[str] = list(card.labels)
        self.max_length = card.tokenizer.max_length
        self.pad_id = card.tokenizer.pad_id
        self.unk_id = card.tokenizer.unk_id
        self.tokenizer = Tokenizer.from_file(str(rec.file("tokenizer")))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.input_name = card.onnx.input_names[0]
        self.output_name = card.onnx.output_names[0]
        self.session = rec.sessions["model"]
        budget = settings.memory_budget_mb * 1_000_000
        self.max_run_tokens = max(1, budget // TOKEN_BYTES)  # padded tokens in one graph call
        self.batcher: Batcher[np.ndarray, np.ndarray] = Batcher(
            self._predict,
            rec.ref,
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            inline_if=self._small if settings.inline_tokens > 0 else None,
            limits=Limits.from_settings(settings),
            cost=lambda ids: len(ids) * TOKEN_BYTES,
            max_batch_cost=budget,
            pool=shared_pool(budget),
        )
        self.inline_tokens = settings.inline_tokens

    def _small(self, seqs: Sequence[np.ndarray]) -> bool:
        # Inline only when this request is the only one in flight: under concurrent load the
        # requests must meet in the batcher (batches are what make throughput).
        return self.alone() and sum(len(s) for s in seqs) <= self.inline_tokens

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        """(ids cut to max_length, full token count) per text."""
        out = []
        encodings = (
            [self.tokenizer.encode(texts[0])]
            if len(texts) == 1
            else self.tokenizer.encode_batch(texts)
        )
        pad, unk = self.pad_id, self.unk_id
        for enc in encodings:
            ids = enc.ids or [unk]
            # A user typing "[PAD]" must not produce the pad id inside a text: the graph reads
            # pad ids as the end of the text. (Lists, not numpy, until the end: a short text
            # costs a few microseconds less, and most texts are short.)
            if pad in ids:
                ids = [unk if i == pad else i for i in ids]
            out.append((np.array(ids[: self.max_length], dtype=np.int64), len(ids)))
        return out

    def _predict(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Runs in the batcher's thread: the batch is cut into runs of similar length."""
        if len(seqs) == 1:
            return [
                self.session.run({self.input_name: seqs[0][None, :]}, [self.output_name])[
                    self.output_name
                ][0]
            ]
        result: list[np.ndarray] = [np.empty(0)] * len(seqs)
        for run in length_buckets([len(s) for s in seqs], max_tokens=self.max_run_tokens):
            x, order = pad_sorted([seqs[i] for i in run], self.pad_id)
            probs = self.session.run({self.input_name: x}, [self.output_name])[self.output_name]
            for row, idx in enumerate(order):
                result[run[idx]] = probs[row]
        return result

    def smoke(self) -> None:
        """One real inference before the model takes traffic (raises ModelLoadError)."""
        p = self._predict([self.encode(["a good film"])[0][0]])[0]
        expect_finite(p, (len(self.labels),), "probabilities")
        expect(abs(float(p.sum()) - 1) < 1e-3, f"probabilities sum to {float(p.sum()):.4f}")

    async def close(self) -> None:
        await self.batcher.close()

    async def classify(self, texts: list[str]) -> list[Prediction]:
        self.batcher.admit(len(texts))  # refuse before tokenizing when the model is full
        with Timer("tokenize"):  # long texts in a thread: probes stay prompt meanwhile
            big = sum(len(t) for t in texts) >= OFF_LOOP_CHARS
            encoded = await off_loop(big, self.encode, texts)
        probs = await self.batcher.submit_many([ids for ids, _ in encoded])
        preds = []
        for (_, n_tokens), p in zip(encoded, probs, strict=True):
            values: list[float] = p.tolist()  # Python floats: cheaper than numpy per element
            best = max(range(len(values)), key=values.__getitem__)  # the first of equals
            preds.append(
                Prediction(
                    label=self.labels[best],
                    score=values[best],
                    probabilities=dict(zip(self.labels, values, strict=True)),
                    tokens=n_tokens,
                    truncated=n_tokens > self.max_length,
                )
            )
        return preds


class SentimentService(TaskService[SentimentModel]):
    """``alone`` says whether the caller's request is the only one in flight (the edge's
    limiter knows): only then may a tiny request skip the batcher. Without it, never."""

    task = TASK

    def __init__(
        self, registry: Registry, settings: Settings, alone: Callable[[], bool] = lambda: False
    ) -> None:
        super().__init__(registry, settings)
        self.alone = alone

    def build(self, rec: ModelRecord) -> SentimentModel:
        return SentimentModel(rec, self.settings, self.alone)

    def validate(self, texts: list[str], field: str) -> list[str]:
        """The texts, normalized (see ``normalize_text``), or a typed error naming the field."""
        limit = self.settings.max_texts
        if not texts:
            raise InvalidInput(f"{field} is empty; send at least one text")
        if len(texts) > limit:
            raise InputTooLarge(f"{field} has {len(texts)} items; the limit is {limit}")
        return [
            check_text(
                text, f"{field}[{i}]" if field != "text" else field, self.settings.max_text_chars
            )
            for i, text in enumerate(texts)
        ]

    async def classify(
        self, texts: list[str], field: str, model: str | None
    ) -> tuple[ModelRecord, list[Prediction]]:
        rec, m = self.resolve(model)
        big = sum(len(t) for t in texts) >= OFF_LOOP_CHARS
        clean = await off_loop(big, self.validate, texts, field)
        return rec, await m.classify(clean)
