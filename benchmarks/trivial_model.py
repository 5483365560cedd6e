"""A sentiment model folder whose graph does almost nothing, to time the request path alone.

    python -m benchmarks.trivial_model OUT_DIR     # writes OUT_DIR/sentiment/trivial/1/

The graph maps ``input_ids`` [batch, sequence] to constant ``probabilities`` [batch, 2] in a
handful of microseconds, and the tokenizer is the same kind of word-level ``tokenizer.json``
the real models use, so a request through ``/sentiment`` pays everything but the model:
HTTP, validation, tokenizing, batching, the hop to the inference thread and serialisation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers


def write(root: Path) -> Path:
    folder = root / "sentiment" / "trivial" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    # probabilities = softmax(0 * ReduceSum(float(ids), axis 1) broadcast to 2 labels)
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
        helper.make_node("Mul", ["s", "zero2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "trivial",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero2", TensorProto.FLOAT, [1, 2], [0.0, 0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    words = "the film is a gorgeous witty and moving portrait of family that never".split()
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    card = {
        "schema_version": 2,
        "task": "sentiment",
        "name": "trivial",
        "version": "1",
        "description": "request-path benchmark model: constant output, no recurrent work",
        "labels": ["negative", "positive"],
        "tokenizer": {
            "file": "tokenizer.json",
            "pad_id": 0,
            "unk_id": 1,
            "vocab_size": len(vocab),
            "max_length": 4096,
        },
        "onnx": {
            "file": "model.onnx",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
            "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 2]}],
        },
    }
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    return folder


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
