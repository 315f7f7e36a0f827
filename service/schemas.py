"""The `/api/chat/stream` request body, validated once per request (never per token) and
translated into the domain's `StreamRequest`.

Accepted shapes: `{"messages": [...]}` (multi-turn history is the client's list), or the
shorthands `{"prompt": "..."}` and `{"message": "..."}` that popular tutorials send, each meaning
one user message. Unknown fields are refused rather than ignored, so a misspelt `max_token` is a
422 naming it, not a silently different request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.domain import ChatMessage, StreamRequest
from service.errors import InvalidRequest

Role = Literal["system", "user", "assistant"]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[MessageIn] | None = Field(default=None, min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    message: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    # OpenAI-style clients send it; this endpoint always streams.
    stream: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_conversation(self) -> ChatRequest:
        given = [name for name in ("messages", "prompt", "message") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "send exactly one of 'messages', 'prompt' or 'message'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def to_stream_request(self) -> StreamRequest:
        if self.messages:
            messages = tuple(ChatMessage(m.role, m.content) for m in self.messages)
        else:
            text = self.prompt or self.message
            assert text is not None
            messages = (ChatMessage("user", text),)
        return StreamRequest(messages, self.model, self.temperature, self.max_tokens)


def describe_validation_error(error: ValidationError) -> InvalidRequest:
    """One readable sentence naming each bad field; never echoes the input back."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return InvalidRequest(
            f"request body is not valid JSON: {problems[0]['msg']}", status_code=400
        )
    if any(problem["type"] == "model_type" and not problem["loc"] for problem in problems):
        return InvalidRequest("request body must be a JSON object")
    return InvalidRequest(describe_problems(problems))


def describe_problems(problems: Sequence[Mapping[str, Any]]) -> str:
    """`field.path: what is wrong; ...` for the first ten problems pydantic reported."""
    parts = []
    for problem in problems[:10]:
        location = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def parse_chat_request(body: bytes) -> StreamRequest:
    """From a JSON body, strictly: `"max_tokens": true` or `"temperature": "1.5"` is a 422, not
    a quietly converted value (JSON has real types; query parameters do not, see below)."""
    try:
        return ChatRequest.model_validate_json(body, strict=True).to_stream_request()
    except ValidationError as error:
        raise describe_validation_error(error) from None


def validate_chat_request(fields: dict[str, Any]) -> StreamRequest:
    """From already-decoded fields (query parameters: strings, converted as pydantic does)."""
    try:
        return ChatRequest.model_validate(fields).to_stream_request()
    except ValidationError as error:
        raise describe_validation_error(error) from None


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace pydantic's `#/$defs/...` references by the definitions themselves: inside an
    OpenAPI document such a reference would point at the document's root, where nothing is."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def openapi_request_body() -> dict[str, Any]:
    """The body's schema for the OpenAPI document (the route parses the body itself), with
    "exactly one of messages, prompt, message" spelt out as `oneOf`."""
    schema = inline_definitions(ChatRequest.model_json_schema())
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("messages", "prompt", "message")
    ]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
