"""The README, run as a new user would: its two set-up commands, every `curl` example against a
real `seqserve serve`, and the cheap `seqserve` commands of its command-line section.

Blocks that train (`seqserve-train`, and the curls that query the models they make) are run by
the training tests (tests/training/test_own_data*.py, tests/training/test_store_guard_*.py); every other shell
command is listed in NOT_RUN with the reason, so a new kind of command needs a decision here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers import free_port, wait_ready

README = REPO / "README.md"
# What the README's commands are written against; the test swaps in its own port.
README_HOST = "localhost:8000"
# Commands shown but not run here, by how they start: why not, and what covers them instead.
NOT_RUN = {
    "seqserve serve --host": "a second server on a fixed port; the set-up command's `seqserve "
    "serve` is started below, and tests/deploy/test_load_balancer.py runs two workers behind nginx",
    "seqserve bench": "a load test of seconds to minutes; tests/app/test_cli.py runs a short one",
    "seqserve models default ": "pins a default, i.e. writes models/defaults.json; "
    "tests/contract/test_model_store.py runs it on a copy",
    "seqserve-train": "training: the task engineers' tests run the README's training commands",
    "cp .env.example": "writes .env for Docker Compose; tests/deploy/test_deploy.py checks the files",
    "docker compose": "needs a Docker engine; tests/deploy/test_deploy.py validates the compose file",
    "kubectl": "needs a cluster; tests/deploy/test_deploy.py validates the manifests",
}
# `seqserve` commands cheap enough to run as written (a second or two each, no server, no
# writes): their first words, and how many words at most (`models default` alone only reads).
CHEAP = {
    ("seqserve", "--version"): 2,
    ("seqserve", "models", "list"): 99,
    ("seqserve", "models", "show"): 99,
    ("seqserve", "models", "default"): 3,
    ("seqserve", "predict"): 99,
}


def is_cheap(cmd: Command) -> bool:
    words = cmd.words
    return any(tuple(words[: len(k)]) == k and len(words) <= n for k, n in CHEAP.items())


@dataclass
class Command:
    """One shell command of a README bash block (continuation lines joined)."""

    text: str
    block: int  # index of its bash block in the README
    output: str  # the example output shown in the comment under it ("" when none)

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text.replace("\\\n", " "), comments=True)

    @property
    def assigns(self) -> str | None:
        """``NAME`` for a ``NAME=$(...)`` command, whose value later commands use."""
        match = re.match(r"([A-Z_][A-Z0-9_]*)=\$\(", self.text)
        return match.group(1) if match else None


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def parse_block(body: str, block: int) -> list[Command]:
    """Commands in order; a command ends where its quotes close and no backslash continues it."""
    commands: list[Command] = []
    pending: list[str] = []
    for line in body.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            if commands and line.startswith("#"):
                _attach_output(commands[-1], line)
            continue
        pending.append(line)
        if line.endswith("\\"):
            continue
        joined = "\n".join(pending)  # as written: bash reads the backslash-newlines itself
        try:
            shlex.split(joined.replace("\\\n", " "), comments=True)
        except ValueError:  # an open quote: the command goes on (a JSON body over lines)
            continue
        commands.append(Command(joined, block, ""))
        pending = []
    assert not pending, f"unterminated command in bash block {block}: {pending}"
    return commands


def _attach_output(cmd: Command, line: str) -> None:
    """``# {...`` starts an example output; ``#  ...`` (two spaces) continues it."""
    if line.startswith(("# {", "# [")) and not cmd.output:
        cmd.output = line[2:]
    elif line.startswith("#  ") and cmd.output:
        cmd.output += line[2:].strip()
    elif cmd.output:
        cmd.output += "\n"  # prose after the output: nothing more belongs to it


def readme_commands() -> list[Command]:
    text = README.read_text()
    out: list[Command] = []
    for i, body in enumerate(bash_blocks(text)):
        out += parse_block(body, i)
    return out


def is_training_block(commands: list[Command], block: int) -> bool:
    """A block that trains or exports (its curls query the model it makes)."""
    return any(
        c.words[:1] == ["seqserve-train"] and c.words[1:2] != ["--help"]
        for c in commands
        if c.block == block
    )


def api_commands() -> list[Command]:
    """The commands of every block that has a curl and trains nothing, in README order."""
    commands = readme_commands()
    blocks = {c.block for c in commands if "curl " in c.text}
    return [c for c in commands if c.block in blocks and not is_training_block(commands, c.block)]


