"""The model store: ``<models_dir>/<task>/<name>/<version>/``, append-only.

Publishing writes the new version into a hidden folder beside its destination, checks its card
with the same types serving uses, and renames it into place, so a server scanning the folder
never sees half a model and a published version never changes under its name. Publishing onto
an existing version is refused; ``force`` moves the old folder aside (to
``<models_dir>/.replaced/``, which the server does not scan) and says where. Nothing here
deletes a published version.

Defaults live in ``<models_dir>/defaults.json`` as ``{task: "name:version"}`` and change only
through :func:`set_default` (``seqserve models default TASK NAME[:VERSION]``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from contract import card as cards

DEFAULTS_FILE = "defaults.json"
REPLACED_DIR = ".replaced"
UNPUBLISHED_DIR = ".unpublished"


class StoreError(Exception):
    """A publish or default change that would lose or hide something; the message says what."""


def is_hidden(part: str) -> bool:
    """Folders the server never scans: staging folders and moved-aside versions start with '.'."""
    return part.startswith(".")


def check_name(name: str) -> str:
    if not cards.NAME_RE.match(name):
        raise StoreError(
            f"{name!r} is not a model name: use lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 64 characters)"
        )
    return name


def check_version(version: str) -> str:
    if not cards.VERSION_RE.match(version):
        raise StoreError(f"{version!r} is not a version: use a whole number from 1, such as 1 or 2")
    return version


def versions(models_dir: Path, task: str, name: str) -> list[str]:
    """Published versions of a name, oldest first."""
    folder = Path(models_dir) / task / name
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if p.is_dir() and cards.VERSION_RE.match(p.name)]
    return sorted(found, key=int)


def next_version(models_dir: Path, task: str, name: str) -> str:
    """One more than the highest published version of the name (1 for a new name)."""
    existing = versions(models_dir, task, name)
    return str(int(existing[-1]) + 1) if existing else "1"


def destination(models_dir: Path, task: str, name: str, version: str | None = None) -> Path:
    """Where ``name`` (at ``version``, else the next free one) is published."""
    check_name(name)
    version = check_version(version) if version else next_version(models_dir, task, name)
    return Path(models_dir) / task / name / version


@dataclass
class Publication:
    """The outcome of :func:`publishing`: where the model went, and what was moved aside."""

    path: Path
    staging: Path
    task: str
    moved_aside: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.path.parent.name}:{self.path.name}"

    def message(self) -> str:
        text = f"Published {self.ref} to {self.path}"
        if self.moved_aside is not None:
            text += f" (the previous {self.ref} was moved to {self.moved_aside})"
        return text


def check_destination(dest: Path, task: str) -> Path:
    """``dest`` is ``<models_dir>/<task>/<name>/<version>`` with a valid name and version."""
    if dest.parent.parent.name != task:
        raise StoreError(
            f"{dest} is not laid out as <models_dir>/{task}/<name>/<version>/, which is what "
            "the server reads"
        )
    check_name(dest.parent.name)
    check_version(dest.name)
    return dest


def refuse_existing(dest: Path, force: bool) -> None:
    """Fail early (before hours of training) when ``dest`` is taken and ``force`` is not set."""
    if dest.exists() and not force:
        taken = versions(dest.parent.parent.parent, dest.parent.parent.name, dest.parent.name)
        free = str(int(taken[-1]) + 1) if taken and dest.name.isdigit() else "a new one"
        raise StoreError(
            f"{dest} already exists: a published version never changes. Publish version "
            f"{free} instead (leave out --version/--out for the next free one), or pass --force "
            "to move the existing folder aside (it is kept, never deleted)"
        )


def _kept_path(dest: Path, under: str) -> Path:
    """A free ``<models_dir>/<under>/<task>/<name>/<version>-<utc time>[-n]`` for ``dest``."""
    models_dir, task, name = dest.parent.parent.parent, dest.parent.parent.name, dest.parent.name
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = models_dir / under / task / name / f"{dest.name}-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = target.with_name(f"{dest.name}-{stamp}-{n}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _stamp_card(folder: Path, task: str, name: str, version: str) -> None:
    """Check the staged card with serving's own types and give it the published name."""
    path = folder / "card.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"the exported folder has no readable card.json: {exc}") from exc
    if raw.get("task") != task:
        raise StoreError(f"the card says task {raw.get('task')!r}, the destination is {task!r}")
    raw["name"], raw["version"] = name, version
    try:
        cards.parse(raw)
    except cards.CardError as exc:
        raise StoreError(f"the exported model would not be served: {exc}") from exc
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


