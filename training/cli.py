"""``seqserve-train``: one command line for every task's train / evaluate / export.

    seqserve-train sentiment train --help
    seqserve-train lm train --help
    seqserve-train forecast train --help

Each task package contributes its sub-commands through ``register(subparsers)`` in its own
``cli.py``, so this file only wires them together. Every task follows the same flag
convention (``training.common.config_cli``) and publishes through the append-only model store
(``contract.store``): an existing version is never overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence

TASKS = {
    "sentiment": "training.sentiment.cli",
    "lm": "training.lm.cli",
    "forecast": "training.forecast.cli",
    "anomaly": "training.anomaly.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve-train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own warnings (ONNX tracer, quantizer); hidden by default",
    )
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


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Keep the tracer's and quantizer's warnings out of the user's terminal for this command
    (restored afterwards, so an in-process caller's logging is left as it was)."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxruntime", "onnxscript", "onnx")]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        root.addFilter(_not_from_libraries)  # the quantizer logs through the root logger
        try:
            yield
        finally:
            root.removeFilter(_not_from_libraries)
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _not_from_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not any(
        part in record.pathname for part in ("onnxruntime", "onnx", "torch")
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        print(
            "seqserve-train needs PyTorch, which the serving install leaves out: "
            "pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 2
    from contract.store import StoreError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_flags(parser, args, unknown)
    try:
        with _quiet(args.verbose):
            return int(args.func(args) or 0)
    except (StoreError, FileNotFoundError, ValueError) as exc:
        # Bad input (a taken version, a missing file, bad JSON, a value the data cannot take)
        # is one line; --verbose keeps the traceback for debugging.
        if args.verbose:
            raise
        print(f"seqserve-train: {_reason(exc)}", file=sys.stderr)
        return 2


def _unknown_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]
) -> None:
    """Report a mistyped flag in the sub-command's own usage, with the nearest real flags."""
    sub = parser
    for dest in ("task", "command"):
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or getattr(args, dest, None) not in actions[0].choices:
            break
        sub = actions[0].choices[getattr(args, dest)]
    known = [s for a in sub._actions for s in a.option_strings]
    hints = []
    for flag in (u.split("=")[0] for u in unknown if u.startswith("--")):
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.6)
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    sub.error(
        f"unrecognized arguments: {' '.join(unknown)}" + ("; " if hints else "") + "; ".join(hints)
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
