"""Errors as every endpoint answers them: JSON in OpenAI's shape, {"error": {"message", "type", "code"}}."""

from __future__ import annotations


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code}}
