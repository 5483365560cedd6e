"""The task registry: each task is declared once, and everything generic iterates over it.

A task is one :class:`TaskSpec` (in ``app/tasks/<task>.py`` for the shipped ones): its name, its
card type, how to build its service, its REST router and the paths of that router the edge treats
as inference, its Open Inference Protocol adapter, and optionally its ``seqserve predict`` and
``seqserve bench`` entries. The container, the app factory, the edge middleware, the v2 face,
``predict`` and ``bench`` read :func:`tasks` and name no task. :func:`register` checks a
declaration whole, so a half-registered task fails at import, not on its first request.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from fastapi import APIRouter

from contract.card import Header, register_card

if TYPE_CHECKING:
    from app.api.oip_models import Adapter
    from app.limits import InflightLimiter
    from app.registry import Registry
    from app.services.base import TaskService
    from app.settings import Settings

# The shipped tasks, in the order their routes are included (the hot ones first).
BUILTIN = (
    "app.tasks.sentiment",
    "app.tasks.next_word",
    "app.tasks.forecast",
    "app.tasks.anomaly",
)


class TaskRegistrationError(RuntimeError):
    """A task declared incompletely or twice: raised at import, never on a request."""


@dataclass(frozen=True)
class ServiceContext:
    """What a task's service factory may use; built once by the container."""

    registry: Registry
    settings: Settings
    limiter: InflightLimiter

    def alone(self) -> bool:
        """True when at most one request (the caller's) is in flight at this server's edge."""
        return self.limiter.current <= 1


@dataclass(frozen=True)
class PredictEntry:
    """``seqserve predict <task>``: its help line, its arguments and the command itself."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


@dataclass(frozen=True)
class TaskSpec:
    """One task, declared once."""

    name: str  # the card's ``task`` and the models/<task>/ folder
    card: type[Header]  # its card type in contract.card (registered with the task)
    service: Callable[[ServiceContext], TaskService[Any]]
    router: APIRouter  # its REST routes
    inference_routes: tuple[str, ...]  # paths of ``router`` with limits, cancel and metrics
    adapter: Adapter  # its /v2 face
    predict: PredictEntry | None = None
    # ``seqserve bench --endpoint NAME``: (path, JSON body); "{model}" in a path is the
    # task's default model name
    bench: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


_TASKS: dict[str, TaskSpec] = {}


def _check(spec: TaskSpec) -> None:
    where = f"task {spec.name!r}"
    if not spec.name:
        raise TaskRegistrationError("a task needs a name")
    if spec.name in _TASKS:
        raise TaskRegistrationError(f"{where} is registered twice")
    if not (isinstance(spec.card, type) and issubclass(spec.card, Header)):
        raise TaskRegistrationError(f"{where}: its card type is not a contract.card.Header")
    if get_args(spec.card.model_fields["task"].annotation) != (spec.name,):
        raise TaskRegistrationError(
            f"{where}: card {spec.card.__name__} must declare task: Literal[{spec.name!r}]"
        )
    if not callable(spec.service):
        raise TaskRegistrationError(f"{where}: its service factory is not callable")
    if getattr(spec.adapter, "task", None) != spec.name:
        raise TaskRegistrationError(
            f"{where}: its v2 adapter serves task {getattr(spec.adapter, 'task', None)!r}"
        )
    if not spec.inference_routes:
        raise TaskRegistrationError(f"{where} names no inference route for the edge")
    paths = {getattr(r, "path", None) for r in spec.router.routes}
    missing = [p for p in spec.inference_routes if p not in paths]
    if missing:
        raise TaskRegistrationError(f"{where}: its router has no route {', '.join(missing)}")
    taken = {p: t.name for t in _TASKS.values() for p in t.inference_routes}
    clash = [f"{p} ({taken[p]})" for p in spec.inference_routes if p in taken]
    if clash:
        raise TaskRegistrationError(f"{where}: routes already registered: {', '.join(clash)}")
    for endpoint, (path, _) in spec.bench.items():
        if endpoint in {e for t in _TASKS.values() for e in t.bench}:
            raise TaskRegistrationError(f"{where}: bench endpoint {endpoint!r} is taken")
        if not path.startswith("/"):
            raise TaskRegistrationError(f"{where}: bench path {path!r} is not a path")


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task (and its card type); raises TaskRegistrationError if the spec is incomplete."""
    _check(spec)
    register_card(spec.name, spec.card)
    _TASKS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a task registered at run time (tests); the shipped tasks stay."""
    if _builtin is not None and name in _builtin:
        raise TaskRegistrationError(f"task {name!r} is shipped and cannot be unregistered")
    _TASKS.pop(name, None)


def tasks() -> dict[str, TaskSpec]:
    """Every registered task by name: the shipped ones first, in :data:`BUILTIN` order."""
    global _builtin
    if _builtin is None:
        found = []
        for module in BUILTIN:
            spec = getattr(importlib.import_module(module), "SPEC", None)
            if not isinstance(spec, TaskSpec) or _TASKS.get(spec.name) is not spec:
                raise TaskRegistrationError(
                    f"{module} registers no task: it needs SPEC = register(TaskSpec(...))"
                )
            found.append(spec.name)
        _builtin = found
    return {**{n: _TASKS[n] for n in _builtin}, **_TASKS}


_builtin: list[str] | None = None


def inference_routes() -> frozenset[str]:
    """Every task's inference paths: the edge's admission control and disconnect watching."""
    return frozenset(p for t in tasks().values() for p in t.inference_routes)
