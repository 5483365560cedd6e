"""``seqserve-train``: one command line for every task's train / evaluate / export.

    seqserve-train sentiment train --help
    seqserve-train lm train --help
    seqserve-train forecast train --help

Each task package contributes its sub-commands through ``register(subparsers)`` in its own
``cli.py``, so this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

TASKS = {
    "sentiment": "training.sentiment.cli",
    "lm": "training.lm.cli",
    "forecast": "training.forecast.cli",
    "anomaly": "training.anomaly.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for module_name in TASKS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # task not implemented yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
