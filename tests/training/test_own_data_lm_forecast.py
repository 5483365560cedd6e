"""'Train on your own data' for the language model and the forecaster: the README's commands,
run as written on the shipped example files, then the new model is queried through the API.
Plus: cards name the data really used (never WikiText-2 / M4 for a user's file) and every
train/export command ends with the lines that serve and query the new model."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import REPO
from tests.training.test_own_data import _relocate
from training.cli import main as train_main

SOURCES = (REPO / "README.md",)  # the sections the user reads are the ones tested
EXAMPLES = REPO / "examples/data"


def section_commands(name: str) -> list[list[str]]:
    """The shell commands between ``<!-- own-data:NAME:begin/end -->`` in the first source
    that has them, joined across line continuations; comments and a trailing ``&`` dropped."""
    begin, end = f"<!-- own-data:{name}:begin -->", f"<!-- own-data:{name}:end -->"
    for source in SOURCES:
        text = source.read_text() if source.exists() else ""
        if begin in text:
            block = text.split(begin, 1)[1].split(end)[0]
            body = re.search(r"```bash\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]
            commands = [
                shlex.split(c, comments=True) for c in body.replace("\\\n", " ").split("\n")
            ]
            return [[a for a in c if a != "&"] for c in commands if c]
    raise AssertionError(f"no own-data:{name} section in {[str(s) for s in SOURCES]}")


def _run_section(
    name: str, tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Run the section's training/export commands and ``seqserve models`` (the server itself is
    the TestClient the caller opens); returns each command's output and the curl requests."""
    from app.cli import main as seqserve_main
    from app.settings import get_settings

    outputs: list[str] = []
    requests: list[tuple[str, dict[str, Any]]] = []
    for cmd in section_commands(name):
        if cmd[0] == "seqserve-train":
            assert train_main(_relocate(cmd[1:])) == 0, cmd  # cwd is tmp: runs/, models/
            outputs.append(capsys.readouterr().out)
        elif cmd[:2] == ["seqserve", "models"]:
            monkeypatch.setenv("SEQSERVE_MODELS_DIR", str(tmp / "models"))
            get_settings.cache_clear()
            try:
                assert seqserve_main(["models"]) == 0
            finally:
                get_settings.cache_clear()
            listed = json.loads(capsys.readouterr().out)
            outputs.append(json.dumps(listed))
        elif cmd[:2] == ["seqserve", "serve"]:
            continue  # the TestClient below is the server
        elif cmd[0] == "curl":
            requests.append(_curl_request(cmd))
        else:
            raise AssertionError(f"unexpected command in the {name} section: {cmd}")
    return outputs, requests


def _curl_request(cmd: list[str]) -> tuple[str, dict[str, Any]]:
    url = next(a for a in cmd if a.startswith("localhost:"))
    return url.split("localhost:8000", 1)[1], json.loads(cmd[cmd.index("-d") + 1])


def _printed_curls(out: str) -> list[tuple[str, dict[str, Any]]]:
    """The curl lines a command printed, parsed as the shell would."""
    return [_curl_request(shlex.split(line)) for line in out.splitlines() if "curl -s" in line]


def _assert_try_it(out: str, models: Path, ref: str, endpoint: str) -> None:
    assert f"Exported {ref}" in out and "Try it:" in out
    root = shlex.quote(str(models.resolve()))
    assert f"SEQSERVE_MODELS_DIR={root} seqserve models" in out
    assert f"SEQSERVE_MODELS_DIR={root} seqserve serve" in out
    assert f"curl -s localhost:8000{endpoint} " in out and f'"model": "{ref}"' in out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def client_for() -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(models: Path) -> TestClient:
        c = TestClient(create_app(Settings(models_dir=models)))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# ------------------------------------------------------------------ language model


@pytest.mark.slow
def test_readme_language_model_commands(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client_for: Any,
) -> None:
    # the section's paths are relative to the current folder (runs/, models/): run it in tmp
    monkeypatch.chdir(tmp_path)
    outputs, requests = _run_section("lm", tmp_path, capsys, monkeypatch)
    export_out, listed = outputs  # lm train publishes the model it trained
    assert "text format: plain (detected" in export_out
    models = tmp_path / "models"
    _assert_try_it(export_out, models, "lighthouse:1", "/next-word")
    assert "Published lighthouse:1 to " in export_out
    assert "curl -s localhost:8000/next-word/score " in export_out
    assert [(m["task"], m["name"]) for m in json.loads(listed)] == [("next-word", "lighthouse")]

    card = json.loads((models / "next-word/lighthouse/1/card.json").read_text())
    train, valid = card["datasets"]  # card schema 2: a list, each file with its role
    assert (train["role"], valid["role"]) == ("train", "valid")
    assert train["file"] == "lighthouse_train.txt" and valid["file"] == "lighthouse_valid.txt"
    assert train["sha256"] == _sha256(EXAMPLES / "lighthouse_train.txt")
    assert valid["sha256"] == _sha256(EXAMPLES / "lighthouse_valid.txt")
    assert train["lines"] == train["lines_used"] == 22 and train["tokens"] > 1000
    assert train["text_format"] == "plain" and card["training"]["text_format"] == "plain"
    assert "url" not in train and "dataset" not in train
    description = card["description"]
    assert "trained on lighthouse_train.txt (22 lines, " in description
    assert "plain text" in description and "on lighthouse_valid.txt (3 lines" in description
    assert "WikiText" not in description + json.dumps(card["datasets"])
    assert card["vocab_size"] == 258  # the number the README section states
    assert card["tokenizer"]["round_trip"]["train"]["mismatched_lines"] == 0

    client = client_for(models)
    (nw_path, nw_body), (score_path, score_body) = requests
    r = client.post(nw_path, json=nw_body)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["word"] == "keeper"  # what the README section promises
    assert "<unk>" not in r.json()["tokens"]
    scored = client.post(score_path, json=score_body)
    assert scored.status_code == 200, scored.text
    backwards = " ".join(reversed(score_body["text"].split()))
    reversed_score = client.post(score_path, json={**score_body, "text": backwards})
    assert scored.json()["perplexity"] < reversed_score.json()["perplexity"] / 10
    # the lines the export printed work as printed
    for path, body in _printed_curls(export_out):
        assert client.post(path, json=body).status_code == 200, (path, body)


