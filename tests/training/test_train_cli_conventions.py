"""One command-line convention for every ``seqserve-train`` task, checked by walking the parsers."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from training.cli import build_parser

# The same thing has the same flag in every task; these old names must not come back.
RETIRED = {"--model-dir", "--export-dir", "--out-dir", "--output", "--train-file", "--valid-file"}
PUBLISHING = {"--models-dir", "--name", "--version", "--out", "--force"}


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from walk(f"{prefix} {name}".strip(), child)

    yield from walk("", build_parser())


COMMANDS = dict(_commands())


def test_every_task_has_commands() -> None:
    tasks = {name.split()[0] for name in COMMANDS}
    assert tasks == {"sentiment", "lm", "forecast", "anomaly"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_value_flag_shows_its_default(command: str) -> None:
    parser = COMMANDS[command]
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            continue
        text = parser.formatter_class(prog="x")._get_help_string(action)  # type: ignore[attr-defined]
        if "(default:" not in text and "(required)" not in text:
            missing.append(action.option_strings[0])
    assert not missing, f"seqserve-train {command}: no default shown for {missing}"
    help_text = parser.format_help()
    assert "%(default)" not in help_text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_flag_names_follow_the_convention(command: str) -> None:
    flags = {s for a in COMMANDS[command]._actions for s in a.option_strings}
    assert not flags & RETIRED, f"seqserve-train {command} still has {flags & RETIRED}"
    if command.split()[-1] in {"train", "export"}:
        assert PUBLISHING <= flags, f"seqserve-train {command} lacks {PUBLISHING - flags}"
    if command.split()[-1] == "train":
        assert {"--run-dir", "--dry-run", "--overwrite-run", "--no-export"} <= flags


def test_without_torch_the_command_says_how_to_install_it() -> None:
    # sys.modules["torch"] = None makes "import torch" fail as in the serving install.
    code = (
        "import sys; sys.modules['torch'] = None; from training.cli import main; "
        "sys.exit(main(['--help']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "seqserve-train needs PyTorch, which the serving install leaves out: "
        "pip install -e '.[train]'"
    ]


def test_library_warnings_stay_out_of_the_terminal_unless_verbose(tmp_path: Path) -> None:
    """The ONNX tracer warns on every recurrent export; users see it only with --verbose."""
    data = Path(__file__).resolve().parents[2] / "examples" / "data" / "shop_hourly.csv"
    argv = ["anomaly", "train", "--dry-run", "--data", str(data), "--no-nab"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "training.cli", *extra, *argv]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert "Published nab-gru:1 to" in quiet.stdout
    assert "Warning" not in quiet.stderr
    loud = run("--verbose")
    assert loud.returncode == 0 and "Warning" in loud.stderr


def test_a_mistyped_flag_names_the_command_and_the_nearest_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "train", "--epohcs", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: seqserve-train forecast train" in err
    assert "unrecognized arguments: --epohcs 2; --epohcs: did you mean --epochs?" in err
