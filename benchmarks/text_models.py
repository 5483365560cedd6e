"""The text models' dev figures, measured through the API in-process (issue 22's targets).

    python benchmarks/text_models.py                          # every figure, ~10 min on 2 cores
    python benchmarks/text_models.py --skip next-word --json benchmarks/results/text-models.json
    python benchmarks/text_models.py --sentiment-models sst2-imdb-bilstm:1 sst2-imdb-tweets-bilstm:1

Builds the app on ``models/`` and drives it with ``fastapi.testclient.TestClient``, so every
figure is what a client gets from the shipped files:

- binary sentiment, per dev set (SST-2, IMDB, SemEval tweets positive-vs-negative): accuracy
  and expected calibration error (15 bins, top class) of ``POST /sentiment``'s probabilities;
- three-class sentiment on the SemEval tweets dev set: accuracy, macro-F1 and per-class F1;
- next-word on WikiText-2 valid: perplexity through ``POST /next-word/score`` with the cache and
  without (``"cache": false``), every line, grouped in order into texts under the API's limits;
  top-1/top-5 through ``POST /next-word`` at ``--positions`` positions drawn at random (seeded),
  each sent with its text from the start of its group, for the positions whose next token is a
  word /next-word can suggest (not <unk> or the end of a line).

Data come from ``../shared/data`` (``--data-dir``); no PyTorch is imported.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from benchmarks.holdout import post  # noqa: E402  (raises with the body on a non-200)
from training.common.calibration import ece  # noqa: E402  (numpy only)

DATA = REPO.parent / "shared" / "data"
BINARY = {"0": "negative", "1": "positive", "negative": "negative", "positive": "positive"}


def read_rows(path: Path, quoted: bool = True) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
        return [
            (r["sentence"], r["label"]) for r in csv.DictReader(fh, delimiter="\t", quoting=quoting)
        ]


def classify(
    client: TestClient, model: str, rows: list[tuple[str, str]], batch: int
) -> tuple[list[str], np.ndarray, list[str]]:
    """Predicted labels, probability rows (in ``labels`` order) and the model's labels."""
    preds: list[str] = []
    probs: list[dict[str, float]] = []
    for i in range(0, len(rows), batch):
        out = post(
            client, "/sentiment", {"texts": [t for t, _ in rows[i : i + batch]], "model": model}
        )
        for res in out["results"]:
            preds.append(res["label"])
            probs.append(res["probabilities"])
    labels = sorted(probs[0])
    return preds, np.array([[p[lab] for lab in labels] for p in probs]), labels


