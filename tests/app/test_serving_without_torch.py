"""Serving never imports torch: the serve install has none, so one stray import would crash it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from app.main import create_app

with TestClient(create_app()) as client:
    assert client.post("/sentiment", json={"text": "fine"}).status_code == 200
    assert client.post("/next-word", json={"text": "the"}).status_code == 200
    assert client.post("/next-word/score", json={"text": "the end"}).status_code == 200
    series = [{"values": [float(i % 24) for i in range(400)]}]
    assert client.post("/forecast", json={"series": series}).status_code == 200
    assert client.get("/metrics").status_code == 200
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "training")))
print(",".join(leaked))
"""


def test_serving_the_shipped_models_imports_no_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"serving imported: {done.stdout.strip()}"
