"""The last 500s (issue 20): edge values each get a 4xx naming the field, in the API's error
shape (REST and /v2), and no response leaks a server path or echoes a huge value back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.routes.models import redact_paths, redact_text
from app.main import create_app
from app.observability import TextFormatter
from app.settings import Settings

LM = "/v2/models/wikitext2-lstm/infer"
SENT = "/v2/models/sst2-bilstm/infer"
VALUES = [float(100 + 20 * ((h % 24) > 8)) for h in range(96)]
JSON = {"content-type": "application/json"}


def text_input(*texts: str) -> dict[str, object]:
    return {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}


def rest_error(r, status: int = 422) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    return str(r.json()["error"]["message"])


def v2_error(r) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == 400, r.text
    return str(r.json()["error"])


# --- 1. temperature ---------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1e-310, 5e-324, 0.0009])
def test_subnormal_temperature_is_refused_by_name(client: TestClient, t: float) -> None:
    body = json.dumps({"text": "The game", "complete": 2, "temperature": t})
    assert "temperature" in rest_error(client.post("/next-word", content=body, headers=JSON))
    v2 = {"inputs": [text_input("The game")], "parameters": {"complete": 2, "temperature": t}}
    assert "'temperature'" in v2_error(client.post(LM, content=json.dumps(v2)))


def test_smallest_documented_temperature_samples(client: TestClient) -> None:
    r = client.post("/next-word", json={"text": "The game", "complete": 3, "temperature": 1e-3})
    assert r.status_code == 200, r.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]["NextWordRequest"]
    assert {"const": 0} in schema["properties"]["temperature"]["anyOf"]
    assert {"minimum": 1e-3} in schema["properties"]["temperature"]["anyOf"]


# --- 2. forecast timestamps -------------------------------------------------------------------


def test_timestamps_past_year_9999_name_start(client: TestClient) -> None:
    series = {"values": VALUES, "start": "9999-12-31", "freq": "h"}
    assert "start" in rest_error(client.post("/forecast", json={"series": [series]}))


@pytest.mark.parametrize("freq", ["99999999999999999999h", "9999999999h", "0h", "00min", "ſ"])
def test_impossible_freq_is_refused_by_name(client: TestClient, freq: str) -> None:
    series = {"values": VALUES, "start": "2020-01-01", "freq": freq}
    message = rest_error(client.post("/forecast", json={"series": [series]}))
    assert message.startswith("series[0].freq:"), message


def test_ordinary_freqs_still_give_timestamps(client: TestClient) -> None:
    series = {"values": VALUES, "start": "2020-01-01", "freq": " 15MIN "}
    r = client.post("/forecast", json={"series": [series], "horizon": 2})
    assert r.status_code == 200, r.text
    assert r.json()["forecasts"][0]["timestamps"] == ["2020-01-02T00:00:00", "2020-01-02T00:15:00"]


# --- 3. lone surrogates -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/forecast", "/anomaly"])
def test_lone_surrogate_in_a_series_id_is_a_4xx(client: TestClient, path: str) -> None:
    body = '{"series": [{"id": "\\ud800", "values": ' + json.dumps(VALUES) + "}]}"
    r = client.post(path, content=body, headers=JSON)
    assert "series[0].id" in rest_error(r)
    r.content.decode("utf-8")  # the response is valid UTF-8


def test_lone_surrogate_in_the_v2_id_is_a_400(client: TestClient) -> None:
    body = '{"id": "\\ud800", "inputs": [' + json.dumps(text_input("good")) + "]}"
    assert v2_error(client.post(SENT, content=body)).startswith("id ")


def test_rest_and_v2_share_one_lone_surrogate_check(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.api.oip as oip
    import app.services.common as common

    assert oip.has_surrogates is common.has_surrogates  # one check, not a copy per face
    assert not hasattr(oip, "_is_unicode")
    for text in ("\ud800", "ok \udfff", "\ud83d"):
        assert common.has_surrogates(text)
    for text in ("plain", "caf\u00e9", "\U0001f600"):
        assert not common.has_surrogates(text)
    seen: list[str] = []
    monkeypatch.setattr(oip, "has_surrogates", lambda t: seen.append(t) or False)
    body = json.dumps({"id": "req-7", "inputs": [text_input("good")]})
    assert client.post(SENT, content=body).status_code == 200
    assert seen == ["req-7"]  # the v2 parser asks the shared check


# --- 4. v2 tensors and parameters -------------------------------------------------------------


def test_v2_shape_with_65_dimensions_is_a_400(client: TestClient) -> None:
    tensor = {**text_input("good"), "shape": [1] * 65}
    assert "65 dimensions" in v2_error(client.post(SENT, json={"inputs": [tensor]}))
    tensor = {**text_input(), "shape": [0] + [2**31 - 1] * 4}
    assert "shape" in v2_error(client.post(SENT, json={"inputs": [tensor]}))


def test_non_ascii_digit_header_length_is_a_400(client: TestClient) -> None:
    body = json.dumps({"inputs": [text_input("good")]}).encode()
    r = client.post(SENT, content=body, headers={"Inference-Header-Content-Length": b"\xb2"})
    assert "Inference-Header-Content-Length" in v2_error(r)


def test_v2_outputs_must_be_a_list(client: TestClient) -> None:
    r = client.post(SENT, json={"inputs": [text_input("good")], "outputs": {}})
    assert v2_error(r).startswith("outputs must be a list")
    r = client.post(SENT, json={"inputs": [text_input("good")], "outputs": []})
    assert r.status_code == 200  # [] still means every output


def test_v2_string_for_an_integer_parameter_is_a_400(client: TestClient) -> None:
    r = client.post(LM, json={"inputs": [text_input("The")], "parameters": {"k": "5"}})
    assert "'k'" in v2_error(r)
    for k in (3, 3.0):  # JSON does not tell 3 from 3.0
        r = client.post(LM, json={"inputs": [text_input("The")], "parameters": {"k": k}})
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 3]
    r = client.post("/next-word", json={"text": "The", "k": "3"})
    assert rest_error(r).startswith("k:")


# --- 5. forecast levels -----------------------------------------------------------------------


def test_levels_are_labelled_exactly(client: TestClient) -> None:
    body = {"series": [{"values": VALUES}], "horizon": 2, "level": [99.99999999, 80, 99.5]}
    item = client.post("/forecast", json=body).json()["forecasts"][0]
    assert {k for k in item if k.startswith("lo-")} == {"lo-80", "lo-99.5", "lo-99.99999999"}
    assert "lo-100" not in item
    body["level"] = [80, 80.0000000001]
    item = client.post("/forecast", json=body).json()["forecasts"][0]
    assert {k for k in item if k.startswith("lo-")} == {"lo-80", "lo-80.0000000001"}


def test_a_level_sent_twice_is_refused_by_name(client: TestClient) -> None:
    body = {"series": [{"values": VALUES}], "level": [80, 80.0]}
    message = rest_error(client.post("/forecast", json=body))
    assert message.startswith("level:") and "80" in message
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ForecastRequest"]
    assert schema["properties"]["level"]["uniqueItems"] is True


@pytest.mark.parametrize("level", [[80, 80.0], "80,80", [95, 80, 95.0], "99.99999999,99.99999999"])
def test_v2_refuses_a_level_sent_twice_like_rest(client: TestClient, level: object) -> None:
    req = {
        "inputs": [{"name": "values", "shape": [1, 96], "datatype": "FP64", "data": VALUES}],
        "parameters": {"level": level},
    }
    v2 = v2_error(client.post("/v2/models/m4-hourly-gru/infer", json=req))
    levels = level if isinstance(level, list) else [float(x) for x in str(level).split(",")]
    rest = rest_error(
        client.post("/forecast", json={"series": [{"values": VALUES}], "level": levels})
    )
    assert v2.startswith("parameter 'level': ") and rest.startswith("level: ")
    assert v2.removeprefix("parameter 'level': ") == rest.removeprefix("level: ")  # one message
    assert "send each level once" in v2


def test_v2_outputs_naming_one_level_twice_are_not_a_duplicate(client: TestClient) -> None:
    req = {
        "inputs": [{"name": "values", "shape": [1, 96], "datatype": "FP64", "data": VALUES}],
        "outputs": [{"name": "lo-80"}, {"name": "hi-80"}],
    }
    r = client.post("/v2/models/m4-hourly-gru/infer", json=req)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["lo-80", "hi-80"]


def test_v2_level_outputs_use_the_same_labels(client: TestClient) -> None:
    req = {
        "inputs": [{"name": "values", "shape": [1, 96], "datatype": "FP64", "data": VALUES}],
        "parameters": {"level": [99.99999999]},
    }
    r = client.post("/v2/models/m4-hourly-gru/infer", json=req)
    assert r.status_code == 200, r.text
    assert {o["name"] for o in r.json()["outputs"]} == {
        "mean",
        "lo-99.99999999",
        "hi-99.99999999",
        "backtests",
    }


# --- 6. empty state ---------------------------------------------------------------------------


def test_empty_state_is_a_4xx_not_a_fresh_start(client: TestClient) -> None:
    assert rest_error(client.post("/next-word", json={"text": "The", "state": ""})).startswith(
        "state:"
    )


# --- 8. no server paths -----------------------------------------------------------------------


def test_cards_are_served_without_server_paths(client: TestClient) -> None:
    for name in ("wikitext2-lstm", "nab-gru"):
        r = client.get(f"/v1/models/{name}")
        assert r.status_code == 200
        assert "/work/" not in r.text and "/shared/" not in r.text, name
    card = client.get("/v1/models/wikitext2-lstm").json()["versions"][0]["card"]
    assert card["training"]["checkpoint"] == "best.pt"
    assert card["training"]["train_config"]["train_file"] == "train.txt"
    urls = json.dumps(card["datasets"])
    assert "https://huggingface.co/datasets/Salesforce/wikitext" in urls  # URLs are left alone


def test_failure_lines_are_relative_to_the_models_folder(client: TestClient) -> None:
    registry = client.app.state.container.registry  # type: ignore[attr-defined]
    root = registry.models_dir
    reason = (
        f"cannot load {root}/forecast/broken/1/model.onnx: [ONNXRuntimeError] Load model from "
        "/var/cache/other/model.onnx failed"
    )
    registry.failed["forecast/broken:1"] = reason
    try:
        for path in ("/readyz", "/v1/models"):
            failed = client.get(path).json()["failed"]
            assert failed["forecast/broken:1"] == (
                "cannot load forecast/broken/1/model.onnx: [ONNXRuntimeError] Load model from "
                "model.onnx failed"
            ), path
        assert registry.failed["forecast/broken:1"] == reason  # the log keeps the full path
    finally:
        del registry.failed["forecast/broken:1"]


def test_no_model_loaded_line_has_no_server_path(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "forecast" / "broken" / "1").mkdir(parents=True)
    with TestClient(create_app(Settings(models_dir=root))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "forecast/broken:1" in r.text
        assert str(tmp_path) not in r.text


def test_redaction_rules() -> None:
    root = Path("/srv/seqserve/models")
    assert redact_text("cannot read /srv/seqserve/models/lm/x/1/card.json", root) == (
        "cannot read lm/x/1/card.json"
    )
    assert redact_text("'/home/alice/runs/x/best.pt' is missing") == "'best.pt' is missing"
    assert redact_text("see https://a.org/b/c and POST /forecast or a/b/c") == (
        "see https://a.org/b/c and POST /forecast or a/b/c"
    )
    assert redact_paths({"a": ["/x/y/z.csv", 1]}) == {"a": ["z.csv", 1]}


# --- 9. echoes are short ----------------------------------------------------------------------


def test_a_huge_echoed_value_is_truncated(client: TestClient) -> None:
    r = client.get("/v1/models/" + "a" * 60_000)
    assert r.status_code == 404 and len(r.content) < 2_000
    assert "\u2026" in r.json()["error"]["message"]
    r = client.post("/sentiment", json={"text": "good", "model": "m" * 1_000_000})
    assert r.status_code == 404 and len(r.content) < 2_000
    r = client.post("/sentiment", json={"text": "good", "x" * 100_000: 1})
    assert r.status_code == 422 and len(r.content) < 2_000
    r = client.post(SENT, json={"inputs": [{**text_input("good"), "name": "n" * 100_000}]})
    assert r.status_code == 400 and len(r.content) < 2_000


# --- 10. text log lines -----------------------------------------------------------------------


def test_text_log_lines_carry_the_request_fields() -> None:
    record = logging.LogRecord("seqserve.access", logging.INFO, "", 0, "request", None, None)
    fields = {
        "request_id": "req-1",
        "method": "POST",
        "route": "/sentiment",
        "status": 200,
        "latency_ms": 3.25,
        "model": "sst2-bilstm:1",
        "timings_ms": {"queue": 0.5},
    }
    record.__dict__.update(fields)
    line = TextFormatter().format(record)
    assert "\n" not in line and line.split(": ", 1)[1].startswith("request ")
    for part in (
        "method=POST",
        "route=/sentiment",
        "status=200",
        "latency_ms=3.25",
        "request_id=req-1",
        "model=sst2-bilstm:1",
        'timings_ms={"queue":0.5}',
    ):
        assert part in line, line
