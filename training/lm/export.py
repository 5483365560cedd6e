"""Export a trained checkpoint to the next-word model folder and verify it.

    seqserve-train lm export --checkpoint runs/next-word/wikitext2-lstm/best.pt
    # ^ publishes the next free version of the checkpoint's name (wikitext2-lstm:3, ...)

Writes two graphs (legacy exporter, dynamic batch and sequence axes) so serving never builds
[seq, vocab] distributions it does not need:

* ``model.onnx``: input_ids [batch, seq], h0 (, c0) -> log_probs [batch, vocab] at the last
  position, hn (, cn);
* ``score.onnx``: input_ids, target_ids [batch, seq], h0 (, c0) -> token_log_probs
  [batch, seq] = log p(target_t | inputs <= t), hn (, cn);

plus ``tokenizer.json``, ``curves.png`` and ``card.json``. The fp32 graphs are checked against
PyTorch (several shapes, and a run split in two halves with the state carried over); when the
fp32 folder would exceed the size cap int8 graphs are shipped: by default weight-only int8
(``training.lm.quantize``: keeps split-state runs equal to whole runs, which serving's carried
state needs), with onnxruntime's dynamic quantization measured alongside for comparison; both
validation perplexities go into the card.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.common.artifacts import dataset_record, sha256_file, write_card
from training.common.config_cli import option
from training.common.curves import plot_curves
from training.common.onnx_shared_weights import share_initializers
from training.common.onnx_utils import max_abs_diff, opset_of, ort_session, quantize_int8
from training.lm.data import EOS, UNK, batchify, count_lines, encode, read_tokens
from training.lm.evaluate import load_checkpoint, onnx_perplexity, onnx_topk, text_format_of
from training.lm.model import RNNModel, State
from training.lm.quantize import quantize_weights_int8
from training.lm.tokenizer import build_tokenizer, pretokenize, round_trip_mismatches

DATASET_URL = "https://huggingface.co/datasets/Salesforce/wikitext"
# public files recognised by their bytes (sha256), never by their name or folder
KNOWN_FILES = {
    "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f": ("WikiText-2", DATASET_URL),
    "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8": ("WikiText-2", DATASET_URL),
}
FORMAT_WORDS = {"wikitext": "already tokenized text", "plain": "plain text"}
WEIGHTS_FILE = "weights.bin"
MAX_FOLDER_BYTES = 40 * 1000 * 1000  # size cap of a shipped model folder
PARITY_TOLERANCE = 1e-4  # max abs diff on log-probs, ONNX fp32 vs PyTorch
INT8_MAX_PPL_INCREASE = 0.02  # int8 perplexity may be at most 2 % above fp32
TOPK_STREAMS = 50
Dims = tuple[int, int, list[str], list[str], int]  # layers, hidden, state in/out, threads
PARITY_SHAPES = [(1, 1), (1, 23), (3, 9), (8, 40)]  # (batch, seq)
TOKENIZER_EXAMPLES = [
    "Happy birthday, my friend!",
    "I don't think John's well-known car cost $1,000 or 3.5%.",
    "The U.S. Army's No. 1 hit (in 1998) was great...",
]


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


def _torch_run(
    model: RNNModel, ids: torch.Tensor, targets: torch.Tensor, state: State
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    with torch.no_grad():
        out, new_state = model.features(ids, state)
        last = model.log_prob(out[:, -1]).numpy()
        full = model.log_prob(out.reshape(-1, out.size(-1)))
        token = full.gather(1, targets.reshape(-1, 1)).reshape(targets.shape).numpy()
    return last, token, [s.numpy() for s in new_state]


def _ort_run(
    next_sess: Any,
    score_sess: Any,
    ids: np.ndarray,
    targets: np.ndarray,
    state: list[np.ndarray],
    s_in: list[str],
    s_out: list[str],
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    feeds = dict(zip(s_in, state, strict=True))
    nxt = next_sess.run(["log_probs", *s_out], {"input_ids": ids, **feeds})
    sc = score_sess.run(
        ["token_log_probs", *s_out], {"input_ids": ids, "target_ids": targets, **feeds}
    )
    return nxt[0], sc[0], list(nxt[1:])


def check_parity(
    model: RNNModel, model_path: Path, score_path: Path, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Max abs differences ONNX vs PyTorch, halves-with-carried-state vs whole, score vs gather."""
    s_in, s_out = state_names(model)
    next_sess, score_sess = ort_session(model_path, threads), ort_session(score_path, threads)
    gen = torch.Generator().manual_seed(seed)
    cases, worst = (
        [],
        {
            "log_probs": 0.0,
            "token_log_probs": 0.0,
            "state": 0.0,
            "split_state": 0.0,
            "score_vs_gather": 0.0,
        },
    )
    layers, hidden, vocab = (model.config.layers, model.config.hidden_size, model.config.vocab_size)
    for batch, seq in PARITY_SHAPES:
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        state = tuple(0.5 * torch.randn(layers, batch, hidden, generator=gen) for _ in s_in)
        t_last, t_tok, t_state = _torch_run(model, inputs, targets, state)
        st_np = [s.numpy() for s in state]
        o_last, o_tok, o_state = _ort_run(
            next_sess, score_sess, inputs.numpy(), targets.numpy(), st_np, s_in, s_out
        )
        case = {
            "batch": batch,
            "seq": seq,
            "log_probs": max_abs_diff(o_last, t_last),
            "token_log_probs": max_abs_diff(o_tok, t_tok),
            "state": max(max_abs_diff(a, b) for a, b in zip(o_state, t_state, strict=True)),
            # the score graph's last position = model.onnx's distribution gathered at it
            "score_vs_gather": max_abs_diff(
                o_tok[:, -1], np.take_along_axis(o_last, targets.numpy()[:, -1:], 1)[:, 0]
            ),
        }
        if seq >= 2:
            half = seq // 2
            a_last, a_tok, a_state = _ort_run(
                next_sess,
                score_sess,
                inputs[:, :half].numpy(),
                targets[:, :half].numpy(),
                st_np,
                s_in,
                s_out,
            )
            b_last, b_tok, b_state = _ort_run(
                next_sess,
                score_sess,
                inputs[:, half:].numpy(),
                targets[:, half:].numpy(),
                a_state,
                s_in,
                s_out,
            )
            case["split_state"] = max(
                max_abs_diff(b_last, o_last),
                max_abs_diff(np.concatenate([a_tok, b_tok], axis=1), o_tok),
                *(max_abs_diff(x, y) for x, y in zip(b_state, o_state, strict=True)),
            )
        for key in worst:
            worst[key] = max(worst[key], float(case.get(key, 0.0)))
        cases.append(case)
    return {
        "max_abs_diff": worst,
        "tolerance": PARITY_TOLERANCE,
        "cases": cases,
        "passed": all(v <= PARITY_TOLERANCE for v in worst.values()),
    }


