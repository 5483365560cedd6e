"""The model card: one typed definition that training writes and serving validates at load.

A card is ``card.json`` in ``models/<task>/<name>/<version>/``. It has a common header
(schema, task, name, version, creation time, data provenance, metrics, the resolved training
configuration) and one section per task holding exactly what serving reads. Every task lays out
its ONNX graphs the same way:
``{"file", "inputs": [{"name", "dtype", "shape"}], "outputs": [...]}``.

Everything else a card says (experiments, parity, latency, notes) is kept as written: the types
check what serving depends on and let the rest through, so a card stays a readable report.

Schema versions: 2 is written now. Version 1 (every card published before the typed cards)
differs only in layout: ``onnx.inputs``/``outputs`` as a dict keyed by name or a list of names,
``datasets`` as a dict keyed by role; :func:`upgrade` reads it into version 2 in memory.
Published folders are never rewritten.
This module is torch-free: training and serving both import it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
TASKS = ("sentiment", "next-word", "forecast", "anomaly")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")


class CardError(ValueError):
    """A card that cannot be served; the message is one line naming the field and the problem."""


class _Open(BaseModel):
    """A section whose listed fields are checked and whose other keys are kept as written."""

    model_config = ConfigDict(extra="allow")


class Tensor(_Open):
    name: str = Field(min_length=1)
    dtype: str | None = None
    shape: list[int | str] | None = None


class Graph(_Open):
    """One ONNX file and its named inputs and outputs, in the same layout for every task."""

    file: str = Field(min_length=1)
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[Tensor] = Field(min_length=1)
    opset: int | None = None
    sha256: str | None = None
    bytes: int | None = None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


class FileRef(_Open):
    file: str = Field(min_length=1)


class Dataset(_Open):
    """A file the model was trained or checked on: its name, exact bytes and where it is from."""

    file: str
    sha256: str | None = None
    bytes: int | None = None
    role: str | None = None  # train / dev / ...
    url: str | None = None


class Header(_Open):
    """What every card says, whatever its task."""

    schema_version: Literal[1, 2]
    task: str
    name: str
    version: str
    created: str | None = None
    description: str | None = None
    datasets: list[Dataset] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    onnx: Graph

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a model name (lower-case letters, digits, . _ -)")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError(f"{v!r} is not a version (a whole number from 1)")
        return v

    def graph(self, key: str) -> Graph:
        """A graph section by its card key (``onnx``, ``score_onnx``)."""
        value = getattr(self, key, None)
        if not isinstance(value, Graph):
            raise CardError(f"card.json has no {key!r} graph")
        return value


# --- sentiment -------------------------------------------------------------------------------


class TextTokenizer(FileRef):
    pad_id: int = Field(ge=0)
    unk_id: int = Field(ge=0)
    max_length: int = Field(ge=1)


class SentimentCard(Header):
    task: Literal["sentiment"]
    labels: list[str] = Field(min_length=2)
    tokenizer: TextTokenizer

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or any(not x for x in v):
            raise ValueError(f"labels must be distinct non-empty names, got {v}")
        return v


# --- next-word -------------------------------------------------------------------------------


class SpecialToken(_Open):
    token: str
    id: int = Field(ge=0)


class SpecialTokens(_Open):
    unk: SpecialToken
    eos: SpecialToken


class RecurrentState(_Open):
    inputs: list[str] = Field(min_length=1)
    outputs: list[str] = Field(min_length=1)
    layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)


class LMCacheSection(_Open):
    """The continuous cache's settings (``contract.lm_cache``); both graphs output ``output``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    theta: float = Field(gt=0, allow_inf_nan=False)
    lam: float = Field(alias="lambda", gt=0, lt=1)
    window: int = Field(ge=1)
    ramp: float = Field(0.0, ge=0, allow_inf_nan=False)
    output: str = Field("hidden", min_length=1)


