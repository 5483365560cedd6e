"""Give a published language model a continuous cache: ``seqserve-train lm cache``.

    seqserve-train lm cache --model models/next-word/wikitext2-lstm/2

No retraining (Grave et al. 2016). The command copies the model's graphs with one more output,
``hidden`` (the last layer's output at every position, which the cache stores), chooses the
cache's θ, λ and window on the first half of the validation texts and measures them on the
second half, then publishes the model as a new version with a ``cache`` section in its card.
The validation text is read as the API reads it: lines grouped into texts of at most
``--text-tokens`` tokens, each scored from a fresh state with a cache of its own.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tokenizers import Tokenizer
from tqdm import tqdm

from contract import lm_cache
from contract.lm_cache import HIDDEN_OUTPUT, CacheParams, History

THETAS = (0.8, 1.5, 2.5, 4.0)
WINDOWS = (1000, 2000, 4500)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35)
RAMPS = (0.0, 30.0, 100.0, 300.0)
HISTORY_BUCKETS = ((1, 5), (5, 20), (20, 100), (100, 500), (500, 10**9))
PIECE = 512  # positions scored at once (memory: PIECE x (window + PIECE) floats)


def add_hidden_output(model: onnx.ModelProto, hidden_size: int) -> onnx.ModelProto:
    """The graph with the last recurrent layer's output, [batch, seq, hidden], as ``hidden``.

    The exported graphs run the last LSTM, squeeze its direction axis and transpose to
    batch-first before the softmax head: that tensor is what the cache stores."""
    graph = model.graph
    if any(o.name == HIDDEN_OUTPUT for o in graph.output):
        return model
    lstms = [n for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")]
    if not lstms:
        raise ValueError("the graph has no recurrent node")
    tensor = lstms[-1].output[0]
    for op in ("Squeeze", "Transpose"):
        nxt = [n for n in graph.node if n.op_type == op and n.input and n.input[0] == tensor]
        if len(nxt) != 1:
            raise ValueError(f"unexpected graph: the last recurrent output is not followed by {op}")
        tensor = nxt[0].output[0]
    graph.node.append(helper.make_node("Identity", [tensor], [HIDDEN_OUTPUT], name="cache_hidden"))
    graph.output.append(
        helper.make_tensor_value_info(
            HIDDEN_OUTPUT, TensorProto.FLOAT, ["batch", "seq", hidden_size]
        )
    )
    return model


def texts_of(lines: list[str], max_tokens: int, tokenizer: Tokenizer) -> list[list[int]]:
    """Whole lines grouped, in order, into texts of at most ``max_tokens`` tokens (ids)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for line in lines:
        ids = tokenizer.encode(line).ids
        if cur and len(cur) + len(ids) > max_tokens:
            out.append(cur)
            cur = []
        cur.extend(ids)
    if cur:
        out.append(cur)
    return [t for t in out if len(t) > 1]


@dataclass
class Scored:
    """One text through the score graph: base log p of each target, outputs, targets."""

    log_probs: np.ndarray
    hidden: np.ndarray
    targets: np.ndarray


def run_score(
    session: ort.InferenceSession,
    ids: list[int],
    start_id: int,
    state: dict[str, Any],
    graph: dict[str, Any],
) -> Scored:
    """One text through the score graph; ``graph``: its card section (input/output names)."""
    feed = np.asarray([start_id, *ids], dtype=np.int64)[None, :]
    ids_in, targets_in = _names(graph["inputs"])[:2]
    res = session.run(
        [_names(graph["outputs"])[0], HIDDEN_OUTPUT],
        {ids_in: feed[:, :-1], targets_in: feed[:, 1:], **state},
    )
    return Scored(res[0][0], res[1][0], feed[0, 1:])


def cache_probs(s: Scored, theta: float, window: int) -> np.ndarray:
    """p_cache(target) at every position of one text (NaN where the history is empty)."""
    out = np.empty(len(s.targets))
    history = History.empty(s.hidden.shape[1])
    for a in range(0, len(s.targets), PIECE):
        sl = slice(a, a + PIECE)
        # score() with λ = 1 gives log p_cache (log 0 = -inf where no word matches)
        params = CacheParams(theta, 1.0, window)
        with np.errstate(divide="ignore"):
            mixed, history = lm_cache.score(
                s.log_probs[sl], s.hidden[sl], s.targets[sl], history, params
            )
        out[sl] = np.exp(mixed.astype(np.float64))
    out[0] = np.nan  # the first position has no history: score() keeps the model's number
    return out


def history_sizes(scored: list[Scored], window: int) -> np.ndarray:
    """How many earlier positions each position's cache holds (its index, up to the window)."""
    return np.concatenate([np.minimum(np.arange(len(s.targets)), window) for s in scored])


def mixed_nll_each(
    base: np.ndarray, p_cache: np.ndarray, n: np.ndarray, p: CacheParams
) -> np.ndarray:
    lam = lm_cache.weight(n, p)
    mix = np.where(
        np.isnan(p_cache), np.exp(base), (1 - lam) * np.exp(base) + lam * np.nan_to_num(p_cache)
    )
    return -np.log(mix)


