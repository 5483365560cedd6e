"""Benchmark seqserve against batching-off and a hand-written PyTorch-eager server, in one run.

    python benchmarks/run.py                 # ~6 minutes; writes benchmarks/results/*
    python benchmarks/run.py --quick         # a smoke run (short, fewer points)

Starts each server itself on loopback (one process each), drives it with ``wrk`` (apt-get
install wrk) at concurrency 1, 8 and 64 for a fixed time per point, and writes
``results.json``, ``results.md`` and ``results.png``. Also measures: next-word with a state
token vs re-sending a 500-word context, /forecast with all M4 hourly series in one request,
cold start to ready, and resident memory with every shipped model loaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/run.py` from anywhere: import siblings
    sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "results"
# wrk's script: one JSON line of totals, socket errors by kind (a timeout is a request left
# unanswered for 10 s: a starved connection; a connect/read error, a dropped one) and latencies.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "socket_errors": %d, "non2xx": %d, '
    .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
    .. '"p50_us": %.1f, "p95_us": %.1f, "p99_us": %.1f, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""
SENTENCE = (
    "the film is a gorgeous , witty and moving portrait of a family that never quite "
    "manages to say what it means"
)  # 20 words


def machine() -> dict[str, Any]:
    """The box a benchmark ran on, recorded beside its figures."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KeepAlive:
    """One persistent HTTP connection, so timings exclude TCP set-up (as a real client's would)."""

    def __init__(self, url: str) -> None:
        import http.client
        from urllib.parse import urlparse

        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        data = json.dumps(body).encode()
        t0 = time.perf_counter()
        self.conn.request("POST", path, data, {"content-type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise urllib.error.HTTPError(path, resp.status, raw.decode()[:200], None, None)  # type: ignore[arg-type]
        return elapsed, json.loads(raw)


def post(url: str, body: dict[str, Any], timeout: float = 60) -> tuple[float, dict[str, Any]]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t0, out


class Server:
    def __init__(self, name: str, app: str, env: dict[str, str]) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        t0 = time.perf_counter()
        self.log = tempfile.NamedTemporaryFile(prefix=f"seqserve-{name}-", suffix=".log")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: the server logs a line per request, and a pipe nobody reads
            # fills up and blocks it.
            stderr=self.log,
        )
        self.cold_start_s = self._wait_ready(t0)
        self.tasks: list[str] = []

    def _wait_ready(self, t0: float) -> float:
        while time.perf_counter() - t0 < 120:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {Path(self.log.name).read_text()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after 120 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(
    url: str, body: dict[str, Any], concurrency: int, seconds: int, workdir: Path
) -> dict[str, Any]:
    body_file = workdir / f"body-{abs(hash(json.dumps(body))) % 10**8}.json"
    body_file.write_text(json.dumps(body))
    script = workdir / "post.lua"
    script.write_text(LUA)
    threads = 1 if concurrency == 1 else 2
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "BODY_FILE": str(body_file)},
        check=True,
    )
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
    r = json.loads(line)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    for p in ("p50", "p95", "p99", "mean"):
        r[f"{p}_ms"] = r.pop(f"{p}_us") / 1000
    return r


def m4_series(limit: int | None = None) -> list[dict[str, Any]]:
    path = DATA / "m4_hourly" / "Hourly-train.csv"
    out = []
    if path.exists():
        with open(path) as fh:
            rows = csv.reader(fh)
            next(rows)
            for row in rows:
                vals = [float(v) for v in row[1:] if v != ""]
                out.append({"id": row[0], "values": vals})
    else:  # synthetic stand-in with the same shape (414 series of 700 values)
        import math

        out = [
            {
                "id": f"S{i}",
                "values": [100 + 10 * math.sin(2 * math.pi * t / 24) + i for t in range(700)],
            }
            for i in range(414)
        ]
    return out[:limit] if limit else out


