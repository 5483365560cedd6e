"""Settings: list values as people type them, and a bad value is one line, never a traceback —
for `seqserve serve` (one or two workers), `uvicorn app.main:app`, `seqserve models` and
`seqserve predict`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings, SettingsInvalid, get_settings, load_settings

SERVE = [sys.executable, "-m", "app.cli", "serve", "--port", "1"]  # never reached: fails first


@pytest.fixture(autouse=True)
def no_seqserve_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in os.environ:
        if key.startswith("SEQSERVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ("key1", ["key1"]),
        ("key1,key2", ["key1", "key2"]),
        (" key1 , key2 ,", ["key1", "key2"]),
        ('["key1", "key2"]', ["key1", "key2"]),
        ("[]", []),
        ("", []),
    ],
)
def test_api_keys_comma_separated_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, keys: list[str]
) -> None:
    monkeypatch.setenv("SEQSERVE_API_KEYS", value)
    assert [k.get_secret_value() for k in load_settings().api_keys] == keys


def test_providers_and_default_models_plain_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSERVE_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    monkeypatch.setenv("SEQSERVE_DEFAULT_MODELS", "sentiment=sst2-bilstm:1, forecast=m4-hourly-gru")
    st = load_settings()
    assert st.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert st.default_models == {"sentiment": "sst2-bilstm:1", "forecast": "m4-hourly-gru"}
    monkeypatch.setenv("SEQSERVE_PROVIDERS", '["CPUExecutionProvider"]')
    monkeypatch.setenv("SEQSERVE_DEFAULT_MODELS", '{"sentiment": "sst2-bilstm:1"}')
    st = load_settings()
    assert st.providers == ["CPUExecutionProvider"]
    assert st.default_models == {"sentiment": "sst2-bilstm:1"}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "PROVIDERS",
            "notjson",
            "(unknown: notjson): expected a comma-separated list of "
            "CPUExecutionProvider, CUDAExecutionProvider",
        ),
        ("PROVIDERS", '["CPU', "not valid JSON"),
        ("MAX_BATCH_SIZE", "abc", "expected a whole number >= 1"),
        ("MAX_BATCH_SIZE", "0", "expected a whole number >= 1"),
        ("MAX_BATCH_WAIT_MS", "soon", "expected a number >= 0"),
        ("ACCESS_LOG", "maybe", "expected true or false"),
        ("LOG_LEVEL", "loud", "expected one of debug, info, warning, error, critical"),
        ("LOG_FORMAT", "xml", "expected json or text"),
        ("MODELS_DIR", "no-such-folder", "(no folder no-such-folder (from "),
        ("DEFAULT_MODELS", "sst2-bilstm", "'sst2-bilstm' is not task=name"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(f"SEQSERVE_{name}", value)
    with pytest.raises(SettingsInvalid) as exc:
        get_settings()
    message = exc.value.message
    assert message.startswith(f"SEQSERVE_{name}={value!r} is invalid")
    assert expected in message and "\n" not in message


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSERVE_ADMIN_KEYS", '["s3cret"')
    with pytest.raises(SettingsInvalid) as exc:
        load_settings()
    assert "s3cret" not in exc.value.message
    assert exc.value.message.startswith("SEQSERVE_ADMIN_KEYS is invalid (not valid JSON")


def test_every_bad_variable_is_named_on_the_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSERVE_MAX_BATCH_SIZE", "abc")
    monkeypatch.setenv("SEQSERVE_PROVIDERS", "GPU")
    with pytest.raises(SettingsInvalid) as exc:
        load_settings()
    assert "SEQSERVE_MAX_BATCH_SIZE=" in exc.value.message
    assert "SEQSERVE_PROVIDERS=" in exc.value.message and "\n" not in exc.value.message


def test_a_flag_override_is_named_as_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SettingsInvalid, match=r"^--models-dir='.*nope' is invalid"):
        load_settings(models_dir=tmp_path / "nope")


def test_dotenv_values_are_checked_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(Settings.model_config, "env_file", ".env")  # conftest turns it off
    (tmp_path / ".env").write_text("SEQSERVE_MAX_BATCH_SIZE=lots\n")
    with pytest.raises(SettingsInvalid, match="SEQSERVE_MAX_BATCH_SIZE='lots' is invalid"):
        load_settings()


def _run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    clean["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        argv, cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


MODELS_LIST = [sys.executable, "-m", "app.cli", "models", "list"]
PREDICT = [sys.executable, "-m", "app.cli", "predict", "sentiment", "fine"]
# Every variable of the issue through `serve`, and each other command with one of them.
CASES = [
    (SERVE, "SEQSERVE_PROVIDERS", "notjson"),
    (SERVE, "SEQSERVE_API_KEYS", '["key1"'),
    (SERVE, "SEQSERVE_MAX_BATCH_SIZE", "abc"),
    (SERVE, "SEQSERVE_MODELS_DIR", "/no/such/models"),
    ([*SERVE, "--workers", "2"], "SEQSERVE_PROVIDERS", "notjson"),
    (MODELS_LIST, "SEQSERVE_MAX_BATCH_SIZE", "abc"),
    (MODELS_LIST, "SEQSERVE_MODELS_DIR", "/no/such/models"),
    (PREDICT, "SEQSERVE_API_KEYS", '["key1"'),
]


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    CASES,
    ids=[f"{' '.join(a[3:5])}-{n}" + ("-2w" if "--workers" in a else "") for a, n, _ in CASES],
)
def test_cli_bad_setting_one_line_exit_2(
    tmp_path: Path, argv: list[str], name: str, value: str
) -> None:
    done = _run(argv, tmp_path, **{name: value})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"seqserve: {name}") and "expected" in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_uvicorn_app_main_bad_setting_is_one_line(tmp_path: Path, workers: str) -> None:
    """uvicorn prints its own lines around ours; ours is the only error and there is no
    traceback. Exit 3 is uvicorn's "startup failure": with --workers its supervisor stops
    instead of restarting workers that would fail again (uvicorn then exits 0 itself)."""
    argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "1", "--workers", workers]
    done = _run(argv, tmp_path, SEQSERVE_PROVIDERS="notjson")
    ours = [line for line in done.stderr.splitlines() if line.startswith("seqserve:")]
    assert ours and set(ours) == {ours[0]} and "SEQSERVE_PROVIDERS='notjson'" in ours[0]
    assert "Traceback" not in done.stderr
    if workers == "1":
        assert done.returncode == 3
    else:
        assert "failed to start, stopping the parent process" in done.stderr
