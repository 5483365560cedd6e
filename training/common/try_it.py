"""The lines a training or export command prints at the end: how to serve and query the new model.

    Exported shop-gru:1. Try it:
      SEQSERVE_MODELS_DIR=/abs/models seqserve models list
      SEQSERVE_MODELS_DIR=/abs/models seqserve serve
      curl -s localhost:8000/forecast -H 'content-type: application/json' -d '{..."model": ...}'

The server names a model by its folder, ``<models_dir>/<task>/<name>/<version>/``, so the
name, version and models dir printed here are read from the folder, not from any flag.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any


def served_ref(folder: str | Path, task: str) -> tuple[Path, str, str] | None:
    """(models dir, name, version) the server will use for ``folder``; None when the folder is
    not laid out as ``<models_dir>/<task>/<name>/<version>/``."""
    folder = Path(folder).resolve()
    if len(folder.parents) < 3 or folder.parent.parent.name != task:
        return None
    return folder.parents[2], folder.parent.name, folder.name


def curl_line(endpoint: str, body: dict[str, Any]) -> str:
    """One copy-pasteable curl command posting ``body`` as JSON (shell-quoted)."""
    payload = json.dumps(body, ensure_ascii=False)
    return (
        f"curl -s localhost:8000{endpoint} -H 'content-type: application/json' "
        f"-d {shlex.quote(payload)}"
    )


def try_it_lines(
    folder: str | Path,
    task: str,
    requests: list[tuple[str, dict[str, Any]]],
    about: str = "",
) -> str:
    """``Exported NAME:VERSION (about). Try it:`` then ``seqserve models``, ``seqserve serve`` and
    one curl line per (endpoint, body); every body gets ``"model": "NAME:VERSION"``."""
    ref = served_ref(folder, task)
    if ref is None:
        folder = Path(folder).resolve()
        return (
            f"\nExported to {folder}. The server reads <models_dir>/{task}/<name>/<version>/: "
            f"copy the folder to e.g. models/{task}/<name>/1/ to serve it."
        )
    root, name, version = ref
    lines = [
        f"\nExported {name}:{version}{f' ({about})' if about else ''}. Try it:",
        f"  SEQSERVE_MODELS_DIR={shlex.quote(str(root))} seqserve models list",
        f"  SEQSERVE_MODELS_DIR={shlex.quote(str(root))} seqserve serve",
    ]
    for endpoint, body in requests:
        lines.append("  " + curl_line(endpoint, {**body, "model": f"{name}:{version}"}))
    return "\n".join(lines)
