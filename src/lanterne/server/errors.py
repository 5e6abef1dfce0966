"""Errors as every endpoint answers them: JSON in OpenAI's shape, {"error": {"message", "type", "code"}}."""

from __future__ import annotations


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code}}


# Every status the server answers besides 200, as its OpenAPI schema documents them (FastAPI's own 422
# shape is replaced by this one: every error has the same body).
from pydantic import BaseModel  # noqa: E402


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error(description: str, headers: dict | None = None) -> dict:
    answer = {"model": ErrorBody, "description": description}
    if headers:
        answer["headers"] = headers
    return answer


ERROR_RESPONSES = {
    400: _error("The request cannot be answered as sent: the body is not JSON, the text is over this server's limits "
                "(bytes or tokens) or the model's context, a field is not implemented; the message says which."),
    404: _error("No such model, figure or file here."),
    413: _error("The request body is over this server's max_body_bytes."),
    422: _error("A field is missing, of the wrong type or out of its range; the message names it."),
    429: _error("The server is full: every slot and the queue are taken, or no slot came free in queue_seconds.",
                {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}),
}
