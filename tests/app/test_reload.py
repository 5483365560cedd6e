"""Broken model folders, hot reload (admin endpoint), and state-secret rotation."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import InvalidStateToken, ModelLoadError
from app.main import create_app
from app.services.state_token import StateCodec
from app.settings import Settings
from contract.store import publish_folder

ADMIN = {"Authorization": "Bearer admin-secret"}


def _models(tmp_path: Path, tiny_sentiment_models: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(tiny_sentiment_models, root)
    return root


def _add_version(root: Path, version: str, corrupt: str | None = None) -> Path:
    folder = root / "sentiment" / "toy" / version
    publish_folder(root / "sentiment" / "toy" / "1", folder, "sentiment")
    if corrupt == "garbage":
        (folder / "model.onnx").write_bytes(b"this is not an onnx file")
    elif corrupt == "truncated":
        data = (folder / "model.onnx").read_bytes()
        (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    elif corrupt == "card":
        (folder / "card.json").write_text("{not json")
    return folder


def test_a_broken_folder_does_not_stop_the_healthy_ones(
    tmp_path: Path, tiny_sentiment_models: Path
) -> None:
    root = _models(tmp_path, tiny_sentiment_models)
    _add_version(root, "2", corrupt="garbage")
    _add_version(root, "3", corrupt="card")
    with TestClient(create_app(Settings(models_dir=root))) as c:
        ready = c.get("/readyz").json()
        assert ready["models"] == ["sentiment/toy:1"]
        assert set(ready["failed"]) == {"sentiment/toy:2", "sentiment/toy:3"}
        assert "cannot load sentiment/toy/2/model.onnx" in ready["failed"]["sentiment/toy:2"]
        assert str(root) not in str(ready)  # no server paths in responses
        assert ready["failed"]["sentiment/toy:3"].startswith("card.json is unreadable")
        assert c.get("/v1/models").json()["failed"] == ready["failed"]
        r = c.post("/sentiment", json={"text": "good"})
        assert r.status_code == 200 and r.json()["model"]["version"] == "1"
        assert c.post("/sentiment", json={"text": "good", "model": "toy:2"}).status_code == 404


def test_require_all_models_refuses_to_start(tmp_path: Path, tiny_sentiment_models: Path) -> None:
    root = _models(tmp_path, tiny_sentiment_models)
    _add_version(root, "2", corrupt="truncated")
    with pytest.raises(ModelLoadError, match="sentiment/toy:2"):
        with TestClient(create_app(Settings(models_dir=root, require_all_models=True))):
            pass


def test_admin_reload_needs_an_admin_key(tmp_path: Path, tiny_sentiment_models: Path) -> None:
    root = _models(tmp_path, tiny_sentiment_models)
    with TestClient(create_app(Settings(models_dir=root))) as c:
        assert c.post("/admin/reload", headers=ADMIN).status_code == 404
    settings = Settings(models_dir=root, admin_keys=["admin-secret"], api_keys=["user-key"])
    with TestClient(create_app(settings)) as c:
        assert c.post("/admin/reload").status_code == 401
        r = c.post("/admin/reload", headers={"Authorization": "Bearer user-key"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = c.post("/admin/reload", headers=ADMIN)
        assert r.status_code == 200 and r.json()["unchanged"] == ["sentiment/toy:1"]
        # one worker: the same report, once more under its pid (several: one entry each)
        (worker,) = r.json()["workers"]
        assert worker["pid"] == os.getpid() and worker["unchanged"] == ["sentiment/toy:1"]


def test_reload_loads_new_versions_and_refuses_broken_ones(
    tmp_path: Path, tiny_sentiment_models: Path
) -> None:
    root = _models(tmp_path, tiny_sentiment_models)
    settings = Settings(models_dir=root, admin_keys=["admin-secret"], reload_grace_seconds=0)
    with TestClient(create_app(settings)) as c:
        _add_version(root, "2")
        report = c.post("/admin/reload", headers=ADMIN).json()
        assert report["loaded"] == ["sentiment/toy:2"] and report["failed"] == {}
        assert c.post("/sentiment", json={"text": "good"}).json()["model"]["version"] == "2"

        _add_version(root, "3", corrupt="truncated")
        report = c.post("/admin/reload", headers=ADMIN).json()
        assert "sentiment/toy:3" in report["failed"] and report["loaded"] == []
        # The default moves only to a version that loaded.
        assert c.post("/sentiment", json={"text": "good"}).json()["model"]["version"] == "2"
        assert "sentiment/toy:3" in c.get("/readyz").json()["failed"]

        # A served version overwritten with a broken file keeps its old copy serving.
        (root / "sentiment" / "toy" / "2" / "model.onnx").write_bytes(b"garbage")
        report = c.post("/admin/reload", headers=ADMIN).json()
        assert report["kept_previous"] == ["sentiment/toy:2"]
        r = c.post("/sentiment", json={"text": "good", "model": "toy:2"})
        assert r.status_code == 200

        # Removing a folder takes it out of service.
        shutil.rmtree(root / "sentiment" / "toy" / "3")
        shutil.rmtree(root / "sentiment" / "toy" / "2")
        report = c.post("/admin/reload", headers=ADMIN).json()
        assert report["removed"] == ["sentiment/toy:2"] and report["failed"] == {}
        assert c.post("/sentiment", json={"text": "good"}).json()["model"]["version"] == "1"


def test_no_failed_request_during_reloads_under_load(
    tmp_path: Path, tiny_sentiment_models: Path
) -> None:
    root = _models(tmp_path, tiny_sentiment_models)
    settings = Settings(models_dir=root, admin_keys=["admin-secret"], reload_grace_seconds=0.2)
    statuses: list[int] = []
    with TestClient(create_app(settings)) as c:
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                r = c.post("/sentiment", json={"texts": ["a good film", "dull"]})
                statuses.append(r.status_code)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        for v in ("2", "3", "4"):
            _add_version(root, v)
            assert c.post("/admin/reload", headers=ADMIN).json()["loaded"] == [f"sentiment/toy:{v}"]
        (root / "sentiment" / "toy" / "4" / "model.onnx").write_bytes(b"broken")
        assert c.post("/admin/reload", headers=ADMIN).json()["kept_previous"]
        stop.set()
        for w in workers:
            w.join()
    assert len(statuses) > 20 and set(statuses) == {200}


def test_state_tokens_verify_under_previous_secrets() -> None:
    shapes = [(2, 4)]
    state = [np.ones((2, 1, 4), dtype=np.float32)]
    old = StateCodec(b"old-secret", "lm:1", shapes)
    token = old.encode(state)
    rotated = StateCodec(b"new-secret", "lm:1", shapes, previous=[b"old-secret"])
    assert np.allclose(rotated.decode(token)[0], state[0])
    assert rotated.decode(rotated.encode(state))[0].shape == (2, 1, 4)
    with pytest.raises(InvalidStateToken, match="signature"):
        StateCodec(b"new-secret", "lm:1", shapes).decode(token)
