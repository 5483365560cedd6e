"""The server a user would write by hand: FastAPI + the same weights in PyTorch eager.

One request at a time (inference runs inline in the endpoint), no batching, no ONNX. Used only
by ``benchmarks/run.py`` as the reference point; needs the ``train`` extra (torch).

Weights come from the training runs (paths in environment variables); an endpoint whose
checkpoint is missing answers 503 and the benchmark reports it as not measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from tokenizers import Tokenizer

torch.set_num_threads(1)  # faster than the default (all cores) for one small model per request
app = FastAPI()
MODELS = Path(os.environ.get("BASELINE_MODELS_DIR", "models"))
state: dict[str, Any] = {}


def _card(task: str) -> tuple[Path, dict[str, Any]] | None:
    """The task's default model as seqserve picks it (models/defaults.json, else the last)."""
    defaults_file = MODELS / "defaults.json"
    defaults = json.loads(defaults_file.read_text()) if defaults_file.is_file() else {}
    name = defaults.get(task, "*").split(":")[0]
    cards = sorted(MODELS.glob(f"{task}/{name}/*/card.json"))
    return (cards[-1].parent, json.loads(cards[-1].read_text())) if cards else None


def _load() -> None:
    from training.sentiment.model import EnsembleClassifier
    from training.sentiment.train import load_member

    found = _card("sentiment")
    if found:  # the members' checkpoints, as the card's training section lists them
        folder, card = found
        paths = [Path(m["run"]) / f"seed{m['seed']}.pt" for m in card["training"]["members"]]
        if all(p.exists() for p in paths):
            members = [load_member(p)[0] for p in paths]
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            state["sentiment"] = (tok, EnsembleClassifier(members).eval(), card)
    found = _card("next-word")
    trained_from = (
        found[1]["training"].get("checkpoint", "runs/next-word/wikitext2-lstm/best.pt")
        if found
        else ""
    )
    ckpt = Path(os.environ.get("BASELINE_LM_CKPT", trained_from))
    if found and ckpt.is_file():
        from training.lm.evaluate import load_checkpoint

        folder, card = found
        model, _ = load_checkpoint(ckpt)
        state["next-word"] = (
            Tokenizer.from_file(str(folder / "tokenizer.json")),
            model.eval(),
            card,
        )
    found = _card("forecast")
    ckpt = Path(os.environ.get("BASELINE_FORECAST_CKPT", "runs/forecast/m4-hourly-gru/ckpt.pt"))
    if found and ckpt.exists():
        from training.forecast.train import build_ensemble
        from training.forecast.train import load_checkpoint as load_fc

        state["forecast"] = (build_ensemble(load_fc(ckpt)), found[1])


_load()


def _need(task: str) -> Any:
    if task not in state:
        raise HTTPException(503, f"no PyTorch checkpoint for {task}")
    return state[task]


@app.get("/readyz")
def readyz() -> dict[str, Any]:
    return {"status": "ready", "models": sorted(state)}


@app.post("/sentiment")
async def sentiment(body: dict[str, Any]) -> dict[str, Any]:
    tok, model, card = _need("sentiment")
    ids = tok.encode(body["text"]).ids[: card["tokenizer"]["max_length"]] or [
        card["tokenizer"]["unk_id"]
    ]
    with torch.no_grad():
        probs = model(torch.tensor([ids]))[0].numpy()
    labels = card["labels"]
    return {
        "label": labels[int(probs.argmax())],
        "probabilities": dict(zip(labels, probs.tolist(), strict=True)),
    }


@app.post("/next-word")
async def next_word(body: dict[str, Any]) -> dict[str, Any]:
    tok, model, card = _need("next-word")
    ids = [card["start_token"]["id"], *tok.encode(body["text"]).ids]
    with torch.no_grad():
        out, _ = model.features(torch.tensor([ids]), model.init_hidden(1))
        logp = model.log_prob(out[:, -1])[0]
        logp[[card["special_tokens"]["unk"]["id"], card["special_tokens"]["eos"]["id"]]] = -float(
            "inf"
        )
        top = torch.topk(logp, int(body.get("k", 5)))
    vocab = {i: w for w, i in tok.get_vocab().items()}
    return {
        "candidates": [
            {"word": vocab[int(i)], "probability": float(p.exp())}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
    }


@app.post("/forecast")
async def forecast(body: dict[str, Any]) -> dict[str, Any]:
    model, card = _need("forecast")
    window, horizon = card["window"], int(body.get("horizon", card["max_horizon"]))
    x = np.stack([np.asarray(s["values"][-window:], dtype=np.float32) for s in body["series"]])
    with torch.no_grad():
        med, q = model(torch.from_numpy(x))
    return {
        "forecasts": [
            {
                "mean": m[:horizon].tolist(),
                "lo": qq[:horizon, 0].tolist(),
                "hi": qq[:horizon, -1].tolist(),
            }
            for m, qq in zip(med.numpy(), q.numpy(), strict=True)
        ]
    }
