"""A new version of a published detector with re-chosen scoring knobs (same network).

``seqserve-train anomaly retune --model models/anomaly/nab-gru/1 --grid v3``:

1. cross-validates the grid (``training.anomaly.crossval``; official scorer on the pooled
   held-out folds; ``--splits`` random splits for the spread), and the ``--baseline-grid``
   (the source card's knob family) under the SAME splits, for an apples-to-apples comparison;
2. refuses to publish unless the headline split's pooled held-out official standard score
   beats both the baseline grid's (same splits) and ``--beat`` (default: the source card's
   ``metrics.nab_cross_validated.pooled_held_out.standard``), and the mean over the splits
   beats the baseline's mean;
3. chooses the knobs on ALL the NAB series with the same grid (in-sample, and the card says so),
   scores them with the official scorer, and publishes model.onnx (copied, unchanged) with a
   new card through the append-only store (``contract.store``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from contract.anomaly import DEFAULT_SCORING, scoring_params
from training.anomaly.evaluate import score_all

KNOB_RULES = (
    "scoring rules and parameters: contract.anomaly module docstring; the knobs of this "
    "version over nab-gru:1's are the grid's choice on all 31 NAB series"
)


def gate(report: dict[str, Any], baseline: dict[str, Any] | None, beat: float) -> tuple[bool, str]:
    """(publish?, why): the headline pooled held-out official standard score must beat
    ``beat`` and the baseline grid's under the same splits, and so must the mean over splits."""
    head = report["splits"][0]["pooled_official"]["standard"]
    mean = report["spread"]["mean"]
    reasons = []
    if head <= beat:
        reasons.append(f"headline {head} <= {beat}")
    if baseline is not None:
        b_head = baseline["splits"][0]["pooled_official"]["standard"]
        b_mean = baseline["spread"]["mean"]
        if head <= b_head:
            reasons.append(f"headline {head} <= baseline grid's {b_head} (same split)")
        if mean <= b_mean:
            reasons.append(f"mean over splits {mean} <= baseline grid's {b_mean}")
    if reasons:
        return False, "; ".join(reasons)
    return True, f"headline {head} > {beat}" + (
        f" and > baseline grid's {baseline['splits'][0]['pooled_official']['standard']}; "
        f"mean {mean} > {baseline['spread']['mean']}"
        if baseline is not None
        else ""
    )


def throughput(run: Any, series: list[np.ndarray], card: dict[str, Any], passes: int = 5) -> Any:
    """prepare + graph + finish over every series, best and median of ``passes``."""
    rates, best = [], None
    for _ in range(passes):
        _, row = score_all(run, series, card)
        rates.append(row["points_per_ms"])
        if best is None or row["points_per_ms"] > best["points_per_ms"]:
            best = row
    assert best is not None
    return {
        **best,
        "median_points_per_ms": float(np.median(rates)),
        "passes": passes,
        "threads": 1,
        "series": len(series),
        "includes": "prepare (normalise) + onnxruntime GRU + finish (likelihoods, change "
        "detectors, range check, alarm suppression); CSV parsing and JSON excluded",
    }


def cv_summary(report: dict[str, Any], method: str) -> dict[str, Any]:
    head = report["splits"][0]
    return {
        "method": method,
        "grid_settings": report["settings"],
        "pooled_held_out": head["pooled_official"],
        "folds_seed_0": [
            {
                "held_out": f["held_out"],
                "knobs": f["knobs"],
                "train_fast_standard": f["train_fast_standard"],
            }
            for f in head["folds"]
        ],
        "random_2_fold_splits_standard": {
            **report["spread"],
            "per_split": [r["pooled_official"]["standard"] for r in report["splits"]],
        },
    }


