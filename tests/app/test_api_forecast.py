"""POST /forecast on a tiny forecaster trained from fixture series (window 48, horizon 24)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from contract.forecast import last_window, positive_shift

MAX_SERIES = 50  # a small request limit, so a test can go past it


@pytest.fixture(scope="module")
def fc_client(tiny_forecast_models: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=tiny_forecast_models, max_series=MAX_SERIES)
    with TestClient(create_app(settings)) as c:
        yield c


def _wave(n: int, offset: float = 50.0, amp: float = 10.0) -> list[float]:
    t = np.arange(n)
    return list(offset + amp * np.sin(2 * np.pi * t / 24))


def test_forecast_shapes_intervals_and_timestamps(fc_client: TestClient) -> None:
    body = {
        "series": [
            {"id": "a", "values": _wave(100), "start": "2017-01-01T00:00:00", "freq": "h"},
            {"id": "b", "values": _wave(30, 500, 100)},
        ],
        "horizon": 12,
        "level": [95, 80],
    }
    r = fc_client.post("/forecast", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [f["id"] for f in out["forecasts"]] == ["a", "b"] and out["warnings"] == []
    for f in out["forecasts"]:
        mean, lo80, hi80 = map(np.asarray, (f["mean"], f["lo-80"], f["hi-80"]))
        lo95, hi95 = np.asarray(f["lo-95"]), np.asarray(f["hi-95"])
        assert mean.shape == (12,) and np.isfinite(mean).all()
        assert (lo95 <= lo80 + 1e-9).all() and (lo80 <= mean + 1e-9).all()
        assert (mean <= hi80 + 1e-9).all() and (hi80 <= hi95 + 1e-9).all()
    a = out["forecasts"][0]
    assert a["timestamps"][0] == "2017-01-05T04:00:00" and len(a["timestamps"]) == 12  # 100 h later
    assert "timestamps" not in out["forecasts"][1]
    assert 300 < np.mean(out["forecasts"][1]["mean"]) < 700  # scale follows the input


def test_matches_the_graph_on_the_documented_window(
    fc_client: TestClient, tiny_forecast_models: Path
) -> None:
    from training.common.onnx_utils import ort_session

    folder = tiny_forecast_models / "forecast" / "tiny-fc" / "1"
    values = _wave(500)
    r = fc_client.post("/forecast", json={"series": [{"values": values}], "horizon": 24}).json()
    x = np.asarray(values[-48:], dtype=np.float32)[None]
    med = ort_session(folder / "model.onnx").run(["median"], {"values": x})[0][0]
    assert np.allclose(r["forecasts"][0]["mean"], med, rtol=1e-5)
    assert r["forecasts"][0]["id"] == "0"


def test_zero_negative_and_constant_series_get_finite_forecasts(fc_client: TestClient) -> None:
    series = [
        {"id": "zeros", "values": [0.0] * 60},
        {"id": "const", "values": [7.0] * 60},
        {"id": "temps", "values": _wave(96, offset=-3.0, amp=5.0)},
        {"id": "returns", "values": list(np.random.default_rng(0).normal(0, 1, 72))},
    ]
    r = fc_client.post("/forecast", json={"series": series, "horizon": 24})
    assert r.status_code == 200, r.text
    f = {x["id"]: x for x in r.json()["forecasts"]}
    for x in f.values():
        assert np.isfinite(x["mean"]).all() and np.isfinite(x["lo-95"]).all()
    assert np.allclose(f["zeros"]["mean"], 0, atol=0.5)
    assert np.allclose(f["const"]["mean"], 7, rtol=0.1)
    assert np.min(f["temps"]["mean"]) < 0  # negative values come back negative, not clipped


def test_freq_mismatch_is_answered_with_a_warning(fc_client: TestClient) -> None:
    r = fc_client.post(
        "/forecast",
        json={
            "series": [{"id": "d", "values": _wave(60), "start": "2020-01-01", "freq": "D"}],
            "horizon": 3,
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert "trained on 'h'" in body["warnings"][0] and body["forecasts"][0]["timestamps"][
        0
    ].startswith("2020-03-01")


def _err(client: TestClient, payload: object) -> tuple[int, str]:
    r = (
        client.post("/forecast", json=payload)
        if not isinstance(payload, bytes)
        else client.post("/forecast", content=payload, headers={"content-type": "application/json"})
    )
    return r.status_code, r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (
            {"series": [{"id": "s", "values": [1.0] * 10}]},
            422,
            "series 's' has 10 values; the model needs at least 24",
        ),
        (
            {"series": [{"values": _wave(50)}], "horizon": 25},
            422,
            "horizon must be between 1 and 24",
        ),
        ({"series": [{"values": _wave(50)}], "horizon": 0}, 422, "horizon"),
        ({"series": [{"values": _wave(50)}], "level": [100]}, 422, "level[0]"),
        ({"series": [{"values": _wave(50)}], "level": [0]}, 422, "level[0]"),
        (
            {"series": [{"id": "x", "values": _wave(50)}, {"id": "x", "values": _wave(50)}]},
            422,
            "'x' appears more than once",
        ),
        ({"series": [{"values": [1.0, None, 2.0] + _wave(40)}]}, 422, "series[0].values[1]"),
        ({"series": [{"values": [1.0, "a"] + _wave(40)}]}, 422, "series[0].values[1]"),
        ({"series": []}, 422, "series is empty"),
        (
            {"series": [{"values": _wave(50)}] * (MAX_SERIES + 1)},
            413,
            f"{MAX_SERIES + 1} items; the limit is {MAX_SERIES}",
        ),
        (
            {"series": [{"values": _wave(50), "start": "2020-01-01", "freq": "M"}]},
            422,
            "freq 'M' is not supported",
        ),
        ({"series": [{"values": _wave(50), "start": "2020-01-01"}]}, 422, "'start' needs 'freq'"),
        ({"series": [{"values": _wave(50)}], "model": "nope"}, 404, "nope"),
        ({"values": _wave(50)}, 422, "series: Field required"),
    ],
)
def test_bad_forecast_inputs(
    fc_client: TestClient, payload: object, status: int, fragment: str
) -> None:
    got, message = _err(fc_client, payload)
    assert got == status and fragment in message, message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_422(fc_client: TestClient, literal: bytes) -> None:
    values = b", ".join([b"1.0"] * 30 + [literal])
    status, message = _err(fc_client, b'{"series": [{"values": [' + values + b"]}]}")
    assert status == 422 and "series[0].values[30]" in message


def test_serving_rules_match_training_reference() -> None:
    from contract import forecast as ref

    rng = np.random.default_rng(1)
    x = rng.normal(0, 5, (6, 48))
    x[0] = 0.0
    x[1] = 3.0
    assert np.allclose(positive_shift(x, 0.1, 1.0), ref.positive_shift(x))
    for n in (24, 30, 47, 48, 100):
        s = rng.normal(size=n)
        assert np.array_equal(last_window(s, 48, 24), ref.last_window(s, 48, 24))


def test_card_documents_the_contract(tiny_forecast_models: Path) -> None:
    card = json.loads(
        (tiny_forecast_models / "forecast" / "tiny-fc" / "1" / "card.json").read_text()
    )
    for key in ("window", "max_horizon", "freq", "seasonal_period", "intervals", "preprocessing"):
        assert key in card


def test_intervals_match_training_reference_rule(
    fc_client: TestClient, tiny_forecast_models: Path
) -> None:
    from contract.forecast import positive_shift as ref_shift
    from training.common.onnx_utils import ort_session
    from training.forecast.train import intervals as ref_intervals

    folder = tiny_forecast_models / "forecast" / "tiny-fc" / "1"
    card = json.loads((folder / "card.json").read_text())
    values = np.asarray(_wave(200, offset=-2.0, amp=8.0))  # crosses zero: exercises the shift
    body = fc_client.post(
        "/forecast",
        json={"series": [{"values": values.tolist()}], "horizon": 24, "level": [80, 99.5]},
    ).json()["forecasts"][0]
    x = values[-48:][None]
    shift = ref_shift(x)
    med, q = ort_session(folder / "model.onnx").run(
        ["median", "quantiles"], {"values": (x + shift[:, None]).astype(np.float32)}
    )
    table = np.asarray(card["intervals"]["table"])
    for level in (80, 99.5):
        lo, hi = ref_intervals(
            med.astype(np.float64) - shift[:, None],
            q.astype(np.float64) - shift[:, None, None],
            shift,
            table,
            level,
        )
        assert np.allclose(body[f"lo-{level:g}"], lo[0], rtol=1e-4, atol=1e-4)
        assert np.allclose(body[f"hi-{level:g}"], hi[0], rtol=1e-4, atol=1e-4)
