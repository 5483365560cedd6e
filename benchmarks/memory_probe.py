"""Peak and retained memory of one server under the largest allowed requests.

Run from the repository root::

    python -m benchmarks.memory_probe                  # this checkout
    python -m benchmarks.memory_probe --root /tmp/before  # another copy of the code
    python -m benchmarks.memory_probe --only score --reloads 6

Starts ``python -m app.cli serve`` on a free port as a subprocess (default models), sums the
RSS of its process tree from /proc, and for each scenario prints idle, peak (sampled every
20 ms) and retained RSS 10 s after the last answer. Scenarios: 1, 8 and 16 concurrent
5,000-token ``/next-word/score`` requests; the largest allowed ``/anomaly`` and ``/forecast``
bodies (just under ``max_body_bytes``), alone and 4 at once; optionally N reloads of the
language model under light traffic (``--reloads``, needs an admin key, set here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.attack import RssSampler, free_port, tree_rss  # noqa: E402

WORDS = "the city of new york is the largest city in the united states and one of the most".split()


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, in MiB (attack.py's reading of /proc)."""
    return tree_rss(pid) or 0.0


class Sampler(RssSampler):
    """Peak RSS of the tree while a scenario runs (a 20 ms poll in a thread)."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid, interval=0.02)


def score_body(tokens: int = 5000) -> dict:
    return {"text": " ".join(WORDS[i % len(WORDS)] for i in range(tokens))}


def numbers_body(n_series: int, per_series: int, max_bytes: int) -> dict:
    """``n_series`` series of ``per_series`` values, trimmed to fit ``max_bytes``."""
    import math

    def series(k: int, n: int) -> list[float]:
        return [round(10 + 5 * math.sin(i / 24 + k) + (i % 7) * 0.1, 3) for i in range(n)]

    body = {"series": [{"id": str(k), "values": series(k, per_series)} for k in range(n_series)]}
    while len(json.dumps(body)) > max_bytes:
        for s in body["series"]:
            s["values"] = s["values"][: int(len(s["values"]) * 0.97)]
    return body


async def fire(client: httpx.AsyncClient, path: str, body: dict, n: int) -> list[int]:
    """``n`` copies of one request at once; ``path`` "mix" sends body's (path, body) pairs."""
    calls = body["mix"] if path == "mix" else [(path, body)] * n
    rs = await asyncio.gather(*(client.post(p, json=b) for p, b in calls))
    return [r.status_code for r in rs]


def run_scenario(url: str, pid: int, name: str, path: str, body: dict, n: int, hold: float):
    idle = tree_rss_mb(pid)
    t0 = time.perf_counter()
    with Sampler(pid) as s:

        async def go() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=600) as c:
                return await fire(c, path, body, n)

        codes = asyncio.run(go())
    secs = time.perf_counter() - t0
    time.sleep(hold)
    after = tree_rss_mb(pid)
    print(
        f"{name:<28} x{n:<3} idle {idle:7.0f} MiB  peak {s.peak:7.0f} MiB (+{s.peak - idle:5.0f})  "
        f"after {hold:g}s {after:7.0f} MiB (+{after - idle:5.0f})  {secs:6.1f}s  "
        f"codes {dict(sorted(Counter(codes).items()))}",
        flush=True,
    )


def run_reloads(url: str, pid: int, root: Path, models: Path, n: int) -> None:
    """``n`` reloads of the language model (its folder touched) under light score traffic."""
    lm = next((models / "next-word").glob("*/*/model.onnx")).parent
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                c.post("/next-word", json={"text": "the city of new york is", "complete": 5})
                c.post("/next-word/score", json=score_body(300))

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    time.sleep(4)  # warm: the traffic's own first-use allocations are not a reload's
    idle = tree_rss_mb(pid)
    with Sampler(pid) as s, httpx.Client(base_url=url, timeout=120) as c:
        for k in range(n):
            os.utime(lm / "model.onnx")  # a changed fingerprint: the version reloads
            r = c.post("/admin/reload", headers={"Authorization": "Bearer probe-admin"})
            print(f"  reload {k + 1}: {r.status_code} rss {tree_rss_mb(pid):.0f} MiB", flush=True)
            time.sleep(1.5)
    stop.set()
    t.join()
    time.sleep(3)  # past the grace period (set to 1 s)
    after = tree_rss_mb(pid)
    print(
        f"{'reload lm':<28} x{n:<3} warm {idle:7.0f} MiB  peak {s.peak:7.0f} MiB  "
        f"after {after:7.0f} MiB (growth {after - idle:+.0f})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="code to serve")
    ap.add_argument("--only", nargs="*", default=["score", "anomaly", "forecast"])
    ap.add_argument("--counts", nargs="*", type=int, default=[1, 8, 16])
    ap.add_argument("--hold", type=float, default=10.0, help="seconds before 'after' RSS")
    ap.add_argument("--reloads", type=int, default=0, help="reloads of the LM (copies models)")
    args = ap.parse_args()
    root = args.root.resolve()
    models = root / "models"
    tmp = None
    env = {**os.environ, "PYTHONPATH": str(root), "SEQSERVE_LOG_LEVEL": "warning"}
    if args.reloads:  # reloads touch model files: work on a copy, never on the shipped folder
        tmp = Path(tempfile.mkdtemp(prefix="memprobe-"))
        models = Path(shutil.copytree(root / "models", tmp / "models"))
        env |= {
            "SEQSERVE_MODELS_DIR": str(models),
            "SEQSERVE_ADMIN_KEYS": "probe-admin",
            "SEQSERVE_RELOAD_GRACE_SECONDS": "1",
        }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=root,
        env=env,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("server did not become ready")
        print(f"server pid {proc.pid} ({root}); ready RSS {tree_rss_mb(proc.pid):.0f} MiB")
        max_bytes = 7_900_000
        for what in args.only:
            if what == "score":
                for n in args.counts:
                    run_scenario(
                        url, proc.pid, "next-word/score 5000 tok", "/next-word/score",
                        score_body(), n, args.hold,
                    )  # fmt: skip
            elif what == "anomaly":
                body = numbers_body(8, 100_000, max_bytes)
                for n in (1, 4):
                    run_scenario(url, proc.pid, "anomaly 8x~100k", "/anomaly", body, n, args.hold)
            elif what == "forecast":
                body = numbers_body(2000, 400, max_bytes)
                for n in (1, 4):
                    run_scenario(
                        url, proc.pid, "forecast 2000 series", "/forecast", body, n, args.hold
                    )
        if "mix" in args.only:  # 16 at once: 6 scores, 4 anomaly, 4 forecast, 2 long sentiment
            mix = (
                [("/next-word/score", score_body())] * 6
                + [("/anomaly", numbers_body(8, 100_000, max_bytes))] * 4
                + [("/forecast", numbers_body(2000, 400, max_bytes))] * 4
                + [("/sentiment", {"texts": [" ".join(WORDS * 90)[:20_000]] * 64})] * 2
            )
            for _ in range(args.only.count("mix")):  # "mix mix": the second starts warm
                run_scenario(url, proc.pid, "mix", "mix", {"mix": mix}, len(mix), args.hold)
        if args.reloads:
            run_reloads(url, proc.pid, root, models, args.reloads)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
