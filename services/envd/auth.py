"""Access-token and signed-URL checks.

Once `/init` sets a token, every request must carry `X-Access-Token` with it, except
`/health`, `/init` and `/files`; `/files` may instead carry a signature computed from the
token, so a URL can be handed to a browser without the token itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

UNAUTHORIZED_MESSAGE = (
    "unauthorized access, please provide a valid access token or method signing if supported"
)

# Paths anyone may call; /files is checked by the files handlers (token or signature).
OPEN_PATHS = frozenset({"/health", "/init", "/files"})


class SignatureError(PermissionError):
    pass


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def file_signature(path: str, operation: str, username: str, token: str, expiration: int | None) -> str:
    raw = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).decode().rstrip("=")


def check_file_access(
    *,
    token: str | None,
    header_token: str | None,
    path: str,
    operation: str,
    username: str,
    signature: str | None,
    expiration: str | None,
) -> None:
    """Raises SignatureError with the message the SDK expects when access is refused."""
    if token is None:
        return
    if header_token is not None:
        if not token_matches(token, header_token):
            raise SignatureError(UNAUTHORIZED_MESSAGE)
        return
    if not signature:
        raise SignatureError("missing signature query parameter")
    expires: int | None = None
    if expiration:
        try:
            expires = int(expiration)
        except ValueError:
            raise SignatureError("invalid signature expiration") from None
        if expires < time.time():
            raise SignatureError("signature is already expired")
    expected = file_signature(path, operation, username, token, expires)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("invalid signature")
