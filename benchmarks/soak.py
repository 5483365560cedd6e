"""A bounded soak: mixed traffic to every endpoint, a hot reload in the middle, and a report.

    python benchmarks/soak.py                     # 60 s, 16 client threads
    python benchmarks/soak.py --seconds 20 --threads 8

Starts ``seqserve serve`` on a copy of the shipped models (so the reload can add a version
without touching ``models/``), sends a mix of sentiment (sentences, whole reviews, batches,
hostile text), next-word (with state continuation), score, forecast, anomaly (with missing
values) and Open Inference Protocol requests, reloads the
models half way through (a new sentiment version and a corrupt one), and prints requests per
status, latency percentiles and the server's memory at start and end. Exits non-zero on any 5xx.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks import serve_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "soak-admin"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def requests_mix(rng: random.Random) -> tuple[str, dict[str, Any]]:
    review = " ".join(
        rng.choice(["good", "awful", "the", "film", "plot", "<br />"]) for _ in range(400)
    )
    kind = rng.random()
    if kind < 0.35:
        return "/sentiment", {"text": "a gorgeous , witty and moving film " * rng.randint(1, 3)}
    if kind < 0.45:
        return "/sentiment", {"texts": [review, "dull", "fine \ud800 film", "x" * 50]}
    if kind < 0.65:
        return "/next-word", {"text": "The game was released in", "k": 5}
    if kind < 0.75:
        return "/next-word/score", {"text": "The game was released in Japan ."}
    if kind < 0.85:
        values = [10 + (i % 24) + rng.random() for i in range(rng.randint(30, 400))]
        return "/forecast", {"series": [{"id": "s", "values": values}], "horizon": 24}
    if kind < 0.91:
        values: list[float | None] = [
            10 + (i % 24) + rng.random() for i in range(rng.randint(50, 3000))
        ]
        values[rng.randrange(len(values))] = None  # a missing reading
        return "/anomaly", {"series": [{"id": "a", "values": values}]}
    if kind < 0.95:
        text = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["great", "dull"]}
        return "/v2/models/sst2-imdb-bilstm/infer", {"inputs": [text]}
    return "/sentiment", {"text": ""}  # a 422 on purpose


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="length of the run")
    ap.add_argument("--threads", type=int, default=16, help="concurrent clients")
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqserve-soak-"))
    models = work / "models"
    shutil.copytree(REPO / "models", models)
    env = {
        "SEQSERVE_MODELS_DIR": str(models),
        "SEQSERVE_ADMIN_KEYS": json.dumps([ADMIN_KEY]),
        "SEQSERVE_STATE_SECRET": "soak-" + "0" * 32,
        "SEQSERVE_RELOAD_GRACE_SECONDS": "2",
    }
    server = serve_process.start(args.port, env)
    try:
        rss_start = rss_mb(server.pid)
        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
            while time.monotonic() < stop:
                path, body = requests_mix(rng)
                t0 = time.perf_counter()
                try:
                    conn.request(
                        "POST", path, json.dumps(body), {"content-type": "application/json"}
                    )
                    resp = conn.getresponse()
                    resp.read()
                    key = f"{path} {resp.status}"
                except (OSError, http.client.HTTPException) as exc:
                    key = f"{path} connection error {type(exc).__name__}"
                    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
                with lock:
                    statuses[key] += 1
                    latencies.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(args.seconds / 4)
        rss_warm = rss_mb(server.pid)  # after warm-up: the baseline for growth
        time.sleep(args.seconds / 4)
        reload_report = reload_with_new_and_corrupt_version(models, args.port)
        for t in threads:
            t.join()
        rss_end = rss_mb(server.pid)
    finally:
        serve_process.stop(server)
        shutil.rmtree(work, ignore_errors=True)
    total = sum(statuses.values())
    five = sum(n for k, n in statuses.items() if " 5" in k or "connection error" in k)
    latencies.sort()
    report = {
        "seconds": args.seconds,
        "threads": args.threads,
        "requests": total,
        "requests_per_s": round(total / args.seconds, 1),
        "by_status": dict(sorted(statuses.items())),
        "429": sum(n for k, n in statuses.items() if k.endswith(" 429")),
        "5xx_or_connection_errors": five,
        "latency_ms_p50": round(1e3 * latencies[len(latencies) // 2], 2),
        "latency_ms_p99": round(1e3 * latencies[int(len(latencies) * 0.99)], 2),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_after_warmup": round(rss_warm, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_after_warmup_mb": round(rss_end - rss_warm, 1),
        "rss_note": "the reload adds one model version (~18 MB on disk) between warm-up and end",
        "reload": reload_report,
    }
    print(json.dumps(report, indent=1))
    return 1 if five else 0


def reload_with_new_and_corrupt_version(models: Path, port: int) -> dict[str, Any]:
    """Add a copy of the default sentiment model as a new version and a corrupt version, then
    reload through the admin endpoint."""
    defaults = (
        json.loads((models / "defaults.json").read_text())
        if (models / "defaults.json").exists()
        else {}
    )
    name = (
        defaults.get("sentiment", "").split(":")[0]
        or sorted(p.name for p in (models / "sentiment").iterdir())[0]
    )
    versions = sorted((models / "sentiment" / name).iterdir(), key=lambda p: int(p.name))
    newest = versions[-1]
    good = newest.parent / str(int(newest.name) + 1)
    bad = newest.parent / str(int(newest.name) + 2)
    shutil.copytree(newest, good)
    shutil.copytree(newest, bad)
    (bad / "model.onnx").write_bytes(b"corrupt")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    return {
        "status": resp.status,
        "loaded": body.get("loaded"),
        "failed": list(body.get("failed", {})),
    }


if __name__ == "__main__":
    sys.exit(main())
