"""A burst far beyond capacity: does the service shed load (429) and keep admitted requests fast?

    python benchmarks/burst.py                          # 800 concurrent /sentiment x 64 texts
    python benchmarks/burst.py --requests 400 --texts 16

Starts ``seqserve serve`` on the shipped models, opens all connections at once, sends every
request together and reports the statuses, the latency of the admitted (200) requests, and the
time to the first 429. Exits non-zero on any 5xx or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks import serve_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEXT = "the film is a gorgeous , witty and moving portrait of a family that never quite manages"


async def burst(url: str, n: int, texts: int) -> dict[str, object]:
    body = {"texts": [f"{TEXT} {i}" for i in range(texts)]}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        statuses: Counter[str] = Counter()
        admitted: list[float] = []
        rejected: list[float] = []
        t_start = time.perf_counter()

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                r = await client.post("/sentiment", json=body)
                statuses[str(r.status_code)] += 1
                (admitted if r.status_code == 200 else rejected).append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t_start
    admitted.sort()
    pick = lambda xs, q: round(1e3 * xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None  # noqa: E731
    return {
        "requests": n,
        "texts_per_request": texts,
        "statuses": dict(statuses),
        "wall_s": round(wall, 2),
        "admitted_ms_p50": pick(admitted, 0.5),
        "admitted_ms_p99": pick(admitted, 0.99),
        "admitted_ms_max": pick(admitted, 1.0),
        "rejected_ms_p50": pick(sorted(rejected), 0.5),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--port", type=int, default=8792)
    ap.add_argument("--env", nargs="*", default=[], help="extra KEY=VALUE settings")
    args = ap.parse_args()
    env = {
        **os.environ,
        "SEQSERVE_STATE_SECRET": "burst-" + "0" * 32,
        **dict(e.split("=", 1) for e in args.env),
    }
    env = {"SEQSERVE_STATE_SECRET": "burst-" + "0" * 32, **dict(e.split("=", 1) for e in args.env)}
    server = serve_process.start(args.port, env)
    try:
        url = f"http://127.0.0.1:{args.port}"
        report = asyncio.run(burst(url, args.requests, args.texts))
        report["server_alive_after"] = httpx.get(url + "/healthz").status_code == 200
    finally:
        serve_process.stop(server)
    print(json.dumps(report, indent=1))
    bad = [k for k in report["statuses"] if k not in ("200", "429")]  # type: ignore[union-attr]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