def mixed_nll(base: np.ndarray, p_cache: np.ndarray, n: np.ndarray, p: CacheParams) -> float:
    return float(mixed_nll_each(base, p_cache, n, p).sum())


def by_history(
    base: np.ndarray, p_cache: np.ndarray, n: np.ndarray, p: CacheParams
) -> list[dict[str, Any]]:
    """Perplexity with and without the cache by how long the history was: a short prompt
    must not be made worse for the sake of long documents."""
    each = mixed_nll_each(base, p_cache, n, p)
    out = []
    for a, b in HISTORY_BUCKETS:
        m = (n >= a) & (n < b)
        if m.any():
            out.append(
                {
                    "history": f"{a}-{b - 1}" if b < 10**9 else f"{a}+",
                    "positions": int(m.sum()),
                    "base_perplexity": math.exp(-base[m].mean()),
                    "cache_perplexity": math.exp(each[m].mean()),
                }
            )
    return out


def tune(scored: list[Scored]) -> dict[str, Any]:
    """θ, window and λ with the lowest perplexity over ``scored`` (a grid)."""
    base = np.concatenate([s.log_probs for s in scored]).astype(np.float64)
    n = len(base)
    grid = []
    for theta, window in tqdm(list(itertools.product(THETAS, WINDOWS)), desc="cache grid"):
        pc = np.concatenate([cache_probs(s, theta, window) for s in scored])
        sizes = history_sizes(scored, window)
        for lam, ramp in itertools.product(LAMBDAS, RAMPS):
            p = CacheParams(theta, lam, window, ramp)
            grid.append(
                {
                    "theta": theta,
                    "window": window,
                    "lambda": lam,
                    "ramp": ramp,
                    "perplexity": math.exp(mixed_nll(base, pc, sizes, p) / n),
                }
            )
    best = min(grid, key=lambda g: g["perplexity"])
    return {"best": best, "base_perplexity": math.exp(-base.sum() / n), "grid": grid}


def _names(tensors: list[Any]) -> list[str]:
    """Tensor names from a card's list (names, or ``{"name": ...}`` entries)."""
    return [t if isinstance(t, str) else t["name"] for t in tensors]


def top_k(
    session: ort.InferenceSession,
    texts: list[list[int]],
    start_id: int,
    banned: list[int],
    params: CacheParams,
    card: dict[str, Any],
    k: int = 5,
) -> dict[str, Any]:
    """Top-1/top-5 of the next-word graph with and without the cache, stepping every text one
    token at a time in one batch (as /next-word does after each word). Positions whose target
    is a word /next-word never suggests (<unk>, end of line) are counted apart."""
    layers, size = int(card["state"]["layers"]), int(card["state"]["hidden_size"])
    state_in, state_out = card["state"]["inputs"], card["state"]["outputs"]
    ids_in, probs_out = _names(card["onnx"]["inputs"])[0], _names(card["onnx"]["outputs"])[0]
    b = len(texts)
    feeds = [np.asarray([start_id, *t], dtype=np.int64) for t in texts]
    state = [np.zeros((layers, b, size), np.float32) for _ in state_in]  # h (and c for LSTM)
    hist = [History.empty(size) for _ in range(b)]
    prev_q: list[np.ndarray | None] = [None] * b
    hits = {"base": np.zeros(2), "cache": np.zeros(2)}
    counted = 0
    skipped = 0
    steps = max(len(f) for f in feeds) - 1
    for t in tqdm(range(steps), desc="top-k"):
        live = [i for i in range(b) if t + 1 < len(feeds[i])]
        x = np.array([[feeds[i][t]] for i in live], np.int64)
        lp, hid, *new = session.run(
            [probs_out, HIDDEN_OUTPUT, *state_out],
            {ids_in: x, **{n: s[:, live] for n, s in zip(state_in, state, strict=True)}},
        )
        for s, v in zip(state, new, strict=True):
            s[:, live] = v
        for j, i in enumerate(live):
            q = hid[j, -1]
            prev = prev_q[i]
            if prev is not None:  # the pair (output at t - 1, the word at t)
                hist[i] = hist[i].extend(prev[None, :], feeds[i][t : t + 1], params.window)
            prev_q[i] = q
            target = int(feeds[i][t + 1])
            if target in banned:
                skipped += 1
                continue
            counted += 1
            for name, row in (
                ("base", lp[j]),
                ("cache", lm_cache.next_log_probs(lp[j], q, hist[i], params)),
            ):
                r = row.copy()
                r[banned] = -np.inf
                best = np.argpartition(-r, k)[:k]
                best = best[np.argsort(-r[best])]
                hits[name] += [best[0] == target, target in best]
    return {
        "positions": counted,
        "skipped_unsuggestable_targets": skipped,
        "base": {"top1": hits["base"][0] / counted, "top5": hits["base"][1] / counted},
        "cache": {"top1": hits["cache"][0] / counted, "top5": hits["cache"][1] / counted},
    }


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def prepare(src: Path, dst: Path) -> dict[str, Any]:
    """Copy the model folder to ``dst`` with the ``hidden`` output added to both graphs."""
    card = json.loads((src / "card.json").read_text())
    size = int(card["state"]["hidden_size"])
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".onnx":
            shutil.copy2(f, dst / f.name)
    for key in ("onnx", "score_onnx"):
        name = card[key]["file"]
        m = onnx.load(str(src / name), load_external_data=False)
        onnx.save(add_hidden_output(m, size), str(dst / name))
        outputs = card[key]["outputs"]
        if HIDDEN_OUTPUT not in _names(outputs):  # in the layout the card already uses
            typed = bool(outputs) and isinstance(outputs[0], dict)
            entry: Any = HIDDEN_OUTPUT
            if typed:
                entry = {"name": HIDDEN_OUTPUT, "dtype": "float32", "shape": ["batch", "seq", size]}
            card[key]["outputs"] = [*outputs, entry]
    return card


