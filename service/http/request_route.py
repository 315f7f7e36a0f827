"""`RequestRoute`: a FastAPI route whose endpoint takes the request alone calls it directly.

For each request, FastAPI's route handler reads and parses the body, solves the dependencies,
validates the parameters and serializes what the endpoint returns. The stream routes are
declared `async def endpoint(request: Request) -> Response`: they read the key, the options
and the body themselves (issue #16), so the handler has none of that to do, yet every request
still paid for its walk (an empty dependency solve, a scratch `Response` for dependencies to set
headers on, the endpoint's context for error messages): 3% of the instructions of a whole
stream request. A `RequestRoute` whose endpoint has that shape is handed the endpoint itself as
its handler. Everything around the handler stays FastAPI's: the OpenAPI document, its
request/response wrapper with the exception handlers and exit stacks, the routing.

An endpoint that declares anything more (another parameter, a dependency, a response model, a
return annotation other than a `Response`, a plain `def` that FastAPI runs in a thread) gets
FastAPI's own handler: the shortcut is taken only where FastAPI's handler would do nothing but
call the endpoint. Dependencies given to `include_router` or `FastAPI(dependencies=...)` are not
visible to the route itself (FastAPI adds them to a copy per inclusion, and builds its handler
from the route): `refuse_hidden_dependencies` checks the app once built, so such a dependency
(a key check, say) can never be skipped unseen.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class RequestRoute(APIRoute):
    """`APIRoute` that calls an `async def endpoint(request) -> Response` directly (module
    docstring); any other endpoint is handled as `APIRoute` handles it."""

    def get_route_handler(self) -> Handler:
        if reads_request_alone(self):
            return cast(Handler, self.endpoint)
        return super().get_route_handler()


def reads_request_alone(route: APIRoute) -> bool:
    """Whether FastAPI's handler would only call `route`'s endpoint with the request: a
    coroutine function of the request alone, without dependencies, body or response model."""
    endpoint = route.endpoint
    parameters = list(inspect.signature(endpoint).parameters.values())
    dependant = route.dependant
    return (
        inspect.iscoroutinefunction(endpoint)
        and len(parameters) == 1
        and parameters[0].kind in _POSITIONAL
        and dependant.request_param_name == parameters[0].name
        and not dependant.dependencies
        and route.body_field is None
        and route.response_field is None
        and _returns_a_response(endpoint)
    )


def _returns_a_response(endpoint: Callable[..., Any]) -> bool:
    """Whether `endpoint` is annotated to return a Starlette `Response` (FastAPI would serialize
    anything else; a missing annotation is not taken on trust)."""
    try:
        returned = typing.get_type_hints(endpoint).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returned, type) and issubclass(returned, Response)


def refuse_hidden_dependencies(routes: Sequence[BaseRoute]) -> None:
    """Raise `RuntimeError` if a route that calls its endpoint directly was given dependencies
    where it cannot see them (`include_router(..., dependencies=...)`, `FastAPI(dependencies=...)`):
    they would never run. Called on the app's routes once they are all included."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        direct = isinstance(route, RequestRoute) and reads_request_alone(route)
        if direct and context.dependant.dependencies:
            raise RuntimeError(
                f"{context.path}: a RequestRoute calling its endpoint directly was included "
                "with dependencies, which it would skip; declare them on the route instead"
            )
