"""Jupyter MIME bundles as the `result` lines the e2b-code-interpreter SDKs decode."""

from __future__ import annotations

from typing import Any

# Result field -> MIME type, as the SDKs name them.
FIELDS = {
    "text": "text/plain",
    "html": "text/html",
    "markdown": "text/markdown",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "pdf": "application/pdf",
    "latex": "text/latex",
    "json": "application/json",
    "javascript": "application/javascript",
    "data": "e2b/data",
    "chart": "e2b/chart",
}
_KNOWN = set(FIELDS.values())


def _unquote(text: str) -> str:
    """The repr of a string result (`'abc'`) is shown as its text, as E2B does."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def result_line(bundle: dict[str, Any], *, is_main_result: bool) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "result", "is_main_result": is_main_result}
    for field, mime in FIELDS.items():
        value = bundle.get(mime)
        if value is None:
            continue
        if field == "text":
            value = _unquote(value)
        elif isinstance(value, str) and field in ("png", "jpeg", "pdf"):
            value = value.strip()
        line[field] = value
    line["extra"] = {mime: value for mime, value in bundle.items() if mime not in _KNOWN}
    return line
