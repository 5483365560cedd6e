"""Goodput under overload, probes during the largest requests, and slow clients.

    python benchmarks/overload.py                       # this checkout, all measurements
    python benchmarks/overload.py --repo /tmp/before    # another checkout, same measurements
    python benchmarks/overload.py --only goodput --seconds 3

Starts the server on the shipped models (uvicorn, one worker, with ``app.protocol``'s
``uvicorn_kwargs`` when the checkout has them, as ``seqserve serve`` does) and prints a table:

- goodput: successful /next-word requests per second with SEQSERVE_MAX_CONCURRENT_REQUESTS=8,
  from closed-loop keep-alive clients that resend at once whatever the answer (no back-off: the
  worst case), at 1x, 2x and 10x that limit and with 1,000 connections;
- /healthz p50/p99/max, probed every 10 ms on one connection, while the largest allowed
  /forecast (2000 series x 1920 values) runs, four of them at once, and 8 x /sentiment with
  64 texts of 20,000 characters;
- slow clients: how long the server keeps a connection whose headers, or body, trickle in at one
  byte a second (capped at --slow-cap seconds), and whether /sentiment still answers while as
  many uploads as the in-flight limit (64) are stalled half-way.

Client and server share the machine: on a small box, compare runs, not absolute numbers.
``import benchmarks.overload`` gives the pieces (``Server``, ``goodput``, ``probe_during``,
``hold_time``) to other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# The server as `seqserve serve` starts it, plus app.protocol's kwargs when the checkout has them.
LAUNCH = """
import sys, uvicorn
from app.settings import get_settings
settings = get_settings()
import app, pathlib
if (pathlib.Path(app.__file__).parent / "protocol.py").exists():
    from app.protocol import uvicorn_kwargs
else:  # a checkout from before app.protocol
    uvicorn_kwargs = lambda settings: {}
uvicorn.run("app.main:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, **uvicorn_kwargs(settings))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(repo: Path, env: dict[str, str], timeout_s: float = 90) -> Iterator[int]:
    """A server of ``repo`` on a free port, with ``env`` on top of SEQSERVE_MODELS_DIR."""
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "SEQSERVE_MODELS_DIR": str(repo / "models"),
        "SEQSERVE_STATE_SECRET": "b" * 32,
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port)],
        cwd=repo,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after {timeout_s} s") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def request_bytes(path: str, body: bytes | None = None) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """One response's status (headers and a Content-Length body read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class Tally:
    ok: int = 0
    rejected: int = 0
    other: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


async def goodput(port: int, req: bytes, conns: int, seconds: float, warmup: float = 1.0) -> Tally:
    """Closed-loop clients on ``conns`` keep-alive connections, resending at once."""
    tally = Tally()
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + seconds

    async def client() -> None:
        await asyncio.sleep(random.random() * 0.2)  # do not open 1,000 connections in one tick
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally.errors += 1
            return
        try:
            while (now := time.perf_counter()) < t_end:
                writer.write(req)
                try:
                    status = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError):
                    tally.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                done = time.perf_counter()
                if not t_measure <= done <= t_end:  # answers completed in the window count
                    continue
                if status == 200:
                    tally.ok += 1
                    tally.latencies.append(done - now)
                elif status in (429, 503):
                    tally.rejected += 1
                else:
                    tally.other += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(conns)))
    return tally


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def probe_during(
    port: int, work: Callable[[], Awaitable[Any]], every: float = 0.01
) -> tuple[list[float], Any]:
    """/healthz latencies, one probe every ``every`` s on one connection, while ``work`` runs."""
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = request_bytes("/healthz")
        while not done.is_set():
            t0 = time.perf_counter()
            writer.write(req)
            await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(every)
        writer.close()

    prober = asyncio.ensure_future(probe())
    await asyncio.sleep(0.2)
    try:
        result = await work()
    finally:
        done.set()
        await prober
    return latencies, result


async def post(port: int, path: str, body: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes(path, body))
    status = await read_response(reader)
    writer.close()
    return status, time.perf_counter() - t0


def largest_forecast() -> bytes:
    rng = random.Random(0)
    series = [{"values": [rng.randint(1, 9) for _ in range(1920)]} for _ in range(2000)]
    return json.dumps({"series": series}, separators=(",", ":")).encode()


def long_sentiment() -> bytes:
    words = (
        "the film is a gorgeous witty and moving portrait of a family that never manages".split()
    )
    rng = random.Random(1)
    texts = []
    for _ in range(64):
        text = ""
        while len(text) < 19_990:
            text += rng.choice(words) + " "
        texts.append(text[:20_000])
    return json.dumps({"texts": texts}).encode()


