"""The ``seqserve`` console script."""

from __future__ import annotations

import json

import pytest

from app.cli import main


def test_models_lists_the_shipped_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["task"] for m in listed} >= {"sentiment", "forecast"}


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        main(["launch"])
