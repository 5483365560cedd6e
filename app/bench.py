"""``seqserve bench``: a closed-loop load test of one endpoint, with figures at the end.

Each of ``concurrency`` clients holds one keep-alive HTTP/1.1 connection and sends its next
request as soon as the previous answer arrives, until ``requests`` have been sent. Without
``--url`` a server is started on a free port for the run (``seqserve serve``, the settings from
the environment) and stopped after it. The full comparison (wrk, batching on/off, a PyTorch
server, figures and plots) is ``benchmarks/run.py`` in the source tree: ``seqserve bench --full``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm


def endpoints() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every registered bench endpoint (declared with its task): name -> (task, path, body)."""
    from app.tasks import tasks

    return {
        endpoint: (spec.name, path, body)
        for spec in tasks().values()
        for endpoint, (path, body) in spec.bench.items()
    }


@dataclass
class Result:
    endpoint: str
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3, 3) if lat else 0.0

        return {
            "endpoint": self.endpoint,
            "concurrency": self.concurrency,
            "requests": len(lat),
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(lat) * 1e3, 3) if lat else 0.0,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "connection_errors": self.errors,
        }


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


async def _run(
    url: str, path: str, body: bytes, concurrency: int, requests: int, result: Result, bar: Any
) -> None:
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    key = os.environ.get("SEQSERVE_BENCH_API_KEY")
    if key:
        head += f"Authorization: Bearer {key}\r\n".encode()
    head += b"\r\n"
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    status = await _request(reader, writer, head, body)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies.append(time.perf_counter() - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                bar.update(1)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_server(
    workers: int,
    timeout_s: float = 90,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Iterator[str]:
    """``seqserve serve`` on a free loopback port for the length of the block; ``env`` adds
    settings, ``prefix`` wraps the command (``["taskset", "-c", "0"]`` pins it to one core)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env={
            **os.environ,
            "SEQSERVE_ACCESS_LOG": os.environ.get("SEQSERVE_ACCESS_LOG", "false"),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/readyz", timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _default_model(url: str, task: str) -> str:
    with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
        ref: str = json.load(r)["defaults"][task]
    return ref.split(":")[0]


def bench(url: str, endpoint: str, concurrency: int, requests: int, warmup: int = 50) -> Result:
    task, path, payload = endpoints()[endpoint]
    if "{model}" in path:
        path = path.format(model=_default_model(url, task))
    body = json.dumps(payload).encode()
    warm = Result(endpoint, concurrency, 0.0)
    asyncio.run(_run(url, path, body, concurrency, warmup, warm, tqdm(disable=True)))
    result = Result(endpoint, concurrency, 0.0)
    with tqdm(
        total=requests, desc=f"{endpoint} c={concurrency}", unit="req", file=sys.stderr, leave=False
    ) as bar:
        asyncio.run(_run(url, path, body, concurrency, requests, result, bar))
    return result


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        "endpoint",
        "concurrency",
        "requests",
        "requests_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "statuses",
        "connection_errors",
    ]
    cells = [[str(r[c]) if c != "statuses" else json.dumps(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