async def hold_time(port: int, data: bytes, split: int, cap: float) -> float:
    """Seconds until the server closes a connection that sends ``data[:split]`` at once and the
    rest one byte a second (``cap`` if it is still open then)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    writer.write(data[:split])

    async def trickle() -> None:
        for i in range(split, len(data)):
            await asyncio.sleep(1.0)
            writer.write(data[i : i + 1])
            await writer.drain()

    sender = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(cap):
            while await reader.read(65536):
                pass
        return time.perf_counter() - t0
    except TimeoutError:
        return cap
    except OSError:
        return time.perf_counter() - t0
    finally:
        sender.cancel()
        writer.close()


async def stalled_uploads(port: int, n: int) -> tuple[int, float]:
    """Open ``n`` uploads that stop half-way, then send one /sentiment: its status and latency
    (599: no answer within 10 s)."""
    body = json.dumps({"texts": ["y" * 2000]}).encode()
    req = request_bytes("/sentiment", body)
    writers = []
    for _ in range(n):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(req[: len(req) - 1000])
        writers.append(w)
    await asyncio.sleep(0.5)
    small = json.dumps({"texts": ["a gorgeous, witty film"]}).encode()
    try:
        async with asyncio.timeout(10):
            return await post(port, "/sentiment", small)
    except TimeoutError:
        return 599, 10.0
    finally:
        for w in writers:
            w.close()


def run_goodput(repo: Path, seconds: float, rows: list[tuple[str, str]]) -> None:
    req = request_bytes("/next-word", json.dumps({"text": "Happy birthday , my", "k": 5}).encode())
    with server(repo, {"SEQSERVE_MAX_CONCURRENT_REQUESTS": "8"}) as port:
        peak = 0.0
        for label, conns in (("1x", 8), ("2x", 16), ("10x", 80), ("1000 conns", 1000)):
            t = asyncio.run(goodput(port, req, conns, seconds))
            rate = t.ok / seconds
            peak = max(peak, rate)
            rows.append(
                (
                    f"goodput /next-word {label} ({conns} conns)",
                    f"{rate:7.1f} ok/s ({rate / peak:4.0%} of peak), "
                    f"{t.rejected / seconds:7.1f} 429/s, p99 ok {pct(t.latencies, 0.99) * 1e3:6.1f}"
                    f" ms, other {t.other}, errors {t.errors}",
                )
            )
            print(*rows[-1], sep=": ", flush=True)


def run_probes(repo: Path, rows: list[tuple[str, str]]) -> None:
    forecast, sentiment = largest_forecast(), long_sentiment()

    def row(label: str, lat: list[float], results: list[tuple[int, float]]) -> None:
        statuses = sorted({s for s, _ in results})
        slowest = max(t for _, t in results)
        rows.append(
            (
                f"/healthz during {label}",
                f"p50 {pct(lat, 0.5) * 1e3:6.1f} ms, p99 {pct(lat, 0.99) * 1e3:6.1f} ms, "
                f"max {max(lat) * 1e3:6.1f} ms ({len(lat)} probes); requests {statuses} "
                f"in {slowest:.2f} s",
            )
        )
        print(*rows[-1], sep=": ", flush=True)

    with server(repo, {"SEQSERVE_ACCESS_LOG": "false"}) as port:
        for label, path, body, n in (
            ("1 x largest /forecast (7.7 MB)", "/forecast", forecast, 1),
            ("4 x largest /forecast", "/forecast", forecast, 4),
            ("8 x /sentiment 64 x 20k chars", "/sentiment", sentiment, 8),
        ):

            async def work(path: str = path, body: bytes = body, n: int = n) -> Any:
                return await asyncio.gather(*(post(port, path, body) for _ in range(n)))

            lat, results = asyncio.run(probe_during(port, work))
            row(label, lat, results)


def run_slow(repo: Path, cap: float, rows: list[tuple[str, str]]) -> None:
    body = json.dumps({"texts": ["x" * 100]}).encode()
    req = request_bytes("/sentiment", body)
    head_len = req.index(b"\r\n\r\n") + 4
    with server(repo, {"SEQSERVE_MAX_CONCURRENT_REQUESTS": "64"}) as port:

        async def holds() -> list[float]:
            return list(
                await asyncio.gather(
                    hold_time(port, b"", 0, cap),  # connects, sends nothing
                    hold_time(port, req, 10, cap),  # slowloris headers
                    hold_time(port, req, head_len + 10, cap),  # body at 1 byte/s
                )
            )

        silent, headers, body_hold = asyncio.run(holds())
        for label, value in (
            ("silent connection", silent),
            ("headers at 1 byte/s", headers),
            ("body at 1 byte/s", body_hold),
        ):
            shown = f">= {cap:.0f} s (still open)" if value >= cap else f"{value:5.1f} s"
            rows.append((f"slow client held: {label}", shown))
            print(*rows[-1], sep=": ", flush=True)
        status, took = asyncio.run(stalled_uploads(port, 64))
        rows.append(("/sentiment with 64 stalled uploads (limit 64)", f"{status} in {took:.2f} s"))
        print(*rows[-1], sep=": ", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve")
    parser.add_argument("--seconds", type=float, default=4.0, help="per goodput step")
    parser.add_argument("--slow-cap", type=float, default=30.0, help="longest slow-client wait")
    parser.add_argument(
        "--only", choices=("goodput", "probes", "slow"), action="append", help="a part only"
    )
    args = parser.parse_args(argv)
    parts = args.only or ["goodput", "probes", "slow"]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows: list[tuple[str, str]] = []
    if "goodput" in parts:
        run_goodput(args.repo.resolve(), args.seconds, rows)
    if "probes" in parts:
        run_probes(args.repo.resolve(), rows)
    if "slow" in parts:
        run_slow(args.repo.resolve(), args.slow_cap, rows)
    width = max(len(k) for k, _ in rows)
    print(f"\n{args.repo.resolve()}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
