"""Service settings from environment variables.

Every setting of every service is read from `CORRAL_<FIELD>` (upper-case field name), so an
operator finds them all under one prefix. Values arrive as strings and are converted to the
field's type by msgspec, which also rejects nonsense with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import msgspec

ENV_PREFIX = "CORRAL_"

T = TypeVar("T", bound=msgspec.Struct)


class SettingsError(ValueError):
    """A CORRAL_* variable holds a value its setting cannot take."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: object) -> T:
    """Builds `cls` from its defaults, then CORRAL_* variables, then explicit overrides."""
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(cls):
        name = env_name(field.name)
        if name in environ:
            raw[field.name] = environ[name]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc} (variables use the {ENV_PREFIX} prefix)") from exc
