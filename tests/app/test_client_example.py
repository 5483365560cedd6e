"""examples/client.py against the real app on the shipped models (and a mock for 429s)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS, REPO, TEST_DEADLINE_MS


def _load_client_module() -> ModuleType:
    name = "seqserve_example_client"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


cl = _load_client_module()


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    settings = Settings(
        models_dir=MODELS,
        state_secret="t" * 32,
        request_deadline_ms=TEST_DEADLINE_MS,
    )
    with TestClient(create_app(settings)) as tc:
        yield cl.SeqServeClient(client=tc)


def test_sentiment_one_and_many(api: Any) -> None:
    r = api.sentiment("a gorgeous, witty, moving film")
    assert r.label == "positive" and r.score > 0.5 and r.model == "sst2-imdb-tweets-bilstm:1"
    assert abs(sum(r.probabilities.values()) - 1) < 1e-3 and not r.truncated
    many = api.sentiment_many(["awful, tedious and dull", "great", "brilliant"], batch_size=2)
    assert [m.label for m in many] == ["negative", "positive", "positive"]


def test_next_word_session_matches_the_whole_text(api: Any) -> None:
    # the state is exact; the continuous cache covers one request's words, so it is off here
    whole = api.next_word("Happy birthday, my friend", k=10, cache=False)
    session = api.next_word_session(k=10, cache=False)
    session.feed("Happy birthday, my")
    cont = session.feed("friend")
    assert session.tokens == whole.tokens == ["Happy", "birthday", ",", "my", "friend"]
    assert cont.tokens == ["friend"] and session.model == "wikitext2-lstm:3"
    assert cont.words == whole.words
    for a, b in zip(cont.candidates, whole.candidates, strict=True):
        assert abs(a.probability - b.probability) <= 1e-3
    # the plain method with an explicit state gives the same answer as the session
    first = api.next_word("Happy birthday, my", k=10, cache=False)
    again = api.next_word("friend", k=10, state=first.state, cache=False)
    assert again.words == cont.words
    s = api.score("The game was released in Japan .")
    assert s.tokens == 7 and s.log_likelihood < 0 and s.perplexity > 1


def test_forecast_from_an_hourly_series(api: Any) -> None:
    idx = pd.date_range("2024-03-04", periods=14 * 24, freq="h")
    t = np.arange(len(idx))
    series = pd.Series(50 + 15 * np.sin(2 * np.pi * t / 24), index=idx, name="load")
    frame = api.forecast(series, horizon=24, levels=(80, 95))
    expected = pd.date_range(idx[-1] + pd.Timedelta(hours=1), periods=24, freq="h")
    assert frame.index.equals(expected)
    assert list(frame.columns) == ["mean", "lo-80", "hi-80", "lo-95", "hi-95"]
    assert (frame["lo-80"] <= frame["mean"]).all() and (frame["mean"] <= frame["hi-80"]).all()
    assert (frame["lo-95"] <= frame["lo-80"]).all() and (frame["hi-80"] <= frame["hi-95"]).all()
    assert frame.attrs["model"].startswith("m4-hourly-gru:") and frame.attrs["warnings"] == []
    # a daily series is sent as freq "D": the server's warning surfaces as a ForecastWarning
    daily = pd.Series(series.to_numpy(), index=pd.date_range("2020-01-01", periods=len(t)))
    with pytest.warns(cl.ForecastWarning, match="freq 'D'"):
        assert len(api.forecast(daily, horizon=3)) == 3


def test_api_freq_strings() -> None:
    assert [cl.api_freq(f) for f in ["h", "15min", "D", "2h", "90s", "W-MON", "3D"]] == [
        "h",
        "15min",
        "D",
        "2h",
        "90s",
        "W",
        "3D",
    ]
    for calendar in ["MS", "B", "ms"]:
        with pytest.raises(ValueError):
            cl.api_freq(calendar)


def test_errors_are_typed(api: Any) -> None:
    with pytest.raises(cl.SeqServeError) as info:
        api.sentiment("")
    assert (info.value.status_code, info.value.code) == (422, "invalid_input")
    assert "empty" in info.value.message
    with pytest.raises(cl.SeqServeError) as info:
        api.next_word("friend", state="v1.wikitext2-lstm:2.bad.sig")
    assert (info.value.status_code, info.value.code) == (400, "invalid_state")
    with pytest.raises(cl.SeqServeError) as info:
        api.sentiment("fine", model="no-such-model")
    assert info.value.code == "model_not_found"
    assert "sst2-imdb-bilstm" in {m["name"] for m in api.models()["models"]}


def _mock(statuses: list[int], seen: list[httpx.Request]) -> httpx.Client:
    ok = {
        "label": "positive",
        "score": 0.9,
        "probabilities": {"negative": 0.1, "positive": 0.9},
        "tokens": 1,
        "truncated": False,
        "model": {"name": "m", "version": "1"},
    }
    busy = {"error": {"code": "overloaded", "message": "retry shortly"}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses[min(len(seen), len(statuses)) - 1]
        if status == 429:
            return httpx.Response(429, json=busy, headers={"Retry-After": "0"})
        return httpx.Response(status, json=ok)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mock")


def test_429_is_retried_after_retry_after() -> None:
    seen: list[httpx.Request] = []
    waits: list[float] = []
    api = cl.SeqServeClient(client=_mock([429, 429, 200], seen), api_key="k", sleep=waits.append)
    assert api.sentiment("great").label == "positive"
    assert len(seen) == 3 and waits == [0.0, 0.0]
    assert all(r.headers["authorization"] == "Bearer k" for r in seen)
    assert seen[0].url == "http://mock/sentiment"

    seen.clear()
    api = cl.SeqServeClient(client=_mock([429], seen), max_retries=2, sleep=lambda s: None)
    with pytest.raises(cl.SeqServeError) as info:
        api.sentiment("great")
    assert (info.value.status_code, info.value.code, info.value.retry_after) == (
        429,
        "overloaded",
        0.0,
    )
    assert len(seen) == 3  # one try + two retries, then the error
