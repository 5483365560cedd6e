"""A real ``seqserve serve --workers 2`` driven by NVIDIA's own ``tritonclient.http``.

Shows an existing Open Inference Protocol client works unchanged (its defaults send and ask
for binary tensors), and that ``/metrics`` sums per-model histograms over worker processes:
whichever worker answers the scrape, the counts cover every request.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import REPO
from tests.helpers import free_port, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path_factory.mktemp("srv") / "server.log"
    env = {
        **os.environ,
        "SEQSERVE_STATE_SECRET": "test-secret-0123456789abcdef0123456789",
        "SEQSERVE_LOG_FORMAT": "json",
    }
    # `serve --workers 2` makes its own multiprocess directory (an empty value would make
    # prometheus-client write into the working directory)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with serving(["--port", str(port), "--workers", "2"], env, REPO, log):
        yield f"127.0.0.1:{port}", log


def test_tritonclient_health_and_metadata(server: tuple[str, Path]) -> None:
    c = triton.InferenceServerClient(server[0])
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("sst2-imdb-bilstm")
    assert c.get_server_metadata()["name"] == "seqserve"
    meta = c.get_model_metadata("m4-hourly-gru")
    assert meta["inputs"][0] == {
        "name": "values",
        "datatype": "FP32",
        "shape": [-1, -1],
        "parameters": {"meaning": "one series per row, oldest first"},
    }
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        c.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_sentiment(server: tuple[str, Path], binary: bool) -> None:
    c = triton.InferenceServerClient(server[0])
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(
        np.array([b"a gorgeous, witty film", b"dull and tedious"], dtype=object), binary_data=binary
    )
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")
    ]
    res = c.infer("sst2-imdb-bilstm", [text], outputs=outputs, request_id="r-1")
    assert res.get_response()["id"] == "r-1"
    assert [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("label")] == [
        "positive",
        "negative",
    ]
    probs = res.as_numpy("probabilities")
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_tritonclient_forecast_and_next_word(server: tuple[str, Path]) -> None:
    c = triton.InferenceServerClient(server[0])
    values = np.tile(np.arange(24, dtype=np.float32) + 10, (3, 4))
    x = triton.InferInput("values", list(values.shape), "FP32")
    x.set_data_from_numpy(values)
    res = c.infer(
        "m4-hourly-gru",
        [x],
        parameters={"horizon": 6, "level": 90},
        outputs=[triton.InferRequestedOutput(n) for n in ("mean", "lo-90", "hi-90")],
    )
    mean, lo, hi = (res.as_numpy(n) for n in ("mean", "lo-90", "hi-90"))
    assert mean.shape == (3, 6) and (lo <= mean).all() and (mean <= hi).all()

    t = triton.InferInput("text", [1], "BYTES")
    t.set_data_from_numpy(np.array([b"Happy birthday ,"], dtype=object))
    off = {"k": 4, "cache": False}  # the state is exact; the cache covers one request's text
    first = c.infer("wikitext2-lstm", [t], parameters=off)
    state = first.as_numpy("state")
    assert first.as_numpy("words").shape == (1, 4)
    t2 = triton.InferInput("text", [1], "BYTES")
    t2.set_data_from_numpy(np.array([b"my"], dtype=object))
    s = triton.InferInput("state", [1], "BYTES")
    s.set_data_from_numpy(state)
    cont = c.infer("wikitext2-lstm", [t2, s], parameters=off)
    whole = triton.InferInput("text", [1], "BYTES")
    whole.set_data_from_numpy(np.array([b"Happy birthday , my"], dtype=object))
    ref = c.infer("wikitext2-lstm", [whole], parameters=off)
    assert list(cont.as_numpy("words")[0]) == list(ref.as_numpy("words")[0])

    bad = triton.InferInput("values", [1, 3], "FP32")
    bad.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="at least"):
        c.infer("m4-hourly-gru", [bad])


def _counts(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("seqserve_request_seconds_count{") and 'route="/sentiment"' in line:
            model = line.split('model="', 1)[1].split('"', 1)[0]
            out[model] = float(line.rsplit(" ", 1)[1])
    return out


def test_metrics_are_summed_over_workers_and_logs_carry_request_ids(
    server: tuple[str, Path],
) -> None:
    url, log = server
    before = _counts(url).get("sst2-imdb-bilstm:1", 0.0)
    n = 30
    for i in range(n):
        req = urllib.request.Request(
            f"http://{url}/sentiment",
            data=json.dumps({"text": "a fine film", "model": "sst2-imdb-bilstm"}).encode(),
            headers={"content-type": "application/json", "x-request-id": f"mp-{i}"},
        )
        # a new connection each time, so the kernel spreads them over both workers
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.headers["x-request-id"] == f"mp-{i}"
    # The edge counts a request just after its response is sent: give the last one a moment.
    deadline = time.monotonic() + 2
    while _counts(url)["sst2-imdb-bilstm:1"] < before + n and time.monotonic() < deadline:
        time.sleep(0.02)
    # every scrape (whichever worker answers it) sees all n requests
    for _ in range(5):
        assert _counts(url)["sst2-imdb-bilstm:1"] == before + n
    time.sleep(0.2)
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "seqserve.access"]
    ours = [x for x in access if str(x.get("request_id", "")).startswith("mp-")]
    assert len(ours) == n
    assert all(x["model"] == "sst2-imdb-bilstm:1" and x["status"] == 200 for x in ours)
    assert "a fine film" not in log.read_text()  # the user's text is never logged
