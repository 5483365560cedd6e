"""Attack a running seqserve: memory, reloads, goodput, probe latency, slow clients, edge statuses.

    python benchmarks/attack.py                          # all attacks, ~5 min on 2 cores
    python benchmarks/attack.py --quick                  # small sizes: a smoke test
    python benchmarks/attack.py --only memory statuses --json
    python benchmarks/attack.py --cwd /tmp/before        # the same attacks on another checkout
    python benchmarks/attack.py --url http://127.0.0.1:8000 --pid 1234   # an existing server

Starts ``python -m app.cli serve`` from ``--cwd`` (with ``PYTHONPATH`` set to it, so an old
checkout runs its own code and models) on a free port for each group of attacks that needs its
own settings, and prints one table. Memory is the resident set (RSS) summed over the server
process and all its children, read from /proc every ~50 ms. The client speaks HTTP/1.1 over raw
asyncio streams (keep-alive, 1,000 connections, partial headers and bodies), so nothing it sends
is tidied by a client library.

Attacks (``--only`` takes these names):
  memory    idle, peak and retained (10 s after) RSS for 1, 8, 16 concurrent 5,000-token
            /next-word/score requests, the largest /anomaly and /forecast bodies, 16 mixed
  reload    6 POST /admin/reload under light traffic: RSS before, peak, after
  goodput   200s per second with SEQSERVE_MAX_CONCURRENT_REQUESTS=8 at 8, 16, 80 and 1,000
            closed-loop clients, for /next-word and a heavy /sentiment (64 texts x 3,000 chars)
  probe     /healthz p50/p99 at 10 Hz while the largest /forecast and 8 x 64 x 20k-char
            /sentiment requests run
  slow      how long a connection is kept when it sends partial headers, a 1-byte-per-second
            header trickle or half a body; whether 64 stalled uploads block /sentiment
  statuses  status and response size of edge requests (500 = a failure)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ATTACKS = ("memory", "reload", "goodput", "probe", "slow", "statuses")
ADMIN_KEY = "attack-admin-key"
MB = 1024 * 1024
# Words the next-word tokenizer (WikiText-2, word level) reads one token each.
WORDS = "the city of new york was founded in a year when the people and the war were in the".split()
REVIEW = "the film is a gorgeous , witty and moving portrait of a family that never quite manages "


@dataclass
class Sizes:
    """Request sizes and durations: the largest the default settings allow, or tiny (--quick)."""

    context_tokens: int = 5_000  # max_context_tokens (5,000 words of ~4 chars < 50,000 chars)
    body_bytes: int = 8_000_000  # max_body_bytes
    max_series: int = 2_000  # max_series
    series_values: int = 100_000  # max_series_values
    texts: int = 64  # max_texts
    text_chars: int = 20_000  # max_text_chars
    heavy_text_chars: int = 3_000  # the goodput /sentiment texts: "a few thousand chars"
    retained_wait_s: float = 10.0
    goodput_s: float = 5.0  # per level for /next-word (~70 ms a request)
    goodput_heavy_s: float = 10.0  # per level for the heavy /sentiment (seconds a request)
    goodput_levels: tuple[int, ...] = (8, 16, 80, 1000)
    probe_sentiment: int = 8
    slow_cap_s: float = 30.0
    stalled: int = 64
    reloads: int = 6

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            context_tokens=200,
            body_bytes=60_000,
            max_series=20,
            series_values=1_000,
            texts=4,
            text_chars=500,
            heavy_text_chars=300,
            retained_wait_s=0.5,
            goodput_s=0.5,
            goodput_heavy_s=0.5,
            goodput_levels=(8, 16),
            probe_sentiment=2,
            slow_cap_s=2.0,
            stalled=8,
            reloads=2,
        )


# -- memory: RSS of a process tree from /proc --------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children, else a scan of /proc)."""
    out: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    try:
        files = list(tasks.glob("*/children"))
    except OSError:
        return []
    if files:
        for f in files:
            with contextlib.suppress(OSError):
                out.extend(int(x) for x in f.read_text().split())
        return out
    for stat in Path("/proc").glob("[0-9]*/stat"):  # kernels without the children file
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children(p))
    return pids


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss(pid: int | None) -> float | None:
    return None if pid is None else sum(rss_mb(p) for p in tree(pid))


