"""``seqserve predict``: one-off predictions from the terminal, without starting a server.

The models load in this process through the same container, task services and batchers the
server uses, so a result here is the result the API would give. Each task's entry (its
arguments and its ``run``) is registered with the task (``app.tasks``); the command line
iterates over the registered tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.container import Container
from app.errors import InvalidInput
from app.services.anomaly import AnomalyService
from app.services.forecast import ForecastService, SeriesInput
from app.services.next_word import NextWordService
from app.services.sentiment import SentimentService
from app.settings import Settings

T = TypeVar("T")


def run_with_container(settings: Settings, work: Callable[[Container], Awaitable[T]]) -> T:
    async def main() -> T:
        container = Container.build(settings)
        try:
            return await work(container)
        finally:
            await container.close()

    return asyncio.run(main())


def read_texts(texts: Sequence[str], file: Path | None) -> list[str]:
    """Texts from the arguments, or one per line of ``file`` ('-' for standard input)."""
    if file is None:
        return list(texts)
    stream = sys.stdin if str(file) == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    with stream:
        return [line.rstrip("\n") for line in stream if line.strip()]


async def sentiment(c: Container, texts: list[str], model: str | None) -> list[dict[str, Any]]:
    """Classify in chunks of the per-request limit, with a progress bar for long files."""
    from tqdm import tqdm

    size = c.settings.max_texts
    out: list[dict[str, Any]] = []
    with tqdm(total=len(texts), unit="text", file=sys.stderr, disable=len(texts) <= size) as bar:
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            rec, preds = await c.get(SentimentService).classify(chunk, "texts", model)
            for text, p in zip(chunk, preds, strict=True):
                out.append(
                    {
                        "text": text,
                        "label": p.label,
                        "score": round(p.score, 4),
                        "tokens": p.tokens,
                        "truncated": p.truncated,
                        "model": rec.ref,
                    }
                )
            bar.update(len(chunk))
    return out


async def next_word(
    c: Container, text: str, model: str | None, k: int, complete: int
) -> dict[str, Any]:
    rec, r = await c.get(NextWordService).predict(
        text,
        model,
        k=k,
        state_token=None,
        complete=complete,
        temperature=0.0,
        top_k=None,
        seed=None,
    )
    return {
        "candidates": [
            {"word": x.word, "probability": round(x.probability, 4)} for x in r.candidates
        ],
        "completion": r.completion,
        "tokens": r.tokens,
        "model": rec.ref,
    }


@dataclass
class CsvSeries:
    column: str
    values: list[float]
    stamps: list[str] | None  # the time column's cells, as written


def read_series_csv(
    path: Path, column: str | None, time_col: str | None, missing_ok: bool = False
) -> CsvSeries:
    """One series from a CSV with a header: ``column`` (default: the last column) and, when
    ``time_col`` is given, that column's cells. Empty value cells are an error, not skipped
    (a gap would shift every later value by one step), unless ``missing_ok``: then they are
    NaN, which the anomaly detector reads as missing."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InvalidInput(f"{path} has no data rows")
    names = list(rows[0])
    col = column or names[-1]
    for wanted in (col, time_col):
        if wanted is not None and wanted not in names:
            raise InvalidInput(f"{path} has no column {wanted!r}; it has {', '.join(names)}")
    values = []
    for i, row in enumerate(rows, start=2):
        cell = (row.get(col) or "").strip()
        if missing_ok and cell == "":
            values.append(float("nan"))
            continue
        try:
            values.append(float(cell))
        except ValueError:
            raise InvalidInput(f"{path} line {i}: {col} is {cell!r}, not a number") from None
    stamps = [(r.get(time_col) or "").strip() for r in rows] if time_col else None
    return CsvSeries(col, values, stamps)


def parse_stamps(path: Path, column: str, cells: list[str]) -> list[dt.datetime]:
    try:
        return [dt.datetime.fromisoformat(c) for c in cells]
    except ValueError as exc:
        raise InvalidInput(f"{path}: {column} is not an ISO 8601 timestamp: {exc}") from None


def start_and_freq(
    path: Path, column: str | None, stamps: list[str] | None
) -> tuple[dt.datetime | None, str | None]:
    """The forecast's ``start`` and ``freq`` from the first two timestamps."""
    if not stamps or column is None:
        return None, None
    first = parse_stamps(path, column, stamps[:2])
    freq = f"{int((first[1] - first[0]).total_seconds())}s" if len(first) == 2 else None
    return first[0], freq