def keys_in(value: Any) -> set[str]:
    """Every object key at any depth of a JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(keys_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(v) for v in value))
    return set()


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without SEQSERVE_* (the README assumes none is set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **extra}


def setup_commands() -> list[Command]:
    """The bash block before the first section: the README's set-up commands."""
    text = README.read_text()
    head = text.split("\n## ", 1)[0]
    return parse_block(bash_blocks(head)[0], 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The first set-up command's serve part, as written, on a free port; its base URL."""
    serve = setup_commands()[0].text.split("&&", 1)[1].split("#", 1)[0].strip()
    assert serve == "seqserve serve"
    port = free_port()
    cwd = tmp_path_factory.mktemp("serve")  # no stray .env from the checkout
    log = (cwd / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*shlex.split(serve), "--port", str(port)],
        cwd=cwd,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, cwd / "serve.log")
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_readme_opens_with_two_setup_commands() -> None:
    first, second = (c.text for c in setup_commands())  # exactly two
    assert first.startswith("pip install ") and "&& seqserve serve" in first
    assert "-c constraints-serve.txt" in first and "'.[serve]'" in first
    assert second.split("#", 1)[0].strip().endswith("&& python -m pytest")


def test_ci_runs_the_second_setup_command_verbatim() -> None:
    second = setup_commands()[1].text.split("#", 1)[0].strip()
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert second in lines, f".ci/run must run the README's test command: {second}"


def test_setup_install_part_resolves_from_what_is_installed() -> None:
    """The serve install, as written, but `--dry-run --no-index`: it must resolve against the
    installed packages without downloading (so it is fast and offline here) — which also checks
    that this environment holds exactly the versions constraints-serve.txt pins. The real
    install, downloads included, is what .ci/run's second command does in a fresh clone."""
    install = shlex.split(setup_commands()[0].text.split("&&", 1)[0])
    assert install[:2] == ["pip", "install"]
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index"]
    argv += ["--no-build-isolation", *install[2:]]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    would = [line for line in done.stdout.splitlines() if line.startswith("Would install")]
    to_install = [pkg for line in would for pkg in line.split()[2:]]
    assert all(pkg.startswith("seqserve-") for pkg in to_install), to_install  # deps all there


def test_first_setup_command_serves_until_ready(server: str) -> None:
    with urllib.request.urlopen(f"http://{server}/readyz", timeout=5) as r:
        body = json.load(r)
    assert r.status == 200 and body["status"] == "ready" and not body["failed"]


def test_every_api_example_runs_as_written(server: str, tmp_path: Path) -> None:
    """Each curl (and the commands that prepare its input) through bash, on the real server;
    curl --fail-with-body turns a status >= 400 into a failure; the answer must be JSON that has
    every field the README's example output shows."""
    commands = api_commands()
    assert sum("curl " in c.text for c in commands) >= 8
    # every curl fails on a non-2xx status; pipelines fail as a whole
    preamble = 'set -eo pipefail\ncurl() { command curl --fail-with-body --show-error "$@"; }\n'
    env = clean_env()
    for cmd in commands:
        script = cmd.text.replace(README_HOST, server)
        if cmd.assigns:
            script += f'\nprintf %s "${cmd.assigns}"'
        done = subprocess.run(
            ["bash", "-c", preamble + script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{cmd.text}\n{done.stdout}\n{done.stderr}"
        if cmd.assigns:
            assert done.stdout, cmd.text
            env[cmd.assigns] = done.stdout
            continue
        if "curl " not in cmd.text:
            continue
        answer = json.loads(done.stdout)
        shown = set(re.findall(r'"([^"\s]+)":', cmd.output))
        assert cmd.output, f"the README shows no output for: {cmd.text}"
        missing = shown - keys_in(answer)
        assert not missing, f"{cmd.text}\nfields in the README but not in the answer: {missing}"


def classify(cmd: Command, training: bool) -> str:
    """'run' for what these tests run, else the NOT_RUN reason."""
    text = cmd.text
    if training:
        return NOT_RUN["seqserve-train"]
    if "curl " in text or is_cheap(cmd) or cmd.block == 0:
        return "run"
    if text.startswith("python -c") and "> " in text:  # writes a curl's input file
        return "run"
    for prefix, why in NOT_RUN.items():
        if text.startswith(prefix):
            return why
    raise AssertionError(f"README command neither run nor listed in NOT_RUN: {text}")


def test_every_readme_command_is_run_or_listed() -> None:
    commands = readme_commands()
    listing = {c.text: classify(c, is_training_block(commands, c.block)) for c in commands}
    not_run = {t: why for t, why in listing.items() if why != "run"}
    assert any(t.startswith("docker compose") for t in not_run)  # the listing is real
    assert sum(why == "run" for why in listing.values()) >= 15


def cheap_commands() -> list[Command]:
    commands = readme_commands()
    return [c for c in commands if is_cheap(c) and not is_training_block(commands, c.block)]


@pytest.mark.parametrize("cmd", cheap_commands(), ids=lambda c: " ".join(c.words[:3]))
def test_cheap_seqserve_command_runs_as_written(cmd: Command, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPO / "examples")  # paths as written, no stray .env
    done = subprocess.run(
        ["bash", "-c", cmd.text],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr
