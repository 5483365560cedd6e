"""FastAPI dependencies as ``Annotated`` aliases, so route signatures read like types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request

from app.container import Container
from app.errors import NotReady


def get_container(request: Request) -> Container:
    container: Container | None = getattr(request.app.state, "container", None)
    if container is None:
        raise NotReady("the service is starting; models are not loaded yet")
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def inflight_slot(container: ContainerDep) -> Iterator[None]:
    with container.limiter.slot():
        yield


InflightDep = Depends(inflight_slot)
