"""ONNX helpers shared by every exporter: run with onnxruntime, quantize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ort_session(path: str | Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantization of MatMul/LSTM weights (GRU has no quantized op in ORT)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def opset_of(path: str | Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def quantize_gather_int8(src: str | Path, dst: str | Path) -> Path:
    """Weight-only int8 for embedding tables (Gather): 4x smaller, and unlike dynamic MatMul
    quantization the outputs do not depend on the batch an input is served in."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"]
    )
    return Path(dst)


def dequantized_tables(path: str | Path) -> dict[str, np.ndarray]:
    """Original name -> float32 values of every int8 table in a quantized graph (for parity)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    out = {}
    for name, q in inits.items():
        if name.endswith("_quantized"):
            base = name[: -len("_quantized")]
            scale, zero = inits[base + "_scale"], inits[base + "_zero_point"]
            out[base] = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(
                np.float32
            )
    return out
