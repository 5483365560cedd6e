"""Request ids, Server-Timing and one JSON log line per request (never the user's text)."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from app.observability import JsonFormatter


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    r = client.post("/sentiment", json={"text": "good"}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.post("/sentiment", json={"text": "good"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r = client.post("/sentiment", json={"text": "good"}, headers={"X-Request-ID": "bad id\\n" * 20})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # not reflected as sent
    assert client.post("/sentiment", json={"text": ""}).headers["x-request-id"]  # errors too


def test_server_timing_names_tokenize_queue_and_inference(client: TestClient) -> None:
    r = client.post("/sentiment", json={"texts": ["a good film", "dull"]})
    timing = {
        part.split(";dur=")[0].strip(): float(part.split(";dur=")[1])
        for part in r.headers["server-timing"].split(",")
    }
    assert {"tokenize", "inference"} <= set(timing) and all(v >= 0 for v in timing.values())
    r = client.post("/next-word", json={"text": "The game was", "k": 2})
    assert "inference" in r.headers["server-timing"]


def test_one_json_log_line_per_request_without_the_text(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret_text = "my very private review text"
    with caplog.at_level(logging.INFO, logger="seqserve.access"):
        r = client.post("/sentiment", json={"text": secret_text}, headers={"X-Request-ID": "req-7"})
        client.get("/healthz")  # probes are not logged per request
    assert r.status_code == 200
    records = [rec for rec in caplog.records if rec.name == "seqserve.access"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    entry = json.loads(line)
    assert entry["request_id"] == "req-7" and entry["route"] == "/sentiment"
    assert (
        entry["status"] == 200
        and entry["model"] == r.json()["model"]["name"] + ":" + r.json()["model"]["version"]
    )
    assert entry["latency_ms"] > 0 and entry["batch_sizes"] == [1]
    assert secret_text not in line


def test_metrics_carry_build_info_queue_depth_and_rejections(client: TestClient) -> None:
    client.post("/sentiment", json={"text": "good"})
    text = client.get("/metrics").text
    assert "seqserve_build_info{" in text and 'onnxruntime="' in text
    assert "seqserve_queue_items" in text and "seqserve_batch_size_bucket" in text
