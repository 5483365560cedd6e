"""Weight-only int8 for the exported graphs: int8 weights on disk, fp32 arithmetic at run time.

``onnxruntime.quantization.quantize_dynamic`` (``training.common.onnx_utils.quantize_int8``)
also quantizes the *activations*, with a scale computed per call from the whole input tensor.
The result of a position then depends on what else is in the call, so a run split in two
halves with the state carried over no longer equals the whole run (~1e-1 on log-probs), which
breaks the incremental next-word state that serving carries between requests. Here only the
weights are stored as int8 (symmetric, one scale per output channel / per embedding row) and
are dequantized in the graph, so every position is computed exactly as by an fp32 graph with
those weights, whatever the batch or chunking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_ELEMENTS = 4096  # smaller tensors (biases, norms) stay fp32: they are not worth it
# op type -> (weight input positions, channel axis of that weight)
WEIGHT_INPUTS = {"MatMul": ((1,), 1), "LSTM": ((1, 2), 1), "GRU": ((1, 2), 1), "RNN": ((1, 2), 1)}


def _symmetric_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.max(np.abs(w), axis=reduce_axes) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def quantize_weights_int8(
    src: str | Path, dst: str | Path, min_elements: int = MIN_ELEMENTS
) -> dict[str, int]:
    """Rewrite ``src`` with int8 weights; return how many tensors of each kind were converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    big = {
        name
        for name, t in inits.items()
        if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= min_elements
    }
    done: dict[str, int] = {}
    prologue: list[onnx.NodeProto] = []
    new_nodes: list[onnx.NodeProto] = []

    def replace_init(name: str, q: np.ndarray, scale: np.ndarray) -> None:
        graph.initializer.remove(inits[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
            ]
        )

    for node in graph.node:
        new_nodes.append(node)
        if node.op_type == "Gather" and node.input[0] in big:
            # gather int8 rows and their scales, then rescale: cost ~ the rows looked up
            name = node.input[0]
            q, scale = _symmetric_int8(numpy_helper.to_array(inits[name]), axis=0)
            replace_init(name, q, scale)
            big.discard(name)
            out = node.output[0]
            node.input[0] = f"{name}_int8"
            node.output[0] = f"{out}_int8"
            ids = node.input[1]
            new_nodes += [
                helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_rowscale"], axis=0),
                helper.make_node(
                    "Unsqueeze", [f"{out}_rowscale", f"{name}_axes"], [f"{out}_rowscale_u"]
                ),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_f32"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{out}_f32", f"{out}_rowscale_u"], [out]),
            ]
            graph.initializer.append(
                numpy_helper.from_array(np.array([-1], np.int64), f"{name}_axes")
            )
            done["Gather"] = done.get("Gather", 0) + 1
            continue
        positions, axis = WEIGHT_INPUTS.get(node.op_type, ((), 0))
        for pos in positions:
            if pos >= len(node.input) or node.input[pos] not in big:
                continue
            name = node.input[pos]
            q, scale = _symmetric_int8(numpy_helper.to_array(inits[name]), axis=axis)
            replace_init(name, q, scale)
            big.discard(name)
            zero = numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero")
            graph.initializer.append(zero)
            prologue.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                    [name],
                    axis=axis,
                )
            )
            done[node.op_type] = done.get(node.op_type, 0) + 1
    del graph.node[:]
    graph.node.extend(prologue + new_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return done
