"""Batched and unbatched inference give the same outputs (within 1e-5) for the same inputs."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.container import Container
from app.settings import Settings


@pytest.fixture(scope="module")
def all_tiny_models(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sentiment_models: Path,
    tiny_lm_models: Path,
    tiny_forecast_models: Path,
) -> Path:
    root = tmp_path_factory.mktemp("all")
    for src in (tiny_sentiment_models, tiny_lm_models, tiny_forecast_models):
        shutil.copytree(src, root, dirs_exist_ok=True)
    return root


async def _run_all(models: Path, max_batch: int) -> tuple[list, list, list]:
    c = Container.build(
        Settings(models_dir=models, max_batch_size=max_batch, state_secret="s" * 32)
    )
    try:
        assert c.sentiment and c.next_word and c.forecast
        rng = random.Random(0)
        words = ["good", "bad", "film", "the", "plot", "is", "dull", "witty", "a", "very"]
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(40)]
        sent = await asyncio.gather(*(c.sentiment.classify([t], "text", None) for t in texts))
        prompts = [
            "Happy birthday",
            "The band played",
            "my friend said",
            "Happy",
            "the team 's",
        ] * 4
        nw = await asyncio.gather(
            *(
                c.next_word.predict(
                    p,
                    None,
                    k=5,
                    state_token=None,
                    complete=0,
                    temperature=0.0,
                    top_k=None,
                    seed=None,
                )
                for p in prompts
            )
        )
        from app.services.forecast import SeriesInput

        t = np.arange(120)
        series = [
            [SeriesInput(f"s{i}", list(50 + 10 * np.sin(2 * np.pi * t / 24) + i))]
            for i in range(20)
        ]
        fc = await asyncio.gather(*(c.forecast.forecast(s, 24, [80.0], None) for s in series))
        return (
            [p[1][0].probabilities["positive"] for p in sent],
            [[x.probability for x in r[1].candidates] for r in nw],
            [r[1][0].mean for r in fc],
        )
    finally:
        await c.close()


def test_batched_equals_unbatched(all_tiny_models: Path) -> None:
    on = asyncio.run(_run_all(all_tiny_models, 32))
    off = asyncio.run(_run_all(all_tiny_models, 1))
    for a, b in zip(on, off, strict=True):
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= 1e-5