class RssSampler:
    """Samples the tree's RSS every ``interval`` seconds in a thread and keeps the peak."""

    def __init__(self, pid: int | None, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        now = tree_rss(self.pid)
        if now is not None and (self.peak is None or now > self.peak):
            self.peak = now

    def __enter__(self) -> RssSampler:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int | str  # an HTTP status, or what happened instead ("reset", "timeout", ...)
    body: bytes = b""
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(
    method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [k + b": " + v for k, v in headers or []]
    if body or method in ("POST", "PUT"):
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *rest = head.decode("latin-1").split("\r\n")
    status = int(first.split()[1])
    headers = {}
    for line in rest:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read()
    return status, headers, body


def failure(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
        return "closed"
    return type(exc).__name__


class Conn:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout: float = 120.0) -> Reply:
        t0 = time.perf_counter()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=16 * MB), timeout
                )
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(raw)
                await self.writer.drain()
            except OSError:  # closed while we were still sending: it may have answered first
                pass
            status, headers, body = await asyncio.wait_for(read_reply(self.reader), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            return Reply(failure(exc), seconds=time.perf_counter() - t0)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, body, time.perf_counter() - t0, headers)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Target:
    """The server under attack: where it listens and which process tree to measure."""

    def __init__(self, url: str, pid: int | None) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.pid = pid
        self.refs: dict[str, str] = {}

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        timeout: float = 120.0,
    ) -> Reply:
        conn = Conn(self.host, self.port)
        try:
            return await conn.request(build_request(method, path, body, headers), timeout)
        finally:
            conn.close()

    def rss(self) -> float | None:
        return tree_rss(self.pid)


# -- request bodies ----------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def score_body(s: Sizes) -> bytes:
    words = [WORDS[i % len(WORDS)] for i in range(s.context_tokens)]
    return dumps({"text": " ".join(words)})


