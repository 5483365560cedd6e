"""A small, typed Python client for a seqserve server (sentiment, next word, forecast).

Needs ``httpx``, plus ``pandas`` for :meth:`SeqServeClient.forecast`; the ``client`` extra
installs both: ``pip install -e '.[client]'`` (or ``pip install httpx pandas``)::

    from client import SeqServeClient

    with SeqServeClient("http://127.0.0.1:8000", api_key=None) as api:
        print(api.sentiment("a gorgeous, witty, moving film").label)
        session = api.next_word_session(k=3)
        session.feed("Happy birthday, my")       # the whole context, once
        print(session.feed("friend").words)        # only the new words; the state does the rest
        frame = api.forecast(hourly_series, horizon=48)   # DataFrame: mean, lo-80, hi-80, ...

Every non-2xx answer raises :class:`SeqServeError` with the server's ``code`` and ``message``.
A 429 (overloaded) is retried after the server's ``Retry-After``, a bounded number of times.
``python examples/client.py [base_url]`` runs a short demo against a running server.
"""

from __future__ import annotations

import email.utils
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

try:
    import httpx
except ImportError:  # say how to get it, not just what is missing
    raise ImportError("examples/client.py needs httpx: pip install -e '.[client]'") from None

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Candidate",
    "ForecastWarning",
    "HTTPClient",
    "NextWordResult",
    "NextWordSession",
    "ScoreResult",
    "SentimentResult",
    "SeqServeClient",
    "SeqServeError",
    "api_freq",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0  # seconds; the server answers 503 after its own deadline (10 s default)


# -- transport -------------------------------------------------------------------------------
class HTTPResponse(Protocol):
    """The part of an ``httpx.Response`` the client reads."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class HTTPClient(Protocol):
    """Anything with ``httpx.Client.request``: an ``httpx.Client`` or a test client (Starlette's
    ``TestClient`` is built on an httpx-compatible client that is not always ``httpx.Client``)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = ...,
    ) -> HTTPResponse: ...

    def close(self) -> None: ...


