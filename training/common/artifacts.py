"""Model-folder writing: the contract between training and serving.

Every shipped model lives in ``models/<task>/<name>/<version>/`` and holds ``model.onnx``,
whatever pre/post-processing artifact it needs (``tokenizer.json``, ``scaler.json`` ...) and
``card.json``. Serving reads only these files, so everything it needs goes into the card.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from contract import card as cards

CARD_SCHEMA_VERSION = cards.SCHEMA_VERSION


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed so big datasets don't load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(
    names: tuple[str, ...] = ("torch", "onnx", "onnxruntime", "tokenizers", "numpy"),
) -> dict[str, str]:
    """Installed versions of the libraries that shaped an artifact (for reproducibility)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_card(folder: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card.json`` with the common fields filled in (schema, creation time, ONNX sha256),
    checked by the card types serving loads it with (``contract.card``): a card serving would
    refuse raises ``CardError`` here instead."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full: dict[str, Any] = {"schema_version": CARD_SCHEMA_VERSION, "created": utc_now()}
    full.update(card)
    onnx_path = folder / full.get("onnx", {}).get("file", "model.onnx")
    if onnx_path.exists():
        full.setdefault("onnx", {})["sha256"] = sha256_file(onnx_path)
        full["onnx"]["bytes"] = onnx_path.stat().st_size
    full.setdefault("libraries", library_versions())
    full = cards.build(full)
    path = folder / "card.json"
    path.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return path


def dataset_record(path: str | Path, url: str | None = None) -> dict[str, Any]:
    """What a card says about a dataset file: where it came from and its exact bytes."""
    p = Path(path)
    rec: dict[str, Any] = {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
    if url:
        rec["url"] = url
    return rec
