"""The two ONNX graphs of a next-word model: ``model.onnx`` (the distribution at the last
position) and ``score.onnx`` (log p of each target), with their tensors as the card lists them.
Two graphs so serving never builds [seq, vocab] distributions it does not need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.common.onnx_utils import opset_of
from training.lm.model import RNNModel


class NextWordGraph(nn.Module):
    """input_ids, *state -> log-distribution at the last position, *new state."""

    def __init__(self, model: RNNModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, new_state = self.model.features(input_ids, tuple(state))
        return (self.model.log_prob(out[:, -1]), *new_state)


class ScoreGraph(nn.Module):
    """input_ids, target_ids, *state -> log p(target_t | inputs <= t), *new state."""

    def __init__(self, model: RNNModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, target_ids: torch.Tensor, *state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out, new_state = self.model.features(input_ids, tuple(state))
        flat = out.reshape(-1, out.size(-1))
        lp = self.model.target_log_prob(flat, target_ids.reshape(-1))
        return (lp.reshape(target_ids.shape), *new_state)


def state_names(model: RNNModel) -> tuple[list[str], list[str]]:
    """Graph input / output names of the recurrent state (LSTM: h and c)."""
    return (["h0", "c0"], ["hn", "cn"]) if model.is_lstm else (["h0"], ["hn"])


def export_graphs(model: RNNModel, folder: Path, opset: int) -> dict[str, dict[str, Any]]:
    """Write fp32 ``model.onnx`` and ``score.onnx`` into ``folder``; return their I/O specs."""
    if opset < 17:
        raise ValueError(f"opset {opset} < 17")
    model.eval()
    s_in, s_out = state_names(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    state = model.init_hidden(2)
    state_axes = {n: {1: "batch"} for n in s_in + s_out}
    specs: dict[str, dict[str, Any]] = {}
    graphs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], str]] = [
        ("model.onnx", NextWordGraph(model), (ids, *state), ["input_ids"], "log_probs"),
        (
            "score.onnx",
            ScoreGraph(model),
            (ids, ids, *state),
            ["input_ids", "target_ids"],
            "token_log_probs",
        ),
    ]
    for file, module, args, id_inputs, main_out in graphs:
        module.eval()  # export restores the wrapper's mode afterwards: it must be eval too
        axes = {n: {0: "batch", 1: "seq"} for n in id_inputs}
        axes[main_out] = {0: "batch"} if main_out == "log_probs" else {0: "batch", 1: "seq"}
        axes.update(state_axes)
        torch.onnx.export(
            module,
            args,
            str(folder / file),
            dynamo=False,
            opset_version=opset,
            input_names=[*id_inputs, *s_in],
            output_names=[main_out, *s_out],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
        specs[file] = {"file": file, **tensor_specs(folder / file, tensor_shapes(model))}
    return specs


def tensor_shapes(model: RNNModel) -> dict[str, list[int | str]]:
    """Every graph tensor's shape: ``batch`` and ``seq`` are the dynamic axes, the rest fixed
    (the tracer names some fixed dimensions after ops, so the card takes them from here)."""
    cfg = model.config
    s_in, s_out = state_names(model)
    state: list[int | str] = [cfg.layers, "batch", cfg.hidden_size]
    return {
        "input_ids": ["batch", "seq"],
        "target_ids": ["batch", "seq"],
        "log_probs": ["batch", cfg.vocab_size],
        "token_log_probs": ["batch", "seq"],
        **dict.fromkeys(s_in + s_out, state),
    }


def tensor_specs(path: Path, shapes: dict[str, list[int | str]]) -> dict[str, Any]:
    """The graph's inputs and outputs as the card lists them (``{name, dtype, shape}``; names
    and dtypes read from the ONNX file itself) and its opset."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value: Any) -> dict[str, Any]:
        dtype = tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        return {"name": value.name, "dtype": str(dtype), "shape": shapes[value.name]}

    return {
        "inputs": [spec(v) for v in graph.input],
        "outputs": [spec(v) for v in graph.output],
        "opset": opset_of(path),
    }
