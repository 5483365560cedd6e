"""NAB evaluation of the detector exactly as serving runs it.

The exported ONNX graph runs over every NAB series (batched, right-padded), then the serving
scoring core (``contract.anomaly.prepare`` / ``finish``) turns its outputs into
scores; the scores are written in NAB's results layout
(``RESULTS_DIR/<category>/<NAME>_<file>.csv`` with ``timestamp,value,anomaly_score``) and NAB's
own scorer (``../shared/tools/nab/score.sh``) prints the three profile scores.

The NAB part is our validation set: the global scoring knobs were tuned on it (one
configuration for all series, never per series); the rest of the corpus judges the model.
"""

from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from contract.anomaly import finish, prepare, run_graph
from training.anomaly.data import NAB_DIR, NabSeries

SCORER = NAB_DIR.parents[1] / "tools" / "nab" / "score.sh"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def ort_runner(sess: Any, card: dict[str, Any]) -> Any:
    names = [o["name"] for o in card["onnx"]["outputs"]]
    in_name = card["onnx"]["inputs"][0]["name"]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = sess.run(names, {in_name: x})
        return mean, log_scale

    return run


def score_all(
    run: Any, series: list[np.ndarray], card: dict[str, Any]
) -> tuple[list[np.ndarray], dict[str, float]]:
    """(scores per series, timing): prepare -> graph -> finish, as serving does it."""
    t0 = time.perf_counter()
    inputs = [prepare(v, card) for v in series]
    t1 = time.perf_counter()
    outs = run_graph(run, inputs)
    t2 = time.perf_counter()
    scores = [finish(v, o, card) for v, o in zip(series, outs, strict=True)]
    t3 = time.perf_counter()
    pts = sum(len(v) for v in series)
    timing = {
        "points": float(pts),
        "prepare_s": t1 - t0,
        "graph_s": t2 - t1,
        "finish_s": t3 - t2,
        "points_per_ms": pts / (1000 * (t3 - t0)),
    }
    return scores, timing


def write_results(
    results_dir: str | Path, name: str, nab: list[NabSeries], scores: list[np.ndarray]
) -> Path:
    root = Path(results_dir)
    for s, sc in zip(nab, scores, strict=True):
        cat, file = s.key.split("/")
        (root / cat).mkdir(parents=True, exist_ok=True)
        with open(root / cat / f"{name}_{file}", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for t, v, a in zip(s.timestamps, s.values, sc, strict=True):
                w.writerow([t, repr(float(v)), f"{float(a):.6f}"])
    return root


_FINAL = re.compile(r"Final score for '([^']+)' detector on '([^']+)' profile = (-?[\d.]+)")


def run_scorer(results_dir: str | Path, name: str, scorer: str | Path = SCORER) -> dict[str, float]:
    """The three NAB profile scores from NAB's own scorer."""
    proc = subprocess.run(
        ["bash", str(scorer), str(results_dir), name], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"NAB scorer failed:\n{proc.stdout}\n{proc.stderr}")
    found = {m.group(2): float(m.group(3)) for m in _FINAL.finditer(proc.stdout)}
    missing = [p for p in PROFILES if p not in found]
    if missing:
        raise RuntimeError(f"NAB scorer printed no score for {missing}:\n{proc.stdout}")
    return {p: found[p] for p in PROFILES}


def evaluate_nab(
    run: Any,
    card: dict[str, Any],
    nab: list[NabSeries],
    results_dir: str | Path,
    name: str = "seqserve",
) -> dict[str, Any]:
    """Score every NAB series with ``run`` + the scoring core, write and score the results."""
    scores, timing = score_all(run, [s.values for s in nab], card)
    write_results(results_dir, name, nab, scores)
    return {"nab": run_scorer(results_dir, name), "timing": timing}
