"""Export an ensemble of trained members to ONNX, verify it, evaluate it, write the card.

The graph takes ``input_ids`` [batch, seq] (int64, right-padded with the pad id) and returns
``probabilities`` [batch, labels] — the mean of the members' softmax outputs. Parity is checked
on several batch sizes and lengths with padding; dev accuracy is computed by onnxruntime on the
exact file that ships.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from contract.text import pad_right
from training.common.artifacts import dataset_record, write_card
from training.common.curves import plot_curves
from training.common.onnx_fp16 import gather_tables_to_fp16
from training.common.onnx_utils import (
    dequantized_tables,
    max_abs_diff,
    opset_of,
    ort_session,
    quantize_gather_int8,
    quantize_int8,
)
from training.sentiment import tokenizer as toks
from training.sentiment.data import IMDB_URL, SST2_URL
from training.sentiment.model import EnsembleClassifier, RNNClassifier
from training.sentiment.train import load_member

INPUT_NAME = "input_ids"
OUTPUT_NAME = "probabilities"
OPSET = 17


def export_onnx(model: torch.nn.Module, path: Path, vocab_size: int) -> None:
    example = torch.randint(2, max(vocab_size, 3), (3, 11))
    example[1, 7:] = toks.PAD_ID
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def parity_check(
    model: torch.nn.Module, onnx_path: Path, vocab_size: int, seed: int = 0
) -> dict[str, float]:
    """Max |ONNX − PyTorch| over several batch sizes and lengths, plus ORT padding invariance."""
    rng = np.random.default_rng(seed)
    sess = ort_session(onnx_path)
    worst, pad_worst = 0.0, 0.0
    for batch, length in [(1, 1), (1, 9), (2, 5), (5, 23), (16, 40), (7, 128)]:
        seqs = [
            list(rng.integers(2, vocab_size, rng.integers(1, length + 1))) for _ in range(batch)
        ]
        x = pad_right(seqs, toks.PAD_ID)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        worst = max(worst, max_abs_diff(ref, got))
        extra = np.concatenate([x, np.full((batch, 13), toks.PAD_ID, dtype=np.int64)], 1)
        pad_worst = max(
            pad_worst, max_abs_diff(got, sess.run([OUTPUT_NAME], {INPUT_NAME: extra})[0])
        )
    return {"max_abs_diff_probabilities": worst, "max_abs_diff_extra_padding": pad_worst}


def ort_predict(onnx_path: Path, ids: list[list[int]], batch_size: int = 128) -> np.ndarray:
    sess = ort_session(onnx_path)
    order = np.argsort([len(s) for s in ids], kind="stable")
    out: np.ndarray | None = None
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        p = sess.run([OUTPUT_NAME], {INPUT_NAME: pad_right([ids[r] for r in rows], toks.PAD_ID)})[0]
        if out is None:
            out = np.zeros((len(ids), p.shape[1]), dtype=np.float32)
        out[rows] = p
    assert out is not None
    return out


def single_latency_ms(
    onnx_path: Path,
    model: torch.nn.Module,
    ids: list[int],
    n: int = 200,
    budget_s: float = 0.5,
) -> dict[str, float]:
    """Median single-request latency of ORT (1 thread) vs PyTorch eager (1 thread), over ``n``
    runs or ``budget_s`` seconds each, whichever ends first (at least 20 runs), so a slow
    machine does not spend minutes on a figure."""
    sess = ort_session(onnx_path, threads=1)
    x = np.asarray([ids], dtype=np.int64)
    torch.set_num_threads(1)
    tx = torch.from_numpy(x)

    def med(fn: Any) -> float:
        for _ in range(10):
            fn()
        ts: list[float] = []
        end = time.perf_counter() + budget_s
        while len(ts) < n and (len(ts) < 20 or time.perf_counter() < end):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts) * 1e3)

    with torch.no_grad():
        torch_ms = med(lambda: model(tx))
    ort_ms = med(lambda: sess.run([OUTPUT_NAME], {INPUT_NAME: x}))
    return {"tokens": len(ids), "onnxruntime_ms_p50": ort_ms, "pytorch_eager_ms_p50": torch_ms}


def merge_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """One summary from several training runs over the same data (an ensemble across configs).

    The runs must share tokenizer, labels and max length, since one graph serves them all.
    """
    summaries = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    tok_bytes = {(d / "tokenizer.json").read_bytes() for d in run_dirs}
    if len(tok_bytes) != 1:
        raise ValueError("runs have different tokenizers; train them on the same data")
    for key in ("labels",):
        if any(s[key] != summaries[0][key] for s in summaries):
            raise ValueError(f"runs disagree on {key}")
    if any(
        s["train_config"]["max_length"] != summaries[0]["train_config"]["max_length"]
        for s in summaries
    ):
        raise ValueError("runs disagree on max_length")
    merged = dict(summaries[0])
    merged["members"] = [
        {**m, "run": str(d)} for d, s in zip(run_dirs, summaries, strict=True) for m in s["members"]
    ]
    merged["runs"] = [
        {
            "run": str(d),
            "config": s.get("config"),
            "model_config": s["model_config"],
            "train_config": s["train_config"],
        }
        for d, s in zip(run_dirs, summaries, strict=True)
    ]
    return merged


def export_model(
    run_dirs: list[Path],
    out_dir: Path,
    dev_texts: list[str],
    dev_labels: list[str],
    name: str,
    version: str,
    datasets: list[dict[str, Any]],
    embeddings: str = "fp16",
    quantize: bool = False,
    max_quant_drop: float = 0.005,
    dev_groups: dict[str, np.ndarray] | None = None,
    experiments: Any = None,
    export: dict[str, Any] | None = None,
    calibrate: bool = False,
) -> dict[str, Any]:
    """Build the ensemble from every member of ``run_dirs`` and write the model folder.

    ``embeddings``: how embedding tables are stored — fp32, fp16 or int8 (weight-only).
    ``dev_groups``: dev row indices per dataset, each scored separately in the card.
    ``export``: the export settings, recorded beside the training configuration.
    ``calibrate``: fit a temperature on the dev rows (``training.common.calibration``) and bake
    it into the graph.
    """
    summary = merge_runs(run_dirs)
    labels: list[str] = summary["labels"]
    tok = toks.load(run_dirs[0] / "tokenizer.json")
    members, ckpts = _load_members(summary)
    ensemble = EnsembleClassifier(members).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    fp32_path = out_dir / "model.fp32.onnx"
    vocab_size = tok.get_vocab_size()
    export_onnx(ensemble, fp32_path, vocab_size)
    parity = {"fp32_graph": parity_check(ensemble, fp32_path, vocab_size)}

    max_length = int(summary["train_config"]["max_length"])
    dev_ids = toks.encode_batch(tok, dev_texts, max_length)
    dev_y = _label_indices(dev_labels, labels)
    fp32_probs = ort_predict(fp32_path, dev_ids)
    calibration = None
    if calibrate:
        calibration = _calibrate(fp32_probs, dev_y, dev_groups)
        ensemble.temperature = calibration["temperature"]
        export_onnx(ensemble, fp32_path, vocab_size)
        parity["fp32_graph"] = parity_check(ensemble, fp32_path, vocab_size)
        fp32_probs = ort_predict(fp32_path, dev_ids)
    fp32_acc = float((fp32_probs.argmax(1) == dev_y).mean())

    quant: dict[str, Any] | None = None
    shipped = _Shipped("fp32", [])
    if quantize:
        quant = _try_int8(
            fp32_path, onnx_path, ensemble, dev_ids, dev_y, fp32_probs, fp32_acc, max_quant_drop
        )
        if quant["shipped"]:
            shipped = _Shipped("int8", [])
    if shipped.variant == "fp32":
        shipped = _compress_embeddings(
            embeddings, fp32_path, onnx_path, ensemble, members, vocab_size, parity
        )
    fp32_path.unlink()

    shipped_probs = ort_predict(onnx_path, dev_ids)
    hits = shipped_probs.argmax(1) == dev_y
    metrics = _dev_metrics(hits, dev_groups, fp32_acc, summary, shipped.variant)
    metrics["dev_calibration_error"] = _ece_by_group(shipped_probs, dev_y, dev_groups)
    latency, latency_review = _latencies(onnx_path, ensemble, tok, dev_texts, dev_ids)
    shutil.copy(run_dirs[0] / "tokenizer.json", out_dir / "tokenizer.json")
    _plot_members(summary, out_dir / "curves.png", name)
    card = {
        "task": "sentiment",
        "name": name,
        "version": version,
        "description": _description(summary, ckpts, datasets),
        "labels": labels,
        "label_counts_train": summary.get("label_counts"),
        "label_map": summary.get("label_map"),  # raw label in the data -> served name
        "tokenizer": _tokenizer_section(vocab_size, max_length),
        "onnx": _onnx_section(onnx_path, len(labels), shipped),
        "model": _model_section(ckpts),
        "training": _training_section(summary, export),
        "datasets": datasets,
        "metrics": metrics,
        "parity": _parity_section(parity),
        "latency_single_request": latency,
        "latency_review": latency_review,
    }
    if calibration:
        card["calibration"] = calibration
        t = calibration["temperature"]
        model: dict[str, Any] = card["model"]  # type: ignore[assignment]
        model["combine"] = f"{model['combine']}, then temperature-scaled: softmax(log p / {t:.4g})"
        said = str(card["description"]).rstrip(".")
        card["description"] = f"{said}; probabilities temperature-scaled on the dev files."
    if quant:
        card["quantization"] = quant
    if experiments is not None:
        card["experiments"] = experiments
    write_card(out_dir, card)
    return card


def _ece_by_group(
    probs: np.ndarray, y: np.ndarray, groups: dict[str, np.ndarray] | None
) -> dict[str, float]:
    """Expected calibration error of the shipped file on each dev file (and all of dev)."""
    from training.common.calibration import ece

    out = {"all": ece(probs, y)}
    out.update({g: ece(probs[idx], y[idx]) for g, idx in (groups or {}).items()})
    return out


def _calibrate(
    probs: np.ndarray, y: np.ndarray, groups: dict[str, np.ndarray] | None
) -> dict[str, Any]:
    """The temperature for the graph, chosen on dev with each dev file weighted equally, and
    the calibration error before, after (in-sample) and cross-fitted (two folds: each half
    scored with the temperature fitted on the other halves)."""
    from training.common import calibration as cal

    parts = {g: (probs[idx], y[idx]) for g, idx in (groups or {"dev": np.arange(len(y))}).items()}
    small = sorted(g for g, (_, yy) in parts.items() if len(yy) < 20)
    if small:  # an empty file (all its rows dropped by --label-names) would make T meaningless
        raise SystemExit(
            f"--calibrate needs at least 20 dev rows per dev file; {', '.join(small)} "
            f"{'has' if len(small) == 1 else 'have'} fewer (after --label-names)"
        )
    t = cal.fit_temperature(list(parts.values()))
    return {
        "method": "temperature scaling of the ensemble's log-probabilities, softmax(log p / T), "
        "T minimizing the mean over dev files of each file's negative log-likelihood",
        "temperature": t,
        "bins": cal.BINS,
        "ece_before": {g: cal.ece(p, yy) for g, (p, yy) in parts.items()},
        "ece_after_in_sample": {g: cal.ece(cal.scale(p, t), yy) for g, (p, yy) in parts.items()},
        "ece_after_cross_fitted": cal.cross_fitted_ece(parts),
    }


@dataclass
class _Shipped:
    """Which graph ships (fp32, int8, fp16-embeddings or int8-embeddings) and the embedding
    tables stored smaller in it, for the card."""

    variant: str
    tables: list[str]


def _load_members(summary: dict[str, Any]) -> tuple[list[RNNClassifier], list[dict[str, Any]]]:
    """Every member's model and checkpoint, in the summary's order (the card lists them so)."""
    members: list[RNNClassifier] = []
    ckpts: list[dict[str, Any]] = []
    for m in summary["members"]:
        model, ckpt = load_member(m["checkpoint"])
        members.append(model)
        ckpts.append(ckpt)
    return members, ckpts


def _label_indices(dev_labels: list[str], labels: list[str]) -> np.ndarray:
    """Dev labels as the output column each should win, to score graphs by argmax."""
    label_index = {lab: i for i, lab in enumerate(labels)}
    return np.array([label_index[lab] for lab in dev_labels])


def _try_int8(
    fp32_path: Path,
    onnx_path: Path,
    ensemble: torch.nn.Module,
    dev_ids: list[list[int]],
    dev_y: np.ndarray,
    fp32_probs: np.ndarray,
    fp32_acc: float,
    max_quant_drop: float,
) -> dict[str, Any]:
    """Int8 dynamic quantization (MatMul, LSTM, Gather), moved to ``onnx_path`` only where it
    pays: accuracy within ``max_quant_drop`` and outputs independent of batch composition.
    Returns the figures for the card's ``quantization`` section."""
    q_path = fp32_path.parent / "model.int8.onnx"
    quantize_int8(fp32_path, q_path)
    q_probs = ort_predict(q_path, dev_ids)
    q_acc = float((q_probs.argmax(1) == dev_y).mean())
    # Dynamic quantization picks activation scales per batch, so an example's output can
    # change with the batch it is served in; measure it (first 100 dev texts, alone vs batched).
    singles = np.concatenate([ort_predict(q_path, [ids]) for ids in dev_ids[:100]])
    batch_dependence = max_abs_diff(singles, q_probs[:100])
    ok = fp32_acc - q_acc <= max_quant_drop and batch_dependence <= 1e-5
    quant = {
        "dev_accuracy_int8": q_acc,
        "dev_accuracy_fp32": fp32_acc,
        "dev_max_abs_diff_int8_vs_fp32": max_abs_diff(q_probs, fp32_probs),
        "int8_ms_p50": single_latency_ms(q_path, ensemble, dev_ids[0])["onnxruntime_ms_p50"],
        "int8_batch_dependence_max_abs_diff": batch_dependence,
        "shipped": ok,
        "rule": f"ship int8 only if dev accuracy drops by <= {max_quant_drop * 100:.1f} points "
        "and outputs do not depend on batch composition (<= 1e-5)",
    }
    if ok:
        q_path.replace(onnx_path)
    else:
        q_path.unlink()
    return quant


