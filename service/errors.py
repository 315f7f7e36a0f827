"""The service's errors: what a client may be told, and with which HTTP status.

    ServiceError
    ├── InvalidRequest          400/422  the client's request is wrong
    ├── NotAcceptable           406      no supported wire format matches `Accept`
    ├── RequestTimeout          408      the request head or body came too slowly
    ├── PayloadTooLarge         413      the body exceeds MAX_BODY_BYTES
    ├── URITooLong              414      the request line exceeds MAX_REQUEST_HEAD_BYTES
    ├── RequestHeadTooLarge     431      the request head exceeds MAX_REQUEST_HEAD_BYTES
    ├── Unauthorized            401      missing or wrong service API key
    ├── TooManyStreams          429      this process (or this key) is at its stream limit
    ├── UpstreamAuthFailed      502      the service's own upstream credentials were refused
    ├── UpstreamRateLimited     429      the upstream asked us to slow down (Retry-After kept)
    ├── UpstreamQuotaExhausted  502      the service's upstream account is out of quota
    ├── UpstreamRejected        400      the upstream refused this request (context too long, ...)
    ├── NotServedUpstream       501      the upstream does not serve this API (/v1/responses)
    ├── ModelNotFound           404      /v1/models/{id} names no model the upstream lists
    ├── UpstreamTimeout         504      the upstream did not answer in time
    ├── UpstreamUnavailable     502      unreachable, 5xx, or it broke off mid-stream
    ├── StreamDeadlineExceeded  504      the stream outlived MAX_STREAM_SECONDS
    ├── ServerShuttingDown      503      this process is stopping; retry elsewhere
    ├── StreamNotFound          404      no resumable stream with this id (or it expired)
    ├── StreamExists            409      a stream with this id exists already
    ├── StreamEventsExpired     410      the events to resume from are no longer stored
    ├── ResumeUnavailable       503      the stream store (Redis) cannot be reached
    ├── StreamLost              502      the replica producing a resumed stream died
    ├── RouteError              404/405  no such route or method (Starlette's routing)
    └── InternalError           500      the service itself failed (details in the log only)

Provider exceptions are translated into these at exactly one boundary
(`service.upstream.openai_chat`). A `ServiceError` carries only text that is safe to show: upstream
error bodies are reduced to a message and a type, secrets are never part of it. Every error is
rendered by one module, `service.error_responses`, in one of two shapes: the service's own
(`as_dict`) or OpenAI's (`as_openai_dict`, for the `/v1` routes the OpenAI SDKs call, issue #8).

`ConfigurationError` is not among them: it stops the process at start-up, no client sees it.
"""

from __future__ import annotations

from typing import Any, ClassVar


