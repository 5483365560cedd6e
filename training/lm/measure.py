"""Measure the graphs on the validation text and choose what ships: fp32, or int8 (weight-only
by default, onnxruntime's dynamic quantization measured alongside) when fp32 is over the cap."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.onnx_shared_weights import share_initializers
from training.common.onnx_utils import ort_session, quantize_int8
from training.lm.data import batchify, encode, read_tokens
from training.lm.evaluate import onnx_perplexity, onnx_topk
from training.lm.export_config import MAX_FOLDER_BYTES, ExportConfig
from training.lm.graphs import export_graphs, state_names
from training.lm.model import RNNModel
from training.lm.parity import check_parity
from training.lm.quantize import quantize_weights_int8

WEIGHTS_FILE = "weights.bin"
INT8_MAX_PPL_INCREASE = 0.02  # int8 perplexity may be at most 2 % above fp32
TOPK_STREAMS = 50
Dims = tuple[int, int, list[str], list[str], int]  # layers, hidden, state in/out, threads


@dataclass
class Validation:
    """The validation text as the export measures it: lines, tokens, ids and stream batches."""

    lines: list[str]
    tokens: list[str]
    ids: torch.Tensor
    data: np.ndarray  # [eval_batch_size streams, steps], the training run's protocol
    topk_data: np.ndarray  # more streams: top-k is per position, fewer onnxruntime calls


def load_validation(
    path: Path, limit: int | None, vocab: list[str], text_format: str, streams: int
) -> Validation:
    """The validation text read and batched as the run validated (``streams`` streams)."""
    lines = path.read_text(encoding="utf-8").splitlines()[:limit]
    tokens = read_tokens(path, limit, text_format)
    ids = encode(tokens, vocab)
    return Validation(
        lines=lines,
        tokens=tokens,
        ids=ids,
        data=batchify(ids, streams).numpy(),
        topk_data=batchify(ids, min(TOPK_STREAMS, max(1, ids.numel() // 2))).numpy(),
    )


def quantized_op_types(path: Path) -> dict[str, int]:
    """Node counts per op type: which parts of a graph the quantizer changed."""
    import onnx

    graph = onnx.load(str(path)).graph
    return dict(Counter(node.op_type for node in graph.node))


def graph_metrics(
    folder: Path,
    data: np.ndarray,
    topk_data: np.ndarray,
    layers: int,
    hidden: int,
    s_in: list[str],
    s_out: list[str],
    threads: int,
    topk_positions: int | None,
) -> dict[str, Any]:
    """Perplexity with score.onnx and top-1/top-5 with model.onnx of the graphs in ``folder``."""
    t0 = time.monotonic()
    ppl = onnx_perplexity(
        ort_session(folder / "score.onnx", threads), data, layers, hidden, s_in, s_out
    )
    t1 = time.monotonic()
    topk = onnx_topk(
        ort_session(folder / "model.onnx", threads),
        topk_data,
        layers,
        hidden,
        s_in,
        s_out,
        max_positions=topk_positions,
    )
    return {
        "valid_perplexity": ppl,
        "valid_top1": topk["top1"],
        "valid_top5": topk["top5"],
        "topk_positions": topk["positions"],
        "perplexity_seconds": round(t1 - t0, 1),
        "topk_seconds": round(time.monotonic() - t1, 1),
    }


def _measure_int8(
    model: RNNModel,
    dirs: dict[str, Path],
    files: list[str],
    val: Validation,
    dims: Dims,
    cfg: ExportConfig,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Write both int8 variants, measure them (the chosen one fully, the other's perplexity),
    and return the card's quantization details; adds the chosen one's metrics to ``metrics``."""
    threads = cfg.threads
    converted: dict[str, int] = {}
    for file in files:
        converted = quantize_weights_int8(dirs["fp32"] / file, dirs["weight-only"] / file)
        quantize_int8(dirs["fp32"] / file, dirs["dynamic"] / file)
    metrics[cfg.int8_method] = graph_metrics(
        dirs[cfg.int8_method], val.data, val.topk_data, *dims, cfg.topk_positions or None
    )
    fp32_ppl = metrics["fp32"]["valid_perplexity"]
    quant: dict[str, Any] = {}
    for method in ("weight-only", "dynamic"):
        path = dirs[method]
        ppl = (
            metrics[method]["valid_perplexity"]
            if method == cfg.int8_method
            else onnx_perplexity(ort_session(path / "score.onnx", threads), val.data, *dims[:4])
        )
        quant[method] = {
            "valid_perplexity": ppl,
            "valid_perplexity_increase": ppl / fp32_ppl - 1,
            "within_2_percent": ppl / fp32_ppl - 1 <= INT8_MAX_PPL_INCREASE,
            "bytes": sum((path / f).stat().st_size for f in files),
            "max_abs_diff_vs_pytorch_fp32": check_parity(
                model, path / "model.onnx", path / "score.onnx", threads
            )["max_abs_diff"],
            "op_types": quantized_op_types(path / "model.onnx"),
        }
    quant["weight-only"]["method"] = (
        "int8 weights (symmetric, per output channel / per embedding row) dequantized "
        "in the graph; fp32 arithmetic, so split-state runs equal whole runs"
    )
    quant["weight-only"]["converted"] = converted
    ops = quant["dynamic"]["op_types"]
    quant["dynamic"]["method"] = (
        "onnxruntime quantize_dynamic (QInt8 weights, activations quantized per call)"
    )
    quant["dynamic"]["quantized"] = {
        "embedding_gather": ops.get("DequantizeLinear", 0) > 0,
        "lstm_nodes": ops.get("DynamicQuantizeLSTM", 0),
        "matmul_integer_nodes": ops.get("MatMulInteger", 0),
    }
    quant["method"] = cfg.int8_method
    return quant


