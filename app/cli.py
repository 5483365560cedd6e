"""``seqserve``: serve, inspect models, predict from the terminal, benchmark.

    seqserve serve --host 0.0.0.0 --port 8000 --workers 2
    seqserve models list                      # seqserve models show sst2-imdb-bilstm
    seqserve predict sentiment "a gorgeous, witty film" "dull"
    seqserve predict next-word "Happy birthday , my" --k 3
    seqserve predict forecast --csv examples/data/shop_hourly.csv --time-col timestamp
    seqserve predict anomaly --csv machine.csv --time-col timestamp --only-anomalies
    seqserve bench --endpoint sentiment --concurrency 8
    seqserve --version

Training has its own command, ``seqserve-train`` (it needs the ``train`` extra).
Settings (models folder, limits, keys) come from ``SEQSERVE_*`` variables for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import __version__

if TYPE_CHECKING:
    from app.tasks import TaskSpec


def _settings(args: argparse.Namespace) -> Any:
    """The SEQSERVE_* settings (``--models-dir`` wins); a bad one raises ``SettingsInvalid``,
    which ``main`` prints as one line (a SeqServeError) with exit code 2."""
    from app.settings import get_settings, load_settings

    if getattr(args, "models_dir", None):
        return load_settings(models_dir=args.models_dir)
    return get_settings()


def _tasks() -> dict[str, TaskSpec]:
    """The registered tasks: their predict entries and bench endpoints make the sub-commands."""
    from app.tasks import tasks

    return tasks()


def _add_models_dir(p: argparse.ArgumentParser, nested: bool = False) -> None:
    # nested: a sub-command of a command that has the flag too; SUPPRESS keeps the outer
    # value when the inner one is not given ("models --models-dir X list")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=argparse.SUPPRESS if nested else None,
        help="models folder (default: $SEQSERVE_MODELS_DIR, else this installation's "
        "models/ folder)",
    )


# Commands whose arguments come from the task registry (importing it loads FastAPI and the
# services, ~0.6 s): other commands, --version and --help build the parser without it.
TASK_COMMANDS = ("predict", "bench")


def _needs_tasks(argv: Sequence[str] | None) -> bool:
    if argv is None:
        return True
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in TASK_COMMANDS


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, the task registry is imported only when the
    command needs it."""
    parser = argparse.ArgumentParser(
        prog="seqserve",
        description="Serve recurrent models with onnxruntime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'seqserve COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="start the HTTP server (settings from SEQSERVE_* variables)")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind, 0.0.0.0 in containers (default: %(default)s)",
    )
    s.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    s.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="server processes; one per CPU core is the production setting "
        "(default: $WEB_CONCURRENCY or 1)",
    )
    s.add_argument("--log-level", default="info", help="uvicorn log level (default: %(default)s)")
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("models", help="list the models found, or show one model's card")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    ml = msub.add_parser("list", help="every model version found, with its headline metrics")
    ml.add_argument("--json", action="store_true", help="JSON instead of a table")
    _add_models_dir(ml, nested=True)
    ms = msub.add_parser("show", help="one model's card (JSON)")
    ms.add_argument("name", help='"name" or "name:version"')
    _add_models_dir(ms, nested=True)
    md = msub.add_parser(
        "default",
        help="show the default model of every task, or pin TASK to NAME[:VERSION]",
        description="Requests that name no model are answered by their task's default, pinned "
        "in <models_dir>/defaults.json. A newly published model never becomes a default by "
        "itself: pin it here, then reload running servers (POST /admin/reload or SIGHUP).",
    )
    md.add_argument("task", nargs="?", help="a task, as `seqserve models list` names them")
    md.add_argument("ref", nargs="?", help="NAME or NAME:VERSION (NAME alone: its newest version)")
    _add_models_dir(md, nested=True)
    _add_models_dir(m)
    m.set_defaults(func=cmd_models, json=True, models_command=None)

    p = sub.add_parser("predict", help="one-off predictions in this process (no server)")
    b = sub.add_parser("bench", help="load-test one endpoint and print latency and throughput")
    if _needs_tasks(argv):
        _add_task_commands(p, b)
    return parser


