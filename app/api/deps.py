"""FastAPI dependencies as ``Annotated`` aliases, so route signatures read like types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container
from app.errors import NotReady


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs plain ``def`` dependencies in a thread pool (a thread hop
    # per request), which costs more than the whole sentiment inference.
    container: Container | None = getattr(request.app.state, "container", None)
    if container is None:
        raise NotReady("the service is starting; models are not loaded yet")
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
