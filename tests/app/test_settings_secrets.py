"""Secrets and keys that are empty or too short stop start-up with one line naming them."""

from __future__ import annotations

import pytest

from app.settings import SettingsInvalid, load_settings, short_previous_secrets

GOOD = "0123456789abcdef" * 4  # what openssl rand -hex 32 prints


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SEQSERVE_API_KEYS", ",k"),
        ("SEQSERVE_API_KEYS", '[""]'),
        ("SEQSERVE_API_KEYS", "k1,,k2"),
        ("SEQSERVE_ADMIN_KEYS", ",a"),
        ("SEQSERVE_ADMIN_KEYS", ","),
        ("SEQSERVE_ADMIN_KEYS", '["a", " "]'),
    ],
)
def test_an_empty_key_is_refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    assert info.value.message.startswith(f"{var} is invalid (it has an empty")
    assert "\n" not in info.value.message


@pytest.mark.parametrize("value", ["", "short", "x" * 31])
def test_an_empty_or_short_state_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SEQSERVE_STATE_SECRET", value)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    message = info.value.message
    assert (
        message.startswith("SEQSERVE_STATE_SECRET is invalid") and "openssl rand -hex 32" in message
    )
    assert message.count("openssl rand -hex 32") == 1  # the fix is said once
    assert "\n" not in message and (not value or value not in message)  # never echoed


def test_short_previous_secrets_are_accepted_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short secret must be rotatable out of SEQSERVE_STATE_SECRET without breaking its
    tokens: as a previous secret it only verifies (``seqserve serve`` warns about it)."""
    monkeypatch.setenv("SEQSERVE_STATE_PREVIOUS_SECRETS", f"{GOOD},old")
    s = load_settings()
    assert [k.get_secret_value() for k in s.state_previous_secrets] == [GOOD, "old"]
    assert short_previous_secrets(s) == 1


@pytest.mark.parametrize("value", ['[""]', '["old", ""]'])
def test_an_empty_previous_secret_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEQSERVE_STATE_PREVIOUS_SECRETS", value)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    message = info.value.message
    assert message.startswith("SEQSERVE_STATE_PREVIOUS_SECRETS is invalid (it has an empty")
    assert "unset" not in message and "random" not in message


def test_good_values_and_unset_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().state_secret is None  # unset: a random key per process, as before
    monkeypatch.setenv("SEQSERVE_STATE_SECRET", GOOD)
    monkeypatch.setenv("SEQSERVE_STATE_PREVIOUS_SECRETS", f"{GOOD[::-1]},{GOOD.upper()}")
    monkeypatch.setenv("SEQSERVE_API_KEYS", "k1, k2")
    monkeypatch.setenv("SEQSERVE_ADMIN_KEYS", "")
    monkeypatch.setenv("SEQSERVE_STATE_MAX_AGE_S", "600")
    s = load_settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"] and s.admin_keys == []
    assert s.state_max_age_s == 600 and len(s.state_previous_secrets) == 2


def test_a_negative_max_age_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSERVE_STATE_MAX_AGE_S", "-1")
    with pytest.raises(SettingsInvalid, match="SEQSERVE_STATE_MAX_AGE_S='-1' is invalid"):
        load_settings()