def _add_task_commands(p: argparse.ArgumentParser, b: argparse.ArgumentParser) -> None:
    """``predict`` and ``bench``: one predict sub-command and bench endpoints per task."""
    psub = p.add_subparsers(dest="task", required=True, metavar="TASK")
    specs = _tasks()
    for name, spec in specs.items():
        if spec.predict is None:
            continue
        q = psub.add_parser(name, help=spec.predict.help)
        spec.predict.add_arguments(q)
        q.add_argument("--model", help='"name" or "name:version" (default: the task default)')
        _add_models_dir(q)
        q.set_defaults(predict_run=spec.predict.run)
    p.set_defaults(func=cmd_predict)

    endpoints = [e for spec in specs.values() for e in spec.bench]  # the first is the default
    b.add_argument("--url", help="a running server (default: start one for the run)")
    b.add_argument(
        "--endpoint",
        nargs="+",
        default=endpoints[:1],
        choices=endpoints,
        help="endpoints to measure, one after the other",
    )
    b.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8],
        help="concurrent clients (several values: one run each)",
    )
    b.add_argument("--requests", type=int, default=2000, help="requests per run")
    b.add_argument("--workers", type=int, default=1, help="server processes when starting one")
    b.add_argument("--json", action="store_true", help="JSON instead of a table")
    b.add_argument(
        "--full",
        action="store_true",
        help="run the full benchmark (benchmarks/run.py: wrk, baselines, plots)",
    )
    b.set_defaults(func=cmd_bench)


def _version_line() -> str:
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover - the serve extra is missing
        ort = "not installed"
    return f"seqserve {__version__} (onnxruntime {ort}, Python {sys.version.split()[0]})"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    from app.errors import SeqServeError

    try:
        return int(args.func(args) or 0)
    except SeqServeError as exc:
        print(f"seqserve: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `seqserve models show X | head`
        sys.stderr.close()
        return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """One worker: uvicorn serves in this process (SIGHUP reloads). Several: ``app.supervisor``
    runs them, forwards SIGHUP to every worker as a reload. Either way a failed start-up is one
    line, ``seqserve: ... failed to start: <reason>``, and exit code 3."""
    from app.protocol import uvicorn_kwargs
    from app.settings import MIN_SECRET_BYTES, get_settings, short_previous_secrets

    # Checked here, in the parent, before any worker starts: a bad setting is one line and
    # exit 2 (from main), not a traceback per worker.
    settings = get_settings()
    if settings.state_secret is None and args.workers > 1:
        share_state_secret()
    short = short_previous_secrets(settings)
    if short:
        print(
            f"seqserve: warning: {short} of SEQSERVE_STATE_PREVIOUS_SECRETS "
            f"{'is' if short == 1 else 'are'} shorter than {MIN_SECRET_BYTES} bytes; accepted "
            "because previous secrets only verify old tokens, never sign new ones. Remove "
            f"{'it' if short == 1 else 'them'} once those tokens are no longer needed.",
            file=sys.stderr,
        )
    setup_metrics_dir(args.workers)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "log_level": args.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
        **uvicorn_kwargs(settings),  # how requests are read (app.protocol): it has the last word
    }
    if args.workers > 1:
        from app.supervisor import serve_workers

        return serve_workers("app.main:app", options)
    from app.supervisor import serve_one

    return serve_one("app.main:app", options)


def share_state_secret() -> None:
    """Several workers and no SEQSERVE_STATE_SECRET: one random key for all of them (each would
    make its own, and a token signed by one worker would be refused by the others)."""
    from app.settings import STATE_SECRET_ENV

    os.environ[STATE_SECRET_ENV] = os.urandom(32).hex()  # inherited by the worker processes
    print(
        f"seqserve: warning: {STATE_SECRET_ENV} is not set; the workers share a random key made "
        "now, so next-word state tokens stop working after a restart and are refused by other "
        f"replicas. Set {STATE_SECRET_ENV} (openssl rand -hex 32) to keep them.",
        file=sys.stderr,
    )


def cmd_models(args: argparse.Namespace) -> int:
    from app.registry import Registry, version_key

    st = _settings(args)
    reg = Registry(st.models_dir, st.providers, st.intra_op_threads, st.default_models)
    if args.models_command == "default":
        return _cmd_models_default(args, reg)
    found, failed = reg.scan()
    if args.models_command == "show":
        base, _, version = args.name.partition(":")
        hits = [r for r in found if r.name == base and (not version or r.version == version)]
        if not hits:
            names = ", ".join(sorted({r.ref for r in found}))
            print(f"seqserve: no model {args.name!r}; found: {names}", file=sys.stderr)
            return 2
        rec = max(hits, key=lambda r: version_key(r.version))
        print(json.dumps({"task": rec.task, "path": str(rec.path), "card": rec.card}, indent=1))
        return 0
    defaults = _default_refs(reg, found)
    rows = [
        {
            "task": r.task,
            "name": r.name,
            "version": r.version,
            "default": defaults.get(r.task) == r.ref,
            "metrics": r.spec.metrics,
        }
        for r in found
    ]
    if args.json:
        print(json.dumps(rows if not failed else {"models": rows, "failed": failed}, indent=1))
        return 0
    print(f"{'task':<10} {'model':<28} {'MB':>6}  headline")
    for r in found:
        size = sum(f.stat().st_size for f in r.path.iterdir() if f.is_file()) / 1e6
        mark = "*" if defaults.get(r.task) == r.ref else " "
        print(f"{r.task:<10} {mark}{r.ref:<27} {size:6.1f}  {_headline(r.card)}")
    print("* = the task's default (seqserve models default TASK NAME:VERSION to change it)")
    for where, reason in failed.items():
        print(f"not servable: {where}: {reason}")
    return 0


