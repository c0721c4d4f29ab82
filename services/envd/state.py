"""What `/init` sets: sandbox env vars, access token, default user and workdir.

The orchestrator calls `/init` after every create, clone and resume; the whole update is
applied at once so no request ever sees a new token with old env vars or the reverse.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Identity:
    env_vars: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    default_user: str = "user"
    default_workdir: str | None = None


class EnvdState:
    """Holds the current Identity; readers take one snapshot per request."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._lock = threading.Lock()

    @property
    def identity(self) -> Identity:
        return self._identity

    def apply(self, **changes: object) -> Identity:
        with self._lock:
            self._identity = replace(self._identity, **changes)  # type: ignore[arg-type]
            return self._identity