def binary_figures(
    client: TestClient, model: str, sets: dict[str, list[tuple[str, str]]], batch: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in sets.items():
        t0 = time.perf_counter()
        preds, probs, labels = classify(client, model, rows, batch)
        y = np.array([labels.index(BINARY[lab]) for _, lab in rows])
        out[name] = {
            "examples": len(rows),
            "accuracy": float(
                np.mean([p == BINARY[lab] for p, (_, lab) in zip(preds, rows, strict=True)])
            ),
            "ece": ece(probs, y),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


def three_class_figures(
    client: TestClient, model: str, rows: list[tuple[str, str]], batch: int
) -> dict[str, Any]:
    preds, probs, labels = classify(client, model, rows, batch)
    gold = [lab for _, lab in rows]
    f1 = {}
    for lab in sorted(set(gold)):
        tp = sum(p == lab and g == lab for p, g in zip(preds, gold, strict=True))
        fp = sum(p == lab and g != lab for p, g in zip(preds, gold, strict=True))
        fn = sum(p != lab and g == lab for p, g in zip(preds, gold, strict=True))
        f1[lab] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    y = np.array([labels.index(g) for g in gold])
    return {
        "examples": len(rows),
        "accuracy": float(np.mean([p == g for p, g in zip(preds, gold, strict=True)])),
        "macro_f1": float(np.mean(list(f1.values()))),
        "f1": f1,
        "ece": ece(probs, y),
    }


def lm_groups(lines: list[str], max_tokens: int) -> list[str]:
    """Whole lines (newline kept: the end-of-line token) grouped in order; WikiText is already
    split into tokens, so whitespace words count them (+1 for the newline)."""
    groups: list[str] = []
    cur: list[str] = []
    n = 0
    for line in lines:
        k = len(line.split()) + 1
        if cur and n + k > max_tokens:
            groups.append("".join(cur))
            cur, n = [], 0
        cur.append(line)
        n += k
    if cur:
        groups.append("".join(cur))
    return [g for g in groups if g.strip()]


def next_word_figures(client: TestClient, args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    with open(args.data_dir / "wikitext2" / "valid.txt", encoding="utf-8") as fh:
        lines = fh.readlines()[: args.lm_lines]
    groups = lm_groups(lines, int(0.9 * s.max_context_tokens))
    out: dict[str, Any] = {"texts": len(groups)}
    model = args.lm_model
    for cache in (False, True):
        t0 = time.perf_counter()
        ll = tokens = 0.0
        for g in groups:
            r = post(client, "/next-word/score", {"text": g, "cache": cache, "model": model})
            ll += r["log_likelihood"]
            tokens += r["tokens"]
            out["model"] = f"{r['model']['name']}:{r['model']['version']}"
        out["cache" if cache else "base"] = {
            "perplexity": math.exp(-ll / tokens),
            "tokens": int(tokens),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    # top-k at random positions: the words of each group, as the API's tokenizer reads them
    rng = np.random.default_rng(args.seed)
    hits = {"base": [0, 0], "cache": [0, 0]}
    counted = 0
    t0 = time.perf_counter()
    while counted < args.positions:
        g = groups[int(rng.integers(len(groups)))]
        words = g.replace("\n", " \n ").split(" ")
        words = [w for w in words if w]
        cut = int(rng.integers(1, len(words)))
        target = words[cut]
        if target == "\n" or target == "<unk>":
            continue  # /next-word never suggests the end of a line or the unknown word
        context = " ".join(words[:cut]).replace(" \n ", "\n")
        if not context.strip():
            continue
        counted += 1
        for cache in (False, True):
            r = post(
                client, "/next-word", {"text": context, "k": 5, "cache": cache, "model": model}
            )
            best = [c["word"] for c in r["candidates"]]
            h = hits["cache" if cache else "base"]
            h[0] += best[0] == target
            h[1] += target in best
    for name, (h1, h5) in hits.items():
        out[name]["top1"] = h1 / counted
        out[name]["top5"] = h5 / counted
    out["topk_positions"] = counted
    out["topk_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument(
        "--sentiment-models", nargs="*", default=[None], help="binary models (default: the default)"
    )
    ap.add_argument(
        "--three-class-model", default=None, help="three-class model (name or name:version)"
    )
    ap.add_argument("--lm-model", default=None, help="next-word model (default: the default)")
    ap.add_argument("--positions", type=int, default=1000, help="top-k positions drawn")
    ap.add_argument("--lm-lines", type=int, default=None, help="only the first N valid lines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["binary", "three-class", "next-word"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings(models_dir=args.models_dir)
    batch = settings.max_texts
    res: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        if "binary" not in args.skip:
            tweets = [
                r
                for r in read_rows(args.data_dir / "semeval-tweets" / "dev.tsv")
                if r[1] != "neutral"
            ]
            sets = {
                "sst2": read_rows(args.data_dir / "sst2" / "dev.tsv", quoted=False),
                "imdb": read_rows(args.data_dir / "imdb" / "dev.tsv"),
                "semeval_pos_neg": tweets,
            }
            res["binary"] = {}
            for m in args.sentiment_models:
                ref = m or post(client, "/sentiment", {"text": "fine"})["model"]
                name = ref if isinstance(ref, str) else f"{ref['name']}:{ref['version']}"
                res["binary"][name] = binary_figures(client, name, sets, batch)
                print(json.dumps({name: res["binary"][name]}), flush=True)
        if "three-class" not in args.skip and args.three_class_model:
            rows = read_rows(args.data_dir / "semeval-tweets" / "dev.tsv")
            res["three_class"] = {
                args.three_class_model: three_class_figures(
                    client, args.three_class_model, rows, batch
                )
            }
            print(json.dumps(res["three_class"]), flush=True)
        if "next-word" not in args.skip:
            res["next_word"] = next_word_figures(client, args, settings)
            print(json.dumps(res["next_word"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
