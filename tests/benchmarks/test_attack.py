"""benchmarks/attack.py: a --quick run of the cheap attacks against a server it starts, and the
pieces it measures with (process-tree RSS, the raw HTTP request it sends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import attack
from tests.conftest import REPO


def test_tree_rss_counts_the_process_and_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"  # past exec
        pids = attack.tree(os.getpid())
        assert pids[0] == os.getpid() and child.pid in pids
        total = attack.tree_rss(os.getpid())
        assert total is not None and total > attack.rss_mb(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()
    assert attack.tree_rss(None) is None


def test_raw_request_keeps_the_bytes_it_is_given() -> None:
    raw = attack.build_request("POST", "/x", b"{}", [(b"Inference-Header-Content-Length", b"\xb2")])
    assert raw == (
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nInference-Header-Content-Length: \xb2\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )


def test_largest_bodies_stay_under_the_body_limit() -> None:
    s = attack.Sizes()
    for body in (attack.forecast_body(s), attack.anomaly_body(s)):
        doc = json.loads(body)
        assert len(body) <= s.body_bytes and len(doc["series"]) <= s.max_series
        assert all(len(x["values"]) <= s.series_values for x in doc["series"])
    assert len(json.loads(attack.score_body(s))["text"].split()) == s.context_tokens


def test_quick_run_prints_one_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "attack.py"),
            "--quick",
            "--only",
            "memory",
            "reload",
            "statuses",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the script finds the repo by itself
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("seqserve attack (quick)") and lines[1].startswith("attack")
    doc = json.loads(out.read_text())
    rows = {(r["attack"], r["case"]): r for r in doc["rows"]}
    memory = [r for (a, _), r in rows.items() if a == "memory"]
    assert len(memory) == 6 and all(r["statuses"] for r in memory)
    # A peak can sit below the idle figure taken before: the server hands memory back between
    # attacks. Both are real samples of a loaded server (more than its Python alone).
    assert all(r["data"]["peak_mb"] > 50 and r["data"]["idle_mb"] > 50 for r in memory)
    statuses = [r for (a, _), r in rows.items() if a == "statuses"]
    assert len(statuses) == 7
    assert all(isinstance(r["data"]["status"], int) for r in statuses), statuses
    assert [r for (a, _), r in rows.items() if a == "reload"][0]["statuses"] == "200x2"
