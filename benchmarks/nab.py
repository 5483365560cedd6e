"""The shipped anomaly detector on the Numenta Anomaly Benchmark, scored by NAB's own scorer.

    python benchmarks/nab.py                      # ~1-2 minutes; writes benchmarks/results/nab*
    python benchmarks/nab.py --url http://127.0.0.1:8000 --model nab-gru:1

Starts ``seqserve serve`` pinned to one CPU core (``taskset -c 0``, one onnxruntime thread)
unless given ``--url``, sends every series of the NAB part (``../shared/data/nab``) to
``POST /anomaly`` with its timestamps — one request per series, as a stream's owner would,
then all of them in one request — and writes NAB's results layout
(``<category>/<name>_<file>.csv``: timestamp, value, anomaly_score). It then runs the scorer
(``../shared/tools/nab/score.sh``: threshold optimisation, scoring and normalisation against
the null detector, for the three profiles), prints the table beside the published detectors,
the scoring throughput in series-points per millisecond, and plots one series with its scores
and label windows. The scorer needs ``pip install pandas simplejson``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/nab.py` from anywhere
    sys.path.insert(0, str(REPO))

from app.bench import local_server  # noqa: E402
from training.anomaly.data import NAB_DIR, NabSeries, nab_windows, read_nab  # noqa: E402
from training.anomaly.evaluate import PROFILES, SCORER, run_scorer, write_results  # noqa: E402

OUT = REPO / "benchmarks" / "results"
NAME = "seqserve"
# Standard-profile scores of published detectors on this part of NAB (../shared/data/README.md).
PUBLISHED = [
    ("ARTime", 73.6),
    ("Numenta HTM", 69.5),
    ("contextOSE", 66.1),
    ("random cut forest", 61.3),
    ("KNN-CAD", 52.5),
    ("windowed Gaussian", 37.7),
    ("random", 17.2),
    ("null", 0.0),
]


def post(url: str, body: dict[str, Any], key: str | None = None) -> tuple[float, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        raw = r.read()
    return time.perf_counter() - t0, json.loads(raw)


def score_all(url: str, nab: list[NabSeries], model: str | None, key: str | None) -> dict[str, Any]:
    """Scores per series (one request each), plus timing of one request with every series."""
    per_series: dict[str, Any] = {}
    total_s = 0.0
    everything = []
    for s in nab:
        values = s.values.tolist()
        stamps = [t.replace(" ", "T") for t in s.timestamps]
        item = {"id": s.key, "values": values, "timestamps": stamps}
        body: dict[str, Any] = {"series": [item], **({"model": model} if model else {})}
        post(url + "/anomaly", body, key)  # warm
        seconds, res = post(url + "/anomaly", body, key)
        r = res["results"][0]
        per_series[s.key] = {
            "timestamps": s.timestamps,
            "values": values,
            "scores": r["scores"],
            "anomalies": r["anomalies"],
            "threshold": r["threshold"],
        }
        total_s += seconds
        everything.append(item)
    body = {"series": everything, **({"model": model} if model else {})}
    one = min(post(url + "/anomaly", body, key)[0] for _ in range(3))
    points = sum(len(s.values) for s in nab)
    return {
        "series": per_series,
        "model": res["model"],
        "points": points,
        "one_request_per_series_s": total_s,
        "all_in_one_request_s": one,
        "points_per_ms_one_request_per_series": points / (total_s * 1e3),
        "points_per_ms_all_in_one_request": points / (one * 1e3),
    }


def table(scores: dict[str, float], model: str) -> str:
    rows = [(f"**seqserve {model}**", scores.get("standard", float("nan")))] + PUBLISHED
    rows.sort(key=lambda r: -r[1])
    lines = ["| detector | NAB standard |", "|---|---|"]
    lines += [f"| {n} | {s:.1f} |" for n, s in rows]
    lines.append("")
    lines.append(
        f"seqserve {model}, all three profiles: "
        + ", ".join(f"{p} {scores[p]:.1f}" for p in PROFILES if p in scores)
    )
    return "\n".join(lines)


def plot(series: dict[str, Any], windows: list[list[str]], path: Path, title: str) -> None:
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [dt.datetime.fromisoformat(s) for s in series["timestamps"]]
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(11, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    ax1.plot(t, series["values"], lw=0.6, color="tab:blue")
    for a, b in windows:
        for ax in (ax1, ax2):
            ax.axvspan(
                dt.datetime.fromisoformat(a.split(".")[0]),
                dt.datetime.fromisoformat(b.split(".")[0]),
                color="tab:red",
                alpha=0.15,
            )
    for i in series["anomalies"]:
        ax1.axvline(t[i], color="black", lw=0.8, ls="--")
    ax1.set_title(title + " (red: NAB label windows; dashed: detections)")
    ax2.plot(t, series["scores"], lw=0.6, color="tab:orange")
    ax2.axhline(series["threshold"], color="gray", lw=0.8, ls=":")
    ax2.set_ylabel("score")
    ax2.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (default: start one on one core)")
    ap.add_argument("--model", help='"name" or "name:version" (default: the task default)')
    ap.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB data")
    ap.add_argument("--scorer", type=Path, default=SCORER, help="NAB's score.sh")
    ap.add_argument("--out", type=Path, default=OUT, help="where the figures go")
    ap.add_argument(
        "--plot-series",
        default="realKnownCause/machine_temperature_system_failure.csv",
        help="the series to plot",
    )
    args = ap.parse_args()
    key = os.environ.get("SEQSERVE_BENCH_API_KEY")
    nab = read_nab(args.nab_dir)
    if args.url is not None:
        res = score_all(args.url, nab, args.model, key)
    else:
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        env = {"SEQSERVE_INTRA_OP_THREADS": "1", "SEQSERVE_MAX_BODY_BYTES": str(64 << 20)}
        with local_server(1, env=env, prefix=pin) as url:
            res = score_all(url, nab, args.model, key)
    model = f"{res['model']['name']}:{res['model']['version']}"
    with tempfile.TemporaryDirectory() as tmp:
        per = [np.asarray(res["series"][s.key]["scores"]) for s in nab]
        scores = run_scorer(write_results(tmp, NAME, nab, per), NAME, args.scorer)
    windows = nab_windows(args.nab_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(
        res["series"][args.plot_series],
        windows[args.plot_series],
        args.out / "nab_machine_temperature.png",
        f"{args.plot_series} — {model}",
    )
    summary = {
        "model": model,
        "nab": scores,
        "published_standard": dict(PUBLISHED),
        "series": len(res["series"]),
        "points": res["points"],
        "one_request_per_series_s": round(res["one_request_per_series_s"], 3),
        "all_in_one_request_s": round(res["all_in_one_request_s"], 3),
        "points_per_ms_one_request_per_series": round(
            res["points_per_ms_one_request_per_series"], 1
        ),
        "points_per_ms_all_in_one_request": round(res["points_per_ms_all_in_one_request"], 1),
        "server": "one process pinned to one core (taskset -c 0), one onnxruntime thread"
        if args.url is None
        else args.url,
        "detections": sum(len(s["anomalies"]) for s in res["series"].values()),
    }
    (args.out / "nab.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = table(scores, model) + (
        f"\n\nThroughput through the API ({summary['server']}): "
        f"{summary['points_per_ms_all_in_one_request']} series-points/ms with all "
        f"{summary['series']} series ({summary['points']} points) in one request, "
        f"{summary['points_per_ms_one_request_per_series']} with one request per series.\n"
    )
    (args.out / "nab.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