def _keep_unpublished(staging: Path, dest: Path) -> Path:
    """Move a finished export that could not be published where the user can find it."""
    target = _kept_path(dest, UNPUBLISHED_DIR)
    os.rename(staging, target)
    return target


def _commit(pub: Publication, force: bool, renumber: bool) -> None:
    """Rename the staged folder into place (see :func:`publishing`)."""
    dest = pub.path
    while True:
        if dest.exists() and renumber and not force:
            dest = dest.parent / next_version(dest.parent.parent.parent, pub.task, dest.parent.name)
            _stamp_card(pub.staging, pub.task, dest.parent.name, dest.name)
        if dest.exists():
            if not force:
                kept = _keep_unpublished(pub.staging, dest)
                raise StoreError(
                    f"{dest} was published by someone else while this model was being made; "
                    f"nothing was overwritten and the new model is kept in {kept}"
                )
            pub.moved_aside = _kept_path(dest, REPLACED_DIR)
            os.rename(dest, pub.moved_aside)
        try:
            os.rename(pub.staging, dest)
        except OSError:
            if pub.moved_aside is not None:  # put the old version back before anything else
                os.rename(pub.moved_aside, dest)
                pub.moved_aside = None
            if renumber and dest.exists():
                continue  # another publish took this number a moment ago: take the next one
            raise
        pub.path = dest
        return


@contextmanager
def publishing(
    dest: Path, task: str, *, force: bool = False, renumber: bool = False
) -> Iterator[Publication]:
    """Stage a model folder beside ``dest`` and publish it atomically when the block succeeds.

    Write every file into ``pub.staging``; on a clean exit the card is validated, stamped with
    the destination's name and version, and the folder renamed to ``dest``. On an error in the
    block the staging folder is removed and nothing under ``dest`` changes. ``renumber``: the
    version was not asked for, so if another publish took it meanwhile the next free one is
    used; otherwise a version taken meanwhile keeps the finished model in
    ``<models_dir>/.unpublished/`` and says so. ``force`` moves the old version aside first
    (and back, should the final rename fail).
    """
    dest = check_destination(Path(dest).absolute(), task)
    name, version = dest.parent.name, dest.name
    if not renumber:
        refuse_existing(dest, force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{version}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    pub = Publication(dest, staging, task)
    try:
        yield pub
        _stamp_card(staging, task, name, version)
        _commit(pub, force, renumber)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish_folder(src: Path, dest: Path, task: str, *, force: bool = False) -> Publication:
    """Publish a finished folder (e.g. a dry run's) by copying it through :func:`publishing`."""
    with publishing(dest, task, force=force) as pub:
        shutil.copytree(src, pub.staging, dirs_exist_ok=True)
    return pub


# --- defaults --------------------------------------------------------------------------------


def read_defaults(models_dir: Path) -> dict[str, str]:
    """``{task: "name:version"}`` from ``<models_dir>/defaults.json`` ({} when absent)."""
    path = Path(models_dir) / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{DEFAULTS_FILE} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise StoreError(f'{DEFAULTS_FILE} must map task names to "name:version"')
    return data


def set_default(models_dir: Path, task: str, ref: str) -> tuple[str, str | None]:
    """Pin ``task`` to ``name[:version]`` (newest published version when none is given);
    returns (new ref, previous ref). Written atomically."""
    models_dir = Path(models_dir)
    name, _, version = ref.partition(":")
    check_name(name)
    published = versions(models_dir, task, name)
    if not published:
        raise StoreError(f"no published {task} model named {name!r} in {models_dir}")
    if version:
        check_version(version)
        if version not in published:
            raise StoreError(
                f"{task} model {name} has no version {version} (published: {', '.join(published)})"
            )
    else:
        version = published[-1]
    try:
        cards.read(models_dir / task / name / version)
    except cards.CardError as exc:
        raise StoreError(f"{name}:{version} cannot be served: {exc}") from exc
    defaults = read_defaults(models_dir)
    previous = defaults.get(task)
    defaults[task] = f"{name}:{version}"
    path = models_dir / DEFAULTS_FILE
    tmp = path.with_name(f".{DEFAULTS_FILE}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(defaults, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return defaults[task], previous