def _compress_embeddings(
    embeddings: str,
    fp32_path: Path,
    onnx_path: Path,
    ensemble: torch.nn.Module,
    members: list[RNNClassifier],
    vocab_size: int,
    parity: dict[str, dict[str, float]],
) -> _Shipped:
    """Write ``onnx_path`` from the fp32 graph with embedding tables stored as ``embeddings``.

    The PyTorch reference is set to the exact values the graph holds, so parity (added to
    ``parity`` as ``shipped_graph``) stays a test of the export rather than of the rounding.
    """
    if embeddings == "fp16":
        shutil.copy(fp32_path, onnx_path)
        tables = gather_tables_to_fp16(onnx_path)  # skips tables too small to matter
        variant = "fp32"
        if tables:
            with torch.no_grad():
                for m in members:
                    m.embedding.weight.copy_(m.embedding.weight.half().float())
            variant = "fp16-embeddings"
        parity["shipped_graph"] = parity_check(ensemble, onnx_path, vocab_size)
        return _Shipped(variant, tables)
    if embeddings == "int8":
        quantize_gather_int8(fp32_path, onnx_path)
        deq = dequantized_tables(onnx_path)
        params = dict(ensemble.named_parameters())
        with torch.no_grad():
            for table_name, values in deq.items():
                params[table_name].copy_(torch.from_numpy(values))
        parity["shipped_graph"] = parity_check(ensemble, onnx_path, vocab_size)
        return _Shipped("int8-embeddings", sorted(deq))
    shutil.copy(fp32_path, onnx_path)
    return _Shipped("fp32", [])