class NextWordCard(Header):
    task: Literal["next-word"]
    tokenizer: FileRef
    special_tokens: SpecialTokens
    start_token: SpecialToken | None = None
    state: RecurrentState
    score_onnx: Graph
    weights: FileRef | None = None
    cache: LMCacheSection | None = None

    @field_validator("cache")
    @classmethod
    def _cache_output(cls, v: LMCacheSection | None, info: Any) -> LMCacheSection | None:
        graphs = [info.data.get("onnx"), info.data.get("score_onnx")]
        if v is not None and any(g is not None and v.output not in g.output_names for g in graphs):
            raise ValueError(f"cache.output {v.output!r} must be an output of both graphs")
        state = info.data.get("state")
        taken = {g.output_names[0] for g in graphs if g is not None}
        taken |= set(state.outputs) if state is not None else set()
        if v is not None and v.output in taken:
            raise ValueError(
                f"cache.output {v.output!r} is the graphs' probabilities or state output; name "
                "the last layer's per-position output"
            )
        return v


# --- forecast --------------------------------------------------------------------------------


class ShiftRule(_Open):
    rel_margin: float = Field(ge=0)
    abs_floor: float = Field(gt=0)


class NormaliseRule(_Open):
    """Version 3 on: the equivariant scaling (``contract.forecast.Scaling``)."""

    rule: Literal["affine", "floorlog"]
    delta: float = Field(0.1, gt=0)
    clip: float = Field(30.0, gt=0)
    ceiling_ranges: float = Field(5.0, gt=0)


class Preprocessing(_Open):
    # exactly one: the positive shift + in-graph log of versions 1-2, or the scaling
    shift: ShiftRule | None = None
    normalise: NormaliseRule | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Preprocessing:
        if (self.shift is None) == (self.normalise is None):
            raise ValueError("give exactly one of preprocessing.shift and preprocessing.normalise")
        return self


class PerSeriesIntervals(_Open):
    """Per-series conformal calibration from backtests (``contract.forecast``)."""

    min_origins: int = Field(ge=1)
    max_origins: int = Field(ge=1)
    stride: int = Field(ge=1)
    # "levelwise" (versions 3-4): per level, the conformal ratio at that level over the
    # requested horizon; "scaled" (version 5 on): one factor per series from a max_horizon
    # backtest at reference_level, clipped to max_ratio (contract.forecast.series_factor)
    rule: Literal["levelwise", "scaled"] = "levelwise"
    reference_level: float = Field(80.0, gt=0, lt=100)
    max_ratio: float = Field(4.0, ge=1)
    min_scores: int = Field(24, ge=1)


class Intervals(_Open):
    levels: list[float] = Field(min_length=2)
    table: list[list[float]] = Field(min_length=1)
    per_series: PerSeriesIntervals | None = None

    @field_validator("levels")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:], strict=False)) or v[0] < 0 or v[-1] >= 100:
            raise ValueError("levels must increase strictly within [0, 100)")
        return v


class ForecastCard(Header):
    task: Literal["forecast"]
    window: int = Field(ge=1)
    max_horizon: int = Field(ge=1)
    seasonal_period: int = Field(ge=1)
    freq: str = ""
    min_length: int | None = Field(None, ge=1)
    preprocessing: Preprocessing
    intervals: Intervals

    @field_validator("intervals")
    @classmethod
    def _table_shape(cls, v: Intervals) -> Intervals:
        if any(len(row) != len(v.levels) for row in v.table):
            raise ValueError(f"every table row needs one value per level ({len(v.levels)})")
        return v


# --- anomaly ---------------------------------------------------------------------------------


class AnomalyCard(Header):
    task: Literal["anomaly"]
    threshold: float | None = Field(None, ge=0, le=1)
    scoring: dict[str, Any] = Field(default_factory=dict)
    pad_value: float = 0.0


Card = Annotated[
    SentimentCard | NextWordCard | ForecastCard | AnomalyCard, Field(discriminator="task")
]
_CARD: TypeAdapter[Card] = TypeAdapter(Card)
# Card types of tasks registered at run time (``register_card``), beside the four above.
_REGISTERED: dict[str, type[Header]] = {}


