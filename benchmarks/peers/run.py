"""Peers benchmark: seqserve beside LitServe, KServe, BentoML and a bare Starlette route.

    python -m benchmarks.peers.run                          # sentiment, 3 blocks x 15 s per cell
    python -m benchmarks.peers.run --quick                  # smoke run (1 block, 3 s; writes nothing)
    python -m benchmarks.peers.run --servers seqserve,bare  # a quick before/after loop
    python -m benchmarks.peers.run --task next-word         # or forecast: seqserve vs the bare route

Every peer wraps the same ONNX model, tokenizer and preprocessing (``benchmarks.peers.common``)
and is checked to answer the same numbers as in-process onnxruntime (1e-5) before it is timed.
Each server runs as one process (one worker, one onnxruntime thread) pinned with ``taskset`` to
CPU 0 with every process it spawns; ``wrk`` is pinned to CPU 1. Servers run back to back in a
rotated order per block; the table shows the median over blocks and the (min-max) spread.
Peers are installed into their own virtual environments (``--venv-dir``), never into this one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python benchmarks/peers/run.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.peers.common import SENTENCE, Forecast, NextWord, Sentiment  # noqa: E402
from benchmarks.run import LUA, free_port, m4_series, machine  # noqa: E402

OUT = REPO / "benchmarks" / "results"
SERVER_CPU, LOAD_CPU = "0", "1"
TOLERANCE = 1e-5
# The model libraries at the versions constraints-serve.txt pins (seqserve runs on these), so
# every peer runs the same onnxruntime and tokenizer build.
MODEL_LIBS = [
    "onnxruntime==1.32.0",
    "tokenizers==0.23.3",
    "numpy==2.4.6",
    "orjson",
    "pydantic>=2.6",
]
PEER_PACKAGES = {
    "litserve": ["litserve==0.2.19"],
    "kserve": ["kserve==0.21.0"],
    "bentoml": ["bentoml==1.4.40"],
}
NEXT_WORD_PREFIX = "The game was released in Japan in 1998 and"
NEXT_WORD_TEXT = "it was well received by critics"  # sent with the state of the prefix
UNITS = {"sentiment": "texts", "next-word": "requests", "forecast": "series"}
FORECAST_SERIES = 64  # M4 hourly series per /forecast request, the last 336 values of each


# --- the servers ---------------------------------------------------------------------------


@dataclass
class Peer:
    """How to start one server and talk to it; ``venv`` names its environment (None: this one)."""

    name: str
    label: str
    command: Callable[[str, int], list[str]]  # (python, port) -> argv
    path: str  # the sentiment route
    body: Callable[[str], Any]  # sentence -> request body
    probabilities: Callable[[Any], dict[str, float]]  # response -> one text's probabilities
    venv: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    checkout: Path | None = None  # another checkout of seqserve to run (--before)


def _seqserve(python: str, port: int) -> list[str]:
    return [python, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]


def _bare(python: str, port: int) -> list[str]:
    return [
        python,
        "-m",
        "uvicorn",
        "benchmarks.peers.servers.bare:app",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def _probs(resp: Any) -> dict[str, float]:
    return dict(resp["probabilities"])


PEERS = {
    p.name: p
    for p in [
        Peer(
            "seqserve",
            "seqserve as shipped (access log on)",
            _seqserve,
            "/sentiment",
            lambda s: {"text": s},
            _probs,
        ),
        Peer(
            "seqserve-no-log",
            "seqserve, SEQSERVE_ACCESS_LOG=false",
            _seqserve,
            "/sentiment",
            lambda s: {"text": s},
            _probs,
            env={"SEQSERVE_ACCESS_LOG": "false"},
        ),
        Peer(
            "kserve",
            "KServe ModelServer, v1 predict",
            lambda py, port: [
                py,
                "-m",
                "benchmarks.peers.servers.kserve_server",
                "--http_port",
                str(port),
                "--grpc_port",
                str(free_port()),
            ],
            "/v1/models/sentiment:predict",
            lambda s: {"instances": [s]},
            lambda r: _probs(r["predictions"][0]),
            venv="kserve",
        ),
        Peer(
            "litserve",
            "LitServe, batch 32 / 2 ms",
            lambda py, port: [py, "-m", "benchmarks.peers.servers.litserve_server", str(port)],
            "/predict",
            lambda s: {"text": s},
            _probs,
            venv="litserve",
        ),
        Peer(
            "bentoml",
            "BentoML, batchable 32",
            lambda py, port: [
                py,
                "-m",
                "bentoml",
                "serve",
                "benchmarks.peers.servers.bentoml_service:SentimentService",
                "--working-dir",
                str(REPO),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            "/classify",
            lambda s: {"texts": [s]},
            lambda r: _probs(r[0]),
            venv="bentoml",
            env={"BENTOML_DO_NOT_TRACK": "True"},
        ),
        Peer(
            "bare",
            "bare Starlette route, no batching",
            _bare,
            "/sentiment",
            lambda s: {"text": s},
            _probs,
        ),
    ]
}
TASK_SERVERS = {
    "sentiment": list(PEERS),
    "next-word": ["seqserve", "seqserve-no-log", "bare"],
    "forecast": ["seqserve", "seqserve-no-log", "bare"],
}


def ensure_venv(peer: str | None, venv_dir: Path) -> str:
    """The python of the peer's own environment, created and installed on first use (None:
    seqserve and the bare route run with this interpreter)."""
    if peer is None:
        return sys.executable
    root = venv_dir / peer
    python = root / "bin" / "python"
    reqs = [*PEER_PACKAGES[peer], *MODEL_LIBS]
    marker = root / ".seqserve-peers"
    if python.exists() and marker.exists() and marker.read_text() == "\n".join(reqs):
        return str(python)
    print(f"installing {peer} into {root} (once) ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
        check=True,
    )
    marker.write_text("\n".join(reqs))
    return str(python)


# --- process tree: memory and CPU ---------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (LitServe and BentoML spawn workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of the whole tree in MB; PSS counts pages shared by forked workers once."""
    rss = pss = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the live processes of the tree."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime
    return total / tick


