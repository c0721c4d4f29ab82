"""What a template build's steps (E2B's builder instructions) may be: checked by the API
before a build starts and by the node that runs it."""

from __future__ import annotations

import posixpath
import re

from corral_libs.contracts.messages import BuildStep

STEP_TYPES = ("COPY", "ENV", "RUN", "WORKDIR", "USER")
_USER = re.compile(r"[a-z_][a-z0-9_-]*\$?(:[a-z_][a-z0-9_-]*\$?)?|[0-9]+(:[0-9]+)?", re.I)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HASH = re.compile(r"[0-9a-f]{64}")
_MODE = re.compile(r"0?[0-7]{3,4}")


class InvalidStep(ValueError):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"step {index}: {message}")
        self.index = index


def validate(steps: list[BuildStep]) -> None:
    """Refuses what no build could run, naming the step (1-based, as E2B counts them)."""
    for index, step in enumerate(steps, 1):
        args = step.args
        if step.type not in STEP_TYPES:
            raise InvalidStep(index, f"unknown step type '{step.type}' (one of {', '.join(STEP_TYPES)})")
        if any("\0" in arg for arg in args):
            raise InvalidStep(index, "arguments must not contain NUL characters")
        if step.type == "RUN":
            if len(args) not in (1, 2) or not args[0].strip():
                raise InvalidStep(index, "RUN takes a command and optionally a user")
            if len(args) == 2 and args[1] and not _USER.fullmatch(args[1]):
                raise InvalidStep(index, f"invalid user '{args[1]}'")
        elif step.type == "COPY":
            if len(args) < 2 or not args[0] or not args[1]:
                raise InvalidStep(index, "COPY takes a source and a destination")
            if step.files_hash is None or not _HASH.fullmatch(step.files_hash):
                raise InvalidStep(index, "COPY needs the filesHash of its uploaded files")
            if posixpath.isabs(args[0]) or ".." in args[0].split("/"):
                raise InvalidStep(index, f"the source '{args[0]}' must be a path inside the build context")
            if len(args) > 2 and args[2] and not _USER.fullmatch(args[2]):
                raise InvalidStep(index, f"invalid owner '{args[2]}'")
            if len(args) > 3 and args[3] and not _MODE.fullmatch(args[3]):
                raise InvalidStep(index, f"invalid mode '{args[3]}' (octal, e.g. 0755)")
        elif step.type == "ENV":
            if not args or len(args) % 2:
                raise InvalidStep(index, "ENV takes name, value pairs")
            for name in args[::2]:
                if not _ENV_NAME.fullmatch(name):
                    raise InvalidStep(index, f"invalid environment variable name '{name}'")
        elif step.type == "WORKDIR":
            if len(args) != 1 or not args[0]:
                raise InvalidStep(index, "WORKDIR takes a path")
        elif step.type == "USER" and (len(args) != 1 or not _USER.fullmatch(args[0])):
            raise InvalidStep(index, f"invalid user '{args[0] if args else ''}'")
