"""``seqserve``: run the service, or list the models it would load.

seqserve serve --host 0.0.0.0 --port 8000 --workers 2
seqserve models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seqserve", description="Serve recurrent models with onnxruntime."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="start the HTTP server (settings come from SEQSERVE_* variables)"
    )
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 in containers)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="server processes; one per CPU core is the production setting "
        "(default: $WEB_CONCURRENCY or 1)",
    )
    s.add_argument("--log-level", default="info", help="uvicorn log level")
    sub.add_parser("models", help="print the models found under SEQSERVE_MODELS_DIR and exit")
    args = parser.parse_args(argv)

    if args.command == "models":
        from app.registry import Registry
        from app.settings import get_settings

        st = get_settings()
        reg = Registry(st.models_dir, st.providers, st.intra_op_threads)
        print(
            json.dumps(
                [
                    {
                        "task": r.task,
                        "name": r.name,
                        "version": r.version,
                        "metrics": r.card.get("metrics", {}),
                    }
                    for r in reg.discover()
                ],
                indent=1,
            )
        )
        return 0

    import uvicorn

    from app.settings import get_settings

    setup_metrics_dir(args.workers)
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(get_settings().shutdown_grace_seconds),
    )
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
