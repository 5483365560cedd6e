"""Long texts go through the language model in pieces that carry the state: same numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.container import Container
from app.services.next_word import NextWordModel, NextWordService, pieces
from app.settings import Settings

TEXT = " ".join(["the game was played in the city of new york on the first day of may"] * 12)


@pytest.fixture(scope="module")
def lm(tiny_lm_models: Path) -> NextWordModel:
    settings = Settings(
        models_dir=tiny_lm_models, state_secret="test-secret-0123456789abcdef0123456789"
    )
    c = Container.build(settings)
    return c.get(NextWordService).resolve(None)[1]


def test_pieces_cover_the_range_in_order() -> None:
    assert pieces(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert pieces(8, 4) == [slice(0, 4), slice(4, 8)]
    assert pieces(3, 100) == [slice(0, 3)]


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_log_likelihood_equals_one_call(lm: NextWordModel, chunk: int) -> None:
    ids = np.asarray([lm.start_id, *lm.encode(TEXT)], dtype=np.int64)
    assert len(ids) > 100
    whole_chunk = lm.score_chunk
    try:
        lm.score_chunk = 10_000
        whole = asyncio.run(lm.token_log_probs(ids, lm.zero_state()))
        lm.score_chunk = chunk
        pieced = asyncio.run(lm.token_log_probs(ids, lm.zero_state()))
    finally:
        lm.score_chunk = whole_chunk
    assert pieced.shape == whole.shape == (len(ids) - 1,)
    np.testing.assert_allclose(pieced, whole, atol=1e-5)
    assert abs(float(pieced.sum(dtype=np.float64)) - float(whole.sum(dtype=np.float64))) < 1e-3


def test_chunked_context_gives_the_same_next_word_and_state(lm: NextWordModel) -> None:
    ids = np.asarray([lm.start_id, *lm.encode(TEXT)], dtype=np.int64)
    saved = lm.next_chunk
    try:
        lm.next_chunk = 10_000
        whole = asyncio.run(lm.advance(ids, lm.zero_state()))
        lm.next_chunk = 9
        pieced = asyncio.run(lm.advance(ids, lm.zero_state()))
    finally:
        lm.next_chunk = saved
    np.testing.assert_allclose(pieced.log_probs, whole.log_probs, atol=1e-5)
    for a, b in zip(pieced.state, whole.state, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_piece_lengths_follow_the_memory_budget(tiny_lm_models: Path) -> None:
    small = Settings(models_dir=tiny_lm_models, memory_budget_mb=16)
    large = Settings(models_dir=tiny_lm_models, memory_budget_mb=1024)
    a = Container.build(small).get(NextWordService).resolve(None)[1]
    b = Container.build(large).get(NextWordService).resolve(None)[1]
    assert 16 <= a.score_chunk < b.score_chunk
    assert a.score_batcher.max_batch_cost == 16_000_000
    # A piece fits the budget with room for others in the same batch.
    assert b.score_chunk * b.score_token_bytes <= large.memory_budget_mb * 1_000_000 / 4
