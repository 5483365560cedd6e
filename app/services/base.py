"""What every task service shares: its models by reference, resolved through the registry.

The container builds a task's model wrappers (``build``), smoke-checks them and swaps the whole
``by_ref`` dict in one assignment together with the registry's records, so a request resolves
its record and wrapper from the same generation: old or new, never half of each.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from app.errors import ModelNotFound
from app.observability import note_model
from app.registry import ModelRecord, Registry
from app.settings import Settings


class TaskModel(Protocol):
    record: ModelRecord

    def smoke(self) -> None: ...

    async def close(self) -> None: ...


M = TypeVar("M", bound=TaskModel)


class TaskService(Generic[M]):
    task: str = ""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.by_ref: dict[str, M] = {}

    def build(self, rec: ModelRecord) -> M:
        raise NotImplementedError

    def resolve(self, ref: str | None) -> tuple[ModelRecord, M]:
        rec = self.registry.get(self.task, ref)
        note_model(rec.ref)
        model = self.by_ref.get(rec.ref)
        if model is None:  # pragma: no cover - records and wrappers are swapped together
            raise ModelNotFound(ref or "(default)", self.task)
        return rec, model

    def swap(self, by_ref: dict[str, M]) -> None:
        self.by_ref = by_ref

    async def close(self) -> None:
        for m in self.by_ref.values():
            await m.close()
