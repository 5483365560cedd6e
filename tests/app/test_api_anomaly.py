"""POST /anomaly (and its v2 face) on a tiny detector trained in the test session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

WARMUP = 60  # the fixture's card
MAX_SERIES, MAX_VALUES = 5, 5000  # small request limits, so the tests can go past them


@pytest.fixture(scope="module")
def an(tiny_anomaly_models: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=tiny_anomaly_models, max_series=MAX_SERIES, max_series_values=MAX_VALUES
    )
    with TestClient(create_app(settings)) as c:
        yield c


def wave(n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (20 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n)).tolist()


def scores(c: TestClient, *series: dict[str, object]) -> dict[str, object]:
    r = c.post("/anomaly", json={"series": list(series)})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_scores_one_per_value_in_unit_interval(an: TestClient) -> None:
    res = scores(an, {"id": "a", "values": wave(400)})
    r = res["results"][0]  # type: ignore[index]
    assert r["id"] == "a" and len(r["scores"]) == 400
    s = np.asarray(r["scores"])
    assert ((s >= 0) & (s <= 1)).all() and (s[:WARMUP] == 0).all()
    assert r["anomalies"] == [int(i) for i in np.flatnonzero(s >= r["threshold"])]
    assert res["model"] == {"name": "tiny-an", "version": "1"} and res["warnings"] == []


def test_causal_prefixes_get_the_same_scores(an: TestClient) -> None:
    x = wave(500, seed=3)
    x[300] += 25.0
    whole = np.asarray(scores(an, {"values": x})["results"][0]["scores"])  # type: ignore[index]
    for n in (WARMUP, 61, 120, 301, 499):
        part = scores(an, {"values": x[:n]})["results"][0]["scores"]  # type: ignore[index]
        np.testing.assert_array_equal(np.asarray(part), whole[:n])
    # and batched with other series of other lengths: the same again
    res = scores(
        an,
        {"id": "short", "values": wave(90)},
        {"id": "x", "values": x},
        {"id": "long", "values": wave(3000, seed=9)},
    )
    np.testing.assert_array_equal(np.asarray(res["results"][1]["scores"]), whole)  # type: ignore[index]


def test_missing_values_score_zero_with_a_warning(an: TestClient) -> None:
    x: list[float | None] = list(wave(300))
    x[100] = None
    x[200] = None
    res = scores(an, {"id": "gappy", "values": x})
    s = res["results"][0]["scores"]  # type: ignore[index]
    assert s[100] == 0 and s[200] == 0 and len(s) == 300
    assert "2 missing values" in res["warnings"][0]  # type: ignore[index]
    raw = json.dumps({"series": [{"values": wave(200)[:150] + [float("nan")] * 3}]})
    assert "NaN" in raw  # JSON's non-standard NaN literal, which Python clients send
    r = an.post("/anomaly", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["results"][0]["scores"][-3:] == [0, 0, 0]


def test_constant_short_and_huge_series(an: TestClient) -> None:
    res = scores(
        an,
        {"id": "flat", "values": [7.5] * 400},
        {"id": "short", "values": wave(30)},
        {"id": "big", "values": [v * 1e28 for v in wave(300)]},
    )
    flat, short, big = res["results"]  # type: ignore[misc]
    assert set(flat["scores"]) == {0} and flat["anomalies"] == []
    assert set(short["scores"]) == {0} and "30 values" in res["warnings"][0]  # type: ignore[index]
    assert np.isfinite(big["scores"]).all()
    r = an.post("/anomaly", json={"series": [{"values": [1.0] * 100 + [1e31]}]})
    assert r.status_code == 422 and "values[100]" in r.json()["error"]["message"]


def test_timestamps_checked_and_irregular_spacing_reported(an: TestClient) -> None:
    x = wave(120)
    stamps = [f"2024-01-01T{h // 60:02d}:{h % 60:02d}:00" for h in range(120)]
    ok = scores(an, {"id": "t", "values": x, "timestamps": stamps})
    assert ok["warnings"] == []
    gappy = stamps[:60] + [s.replace("2024-01-01", "2024-01-02") for s in stamps[60:]]
    res = scores(an, {"id": "t", "values": x, "timestamps": gappy})
    assert "irregular" in res["warnings"][0]  # type: ignore[index]
    # real logs repeat or step back (clock changes, glitches): read in order, with a warning
    res = scores(
        an, {"id": "t", "values": x, "timestamps": stamps[:10] + [stamps[5]] + stamps[11:]}
    )
    assert (
        "1 timestamps that are not after the one before (first: timestamps[10])"
        in res["warnings"][0]
    )  # type: ignore[index]
    cases = [
        (stamps[:-1], "119 timestamps"),
        (["yesterday"] + stamps[1:], "timestamps"),
        (stamps[:5] + ["2024-01-01T00:05:00+02:00"] + stamps[6:], "time zone"),
    ]
    for ts, needle in cases:
        r = an.post("/anomaly", json={"series": [{"values": x, "timestamps": ts}]})
        assert r.status_code == 422 and needle in r.json()["error"]["message"], r.json()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"series": []}, 422, "series is empty"),
        ({"series": [{"values": []}]}, 422, "has no values"),
        (
            {"series": [{"id": "a", "values": [1.0]}, {"id": "a", "values": [1.0]}]},
            422,
            "more than once",
        ),
        ({"series": [{"values": [1.0] * (MAX_VALUES + 1)}]}, 413, f"limit is {MAX_VALUES}"),
        ({"series": [{"values": [1.0]}] * (MAX_SERIES + 1)}, 413, f"limit is {MAX_SERIES}"),
        ({"series": [{"values": ["a"]}]}, 422, "values[0]"),
        ({"series": [{"values": [1.0, "2.5"]}]}, 422, "values[1]"),  # no silent coercion
        ({"series": [{"values": [1.0, True]}]}, 422, "values[1]"),
        ({"series": [{"values": [1.0]}], "model": "nope"}, 404, "nope"),
        ({"series": [{"values": [1.0]}], "threshold": 0.1}, 422, "threshold"),
    ],
)
def test_bad_requests(an: TestClient, body: dict[str, object], status: int, needle: str) -> None:
    r = an.post("/anomaly", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_v2_face_matches_the_task_route(an: TestClient) -> None:
    x = wave(200)
    x[150] += 30
    rows = [x, wave(200, seed=4)]
    r = an.post(
        "/v2/models/tiny-an/infer",
        json={"inputs": [{"name": "values", "shape": [2, 200], "datatype": "FP32", "data": rows}]},
    )
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["scores"]["shape"] == [2, 200] and outs["anomalies"]["datatype"] == "BOOL"
    task = scores(an, {"values": np.asarray(x, dtype=np.float32).tolist()})
    np.testing.assert_allclose(
        np.asarray(outs["scores"]["data"]).reshape(2, 200)[0],
        task["results"][0]["scores"],
        atol=1e-6,
    )  # type: ignore[index]
    meta = an.get("/v2/models/tiny-an").json()
    assert meta["outputs"][1]["parameters"]["threshold"] == task["results"][0]["threshold"]  # type: ignore[index]


def test_shipped_detector_flags_the_readme_jump(client: TestClient) -> None:
    """The README's example against the shipped default detector."""
    import math

    v = [round(70 + 3 * math.sin(i / 12) + 0.1 * (i % 5), 2) for i in range(800)]
    v[700] = 95
    res = scores(client, {"id": "machine-1", "values": v})
    r = res["results"][0]  # type: ignore[index]
    assert r["anomalies"] == [700] and res["model"]["name"] == "nab-gru"  # type: ignore[index]
    warmup = client.get("/v1/models/nab-gru").json()["versions"][0]["card"]["scoring"]["warmup"]
    assert set(r["scores"][:warmup]) == {0}
    # causal on the shipped model too
    part = scores(client, {"values": v[:701]})["results"][0]["scores"]  # type: ignore[index]
    assert part == r["scores"][:701]