def sentiment_body(texts: int, chars: int) -> bytes:
    text = (REVIEW * (chars // len(REVIEW) + 1))[:chars]
    return dumps({"texts": [text[: chars - 4] + f" {i:03d}"[-4:] for i in range(texts)]})


def series_body(s: Sizes, per_series: int, extra: str = "") -> bytes:
    """As many single-digit values (2 bytes each) as fit under the body limit, in series of
    ``per_series`` values (at most max_series of them)."""
    budget = s.body_bytes - 200
    one = len(b'{"id":"s0000","values":[]},') + 2 * per_series + len(extra)
    n = max(1, min(s.max_series, budget // one))
    values = ",".join(str(i % 10) for i in range(per_series))
    items = [f'{{"id":"s{i:04d}","values":[{values}]{extra}}}' for i in range(n)]
    return ('{"series":[' + ",".join(items) + "]}").encode()


def forecast_body(s: Sizes) -> bytes:
    # the most series the body allows, each long enough for the model's window (336 values)
    per = max(400, (s.body_bytes - 200) // s.max_series // 2 - 20)
    return series_body(s, min(per, s.series_values))


def anomaly_body(s: Sizes) -> bytes:
    # the longest series allowed, as many as fit: anomaly scoring reads every value
    return series_body(s, s.series_values)


def size(body: bytes) -> str:
    return f"{len(body) / 1e6:.1f} MB" if len(body) >= 100_000 else f"{len(body) / 1e3:.0f} kB"


def post(path: str, body: bytes) -> bytes:
    return build_request("POST", path, body)


# -- helpers for the table ---------------------------------------------------------------------


@dataclass
class Row:
    attack: str
    case: str
    statuses: str = ""
    seconds: float | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def count(replies: list[Reply]) -> str:
    c = Counter(str(r.status) for r in replies)
    return " ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(c.items()))


def mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1e3 * x:.0f}"


async def gather(target: Target, raws: list[bytes], timeout: float = 120.0) -> list[Reply]:
    conns = [Conn(target.host, target.port) for _ in raws]
    try:
        return list(
            await asyncio.gather(*(c.request(r, timeout) for c, r in zip(conns, raws, strict=True)))
        )
    finally:
        for c in conns:
            c.close()


async def measured(
    target: Target, wait_s: float, run: Callable[[], Awaitable[list[Reply]]]
) -> dict[str, Any]:
    """Idle RSS, then the peak while ``run`` runs, then the RSS ``wait_s`` seconds after."""
    idle = target.rss()
    t0 = time.perf_counter()
    with RssSampler(target.pid) as sampler:
        replies = await run()
    wall = time.perf_counter() - t0
    await asyncio.sleep(wait_s)
    return {
        "idle_mb": idle,
        "peak_mb": sampler.peak,
        "retained_mb": target.rss(),
        "wall_s": wall,
        "replies": replies,
    }


def memory_row(case: str, m: dict[str, Any], note: str = "") -> Row:
    idle, peak, kept = m["idle_mb"], m["peak_mb"], m["retained_mb"]
    if idle is None:
        detail = "RSS n/a (give --pid with --url)"
    else:
        detail = (
            f"idle {mb(idle)}  peak {mb(peak)} ({peak - idle:+.0f})  "
            f"retained {mb(kept)} ({kept - idle:+.0f})"
        )
    data = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in m.items() if k != "replies"}
    return Row(
        "memory", case, count(m["replies"]), m["wall_s"], detail + note, data | {"note": note}
    )


# -- attacks -----------------------------------------------------------------------------------


async def attack_memory(target: Target, s: Sizes) -> list[Row]:
    rows: list[Row] = []
    score = post("/next-word/score", score_body(s))
    for n in (1, 8, 16):  # the first measurement starts from a server that has served nothing
        m = await measured(
            target, s.retained_wait_s, functools.partial(gather, target, [score] * n)
        )
        ok = [r for r in m["replies"] if r.status == 200]
        tokens = ok[0].json().get("tokens") if ok else s.context_tokens
        rows.append(memory_row(f"{n} x /next-word/score {tokens} tokens", m))
    anomaly = anomaly_body(s)
    m = await measured(
        target, s.retained_wait_s, lambda: gather(target, [post("/anomaly", anomaly)])
    )
    n_series = anomaly.count(b'"id"')
    rows.append(memory_row(f"/anomaly {n_series} x {s.series_values} values ({size(anomaly)})", m))
    forecast = forecast_body(s)
    m = await measured(
        target, s.retained_wait_s, lambda: gather(target, [post("/forecast", forecast)])
    )
    n_series = forecast.count(b'"id"')
    per = (len(forecast) // n_series) // 2
    rows.append(memory_row(f"/forecast {n_series} x ~{per} values ({size(forecast)})", m))
    sentiment = post("/sentiment", sentiment_body(s.texts, s.text_chars))
    mix = [score, sentiment, post("/forecast", forecast), post("/anomaly", anomaly)] * 4
    m = await measured(target, s.retained_wait_s, lambda: gather(target, mix))
    rows.append(
        memory_row(
            f"16 mixed: 4 each of the score, /sentiment {s.texts}x{s.text_chars} chars, "
            "forecast and anomaly requests above",
            m,
        )
    )
    return rows


async def attack_reload(target: Target, s: Sizes) -> list[Row]:
    headers = [(b"Authorization", b"Bearer " + ADMIN_KEY.encode())]
    light = post("/sentiment", dumps({"text": "a gorgeous , witty film"}))
    traffic: list[Reply] = []
    stop = asyncio.Event()

    async def background() -> None:
        conn = Conn(target.host, target.port)
        while not stop.is_set():
            traffic.append(await conn.request(light, 30))
            await asyncio.sleep(0.05)
        conn.close()

    async def run() -> list[Reply]:
        task = asyncio.create_task(background())
        replies = []
        for _ in range(s.reloads):
            replies.append(await target.call("POST", "/admin/reload", b"", headers, 120))
        stop.set()
        await task
        return replies

    m = await measured(target, s.retained_wait_s, run)
    row = memory_row(f"{s.reloads} x POST /admin/reload", m)
    row.attack = "reload"
    row.detail += f"; light traffic: {count(traffic)}"
    row.data["traffic"] = count(traffic)
    row.data["reload_s"] = [round(r.seconds, 2) for r in m["replies"]]
    return [row]


async def closed_loop(target: Target, raw: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections, each sending its next request when the last answer arrives."""
    ok: list[float] = []
    statuses: Counter[str] = Counter()
    t_end = time.perf_counter() + seconds
    sem = asyncio.Semaphore(200)  # connect in waves: a SYN flood measures the kernel, not us

    async def client() -> None:
        conn = Conn(target.host, target.port)
        try:
            async with sem:
                await conn.request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 10)
            while time.perf_counter() < t_end:
                r = await conn.request(raw, max(0.1, t_end - time.perf_counter()))
                if time.perf_counter() > t_end:
                    break
                statuses[str(r.status)] += 1
                if r.status == 200:
                    ok.append(r.seconds)
                elif not isinstance(r.status, int):
                    await asyncio.sleep(0.01)  # a refused connection: do not spin
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = min(time.perf_counter() - t0, seconds) or seconds
    return {
        "clients": clients,
        "goodput_per_s": len(ok) / elapsed,
        "statuses": dict(statuses),
        "ok_p50_s": pct(ok, 0.5),
        "ok_p99_s": pct(ok, 0.99),
    }


async def attack_goodput(target: Target, s: Sizes) -> list[Row]:
    rows = []
    cases = {
        "/next-word": (
            post("/next-word", dumps({"text": "the city of new york was", "k": 5})),
            s.goodput_s,
        ),
        f"/sentiment {s.texts}x{s.heavy_text_chars} chars": (
            post("/sentiment", sentiment_body(s.texts, s.heavy_text_chars)),
            s.goodput_heavy_s,
        ),
    }
    for name, (raw, seconds) in cases.items():
        for clients in s.goodput_levels:
            r = await closed_loop(target, raw, clients, seconds)
            c = Counter(r["statuses"])
            rows.append(
                Row(
                    "goodput",
                    f"{name}, {clients} clients",
                    " ".join(f"{k}x{v}" for k, v in sorted(c.items())),
                    seconds,
                    f"{r['goodput_per_s']:.1f} ok/s  ok p50 {ms(r['ok_p50_s'])} ms "
                    f"p99 {ms(r['ok_p99_s'])} ms",
                    r,
                )
            )
            await asyncio.sleep(1.0 if seconds > 1 else 0.2)  # let cancelled work drain
    return rows


async def attack_probe(target: Target, s: Sizes) -> list[Row]:
    rows = []

    async def with_probes(case: str, raws: list[bytes]) -> None:
        lat: list[float] = []
        bad: Counter[str] = Counter()
        done = asyncio.Event()

        async def prober() -> None:
            while not done.is_set():
                t = time.perf_counter()
                r = await target.call("GET", "/healthz", timeout=10)
                (lat.append(r.seconds) if r.status == 200 else bad.update([str(r.status)]))
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))

        task = asyncio.create_task(prober())
        t0 = time.perf_counter()
        replies = await gather(target, raws)
        wall = time.perf_counter() - t0
        done.set()
        await task
        failed = f", failed probes {dict(bad)}" if bad else ""
        rows.append(
            Row(
                "probe",
                case,
                count(replies),
                wall,
                f"/healthz n={len(lat)} p50 {ms(pct(lat, 0.5))} ms p99 {ms(pct(lat, 0.99))} ms "
                f"max {ms(max(lat, default=None))} ms{failed}",
                {
                    "probes": len(lat),
                    "p50_s": pct(lat, 0.5),
                    "p99_s": pct(lat, 0.99),
                    "max_s": max(lat, default=None),
                    "failed": dict(bad),
                },
            )
        )

    forecast = forecast_body(s)
    await with_probes(f"during /forecast {size(forecast)}", [post("/forecast", forecast)])
    sentiment = post("/sentiment", sentiment_body(s.texts, s.text_chars))
    await with_probes(
        f"during {s.probe_sentiment} x /sentiment {s.texts}x{s.text_chars} chars",
        [sentiment] * s.probe_sentiment,
    )
    return rows


async def hold(
    target: Target, first: bytes, trickle: bytes = b"", cap: float = 30.0
) -> dict[str, Any]:
    """Send ``first``, then ``trickle`` one byte a second; how long until the server lets go?"""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    except OSError as exc:
        return {"held_s": 0.0, "ended": failure(exc), "status": None}
    status: int | None = None
    ended = "still open"
    try:
        writer.write(first)
        await writer.drain()

        async def drip() -> None:
            for b in trickle:
                await asyncio.sleep(1.0)
                writer.write(bytes([b]))
                await writer.drain()
            await asyncio.Event().wait()

        dripper = asyncio.create_task(drip())
        try:
            data = await asyncio.wait_for(reader.read(65536), cap)
            if data.startswith(b"HTTP/"):
                status = int(data.split()[1])
                rest = await asyncio.wait_for(
                    reader.read(), max(0.1, cap - (time.perf_counter() - t0))
                )
                ended = "answered, closed" if rest == b"" else "answered"
            else:
                ended = "closed"
        except asyncio.TimeoutError:
            ended = "still open"
        except OSError as exc:
            ended = failure(exc)
        finally:
            dripper.cancel()
            with contextlib.suppress(BaseException):
                await dripper
    finally:
        writer.close()
    held = time.perf_counter() - t0
    return {"held_s": held, "ended": ended, "status": status}


def held(r: dict[str, Any], cap: float) -> str:
    if r["ended"].startswith("still"):
        return f">={cap:.0f} s (still connected)"
    answer = f", answered {r['status']}" if r["status"] else ""
    return f"{r['held_s']:.1f} s ({r['ended']}{answer})"


async def attack_slow(target: Target, s: Sizes) -> list[Row]:
    cap = s.slow_cap_s
    partial = b"POST /sentiment HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    trickle_head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Trickle: "
    body = sentiment_body(4, 2_500)
    half = build_request("POST", "/sentiment", body)[: -len(body) // 2]
    stall = build_request("POST", "/sentiment", body)[: -len(body) + 10]
    small = post("/sentiment", dumps({"text": "a gorgeous , witty film"}))

    async def blocked() -> tuple[Reply, Reply]:
        await asyncio.sleep(1.0 if cap > 5 else 0.5)  # the stalled uploads are in by now
        return await asyncio.gather(
            Conn(target.host, target.port).request(small, cap - 1),
            target.call("GET", "/healthz", timeout=cap - 1),
        )

    async def stalled_uploads() -> list[dict[str, Any]]:
        await asyncio.sleep(0.3)  # after the half body, which is one of them (it holds a slot)
        return list(
            await asyncio.gather(*(hold(target, stall, cap=cap) for _ in range(s.stalled - 1)))
        )

    results = await asyncio.gather(
        hold(target, partial, cap=cap),
        hold(target, trickle_head, b"a" * int(cap + 5), cap=cap),
        hold(target, half, cap=cap),
        stalled_uploads(),
        blocked(),
    )
    p, t, h, stalled, (sent, health) = results
    stalled = [h, *stalled]
    rows = [
        Row("slow", "partial headers, then nothing", "", None, held(p, cap), p),
        Row("slow", "header trickle, 1 byte/s", "", None, held(t, cap), t),
        Row("slow", "half a body (Content-Length > sent)", "", None, held(h, cap), h),
    ]
    open_ = sum(1 for r in stalled if r["ended"].startswith("still"))
    times = sorted(r["held_s"] for r in stalled)
    rows.append(
        Row(
            "slow",
            f"{s.stalled} stalled uploads (the half body + {s.stalled - 1}) + 1 /sentiment",
            f"sentiment {sent.status}, healthz {health.status}",
            None,
            f"/sentiment answered in {sent.seconds:.2f} s; stalled: {open_}/{s.stalled} still "
            f"connected at {cap:.0f} s, median hold {times[len(times) // 2]:.1f} s",
            {
                "sentiment_status": sent.status,
                "sentiment_s": sent.seconds,
                "healthz_status": health.status,
                "still_open": open_,
                "hold_s": times,
            },
        )
    )
    return rows


def edge_requests(refs: dict[str, str]) -> list[tuple[str, bytes]]:
    sentiment = refs.get("sentiment", "sst2-imdb-bilstm:1").split(":")[0]
    series = ",".join(str(i % 10) for i in range(400))
    v2 = f"/v2/models/{sentiment}/infer"
    valid_v2 = dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    )
    return [
        (
            "/next-word temperature 1e-310",
            post("/next-word", b'{"text":"the city of","complete":3,"temperature":1e-310}'),
        ),
        (
            '/forecast start "9999-12-31", freq "h"',
            post(
                "/forecast",
                f'{{"series":[{{"values":[{series}],"start":"9999-12-31","freq":"h"}}]}}'.encode(),
            ),
        ),
        (
            '/forecast freq "9999999999h"',
            post(
                "/forecast",
                f'{{"series":[{{"values":[{series}],"start":"2020-01-01","freq":"9999999999h"}}]}}'.encode(),
            ),
        ),
        (
            '/forecast series id "\\ud800" (lone surrogate)',
            post("/forecast", f'{{"series":[{{"id":"\\ud800","values":[{series}]}}]}}'.encode()),
        ),
        (
            "v2 infer, shape with 65 dims",
            post(
                v2,
                dumps(
                    {
                        "inputs": [
                            {"name": "text", "shape": [1] * 65, "datatype": "BYTES", "data": ["x"]}
                        ]
                    }
                ),
            ),
        ),
        (
            "v2 infer, Inference-Header-Content-Length: \xb2",
            build_request("POST", v2, valid_v2, [(b"Inference-Header-Content-Length", b"\xb2")]),
        ),
        ("GET /v1/models/{1 MB name}", build_request("GET", "/v1/models/" + "a" * MB)),
    ]


async def attack_statuses(target: Target, s: Sizes) -> list[Row]:
    rows = []
    for case, raw in edge_requests(target.refs):
        conn = Conn(target.host, target.port)
        r = await conn.request(raw, 30)
        conn.close()
        bad = " <- server error" if isinstance(r.status, int) and r.status >= 500 else ""
        rows.append(
            Row(
                "statuses",
                case,
                str(r.status),
                r.seconds,
                f"{len(r.body)} bytes{bad}",
                {"status": r.status, "bytes": len(r.body)},
            )
        )
    return rows


RUNNERS: dict[str, Callable[[Target, Sizes], Awaitable[list[Row]]]] = {
    "memory": attack_memory,
    "reload": attack_reload,
    "goodput": attack_goodput,
    "probe": attack_probe,
    "slow": attack_slow,
    "statuses": attack_statuses,
}


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(cwd: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    env["PYTHONPATH"] = str(cwd)
    env.update(
        {
            "SEQSERVE_ADMIN_KEYS": ADMIN_KEY,
            "SEQSERVE_STATE_SECRET": "attack-" + "5eed" * 16,  # newer servers want >= 32 bytes
            "SEQSERVE_ACCESS_LOG": "false",
            "SEQSERVE_LOG_LEVEL": "warning",
            # replaced versions are closed 5 s after a reload, so "retained" (10 s) sees it
            "SEQSERVE_RELOAD_GRACE_SECONDS": "5",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def server(args: argparse.Namespace, extra: dict[str, str]) -> Iterator[Target]:
    """A server for one group of attacks (or the ``--url`` one, whose settings are its own)."""
    if args.url:
        yield Target(args.url, args.pid)
        return
    cwd = Path(args.cwd).resolve()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="attack-server-", suffix=".log", delete=False)
    cmd = [args.python, "-m", "app.cli", "serve", "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=server_env(cwd, {**extra, **args.env}), stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    target = Target(url, proc.pid)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"server exited with {proc.returncode}: {' | '.join(tail)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 120 s; log: {log.name}")
            r = asyncio.run(target.call("GET", "/readyz", timeout=2))
            if r.status == 200:
                break
            time.sleep(0.2)
        yield target
        if proc.poll() is not None:
            print(f"note: the server died (exit {proc.returncode}); log: {log.name}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# Settings per group of attacks: each group gets its own server (when we start one).
GROUPS: list[tuple[tuple[str, ...], dict[str, str]]] = [
    (("memory", "reload", "probe", "statuses"), {}),
    (("goodput",), {"SEQSERVE_MAX_CONCURRENT_REQUESTS": "8"}),
    (("slow",), {"SEQSERVE_MAX_CONCURRENT_REQUESTS": "{stalled}"}),  # stalled = the limit
]


async def run_group(target: Target, names: list[str], s: Sizes) -> tuple[list[Row], float | None]:
    r = await target.call("GET", "/v1/models", timeout=30)
    if r.status == 200:
        target.refs = r.json().get("defaults", {})
    idle = target.rss()
    rows: list[Row] = []
    for name in names:
        try:
            rows += await RUNNERS[name](target, s)
        except Exception as exc:  # one broken attack must not lose the others' figures
            rows.append(Row(name, "attack failed", "", None, f"{type(exc).__name__}: {exc}"))
    return rows, idle


def table(rows: list[Row]) -> str:
    head = ("attack", "case", "statuses", "s", "result (MB for memory)")
    cells = [
        (r.attack, r.case, r.statuses, "" if r.seconds is None else f"{r.seconds:.1f}", r.detail)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)] if cells else []
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else "",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[-1] if __doc__ else "",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes and short waits (smoke test)")
    ap.add_argument("--only", nargs="+", choices=ATTACKS, help="run only these attacks")
    ap.add_argument("--url", help="attack this running server instead of starting one")
    ap.add_argument(
        "--pid", type=int, help="with --url: the server's (parent) process id, for RSS figures"
    )
    ap.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    ap.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write the figures as JSON (default path: "
        "benchmarks/results/attack-<UTC time>.json)",
    )
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter that runs the server (default: this)"
    )
    ap.add_argument(
        "--cwd",
        default=str(REPO),
        help="checkout to start the server from, also put on PYTHONPATH (default: this repo)",
    )
    ap.add_argument(
        "--env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra settings for the servers started (e.g. SEQSERVE_MEMORY_BUDGET_MB=400)",
    )
    args = ap.parse_args(argv)
    args.env = dict(e.split("=", 1) for e in args.env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = Sizes.quick() if args.quick else Sizes()
    wanted = list(args.only or ATTACKS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 4096)) if hard != resource.RLIM_INFINITY else max(soft, 4096)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[Row] = []
    idles: dict[str, Any] = {}
    t0 = time.perf_counter()
    groups = [
        (
            [n for n in names if n in wanted],
            {k: v.format(stalled=s.stalled) for k, v in extra.items()},
        )
        for names, extra in GROUPS
    ]
    if args.url:  # one server: its own settings for every attack
        groups = [(wanted, {})]
    for names, extra in groups:
        if not names:
            continue
        with server(args, extra) as target:
            per_process = {p: round(rss_mb(p), 1) for p in tree(target.pid)} if target.pid else {}
            group_rows, idle = asyncio.run(run_group(target, names, s))
        rows += group_rows
        idles[",".join(names)] = {"idle_mb": idle, "per_process_mb": per_process}
    first: dict[str, Any] = next(iter(idles.values()), {})
    procs = first.get("per_process_mb", {})
    header = (
        f"seqserve attack ({'quick' if args.quick else 'full'}) at {started}, "
        f"cwd {Path(args.cwd).resolve() if not args.url else args.url}, workers {args.workers}; "
        f"idle RSS {mb(first.get('idle_mb'))} MB over {len(procs)} processes "
        f"({', '.join(f'{v:.0f}' for v in procs.values())}); took {time.perf_counter() - t0:.0f} s"
    )
    print(header)
    print(table(rows))
    if args.json is not None:
        path = (
            Path(args.json)
            if args.json
            else RESULTS / f"attack-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "started": started,
            "cwd": str(Path(args.cwd).resolve()),
            "url": args.url,
            "workers": args.workers,
            "quick": args.quick,
            "idle": idles,
            "rows": [r.__dict__ for r in rows],
        }
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
