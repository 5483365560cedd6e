"""forecast(a*x + b) == a*forecast(x) + b through POST /forecast, for random series, a > 0, b.

Runs on the tiny forecaster trained from fixture series (window 48, horizon 24) and, when it is
shipped, on the default model; the mean and every interval bound are compared, in series whose
history is long enough for per-series intervals and in series too short for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4  # the bound on the relative error


@pytest.fixture(scope="module")
def client(tiny_forecast_models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_forecast_models))) as c:
        yield c


def series(seed: int, n: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    day = np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6))
    if kind == "seasonal":
        return rng.uniform(-5, 5) + rng.uniform(0.5, 5) * day + rng.normal(0, 0.5, n)
    if kind == "walk":
        return np.cumsum(rng.normal(0, 1, n))
    if kind == "spiky":  # near its floor most of the time, as a load curve at night
        return np.maximum(day, 0) ** 4 * rng.uniform(10, 1000) + rng.uniform(0, 1, n)
    return rng.choice([0.0, 0.0, 0.0, 1.0, 3.0], n)  # intermittent


def forecast(client: TestClient, x: np.ndarray, model: str | None) -> dict[str, np.ndarray]:
    body = {"series": [{"values": x.tolist()}], "level": [50, 80, 95, 99.5]}
    if model:
        body["model"] = model
    r = client.post("/forecast", json=body)
    assert r.status_code == 200, r.text
    f = r.json()["forecasts"][0]
    return {
        k: np.asarray(v) for k, v in f.items() if k == "mean" or k.startswith(("lo-", "hi-"))
    } | {"calibration": f["calibration"]}  # type: ignore[dict-item]


def check(client: TestClient, x: np.ndarray, a: float, b: float, model: str | None) -> float:
    base, moved = forecast(client, x, model), forecast(client, a * x + b, model)
    assert base["calibration"] == moved["calibration"]
    span = a * max(float(np.ptp(x)), 1e-300)
    worst = 0.0
    for key, value in base.items():
        if key == "calibration":
            continue
        err = np.abs(moved[key] - (a * value + b)) / span
        worst = max(worst, float(err.max()))
    return worst


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31),
    n=st.sampled_from([30, 60, 150, 400]),  # padded, global, per-series intervals
    kind=st.sampled_from(["seasonal", "walk", "spiky", "intermittent"]),
    log_a=st.floats(-300, 25),
    b=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -1000.0, 1e4])),
)
def test_shift_and_scale_equivariance(
    client: TestClient, seed: int, n: int, kind: str, log_a: float, b: float
) -> None:
    x = series(seed, n, kind)
    a = 10.0**log_a
    # float64 keeps ~16 digits: a shift 1e8 times the series' spread leaves it 8, and the
    # shifted data itself is then only that exact; beyond that nothing can be equivariant
    assume(abs(b) <= 1e8 * a * float(np.ptp(x)))
    assert check(client, x, a, b, None) <= TOLERANCE


def test_equivariance_of_the_shipped_default() -> None:
    """The shipped default forecaster, on a real-looking load curve shifted and scaled."""
    models = REPO / "models"
    with TestClient(create_app(Settings(models_dir=models))) as c:
        card = c.get("/v1/models/m4-hourly-gru").json()
        latest = card["versions"][-1]["card"]
        if "normalise" not in latest["preprocessing"]:
            pytest.skip("the shipped forecaster predates the equivariant scaling")
        ref = f"m4-hourly-gru:{card['versions'][-1]['version']}"
        for seed, kind in ((0, "spiky"), (1, "seasonal"), (2, "walk")):
            x = series(seed, 800, kind)
            for a, b in ((1.0, -1000.0), (1e-9, 5.0), (1e6, 1e6), (3.0, 0.0)):
                assert check(c, x, a, b, ref) <= TOLERANCE
