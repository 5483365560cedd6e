"""BentoML peer: a service whose API is batchable (adaptive batching, up to 32 texts), one worker.

Run in the BentoML environment with the repository on ``PYTHONPATH`` and as working directory:
``bentoml serve benchmarks.peers.servers.bentoml_service:SentimentService --port P``.
``POST /classify {"texts": [text, ...]}`` returns one result per text.
"""

from __future__ import annotations

from typing import Any

import bentoml

from benchmarks.peers.common import Sentiment


@bentoml.service(workers=1, resources={"cpu": "1"})
class SentimentService:
    def __init__(self) -> None:
        self.model = Sentiment()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        return [self.model.response(p) for p in self.model.predict(texts)]
