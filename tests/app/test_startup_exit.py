"""A server whose app cannot start exits 3 promptly, with its reason on one line, whatever the
number of workers (uvicorn's supervisor alone stops with exit 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MODELS, REPO
from tests.helpers import free_port

SHIPPED = "imdb-simple-rnn"


def _models(tmp_path: Path, broken: bool = False) -> Path:
    root = tmp_path / "models"
    (root / "sentiment").mkdir(parents=True)
    (root / "sentiment" / SHIPPED).symlink_to(MODELS / "sentiment" / SHIPPED)
    if broken:  # a copy of the shipped card next to a model file that is not ONNX
        folder = root / "sentiment" / "broken" / "1"
        folder.mkdir(parents=True)
        card = json.loads((MODELS / "sentiment" / SHIPPED / "1" / "card.json").read_text())
        card["name"] = "broken"
        (folder / "card.json").write_text(json.dumps(card))
        for f in (MODELS / "sentiment" / SHIPPED / "1").iterdir():
            if f.name not in ("card.json", "model.onnx") and f.is_file():
                (folder / f.name).write_bytes(f.read_bytes())
        (folder / "model.onnx").write_bytes(b"this is not an onnx file")
    return root


def _serve(root: Path, workers: int, extra: dict[str, str], *flags: str) -> tuple[int, str, float]:
    env = {
        **os.environ,
        "SEQSERVE_MODELS_DIR": str(root),
        "SEQSERVE_STATE_SECRET": "0123456789abcdef0123456789abcdef",
        "SEQSERVE_INTRA_OP_THREADS": "1",
        **extra,
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "SEQSERVE_RUN_DIR"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())]
    t0 = time.monotonic()
    done = subprocess.run(
        [*cmd, "--workers", str(workers), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, time.monotonic() - t0


@pytest.mark.parametrize("workers", [2, 1])
def test_a_required_model_that_fails_exits_3(tmp_path: Path, workers: int) -> None:
    root = _models(tmp_path, broken=True)
    code, err, seconds = _serve(root, workers, {"SEQSERVE_REQUIRE_ALL_MODELS": "true"})
    assert code == 3, err[-3000:]
    assert seconds < 30
    # the reason once, on one line: the master names the worker; one worker is the server
    prefix = "seqserve: worker [" if workers > 1 else "seqserve: failed to start: "
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err[-3000:]
    assert "failed to start: SEQSERVE_REQUIRE_ALL_MODELS is set" in lines[0]
    assert "sentiment/broken:1" in lines[0]
    if workers == 1:  # the traceback only at --log-level debug
        assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("log_level", ["info", "debug"])
def test_one_worker_prints_one_line_and_the_traceback_only_at_debug(
    tmp_path: Path, log_level: str
) -> None:
    root = _models(tmp_path)
    extra = {"SEQSERVE_DEFAULT_MODELS": json.dumps({"sentiment": "nope:1"})}
    code, err, seconds = _serve(root, 1, extra, "--log-level", log_level)
    assert code == 3, err[-3000:]
    assert seconds < 30
    lines = [line for line in err.splitlines() if line.startswith("seqserve: ")]
    assert lines == [
        "seqserve: failed to start: no model 'nope:1' for task 'sentiment'; "
        "available: imdb-simple-rnn:1"
    ], err[-3000:]
    assert ("Traceback" in err) == (log_level == "debug")


def test_a_short_previous_secret_starts_with_a_warning(tmp_path: Path) -> None:
    """Rotating away from a short secret: it is accepted as a previous one (verify only), with
    a warning; the server then starts (here it stops at once on a missing default, exit 3)."""
    root = _models(tmp_path)
    extra = {
        "SEQSERVE_STATE_PREVIOUS_SECRETS": "old-short-secret",
        "SEQSERVE_DEFAULT_MODELS": json.dumps({"sentiment": "nope:1"}),
    }
    code, err, _ = _serve(root, 1, extra)
    assert code == 3, err[-3000:]  # past the settings check (a refused setting is exit 2)
    assert "1 of SEQSERVE_STATE_PREVIOUS_SECRETS is shorter than 32 bytes" in err
    assert "old-short-secret" not in err


def test_a_default_that_does_not_exist_exits_3_with_two_workers(tmp_path: Path) -> None:
    root = _models(tmp_path)
    extra = {"SEQSERVE_DEFAULT_MODELS": json.dumps({"sentiment": "nope:1"})}
    code, err, seconds = _serve(root, 2, extra)
    assert code == 3, err[-3000:]
    assert seconds < 30
    lines = [line for line in err.splitlines() if line.startswith("seqserve: worker [")]
    assert len(lines) == 1 and "nope:1" in lines[0], err[-3000:]


def test_a_worker_that_exits_with_another_code_before_ready_still_stops_the_server(
    tmp_path: Path,
) -> None:
    """uvicorn's supervisor stops only on exit code 3 and restarts a worker that exits with
    another code for ever; ours stops and exits 3."""
    (tmp_path / "crashing_app.py").write_text("import os\nos._exit(1)\n")
    code = (
        "import sys\n"
        "from app.supervisor import serve_workers\n"
        f"sys.exit(serve_workers('crashing_app:app', {{'workers': 2, 'port': {free_port()}}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr[-3000:]
    assert time.monotonic() - t0 < 30
    assert "failed to start: exit code 1" in done.stderr
