"""onnxruntime sessions: one per model file, providers from configuration.

Small recurrent models run fastest with one intra-op thread per session (thread hand-off costs
more than the matrix work); throughput comes from batching and from one process per core.

onnxruntime's CPU memory arena is off: the arena keeps every block the largest batch ever asked
for (a 5,000-token score held ~600 MB per row for the life of the process). Without it each run
allocates and frees its own tensors, so memory follows the batch in flight, and the batcher's
cost budget (``SEQSERVE_MEMORY_BUDGET_MB``) bounds that batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
        opts.enable_cpu_mem_arena = False  # give memory back after each run (module docstring)
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


def release_free_memory() -> None:
    """Hand memory freed inside the process back to the system (glibc keeps freed heap
    pages for reuse; ``malloc_trim`` returns them). A no-op where there is no glibc."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


_LIBC = _libc()
