"""Let several ONNX graphs of one model read their weights from a single external file.

A model folder may hold more than one graph over the same weights (the language model ships a
next-word graph and a scoring graph). Stored inline, every weight is committed twice; here each
distinct initializer (by content) is written once to a shared data file that both graphs
reference with ONNX's standard external-data fields, so onnxruntime loads them unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from training.common.artifacts import sha256_file

ALIGN = 4096  # page-aligned offsets, as onnx's own external-data writer does for big tensors


def share_initializers(
    graphs: list[Path], data_file: str = "weights.bin", min_bytes: int = 1024
) -> dict[str, Any]:
    """Move initializers of at least ``min_bytes`` from ``graphs`` (one folder) into ``data_file``.

    Identical tensors are stored once whatever their names. Rewrites the graphs in place.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    folders = {p.parent.resolve() for p in graphs}
    if len(folders) != 1:
        raise ValueError("graphs sharing a weights file must live in one folder")
    folder = folders.pop()
    models = [onnx.load(str(p)) for p in graphs]
    stored: dict[str, tuple[int, int]] = {}  # sha256 of the bytes -> (offset, length)
    referenced = 0
    inline_bytes = 0
    with open(folder / data_file, "wb") as out:
        for model in models:
            for tensor in model.graph.initializer:
                if not tensor.HasField("raw_data"):  # typed fields -> raw bytes
                    tensor.CopyFrom(
                        numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
                    )
                raw = tensor.raw_data
                if len(raw) < min_bytes:
                    continue
                inline_bytes += len(raw)
                key = hashlib.sha256(raw).hexdigest()
                if key not in stored:
                    offset = -(-out.tell() // ALIGN) * ALIGN
                    out.write(b"\0" * (offset - out.tell()))
                    out.write(raw)
                    stored[key] = (offset, len(raw))
                offset, length = stored[key]
                set_external_data(tensor, location=data_file, offset=offset, length=length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                referenced += 1
    for model, path in zip(models, graphs, strict=True):
        onnx.save(model, str(path))
        onnx.checker.check_model(str(path))  # by path, so the external data is checked too
    size = (folder / data_file).stat().st_size
    return {
        "file": data_file,
        "bytes": size,
        "sha256": sha256_file(folder / data_file),
        "tensors_referenced": referenced,
        "tensors_stored": len(stored),
        "bytes_saved": inline_bytes - sum(length for _, length in stored.values()),
    }
