"""`RequestRoute` (service.http.request_route): an endpoint of the request alone is called
directly; any other endpoint keeps all of FastAPI's handling."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.routing import iter_route_contexts
from starlette.responses import JSONResponse, Response

from service.app import create_app
from service.http.request_route import (
    RequestRoute,
    reads_request_alone,
    refuse_hidden_dependencies,
)
from testkit.services import make_settings

calls: list[str] = []


def remember() -> None:
    calls.append("dependency")


router = APIRouter(route_class=RequestRoute)


@router.post("/alone")
async def alone(request: Request) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise HTTPException(status_code=409, detail="refused")
    return JSONResponse({"got": body.decode(), "query": request.url.query})


@router.get("/query")
async def with_query(request: Request, n: Annotated[int, Query(ge=1)]) -> Response:
    return JSONResponse({"n": n})


@router.get("/dependency", dependencies=[Depends(remember)])
async def with_dependency(request: Request) -> Response:
    return JSONResponse({})


@router.get("/model")
async def with_model(request: Request) -> dict[str, int]:
    return {"a": 1}


@router.get("/sync")
def sync(request: Request) -> Response:
    return JSONResponse({"sync": True})


@router.get("/unannotated")
async def unannotated(request: Request):  # type: ignore[no-untyped-def]
    return {"plain": "dict"}


def route(path: str) -> RequestRoute:
    (found,) = [r for r in router.routes if isinstance(r, RequestRoute) and r.path == path]
    return found


def client() -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_only_an_endpoint_of_the_request_alone_is_its_own_handler() -> None:
    assert route("/alone").get_route_handler() is alone
    for path in ("/query", "/dependency", "/model", "/sync", "/unannotated"):
        assert not reads_request_alone(route(path)), path
        assert route(path).get_route_handler() is not route(path).endpoint


async def test_the_endpoint_reads_the_request_and_its_errors_are_fastapis() -> None:
    async with client() as http:
        ok = await http.post("/alone?x=1", content=b"hello")
        refused = await http.post("/alone", content=b"refuse")
    assert ok.status_code == 200
    assert ok.json() == {"got": "hello", "query": "x=1"}
    assert refused.status_code == 409
    assert refused.json() == {"detail": "refused"}


async def test_any_other_endpoint_keeps_validation_dependencies_and_serialization() -> None:
    calls.clear()
    async with client() as http:
        invalid = await http.get("/query", params={"n": "0"})
        valid = await http.get("/query", params={"n": "3"})
        dependency = await http.get("/dependency")
        model = await http.get("/model")
        in_thread = await http.get("/sync")
        serialized = await http.get("/unannotated")
    assert invalid.status_code == 422
    assert valid.json() == {"n": 3}
    assert dependency.status_code == 200
    assert calls == ["dependency"]
    assert model.json() == {"a": 1}
    assert in_thread.json() == {"sync": True}
    assert serialized.json() == {"plain": "dict"}


def guard() -> None:
    raise HTTPException(status_code=401, detail="no")


@pytest.mark.parametrize("where", ["include_router", "app"])
def test_dependencies_a_direct_route_cannot_see_are_refused(where: str) -> None:
    if where == "app":
        app = FastAPI(dependencies=[Depends(guard)])
        app.include_router(router)
    else:
        app = FastAPI()
        app.include_router(router, dependencies=[Depends(guard)])
    with pytest.raises(RuntimeError, match="/alone: a RequestRoute calling its endpoint"):
        refuse_hidden_dependencies(app.routes)
    plain = FastAPI()
    plain.include_router(router)
    refuse_hidden_dependencies(plain.routes)  # nothing hidden: no error


def test_the_services_stream_routes_are_called_directly() -> None:
    app = create_app(make_settings(openai_api_key="key"))
    direct = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, RequestRoute)
        and reads_request_alone(context.original_route)
        for method in context.methods or ()
    }
    assert direct == {
        ("POST", "/api/chat/stream"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("POST", "/api/chat"),
    }
