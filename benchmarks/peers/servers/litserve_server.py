"""LitServe peer: a LitAPI with its dynamic batching (up to 32 texts, 2 ms wait), one worker.

Run in the LitServe environment with the repository on ``PYTHONPATH``:
``python -m benchmarks.peers.servers.litserve_server PORT``. ``POST /predict {"text": ...}``.
LitServe runs the HTTP server and the inference worker as separate processes linked by queues.
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls

from benchmarks.peers.common import Sentiment


class SentimentAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = Sentiment()

    # No annotation on ``request`` nor encode_response's return: LitServe reads them to pick
    # the request and response types (unannotated = the raw JSON body and a JSON response).
    def decode_request(self, request, **kwargs: Any) -> str:
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return inputs  # texts of different lengths: tokenized and padded in predict

    def predict(self, texts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        return [self.model.response(p) for p in self.model.predict(texts)]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any], **kwargs: Any):
        return output


if __name__ == "__main__":
    api = SentimentAPI(max_batch_size=32, batch_timeout=0.002)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )
