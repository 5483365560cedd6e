"""A fifth task served by its registration alone: no edit to the container, the app factory,
the edge middleware, the v2 face or the command line.

The toy task "echo-sum" sums each row of a float matrix with a one-node ONNX graph built here
(``onnx.helper``, no torch). Its card type, service, REST route, v2 adapter and predict entry are
declared in this file and registered for the tests below only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app.api.deps import ContainerDep
from app.api.oip import InferRequest, Tensor
from app.api.oip_models import meta, series_matrix
from app.batching import Batcher
from app.container import Container
from app.main import create_app
from app.predict import run_with_container
from app.registry import ModelRecord
from app.services.base import TaskService
from app.settings import Settings
from app.tasks import (
    PredictEntry,
    TaskRegistrationError,
    TaskSpec,
    register,
    tasks,
    unregister,
)
from contract.card import Header

TASK = "echo-sum"

# --- the task, declared as a new task module would declare it --------------------------------


class EchoSumCard(Header):
    task: Literal["echo-sum"]


class EchoSumModel:
    def __init__(self, rec: ModelRecord, settings: Settings) -> None:
        self.record = rec
        self.session = rec.sessions["model"]
        self.batcher: Batcher[np.ndarray, float] = Batcher(self._predict, rec.ref, 8)

    def _predict(self, rows: list[np.ndarray]) -> list[float]:
        out = self.session.run({"x": np.stack(rows).astype(np.float32)})["y"]
        return [float(v) for v in out]

    def smoke(self) -> None:
        assert self._predict([np.ones(3, dtype=np.float32)]) == [3.0]

    async def close(self) -> None:
        await self.batcher.close()


class EchoSumService(TaskService[EchoSumModel]):
    task = TASK

    def build(self, rec: ModelRecord) -> EchoSumModel:
        return EchoSumModel(rec, self.settings)

    async def sums(
        self, rows: list[list[float]], ref: str | None
    ) -> tuple[ModelRecord, list[float]]:
        rec, m = self.resolve(ref)
        return rec, await m.batcher.submit_many([np.asarray(r, dtype=np.float32) for r in rows])


class EchoSumRequest(BaseModel):
    values: list[list[float]]
    model: str | None = None


router = APIRouter(tags=[TASK])


@router.post("/echo-sum")
async def echo_sum(request: EchoSumRequest, container: ContainerDep) -> dict[str, Any]:
    rec, sums = await container.get(EchoSumService).sums(request.values, request.model)
    return {"sums": sums, "model": {"name": rec.name, "version": rec.version}}


class EchoSumAdapter:
    task = TASK

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [meta("values", "FP32", [-1, -1])]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [meta("sum", "FP32", [-1])]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        rows = series_matrix(req)  # the shared ``values`` reader of the series tasks
        _, sums = await c.get(EchoSumService).sums(rows.tolist(), ref)
        return [Tensor("sum", "FP32", np.asarray(sums, dtype=np.float32))]


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("values", type=float, nargs="+", help="numbers to add up")


def predict_run(args: argparse.Namespace, st: Settings) -> int:
    async def work(c: Container) -> float:
        return (await c.get(EchoSumService).sums([args.values], args.model))[1][0]

    print(json.dumps({"sum": run_with_container(st, work)}))
    return 0


def spec(**change: Any) -> TaskSpec:
    fields: dict[str, Any] = {
        "name": TASK,
        "card": EchoSumCard,
        "service": lambda ctx: EchoSumService(ctx.registry, ctx.settings),
        "router": router,
        "inference_routes": ("/echo-sum",),
        "adapter": EchoSumAdapter(),
        "predict": PredictEntry("add up numbers", predict_arguments, predict_run),
        "bench": {"echo-sum": ("/echo-sum", {"values": [[1.0, 2.0]]})},
    }
    return TaskSpec(**{**fields, **change})


# --- the model folder ------------------------------------------------------------------------


def write_model(folder: Path) -> None:
    """``y = sum(x, axis=1)`` as ONNX, with a card the registry validates as EchoSumCard."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node],
        "echo_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    card = {
        "schema_version": 2,
        "task": TASK,
        "name": "toy",
        "version": "1",
        "onnx": {"file": "model.onnx", "inputs": [{"name": "x"}], "outputs": [{"name": "y"}]},
    }
    (folder / "card.json").write_text(json.dumps(card))