def test_text_format_detection_and_plain_tokens(tmp_path: Path) -> None:
    from training.lm.data import detect_text_format, read_tokens
    from training.lm.tokenizer import build_tokenizer, pretokenize

    wikitext = tmp_path / "wiki.txt"
    wikitext.write_text(" The well @-@ known band played for 1 @,@ 000 people . \n" * 5)
    assert detect_text_format(wikitext) == "wikitext"
    assert detect_text_format(EXAMPLES / "lighthouse_train.txt") == "plain"
    line = "The keeper didn't sleep; the well-known lamp burned all night."
    assert pretokenize(line) == (
        "The keeper didn 't sleep ; the well @-@ known lamp burned all night .".split()
    )
    plain = tmp_path / "plain.txt"
    plain.write_text(line + "\n")
    tokens = read_tokens(plain, text_format="plain")
    assert tokens == pretokenize(line) + ["<eos>"]
    # serving cuts typed text exactly as training did
    tok = build_tokenizer(sorted(set(tokens)), protect=False)
    assert tok.encode(line).tokens == pretokenize(line)


def test_lm_card_never_claims_wikitext_for_other_files(tmp_path: Path) -> None:
    from training.lm.card_sections import text_record

    path = tmp_path / "train.txt"  # named like WikiText-2's file, but other bytes
    path.write_text(" = Not WikiText = \n a few words . \n")
    rec = text_record(path, "wikitext")
    assert "dataset" not in rec and "url" not in rec and rec["lines"] == 2


# ------------------------------------------------------------------ forecaster


@pytest.mark.slow
def test_readme_forecast_commands(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client_for: Any,
) -> None:
    monkeypatch.chdir(tmp_path)  # the section publishes under ./models (the next free version)
    outputs, requests = _run_section("forecast", tmp_path, capsys, monkeypatch)
    train_out, listed = outputs
    models = tmp_path / "models"
    _assert_try_it(train_out, models, "shop:1", "/forecast")
    assert [(m["task"], m["name"]) for m in json.loads(listed)] == [("forecast", "shop")]

    card = json.loads((models / "forecast/shop/1/card.json").read_text())
    assert (card["name"], card["version"]) == ("shop", "1")
    (data,) = card["datasets"]
    assert data["file"] == "shop_hourly.csv" and data["sha256"] == _sha256(
        EXAMPLES / "shop_hourly.csv"
    )
    assert data["rows"] == 672 and data["series"] == 2 and data["points"] == 2 * 672
    assert data["time_column"] == "timestamp" and data["value_columns"] == ["load_kw", "temp_c"]
    assert (data["first_timestamp"], data["last_timestamp"]) == (
        "2024-03-04 00:00",
        "2024-03-31 23:00",
    )
    assert "url" not in data and "dataset" not in data
    description = card["description"]
    assert "trained on shop_hourly.csv (672 rows, 2 series: load_kw, temp_c)" in description
    assert "2-member GRU ensemble" in description and "last 72 points" in description
    assert "M4" not in description and "ETTh1" not in description

    # the README request is the end of the example file, as the section says
    ((path, body),) = requests
    with open(EXAMPLES / "shop_hourly.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[-48:]
    (series,) = body["series"]
    assert series["values"] == [float(r["load_kw"]) for r in rows]
    assert series["start"] == rows[0]["timestamp"].replace(" ", "T") + ":00"

    client = client_for(models)
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    (fc,) = r.json()["forecasts"]
    mean = fc["mean"]
    assert len(mean) == 24 and fc["timestamps"][0] == "2024-04-01T00:00:00"
    assert all(lo <= m <= hi for lo, m, hi in zip(fc["lo-80"], mean, fc["hi-80"], strict=True))
    day, night = sum(mean[10:16]) / 6, sum(mean[0:6]) / 6
    assert day > night + 8  # the shop's opening hours, learned from the file
    for p, b in _printed_curls(train_out):
        assert client.post(p, json=b).status_code == 200, (p, b)


def test_forecast_cards_name_user_files_not_public_sets(tmp_path: Path) -> None:
    from training.forecast.cli import default_name
    from training.forecast.data import load_series
    from training.forecast.export import dataset_entry

    wide = tmp_path / "My Wide.csv"  # M4's layout, but a user's series
    wide.write_text("V1,V2,V3,V4\nA,1,2,3\nB,4,5,\n")
    rec = dataset_entry(wide, load_series(wide))
    assert "dataset" not in rec and "url" not in rec
    assert rec["layout"].startswith("M4 wide") and rec["rows"] == 2 and rec["points"] == 5
    assert default_name(str(wide), "gru") == "my-wide-gru"  # never over m4-hourly-gru


def test_forecast_non_number_is_named(tmp_path: Path) -> None:
    from training.forecast.data import load_series

    path = tmp_path / "d.csv"
    path.write_text("ts,v\n2024-01-01 00:00,1\n2024-01-01 01:00,n/a\n")
    with pytest.raises(ValueError, match=r"column 'v' has a value that is not a number: 'n/a'"):
        load_series(path)
