"""Registry discovery and model resolution, on a tiny model trained from fixture data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import ModelLoadError, ModelNotFound
from app.main import create_app
from app.registry import Registry
from app.runtime import resolve_providers
from app.settings import Settings
from contract.store import publish_folder


def _copy_versions(src_root: Path, dst: Path, versions: list[str]) -> Path:
    src = src_root / "sentiment" / "toy" / "1"
    for v in versions:
        publish_folder(src, dst / "sentiment" / "toy" / v, "sentiment")
    return dst


def test_resolves_default_name_and_version(tiny_sentiment_models: Path, tmp_path: Path) -> None:
    root = _copy_versions(tiny_sentiment_models, tmp_path, ["1", "2", "10"])
    reg = Registry(root, ["CPUExecutionProvider"])
    reg.load_all()
    assert reg.get("sentiment").version == "10"  # numeric, not lexical, order
    assert reg.get("sentiment", "toy").version == "10"
    assert reg.get("sentiment", "toy:2").version == "2"
    with pytest.raises(ModelNotFound, match="available: toy:1, toy:10, toy:2"):
        reg.get("sentiment", "toy:3")
    with pytest.raises(ModelNotFound, match="for task 'forecast'"):
        reg.get("forecast")


def test_configured_default_must_exist(tiny_sentiment_models: Path) -> None:
    reg = Registry(tiny_sentiment_models, ["CPUExecutionProvider"], defaults={"sentiment": "other"})
    with pytest.raises(ModelNotFound):
        reg.load_all()


def test_card_task_must_match_folder(tiny_sentiment_models: Path, tmp_path: Path) -> None:
    root = _copy_versions(tiny_sentiment_models, tmp_path, ["1"])
    card_path = root / "sentiment" / "toy" / "1" / "card.json"
    card = json.loads(card_path.read_text())
    card["task"] = "forecast"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="says task 'forecast'"):
        Registry(root, ["CPUExecutionProvider"]).load_all()


def test_missing_artifact_is_a_load_error(tiny_sentiment_models: Path, tmp_path: Path) -> None:
    root = _copy_versions(tiny_sentiment_models, tmp_path, ["1"])
    (root / "sentiment" / "toy" / "1" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        Registry(root, ["CPUExecutionProvider"]).load_all()


def test_cuda_request_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    chosen = resolve_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert chosen[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in chosen:
        assert "not available" in caplog.text


def test_settings_fail_fast_on_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="providers"):
        Settings(models_dir=tmp_path, providers=["TPUExecutionProvider"])
    with pytest.raises(ValueError, match="no folder"):
        Settings(models_dir=tmp_path / "missing")


def test_app_on_a_custom_models_dir_with_batching_off(tiny_sentiment_models: Path) -> None:
    settings = Settings(models_dir=tiny_sentiment_models, max_batch_size=1)
    with TestClient(create_app(settings)) as c:
        r = c.post("/sentiment", json={"texts": ["good film", "bad film"]})
        assert r.status_code == 200 and r.json()["model"] == {"name": "toy", "version": "1"}
        assert c.get("/readyz").json()["models"] == ["sentiment/toy:1"]


def test_overload_answers_429(tiny_sentiment_models: Path) -> None:
    settings = Settings(models_dir=tiny_sentiment_models)
    with TestClient(create_app(settings)) as c:
        c.app.state.container.limiter.current = settings.max_concurrent_requests  # type: ignore[attr-defined]
        r = c.post("/sentiment", json={"text": "good"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded"
