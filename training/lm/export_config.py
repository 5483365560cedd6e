"""``lm export``'s flags and the size cap of a shipped folder, apart from the export code so
the command line reads them without importing torch's export machinery."""

from __future__ import annotations

from dataclasses import dataclass

from training.common.config_cli import option

MAX_FOLDER_BYTES = 40 * 1000 * 1000  # size cap of a shipped model folder


@dataclass
class ExportConfig:
    """What ``lm export`` measures and ships; saved in the card (``training.export_config``).
    Each field with help is a flag, so its default is written only here."""

    train_file: str | None = option(
        None,
        "training text, for the tokenizer check and the card (default: the file the checkpoint "
        "was trained on)",
        flag="--train",
    )
    valid_file: str | None = option(
        None,
        "validation text (default: the file the checkpoint was validated on)",
        flag="--dev",
    )
    max_valid_lines: int | None = option(
        None,
        "only use the first N validation lines (default: as many as the checkpoint's run used)",
        flag="--max-dev-lines",
    )
    history: str | None = option(
        None, "history.json for curves.png (default: the one next to the checkpoint)"
    )
    topk_positions: int = option(
        20000,
        "top-1/top-5 accuracy on N validation positions spread over 50 streams (model.onnx one "
        "token at a time is slow; 0 = all)",
    )
    quantize: str = option(
        "auto",
        "int8-quantize the shipped graphs: auto = when fp32 exceeds the size cap",
        choices=["auto", "yes", "no"],
    )
    int8_method: str = option(
        "weight-only",
        "int8 graphs to ship: weight-only (fp32 arithmetic, split-state exact) or onnxruntime "
        "dynamic quantization; the other is measured too",
        choices=["weight-only", "dynamic"],
    )
    opset: int = option(17, "ONNX opset (>= 17)")
    threads: int = option(2, "torch / onnxruntime intra-op threads")