# -- results and errors ------------------------------------------------------------------------
class SeqServeError(Exception):
    """A non-2xx answer: the HTTP status and the server's ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, when the server sent Retry-After
        self.request_id = request_id  # the X-Request-ID response header, when there is one


class ForecastWarning(UserWarning):
    """A warning the server attached to a forecast (e.g. a frequency the model was not trained
    on)."""


@dataclass(frozen=True)
class SentimentResult:
    label: str
    score: float
    probabilities: dict[str, float]
    tokens: int
    truncated: bool
    model: str  # "name:version" that answered


@dataclass(frozen=True)
class Candidate:
    word: str
    probability: float


@dataclass(frozen=True)
class NextWordResult:
    candidates: list[Candidate]
    state: str  # signed state token after the text: send it back with the next words
    tokens: list[str]  # the text as the model read it
    model: str
    completion: str | None = None

    @property
    def words(self) -> list[str]:
        return [c.word for c in self.candidates]


@dataclass(frozen=True)
class ScoreResult:
    tokens: int
    log_likelihood: float
    perplexity: float
    model: str


def _model_ref(body: Mapping[str, Any]) -> str:
    m = body.get("model") or {}
    return f"{m.get('name')}:{m.get('version')}"


def _sentiment(item: Mapping[str, Any], model: str) -> SentimentResult:
    return SentimentResult(
        label=item["label"],
        score=float(item["score"]),
        probabilities={k: float(v) for k, v in item["probabilities"].items()},
        tokens=int(item["tokens"]),
        truncated=bool(item["truncated"]),
        model=model,
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error(resp: HTTPResponse) -> SeqServeError:
    code, message = "http_error", resp.text[:500]
    try:
        err = resp.json().get("error", {})
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return SeqServeError(
        resp.status_code,
        code,
        message,
        _retry_after(resp.headers.get("retry-after")),
        resp.headers.get("x-request-id"),
    )


# -- frequencies -------------------------------------------------------------------------------
def api_freq(offset: Any) -> str:
    """A pandas frequency (offset or string) as the API's ``freq``: ``'h'``, ``'15min'``,
    ``'D'``, ``'W'``, ``'30s'``... The API takes fixed steps only; calendar frequencies
    (month, business day) and sub-second steps raise ValueError."""
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(offset)
    if isinstance(offset, pd.offsets.Week) and offset.n > 0:
        return "W" if offset.n == 1 else f"{offset.n}W"
    try:
        seconds = pd.Timedelta(offset).total_seconds()
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(
            f"frequency {offset.freqstr!r} is not a fixed step of whole seconds; the API "
            "supports seconds, minutes, hours, days and weeks (e.g. 'h', '15min', 'D')"
        )
    for unit, size in (("D", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover - "s" divides every whole second


# -- the client --------------------------------------------------------------------------------
class SeqServeClient:
    """Client for one seqserve server (or load balancer).

    ``base_url`` defaults to ``http://127.0.0.1:8000``; when ``client`` is given and
    ``base_url`` is not, paths are sent relative to that client's own base URL (so a
    ``TestClient(app)`` works as is). A client passed in is not closed by :meth:`close`.
    ``timeout`` (seconds) defaults to 30 for the client made here; for a client passed in it
    is sent with each request only when given (else that client's own timeout applies).

    ``max_retries`` bounds the retries of a 429: each waits the server's ``Retry-After``
    (``default_retry_after`` when absent), at most ``max_retry_wait`` seconds.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        client: HTTPClient | None = None,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        default_retry_after: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._owns_client = client is None
        if client is None:
            client = httpx.Client(
                base_url=base_url or DEFAULT_BASE_URL,
                timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            )
            base_url, timeout = None, None  # the new client carries both
        self._http: HTTPClient = client
        self._prefix = (base_url or "").rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.default_retry_after = default_retry_after
        self._sleep = sleep

    # lifecycle
    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> SeqServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing
    def request(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return the decoded JSON body; raise SeqServeError on non-2xx.
        A 429 is retried up to ``max_retries`` times after its Retry-After."""
        body = None if payload is None else {k: v for k, v in payload.items() if v is not None}
        for attempt in range(self.max_retries + 1):
            url = self._prefix + path
            resp = (
                self._http.request(method, url, json=body, headers=self._headers)
                if self.timeout is None
                else self._http.request(
                    method, url, json=body, headers=self._headers, timeout=self.timeout
                )
            )
            if 200 <= resp.status_code < 300:
                return resp.json()
            err = _error(resp)
            if resp.status_code != 429 or attempt == self.max_retries:
                raise err
            wait = self.default_retry_after if err.retry_after is None else err.retry_after
            self._sleep(min(wait, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    # endpoints
    def sentiment(self, text: str, model: str | None = None) -> SentimentResult:
        """Classify one text (``model``: ``"name"`` or ``"name:version"``, default the
        server's)."""
        body = self.request("POST", "/sentiment", {"text": text, "model": model})
        return _sentiment(body, _model_ref(body))

    def sentiment_many(
        self, texts: Sequence[str], model: str | None = None, batch_size: int = 64
    ) -> list[SentimentResult]:
        """Classify many texts, in order, ``batch_size`` per request (the server's
        ``SEQSERVE_MAX_TEXTS`` is 64 by default)."""
        out: list[SentimentResult] = []
        texts = list(texts)
        for i in range(0, len(texts), batch_size):
            body = self.request(
                "POST", "/sentiment", {"texts": texts[i : i + batch_size], "model": model}
            )
            out.extend(_sentiment(r, _model_ref(body)) for r in body["results"])
        return out

    def next_word(
        self,
        text: str,
        k: int = 5,
        state: str | None = None,
        *,
        model: str | None = None,
        complete: int = 0,
        cache: bool | None = None,
    ) -> NextWordResult:
        """The ``k`` likeliest next words after ``text``. With ``state`` (from an earlier
        result), ``text`` holds only the new words and continues that earlier text. A model
        with a continuous cache uses it over this request's ``text`` (``cache=False``: off)."""
        payload = {"text": text, "k": k, "state": state, "model": model, "cache": cache}
        if complete:
            payload["complete"] = complete
        body = self.request("POST", "/next-word", payload)
        return NextWordResult(
            candidates=[Candidate(c["word"], float(c["probability"])) for c in body["candidates"]],
            state=body["state"],
            tokens=list(body["tokens"]),
            model=_model_ref(body),
            completion=body.get("completion"),
        )

    def next_word_session(
        self, k: int = 5, model: str | None = None, cache: bool | None = None
    ) -> NextWordSession:
        return NextWordSession(self, k=k, model=model, cache=cache)

    def score(self, text: str, model: str | None = None, cache: bool | None = None) -> ScoreResult:
        """Natural-log likelihood and perplexity of ``text`` under the language model."""
        body = self.request(
            "POST", "/next-word/score", {"text": text, "model": model, "cache": cache}
        )
        return ScoreResult(
            tokens=int(body["tokens"]),
            log_likelihood=float(body["log_likelihood"]),
            perplexity=float(body["perplexity"]),
            model=_model_ref(body),
        )

    def forecast(
        self,
        series: pd.Series,
        horizon: int | None = None,
        levels: Sequence[float] = (80, 95),
        *,
        model: str | None = None,
        freq: str | None = None,
    ) -> pd.DataFrame:
        """Forecast one series; returns a DataFrame with columns ``mean``, ``lo-80``,
        ``hi-80``, ... (one pair per level) and one row per step.

        With a ``DatetimeIndex`` whose frequency is set or can be inferred (or given as
        ``freq``), the start and frequency are sent too (the server warns when the frequency
        differs from the model's, re-raised here as :class:`ForecastWarning`) and the result is
        indexed by the forecast timestamps, continuing the series' index. Otherwise the index
        continues the series' positions. ``horizon`` defaults to the model's ``max_horizon``.
        """
        import pandas as pd

        values = series.to_numpy(dtype=float)
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"series has {len(bad)} missing or non-finite values (first at position "
                f"{bad[0]}); fill or drop them first"
            )
        item: dict[str, Any] = {
            "id": str(series.name) if series.name is not None else "series",
            "values": values.tolist(),
        }
        index = series.index
        offset = None
        if isinstance(index, pd.DatetimeIndex) and len(index):
            offset = freq or index.freq or (pd.infer_freq(index) if len(index) >= 3 else None)
            if offset is None:
                raise ValueError(
                    "the series' DatetimeIndex has no regular frequency pandas can infer; "
                    "resample it (series.asfreq('h')) or pass freq='h'"
                )
            offset = pd.tseries.frequencies.to_offset(offset)
            item["start"] = index[0].isoformat()
            item["freq"] = api_freq(offset)
        elif freq is not None:
            raise ValueError("freq applies to a series with a DatetimeIndex")
        body = self.request(
            "POST",
            "/forecast",
            {"series": [item], "horizon": horizon, "level": list(levels), "model": model},
        )
        fc = body["forecasts"][0]
        steps = len(fc["mean"])
        if offset is not None:
            out_index: pd.Index = pd.date_range(index[-1], periods=steps + 1, freq=offset)[1:]
        elif isinstance(index, pd.RangeIndex):
            stop = index.start + len(index) * index.step
            out_index = pd.RangeIndex(stop, stop + steps * index.step, index.step)
        else:
            out_index = pd.RangeIndex(len(index), len(index) + steps)
        columns = ["mean"] + [k for k in fc if k.startswith(("lo-", "hi-"))]
        frame = pd.DataFrame({c: fc[c] for c in columns}, index=out_index)
        frame.attrs["model"] = _model_ref(body)
        frame.attrs["warnings"] = list(body.get("warnings", []))
        for message in frame.attrs["warnings"]:
            warnings.warn(message, ForecastWarning, stacklevel=2)
        return frame

    def models(self, name: str | None = None) -> dict[str, Any]:
        """``GET /v1/models`` (loaded models, task defaults, failed folders) or, with ``name``,
        ``GET /v1/models/{name}`` (that model's versions with full cards)."""
        path = "/v1/models" if name is None else f"/v1/models/{name}"
        result: dict[str, Any] = self.request("GET", path)
        return result


class NextWordSession:
    """Type text a piece at a time: the first :meth:`feed` sends the text, each later one sends
    only its new words with the state token of the previous answer, so a request costs the same
    however long the text has grown. The session pins the model version that issued its state
    (a token is only valid for that version, e.g. across a server reload). The state token
    carries the model's state, not its continuous cache: with a cache, each feed's words are
    all the cache sees (send the whole text without a state to cache all of it)."""

    def __init__(
        self,
        client: SeqServeClient,
        k: int = 5,
        model: str | None = None,
        cache: bool | None = None,
    ) -> None:
        self.client = client
        self.k = k
        self.model = model
        self.cache = cache
        self.state: str | None = None
        self.tokens: list[str] = []  # everything the model has read in this session
        self.last: NextWordResult | None = None

    def feed(self, text: str) -> NextWordResult:
        result = self.client.next_word(text, self.k, self.state, model=self.model, cache=self.cache)
        self.state, self.model, self.last = result.state, result.model, result
        self.tokens.extend(result.tokens)
        return result

    @property
    def candidates(self) -> list[Candidate]:
        return [] if self.last is None else self.last.candidates

    def reset(self) -> None:
        self.state, self.last, self.tokens = None, None, []

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates)


# -- demo --------------------------------------------------------------------------------------
def _demo(base_url: str) -> None:
    import numpy as np
    import pandas as pd

    with SeqServeClient(base_url) as api:
        loaded = api.models()
        print(
            "models:",
            ", ".join(f"{m['task']}/{m['name']}:{m['version']}" for m in loaded["models"]),
        )

        r = api.sentiment("a gorgeous, witty, moving film")
        print(f"sentiment: {r.label} ({r.score:.2f}) by {r.model}")
        for text, res in zip(
            ["awful", "great"], api.sentiment_many(["awful", "great"]), strict=True
        ):
            print(f"  {text!r}: {res.label}")

        session = api.next_word_session(k=3)
        for piece in ["Happy birthday, my", "friend", "!"]:
            step = session.feed(piece)
            print(f"next word after {' '.join(session.tokens)!r}: {step.words}")
        s = api.score("The game was released in Japan .")
        print(f"score: perplexity {s.perplexity:.1f} over {s.tokens} tokens")

        idx = pd.date_range("2024-03-04", periods=14 * 24, freq="h")
        t = np.arange(len(idx))
        load = pd.Series(50 + 15 * np.sin(2 * np.pi * t / 24), index=idx, name="load_kw")
        fc = api.forecast(load, horizon=24)
        print("forecast:\n", fc.head().round(1).to_string())

        try:
            api.sentiment("   ")
        except SeqServeError as exc:
            print(f"error: {exc.status_code} {exc.code}: {exc.message}")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_BASE_URL
    try:
        _demo(url)
    except httpx.TransportError as exc:
        sys.exit(f"cannot reach {url} ({exc}); start the server with `seqserve serve`")
