"""POST /forecast on a tiny forecaster trained from fixture series (window 48, horizon 24)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from contract.forecast import Scaling, interval_k, last_window

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
    assert [f["id"] for f in out["forecasts"]] == ["a", "b"]
    # 'b' is shorter than the window (48): padded, and said so
    assert len(out["warnings"]) == 1 and "series 'b' has 30 values" in out["warnings"][0]
    assert "padded" in out["warnings"][0]
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
    x = np.asarray(values[-48:], dtype=np.float64)[None]
    card = json.loads((folder / "card.json").read_text())
    rule = card["preprocessing"]["normalise"]
    sc = Scaling(rule["rule"], rule["delta"], 24, rule["clip"])
    n = sc.stats(x)  # floorlog: min and std of the window
    assert np.isclose(n.loc[0], x.min()) and np.isclose(n.scale[0], x.std())
    g = np.log((x - x.min()) / x.std() + rule["delta"]).astype(np.float32)
    med = ort_session(folder / "model.onnx").run(["median"], {"values": g})[0][0]
    want = np.maximum(x.min() + x.std() * (np.exp(med.astype(np.float64)) - rule["delta"]), x.min())
    assert np.allclose(r["forecasts"][0]["mean"], want, rtol=1e-5)
    assert r["forecasts"][0]["id"] == "0"


def test_zero_negative_and_constant_series_get_finite_forecasts(fc_client: TestClient) -> None:
    sparse = np.zeros(120)
    sparse[::17] = [3.0, 0.5, 7.0, 1.0, 0.2, 4.0, 0.1, 2.0]
    series = [
        {"id": "zeros", "values": [0.0] * 60},
        {"id": "const", "values": [7.0] * 60},
        {"id": "temps", "values": _wave(96, offset=-3.0, amp=5.0)},
        {"id": "returns", "values": list(np.random.default_rng(0).normal(0, 1, 72))},
        {"id": "sparse", "values": sparse.tolist()},  # mostly zero, never negative
    ]
    r = fc_client.post("/forecast", json={"series": series, "horizon": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    f = {x["id"]: x for x in body["forecasts"]}
    for x in f.values():
        assert np.isfinite(x["mean"]).all() and np.isfinite(x["lo-95"]).all()
    # constant series: that constant, exactly, with zero-width intervals, and a warning
    for sid, c in (("zeros", 0.0), ("const", 7.0)):
        for key in ("mean", "lo-80", "hi-80", "lo-95", "hi-95"):
            assert f[sid][key] == [c] * 24, (sid, key)
        assert any(f"series '{sid}' is constant" in w for w in body["warnings"])
    assert np.min(f["temps"]["mean"]) < 0  # negative values come back negative, not clipped
    # a history that never goes below zero never gets a negative forecast or bound
    for key in ("mean", "lo-80", "lo-95"):
        assert np.min(f["sparse"][key]) >= 0.0, key


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
    for n in (24, 30, 47, 48, 100):
        s = rng.normal(size=n)
        assert np.array_equal(last_window(s, 48, 24), ref.last_window(s, 48, 24))


def test_card_documents_the_contract(tiny_forecast_models: Path) -> None:
    card = json.loads(
        (tiny_forecast_models / "forecast" / "tiny-fc" / "1" / "card.json").read_text()
    )
    for key in ("window", "max_horizon", "freq", "seasonal_period", "intervals", "preprocessing"):
        assert key in card


@pytest.mark.parametrize("length", [60, 200])
def test_intervals_match_training_reference_rule(
    fc_client: TestClient, tiny_forecast_models: Path, length: int
) -> None:
    """Global intervals (60 values: no backtest fits) and per-series ones (200 values: one
    backtest of max_horizon), against the training code's rule and the card's per-series rule
    written out: one factor = the conformal 80% quantile of the backtest's scores over the
    global 80% multipliers (targets below the window's floor left out), clipped to [1/4, 4]."""
    from training.common.onnx_utils import ort_session
    from training.forecast.train import intervals_scaled

    folder = tiny_forecast_models / "forecast" / "tiny-fc" / "1"
    card = json.loads((folder / "card.json").read_text())
    rule, ps = card["preprocessing"]["normalise"], card["intervals"]["per_series"]
    sc = Scaling(rule["rule"], rule["delta"], 24, rule["clip"])
    values = np.asarray(_wave(length, offset=-2.0, amp=8.0))
    values += np.random.default_rng(3).normal(0, 2.0, length)  # noisier than training data
    body = fc_client.post(
        "/forecast",
        json={"series": [{"values": values.tolist()}], "horizon": 24, "level": [80, 99.5]},
    ).json()["forecasts"][0]
    sess = ort_session(folder / "model.onnx")

    def graph(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        n = sc.stats(x)
        med, q = sess.run(["median", "quantiles"], {"values": sc.encode(x, n).astype(np.float32)})
        return med.astype(np.float64), q.astype(np.float64), n

    x = values[-48:][None]
    table = np.asarray(card["intervals"]["table"])
    assert ps["rule"] == "scaled" and ps["max_origins"] == 1
    origins = [length - 24] if length - 24 >= 48 else []
    per_series = len(origins) >= ps["min_origins"]
    assert body["calibration"] == ("series" if per_series else "global")
    assert body["backtests"] == (len(origins) if per_series else 0)
    for level in (80, 99.5):
        lo, hi = intervals_scaled(sc, *graph(x), table, level)
        if per_series:  # the global multipliers times the conformal ratio of own errors
            bx = np.stack([values[o - 48 : o] for o in origins])
            by = np.stack([values[o : o + 24] for o in origins])
            bm, bq, bn = graph(bx)
            bs = np.maximum(0.5 * (bq[..., 2] - bq[..., 0]), 1e-6)
            scores = np.abs(sc.encode(by, bn) - bm) / bs
            k80 = interval_k(table, 80, card["intervals"]["levels"])
            r = (scores / k80[None, :])[by >= bn.floor[:, None]]
            m = r.size
            assert m >= ps["min_scores"]
            ratio = np.sort(r)[min(m, int(np.ceil((m + 1) * 80 / 100))) - 1]
            ratio = min(max(ratio, 1 / ps["max_ratio"]), ps["max_ratio"])
            k = interval_k(table, level, card["intervals"]["levels"])
            med, q, n = graph(x)
            spread = np.maximum(0.5 * (q[..., 2] - q[..., 0]), 1e-6)
            lo = sc.decode(med - ratio * k * spread, n)
            hi = sc.decode(med + ratio * k * spread, n)
        assert np.allclose(body[f"lo-{level:g}"], lo[0], rtol=1e-4, atol=1e-4)
        assert np.allclose(body[f"hi-{level:g}"], hi[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("horizon", [1, 2, 24])
def test_per_series_intervals_are_nested_and_do_not_depend_on_the_horizon(
    fc_client: TestClient, horizon: int
) -> None:
    rng = np.random.default_rng(5)
    values = np.asarray(_wave(300)) + rng.normal(0, 3.0, 300)
    levels = [50, 80, 95, 99.5]
    body = {"series": [{"values": values.tolist()}], "level": levels}
    f = fc_client.post("/forecast", json={**body, "horizon": horizon}).json()["forecasts"][0]
    full = fc_client.post("/forecast", json={**body, "horizon": 24}).json()["forecasts"][0]
    assert f["calibration"] == "series"
    for a, b in zip(levels, levels[1:], strict=False):
        assert (np.asarray(f[f"lo-{b:g}"]) <= np.asarray(f[f"lo-{a:g}"])).all()
        assert (np.asarray(f[f"hi-{a:g}"]) <= np.asarray(f[f"hi-{b:g}"])).all()
        assert (np.asarray(f[f"hi-{a:g}"]) < np.asarray(f[f"hi-{b:g}"])).any()  # not all equal
    for key in ("mean", "lo-80", "hi-80", "lo-99.5", "hi-99.5"):
        assert np.allclose(f[key], full[key][:horizon], rtol=1e-9)
