"""Hold-out figures of the shipped default models, measured through the API in-process.

    python benchmarks/holdout.py                         # ~35 s on 2 cores
    python benchmarks/holdout.py --json out.json         # also write every figure as JSON
    python benchmarks/holdout.py --imdb-limit 500 --m4-limit 100 --lm-lines 200 --skip anomaly

Builds the app on ``models/`` (``create_app(Settings(models_dir=...))``) and drives it with
``fastapi.testclient.TestClient``: every figure is computed from the API's answers, so it is what
a client of the default models gets, not what the training code measured on the graphs.

- sentiment: accuracy on SST-2 dev and IMDB dev (``POST /sentiment``, ``texts`` batches of at
  most the server's ``max_texts``);
- forecast: sMAPE, MASE (scaled by the in-sample seasonal-naive MAE, m = 24, of the history the
  model was sent) and 80% / 95% interval coverage on the last 48 points of every M4 hourly series,
  the history sent being everything before them (``POST /forecast``), with seasonal naive beside;
- next-word: perplexity of the first ``--lm-lines`` lines of WikiText-2 valid through
  ``POST /next-word/score`` (lines grouped, in order, into texts under the API's per-text limits;
  a newline is the end-of-line token; every text starts from a fresh state), so
  exp(-sum log_likelihood / sum tokens);
- anomaly: NAB scores of the per-series ``POST /anomaly`` answers, by NAB's own scorer (via
  ``benchmarks/nab.py``); skipped with a note when the scorer is not available.

Data come from ``../shared/data`` (``--data-dir``); no PyTorch is imported.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/holdout.py` from anywhere
    sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from training.forecast.metrics import (  # noqa: E402  (numpy only, no torch)
    baseline_scores,
    coverage,
    mase,
    mase_scale,
    smape,
)

DATA = REPO.parent / "shared" / "data"
TASKS = ("sentiment", "forecast", "next-word", "anomaly")
M4_HORIZON = 48
M4_SEASON = 24
LEVELS = (80, 95)


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    if r.status_code != 200:
        raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:500]}")
    return r.json()


def ref(model: dict[str, Any]) -> str:
    return f"{model['name']}:{model['version']}"


# --------------------------------------------------------------------------- sentiment


def read_labelled(path: Path, quoted: bool, limit: int | None) -> list[tuple[str, int]]:
    """``sentence<TAB>label`` rows. IMDB uses standard CSV quoting; SST-2 has none (and its
    sentences hold bare quote characters), so it is read with QUOTE_NONE."""
    with open(path, newline="", encoding="utf-8") as fh:
        quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
        rows = [
            (r["sentence"], int(r["label"]))
            for r in csv.DictReader(fh, delimiter="\t", quoting=quoting)
        ]
    return rows[:limit] if limit is not None else rows


def accuracy(client: TestClient, rows: list[tuple[str, int]], batch: int) -> dict[str, Any]:
    right = truncated = 0
    model: dict[str, Any] = {}
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        out = post(client, "/sentiment", {"texts": [text for text, _ in chunk]})
        model = out["model"]
        for (_, label), res in zip(chunk, out["results"], strict=True):
            right += res["label"] == ("positive" if label == 1 else "negative")
            truncated += bool(res["truncated"])
    return {
        "accuracy": right / len(rows),
        "examples": len(rows),
        "truncated": truncated,
        "requests": math.ceil(len(rows) / batch),
        "model": ref(model),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def run_sentiment(client: TestClient, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    sst2 = read_labelled(args.data_dir / "sst2" / "dev.tsv", quoted=False, limit=args.sst2_limit)
    imdb = read_labelled(args.data_dir / "imdb" / "dev.tsv", quoted=True, limit=args.imdb_limit)
    return {
        "batch": batch,
        "sst2_dev": accuracy(client, sst2, batch),
        "imdb_dev": accuracy(client, imdb, batch),
    }


# --------------------------------------------------------------------------- forecast


def read_m4(path: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]  # header: V1, V2, ...
    series = [(r[0], np.asarray([float(v) for v in r[1:] if v], dtype=np.float64)) for r in rows]
    return series[:limit] if limit is not None else series


def run_forecast(client: TestClient, args: argparse.Namespace) -> dict[str, Any]:
    m4 = read_m4(args.data_dir / "m4_hourly" / "Hourly-train.csv", args.m4_limit)
    h = M4_HORIZON
    histories = [v[:-h] for _, v in m4]
    y = np.stack([v[-h:] for _, v in m4])
    forecasts: list[dict[str, Any]] = []
    model: dict[str, Any] = {}
    t0 = time.perf_counter()
    # a few requests rather than one: each stays well inside the request deadline on a busy box
    for i in range(0, len(m4), args.m4_batch):
        series = [
            {"id": sid, "values": hist.tolist()}
            for (sid, _), hist in zip(
                m4[i : i + args.m4_batch], histories[i : i + args.m4_batch], strict=True
            )
        ]
        out = post(client, "/forecast", {"series": series, "horizon": h, "level": list(LEVELS)})
        model = out["model"]
        got = [f["id"] for f in out["forecasts"]]
        if got != [s["id"] for s in series]:
            raise RuntimeError("/forecast answered the series out of order")
        forecasts += out["forecasts"]
    seconds = time.perf_counter() - t0
    keys = [k for k in forecasts[0] if k == "mean" or k.startswith(("lo-", "hi-"))]
    f = {k: np.asarray([x[k] for x in forecasts], dtype=np.float64) for k in keys}
    scales = np.asarray([mase_scale(x, M4_SEASON) for x in histories])
    per_smape = smape(y, f["mean"])
    per_mase = mase(y, f["mean"], scales)
    cov = {}
    for level in LEVELS:
        lo, hi = _band(f, level)
        cov[str(level)] = coverage(y, lo, hi)
    base = baseline_scores(histories, y, M4_SEASON)
    return {
        "model": ref(model),
        "series": len(m4),
        "horizon": h,
        "smape": float(np.mean(per_smape)),
        "mase": float(np.nanmean(per_mase)),
        "zero_scale_series": int(np.sum(scales <= 0)),
        "coverage": cov,
        "seasonal_naive": base["seasonal_naive"],
        "naive": base["naive"],
        "requests": math.ceil(len(m4) / args.m4_batch),
        "seconds": round(seconds, 2),
    }


def _band(f: dict[str, np.ndarray], level: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``lo-<level>`` / ``hi-<level>`` arrays, whatever the server's number formatting."""
    for key in (str(level), f"{float(level)}", f"{float(level):g}"):
        if f"lo-{key}" in f and f"hi-{key}" in f:
            return f[f"lo-{key}"], f[f"hi-{key}"]
    raise RuntimeError(f"no {level}% interval in the /forecast answer (keys: {sorted(f)})")


