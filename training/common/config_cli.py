"""Command-line flags generated from a task's configuration dataclass, and the flags every
training command shares (where the model is published, where the run is kept).

One convention for every task:

- each configuration field is a flag (``batch_size`` -> ``--batch-size``) whose help comes from
  the field's ``metadata["help"]`` and always shows the default (the dataclass is the only place
  a default is written);
- ``--run-dir`` keeps checkpoints and logs (default ``runs/<task>/<name>``);
- ``--models-dir``, ``--name``, ``--version`` and ``--out`` say where the model is published:
  ``--out`` is an explicit ``<models_dir>/<task>/<name>/<version>`` folder; without it the
  model goes to the next free version of ``--name`` under ``--models-dir``;
- ``--dry-run`` trains tiny settings and publishes under the run folder, never the models
  folder; ``--force`` moves an existing version aside instead of refusing;
- every path is resolved from the current folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, Literal, TypeVar

from contract import store

C = TypeVar("C")


class UsageError(ValueError):
    """Bad input a command reports as one line (``seqserve-train`` exits 2), not a traceback."""


def option(default: Any, help: str, **extra: Any) -> Any:
    """A configuration field with its help text (``choices=[...]`` and ``flag="--x"`` allowed)."""
    if isinstance(default, list):
        value = list(default)
        meta = {"help": help, **extra}
        return dataclasses.field(default_factory=lambda: list(value), metadata=meta)
    return dataclasses.field(default=default, metadata={"help": help, **extra})


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every value flag's default (``not set`` for None) and keeps descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "(default:" in text
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        if action.nargs == 0:  # on/off switches: their default is "off"
            return text
        if action.required:
            return f"{text} (required)"
        if action.default is None:
            return f"{text} (default: not set)"
        if isinstance(action.default, list | tuple):
            shown = " ".join(map(str, action.default)) or "none"
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


def _flag(f: Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type[Any], *, exclude: tuple[str, ...] = ()
) -> None:
    """One flag per field of the dataclass ``cls`` (fields without ``help`` metadata are
    internal and get no flag)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or "help" not in f.metadata:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        tp = _unwrap_optional(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": f.metadata["help"]}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            parser.add_argument(_flag(f), action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(tp) is Literal:
            kw["choices"] = list(typing.get_args(tp))
            tp = type(kw["choices"][0])
        if typing.get_origin(tp) in (list, tuple):
            kw["nargs"] = "*"
            tp = typing.get_args(tp)[0]
        kw["type"] = Path if tp is Path else tp if tp in (int, float, str) else str
        parser.add_argument(_flag(f), **kw)


def read_json_file(path: str | Path | None, flag: str, *, expect: type | None = None) -> Any:
    """A JSON file a flag names, read before any work so a bad file fails at once (None when
    the flag is not given); a missing or malformed file is a one-line UsageError."""
    if not path:
        return None
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag} {path}: {exc}") from None
    if expect is not None and not isinstance(value, expect):
        raise UsageError(f"{flag} {path}: expected a JSON {expect.__name__}")
    return value


def unset_flags(parser: argparse.ArgumentParser, dests: tuple[str, ...], when_unset: str) -> None:
    """Make the flags writing ``dests`` unset by default, their value then coming from
    elsewhere (the data file, the run, the checkpoint, the card), and say so in their help."""
    parser.set_defaults(**dict.fromkeys(dests))
    for action in parser._actions:
        if action.dest in dests:
            said = (action.help or "").split("; not set:")[0]
            action.help = f"{said}; not set: {when_unset}"