def register_card(task: str, cls: type[Header]) -> None:
    """Let ``parse`` read cards of ``task`` as ``cls``; the app's task registry calls it.

    The four shipped tasks are already known (registering them again with the same class is a
    no-op); a different class for a known task is an error, never a silent replacement.
    """
    shipped: dict[str, type[Header]] = dict(zip(TASKS, get_args(get_args(Card)[0]), strict=True))
    current = shipped.get(task) or _REGISTERED.get(task)
    if current is not None and current is not cls:
        raise CardError(f"task {task!r} already has card type {current.__name__}")
    if current is None:
        _REGISTERED[task] = cls


def known_tasks() -> tuple[str, ...]:
    """The shipped tasks, then those registered at run time."""
    return (*TASKS, *_REGISTERED)


def _graph_v1(section: Any) -> Any:
    """Version 1 laid out a graph's tensors as ``{name: {...}}`` or ``[name, ...]``."""
    if not isinstance(section, dict):
        return section
    out = dict(section)
    for key in ("inputs", "outputs"):
        tensors = out.get(key)
        if isinstance(tensors, dict):
            out[key] = [
                {"name": n, **(spec if isinstance(spec, dict) else {})}
                for n, spec in tensors.items()
            ]
        elif isinstance(tensors, list):
            out[key] = [{"name": t} if isinstance(t, str) else t for t in tensors]
    return out


def _datasets_v1(section: Any) -> Any:
    """Version 1 also wrote datasets as ``{role: record or [records]}``."""
    if not isinstance(section, dict):
        return section
    out = []
    for role, recs in section.items():
        for rec in recs if isinstance(recs, list) else [recs]:
            out.append({"role": role, **rec} if isinstance(rec, dict) else rec)
    return out


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 card read as version 2 (in memory; the file is not touched)."""
    if raw.get("schema_version") != 1:
        return raw
    card = dict(raw)
    if "datasets" in card:
        card["datasets"] = _datasets_v1(card["datasets"])
    for key in ("onnx", "score_onnx"):
        if key in card:
            card[key] = _graph_v1(card[key])
    return card


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p not in known_tasks()) or "card"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    msg = first["msg"]
    if first["type"] == "missing":
        msg = "missing"
    return f"card.json {where}: {msg}{more}"


def parse(raw: Any) -> Card:
    """Validate a card (any supported schema) into its typed form; CardError says why not."""
    if not isinstance(raw, dict):
        raise CardError("card.json is not a JSON object")
    schema = raw.get("schema_version")
    if schema not in SUPPORTED_SCHEMAS:
        raise CardError(
            f"card.json schema_version {schema!r} is not supported by this seqserve "
            f"(it reads {', '.join(map(str, SUPPORTED_SCHEMAS))}); upgrade seqserve to serve it"
        )
    task = raw.get("task")
    if task not in known_tasks():
        raise CardError(
            f"card.json task {raw.get('task')!r} is not one of {', '.join(known_tasks())}"
        )
    try:
        if task in _REGISTERED:
            # A registered task's card is a Header subclass; callers narrow it with isinstance.
            return cast(Card, _REGISTERED[task].model_validate(upgrade(raw)))
        return _CARD.validate_python(upgrade(raw))
    except ValidationError as exc:
        raise CardError(_one_line(exc)) from None


def load_raw(folder: str | Path) -> Any:
    """``folder/card.json`` as JSON data, not yet validated."""
    path = Path(folder) / "card.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError("card.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"card.json is unreadable: {exc}") from None


def read(folder: str | Path, task: str | None = None) -> Card:
    """Read and validate ``folder/card.json`` (of ``task``, when given)."""
    raw = load_raw(folder)
    if task is not None and isinstance(raw, dict) and raw.get("task") != task:
        raise CardError(f"card.json says task {raw.get('task')!r} but the folder is under {task!r}")
    return parse(raw)


def dump(card: Card) -> dict[str, Any]:
    """The card as JSON data, in the version-2 layout (what training writes)."""
    return card.model_dump(mode="json", exclude_unset=True)


def build(data: dict[str, Any]) -> dict[str, Any]:
    """Check a card a training run is about to write and return it in the written layout.

    Training calls this (through ``training.common.artifacts.write_card``) so a card that serving
    would refuse is an error at export time, not at the first start of the server.
    """
    data = {**data, "schema_version": SCHEMA_VERSION}
    return dump(parse(data))