def _dev_metrics(
    hits: np.ndarray,
    dev_groups: dict[str, np.ndarray] | None,
    fp32_acc: float,
    summary: dict[str, Any],
    shipped_variant: str,
) -> dict[str, Any]:
    """Dev accuracy of the shipped file (overall and per dataset) beside the members' own, and
    what the members were selected on, so the figure's optimism can be judged."""
    groups = dev_groups or {}
    return {
        "dev_accuracy": float(hits.mean()),
        **{f"dev_accuracy_{g}": float(hits[idx].mean()) for g, idx in groups.items()},
        **{f"dev_examples_{g}": len(idx) for g, idx in groups.items()},
        "dev_accuracy_fp32": fp32_acc,
        "dev_examples": len(hits),
        "members_dev_accuracy": [m["dev_accuracy"] for m in summary["members"]],
        "members_selected_on": (
            f"a random {summary['train_config']['val_split']:.0%} of the training rows"
            if summary["train_config"].get("val_split")
            else "the dev files (mean of their accuracies)"
        ),
        "shipped_variant": shipped_variant,
    }


def _latencies(
    onnx_path: Path,
    ensemble: torch.nn.Module,
    tok: Tokenizer,
    dev_texts: list[str],
    dev_ids: list[list[int]],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Single-request latency on a ~20-token dev text and on a ~230-word review (a typical
    short and long request)."""
    example = dev_ids[int(np.argmin([abs(len(s) - 20) for s in dev_ids]))]
    latency = single_latency_ms(onnx_path, ensemble, example)
    review = _text_of_words(dev_texts, 230)
    latency_review = {
        "words": 230,
        **single_latency_ms(onnx_path, ensemble, toks.encode_batch(tok, [review], 10**6)[0]),
    }
    return latency, latency_review


def _description(
    summary: dict[str, Any], ckpts: list[dict[str, Any]], datasets: list[dict[str, Any]]
) -> str:
    """One sentence for people: what the model is, what it was trained on, how it combines."""
    kinds = sorted(
        {
            ("bi" if c["model_config"]["bidirectional"] else "") + c["model_config"]["cell"].upper()
            for c in ckpts
        }
    )
    trained_on = ", ".join(
        f"{r.get('dataset', '')}/{r['file']} ({r['rows']} rows)"
        for r in datasets
        if r.get("role") == "train"
    )
    what = (
        f"one {kinds[0]} sentiment classifier"
        if len(ckpts) == 1
        else f"{len(ckpts)}-member ensemble of {'/'.join(kinds)} sentiment classifiers"
    )
    combine = "" if len(ckpts) == 1 else "; outputs the mean of the members' probabilities"
    if summary["train_config"].get("val_split"):
        trained_on += f", {summary['train_config']['val_split']:.0%} of it held out for selection"
    if summary["train_config"].get("soft_labels"):
        combine += "; distilled from a transformer teacher's soft labels"
    return f"{what} trained on {trained_on}{combine}."


def _tokenizer_section(vocab_size: int, max_length: int) -> dict[str, Any]:
    """What serving needs to turn text into the graph's input ids exactly as training did."""
    return {
        "file": "tokenizer.json",
        "pad_id": toks.PAD_ID,
        "unk_id": toks.UNK_ID,
        "vocab_size": vocab_size,
        "max_length": max_length,
        "lowercase": True,
    }


def _onnx_section(onnx_path: Path, n_labels: int, shipped: _Shipped) -> dict[str, Any]:
    """The graph's interface (names, dtypes, shapes, padding) that serving checks it against."""
    return {
        "file": "model.onnx",
        "opset": opset_of(onnx_path),
        "inputs": [
            {
                "name": INPUT_NAME,
                "dtype": "int64",
                "shape": ["batch", "sequence"],
                "padding": "right, with pad_id",
            }
        ],
        "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", n_labels]}],
        "compressed_tables": shipped.tables,
        "variant": shipped.variant,
    }


