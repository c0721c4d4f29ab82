"""The API's error body: `{"code": <status>, "message": "..."}`."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# A 503 is a part of Corral down for a moment (a restart, a full node): the SDKs retry it
# after this many seconds.
RETRY_AFTER_S = "1"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 503:
        headers = {"Retry-After": RETRY_AFTER_S, **(headers or {})}
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)
