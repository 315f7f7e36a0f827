"""How a stream ended, typed end to end: what the transport saw (`Delivery`) and what the stream
is recorded as (`Outcome`, with an `error_type` for the cuts). `outcome_of` is exhaustive, so
mypy flags a new way to end that nobody mapped (ARCHITECTURE.md draws each one).
"""

from __future__ import annotations

from typing import Literal, assert_never

# As the response saw it (`service.http.stream_response`).
Delivery = Literal[
    "delivered",  # everything, end marker included, was handed to the client
    "refused",  # answered with an HTTP error before any event (the upstream's failure)
    "client_left",  # the client disconnected
    "send_timeout",  # the client accepted no bytes for SEND_TIMEOUT_SECONDS
    "shutdown",  # the grace period after SIGTERM ran out
    "internal_error",  # the service itself failed
    # Resumable streams only (`service.resume`), as their producer saw it:
    "abandoned",  # every client left and none resumed within RESUME_GRACE_SECONDS
    "stopped",  # POST /api/chat/{stream_id}/stop
]
# As the stream is logged and counted.
Outcome = Literal["completed", "cancelled", "error"]


def outcome_of(delivery: Delivery, upstream_error_type: str | None) -> tuple[Outcome, str | None]:
    """The outcome and error type of a stream, from how its response ended and the upstream's
    own failure (if any)."""
    match delivery:
        case "delivered" | "refused":
            # The upstream's own result decides.
            return ("error" if upstream_error_type else "completed"), upstream_error_type
        case "client_left" | "abandoned":
            return "cancelled", upstream_error_type
        case "stopped":
            return "cancelled", "stopped_by_request"
        case "send_timeout":
            return "cancelled", "client_send_timeout"
        case "shutdown":
            return "error", "server_shutting_down"
        case "internal_error":
            return "error", "internal_error"
        case _:
            assert_never(delivery)
