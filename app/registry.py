"""Model discovery: ``models/<task>/<name>/<version>/`` folders, each with ``card.json``.

The registry only knows folders, cards and sessions; what a task does with its model lives in
the task services. Every card is validated at scan time by the types training writes it with
(``contract.card``): a card with an unknown schema or a missing/invalid field is reported with a
one-line reason (``/readyz``, ``/v1/models``) and the healthy models still serve. Folders whose
name starts with ``.`` (a publish in progress, versions moved aside) are never scanned.

A request names a model as ``name`` or ``name:version``; without one, the task's default is
used: the settings' ``default_models``, else ``models/defaults.json`` (which pins every shipped
task to ``name:version``), else -- with a warning at start-up -- the first name alphabetically
at its newest version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ModelLoadError, ModelNotFound
from app.runtime import OrtModel
from contract import card as cards
from contract import store

log = logging.getLogger(__name__)


@dataclass
class ModelRecord:
    task: str
    name: str
    version: str
    path: Path
    spec: cards.Card
    sessions: dict[str, OrtModel] = field(default_factory=dict)
    # The card as JSON data in the current layout (a version-1 card reads as version 2).
    card: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.card = cards.dump(self.spec)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def file(self, key: str) -> Path:
        """Path of an artifact the card names, e.g. ``file("tokenizer")``."""
        entry = getattr(self.spec, key, None)
        name = getattr(entry, "file", None)
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
            "description": self.spec.description,
            "metrics": self.spec.metrics,
            "created": self.spec.created,
            "providers": sorted({p for s in self.sessions.values() for p in s.providers}),
        }


def version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def read_record(folder: Path) -> ModelRecord:
    """One model folder's validated card as a record (no sessions yet); CardError says why not."""
    task, name, version = folder.parts[-3:]
    spec = cards.read(folder, task)
    if (spec.name, spec.version) != (name, version):
        raise cards.CardError(
            f"card.json names {spec.name}:{spec.version} but the folder is {name}/{version}: "
            "publish models with seqserve-train, or make the card's name and version the folder's"
        )
    return ModelRecord(task, name, version, folder, spec)


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
        self.configured_defaults = dict(defaults or {})  # from the settings: they win
        self.defaults = dict(self.configured_defaults)
        self.records: dict[tuple[str, str, str], ModelRecord] = {}
        self.failed: dict[str, str] = {}  # task/name:version -> why it is not served
        self._resolved: dict[tuple[str, str | None], tuple[object, ModelRecord]] = {}

    def scan(self) -> tuple[list[ModelRecord], dict[str, str]]:
        """Read every card under the models dir (no sessions yet). A folder whose card cannot
        be read is reported in the second value (``task/name:version`` -> reason), not raised,
        so one broken folder never hides the healthy ones."""
        found: list[ModelRecord] = []
        failed: dict[str, str] = {}
        for folder in sorted(self.models_dir.glob("*/*/*/")):
            rel = folder.relative_to(self.models_dir).parts
            if any(store.is_hidden(p) for p in rel) or not folder.is_dir():
                continue
            task, name, version = rel
            where = f"{task}/{name}:{version}"
            try:
                found.append(read_record(folder))
            except cards.CardError as exc:
                failed[where] = str(exc)
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

    def check_defaults(self, defaults: dict[str, str] | None = None) -> None:
        """Fail fast on a default (of ``defaults``, else every default) that names no loaded
        model: strict loading, and a typo in the settings."""
        for task, ref in (self.defaults if defaults is None else defaults).items():
            if task in self.tasks():
                self.get(task, ref)

    def missing_defaults(self) -> dict[str, str]:
        """``defaults/<task>`` -> why, for each default that names no loaded model. A default
        whose folder failed to load is already in ``failed`` and is not repeated."""
        missing = {}
        for task, ref in self.defaults.items():
            name, _, version = ref.partition(":")
            broken = any(
                w.startswith(f"{task}/{name}:") and (not version or w == f"{task}/{ref}")
                for w in self.failed
            )
            if broken or task not in self.tasks():
                continue
            try:
                self.get(task, ref)
            except ModelNotFound as exc:
                missing[f"defaults/{task}"] = (
                    f"{self.default_source(task)} pins {ref}, which is not published: {exc.message}"
                )
        return missing

    def replace(self, records: dict[tuple[str, str, str], ModelRecord]) -> None:
        """Swap in a new set of loaded models in one assignment (requests see old or new)."""
        self.records = records
        self._resolved = {}

    def read_defaults(self) -> dict[str, str]:
        """Task defaults pinned in ``<models_dir>/defaults.json`` (``seqserve models default``)
        under those set in the settings, which win. Read on start-up and on every reload."""
        try:
            pinned = store.read_defaults(self.models_dir)
        except store.StoreError as exc:
            raise ModelLoadError(str(exc)) from exc
        return {**pinned, **self.configured_defaults}

    def read_folder_defaults(self) -> None:
        self.set_defaults(self.read_defaults())

    def set_defaults(self, defaults: dict[str, str]) -> None:
        self.defaults = defaults
        self._resolved = {}

    def default_source(self, task: str) -> str:
        """Where a task's default comes from, for the start-up log and ``seqserve models``."""
        if task in self.configured_defaults:
            return "SEQSERVE_DEFAULT_MODELS"
        if task in self.defaults:
            return store.DEFAULTS_FILE
        return "not pinned: first name alphabetically, newest version"

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
                (r for r in candidates if r.name == first), key=lambda r: version_key(r.version)
            )
        name, _, version = ref.partition(":")
        matches = [
            r for r in candidates if r.name == name and (not version or r.version == version)
        ]
        if not matches:
            raise ModelNotFound(ref, task, available)
        return max(matches, key=lambda r: version_key(r.version))

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
        return sorted(hits, key=lambda r: version_key(r.version))
