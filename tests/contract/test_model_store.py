"""The append-only model store, typed cards at load, and pinned defaults.

Runs on copies of two small shipped models (anomaly nab-gru:1, forecast m4-hourly-gru:1), so it
needs no training and never touches the shipped folders.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.main import create_app
from app.registry import Registry
from app.settings import Settings
from contract import card as cards
from contract import store

MODELS = Path(__file__).resolve().parents[2] / "models"
SERIES = {"series": [{"id": "s", "values": [float(i % 24) for i in range(400)]}]}


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    """A models folder with nab-gru:1 and m4-hourly-gru:1 and both pinned as defaults."""
    root = tmp_path / "models"
    for rel in ("anomaly/nab-gru/1", "forecast/m4-hourly-gru/1"):
        shutil.copytree(MODELS / rel, root / rel)
    (root / "defaults.json").write_text(
        json.dumps({"anomaly": "nab-gru:1", "forecast": "m4-hourly-gru:1"})
    )
    return root


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _publish_copy(src: Path, dest: Path, *, force: bool = False) -> store.Publication:
    return store.publish_folder(src, dest, dest.parent.parent.name, force=force)


# --- publishing --------------------------------------------------------------------------------


def test_publish_is_a_new_folder_with_the_published_name(models: Path) -> None:
    src = models / "anomaly" / "nab-gru" / "1"
    dest = store.destination(models, "anomaly", "my-detector")
    assert dest == models / "anomaly" / "my-detector" / "1"
    pub = _publish_copy(src, dest)
    card = json.loads((dest / "card.json").read_text())
    assert (card["name"], card["version"]) == ("my-detector", "1")
    assert pub.ref == "my-detector:1" and "Published my-detector:1" in pub.message()
    assert store.next_version(models, "anomaly", "my-detector") == "2"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_publishing_onto_a_version_is_refused_and_force_keeps_the_old_folder(models: Path) -> None:
    dest = models / "anomaly" / "nab-gru" / "1"
    before = _tree(dest)
    with pytest.raises(store.StoreError, match=r"nab-gru/1 already exists.*version 2.*--force"):
        _publish_copy(dest, dest)
    assert _tree(dest) == before
    # A failing export leaves the published folder as it was and no staging folder behind.
    with pytest.raises(RuntimeError), store.publishing(dest, "anomaly", force=True) as pub:
        (pub.staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")
    assert _tree(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["1"]
    # --force: the new model is published, the old folder is kept, byte for byte.
    with store.publishing(dest, "anomaly", force=True) as pub:
        shutil.copytree(models / "anomaly" / "nab-gru" / "1", pub.staging, dirs_exist_ok=True)
        (pub.staging / "notes.txt").write_text("retrained")
    assert pub.moved_aside is not None and pub.moved_aside.is_relative_to(models / ".replaced")
    assert _tree(pub.moved_aside) == before
    assert (dest / "notes.txt").read_text() == "retrained"
    assert str(pub.moved_aside) in pub.message()


def test_a_card_serving_would_refuse_is_not_published(models: Path, tmp_path: Path) -> None:
    src = tmp_path / "export"
    shutil.copytree(models / "forecast" / "m4-hourly-gru" / "1", src)
    card = json.loads((src / "card.json").read_text())
    del card["window"]
    (src / "card.json").write_text(json.dumps(card))
    dest = models / "forecast" / "mine" / "1"
    with pytest.raises(store.StoreError, match="would not be served: card.json window: missing"):
        _publish_copy(src, dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("name", "version"), [("My Model", "1"), ("a:b", "1"), ("../x", "1"), ("ok", "v1")]
)
def test_bad_names_and_versions_are_refused(models: Path, name: str, version: str) -> None:
    with pytest.raises(store.StoreError, match="is not a"):
        store.destination(models, "anomaly", name, version)


def test_staging_and_moved_aside_folders_are_never_scanned(models: Path) -> None:
    src = models / "anomaly" / "nab-gru" / "1"
    shutil.copytree(src, models / "anomaly" / "nab-gru" / ".2.partial-abc")
    _publish_copy(src, src, force=True)  # moves the old one to .replaced/
    found, failed = Registry(models, ["CPUExecutionProvider"]).scan()
    assert sorted(f"{r.task}/{r.ref}" for r in found) == [
        "anomaly/nab-gru:1",
        "forecast/m4-hourly-gru:1",
    ]
    assert failed == {}


# --- typed cards at load -----------------------------------------------------------------------


def test_every_shipped_card_validates() -> None:
    # a publish in progress stages under a hidden folder, which the server never scans either
    folders = sorted(
        p.parent
        for p in MODELS.glob("*/*/*/card.json")
        if not any(store.is_hidden(part) for part in p.relative_to(MODELS).parts)
    )
    assert len(folders) >= 7
    for folder in folders:
        spec = cards.read(folder, folder.parts[-3])
        assert (spec.name, spec.version) == folder.parts[-2:]
        assert spec.onnx.input_names and spec.onnx.output_names


def _edit_card(folder: Path, edit: dict[str, object], drop: tuple[str, ...] = ()) -> None:
    card = json.loads((folder / "card.json").read_text())
    card.update(edit)
    for key in drop:
        del card[key]
    (folder / "card.json").write_text(json.dumps(card))


def test_broken_cards_are_named_in_readyz_and_the_rest_serve(models: Path) -> None:
    fc = models / "forecast" / "m4-hourly-gru"
    for v in ("2", "3", "4", "5"):
        shutil.copytree(fc / "1", fc / v)
        _edit_card(fc / v, {"version": v})
    _edit_card(fc / "2", {"schema_version": 99})
    _edit_card(fc / "3", {}, drop=("window",))
    _edit_card(fc / "4", {"intervals": {"levels": "oops", "table": [[0.1]]}})
    (fc / "5" / "card.json").write_text("{not json")
    copy = models / "anomaly" / "stars2" / "1"
    shutil.copytree(models / "anomaly" / "nab-gru" / "1", copy)  # name in card: nab-gru
    with TestClient(create_app(Settings(models_dir=models))) as c:
        ready = c.get("/readyz").json()
        failed = ready["failed"]
        assert failed["forecast/m4-hourly-gru:2"].startswith("card.json schema_version 99 is not")
        assert failed["forecast/m4-hourly-gru:3"] == "card.json window: missing"
        assert failed["forecast/m4-hourly-gru:4"].startswith("card.json intervals.levels:")
        assert failed["forecast/m4-hourly-gru:5"].startswith("card.json is unreadable")
        assert "names nab-gru:1 but the folder is stars2/1" in failed["anomaly/stars2:1"]
        assert all("\n" not in reason for reason in failed.values())
        assert ready["models"] == ["anomaly/nab-gru:1", "forecast/m4-hourly-gru:1"]
        assert c.get("/v1/models").json()["failed"] == failed
        assert c.post("/forecast", json={**SERIES, "horizon": 4}).status_code == 200
        assert c.post("/anomaly", json=SERIES).status_code == 200


def test_a_broken_default_is_reported_and_the_other_tasks_serve(models: Path) -> None:
    _edit_card(models / "forecast" / "m4-hourly-gru" / "1", {"schema_version": 3})
    with TestClient(create_app(Settings(models_dir=models))) as c:
        assert "forecast/m4-hourly-gru:1" in c.get("/readyz").json()["failed"]
        assert c.post("/anomaly", json=SERIES).status_code == 200
        assert c.post("/forecast", json={**SERIES, "horizon": 4}).status_code == 404


# --- defaults ----------------------------------------------------------------------------------


def test_shipped_defaults_pin_every_task_to_a_version() -> None:
    pinned = json.loads((MODELS / "defaults.json").read_text())
    tasks = {p.parts[-4] for p in MODELS.glob("*/*/*/card.json")}
    assert set(pinned) == tasks
    for task, ref in pinned.items():
        name, _, version = ref.partition(":")
        assert version and (MODELS / task / name / version / "card.json").is_file()


def test_a_new_model_becomes_default_only_when_asked(
    models: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    src = models / "anomaly" / "nab-gru" / "1"
    _publish_copy(src, store.destination(models, "anomaly", "aaa-first"))  # sorts first
    _publish_copy(src, store.destination(models, "anomaly", "nab-gru"))  # nab-gru:2
    with caplog.at_level(logging.INFO, logger="app.container"):
        app = create_app(Settings(models_dir=models))
        with TestClient(app) as c:
            assert c.post("/anomaly", json=SERIES).json()["model"]["name"] == "nab-gru"
            assert c.post("/anomaly", json=SERIES).json()["model"]["version"] == "1"
            assert "task anomaly: default model nab-gru:1 (from defaults.json)" in caplog.text
            assert "task forecast: default model m4-hourly-gru:1" in caplog.text

            dirs = ["--models-dir", str(models)]
            assert cli.main(["models", "default", "anomaly", "aaa-first", *dirs]) == 0
            out = capsys.readouterr().out
            assert "anomaly: default is now aaa-first:1 (was nab-gru:1)" in out
            # A running server switches on reload, not before.
            assert c.post("/anomaly", json=SERIES).json()["model"]["name"] == "nab-gru"
            c.portal.call(app.state.container.reload)
            assert c.post("/anomaly", json=SERIES).json()["model"]["name"] == "aaa-first"
    pinned = json.loads((models / "defaults.json").read_text())
    assert pinned == {"anomaly": "aaa-first:1", "forecast": "m4-hourly-gru:1"}

    assert cli.main(["models", "list", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert "*aaa-first:1" in listing and " nab-gru:2" in listing and " nab-gru:1" in listing
    assert cli.main(["models", "default", "anomaly", "nab-gru:9", "--models-dir", str(models)]) == 2
    assert "has no version 9 (published: 1, 2)" in capsys.readouterr().err


def test_an_unpinned_task_warns_which_model_it_serves(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (models / "defaults.json").unlink()
    with caplog.at_level(logging.WARNING, logger="app.container"):
        with TestClient(create_app(Settings(models_dir=models))):
            pass
    assert "task anomaly: no default pinned, serving nab-gru:1" in caplog.text
    assert "seqserve models default anomaly NAME:VERSION" in caplog.text


def test_a_default_pinned_to_a_missing_version_is_reported_not_fatal(models: Path) -> None:
    (models / "defaults.json").write_text(
        json.dumps({"anomaly": "nab-gru:5", "forecast": "m4-hourly-gru:1"})
    )
    with TestClient(create_app(Settings(models_dir=models))) as c:
        failed = c.get("/readyz").json()["failed"]
        assert failed["defaults/anomaly"].startswith("defaults.json pins nab-gru:5, which is not")
        assert c.post("/anomaly", json=SERIES).status_code == 404
        named = c.post("/anomaly", json={**SERIES, "model": "nab-gru:1"})
        assert named.status_code == 200
        assert c.post("/forecast", json={**SERIES, "horizon": 4}).status_code == 200


def test_a_run_folder_is_never_a_model_folder_nor_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from training.common.config_cli import claim_run_dir

    def args(**kw: object) -> argparse.Namespace:
        base = {"run_dir": None, "models_dir": tmp_path / "models", "name": "m", "dry_run": False}
        return argparse.Namespace(**{**base, **kw})

    shutil.copytree(MODELS / "anomaly" / "nab-gru" / "1", tmp_path / "pub")
    with pytest.raises(store.StoreError, match="inside a models folder or a published model"):
        claim_run_dir(args(run_dir=tmp_path / "pub" / "run"), "anomaly")
    with pytest.raises(store.StoreError, match="inside a models folder"):
        claim_run_dir(args(run_dir=tmp_path / "models" / "x"), "anomaly")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "ckpt.pt").write_bytes(b"earlier run")
    with pytest.raises(store.StoreError, match="already holds a run.*--overwrite-run"):
        claim_run_dir(args(run_dir=run), "anomaly")
    assert claim_run_dir(args(run_dir=run, overwrite_run=True), "anomaly") == run
    # The default folder moves on to the next free number instead.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "anomaly" / "m").mkdir(parents=True)
    (tmp_path / "runs" / "anomaly" / "m" / "ckpt.pt").write_bytes(b"earlier run")
    assert claim_run_dir(args(), "anomaly") == Path("runs/anomaly/m-2")
    assert (tmp_path / "runs" / "anomaly" / "m" / "ckpt.pt").read_bytes() == b"earlier run"


def test_a_version_taken_while_training_is_renumbered_or_kept(models: Path) -> None:
    src = models / "anomaly" / "nab-gru" / "1"
    dest = store.destination(models, "anomaly", "nab-gru")  # nab-gru/2
    with store.publishing(dest, "anomaly", renumber=True) as pub:
        shutil.copytree(src, pub.staging, dirs_exist_ok=True)
        _publish_copy(src, dest)  # someone else publishes :2 meanwhile
    assert (
        pub.path.name == "3" and json.loads((pub.path / "card.json").read_text())["version"] == "3"
    )
    taken = models / "anomaly" / "nab-gru" / "4"
    with pytest.raises(store.StoreError, match="nothing was overwritten.*kept in"):
        with store.publishing(taken, "anomaly") as pub:
            shutil.copytree(src, pub.staging, dirs_exist_ok=True)
            _publish_copy(src, taken)
    kept = list((models / store.UNPUBLISHED_DIR / "anomaly" / "nab-gru").iterdir())
    assert len(kept) == 1 and (kept[0] / "model.onnx").is_file()


def test_an_empty_models_folder_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with TestClient(create_app(Settings(models_dir=tmp_path / "empty"))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["message"].startswith("no model loaded")
        assert c.get("/healthz").status_code == 200


def test_training_publishes_where_the_server_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from training.common.config_cli import models_dir

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(models_dir=None)
    assert models_dir(args) == Path("models")
    monkeypatch.setenv("SEQSERVE_MODELS_DIR", str(tmp_path / "served"))
    assert models_dir(args) == tmp_path / "served"
    assert models_dir(argparse.Namespace(models_dir=Path("mine"))) == Path("mine")
