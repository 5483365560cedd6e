"""The model code every peer server shares, so the benchmark compares serving stacks, not models.

Each peer (LitServe, KServe, BentoML, the bare Starlette route) imports this module and calls the
same onnxruntime session the same way seqserve does: the model folder's ``tokenizer.json`` and
``card.json``, ids encoded exactly like ``app.services.sentiment.SentimentModel.encode``, the
session options of ``app.runtime.OrtModel`` (one intra-op thread, sequential, no arena), and the
``contract`` package's padding and forecast rules. It imports nothing from ``app`` (the peers'
virtual environments have no FastAPI settings stack of seqserve's): only numpy, tokenizers,
onnxruntime and pydantic (for the typed card), which every peer environment has.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from contract.card import ForecastCard, NextWordCard, SentimentCard, read
from contract.forecast import (
    interval_bounds,
    interval_k,
    last_window,
    level_label,
    log_spread,
    positive_shift,
)
from contract.text import pad_sorted

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SENTIMENT_DIR = MODELS / "sentiment" / "sst2-imdb-bilstm" / "1"
NEXT_WORD_DIR = MODELS / "next-word" / "wikitext2-lstm" / "2"
FORECAST_DIR = MODELS / "forecast" / "m4-hourly-gru" / "2"
# An ordinary movie-review sentence of exactly 21 tokens for the sentiment model's tokenizer
# (tests/benchmarks/test_peers_common.py checks the count), so every cell is the same work.
SENTENCE = (
    "I really enjoyed this movie: the acting was strong, the story was moving and the ending "
    "surprised me."
)


def session(path: Path) -> ort.InferenceSession:
    """The options ``app.runtime.OrtModel`` uses: a peer with other options would measure them."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Sentiment:
    """Tokenize, run and decode like seqserve's sentiment service, without its batcher."""

    def __init__(self, folder: Path = SENTIMENT_DIR) -> None:
        card = read(folder, "sentiment")
        assert isinstance(card, SentimentCard)
        self.labels = list(card.labels)
        self.pad_id, self.unk_id = card.tokenizer.pad_id, card.tokenizer.unk_id
        self.max_length = card.tokenizer.max_length
        self.tokenizer = Tokenizer.from_file(str(folder / card.tokenizer.file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.session = session(folder / card.onnx.file)
        self.input_name = card.onnx.input_names[0]
        self.output_name = card.onnx.output_names[0]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """int64 ids per text: empty -> [unk], pad id -> unk id, cut to max_length."""
        encs = (
            [self.tokenizer.encode(texts[0])]
            if len(texts) == 1
            else self.tokenizer.encode_batch(texts)
        )
        out = []
        for enc in encs:
            ids = np.asarray(enc.ids or [self.unk_id], dtype=np.int64)
            ids[ids == self.pad_id] = self.unk_id  # the graph reads the pad id as end of text
            out.append(ids[: self.max_length])
        return out

    def run(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Probabilities [len(seqs), labels], in the order given (one padded graph call)."""
        x, order = pad_sorted(seqs, self.pad_id)
        probs = self.session.run([self.output_name], {self.input_name: x})[0]
        out = np.empty_like(probs)
        out[order] = probs
        return out

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.run(self.encode(texts))

    def response(self, probs: np.ndarray) -> dict[str, Any]:
        """One text's result in seqserve's field names, so one checker reads every server."""
        best = int(np.argmax(probs))
        return {
            "label": self.labels[best],
            "score": float(probs[best]),
            "probabilities": {lab: float(v) for lab, v in zip(self.labels, probs, strict=True)},
        }


class NextWord:
    """The next-word step of ``app.services.next_word`` with the state as plain float32.

    The bare route hands the state back as base64 of the raw h/c arrays: the floor of carrying
    state, with none of seqserve's signing, compression or expiry (not a safe design).
    """

    def __init__(self, folder: Path = NEXT_WORD_DIR) -> None:
        card = read(folder, "next-word")
        assert isinstance(card, NextWordCard)
        self.tokenizer = Tokenizer.from_file(str(folder / card.tokenizer.file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        vocab = self.tokenizer.get_vocab()
        self.id_to_token = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            self.id_to_token[i] = tok
        self.unk_id = card.special_tokens.unk.id
        self.eos_id = card.special_tokens.eos.id
        self.start_id = card.start_token.id if card.start_token else self.eos_id
        self.state_in, self.state_out = list(card.state.inputs), list(card.state.outputs)
        self.layers, self.hidden = card.state.layers, card.state.hidden_size
        self.input_name = card.onnx.input_names[0]
        self.output_names = card.onnx.output_names
        self.session = session(folder / card.onnx.file)
        self.banned = np.array(sorted({self.unk_id, self.eos_id}))

    def zero_state(self) -> list[np.ndarray]:
        return [np.zeros((self.layers, 1, self.hidden), np.float32) for _ in self.state_in]

    def step(
        self, text: str, state: list[np.ndarray] | None
    ) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
        """(log-probabilities of the next word, state after the text, the text's ids); a fresh
        text starts with the start token, as seqserve feeds it."""
        ids = self.tokenizer.encode(text).ids
        if not ids:
            raise ValueError("text contains no words the model can read")
        feed = ids if state is not None else [self.start_id, *ids]
        st = state if state is not None else self.zero_state()
        res = self.session.run(
            self.output_names,
            {
                self.input_name: np.asarray([feed], dtype=np.int64),
                **dict(zip(self.state_in, st, strict=True)),
            },
        )
        out = dict(zip(self.output_names, res, strict=True))
        return out[self.output_names[0]][0], [out[n] for n in self.state_out], ids

    def top_k(self, log_probs: np.ndarray, k: int) -> list[dict[str, Any]]:
        """seqserve's candidates: never the unknown word or end of line, most probable first."""
        lp = log_probs.copy()
        lp[self.banned] = -np.inf
        k = min(k, len(lp) - len(self.banned))
        idx = np.argpartition(-lp, k - 1)[:k]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        return [{"word": self.id_to_token[i], "probability": float(np.exp(lp[i]))} for i in idx]

    def encode_state(self, state: list[np.ndarray]) -> str:
        return base64.b64encode(b"".join(s.astype(np.float32).tobytes() for s in state)).decode()

    def decode_state(self, token: str) -> list[np.ndarray]:
        raw = np.frombuffer(base64.b64decode(token, validate=True), dtype=np.float32)
        size = self.layers * self.hidden
        if raw.size != size * len(self.state_in):
            raise ValueError("state has the wrong size")
        return [
            raw[i * size : (i + 1) * size].reshape(self.layers, 1, self.hidden).copy()
            for i in range(len(self.state_in))
        ]


class Forecast:
    """``app.services.forecast.ForecastModel`` without validation, batcher or timestamps: the
    same ``contract.forecast`` window, shift and interval rules around one graph call."""

    def __init__(self, folder: Path = FORECAST_DIR) -> None:
        card = read(folder, "forecast")
        assert isinstance(card, ForecastCard)
        self.window, self.period, self.max_horizon = (
            card.window,
            card.seasonal_period,
            card.max_horizon,
        )
        shift = card.preprocessing.shift
        self.rel_margin, self.abs_floor = shift.rel_margin, shift.abs_floor
        self.grid = np.asarray(card.intervals.levels, dtype=np.float64)
        table = np.asarray(card.intervals.table, dtype=np.float64)
        if table.shape[0] < self.max_horizon:  # card: beyond the table use its last row
            extra = np.repeat(table[-1:], self.max_horizon - table.shape[0], axis=0)
            table = np.concatenate([table, extra])
        self.table = table
        self.input_name = card.onnx.input_names[0]
        self.session = session(folder / card.onnx.file)

    def predict(
        self, series: list[list[float]], horizon: int, levels: list[float]
    ) -> list[dict[str, list[float]]]:
        """Per series: ``mean`` and ``lo-<level>`` / ``hi-<level>`` (seqserve's names)."""
        raw = np.stack(
            [last_window(np.asarray(v, dtype=np.float64), self.window, self.period) for v in series]
        )
        shift = positive_shift(raw, self.rel_margin, self.abs_floor)
        med, q = self.session.run(
            ["median", "quantiles"], {self.input_name: (raw + shift[:, None]).astype(np.float32)}
        )
        med = med[:, :horizon].astype(np.float64)
        spread = log_spread(q[:, :horizon].astype(np.float64))
        cols: dict[str, np.ndarray] = {"mean": med - shift[:, None]}
        for level in sorted(levels):
            k = interval_k(self.table[:horizon], level, self.grid)
            name = level_label(level)
            cols[f"lo-{name}"], cols[f"hi-{name}"] = interval_bounds(med, spread, shift, k)
        return [{key: v[i].tolist() for key, v in cols.items()} for i in range(len(series))]