def _openai_type(status: int) -> str:
    """OpenAI's error `type` for a status. The SDKs choose their exception class from the status
    alone; `type` is for people and logs."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class ServiceError(Exception):
    status_code: int = 500
    error_type: str = "internal_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: int | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        # For OpenAI's shape: the request field at fault, and the upstream's own error code when
        # it gave one (`context_length_exceeded`, `model_not_found`, ...).
        self.param = param
        self.code = code

    @property
    def openai_status(self) -> int:
        """The status on the `/v1` routes, where a client expects what OpenAI itself answers."""
        return self.status_code

    def as_openai_dict(self) -> dict[str, Any]:
        """The `error` object in OpenAI's shape, which the OpenAI SDKs read into their
        exceptions: `code` is the upstream's code, else the service's own `error_type`."""
        return {
            "message": self.message,
            "type": _openai_type(self.openai_status),
            "param": self.param,
            "code": self.code or self.error_type,
        }

    def as_dict(self) -> dict[str, Any]:
        """The `error` object of every error body and in-band error event."""
        body: dict[str, Any] = {
            "type": self.error_type,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after_seconds is not None:
            body["retry_after_seconds"] = self.retry_after_seconds
        return body

    def headers(self) -> dict[str, str]:
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


class InvalidRequest(ServiceError):
    status_code = 422
    error_type = "invalid_request"

    def __init__(self, message: str, *, status_code: int = 422, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status_code = status_code

    @property
    def openai_status(self) -> int:
        return 400  # OpenAI answers every invalid request with 400 (`BadRequestError`)


class NotAcceptable(ServiceError):
    status_code = 406
    error_type = "not_acceptable"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class RequestTimeout(ServiceError):
    status_code = 408
    error_type = "request_timeout"


class URITooLong(ServiceError):
    status_code = 414
    error_type = "uri_too_long"


class RequestHeadTooLarge(ServiceError):
    status_code = 431
    error_type = "request_head_too_large"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        # https://www.rfc-editor.org/rfc/rfc6750#section-3
        return {"WWW-Authenticate": 'Bearer realm="chat"'}


class TooManyStreams(ServiceError):
    status_code = 429
    error_type = "too_many_streams"
    retryable = True


class UpstreamAuthFailed(ServiceError):
    status_code = 502
    error_type = "upstream_auth_error"


class UpstreamRateLimited(ServiceError):
    status_code = 429
    error_type = "rate_limited"
    retryable = True


class UpstreamQuotaExhausted(ServiceError):
    status_code = 502
    error_type = "upstream_quota_exhausted"


class UpstreamRejected(ServiceError):
    """Always 400 on the service's own routes; on `/v1` the upstream's own 4xx (a 404 for an
    unknown model is the SDKs' `NotFoundError`)."""

    status_code = 400
    error_type = "upstream_rejected_request"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int = 400,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status

    @property
    def openai_status(self) -> int:
        return self.upstream_status


class NotServedUpstream(ServiceError):
    """The upstream answers 404 for a whole API (an OpenAI-compatible server without
    `/v1/responses`): not the client's fault, and no retry will help."""

    status_code = 501
    error_type = "not_implemented_upstream"


class ModelNotFound(ServiceError):
    status_code = 404
    error_type = "model_not_found"


class UpstreamTimeout(ServiceError):
    status_code = 504
    error_type = "upstream_timeout"
    retryable = True


class UpstreamUnavailable(ServiceError):
    """`upstream_status` is the upstream's own status when it answered one (5xx, 3xx), None
    when it could not be reached, broke off or sent what the service cannot read: the router
    tells failover reasons apart by it (`service.upstream.health`).

    `upstream_retry_after_seconds` is a 5xx's own `Retry-After`: the router cools the
    deployment down for at least that long. It is not `retry_after_seconds`, which the client
    is sent: a 502 from an upstream's failure has never carried `Retry-After` (another
    deployment, or the SDK's retry, may answer sooner); the service sends one on a 502 only
    when it knows itself when a deployment comes back (every one cooling down,
    `Router.unavailable`)."""

    status_code = 502
    error_type = "upstream_unavailable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        upstream_retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.upstream_retry_after_seconds = upstream_retry_after_seconds


class StreamDeadlineExceeded(ServiceError):
    status_code = 504
    error_type = "stream_deadline"


class ServerShuttingDown(ServiceError):
    status_code = 503
    error_type = "server_shutting_down"
    retryable = True


def server_shutting_down() -> ServerShuttingDown:
    # A fresh exception each time: re-raising one instance grows its traceback forever.
    return ServerShuttingDown("the server is shutting down; retry the request")


class StreamNotFound(ServiceError):
    status_code = 404
    error_type = "stream_not_found"


class StreamExists(ServiceError):
    status_code = 409
    error_type = "stream_exists"


class StreamEventsExpired(ServiceError):
    status_code = 410
    error_type = "stream_events_expired"


class ResumeUnavailable(ServiceError):
    status_code = 503
    error_type = "resume_unavailable"
    retryable = True


class StreamLost(ServiceError):
    status_code = 502
    error_type = "stream_lost"
    retryable = True


class RouteError(ServiceError):
    """Routing's own refusals (Starlette raises `HTTPException`): 404, 405, and any other
    status a framework layer raises."""

    _TYPES: ClassVar[dict[int, str]] = {404: "not_found", 405: "method_not_allowed"}

    def __init__(
        self, message: str, *, status_code: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = self._TYPES.get(status_code, "http_error")
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return self._headers  # 405 carries `Allow`


class InternalError(ServiceError):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str = "internal server error") -> None:
        super().__init__(message)


class ConfigurationError(ValueError):
    """The environment describes no usable service; the message names the variable to fix."""