def review_text(words: int) -> str:
    """A real IMDB dev review of about ``words`` words (a fixed stand-in without the data)."""
    path = DATA / "imdb" / "dev.tsv"
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return min((r["sentence"] for r in rows), key=lambda t: abs(len(t.split()) - words))
    return " ".join((SENTENCE.split() * (words // 20 + 1))[:words])


def wikitext_context(words: int) -> str:
    """A ``words``-word running text (WikiText-2 valid when present)."""
    path = DATA / "wikitext2" / "valid.txt"
    if path.exists():
        toks = [t for t in path.read_text().split()[1000:] if t != "<unk>"]
    else:
        toks = (
            "the game was released in japan and it was well received by critics . " * 60
        ).split()
    return " ".join(toks[:words])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8, help="wrk duration per point")
    ap.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 64], help="connections per point"
    )
    ap.add_argument(
        "--endpoints",
        nargs="+",
        default=["sentiment", "sentiment-review", "next-word", "forecast"],
        help="sentiment-review: /sentiment with a 230-word movie review",
    )
    ap.add_argument("--quick", action="store_true", help="2 s per point, concurrency 1 and 8 only")
    ap.add_argument("--no-baseline", action="store_true", help="skip the PyTorch-eager server")
    ap.add_argument("--out", type=Path, default=OUT, help="where results go")
    ap.add_argument(
        "--replot", action="store_true", help="only redraw results.png/md from results.json"
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.concurrency = 2, [1, 8]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((args.out / "results.json").read_text())
        (args.out / "results.md").write_text(markdown(saved))
        plot(saved, args.out / "results.png")
        return 0
    secret = {"SEQSERVE_STATE_SECRET": "benchmark-" + "0" * 32}
    variants = [
        ("seqserve", "app.main:app", {**secret}),
        ("seqserve-no-batching", "app.main:app", {**secret, "SEQSERVE_MAX_BATCH_SIZE": "1"}),
    ]
    if not args.no_baseline:
        variants.append(("pytorch-eager", "benchmarks.baseline_server:app", {}))
    trivial_dir = Path(tempfile.mkdtemp(prefix="seqserve-trivial-"))
    from benchmarks.trivial_model import write as write_trivial

    write_trivial(trivial_dir)
    # The request path alone: the same service and route with a model that does no work.
    variants.append(
        (
            "seqserve-trivial-model",
            "app.main:app",
            {**secret, "SEQSERVE_MODELS_DIR": str(trivial_dir)},
        )
    )
    bodies = {
        "sentiment": {"text": SENTENCE},
        "sentiment-review": {"text": review_text(230)},
        "next-word": {"text": SENTENCE, "k": 5},
        "forecast": {"series": [m4_series(1)[0]], "horizon": 48},
    }
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "seconds_per_point": args.seconds,
            "server_processes": 1,
            "load_generator": "wrk",
        },
        "load": [],
        "extra": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, app, env in variants:
            server = Server(name, app, env)
            print(f"{name}: ready in {server.cold_start_s:.2f}s", flush=True)
            result["extra"].setdefault("cold_start_s", {})[name] = round(server.cold_start_s, 3)
            try:
                for ep in args.endpoints:
                    if name == "seqserve-trivial-model" and ep != "sentiment":
                        continue
                    path = "/" + ep.removesuffix("-review")
                    try:
                        post(server.url + path, bodies[ep])
                    except urllib.error.HTTPError as exc:
                        print(f"  {ep}: not served ({exc.code})", flush=True)
                        continue
                    levels = [1] if name == "seqserve-trivial-model" else args.concurrency
                    for c in levels:
                        r = wrk(server.url + path, bodies[ep], c, args.seconds, work)
                        r.update(server=name, endpoint=ep, concurrency=c)
                        result["load"].append(r)
                        print(
                            f"  {ep:10s} c={c:3d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:.2f}  "
                            f"p95 {r['p95_ms']:.2f}  p99 {r['p99_ms']:.2f} ms  non2xx {r['non2xx']}",
                            flush=True,
                        )
                result["extra"].setdefault("rss_mb", {})[name] = round(server.rss_mb(), 1)
                if name == "seqserve":
                    result["extra"].update(special_measurements(server.url))
            finally:
                server.stop()
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    (args.out / "results.md").write_text(markdown(result))
    plot(result, args.out / "results.png")
    print((args.out / "results.md").read_text())
    return 0