def ship_graphs(
    model: RNNModel, folder: Path, val: Validation, cfg: ExportConfig
) -> dict[str, Any]:
    """Export, check and measure the graphs, then write the shipped precision into ``folder``
    with their weights stored once (``weights.bin``). Returns the graph specs, parity, metrics
    per precision and quantization details for the card."""
    s_in, s_out = state_names(model)
    dims: Dims = (model.config.layers, model.config.hidden_size, s_in, s_out, cfg.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        dirs = {name: Path(tmp_name) / name for name in ("fp32", "weight-only", "dynamic")}
        for d in dirs.values():
            d.mkdir()
        specs = export_graphs(model, dirs["fp32"], cfg.opset)
        files = list(specs)
        parity = check_parity(
            model, dirs["fp32"] / "model.onnx", dirs["fp32"] / "score.onnx", cfg.threads
        )
        if not parity["passed"]:
            raise RuntimeError(f"ONNX parity failed: {json.dumps(parity['max_abs_diff'])}")
        fp32_bytes = sum((dirs["fp32"] / f).stat().st_size for f in files)
        extra = (folder / "tokenizer.json").stat().st_size + 200_000  # card + curves
        ship_int8 = cfg.quantize == "yes" or (
            cfg.quantize == "auto" and fp32_bytes + extra > MAX_FOLDER_BYTES
        )
        metrics: dict[str, Any] = {
            "fp32": graph_metrics(
                dirs["fp32"], val.data, val.topk_data, *dims, cfg.topk_positions or None
            )
        }
        quant: dict[str, Any] = {"shipped": ship_int8, "fp32_bytes": fp32_bytes}
        if cfg.quantize != "no":
            quant.update(_measure_int8(model, dirs, files, val, dims, cfg, metrics))
        shipped_key = cfg.int8_method if ship_int8 else "fp32"
        for file in files:
            shutil.copyfile(dirs[shipped_key] / file, folder / file)
    # both graphs hold the same weights: store them once, then prove nothing changed
    shared = share_initializers([folder / f for f in files], WEIGHTS_FILE)
    before = (  # the shipped graphs' own parity, measured above
        parity["max_abs_diff"]
        if shipped_key == "fp32"
        else quant[shipped_key]["max_abs_diff_vs_pytorch_fp32"]
    )
    after = check_parity(model, folder / "model.onnx", folder / "score.onnx", cfg.threads)
    if after["max_abs_diff"] != before:
        raise RuntimeError("graphs with shared external weights differ from the originals")
    shared["note"] = (
        "model.onnx and score.onnx read their weights from this one file "
        "(ONNX external data); keep it next to them"
    )
    return {
        "specs": specs,
        "parity": parity,
        "metrics": metrics,
        "quant": quant,
        "shipped_key": shipped_key,
        "weights": shared,
    }