# --------------------------------------------------------------------------- next-word


def lm_chunks(lines: list[str], max_tokens: int, max_chars: int) -> list[str]:
    """Whole lines (newline kept: the end-of-line token) grouped, in order, under the API's
    per-text limits; the token count is estimated from whitespace words (WikiText is already
    tokenised), so the limits passed in should keep a margin."""
    chunks: list[str] = []
    cur: list[str] = []
    tokens = chars = 0
    for line in lines:
        n = len(line.split()) + 1
        if cur and (tokens + n > max_tokens or chars + len(line) > max_chars):
            chunks.append("".join(cur))
            cur, tokens, chars = [], 0, 0
        cur.append(line)
        tokens, chars = tokens + n, chars + len(line)
    if cur:
        chunks.append("".join(cur))
    return [c for c in chunks if c.strip()]  # a whitespace-only text is a 422


def run_next_word(client: TestClient, args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    path = args.data_dir / "wikitext2" / "valid.txt"
    with open(path, encoding="utf-8") as fh:
        lines = list(itertools.islice(fh, args.lm_lines))
    chunks = lm_chunks(lines, int(0.9 * s.max_context_tokens), int(0.9 * s.max_context_chars))
    total_ll, total_tokens = 0.0, 0
    model: dict[str, Any] = {}
    t0 = time.perf_counter()
    for text in chunks:
        out = post(client, "/next-word/score", {"text": text})
        total_ll += out["log_likelihood"]
        total_tokens += out["tokens"]
        model = out["model"]
    return {
        "model": ref(model),
        "lines": len(lines),
        "requests": len(chunks),
        "tokens": total_tokens,
        "log_likelihood": total_ll,
        "perplexity": math.exp(-total_ll / total_tokens),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------- anomaly


def run_anomaly(client: TestClient, args: argparse.Namespace) -> dict[str, Any]:
    """NAB through POST /anomaly, one request per series as ``benchmarks/nab.py`` sends them,
    scored by NAB's scorer through that script's helpers (its own ``score_all`` needs a URL)."""
    from benchmarks import nab

    nab_dir = args.data_dir / "nab"
    if not args.nab_scorer.exists() or not nab_dir.is_dir():
        return {"skipped": f"no NAB scorer at {args.nab_scorer} or no data at {nab_dir}"}
    series = nab.read_nab(nab_dir)
    scores: list[np.ndarray] = []
    detections = 0
    model: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in series:
        item = {
            "id": s.key,
            "values": s.values.tolist(),
            "timestamps": [t.replace(" ", "T") for t in s.timestamps],
        }
        out = post(client, "/anomaly", {"series": [item]})
        model = out["model"]
        res = out["results"][0]
        scores.append(np.asarray(res["scores"], dtype=np.float64))
        detections += len(res["anomalies"])
    api_seconds = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            nab_scores = nab.run_scorer(
                nab.write_results(tmp, nab.NAME, series, scores), nab.NAME, args.nab_scorer
            )
    except (RuntimeError, OSError) as exc:
        return {"skipped": f"NAB scorer failed: {str(exc).splitlines()[0]}", "model": ref(model)}
    return {
        "model": ref(model),
        "series": len(series),
        "points": int(sum(len(s.values) for s in series)),
        "detections": detections,
        "nab": nab_scores,
        "api_seconds": round(api_seconds, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------- report


def card_metrics(client: TestClient) -> dict[str, dict[str, Any]]:
    """The default model's card metrics per task, to print beside the measured figures."""
    body = client.get("/v1/models").json()
    defaults = body.get("defaults", {})
    out = {}
    for task, name in defaults.items():
        m = next((m for m in body["models"] if ref(m) == name and m["task"] == task), None)
        out[task] = (m or {}).get("metrics") or {}
    return out


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def table(res: dict[str, Any]) -> str:
    card = res.get("card", {})
    rows: list[tuple[str, str, str, Any, Any, str]] = []

    def add(task: str, model: str, metric: str, value: Any, ref_value: Any, n: str) -> None:
        rows.append((task, model, metric, value, ref_value, n))

    if "sentiment" in res:
        se, c = res["sentiment"], card.get("sentiment", {})
        for key, label, card_key in (
            ("sst2_dev", "accuracy SST-2 dev", "dev_accuracy_sst2"),
            ("imdb_dev", "accuracy IMDB dev", "dev_accuracy_imdb"),
        ):
            r = se[key]
            n = f"{r['examples']} texts, {r['truncated']} truncated"
            add("sentiment", r["model"], label, r["accuracy"], c.get(card_key), n)
    if "forecast" in res:
        fc, c = res["forecast"], card.get("forecast", {})
        n = f"{fc['series']} series x {fc['horizon']}"
        add("forecast", fc["model"], "sMAPE", fc["smape"], _get(c, "ensemble", "smape"), n)
        add("forecast", fc["model"], "MASE", fc["mase"], _get(c, "ensemble", "mase"), n)
        # version 5 on: the card's coverage as served (per-series intervals) on the same set
        served = ("coverage_by_set", "m4_validation", "served", "coverage")
        where = served if _get(c, *served) is not None else ("coverage",)
        for level, v in fc["coverage"].items():
            add("forecast", fc["model"], f"coverage {level}%", v, _get(c, *where, level), n)
        sn = fc["seasonal_naive"]
        add("forecast", "seasonal naive", "sMAPE", sn["smape"], None, n)
        add("forecast", "seasonal naive", "MASE", sn["mase"], None, n)
    if "next-word" in res:
        lm, c = res["next-word"], card.get("next-word", {})
        n = f"{lm['lines']} lines, {lm['tokens']} tokens"
        add("next-word", lm["model"], "perplexity", lm["perplexity"], c.get("valid_perplexity"), n)
    if "anomaly" in res:
        an, c = res["anomaly"], card.get("anomaly", {})
        if "skipped" in an:
            add("anomaly", an.get("model", "-"), "NAB", None, None, "skipped: " + an["skipped"])
        else:
            n = f"{an['series']} series, {an['detections']} detections"
            for p, v in an["nab"].items():
                add("anomaly", an["model"], f"NAB {p}", v, _get(c, "nab", p), n)

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4f}" if abs(v) < 2 else f"{v:.2f}"

    head = ("task", "model", "metric", "measured", "card", "on")
    body = [(t, m, k, fmt(v), fmt(cv), n) for t, m, k, v, cv, n in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append(line("-" * w for w in widths))
    out += [line(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    out.append(
        "card: the model card's figure; for next-word it is the whole of valid.txt with the state "
        "carried through (here every request starts from a fresh state)"
    )
    return "\n".join(out)


def _seconds(r: dict[str, Any]) -> float:
    if "seconds" in r:
        return float(r["seconds"])
    return round(sum(float(v["seconds"]) for v in r.values() if isinstance(v, dict)), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=REPO / "models", help="models folder")
    ap.add_argument("--data-dir", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--sst2-limit", type=int, help="first N SST-2 dev sentences (default: all)")
    ap.add_argument("--imdb-limit", type=int, default=2000, help="first N IMDB dev reviews")
    ap.add_argument("--m4-limit", type=int, help="first N M4 hourly series (default: all 414)")
    ap.add_argument("--m4-batch", type=int, default=100, help="M4 series per /forecast request")
    ap.add_argument("--lm-lines", type=int, default=500, help="first N lines of wikitext2 valid")
    ap.add_argument(
        "--nab-scorer",
        type=Path,
        help="NAB's score.sh (default: <data-dir>/../tools/nab/score.sh)",
    )
    ap.add_argument("--skip", nargs="*", choices=TASKS, default=[], help="tasks to leave out")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument(
        "--verbose", action="store_true", help="keep the server's info and access logs (stderr)"
    )
    args = ap.parse_args(argv)
    if args.nab_scorer is None:
        args.nab_scorer = args.data_dir.parent / "tools" / "nab" / "score.sh"

    t_start = time.perf_counter()
    settings = Settings(models_dir=args.models_dir.resolve())
    if not args.verbose:  # the server's logging is set up at import, from the environment
        for name in ("app", "seqserve", "httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    res: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        t_ready = time.perf_counter()
        res["card"] = card_metrics(client)
        if "sentiment" not in args.skip:
            res["sentiment"] = run_sentiment(client, args, settings.max_texts)
        if "forecast" not in args.skip:
            res["forecast"] = run_forecast(client, args)
        if "next-word" not in args.skip:
            res["next-word"] = run_next_word(client, args, settings)
        if "anomaly" not in args.skip:
            res["anomaly"] = run_anomaly(client, args)
    res["startup_seconds"] = round(t_ready - t_start, 2)
    res["total_seconds"] = round(time.perf_counter() - t_start, 2)
    res["torch_imported"] = "torch" in sys.modules
    res["data_dir"] = str(args.data_dir)
    res["models_dir"] = str(settings.models_dir)
    res["command"] = " ".join(["python", "benchmarks/holdout.py", *(argv or sys.argv[1:])])
    print(table(res))
    timings = ", ".join(f"{t} {_seconds(res[t])} s" for t in TASKS if t in res)
    print(f"\nstart-up {res['startup_seconds']} s; {timings}; total {res['total_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