@pytest.fixture
def registered() -> Iterator[None]:
    tasks()  # the shipped tasks first, so the toy comes after them
    register(spec())
    try:
        yield
    finally:
        unregister(TASK)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    write_model(tmp_path / "models" / TASK / "toy" / "1")
    return tmp_path / "models"


# --- the tests -------------------------------------------------------------------------------


def test_rest_and_v2_answer_by_the_registration_alone(registered: None, models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir))) as c:
        r = c.post("/echo-sum", json={"values": [[1, 2, 3.5], [0, -1, 1]]})
        assert r.status_code == 200, r.text
        assert r.json() == {"sums": [6.5, 0.0], "model": {"name": "toy", "version": "1"}}

        meta_ = c.get("/v2/models/toy").json()
        assert meta_["parameters"]["task"] == TASK
        assert [t["name"] for t in meta_["inputs"]] == ["values"]
        body = {
            "inputs": [
                {"name": "values", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
            ]
        }
        r = c.post("/v2/models/toy/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "sum" and out["data"] == [3.0, 7.0]

        assert "echo-sum/toy:1" not in c.get("/readyz").json().get("failed", {})
        metrics = c.get("/metrics").text
        assert 'route="/echo-sum"' in metrics  # the edge labels the route, not "other"
        assert 'route="/v2/models/{name}/infer"' in metrics


def test_the_edge_limits_the_new_route(registered: None, models_dir: Path) -> None:
    settings = Settings(models_dir=models_dir, max_concurrent_requests=1)
    with TestClient(create_app(settings)) as c:
        limiter = c.app.state.container.limiter  # type: ignore[attr-defined]
        limiter.current = 1
        r = c.post("/echo-sum", json={"values": [[1.0]]})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        limiter.current = 0
        assert c.post("/echo-sum", json={"values": [[1.0]]}).status_code == 200
        rejected = [
            line
            for line in c.get("/metrics").text.splitlines()
            if line.startswith("seqserve_rejected_total{") and 'route="/echo-sum"' in line
        ]
        assert any('reason="in_flight_limit"' in line for line in rejected)


def test_predict_and_bench_list_the_new_task(
    registered: None, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import bench
    from app.cli import main

    assert main(["predict", "echo-sum", "1", "2", "4.5", "--models-dir", str(models_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == {"sum": 7.5}
    assert bench.endpoints()["echo-sum"] == (TASK, "/echo-sum", {"values": [[1.0, 2.0]]})


def test_models_of_an_unregistered_task_are_reported_not_served(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir))) as c:
        assert c.post("/echo-sum", json={"values": [[1.0]]}).status_code == 404
        assert "echo-sum/toy" in str(c.get("/v1/models").json()["failed"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inference_routes": ("/echo-sum", "/echo-sum/other")}, "has no route /echo-sum/other"),
        ({"inference_routes": ()}, "names no inference route"),
        ({"adapter": type("A", (), {"task": "other"})()}, "its v2 adapter serves task 'other'"),
        ({"name": "sentiment"}, "registered twice"),
        ({"card": Header}, r"must declare task: Literal\['echo-sum'\]"),
    ],
)
def test_an_incomplete_registration_fails_at_once(change: dict[str, Any], message: str) -> None:
    tasks()
    with pytest.raises(TaskRegistrationError, match=message):
        register(spec(**change))
    assert TASK not in tasks()


def test_shipped_tasks_are_registered_in_order() -> None:
    assert list(tasks())[:4] == ["sentiment", "next-word", "forecast", "anomaly"]
