"""KServe peer: a ``kserve.Model`` behind ``kserve.ModelServer``, v1 protocol, one worker.

Run in the KServe environment with the repository on ``PYTHONPATH``:
``python -m benchmarks.peers.servers.kserve_server --http_port P --grpc_port G``.
``POST /v1/models/sentiment:predict {"instances": [text, ...]}``. KServe's defaults are kept
(its per-request latency log line and gRPC server on), as seqserve's shipped defaults are.
"""

from __future__ import annotations

from typing import Any

import kserve

from benchmarks.peers.common import Sentiment


class SentimentModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: Sentiment | None = None
        self.load()

    def load(self) -> bool:
        self.model = Sentiment()
        self.ready = True
        return True

    def predict(  # synchronous: KServe calls it on the event loop, like the bare route
        self, payload: dict[str, Any], headers: dict[str, str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        assert self.model is not None
        texts = [str(t) for t in payload["instances"]]
        return {"predictions": [self.model.response(p) for p in self.model.predict(texts)]}


if __name__ == "__main__":
    kserve.ModelServer(workers=1).start([SentimentModel("sentiment")])