def special_measurements(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = KeepAlive(url)
    try:
        context = wikitext_context(500)
        _, first = client.post("/next-word", {"text": context})
        n_tokens = len(first["tokens"])
        full = [client.post("/next-word", {"text": context})[0] for _ in range(30)]
        token = first["state"]
        inc = [client.post("/next-word", {"text": "the", "state": token})[0] for _ in range(100)]
        out["next_word_state_vs_context"] = {
            "context_tokens": n_tokens,
            "resend_context_ms_p50": statistics.median(full) * 1e3,
            "with_state_token_ms_p50": statistics.median(inc) * 1e3,
            "speedup": statistics.median(full) / statistics.median(inc),
        }
    except urllib.error.HTTPError as exc:
        out["next_word_state_vs_context"] = f"not measured ({exc.code})"
    try:
        series = m4_series()
        body = {"series": series, "horizon": 48, "level": [80, 95]}
        times = [client.post("/forecast", body)[0] for _ in range(5)]
        out["forecast_all_m4_series"] = {
            "series": len(series),
            "horizon": 48,
            "s_p50": statistics.median(times),
            "s_min": min(times),
        }
    except urllib.error.HTTPError as exc:
        out["forecast_all_m4_series"] = f"not measured ({exc.code})"
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['processor']}, {m['platform']}, Python {m['python']}; "
        f"one server process each, wrk over loopback, {res['settings']['seconds_per_point']} s per point.",
        "",
        "| endpoint | server | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["load"]:
        lines.append(
            f"| {r['endpoint']} | {r['server']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx'] + r['socket_errors']} |"
        )
    ex = res["extra"]
    lines += ["", "| measurement | value |", "|---|---|"]
    for k, v in ex.get("cold_start_s", {}).items():
        lines.append(f"| cold start to ready, {k} | {v:.2f} s |")
    for k, v in ex.get("rss_mb", {}).items():
        lines.append(f"| resident memory after the run, {k} | {v:.0f} MB |")
    nw = ex.get("next_word_state_vs_context")
    if isinstance(nw, dict):
        lines.append(
            f"| next-word, re-send {nw['context_tokens']}-token context (p50) | {nw['resend_context_ms_p50']:.2f} ms |"
        )
        lines.append(
            f"| next-word, state token + 1 word (p50) | {nw['with_state_token_ms_p50']:.2f} ms "
            f"({nw['speedup']:.1f}x faster) |"
        )
    fc = ex.get("forecast_all_m4_series")
    if isinstance(fc, dict):
        lines.append(
            f"| /forecast, {fc['series']} series x {fc['horizon']} steps, one request (p50 of 5) | "
            f"{fc['s_p50']:.3f} s |"
        )
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted({r["endpoint"] for r in res["load"]})
    servers = sorted({r["server"] for r in res["load"]})
    colors = {name: f"C{i}" for i, name in enumerate(servers)}  # one colour per server everywhere
    fig, axes = plt.subplots(2, len(eps), figsize=(5 * len(eps), 7), squeeze=False)
    for j, ep in enumerate(eps):
        for server in servers:
            rows = sorted(
                (r for r in res["load"] if r["endpoint"] == ep and r["server"] == server),
                key=lambda r: r["concurrency"],
            )
            if not rows:
                continue
            cs = [r["concurrency"] for r in rows]
            axes[0][j].plot(
                cs, [r["rps"] for r in rows], marker="o", color=colors[server], label=server
            )
            for p, style in (("p50", "-"), ("p99", "--")):
                axes[1][j].plot(
                    cs,
                    [r[f"{p}_ms"] for r in rows],
                    style,
                    marker="o",
                    color=colors[server],
                    label=f"{server} {p}",
                )
        axes[0][j].set_title(f"/{ep}")
        axes[0][j].set_ylabel("requests/s")
        axes[1][j].set_ylabel("latency ms (p50 solid, p99 dashed)")
        for ax in axes[:, j]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[1][j].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
