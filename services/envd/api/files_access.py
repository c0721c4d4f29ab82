"""Who a `/files` request acts for and whether it may: token header or URL signature, the
`username` parameter (default user otherwise) and the `path` it names."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from ..auth import SignatureError, check_file_access
from ..errors import HTTPFailure
from ..state import EnvdState
from ..users import UnknownUserError, User, lookup_user, resolve_path


@dataclass(frozen=True, slots=True)
class FileRequest:
    user: User
    path: str | None  # resolved `path` parameter, None when absent


def authorize_file_request(request: Request, state: EnvdState, operation: str) -> FileRequest:
    identity = state.identity
    params = request.query_params
    raw_path = params.get("path")
    username = params.get("username")
    try:
        check_file_access(
            token=identity.access_token,
            header_token=request.headers.get("x-access-token"),
            path=raw_path or "",
            operation=operation,
            username=username or "",
            signature=params.get("signature"),
            expiration=params.get("signature_expiration"),
        )
        user = lookup_user(username or identity.default_user)
    except (SignatureError, UnknownUserError) as exc:
        raise HTTPFailure(401, str(exc)) from None
    path = None if raw_path is None else resolve_path(raw_path, user, identity.default_workdir)
    return FileRequest(user, path)
