"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import csv
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from training.cli import main

TINY_LM = ("--emb-size", "16", "--hidden-size", "24", "--cutoffs", "10", "30")


def train_and_export_lm(
    train: Path,
    valid: Path,
    run_dir: Path,
    model_dir: Path,
    train_args: Sequence[str] = TINY_LM,
    export_args: Sequence[str] = ("--quantize", "no"),
) -> None:
    """Dry-run ``lm train`` on the given files, then ``lm export`` its best checkpoint to
    ``model_dir`` (``<models_dir>/next-word/<name>/<version>``, which must not exist yet)."""
    common = ["--train", str(train), "--dev", str(valid), "--threads", "1"]
    train_cmd = ["lm", "train", *common, "--dry-run", "--no-export", "--run-dir", str(run_dir)]
    assert main([*train_cmd, *train_args]) == 0
    checkpoint = str(run_dir / "best.pt")
    export = ["lm", "export", *common, "--checkpoint", checkpoint, "--out", str(model_dir)]
    assert main([*export, *export_args]) == 0


def free_port() -> int:
    """A loopback port nothing listens on right now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_labelled_tsv(path: Path, names: dict[str, str]) -> tuple[list[str], list[str]]:
    """SST-2-style ``sentence<TAB>label`` rows as texts and served label names."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [names[r["label"]] for r in rows]


def measured_accuracy(
    client: TestClient, texts: list[str], labels: list[str], batch: int, model: str | None = None
) -> float:
    """Accuracy of the served model measured through POST /sentiment, ``batch`` texts a call."""
    right = 0
    for i in range(0, len(texts), batch):
        payload: dict[str, Any] = {"texts": texts[i : i + batch]}
        if model:
            payload["model"] = model
        r = client.post("/sentiment", json=payload)
        assert r.status_code == 200, r.text
        got = [res["label"] for res in r.json()["results"]]
        right += sum(g == y for g, y in zip(got, labels[i : i + batch], strict=True))
    return right / len(texts)


def text_chunks(path: Path, max_tokens: int, max_chars: int) -> list[str]:
    """A text file as whole lines grouped under per-text limits (a newline is one <eos>)."""
    chunks: list[str] = []
    lines: list[str] = []
    tokens = chars = 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        n = len(line.split()) + 1
        if lines and (tokens + n > max_tokens or chars + len(line) > max_chars):
            chunks.append("".join(lines))
            lines, tokens, chars = [], 0, 0
        lines.append(line)
        tokens, chars = tokens + n, chars + len(line)
    return chunks + ["".join(lines)] if lines else chunks


def measured_perplexity(
    client: TestClient, chunks: list[str], cache: bool = True
) -> tuple[float, int]:
    """Perplexity over ``chunks`` measured through POST /next-word/score (each chunk starts
    from a fresh <eos> state, with a cache of its own), and the number of tokens scored."""
    total_ll, total_tokens = 0.0, 0
    for text in chunks:
        r = client.post("/next-word/score", json={"text": text, "cache": cache})
        assert r.status_code == 200, r.text
        total_ll += r.json()["log_likelihood"]
        total_tokens += r.json()["tokens"]
    return math.exp(-total_ll / total_tokens), total_tokens


def wait_ready(base: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 90) -> None:
    """Poll ``base``/readyz until it answers 200; fail with the server's log if the process
    exits or the time runs out (servers started by the tests take seconds on a loaded box)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"not ready in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@contextlib.contextmanager
def serving(
    args: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[Any]]:
    """``python -m app.cli serve ARGS`` with its output in ``log``: ready when entered (see
    ``wait_ready``; ARGS must hold ``--port``), stopped with SIGTERM (then killed) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    port = args[list(args).index("--port") + 1]
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
