"""Prometheus metrics (per process; scrape each worker, or run one process per container)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("seqserve_requests_total", "HTTP requests", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "seqserve_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "seqserve_batch_size",
    "items per inference call",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
INFERENCE_SECONDS = Histogram(
    "seqserve_inference_seconds",
    "onnxruntime time per batch",
    ["model"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
IN_FLIGHT = Gauge("seqserve_requests_in_flight", "inference requests being served")
MODELS_LOADED = Gauge("seqserve_models_loaded", "model versions loaded", ["task"])