def run(
    src: Path, valid: Path, work: Path, text_tokens: int, max_lines: int | None
) -> dict[str, Any]:
    card = prepare(src, work)
    tok = Tokenizer.from_file(str(work / card["tokenizer"]["file"]))
    with open(valid, encoding="utf-8") as fh:
        lines = list(itertools.islice(fh, max_lines))
    texts = texts_of(lines, text_tokens, tok)
    half = len(texts) // 2
    start = int(card["start_token"]["id"])
    layers, size = int(card["state"]["layers"]), int(card["state"]["hidden_size"])
    zero = {n: np.zeros((layers, 1, size), np.float32) for n in card["state"]["inputs"]}
    score_s = session(work / card["score_onnx"]["file"])
    t0 = time.perf_counter()
    scored = [
        run_score(score_s, t, start, zero, card["score_onnx"]) for t in tqdm(texts, desc="score")
    ]
    tuned = tune(scored[:half])
    b = tuned["best"]
    params = CacheParams(b["theta"], b["lambda"], b["window"], b["ramp"])
    report: dict[str, Any] = {"texts": len(texts), "tune_texts": half, "tuning": tuned}
    for part, rows in (("held_out", scored[half:]), ("all", scored)):
        base = np.concatenate([s.log_probs for s in rows]).astype(np.float64)
        pc = np.concatenate([cache_probs(s, params.theta, params.window) for s in rows])
        sizes = history_sizes(rows, params.window)
        report[part] = {
            "positions": len(base),
            "base_perplexity": math.exp(-base.sum() / len(base)),
            "cache_perplexity": math.exp(mixed_nll(base, pc, sizes, params) / len(base)),
            "by_history_length": by_history(base, pc, sizes, params),
        }
    banned = [int(card["special_tokens"]["unk"]["id"]), int(card["special_tokens"]["eos"]["id"])]
    next_s = session(work / card["onnx"]["file"])
    report["held_out"]["top_k"] = top_k(next_s, texts[half:], start, banned, params, card)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    card["cache"] = {
        "theta": params.theta,
        "lambda": params.lam,
        "window": params.window,
        "ramp": params.ramp,
        "output": HIDDEN_OUTPUT,
        "covers": "the text of one request (a state token carries the recurrent state, "
        "not the cache)",
    }
    return {"card": card, "report": report}


def publish_with_cache(
    src: Path, valid: Path, staging: Path, text_tokens: int, max_lines: int | None
) -> dict[str, Any]:
    """Write the model with its cache into ``staging``: graphs, files and the card."""
    out = run(src, valid, staging, text_tokens, max_lines)
    card, report = out["card"], out["report"]
    for key in ("onnx", "score_onnx"):
        f = staging / card[key]["file"]
        card[key]["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
        card[key]["bytes"] = f.stat().st_size
    derived = f"{card['name']}:{card['version']}"
    card["description"] = (
        f"{card['description'].rstrip('.')}; with a continuous cache (Grave et al. 2016) over "
        f"the request's text: the weights of {derived}, θ/λ/window tuned on validation."
    )
    card["derived_from"] = derived
    ho = report["held_out"]
    card["cache"]["validation"] = {
        "file": valid.name,
        "texts": report["texts"],
        "tuned_on_texts": report["tune_texts"],
        "held_out_base_perplexity": ho["base_perplexity"],
        "held_out_cache_perplexity": ho["cache_perplexity"],
        "held_out_top_k": ho["top_k"],
    }
    grid = report["tuning"].pop("grid")
    # the headline first (``seqserve models list`` shows the first metrics): the served figure
    card["metrics"] = {
        "valid_perplexity_with_cache": report["all"]["cache_perplexity"],
        **card.get("metrics", {}),
        "cache": {**report, "grid_size": len(grid)},
    }
    card["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if "folder_bytes" in card:  # written below; the grid file and the card count too
        files = [f for f in staging.iterdir() if f.is_file() and f.name != "card.json"]
        card["folder_bytes"] = sum(f.stat().st_size for f in files)
    (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (staging / "cache_grid.json").write_text(json.dumps(grid) + "\n", encoding="utf-8")
    return card
