"""Everything the service builds at start-up, in one object owned by the app's lifespan."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from app import metrics
from app.limits import InflightLimiter
from app.registry import Registry
from app.services.forecast import ForecastService
from app.services.next_word import NextWordService
from app.services.sentiment import SentimentService
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    registry: Registry
    limiter: InflightLimiter
    sentiment: SentimentService | None = None
    next_word: NextWordService | None = None
    forecast: ForecastService | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @classmethod
    def build(cls, settings: Settings) -> Container:
        t0 = time.perf_counter()
        registry = Registry(
            settings.models_dir,
            settings.providers,
            settings.intra_op_threads,
            settings.default_models,
        )
        registry.load_all()
        c = cls(settings, registry, InflightLimiter(settings.max_concurrent_requests))
        tasks = registry.tasks()
        if "sentiment" in tasks:
            c.sentiment = SentimentService(registry, settings)
        if "next-word" in tasks:
            c.next_word = NextWordService(registry, settings, state_secret(settings))
        if "forecast" in tasks:
            c.forecast = ForecastService(registry, settings)
        for task in tasks:
            metrics.MODELS_LOADED.labels(task).set(len(registry.models(task)))
        c.load_seconds = time.perf_counter() - t0
        log.info("loaded %d models in %.2fs", len(registry.records), c.load_seconds)
        return c

    async def close(self) -> None:
        for service in (self.sentiment, self.next_word, self.forecast):
            if service is not None:
                await service.close()


def state_secret(settings: Settings) -> bytes:
    if settings.state_secret is not None:
        return settings.state_secret.get_secret_value().encode()
    log.warning(
        "SEQSERVE_STATE_SECRET is not set: next-word state tokens are signed with a random key "
        "made now, so they stop working after a restart and are not accepted by other replicas"
    )
    return secrets.token_bytes(32)
