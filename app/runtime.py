"""onnxruntime sessions: one per model file, providers from configuration.

Small recurrent models run fastest with one intra-op thread per session (thread hand-off costs
more than the matrix work); throughput comes from batching and from one process per core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.errors import InferenceError, ModelLoadError

log = logging.getLogger(__name__)


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Keep the requested providers this onnxruntime build has; CPU is always the last resort."""
    available = set(ort.get_available_providers())
    chosen = [p for p in requested if p in available]
    for p in requested:
        if p not in available:
            log.warning(
                "execution provider %s is not available in this onnxruntime build "
                "(available: %s); falling back",
                p,
                sorted(available),
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OrtModel:
    """A loaded ONNX graph: named inputs in, named outputs out, numpy only."""

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the other core while idle; with one thread it changes nothing.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=resolve_providers(providers)
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(f"cannot load {path}: {exc}") from exc
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(outputs or self.output_names)
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:
            raise InferenceError(f"inference failed in {self.path.name}: {exc}") from exc
        return dict(zip(names, values, strict=True))