def busy_cpu_s() -> float:
    """CPU seconds all cores have spent running processes (user, nice, system), from /proc/stat:
    interrupt time is left out, as the loopback traffic of the load itself causes most of it."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (vals[0] + vals[1] + vals[2]) / os.sysconf("SC_CLK_TCK")


def wait_idle(max_pct: float, timeout_s: float) -> float:
    """Wait (between servers) until other processes use at most ``max_pct`` % of a CPU over a
    second, or ``timeout_s`` passes; returns the last reading. The machine has two cores: a
    test run beside the benchmark takes one of them from the server or from wrk."""
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        before = busy_cpu_s()
        time.sleep(1.0)
        pct = 100 * (busy_cpu_s() - before)
        if pct <= max_pct or time.monotonic() > deadline:
            return pct
        if not said:
            print(f"  waiting for the machine to be idle (other processes: {pct:.0f}% of a CPU)")
            said = True


def steal_cpu_s() -> float:
    """CPU seconds the hypervisor gave this virtual machine's cores to someone else."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return vals[7] / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- one server's lifetime ------------------------------------------------------------------


class Running:
    """A started server: its own session (process group), pinned to the server CPU."""

    def __init__(self, peer: Peer, python: str, logdir: Path) -> None:
        self.peer, self.port = peer, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
        env.update(peer.env)
        env["PYTHONPATH"] = str(peer.checkout or REPO)
        env["PEERS_TASKS"] = os.environ.get("PEERS_TASKS", "sentiment")
        self.log_path = logdir / f"{peer.name}-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - a file, not a pipe nobody reads
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *peer.command(python, self.port)],
            cwd=peer.checkout or REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def post(self, path: str, body: Any, timeout: float = 30) -> Any:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def wait_ready(self, path: str, body: Any, timeout_s: float = 180) -> float:
        """Seconds until the first request is answered (the server's own readiness differs)."""
        while time.perf_counter() - self.t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer.name} exited: {self.tail()}")
            try:
                self.post(path, body, timeout=5)
                return time.perf_counter() - self.t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"{self.peer.name} not ready after {timeout_s} s: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """SIGTERM to the server's process group (its spawned workers too), then SIGKILL."""
        pgid = self.proc.pid  # start_new_session: the group id is the server's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
        try:  # stragglers of the group (forked workers outliving their parent)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def wrk(url: str, body: Any, connections: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """One load cell: ``wrk`` pinned to the load CPU; latency percentiles from its Lua done()."""
    body_file = workdir / "body.json"
    body_file.write_text(json.dumps(body))
    script = workdir / "post.lua"
    script.write_text(LUA)
    threads = 1 if connections == 1 else 2
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t", str(threads), "-c", str(connections)]
    cmd += ["-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url]
    env = {**os.environ, "BODY_FILE": str(body_file)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
    r: dict[str, Any] = json.loads(line)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    for p in ("p50", "p95", "p99", "mean"):
        r[f"{p}_ms"] = r.pop(f"{p}_us") / 1000
    return r


# --- tasks: request bodies, reference answers, checks -----------------------------------------


def close(got: Any, want: Any, rel: bool = False) -> float:
    """Largest difference between two equally shaped number lists (relative to max(1, |want|))."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a - b) / (np.maximum(1.0, np.abs(b)) if rel else 1.0)
    return float(diff.max(initial=0.0))


class Task:
    """What one task sends each server and how its answer is checked against onnxruntime."""

    name: str

    def prepare(self, srv: Running) -> tuple[str, Any]:
        """(route, body) for the load, after checking the server's answers (raises)."""
        raise NotImplementedError

    def ready_request(self, peer: Peer) -> tuple[str, Any]:
        raise NotImplementedError

    def inprocess(self, seconds: float) -> dict[str, Any]:
        raise NotImplementedError


def timed_loop(fn: Callable[[], Any], seconds: float, items: int) -> dict[str, float]:
    for _ in range(20):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {
        "p50_ms": statistics.median(times) * 1000,
        "per_s": items * len(times) / sum(times),
        "calls": len(times),
    }


class SentimentTask(Task):
    name = "sentiment"

    def __init__(self) -> None:
        self.model = Sentiment()
        self.want = self.model.response(self.model.predict([SENTENCE])[0])["probabilities"]

    def ready_request(self, peer: Peer) -> tuple[str, Any]:
        return peer.path, peer.body(SENTENCE)

    def prepare(self, srv: Running) -> tuple[str, Any]:
        path, body = self.ready_request(srv.peer)
        got = srv.peer.probabilities(srv.post(path, body))
        diff = close([got[k] for k in self.want], list(self.want.values()))
        if set(got) != set(self.want) or diff > TOLERANCE:
            raise AssertionError(f"{srv.peer.name}: {got} != onnxruntime {self.want} ({diff:.2g})")
        return path, body

    def inprocess(self, seconds: float) -> dict[str, Any]:
        return {
            "batch 1": timed_loop(lambda: self.model.predict([SENTENCE]), seconds, 1),
            "batch 32": timed_loop(lambda: self.model.predict([SENTENCE] * 32), seconds, 32),
        }


class NextWordTask(Task):
    """A follow-up request: new words plus the state the prefix ended in (seqserve's signed
    float16 token, the bare route's raw float32 arrays); checked against onnxruntime fed the
    same state (seqserve's rounded to float16, as its token carries it)."""

    name = "next-word"

    def __init__(self) -> None:
        self.model = NextWord()
        _, self.state, _ = self.model.step(NEXT_WORD_PREFIX, None)

    def ready_request(self, peer: Peer) -> tuple[str, Any]:
        return "/next-word", {"text": NEXT_WORD_PREFIX, "k": 5}

    def expect(self, float16: bool) -> list[dict[str, Any]]:
        st = [s.astype(np.float16).astype(np.float32) for s in self.state] if float16 else None
        lp, _, _ = self.model.step(NEXT_WORD_TEXT, st or self.state)
        return self.model.top_k(lp, 5)

    def check(self, name: str, got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
        diff = close([c["probability"] for c in got], [c["probability"] for c in want])
        if [c["word"] for c in got] != [c["word"] for c in want] or diff > TOLERANCE:
            raise AssertionError(f"{name}: {got} != onnxruntime {want} ({diff:.2g})")

    def prepare(self, srv: Running) -> tuple[str, Any]:
        first = srv.post("/next-word", {"text": NEXT_WORD_PREFIX, "k": 5})
        lp, _, _ = self.model.step(NEXT_WORD_PREFIX, None)
        self.check(srv.peer.name, first["candidates"], self.model.top_k(lp, 5))
        body = {"text": NEXT_WORD_TEXT, "k": 5, "state": first["state"]}
        got = srv.post("/next-word", body)["candidates"]
        self.check(srv.peer.name, got, self.expect(float16=srv.peer.name != "bare"))
        return "/next-word", body

    def inprocess(self, seconds: float) -> dict[str, Any]:
        return {
            "batch 1": timed_loop(
                lambda: self.model.top_k(self.model.step(NEXT_WORD_TEXT, self.state)[0], 5),
                seconds,
                1,
            )
        }


class ForecastTask(Task):
    name = "forecast"

    def __init__(self) -> None:
        self.model = Forecast()
        self.series = [
            {"id": s["id"], "values": s["values"][-self.model.window :]}
            for s in m4_series(FORECAST_SERIES)
        ]
        self.body = {"series": self.series, "horizon": 48, "level": [80.0, 95.0]}
        self.want = self.model.predict([s["values"] for s in self.series], 48, [80.0, 95.0])

    def ready_request(self, peer: Peer) -> tuple[str, Any]:
        return "/forecast", self.body

    def prepare(self, srv: Running) -> tuple[str, Any]:
        got = srv.post("/forecast", self.body)["forecasts"]
        worst = 0.0
        for g, w in zip(got, self.want, strict=True):
            for key, values in w.items():
                worst = max(worst, close(g.get(key, []), values, rel=True))
        if len(got) != len(self.want) or worst > TOLERANCE:
            raise AssertionError(f"{srv.peer.name}: forecasts differ from onnxruntime by {worst}")
        return "/forecast", self.body

    def inprocess(self, seconds: float) -> dict[str, Any]:
        values = [s["values"] for s in self.series]
        n = len(values)
        return {
            f"{n} series": timed_loop(
                lambda: self.model.predict(values, 48, [80.0, 95.0]), seconds, n
            )
        }


TASKS: dict[str, Callable[[], Task]] = {
    "sentiment": SentimentTask,
    "next-word": NextWordTask,
    "forecast": ForecastTask,
}


# --- the run ---------------------------------------------------------------------------------


def app_digest(repo: Path = REPO) -> str:
    """A digest of app/'s sources when a seqserve server starts: the tree may change between
    runs (or during one), and a result is only comparable with the code it measured."""
    h = hashlib.sha256()
    for f in sorted((repo / "app").rglob("*.py")):
        h.update(f.relative_to(repo).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def measure(peer: Peer, task: Task, python: str, seconds: float, workdir: Path) -> dict[str, Any]:
    digest = app_digest(peer.checkout or REPO) if peer.name.startswith("seqserve") else None
    srv = Running(peer, python, workdir)
    try:
        cold = srv.wait_ready(*task.ready_request(peer))
        path, body = task.prepare(srv)
        wrk(srv.url + path, body, 64, min(2.0, seconds), workdir)  # warm-up, not recorded
        cell: dict[str, Any] = {"server": peer.name, "ready_s": round(cold, 2)}
        if digest is not None:
            cell["app_sha256"] = digest
        for c in (1, 64):
            busy, mine, load = busy_cpu_s(), tree_cpu_s(srv.proc.pid), children_cpu_s()
            steal = steal_cpu_s()
            t = time.perf_counter()
            r = wrk(srv.url + path, body, c, seconds, workdir)
            wall = time.perf_counter() - t
            # CPU that neither this server nor wrk used during the cell: someone else's load.
            other = (busy_cpu_s() - busy) - (tree_cpu_s(srv.proc.pid) - mine)
            other -= children_cpu_s() - load
            r["other_cpu_pct"] = round(100 * max(0.0, other) / wall, 1)
            r["steal_cpu_pct"] = round(100 * (steal_cpu_s() - steal) / wall, 1)
            r["loadavg_1m"] = os.getloadavg()[0]
            cell[f"c{c}"] = r
        cell["rss_mb"], cell["pss_mb"] = memory_mb(srv.proc.pid)
        cell["processes"] = len(tree(srv.proc.pid))
        return cell
    finally:
        srv.stop()


def inprocess(task: str, seconds: float) -> dict[str, Any]:
    """In-process onnxruntime on the server CPU, in a child process pinned like the servers."""
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "benchmarks.peers.run"]
    cmd += ["--inprocess-worker", "--task", task, "--seconds", str(seconds)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(res.stdout.splitlines()[-1]))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


METRICS = {
    "c1_p50_ms": ("c1", "p50_ms"),
    "c1_rps": ("c1", "rps"),
    "c64_rps": ("c64", "rps"),
    "c64_p50_ms": ("c64", "p50_ms"),
    "c64_p99_ms": ("c64", "p99_ms"),
}


def summarize(cells: list[dict[str, Any]], servers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in servers:
        mine = [c for c in cells if c["server"] == name]
        if not mine:
            continue
        s = {k: spread([c[a][b] for c in mine]) for k, (a, b) in METRICS.items()}
        s["rss_mb"] = spread([c["rss_mb"] for c in mine])
        s["pss_mb"] = spread([c["pss_mb"] for c in mine])
        s["non2xx"] = sum(c[f"c{n}"]["non2xx"] for c in mine for n in (1, 64))
        s["socket_errors"] = sum(c[f"c{n}"]["socket_errors"] for c in mine for n in (1, 64))
        s["timeouts"] = sum(c[f"c{n}"].get("timeouts", 0) for c in mine for n in (1, 64))
        s["other_cpu_pct_max"] = max(c[f"c{n}"]["other_cpu_pct"] for c in mine for n in (1, 64))
        out[name] = s
    return out


def fmt(s: dict[str, float], digits: int = 2) -> str:
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def table(result: dict[str, Any]) -> str:
    """The task's Markdown table: median (min–max) over blocks per cell."""
    lines = [
        "| server | c=1 p50 ms | c=64 req/s | c=64 p50 ms | c=64 p99 ms | RSS MB (PSS) "
        "| non-2xx / socket errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in result["summary"].items():
        rss = f"{fmt(s['rss_mb'], 0)} ({s['pss_mb']['median']:,.0f})"
        timeouts = f" ({s['timeouts']} timed out)" if s.get("timeouts") else ""
        lines.append(
            f"| {PEERS[name].label} | {fmt(s['c1_p50_ms'])} | {fmt(s['c64_rps'], 0)} "
            f"| {fmt(s['c64_p50_ms'], 1)} | {fmt(s['c64_p99_ms'], 1)} | {rss} "
            f"| {s['non2xx']} / {s['socket_errors']}{timeouts} |"
        )
    for case, s in result.get("inprocess_summary", {}).items():
        lines.append(
            f"| in-process onnxruntime, {case} | {fmt(s['p50_ms'])} per call "
            f"| {fmt(s['per_s'], 0)} {UNITS[result['task']]}/s | | | | |"
        )
    return "\n".join(lines)


def markdown(all_results: dict[str, Any]) -> str:
    parts = [
        "# Peers benchmark",
        "",
        "Written by `python -m benchmarks.peers.run` (see `benchmarks/peers/README.md`). Every "
        "server wraps the same ONNX model and preprocessing, runs as one process with one "
        "onnxruntime thread pinned to CPU 0 (with every process it spawns); `wrk` is pinned "
        "to CPU 1. Cells are the median (min–max) over blocks run in rotated order. RSS is "
        "summed over the server's process tree after the c=64 load; PSS counts pages the "
        "processes share once. On a virtual machine the speed of the host moves between runs "
        "(the in-process row, measured in the same blocks, shows how fast it was): compare "
        "servers within one table, not across runs.",
    ]
    for task, res in all_results.items():
        st = res["settings"]
        parts += [
            "",
            f"## {task}",
            "",
            f"{res['request']}",
            "",
            f"{st['blocks']} blocks, {st['seconds']:g} s per cell, "
            f"measured {res['finished']} on {res['machine']['cpus']} CPUs "
            f"({res['machine']['processor']}, Python {res['machine']['python']}).",
            "",
            table(res),
        ]
        if res.get("caveats"):
            parts += ["", *[f"- {c}" for c in res["caveats"]]]
    return "\n".join(parts) + "\n"


def request_text(task: str) -> str:
    if task == "sentiment":
        return f"One 21-token sentence per request: “{SENTENCE}”"
    if task == "next-word":
        return (
            f"A follow-up request: “{NEXT_WORD_TEXT}” with the state after “{NEXT_WORD_PREFIX}” "
            "(seqserve: its signed token; bare route: base64 of the raw float32 state), k=5"
        )
    return (
        f"{FORECAST_SERIES} M4 hourly series per request (336 values each), horizon 48, "
        "levels 80 and 95"
    )


def _commit(checkout: Path) -> str:
    """The short commit of a checkout, or its path when git cannot tell."""
    res = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return res.stdout.strip() or str(checkout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=list(TASKS), default="sentiment")
    ap.add_argument("--servers", help="comma-separated subset of: " + ", ".join(PEERS))
    ap.add_argument("--blocks", type=int, default=3, help="repetitions, each in rotated order")
    ap.add_argument("--seconds", type=float, default=15, help="wrk duration per cell")
    ap.add_argument("--quick", action="store_true", help="1 block of 3 s; writes no results")
    ap.add_argument("--no-inprocess", action="store_true", help="skip in-process onnxruntime")
    ap.add_argument(
        "--max-other-cpu",
        type=float,
        default=10,
        help="%% of a CPU other processes may use during a cell before it is measured again",
    )
    ap.add_argument("--retries", type=int, default=2, help="re-measurements of a disturbed cell")
    ap.add_argument(
        "--idle-timeout", type=float, default=300, help="most seconds to wait for an idle machine"
    )
    ap.add_argument(
        "--venv-dir",
        type=Path,
        default=Path.home() / ".cache" / "seqserve-peers",
        help="where each peer's virtual environment is made",
    )
    ap.add_argument("--out", type=Path, help=f"results folder (default {OUT}; none with --quick)")
    ap.add_argument(
        "--rewrite-md", action="store_true", help="only rewrite peers.md from peers.json"
    )
    ap.add_argument(
        "--before",
        type=Path,
        help="another checkout of seqserve (e.g. a git worktree of an older commit): its "
        "`seqserve serve` runs as server seqserve-before, in the same blocks (before/after)",
    )
    ap.add_argument("--inprocess-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.before is not None:
        before = args.before.resolve()
        if not (before / "app" / "cli.py").is_file():
            ap.error(f"--before {before}: not a seqserve checkout (no app/cli.py)")
        PEERS["seqserve-before"] = dataclasses.replace(
            PEERS["seqserve"],
            name="seqserve-before",
            label=f"seqserve before ({_commit(before)}), as shipped",
            checkout=before,
        )
        for names in TASK_SERVERS.values():
            names.insert(names.index("seqserve") + 1, "seqserve-before")
    if args.rewrite_md:
        folder = args.out or OUT
        saved = json.loads((folder / "peers.json").read_text())
        (folder / "peers.md").write_text(markdown(saved))
        return 0
    if args.inprocess_worker:
        print(json.dumps(TASKS[args.task]().inprocess(args.seconds)))
        return 0
    if args.quick:
        args.blocks, args.seconds = 1, 3.0
    out = args.out or (None if args.quick else OUT)
    servers = args.servers.split(",") if args.servers else TASK_SERVERS[args.task]
    unknown = [s for s in servers if s not in TASK_SERVERS[args.task]]
    if unknown:
        ap.error(f"--servers {','.join(unknown)}: not run for --task {args.task}")
    os.environ["PEERS_TASKS"] = args.task  # the bare route loads only this task's model
    pythons = {s: ensure_venv(PEERS[s].venv, args.venv_dir) for s in servers}
    task = TASKS[args.task]()
    workdir = Path(tempfile.mkdtemp(prefix="seqserve-peers-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{args.task}: {len(servers)} servers x {args.blocks} blocks x {args.seconds:g} s")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; server logs in {workdir}")
    cells: list[dict[str, Any]] = []
    inproc: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for block in range(args.blocks):
        order = servers[block % len(servers) :] + servers[: block % len(servers)]
        for name in order:
            if name in failed:
                continue
            try:
                for attempt in range(1 + args.retries):
                    wait_idle(args.max_other_cpu, args.idle_timeout)
                    cell = measure(PEERS[name], task, pythons[name], args.seconds, workdir)
                    other = max(cell["c1"]["other_cpu_pct"], cell["c64"]["other_cpu_pct"])
                    if other <= args.max_other_cpu or attempt == args.retries:
                        break
                    print(f"  {name}: other processes took {other:.0f}% of a CPU; measuring again")
            except AssertionError as exc:
                print(f"OUTPUT MISMATCH: {exc}", file=sys.stderr)
                return 1
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                failed[name] = str(exc)[-500:]
                print(f"{name} FAILED: {failed[name]}", file=sys.stderr)
                continue
            cell["block"], cell["attempts"] = block, attempt + 1
            cells.append(cell)
            c1, c64 = cell["c1"], cell["c64"]
            print(
                f"block {block + 1} {name:16s} c=1 p50 {c1['p50_ms']:6.2f} ms | c=64 "
                f"{c64['rps']:7.0f} req/s p50 {c64['p50_ms']:6.1f} p99 {c64['p99_ms']:6.1f} ms "
                f"| RSS {cell['rss_mb']:4.0f} MB | non-2xx {c1['non2xx'] + c64['non2xx']} "
                f"socket errors {c1['socket_errors'] + c64['socket_errors']} | other CPU "
                f"{max(c1['other_cpu_pct'], c64['other_cpu_pct']):.0f}%",
                flush=True,
            )
        if not args.no_inprocess:
            wait_idle(args.max_other_cpu, args.idle_timeout)
            inproc.append(inprocess(args.task, min(args.seconds, 5.0)))
    result: dict[str, Any] = {
        "task": args.task,
        "request": request_text(args.task),
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {
            "blocks": args.blocks,
            "seconds": args.seconds,
            "server_cpu": SERVER_CPU,
            "load_cpu": LOAD_CPU,
            "tolerance": TOLERANCE,
            "max_other_cpu_pct": args.max_other_cpu,
            "peer_packages": {k: PEER_PACKAGES[k] for k in servers if k in PEER_PACKAGES},
            "model_libs": MODEL_LIBS,
        },
        "cells": cells,
        "summary": summarize(cells, servers),
        "inprocess": inproc,
        "inprocess_summary": {
            case: {
                "p50_ms": spread([r[case]["p50_ms"] for r in inproc]),
                "per_s": spread([r[case]["per_s"] for r in inproc]),
            }
            for case in (inproc[0] if inproc else {})
        },
        "failed": failed,
        "caveats": caveats(cells, failed, args.max_other_cpu),
    }
    print()
    print(table(result))
    for c in result["caveats"]:
        print(f"- {c}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "peers.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved[args.task] = result
        path.write_text(json.dumps(saved, indent=1) + "\n")
        (out / "peers.md").write_text(markdown(saved))
        print(f"\nwrote {path} and {out / 'peers.md'}")
    errors = sum(s["non2xx"] + s["socket_errors"] for s in result["summary"].values())
    return 1 if failed or errors else 0


def caveats(cells: list[dict[str, Any]], failed: dict[str, str], max_other: float) -> list[str]:
    out = [f"{name} could not be run: {why}" for name, why in failed.items()]
    # seqserve-before measures another checkout on purpose: only the others must agree
    digests = sorted(
        {c["app_sha256"] for c in cells if "app_sha256" in c and c["server"] != "seqserve-before"}
    )
    if len(digests) > 1:
        out.append(
            "app/ changed during the run (source digests " + ", ".join(digests) + "): "
            "seqserve's blocks measured different code; see app_sha256 in each cell"
        )
    busy = [
        f"{c['server']} (block {c['block'] + 1}, c={n}: {c[f'c{n}']['other_cpu_pct']:.0f}%)"
        for c in cells
        for n in (1, 64)
        if c[f"c{n}"]["other_cpu_pct"] > max_other
    ]
    if busy:
        out.append(
            f"other processes used more than {max_other:g}% of a CPU during: "
            + ", ".join(busy)
            + " (CPU time outside the server's tree and wrk, from /proc/stat)"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
