"""Store embedding tables as float16 in an exported ONNX graph.

Embedding tables dominate the size of word-level models. A Gather from a float16 table
followed by a Cast to float32 halves the file while the rest of the graph stays float32;
the training side rounds the PyTorch weights the same way, so parity is still exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def gather_tables_to_fp16(path: str | Path, min_elements: int = 100_000) -> list[str]:
    """Rewrite in place every large float32 table read only by Gather ops; return their names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    converted = []
    for name, init in inits.items():
        users = consumers.get(name, [])
        if init.data_type != TensorProto.FLOAT or not users:
            continue
        if any(n.op_type != "Gather" or n.input[0] != name for n in users):
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name))
        for n in users:
            out = n.output[0]
            half_out = out + "_fp16"
            n.output[0] = half_out
            cast = helper.make_node(
                "Cast", [half_out], [out], to=TensorProto.FLOAT, name=f"{n.name}_to_fp32"
            )
            graph.node.insert(list(graph.node).index(n) + 1, cast)
        converted.append(name)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return converted