def _model_section(ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    """The first member's architecture, plus every member's, since runs may differ."""
    return {
        **ckpts[0]["model_config"],
        "members": len(ckpts),
        "member_configs": [c["model_config"] for c in ckpts],
        "combine": "mean of softmax probabilities",
    }


def _training_section(summary: dict[str, Any], export: dict[str, Any] | None) -> dict[str, Any]:
    """Enough configuration to reproduce the model: settings, runs and each member's outcome."""
    return {
        **summary.get("config", {}),  # the resolved configuration of the (first) run
        "export": export or {},
        "train_config": summary["train_config"],
        "runs": summary["runs"],
        "members": [
            {
                k: m.get(k)
                for k in ("run", "seed", "best_epoch", "epochs_run", "dev_accuracy", "seconds")
            }
            for m in summary["members"]
        ],
    }


def _parity_section(parity: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Worst ONNX-vs-PyTorch difference over every graph checked (padding invariance from the
    shipped graph), with the per-graph figures and the tolerance they are held to."""
    worst = parity.get("shipped_graph", parity["fp32_graph"])
    return {
        "max_abs_diff_probabilities": max(p["max_abs_diff_probabilities"] for p in parity.values()),
        "max_abs_diff_extra_padding": worst["max_abs_diff_extra_padding"],
        **parity,
        "tolerance": 1e-4,
        "reference": "the PyTorch ensemble; batches of 1-16 texts, 1-128 tokens, padded",
        "note": "an int8 graph is compared with fp32 on dev under quantization instead",
    }


def _plot_members(summary: dict[str, Any], path: Path, name: str) -> None:
    rows: dict[int, dict[str, float]] = {}
    keys_loss, keys_acc = [], []
    for m in summary["members"]:
        s = m["seed"]
        for h in m["history"]:
            row = rows.setdefault(h["epoch"], {"epoch": h["epoch"]})
            row[f"train_loss s{s}"] = h["train_loss"]
            row[f"dev_loss s{s}"] = h["dev_loss"]
            row[f"train_acc s{s}"] = h["train_accuracy"]
            row[f"dev_acc s{s}"] = h["dev_accuracy"]
        keys_loss += [f"train_loss s{s}", f"dev_loss s{s}"]
        keys_acc += [f"train_acc s{s}", f"dev_acc s{s}"]
    plot_curves(
        [rows[e] for e in sorted(rows)],
        path,
        [("loss", keys_loss), ("accuracy", keys_acc)],
        title=f"{name}: training curves (train vs "
        + ("validation split" if summary["train_config"].get("val_split") else "dev")
        + ", per member)",
    )


KNOWN_URLS = {
    "sst2": SST2_URL,
    "imdb": IMDB_URL,
}


def dataset_records(
    train_paths: list[Path], dev_paths: list[Path], url: str | None
) -> list[dict[str, Any]]:
    """sha256, rows, role and download address of every file; known public sets get their
    own URL."""

    def rec(path: Path, role: str) -> dict[str, Any]:
        r = dataset_record(path, KNOWN_URLS.get(path.parent.name, url))
        r.update(role=role, rows=count_rows(path), dataset=path.parent.name)
        return r

    return [rec(p, "train") for p in train_paths] + [rec(p, "dev") for p in dev_paths]


def count_rows(path: Path) -> int:
    """Data rows of a CSV/TSV (quoted fields may span lines) or JSONL file."""
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix.lower() in (".jsonl", ".json"):
            return sum(1 for line in fh if line.strip())
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return sum(1 for _ in csv.reader(fh, delimiter=delimiter)) - 1


def _text_of_words(texts: list[str], words: int) -> str:
    """A real dev text of about ``words`` words (or dev texts joined to that length)."""
    best = min(texts, key=lambda t: abs(len(t.split()) - words))
    if abs(len(best.split()) - words) <= words // 10:
        return best
    joined = " ".join(texts).split()
    return " ".join((joined * (words // max(len(joined), 1) + 1))[:words])
