"""`RequestRoute` (service.http.request_route): an endpoint of the request alone is called
directly; any other endpoint keeps all of FastAPI's handling."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from starlette.responses import JSONResponse, Response

from service import openai_routes, routes, ui_chat
from service.http.request_route import RequestRoute, reads_request_alone

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


def route(path: str) -> RequestRoute:
    (found,) = [r for r in router.routes if isinstance(r, RequestRoute) and r.path == path]
    return found


def client() -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_only_an_endpoint_of_the_request_alone_is_its_own_handler() -> None:
    assert route("/alone").get_route_handler() is alone
    for path in ("/query", "/dependency", "/model", "/sync"):
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
    assert invalid.status_code == 422
    assert valid.json() == {"n": 3}
    assert dependency.status_code == 200
    assert calls == ["dependency"]
    assert model.json() == {"a": 1}
    assert in_thread.json() == {"sync": True}


def test_the_services_stream_routes_are_called_directly() -> None:
    direct = {
        (method, r.path)
        for module in (routes, openai_routes, ui_chat)
        for r in module.router.routes
        if isinstance(r, RequestRoute) and reads_request_alone(r)
        for method in r.methods or ()
    }
    assert direct == {
        ("POST", "/api/chat/stream"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("POST", "/api/chat"),
    }
