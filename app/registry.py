"""Model discovery: ``models/<task>/<name>/<version>/`` folders, each with ``card.json``.

The registry only knows folders, cards and sessions; what a task does with its model lives in
the task services. A request names a model as ``name`` or ``name:version``; without one, the
task's default is used (configured in the settings, else in ``models/defaults.json``, else the
first name alphabetically at its newest version).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ModelLoadError, ModelNotFound
from app.runtime import OrtModel

log = logging.getLogger(__name__)


@dataclass
class ModelRecord:
    task: str
    name: str
    version: str
    path: Path
    card: dict[str, Any]
    sessions: dict[str, OrtModel] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def file(self, key: str) -> Path:
        """Path of an artifact the card names, e.g. ``file("tokenizer")``."""
        entry = self.card.get(key)
        name = entry.get("file") if isinstance(entry, dict) else None
        if not name:
            raise ModelLoadError(f"{self.path}/card.json names no {key!r} file")
        path = self.path / name
        if not path.is_file():
            raise ModelLoadError(f"{path} named by card.json is missing")
        return path

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.card.get("description"),
            "metrics": self.card.get("metrics", {}),
            "created": self.card.get("created"),
            "providers": sorted({p for s in self.sessions.values() for p in s.providers}),
        }


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class Registry:
    def __init__(
        self,
        models_dir: Path,
        providers: list[str],
        intra_op_threads: int = 1,
        defaults: dict[str, str] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.defaults = defaults or {}
        self.records: dict[tuple[str, str, str], ModelRecord] = {}
        self.failed: dict[str, str] = {}  # task/name:version -> why it is not served
        self._resolved: dict[tuple[str, str | None], tuple[object, ModelRecord]] = {}

    def scan(self) -> tuple[list[ModelRecord], dict[str, str]]:
        """Read every card under the models dir (no sessions yet). A folder whose card cannot
        be read is reported in the second value (``task/name:version`` -> reason), not raised,
        so one broken folder never hides the healthy ones."""
        found: list[ModelRecord] = []
        failed: dict[str, str] = {}
        for card_path in sorted(self.models_dir.glob("*/*/*/card.json")):
            folder = card_path.parent
            task, name, version = folder.parts[-3:]
            where = f"{task}/{name}:{version}"
            try:
                card = json.loads(card_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                failed[where] = f"unreadable card.json: {exc}"
                continue
            if not isinstance(card, dict) or card.get("task") != task:
                got = card.get("task") if isinstance(card, dict) else None
                failed[where] = f"card.json says task {got!r} but the folder is under {task!r}"
                continue
            found.append(ModelRecord(task, name, version, folder, card))
        return found, failed

    def discover(self) -> list[ModelRecord]:
        """Every readable card; the first unreadable one raises (the CLI and strict loading)."""
        found, failed = self.scan()
        if failed:
            where, reason = next(iter(failed.items()))
            raise ModelLoadError(f"{where}: {reason}")
        return found

    def open_record(self, rec: ModelRecord) -> ModelRecord:
        """Open the record's main session (raises ModelLoadError with the reason)."""
        rec.sessions["model"] = self.open_session(rec, "onnx")
        return rec

    def load_all(self) -> None:
        """Strict loading: every model must load (used by the CLI and tests)."""
        self.read_folder_defaults()
        for rec in self.discover():
            self.open_record(rec)
            self.records[(rec.task, rec.name, rec.version)] = rec
            log.info(
                "loaded %s/%s (%s)", rec.task, rec.ref, ", ".join(rec.sessions["model"].providers)
            )
        self.check_defaults()

    def check_defaults(self) -> None:
        for task, ref in self.defaults.items():
            if task in self.tasks():
                self.get(task, ref)  # fail fast on a default that does not exist

    def replace(self, records: dict[tuple[str, str, str], ModelRecord]) -> None:
        """Swap in a new set of loaded models in one assignment (requests see old or new)."""
        self.records = records
        self._resolved = {}

    def read_folder_defaults(self) -> None:
        """Task defaults shipped with the models (``<models_dir>/defaults.json``); a default set
        in the settings wins over the file's."""
        path = self.models_dir / "defaults.json"
        if not path.is_file():
            return
        try:
            shipped = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"unreadable {path.name}: {exc}") from exc
        if not isinstance(shipped, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in shipped.items()
        ):
            raise ModelLoadError(f"{path.name} must map task names to model names")
        self.defaults = {**shipped, **self.defaults}

    def open_session(self, rec: ModelRecord, key: str) -> OrtModel:
        return OrtModel(rec.file(key), self.providers, self.intra_op_threads)

    def models(self, task: str | None = None) -> list[ModelRecord]:
        return [r for r in self.records.values() if task is None or r.task == task]

    def tasks(self) -> set[str]:
        return {r.task for r in self.records.values()}

    def get(self, task: str, ref: str | None = None) -> ModelRecord:
        """Resolve ``name``, ``name:version`` or the task default to a loaded model (memoized
        per generation of records: this runs on every request)."""
        key = (task, ref)
        hit = self._resolved.get(key)
        if hit is not None and hit[0] is self.records:
            return hit[1]
        rec = self._resolve(task, ref)
        self._resolved[key] = (self.records, rec)
        return rec

    def _resolve(self, task: str, ref: str | None) -> ModelRecord:
        candidates = self.models(task)
        available = sorted(r.ref for r in candidates)
        ref = ref or self.defaults.get(task)
        if not candidates:
            raise ModelNotFound(ref or "(default)", task, available)
        if ref is None:
            first = min(r.name for r in candidates)
            return max(
                (r for r in candidates if r.name == first), key=lambda r: _version_key(r.version)
            )
        name, _, version = ref.partition(":")
        matches = [
            r for r in candidates if r.name == name and (not version or r.version == version)
        ]
        if not matches:
            raise ModelNotFound(ref, task, available)
        return max(matches, key=lambda r: _version_key(r.version))

    def find(self, name: str) -> list[ModelRecord]:
        """Every loaded version of a model name, across tasks (for /v1/models/{name})."""
        base, _, version = name.partition(":")
        hits = [
            r
            for r in self.records.values()
            if r.name == base and (not version or r.version == version)
        ]
        if not hits:
            raise ModelNotFound(name, None, sorted(r.ref for r in self.records.values()))
        return sorted(hits, key=lambda r: _version_key(r.version))