async def forecast(
    c: Container,
    series: SeriesInput,
    horizon: int | None,
    levels: list[float],
    model: str | None,
) -> tuple[str, list[dict[str, Any]], list[str], str]:
    rec, results = await c.get(ForecastService).forecast([series], horizon, levels, model)
    r = results[0]
    rows = []
    for h in range(len(r.mean)):
        row: dict[str, Any] = {"step": h + 1}
        if r.timestamps is not None:
            row["timestamp"] = r.timestamps[h]
        row["mean"] = float(r.mean[h])
        for key, arr in r.bounds.items():
            row[key] = float(arr[h])
        rows.append(row)
    return rec.ref, rows, r.warnings, r.calibration


def write_csv(rows: list[dict[str, Any]], fields: list[str] | None = None) -> None:
    w = csv.DictWriter(sys.stdout, fieldnames=fields or list(rows[0]))
    w.writeheader()
    for row in rows:
        w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


async def anomaly(
    c: Container, path: Path, series: CsvSeries, time_col: str | None, model: str | None
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Per-value scores of one series; an empty cell is a missing value (scores 0)."""
    import numpy as np

    from app.services.anomaly import AnomalyInput

    times = parse_stamps(path, time_col or "", series.stamps) if series.stamps else None
    x = np.asarray(series.values, dtype=np.float64)
    rec, results = await c.get(AnomalyService).score([AnomalyInput(series.column, x, times)], model)
    r = results[0]
    flagged = set(r.anomalies.tolist())
    rows = []
    for i, v in enumerate(series.values):
        row: dict[str, Any] = {"index": i}
        if series.stamps is not None:
            row["timestamp"] = series.stamps[i]
        row.update(value=v, score=float(r.scores[i]), anomaly=int(i in flagged))
        rows.append(row)
    return rec.ref, rows, r.warnings


# --- the command-line entries, one pair per task (registered in app/tasks/<task>.py) ---------


def sentiment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", type=Path, help="a text file, one text per line ('-': stdin)")


def run_sentiment(args: argparse.Namespace, st: Settings) -> int:
    texts = read_texts(args.texts, args.file)
    if not texts:
        print("seqserve: give texts as arguments or --file", file=sys.stderr)
        return 2
    rows = run_with_container(st, lambda c: sentiment(c, texts, args.model))
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


def next_word_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text so far")
    p.add_argument("--k", type=int, default=5, help="number of candidates")
    p.add_argument("--complete", type=int, default=0, help="also continue the text greedily")


def run_next_word(args: argparse.Namespace, st: Settings) -> int:
    res = run_with_container(
        st, lambda c: next_word(c, args.text, args.model, args.k, args.complete)
    )
    print(json.dumps(res, ensure_ascii=False, indent=1))
    return 0


def forecast_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, required=True, help="CSV file with a header row")
    p.add_argument("--column", help="the value column (default: the last column)")
    p.add_argument("--time-col", help="an ISO 8601 timestamp column: adds forecast timestamps")
    p.add_argument("--horizon", type=int, help="steps ahead (default: the model's maximum)")
    p.add_argument(
        "--level", type=float, nargs="+", default=[80.0, 95.0], help="interval levels in percent"
    )
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")


def run_forecast(args: argparse.Namespace, st: Settings) -> int:
    data = read_series_csv(args.csv, args.column, args.time_col)
    col = data.column
    series = SeriesInput(col, data.values, *start_and_freq(args.csv, args.time_col, data.stamps))
    ref, rows, warnings, calibration = run_with_container(
        st, lambda c: forecast(c, series, args.horizon, args.level, args.model)
    )
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        out = {"model": ref, "series": col, "calibration": calibration, "forecast": rows}
        print(json.dumps(out, indent=1))
    else:
        write_csv(rows)
    return 0


def anomaly_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, required=True, help="CSV file with a header row")
    p.add_argument("--column", help="the value column (default: the last column)")
    p.add_argument("--time-col", help="an ISO 8601 timestamp column, passed to the detector")
    p.add_argument("--only-anomalies", action="store_true", help="print flagged rows only")


def run_anomaly(args: argparse.Namespace, st: Settings) -> int:
    data = read_series_csv(args.csv, args.column, args.time_col, missing_ok=True)
    ref, rows, warnings = run_with_container(
        st, lambda c: anomaly(c, args.csv, data, args.time_col, args.model)
    )
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    shown = [r for r in rows if r["anomaly"]] if args.only_anomalies else rows
    write_csv(shown, fields=list(rows[0]))
    return 0