def new_card(
    source: dict[str, Any],
    knobs: dict[str, Any],
    *,
    nab_in_sample: dict[str, float],
    cv: dict[str, Any],
    baseline_cv: dict[str, Any] | None,
    example: dict[str, Any],
    timing: dict[str, Any],
    grid: Any,
    name: str,
    version: str,
    tried: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The new version's card: the source card (same network, same ``onnx``) with the chosen
    knobs over its scoring, the new figures, and what was done."""
    scoring = {**DEFAULT_SCORING, **source.get("scoring", {}), **knobs}
    ref = f"{source['name']}:{source['version']}"
    changed = {k: v for k, v in knobs.items() if source.get("scoring", {}).get(k) != v}
    std = cv["pooled_held_out"]["standard"]
    spread = cv["random_2_fold_splits_standard"]
    parts = ["its error likelihood"]
    if int(scoring["short2"]) > 0:
        parts.append(f"a slower ({scoring['short2']}-point) likelihood")
    if scoring["season_lags"]:
        parts.append(f"a seasonal-difference likelihood (lags {scoring['season_lags']})")
    if int(scoring["shift_short"]) > 0:
        parts.append(
            f"a level-change detector ({scoring['shift_short']} points against the "
            f"{scoring['shift_long']} before)"
        )
    if int(scoring["var_short"]) > 0:
        parts.append("a variance-change detector")
    parts.append("the range check")
    description = (
        f"{ref}'s GRU forecaster (same ONNX graph) with re-chosen scoring: "
        + ", ".join(parts)
        + f"; the max of them, alarms suppressed. NAB cross-validated (knobs chosen on "
        f"half the series, scored on the other half, official scorer): {std:.2f} standard "
        f"(mean {spread['mean']:.2f}, sd {spread['sd']:.2f} over {spread['splits']} random "
        f"splits); in-sample (knobs chosen on all 31 series): {nab_in_sample['standard']:.2f}."
    )
    metrics = {
        **{k: v for k, v in source.get("metrics", {}).items() if k not in ("nab_seconds",)},
        "example": example,
        "nab": nab_in_sample,
        "nab_in_sample_note": "in-sample: the knobs were chosen on these same 31 series "
        "(cross-validated figure: nab_cross_validated)",
        "throughput": timing,
        "nab_cross_validated": {
            **cv,
            "baseline_same_splits": baseline_cv,
            "reading": "pooled_held_out is the honest figure for unseen series like these; "
            "the in-sample metrics.nab is higher because the knobs were chosen on the scored "
            "series",
        },
    }
    experiments = [
        {
            "variant": f"retuned from {ref}: grid {json.dumps(grid)} "
            f"({cv['grid_settings']} settings); chosen on all 31 series: {json.dumps(changed)}",
            "nab_in_sample": nab_in_sample,
            "nab_cross_validated_pooled": cv["pooled_held_out"],
        },
        *(tried or []),
        *source.get("experiments", []),
    ]
    limitations = [
        "the network is nab-gru:1's (no retraining); only the scoring knobs and detectors differ",
        "the knobs were chosen on all 31 NAB series (in-sample metrics.nab); the "
        f"cross-validated estimate is {std:.2f} (spread over random splits: mean "
        f"{spread['mean']:.2f}, sd {spread['sd']:.2f}, min {spread['min']}, max {spread['max']})",
        *(
            [
                "the seasonal likelihood uses fixed lags: a series sampled at another rate gets "
                "a less useful, not a wrong, comparison"
            ]
            if scoring["season_lags"]
            else []
        ),
        *(
            [
                f"the level-change detector needs {scoring['shift_short']} + "
                f"{scoring['shift_long']} valid points after the warm-up before it can fire"
            ]
            if int(scoring["shift_short"]) > 0
            else []
        ),
        "the structural choices (which detectors exist, the grid's values) were made looking at "
        "results on these 31 series, so even the cross-validated figure is slightly optimistic",
        *[x for x in source.get("limitations", []) if "cross-validated estimate" not in x],
    ]
    card = {
        k: v
        for k, v in source.items()
        if k not in ("schema_version", "created", "libraries", "version")
    }
    card.update(
        {
            "name": name,
            "version": version,
            "description": description,
            "threshold": float(scoring["threshold"]),
            "scoring": scoring,
            "scoring_reference": KNOB_RULES,
            "retuned_from": ref,
            "limitations": limitations,
            "metrics": metrics,
            "experiments": experiments,
        }
    )
    return card


def copy_graph(src: Path, staging: Path, card: dict[str, Any]) -> None:
    """The source folder's files the new card names (graph, curves): copied unchanged."""
    names = [card["onnx"]["file"], *card.get("figures", {}).values()]
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, staging / name)


def check_scoring(card: dict[str, Any]) -> None:
    """Fail early on a card the scoring core would not read."""
    p = scoring_params(card)
    if not isinstance(p["season_lags"], list):
        raise ValueError("scoring.season_lags must be a list")