def _default_refs(reg: Any, found: list[Any]) -> dict[str, str]:
    """task -> the ref a request naming no model gets, from the records found (no sessions)."""
    from app.errors import ModelLoadError, ModelNotFound

    try:
        reg.read_folder_defaults()
    except ModelLoadError as exc:
        print(f"seqserve: {exc.message}", file=sys.stderr)
    reg.replace({(r.task, r.name, r.version): r for r in found})
    out = {}
    for task in sorted(reg.tasks()):
        try:
            out[task] = reg.get(task).ref
        except ModelNotFound:
            continue
    return out


def _cmd_models_default(args: argparse.Namespace, reg: Any) -> int:
    from contract import store

    if args.task is None:
        found, _ = reg.scan()
        for task, ref in _default_refs(reg, found).items():
            print(f"{task:<10} {ref:<28} ({reg.default_source(task)})")
        return 0
    if args.ref is None:
        print("seqserve: give NAME or NAME:VERSION after the task", file=sys.stderr)
        return 2
    try:
        ref, previous = store.set_default(reg.models_dir, args.task, args.ref)
    except store.StoreError as exc:
        print(f"seqserve: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.task}: default is now {ref}" + (f" (was {previous})" if previous else "") + ". "
        "Running servers switch on reload: POST /admin/reload or SIGHUP."
    )
    if args.task in reg.configured_defaults:
        print(
            f"note: SEQSERVE_DEFAULT_MODELS sets {args.task} to "
            f"{reg.configured_defaults[args.task]}, which wins over defaults.json"
        )
    return 0


_PREFERRED = ("accuracy", "perplexity", "mase", "smape", "nab", "coverage")
_SKIPPED = ("naive", "members", "fp32", "int8", "examples", "raw_")


def _headline(card: dict[str, Any]) -> str:
    """Up to three headline numbers from the card's metrics (accuracy, perplexity, MASE...)."""
    leaves: list[tuple[str, float]] = []
    for key, value in card.get("metrics", {}).items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for k2, v2 in items:
            name = f"{key}.{k2}" if k2 else key
            if isinstance(v2, int | float) and not isinstance(v2, bool):
                leaves.append((name, float(v2)))
    chosen = [
        (n, v)
        for n, v in leaves
        if any(p in n for p in _PREFERRED) and not any(s in n for s in _SKIPPED)
    ]
    return ", ".join(f"{n}={v:.4g}" for n, v in chosen[:3])


def cmd_predict(args: argparse.Namespace) -> int:
    st = _settings(args)
    if st.state_secret is None:  # one process, no tokens handed out: no restart to survive
        from pydantic import SecretStr

        st = st.model_copy(update={"state_secret": SecretStr(os.urandom(16).hex())})
    return int(args.predict_run(args, st))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.full:
        script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
        if not script.is_file():
            print("seqserve: --full needs the source tree (benchmarks/run.py)", file=sys.stderr)
            return 2
        return subprocess.call([sys.executable, str(script)])
    from contextlib import nullcontext

    from app import bench

    if not args.url:
        _settings(args)  # a bad SEQSERVE_* setting is one line here, not the server's traceback
    results = []
    with nullcontext(args.url) if args.url else bench.local_server(args.workers) as url:
        for endpoint in args.endpoint:
            for c in args.concurrency:
                results.append(bench.bench(url, endpoint, c, args.requests).summary())
    print(json.dumps(results, indent=1) if args.json else bench.table(results))
    return 0


def setup_metrics_dir(workers: int) -> str | None:
    """Give several workers a shared, freshly emptied Prometheus multiprocess directory."""
    from app import metrics

    path = metrics.multiprocess_dir()
    if not path and workers > 1:
        path = tempfile.mkdtemp(prefix="seqserve-metrics-")
    if path:
        metrics.prepare_multiprocess_dir(path)
        os.environ[metrics.MULTIPROC_ENV] = path  # inherited by the worker processes
    return path


if __name__ == "__main__":
    sys.exit(main())
