"""Open Inference Protocol (KServe v2) routes over the shipped models, in process.

Requests follow the protocol's published examples (an ``id`` echoed back, request and tensor
``parameters``, requested ``outputs``, nested or flat ``data``) with this server's tensors.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS

SENT = "/v2/models/sst2-imdb-bilstm"
LM = "/v2/models/wikitext2-lstm"
FC = "/v2/models/m4-hourly-gru"


def text_input(*texts: str, **extra: object) -> dict[str, object]:
    return {
        "name": "text",
        "shape": [len(texts)],
        "datatype": "BYTES",
        "data": list(texts),
        **extra,
    }


def out(resp: dict[str, object], name: str) -> dict[str, object]:
    return next(o for o in resp["outputs"] if o["name"] == name)  # type: ignore[attr-defined,index]


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "seqserve" and isinstance(meta["extensions"], list)
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_model_metadata_lists_tensors(client: TestClient) -> None:
    m = client.get(SENT).json()
    assert m["name"] == "sst2-imdb-bilstm" and m["versions"] == ["1"]
    assert m["platform"] == "onnxruntime_onnx"
    assert m["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    probs = next(o for o in m["outputs"] if o["name"] == "probabilities")
    assert probs["datatype"] == "FP32" and probs["shape"] == [-1, 2]
    assert probs["parameters"]["labels"] == ["negative", "positive"]
    fc = client.get(f"{FC}/versions/1").json()
    assert fc["versions"] == ["1"] and fc["inputs"][0]["name"] == "values"
    assert {o["name"] for o in fc["outputs"]} >= {"mean", "lo-80", "hi-95"}
    assert client.get(f"{SENT}/ready").json()["ready"] is True
    assert client.get(f"{SENT}/versions/1/ready").status_code == 200


def test_unknown_model_or_version_is_a_protocol_404(client: TestClient) -> None:
    for path in ("/v2/models/nope", f"{SENT}/versions/9", "/v2/models/nope/ready"):
        r = client.get(path)
        assert r.status_code == 404
        assert isinstance(r.json()["error"], str) and "no model" in r.json()["error"]
    r = client.post("/v2/models/nope/infer", json={"inputs": [text_input("x")]})
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_sentiment_infer_echoes_id_and_honours_requested_outputs(client: TestClient) -> None:
    body = {
        "id": "42",
        "parameters": {"custom": "ignored"},
        "inputs": [
            text_input(
                "a gorgeous, witty, moving film",
                "dull, tedious and flat",
                parameters={"content_type": "str"},
            )
        ],
        "outputs": [{"name": "probabilities"}, {"name": "label"}],
    }
    r = client.post(f"{SENT}/infer", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["id"] == "42" and res["model_name"] == "sst2-imdb-bilstm"
    assert res["model_version"] == "1"
    assert [o["name"] for o in res["outputs"]] == ["probabilities", "label"]  # as requested
    assert out(res, "label")["data"] == ["positive", "negative"]
    probs = out(res, "probabilities")
    assert probs["shape"] == [2, 2] and probs["datatype"] == "FP32"
    p = np.asarray(probs["data"]).reshape(2, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # the same numbers as the task route
    task = client.post(
        "/sentiment", json={"text": "a gorgeous, witty, moving film", "model": "sst2-imdb-bilstm"}
    ).json()
    assert p[0, 1] == pytest.approx(task["probabilities"]["positive"], abs=1e-6)


def test_sentiment_all_outputs_and_nested_data(client: TestClient) -> None:
    empty = client.post(f"{SENT}/infer", json={"inputs": [text_input("great")], "outputs": []})
    assert len(empty.json()["outputs"]) == 5  # an empty list asks for every output
    body = {
        "inputs": [
            {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["great"], ["awful"]]}
        ]
    }
    res = client.post(f"{SENT}/infer", json=body).json()
    assert {o["name"] for o in res["outputs"]} == {
        "label",
        "probabilities",
        "score",
        "tokens",
        "truncated",
    }
    assert "id" not in res
    assert out(res, "truncated") == {
        "name": "truncated",
        "datatype": "BOOL",
        "shape": [2],
        "data": [False, False],
    }
    assert out(res, "tokens")["data"] == [1, 1]


def test_next_word_state_continuation(client: TestClient) -> None:
    first = client.post(
        f"{LM}/infer",
        json={"parameters": {"k": 3, "cache": False}, "inputs": [text_input("Happy birthday ,")]},
    ).json()
    words = out(first, "words")
    assert words["shape"] == [1, 3] and len(words["data"]) == 3
    state = out(first, "state")["data"][0]
    cont = client.post(
        f"{LM}/infer",
        json={
            "parameters": {"k": 3, "cache": False},  # the cache covers one request's text
            "inputs": [
                text_input("my"),
                {"name": "state", "shape": [1], "datatype": "BYTES", "data": [state]},
            ],
            "outputs": [{"name": "words"}, {"name": "probabilities"}],
        },
    ).json()
    whole = client.post(
        "/next-word", json={"text": "Happy birthday , my", "k": 3, "cache": False}
    ).json()
    assert out(cont, "words")["data"] == [c["word"] for c in whole["candidates"]]
    np.testing.assert_allclose(
        out(cont, "probabilities")["data"],
        [c["probability"] for c in whole["candidates"]],
        rtol=2e-3,
    )


def test_next_word_bad_parameters_and_state(client: TestClient) -> None:
    r = client.post(f"{LM}/infer", json={"parameters": {"k": 0}, "inputs": [text_input("a")]})
    assert r.status_code == 400 and "'k'" in r.json()["error"]
    r = client.post(
        f"{LM}/infer",
        json={
            "inputs": [
                text_input("a", "b"),
                {"name": "state", "shape": [1], "datatype": "BYTES", "data": [""]},
            ]
        },
    )
    assert r.status_code == 400 and "one state per text" in r.json()["error"]
    r = client.post(
        f"{LM}/infer",
        json={
            "inputs": [
                text_input("a"),
                {"name": "state", "shape": [1], "datatype": "BYTES", "data": ["v1.x"]},
            ]
        },
    )
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


def test_forecast_fp32_values_with_horizon_and_levels(client: TestClient) -> None:
    values = [
        [float(10 + (i % 24)) for i in range(96)],
        [float(50 + 3 * (i % 24)) for i in range(96)],
    ]
    res = client.post(
        f"{FC}/infer",
        json={
            "parameters": {"horizon": 12},
            "inputs": [{"name": "values", "shape": [2, 96], "datatype": "FP32", "data": values}],
            "outputs": [{"name": "mean"}, {"name": "lo-90"}, {"name": "hi-90"}],
        },
    ).json()
    assert [o["name"] for o in res["outputs"]] == ["mean", "lo-90", "hi-90"]
    mean = np.asarray(out(res, "mean")["data"]).reshape(2, 12)
    lo = np.asarray(out(res, "lo-90")["data"]).reshape(2, 12)
    hi = np.asarray(out(res, "hi-90")["data"]).reshape(2, 12)
    assert (lo <= mean + 1e-4).all() and (mean <= hi + 1e-4).all()
    task = client.post(
        "/forecast", json={"series": [{"values": values[1]}], "horizon": 12, "level": [90]}
    ).json()["forecasts"][0]
    np.testing.assert_allclose(mean[1], task["mean"], rtol=1e-5)
    np.testing.assert_allclose(hi[1], task["hi-90"], rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        (
            {"inputs": [{"name": "values", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]},
            "shape holds 3",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}
                ]
            },
            "FP32",
        ),
        (
            {"inputs": [{"name": "values", "shape": [1, 2], "datatype": "FP99", "data": [1, 2]}]},
            "datatype",
        ),
        ({"inputs": [{"name": "values", "shape": [-1], "datatype": "FP32", "data": [1]}]}, "shape"),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [2, 2], "datatype": "FP32", "data": [[1], [2, 3]]}
                ]
            },
            "ragged",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 10], "datatype": "FP32", "data": [1] * 10}
                ]
            },
            "at least",
        ),
        (
            {"inputs": [{"name": "v", "shape": [1], "datatype": "FP32", "data": [1]}]},
            "unknown input 'v'",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 48], "datatype": "FP32", "data": [1] * 48}
                ],
                "outputs": [{"name": "median"}],
            },
            "unknown output 'median'",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 48], "datatype": "FP32", "data": [1] * 48}
                ],
                "parameters": {"horizon": 500},
            },
            "horizon",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 48], "datatype": "FP32", "data": [1] * 48}
                ],
                "parameters": {"level": "80,abc"},
            },
            "level",
        ),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 48], "datatype": "FP32", "data": [1e38] * 48}
                ]
            },
            "1e30",
        ),
        ({"inputs": [], "extra": 1}, "unknown field"),
        (
            {
                "inputs": [
                    {"name": "values", "shape": [1, 48], "datatype": "FP32", "data": [1e39] * 48}
                ]
            },
            "do not fit FP32",
        ),
        (
            {"inputs": [{"name": "values", "shape": [1, 1], "datatype": "UINT8", "data": [-1]}]},
            "do not fit UINT8",
        ),
    ],
)
def test_malformed_requests_get_protocol_errors(
    client: TestClient, body: dict[str, object], needle: str
) -> None:
    r = client.post(f"{FC}/infer", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and needle in r.json()["error"], r.json()


def test_not_json_lone_surrogate_and_deep_nesting(client: TestClient) -> None:
    r = client.post(f"{SENT}/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    # a lone surrogate escape is valid JSON: read as U+FFFD, like the task route
    raw = json.dumps({"inputs": [text_input("great \ud800 film")]}).encode()
    assert client.post(f"{SENT}/infer", content=raw).status_code == 200
    deep = (
        b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": '
        + (b"[" * 100_000)
        + b"]" * 100_000
        + b"}]}"
    )
    r = client.post(f"{SENT}/infer", content=deep)
    assert r.status_code in (400, 413) and "error" in r.json()
    r = client.post(f"{SENT}/infer", json={"inputs": [text_input("   ")]})
    assert r.status_code == 400 and "input 'text'[0] is empty" in r.json()["error"]


def _binary_request(
    inputs: list[tuple[dict[str, object], bytes]], outputs: list[dict[str, object]] | None = None
) -> tuple[bytes, str]:
    doc: dict[str, object] = {"inputs": []}
    blobs = []
    for meta, blob in inputs:
        doc["inputs"].append({**meta, "parameters": {"binary_data_size": len(blob)}})  # type: ignore[attr-defined]
        blobs.append(blob)
    if outputs is not None:
        doc["outputs"] = outputs
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), str(len(header))


def _bytes_blob(*items: str) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in items))


def test_binary_tensor_extension(client: TestClient) -> None:
    series = np.tile(np.arange(24, dtype=np.float32) + 10, 4)[None, :]
    body, n = _binary_request(
        [({"name": "values", "shape": [1, 96], "datatype": "FP32"}, series.tobytes())],
        [{"name": "mean", "parameters": {"binary_data": True}}, {"name": "lo-80"}],
    )
    r = client.post(
        f"{FC}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": n, "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    h = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:h])
    mean_meta = out(header, "mean")
    assert "data" not in mean_meta and mean_meta["parameters"]["binary_data_size"] == 48 * 4
    mean = np.frombuffer(r.content[h:], dtype="<f4")
    task = client.post("/forecast", json={"series": [{"values": series[0].tolist()}]}).json()
    np.testing.assert_allclose(mean, task["forecasts"][0]["mean"], rtol=1e-5)
    assert len(out(header, "lo-80")["data"]) == 48  # not asked as binary: JSON

    body, n = _binary_request(
        [({"name": "text", "shape": [2], "datatype": "BYTES"}, _bytes_blob("great", "awful"))]
    )
    r = client.post(f"{SENT}/infer", content=body, headers={"Inference-Header-Content-Length": n})
    assert out(r.json(), "label")["data"] == ["positive", "negative"]


@pytest.mark.parametrize(
    ("blob", "size_delta", "header", "needle"),
    [
        (_bytes_blob("ok")[:-1], 0, None, "runs past"),
        (b"\x05\x00\x00\x00\xff\xfe\xfd\xfc\xfb", 0, None, "not UTF-8"),
        (_bytes_blob("ok"), 10, None, "runs past the end"),
        (_bytes_blob("ok") + b"xx", -2, None, "no input claims"),
        (_bytes_blob("ok"), 0, "999999", "Inference-Header-Content-Length"),
    ],
)
def test_malformed_binary_requests(
    client: TestClient, blob: bytes, size_delta: int, header: str | None, needle: str
) -> None:
    doc = {
        "inputs": [
            {
                "name": "text",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob) + size_delta},
            }
        ]
    }
    head = json.dumps(doc).encode()
    r = client.post(
        f"{SENT}/infer",
        content=head + blob,
        headers={"Inference-Header-Content-Length": header or str(len(head))},
    )
    assert r.status_code == 400 and needle in r.json()["error"], r.json()


BODY_CAP = 2000  # a small body limit, so a test can go past it


@pytest.fixture(scope="module")
def keyed_client() -> Iterator[TestClient]:
    settings = Settings(models_dir=MODELS, api_keys=["k1"], max_body_bytes=BODY_CAP)  # type: ignore[list-item]
    with TestClient(create_app(settings)) as c:
        yield c


def test_edge_errors_have_the_protocol_shape(keyed_client: TestClient) -> None:
    assert keyed_client.get("/v2/health/ready").status_code == 200  # probes stay open
    r = keyed_client.post(f"{SENT}/infer", json={"inputs": [text_input("great")]})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    auth = {"Authorization": "Bearer k1"}
    r = keyed_client.post(
        f"{SENT}/infer", json={"inputs": [text_input("x" * 2 * BODY_CAP)]}, headers=auth
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = keyed_client.post(f"{SENT}/infer", json={"inputs": [text_input("great")]}, headers=auth)
    assert r.status_code == 200
    # the task routes keep their own error shape
    r = keyed_client.post("/sentiment", json={"text": "great"})
    assert r.json()["error"]["code"] == "unauthorized"


def test_metrics_count_v2_requests_per_model(client: TestClient) -> None:
    def count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("seqserve_request_seconds_count{") and (
                'model="sst2-imdb-bilstm:1"' in line and "/v2/models/{name}/infer" in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    for _ in range(3):
        client.post(f"{SENT}/infer", json={"inputs": [text_input("great")]})
    assert count() == before + 3


# The protocol document's own example request, verbatim ("input1" holds one element of
# a [3] shape there: the example is not self-consistent, so the codec must say so).
SPEC_EXAMPLE = {
    "id": "42",
    "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
    ],
    "outputs": [{"name": "output0"}],
}


def test_codec_reads_the_spec_example() -> None:
    from app.api import oip
    from app.errors import InvalidInput

    with pytest.raises(InvalidInput, match="input 'input1': shape holds 3 elements but data has 1"):
        oip.parse_request(json.dumps(SPEC_EXAMPLE).encode())
    fixed = json.loads(json.dumps(SPEC_EXAMPLE))
    fixed["inputs"][1]["data"] = [True, False, True]
    req = oip.parse_request(json.dumps(fixed).encode())
    assert req.id == "42" and [o.name for o in req.outputs or []] == ["output0"]
    t0, t1 = req.inputs["input0"], req.inputs["input1"]
    assert t0.data.dtype == np.uint32 and t0.data.tolist() == [[1, 2], [3, 4]]
    assert t1.data.dtype == np.bool_ and t1.shape == [3]
    # the spec's response example, written back by the encoder
    body, header_len = oip.encode_response(
        "mymodel",
        "1",
        [
            oip.Tensor(
                "output0",
                "FP32",
                np.asarray([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]], dtype=np.float32),
            )
        ],
        req,
    )
    assert header_len is None
    assert json.loads(body) == {
        "model_name": "mymodel",
        "model_version": "1",
        "id": "42",
        "outputs": [
            {
                "name": "output0",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [1.0, 1.1, 2.0, 2.1, 3.0, 3.1],
            }
        ],
    }


def test_spec_example_against_a_real_model_names_the_problem(client: TestClient) -> None:
    fixed = json.loads(json.dumps(SPEC_EXAMPLE))
    fixed["inputs"][1]["data"] = [True, False, True]
    r = client.post(f"{SENT}/infer", json=fixed)
    assert r.status_code == 400 and r.json() == {
        "error": "unknown input 'input0'; this model takes text"
    }


@pytest.mark.parametrize("binary", [False, True])
def test_a_large_v2_body_is_parsed_in_a_worker_thread_inside_the_gate(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, binary: bool
) -> None:
    """v2 bodies were parsed on the event loop (~70 ms for 8 MB of FP32) outside the gate."""
    import asyncio

    from app.api import oip as codec
    from app.api.offload import OFFLOAD_BODY_BYTES

    gate = client.app.state.large_bodies  # type: ignore[attr-defined]
    seen: list[tuple[bool, bool]] = []
    real = codec.parse_request

    def spy(body: bytes, header_length: str | None = None) -> object:
        try:
            on_loop = asyncio.get_running_loop() is not None
        except RuntimeError:  # a worker thread
            on_loop = False
        seen.append((on_loop, gate._value < gate_size))
        return real(body, header_length)

    gate_size = gate._value
    monkeypatch.setattr(codec, "parse_request", spy)
    series = (np.arange(300 * 96, dtype=np.float32).reshape(300, 96) % 24 + 10.125).astype("f4")
    if binary:
        body, n = _binary_request(
            [({"name": "values", "shape": [300, 96], "datatype": "FP32"}, series.tobytes())],
            [{"name": "mean", "parameters": {"binary_data": True}}],
        )
        headers = {"Inference-Header-Content-Length": n}
    else:
        doc = {"inputs": [{"name": "values", "shape": [300, 96], "datatype": "FP32"}]}
        doc["inputs"][0]["data"] = series.tolist()  # type: ignore[index]
        body, headers = json.dumps(doc).encode(), {"content-type": "application/json"}
    assert len(body) >= OFFLOAD_BODY_BYTES
    r = client.post(f"{FC}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert seen == [(False, True)]  # a worker thread, holding a place of the gate
    if binary:
        h = int(r.headers["inference-header-content-length"])
        assert len(r.content) - h == 300 * 48 * 4  # the model's horizon (48) per series, FP32
    small = client.post(f"{SENT}/infer", json={"inputs": [text_input("great")]})
    assert small.status_code == 200 and len(seen) == 2 and seen[1][0]  # small: on the loop
