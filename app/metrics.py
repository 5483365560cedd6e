"""Prometheus metrics, correct with one or many server processes.

With several uvicorn workers each process holds its own counters, so a scrape would see one
random worker. When ``PROMETHEUS_MULTIPROC_DIR`` is set (``seqserve serve --workers N`` sets
it), prometheus-client writes every process's values to files there and ``render`` sums them.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Per route and model ("name:version"; "" for requests no model served, e.g. health or a 429).
REQUESTS = Counter("seqserve_requests_total", "HTTP requests", ["route", "model", "status"])
REQUEST_SECONDS = Histogram(
    "seqserve_request_seconds",
    "HTTP request latency, per route and model",
    ["route", "model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REJECTED = Counter(
    "seqserve_rejected_total",
    "requests refused before any work (429 overload / queue full, 503 deadline)",
    ["route", "reason"],
)
QUEUE_DEPTH = Gauge(
    "seqserve_queue_items",
    "items accepted by a model's batcher and not yet answered",
    ["model"],
    multiprocess_mode="livesum",
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
# Across processes: requests in flight add up; every worker loads the same models.
IN_FLIGHT = Gauge(
    "seqserve_requests_in_flight",
    "inference requests being served",
    multiprocess_mode="livesum",
)
MODEL_LOAD_FAILURES = Counter(
    "seqserve_model_load_failures_total",
    "model versions refused at start-up or reload (unreadable, corrupt, failed smoke check)",
    ["task"],
)
MODELS_LOADED = Gauge(
    "seqserve_models_loaded", "model versions loaded", ["task"], multiprocess_mode="max"
)


BUILD_INFO = Gauge(
    "seqserve_build_info",
    "always 1; the labels say which seqserve and onnxruntime versions serve",
    ["version", "onnxruntime"],
    multiprocess_mode="max",
)


def set_build_info() -> None:
    import onnxruntime

    from app import __version__

    BUILD_INFO.labels(__version__, onnxruntime.__version__).set(1)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text (summed over all worker processes when in multiprocess mode)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(path: str | Path) -> Path:
    """Create ``path`` and remove files left by an earlier run (they would be summed in)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return folder


def process_exiting() -> None:
    """Drop this process's live gauges so a restarted worker doesn't double count."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())
