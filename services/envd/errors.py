"""envd's HTTP error body: `{"code": <status>, "message": "..."}`, as the SDKs parse it."""

from __future__ import annotations

from starlette.responses import JSONResponse


class HTTPFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)