def quantized_op_types(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path)).graph
    return dict(Counter(node.op_type for node in graph.node))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _graph_metrics(
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


def _dataset_record(path: Path, text_format: str) -> dict[str, Any]:
    rec = dataset_record(path)
    known = KNOWN_FILES.get(rec["sha256"])
    if known:
        rec["dataset"], rec["url"] = known
    rec["lines"] = count_lines(path)
    rec["text_format"] = text_format
    return rec


def _train_record(path: Path, ckpt: dict[str, Any], text_format: str) -> dict[str, Any]:
    """The training file with the lines and tokens the run really used (from the checkpoint)."""
    rec = _dataset_record(path, text_format)
    used = ckpt.get("data", {}).get("train")
    trained_on = Path(used["file"] if used else ckpt["train_config"]["train_file"])
    if trained_on.resolve() != path.resolve():
        rec["note"] = f"the checkpoint was trained on {trained_on}, not on this file"
    elif used:
        rec["lines_used"], rec["tokens"] = used["lines_used"], used["tokens"]
    return rec


def _amount(rec: dict[str, Any]) -> str:
    lines = rec["lines"]
    used = rec.get("lines_used", lines)
    text = f"{lines:,} lines" if used == lines else f"first {used:,} of {lines:,} lines"
    return f"{text}, {rec['tokens']:,} tokens" if "tokens" in rec else text


def describe(cfg: Any, datasets: dict[str, dict[str, Any]], valid_perplexity: float) -> str:
    """One sentence generated from the run: model, the data it was trained and scored on."""
    train, valid = datasets["train"], datasets["valid"]

    def name(rec: dict[str, Any]) -> str:
        return f"{rec['dataset']} {rec['file']}" if rec.get("dataset") else rec["file"]

    return (
        f"Word-level {cfg.cell.upper()} language model ({cfg.layers}x{cfg.hidden_size}, "
        f"{cfg.softmax} softmax, {cfg.vocab_size:,}-word vocabulary) trained on {name(train)} "
        f"({_amount(train)}, {FORMAT_WORDS.get(train['text_format'], train['text_format'])}); "
        f"validation perplexity {valid_perplexity:.1f} on {name(valid)} ({_amount(valid)})."
    )


def try_it_requests(train_file: Path) -> list[tuple[str, dict[str, Any]]]:
    """A /next-word and a /next-word/score request made from the first words of the text."""
    words: list[str] = []
    with open(train_file, encoding="utf-8") as fh:
        for line in fh:
            words = line.split()
            if len(words) >= 6 and not line.lstrip().startswith("="):  # not a WikiText heading
                break
    prompt = " ".join(words[:4]) or "The"
    return [
        ("/next-word", {"text": prompt, "k": 5}),
        ("/next-word/score", {"text": " ".join(words[:12]) or prompt}),
    ]


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


@dataclass
class Validation:
    """The validation text as the export measures it: lines, tokens, ids and stream batches."""

    lines: list[str]
    tokens: list[str]
    ids: torch.Tensor
    data: np.ndarray  # [eval_batch_size streams, steps], the training run's protocol
    topk_data: np.ndarray  # more streams: top-k is per position, fewer onnxruntime calls


def checkpoint_name(ckpt: dict[str, Any]) -> str:
    """The model name the run was for (older checkpoints: derived from their training file)."""
    cfg = ckpt["train_config"]
    return cfg.get("name") or default_name(cfg["train_file"], ckpt["model_config"]["cell"])


def default_name(train_file: str | Path, cell: str) -> str:
    """``wikitext2-lstm`` for WikiText-2's ``train.txt``, ``lighthouse-lstm`` for a user's
    ``lighthouse_train.txt``: the data's name and the cell."""

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    path = Path(train_file)
    stem = re.sub(r"-?train(ing)?$", "", slug(path.stem)) or slug(path.parent.name) or "my-lm"
    return f"{stem[:50]}-{cell}"


def data_files(cfg: ExportConfig, ckpt: dict[str, Any]) -> tuple[Path, Path]:
    """The given training / validation files, else the ones the checkpoint's run used."""
    used = ckpt["train_config"]
    train = Path(cfg.train_file or used["train_file"])
    valid = Path(cfg.valid_file or used["valid_file"])
    return train, valid


def lines_used(ckpt: dict[str, Any], split: str, path: Path) -> int | None:
    """How many lines of ``path`` the run read for ``split`` (None: all, or another file), so
    a dry run's export checks its 300 + 60 lines, not all of WikiText-2."""
    used = ckpt.get("data", {}).get(split)
    if used and Path(used["file"]).resolve() == path.resolve():
        return int(used["lines_used"])
    return None


def _validation(
    path: Path, limit: int | None, vocab: list[str], text_format: str, streams: int
) -> Validation:
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


def write_tokenizer(
    folder: Path,
    vocab: list[str],
    text_format: str,
    train_file: Path,
    train_limit: int | None,
    valid_lines: list[str],
) -> dict[str, Any]:
    """``tokenizer.json`` and the card's tokenizer section, with a round-trip check: serving
    must cut the training text into exactly the tokens the model was trained on."""
    # plain text was cut by pretokenize (no protected words): serve exactly that
    tokenizer = build_tokenizer(vocab, protect=text_format == "wikitext")
    tokenizer.save(str(folder / "tokenizer.json"))
    train_lines = train_file.read_text(encoding="utf-8").splitlines()[:train_limit]
    split_line = str.split if text_format == "wikitext" else pretokenize
    round_trip = {}
    for split, lines in (("train", train_lines), ("valid", valid_lines)):
        checked, bad, examples = round_trip_mismatches(tokenizer, lines, vocab, split_line)
        round_trip[split] = {"lines": checked, "mismatched_lines": bad, "examples": examples}
    shown = TOKENIZER_EXAMPLES  # typed text, and the words the model reads
    if text_format == "plain":  # the user's own sentences say more than WikiText ones
        shown = [" ".join(line.split()[:15]) for line in valid_lines if line.strip()][:3]
    return {
        "file": "tokenizer.json",
        "type": "tokenizers WordLevel",
        "usage": "Tokenizer.from_file(path).encode(text).ids",
        "examples": {t: " ".join(tokenizer.encode(t).tokens) for t in shown},
        "round_trip": round_trip,
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
    metrics[cfg.int8_method] = _graph_metrics(
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
            "fp32": _graph_metrics(
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


def _datasets(
    train_file: Path,
    valid_file: Path,
    ckpt: dict[str, Any],
    val: Validation,
    vocab: list[str],
    text_format: str,
) -> dict[str, dict[str, Any]]:
    """The card's record of the training and validation files, keyed by role."""
    valid = _dataset_record(valid_file, text_format)
    valid["lines_used"] = len(val.lines)
    valid["tokens"] = len(val.tokens)
    valid["unknown_tokens"] = int((val.ids == vocab.index(UNK)).sum())
    return {"train": _train_record(train_file, ckpt, text_format), "valid": valid}


def _card_metrics(
    shipped: dict[str, Any],
    graphs: dict[str, Any],
    cfg: ExportConfig,
    val: Validation,
    valid_file: Path,
    hist: list[dict[str, Any]],
) -> dict[str, Any]:
    metrics = graphs["metrics"]
    parity = graphs["parity"]
    epoch_seconds = [h["train_seconds"] for h in hist]
    return {
        "valid_perplexity": shipped["valid_perplexity"],
        "valid_perplexity_fp32": metrics["fp32"]["valid_perplexity"],
        "valid_perplexity_int8": metrics.get(cfg.int8_method, {}).get("valid_perplexity"),
        "valid_top1": shipped["valid_top1"],
        "valid_top5": shipped["valid_top5"],
        "evaluation": f"shipped ONNX graphs on {valid_file.name}: score.onnx for perplexity "
        f"({val.data.shape[0]} streams, state carried), model.onnx fed one "
        f"token at a time ({val.topk_data.shape[0]} streams) for top-k",
        "by_precision": metrics,
        # history rows may be fractions of an epoch (--eval-interval): normalise per epoch
        "train_seconds_per_epoch": (
            float(sum(epoch_seconds) / hist[-1]["epoch"]) if epoch_seconds else None
        ),
        "train_tokens_per_second": (
            float(np.mean([h["tokens_per_second"] for h in hist])) if hist else None
        ),
        "parity": {k: parity[k] for k in ("max_abs_diff", "tolerance", "cases", "passed")},
    }


def _state_section(model: RNNModel) -> dict[str, Any]:
    s_in, s_out = state_names(model)
    cfg = model.config
    return {
        "inputs": s_in,
        "outputs": s_out,
        "shape": [cfg.layers, "batch", cfg.hidden_size],
        "per_sequence_shape": [cfg.layers, cfg.hidden_size],
        "layers": cfg.layers,
        "hidden_size": cfg.hidden_size,
        "dtype": "float32",
        "initial": "zeros",
    }


def _finish_card(folder: Path) -> dict[str, Any]:
    """write_card hashes only the main graph: add the score graph's hash and the folder size."""
    full: dict[str, Any] = json.loads((folder / "card.json").read_text())
    full["score_onnx"]["sha256"] = sha256_file(folder / "score.onnx")
    full["score_onnx"]["bytes"] = (folder / "score.onnx").stat().st_size
    full["folder_cap_bytes"] = MAX_FOLDER_BYTES
    for _ in range(2):  # the second pass counts the card with its own size in it
        full["folder_bytes"] = folder_bytes(folder)
        (folder / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    if full["folder_bytes"] > MAX_FOLDER_BYTES:
        print(f"WARNING: model folder is {full['folder_bytes']:,} bytes > cap {MAX_FOLDER_BYTES:,}")
    return full


def export_model(
    checkpoint: Path, folder: Path, cfg: ExportConfig, name: str, version: str
) -> dict[str, Any]:
    """Write the next-word model folder for ``checkpoint`` into ``folder`` (the store's staging
    folder: ``contract.store.publishing`` moves it into place) and return its card."""
    torch.set_num_threads(cfg.threads)
    model, ckpt = load_checkpoint(checkpoint)
    vocab: list[str] = ckpt["vocab"]
    train_file, valid_file = data_files(cfg, ckpt)
    text_format = text_format_of(ckpt)
    limit = cfg.max_valid_lines
    if limit is None:
        limit = lines_used(ckpt, "valid", valid_file)
    eval_streams = ckpt["train_config"]["eval_batch_size"]
    val = _validation(valid_file, limit, vocab, text_format, eval_streams)
    train_limit = lines_used(ckpt, "train", train_file)
    tokenizer = write_tokenizer(folder, vocab, text_format, train_file, train_limit, val.lines)
    graphs = ship_graphs(model, folder, val, cfg)
    shipped_key = graphs["shipped_key"]

    hist_path = Path(cfg.history) if cfg.history else checkpoint.with_name("history.json")
    hist = json.loads(hist_path.read_text()) if hist_path.exists() else ckpt["history"]
    plot_curves(
        hist,
        folder / "curves.png",
        [
            ("loss (nats/token)", ["train_loss", "valid_loss"]),
            ("perplexity", ["train_ppl", "valid_ppl"]),
        ],
        title=f"word-level LM on {train_file.name}",
    )
    shipped = graphs["metrics"][shipped_key]
    datasets = _datasets(train_file, valid_file, ckpt, val, vocab, text_format)
    mcfg = model.config
    card: dict[str, Any] = {
        "task": "next-word",
        "name": name,
        "version": version,
        "description": describe(mcfg, datasets, shipped["valid_perplexity"]),
        "cell": mcfg.cell,
        "layers": mcfg.layers,
        "emb_size": mcfg.emb_size,
        "hidden_size": mcfg.hidden_size,
        "vocab_size": mcfg.vocab_size,
        "precision": f"int8 ({cfg.int8_method})" if shipped_key != "fp32" else "fp32",
        "tokenizer": tokenizer,
        "special_tokens": {
            "unk": {"token": UNK, "id": vocab.index(UNK)},
            "eos": {"token": EOS, "id": vocab.index(EOS)},
        },
        "start_token": {
            "token": EOS,
            "id": vocab.index(EOS),
            "note": "training text is a stream of lines each ended by <eos>; feed "
            "it first so a fresh prompt starts like a new line",
        },
        "onnx": graphs["specs"]["model.onnx"],
        "score_onnx": graphs["specs"]["score.onnx"],
        "weights": graphs["weights"],
        "state": _state_section(model),
        "training": {
            "checkpoint": str(checkpoint),
            "model_config": mcfg.to_dict(),
            "train_config": ckpt["train_config"],
            "export_config": asdict(cfg),
            "best_epoch": ckpt["epoch"],
            "epochs_run": len(hist),
            "best_valid_perplexity_pytorch": float(np.exp(ckpt["valid_loss"])),
            "text_format": text_format,
            "history": hist,
        },
        "datasets": [{"role": role, **rec} for role, rec in datasets.items()],
        "metrics": _card_metrics(shipped, graphs, cfg, val, valid_file, hist),
        "quantization": graphs["quant"],
        "curves": "curves.png",
    }
    write_card(folder, card)
    return _finish_card(folder)
