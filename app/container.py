"""Everything the service builds at start-up, in one object owned by the app's lifespan.

Models load one folder at a time: each is opened, wrapped by its task service and smoke-checked
(one real inference) before it can take traffic. A folder that fails is recorded with its reason
(``/readyz`` and ``/v1/models`` show it) and the others are served, unless
``SEQSERVE_REQUIRE_ALL_MODELS`` asks for all or nothing. ``reload()`` repeats this off to the side
for new or changed folders and swaps the result in with one assignment per layer; a version that
fails keeps its previous copy serving, and replaced copies are closed after a grace period so
requests already holding them finish. Closing releases them at once: batcher threads end, the
record drops its sessions, and a collection frees the model/batcher reference cycles (a bound
``predict`` method refers back to its model) that would otherwise keep every replaced
onnxruntime session alive until the cycle collector happened to run — ~100 MB per reload.
Every model's batchers hand freed memory back to the system once idle after a big batch
(``runtime.release_free_memory``), so a burst of large requests does not stay resident.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from app import metrics
from app.batching import Batcher
from app.errors import ModelLoadError, ModelNotFound, SeqServeError
from app.limits import InflightLimiter
from app.registry import ModelRecord, Registry
from app.runtime import release_free_memory
from app.services.base import TaskModel, TaskService
from app.settings import Settings
from app.tasks import ServiceContext, tasks

log = logging.getLogger(__name__)
Key = tuple[str, str, str]
S = TypeVar("S", bound=TaskService[Any])


@dataclass
class LoadPlan:
    """A complete next generation of models, built but not yet serving."""

    records: dict[Key, ModelRecord]
    models: dict[str, dict[str, TaskModel]]
    failed: dict[str, str]
    defaults: dict[str, str]
    loaded: list[str] = field(default_factory=list)  # new or changed, now serving
    unchanged: list[str] = field(default_factory=list)
    kept_previous: list[str] = field(default_factory=list)  # changed but broken: old one serves
    removed: list[str] = field(default_factory=list)
    retired: list[TaskModel] = field(default_factory=list)  # to close once requests finish

    def report(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "unchanged": self.unchanged,
            "kept_previous": self.kept_previous,
            "removed": self.removed,
            "failed": self.failed,
        }


def fingerprint(rec: ModelRecord) -> str:
    """Changes whenever any file of the model folder changes (content of the card, size and
    modification time of the rest), so a reload reloads exactly what was touched."""
    h = hashlib.sha256((rec.path / "card.json").read_bytes())
    for f in sorted(rec.path.iterdir()):
        if f.is_file() and f.name != "card.json":
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


@dataclass
class Container:
    settings: Settings
    registry: Registry
    limiter: InflightLimiter
    services: dict[str, TaskService[Any]]  # one per registered task, by task name
    started: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    fingerprints: dict[Key, str] = field(default_factory=dict)
    _reload_lock: asyncio.Lock | None = None
    _by_type: dict[type, TaskService[Any]] = field(default_factory=dict, repr=False)

    def get(self, kind: type[S]) -> S:
        """The service of type ``kind`` (``c.get(SentimentService)``): typed, and no task name.
        Runs on every request: one dict lookup once the type has been seen."""
        hit = self._by_type.get(kind)
        if hit is None:
            hit = next((s for s in self.services.values() if isinstance(s, kind)), None)
            if hit is None:
                raise LookupError(f"no registered task has a {kind.__name__}")
            self._by_type[kind] = hit
        return cast(S, hit)

    if not TYPE_CHECKING:  # typed code uses get(); this keeps scripts' ``c.next_word`` working

        def __getattr__(self, name: str) -> TaskService[Any]:
            """``c.next_word``: a task's service by its name written as an identifier."""
            services = self.__dict__.get("services") or {}
            task = name.replace("_", "-")
            if task in services:
                return services[task]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def build(cls, settings: Settings) -> Container:
        t0 = time.perf_counter()
        registry = Registry(
            settings.models_dir,
            settings.providers,
            settings.intra_op_threads,
            settings.default_models,
        )
        metrics.set_build_info()
        limiter = InflightLimiter(settings.max_concurrent_requests)
        context = ServiceContext(registry, settings, limiter)
        c = cls(settings, registry, limiter, build_services(context))
        plan = c.prepare()
        if plan.failed and settings.require_all_models:
            raise ModelLoadError(
                "SEQSERVE_REQUIRE_ALL_MODELS is set and some models failed to load: "
                + "; ".join(f"{k}: {v}" for k, v in plan.failed.items())
            )
        c.commit(plan)
        registry.check_defaults(settings.default_models)  # a typo in the settings: fail fast
        c.load_seconds = time.perf_counter() - t0
        if not registry.records:
            log.error(
                "no model loaded from %s (it needs <task>/<name>/<version>/card.json): every "
                "request will fail and /readyz answers 503",
                settings.models_dir,
            )
        log.info(
            "loaded %d models in %.2fs (%d failed)",
            len(registry.records),
            c.load_seconds,
            len(plan.failed),
        )
        return c

    def prepare(self) -> LoadPlan:
        """Build the next generation: unchanged models are reused, new or changed ones are
        loaded and smoke-checked. Blocking (sessions load): reloads run it in a thread."""
        found, failed = self.registry.scan()
        current = dict(self.registry.records)
        try:
            defaults = self.registry.read_defaults()
        except ModelLoadError as exc:  # a broken defaults.json keeps the defaults in use
            failed["defaults.json"] = exc.message
            defaults = dict(self.registry.defaults)
        plan = LoadPlan({}, {task: {} for task in self.services}, dict(failed), defaults)
        for where in failed:
            log.error("model %s not loaded: %s", where, failed[where])
            if "/" in where:
                metrics.MODEL_LOAD_FAILURES.labels(where.split("/")[0]).inc()
        for rec in found:
            key = (rec.task, rec.name, rec.version)
            where = f"{rec.task}/{rec.ref}"
            old = current.get(key)
            try:
                fp = fingerprint(rec)
            except OSError as exc:
                fp = f"unreadable: {exc}"
            if old is not None and self.fingerprints.get(key) == fp:
                self._keep(plan, key, old)
                plan.unchanged.append(where)
                continue
            try:
                model = self._load(rec)
            except Exception as exc:  # any failure of one model must not affect the others
                reason = exc.message if isinstance(exc, SeqServeError) else f"{type(exc).__name__}"
                if not isinstance(exc, SeqServeError):
                    reason += f": {exc}"
                # Paths inside the models folder only: readiness output names no server paths.
                reason = reason.replace(f"{self.settings.models_dir}/", "")
                plan.failed[where] = reason
                log.error("model %s not loaded: %s", where, reason)
                metrics.MODEL_LOAD_FAILURES.labels(rec.task).inc()
                if old is not None:
                    self._keep(plan, key, old)
                    plan.kept_previous.append(where)
                continue
            plan.records[key] = rec
            plan.models[rec.task][rec.ref] = model
            self.fingerprints[key] = fp
            plan.loaded.append(where)
            if old is not None:
                plan.retired.append(self.services[rec.task].by_ref[old.ref])
        for key, old in current.items():
            if key not in plan.records:
                plan.removed.append(f"{old.task}/{old.ref}")
                plan.retired.append(self.services[old.task].by_ref[old.ref])
                self.fingerprints.pop(key, None)
        return plan

    def _keep(self, plan: LoadPlan, key: Key, old: ModelRecord) -> None:
        plan.records[key] = old
        plan.models[old.task][old.ref] = self.services[old.task].by_ref[old.ref]

    def _load(self, rec: ModelRecord) -> TaskModel:
        service = self.services.get(rec.task)
        if service is None:
            raise ModelLoadError(
                f"unknown task {rec.task!r}; this server serves {sorted(self.services)}"
            )
        self.registry.open_record(rec)
        model = service.build(rec)
        for part in vars(model).values():  # every batcher of every task, named or not here
            if isinstance(part, Batcher) and part.on_idle is None:
                part.on_idle = release_free_memory  # after big batches, give memory back
        model.smoke()
        log.info("loaded %s/%s (%s)", rec.task, rec.ref, ", ".join(rec.sessions["model"].providers))
        return model

    def commit(self, plan: LoadPlan) -> None:
        """Swap the plan in: one assignment for the registry, one per task service, with no
        await in between, so every request sees one generation."""
        self.registry.replace(plan.records)
        self.registry.set_defaults(plan.defaults)
        self.registry.failed = plan.failed
        plan.failed.update(self.registry.missing_defaults())
        for task, service in self.services.items():
            service.swap(plan.models[task])
            metrics.MODELS_LOADED.labels(task).set(len(plan.models[task]))
        self.log_defaults()

    def log_defaults(self) -> None:
        """Say which model answers each task's requests that name no model, and why."""
        for task in sorted(self.registry.tasks()):
            source = self.registry.default_source(task)
            try:
                ref = self.registry.get(task).ref
            except ModelNotFound:
                pinned = self.registry.defaults.get(task)
                log.error(
                    "task %s: default %s (%s) is not loaded; requests that name no model get 404",
                    task,
                    pinned,
                    source,
                )
                continue
            if task in self.registry.defaults:
                log.info("task %s: default model %s (from %s)", task, ref, source)
            else:
                log.warning(
                    "task %s: no default pinned, serving %s (%s); pin one with "
                    "'seqserve models default %s NAME:VERSION'",
                    task,
                    ref,
                    source,
                    task,
                )

    async def reload(self) -> dict[str, Any]:
        """Rescan the models folder; one reload at a time."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            t0 = time.perf_counter()
            plan = await asyncio.to_thread(self.prepare)
            self.commit(plan)
            if plan.retired:
                asyncio.get_running_loop().create_task(self._retire(plan.retired))
            report = {**plan.report(), "seconds": round(time.perf_counter() - t0, 3)}
            log.info("reload: %s", report)
            return report

    async def _retire(self, models: list[TaskModel]) -> None:
        await asyncio.sleep(self.settings.reload_grace_seconds)
        released = len(models)
        while models:  # pop: no local name keeps the last one alive through the collection
            await _close(models.pop())
        gc.collect()  # the model <-> batcher cycles hold the sessions
        release_free_memory()
        log.info("released %d replaced model versions", released)

    async def close(self) -> None:
        for service in self.services.values():
            await service.close()


async def _close(model: TaskModel) -> None:
    await model.close()
    model.record.sessions.clear()


def build_services(context: ServiceContext) -> dict[str, TaskService[Any]]:
    """One service per registered task; a factory that builds another task's service is an
    error at start-up (its models would be filed under the wrong task)."""
    services: dict[str, TaskService[Any]] = {}
    for name, spec in tasks().items():
        service = spec.service(context)
        if service.task != name:
            raise ModelLoadError(
                f"task {name!r}: its service factory built a service of task {service.task!r}"
            )
        services[name] = service
    return services
