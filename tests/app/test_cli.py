"""The ``seqserve`` console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main


def test_models_lists_the_shipped_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["task"] for m in listed} >= {"sentiment", "forecast"}


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        main(["launch"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("seqserve ") and "onnxruntime" in out


def test_models_list_table_json_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "sst2-imdb-bilstm:1" in table and "dev_accuracy" in table
    assert main(["models", "list", "--json"]) == 0
    assert any(m["name"] == "m4-hourly-gru" for m in json.loads(capsys.readouterr().out))
    assert main(["models", "show", "sst2-imdb-bilstm:1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task"] == "sentiment" and shown["card"]["labels"] == ["negative", "positive"]
    assert main(["models", "show", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_models_dir_flag_points_at_another_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--json", "--models-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_predict_sentiment_from_arguments_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "sentiment", "a gorgeous, witty, moving film", "dull and tedious"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    f = tmp_path / "texts.txt"
    f.write_text("great fun\n\nawful , boring\n" * 50)  # 100 texts: more than one request's worth
    assert main(["predict", "sentiment", "--file", str(f), "--model", "sst2-bilstm"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 100 and rows[0]["model"] == "sst2-bilstm:1"
    assert {r["label"] for r in rows} == {"positive", "negative"}
    assert main(["predict", "sentiment"]) == 2


def test_predict_next_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "next-word", "Happy birthday , my", "--k", "3", "--complete", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["candidates"]) == 3 and res["tokens"][-1] == "my"
    assert res["completion"]


def test_predict_forecast_from_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "load.csv"
    lines = ["time,load"] + [
        f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:00:00,{10 + (h % 24) * 0.5}" for h in range(96)
    ]
    f.write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "predict",
                "forecast",
                "--csv",
                str(f),
                "--time-col",
                "time",
                "--horizon",
                "6",
                "--level",
                "90",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step,timestamp,mean,lo-90,hi-90" and len(out) == 7
    assert out[1].startswith("1,2024-01-05T00:00:00,")
    assert main(["predict", "forecast", "--csv", str(f), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["series"] == "load" and len(res["forecast"]) == 48
    assert res["calibration"] in ("series", "global")
    f.write_text("time,load\n2024-01-01T00:00:00,1\n2024-01-01T01:00:00,\n")
    assert main(["predict", "forecast", "--csv", str(f)]) == 2
    assert "line 3: load is '', not a number" in capsys.readouterr().err


def test_bench_starts_a_server_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "--endpoint",
                "sentiment",
                "v2-sentiment",
                "--concurrency",
                "2",
                "--requests",
                "30",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["endpoint"] for r in rows] == ["sentiment", "v2-sentiment"]
    for r in rows:
        assert r["statuses"] == {"200": 30} and r["requests"] == 30
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["requests_per_s"] > 0


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["serve", "--help"],
        ["models", "--help"],
        ["models", "show", "--help"],
        ["predict", "--help"],
        ["predict", "forecast", "--help"],
        ["bench", "--help"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: seqserve" in capsys.readouterr().out


def test_predict_anomaly_from_csv(
    tiny_anomaly_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    f = tmp_path / "sensor.csv"
    t = np.arange(300)
    v = 20 + 5 * np.sin(2 * np.pi * t / 24)
    v[250] += 40
    cells = [f"{x:.3f}" for x in v]
    cells[100] = ""  # a missing reading
    f.write_text(
        "time,temp\n"
        + "".join(
            f"2024-01-01T00:00:00,{c}\n".replace("00:00:00", f"{h // 60:02d}:{h % 60:02d}:00")
            for h, c in enumerate(cells)
        )
    )
    argv = [
        "predict",
        "anomaly",
        "--csv",
        str(f),
        "--time-col",
        "time",
        "--models-dir",
        str(tiny_anomaly_models),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "index,timestamp,value,score,anomaly" and len(lines) == 301
    assert lines[101].split(",")[3] == "0"  # the missing value scores 0
    assert "1 missing values" in captured.err
    assert main([*argv, "--only-anomalies"]) == 0
    flagged = capsys.readouterr().out.splitlines()
    assert flagged[0].startswith("index,") and all(x.endswith(",1") for x in flagged[1:])


@pytest.mark.parametrize(
    "argv",
    [["models", "list"], ["models", "show", "sst2-imdb-bilstm"], ["predict", "sentiment", "ok"]],
)
def test_bad_setting_is_one_line_and_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.settings import get_settings

    monkeypatch.setenv("SEQSERVE_MAX_BATCH_SIZE", "abc")
    get_settings.cache_clear()
    try:
        assert main(argv) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert (
        err == "seqserve: SEQSERVE_MAX_BATCH_SIZE='abc' is invalid: expected a whole number >= 1\n"
    )


def test_missing_models_dir_flag_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--models-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqserve: --models-dir=") and err.count("\n") == 1
    assert f"no folder {tmp_path / 'nope'}" in err


def test_commands_without_tasks_do_not_load_the_server() -> None:
    """--version, --help, serve and models build their parser without the task registry (which
    imports FastAPI and the services: ~0.6 s on every call)."""
    import subprocess
    import sys

    code = (
        "import sys; from app.cli import build_parser; "
        "build_parser(['models', 'list']); build_parser(['--version']); "
        "print('app.tasks' in sys.modules, 'fastapi' in sys.modules); "
        "build_parser(['predict', 'sentiment', 'x']); print('app.tasks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