def config_from_args(cls: type[C], args: Any, **overrides: Any) -> C:
    """The dataclass ``cls`` filled from the same-named values of ``args`` (parsed flags or
    another configuration), then ``overrides``; fields without a value keep their default."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)


# --- where the model goes --------------------------------------------------------------------


def add_publish_flags(
    parser: argparse.ArgumentParser, *, name: str | None, name_help: str = "published model name"
) -> None:
    """``--models-dir --name --version --out --force``, the same in every task (``name=None``:
    the caller derives the name, and ``name_help`` says how, as ``(default: ...)``)."""
    g = parser.add_argument_group("publishing")
    g.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models folder (default: $SEQSERVE_MODELS_DIR, else models in the current folder)",
    )
    g.add_argument("--name", default=name, help=name_help)
    g.add_argument(
        "--version",
        default=None,
        help="published version (default: the next free version of --name)",
    )
    g.add_argument(
        "--out",
        type=Path,
        default=None,
        help="explicit model folder <models_dir>/<task>/<name>/<version> (instead of "
        "--models-dir/--name/--version)",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="publish onto an existing version by moving the old folder aside (kept, never "
        "deleted)",
    )


def add_run_flags(parser: argparse.ArgumentParser, *, dry_run: bool = True) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="checkpoints and logs (default: runs/<task>/<name>, or runs/<task>/<name>-dry-run)",
    )
    if dry_run:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="tiny settings to smoke-test in seconds; the model is published under the run "
            "folder, never under --models-dir",
        )
        add_overwrite_run_flag(parser)


def add_overwrite_run_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite-run",
        action="store_true",
        help="let training replace the checkpoints of an earlier run in --run-dir (without it, "
        "a --run-dir that holds files is refused and the default run folder gets a new "
        "number: runs/<task>/<name>-2, ...)",
    )


def run_dir(args: argparse.Namespace, task: str) -> Path:
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    suffix = "-dry-run" if getattr(args, "dry_run", False) else ""
    return Path("runs") / task / f"{args.name}{suffix}"


def models_dir(args: argparse.Namespace) -> Path:
    """``--models-dir``, else ``$SEQSERVE_MODELS_DIR`` (the folder the server reads), else
    ``models`` in the current folder."""
    return Path(
        getattr(args, "models_dir", None) or os.environ.get("SEQSERVE_MODELS_DIR") or "models"
    )


def _inside_models(folder: Path, models_dir: Path) -> bool:
    """True when ``folder`` is (in) a models folder or a published model folder."""
    folder = folder.absolute()
    if folder.is_relative_to(models_dir.absolute()):
        return True
    return any((p / "card.json").is_file() for p in (folder, *folder.parents))


def claim_run_dir(args: argparse.Namespace, task: str) -> Path:
    """The run folder a training command may write its checkpoints to, decided before it starts.

    Never a models folder or a published model. A folder that already holds an earlier run is
    refused when given with ``--run-dir`` (unless ``--overwrite-run``); the default folder moves
    on to the next free number instead. A dry run's default folder is scratch and is reused.
    Sets ``args.run_dir``, so :func:`run_dir` and :func:`publish_target` agree with it.
    """
    explicit = getattr(args, "run_dir", None) is not None
    folder = run_dir(args, task)
    if _inside_models(folder, models_dir(args)):
        raise store.StoreError(
            f"--run-dir {folder} is inside a models folder or a published model: checkpoints "
            "and logs go elsewhere (the default is runs/<task>/<name>)"
        )
    busy = folder.is_dir() and any(folder.iterdir())
    if busy and not getattr(args, "overwrite_run", False):
        if explicit:
            raise store.StoreError(
                f"--run-dir {folder} already holds a run: its checkpoints would be replaced. "
                "Choose another --run-dir, or pass --overwrite-run"
            )
        if not getattr(args, "dry_run", False):
            base, n = folder, 2
            while folder.is_dir() and any(folder.iterdir()):
                folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    args.run_dir = folder
    return folder


def prepare_training(args: argparse.Namespace, task: str) -> Path | None:
    """What a ``train`` command checks before training: its run folder (:func:`claim_run_dir`)
    and, unless ``--no-export``, where the model will be published (:func:`publish_target`)."""
    claim_run_dir(args, task)
    return None if getattr(args, "no_export", False) else publish_target(args, task)


def keep_dry_runs_out_of_models(args: argparse.Namespace, from_dry_run: bool, run: Path) -> None:
    """Exporting a dry run's checkpoint publishes under its run folder, as the dry run did,
    unless a models folder is named explicitly (``--out`` or ``--models-dir``): a smoke-test
    model never lands in ``models/`` by default."""
    if not from_dry_run or getattr(args, "dry_run", False):
        return
    if args.out is None and getattr(args, "models_dir", None) is None:
        print(
            f"{run} holds a dry run: publishing under {run}/models (--out or --models-dir "
            "publishes it elsewhere)"
        )
        args.dry_run, args.run_dir = True, run


def publish(args: argparse.Namespace, task: str, dest: Path) -> Any:
    """``contract.store.publishing`` for ``dest``: with ``--force`` if given, and renumbered
    when the version was not asked for and another publish takes it first."""
    asked = getattr(args, "version", None) is not None or getattr(args, "out", None) is not None
    return store.publishing(dest, task, force=getattr(args, "force", False), renumber=not asked)


def publish_target(args: argparse.Namespace, task: str) -> Path:
    """The folder this command will publish to, checked before any work is done.

    Raises :class:`contract.store.StoreError` (a one-line reason) when the destination is
    taken (without ``--force``) or the flags disagree.
    """
    store.check_name(args.name)
    if getattr(args, "dry_run", False):
        if args.out is not None or getattr(args, "models_dir", None) is not None:
            raise store.StoreError(
                "--dry-run publishes under the run folder (--run-dir), never into a models "
                "folder: leave out --out and --models-dir"
            )
        dest = store.destination(run_dir(args, task) / "models", task, args.name, args.version)
    elif args.out is not None:
        dest = Path(args.out)
        if args.version is not None and args.version != dest.name:
            raise store.StoreError(f"--version {args.version} disagrees with --out {dest}")
    else:
        dest = store.destination(models_dir(args), task, args.name, args.version)
    store.check_destination(dest, task)
    store.refuse_existing(dest, getattr(args, "force", False))
    return dest
