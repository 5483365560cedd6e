"""/metrics with several worker processes: counts from every process are summed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import metrics
from app.cli import setup_metrics_dir

WORKER = """
from app import metrics
metrics.REQUESTS.labels("/sentiment", "m:1", "200").inc({n})
metrics.IN_FLIGHT.inc()
metrics.MODELS_LOADED.labels("sentiment").set(1)
"""
SCRAPE = """
import sys
from app import metrics
sys.stdout.write(metrics.render()[0].decode())
"""


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _sample(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def test_scrape_sums_counters_over_processes(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    _python(WORKER.format(n=2), env)
    _python(WORKER.format(n=3), env)
    text = _python(SCRAPE, env)
    assert (
        _sample(text, 'seqserve_requests_total{model="m:1",route="/sentiment",status="200"}') == 5.0
    )
    # both writers exited without marking themselves dead: livesum keeps what they left
    assert _sample(text, "seqserve_requests_in_flight") == 2.0
    assert _sample(text, 'seqserve_models_loaded{task="sentiment"}') == 1.0


def test_setup_empties_a_stale_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    assert setup_metrics_dir(workers=1) == str(tmp_path)
    assert not list(tmp_path.glob("*.db"))


def test_several_workers_get_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # unset, and restored after the test
    assert setup_metrics_dir(workers=1) is None
    path = setup_metrics_dir(workers=2)
    assert path is not None and Path(path).is_dir()
    assert os.environ[metrics.MULTIPROC_ENV] == path
