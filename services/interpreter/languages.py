"""The languages the interpreter runs, each a Jupyter kernel, and the snippets that set env
vars and the working directory in it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Protocol


class Snippets(Protocol):
    def set_env(self, values: dict[str, str]) -> str: ...
    def unset_env(self, names: list[str]) -> str: ...
    def chdir(self, path: str) -> str: ...


class PythonSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        return f"import os as __corral_os; __corral_os.environ.update({json.dumps(values)}); del __corral_os"

    def unset_env(self, names: list[str]) -> str:
        return (
            f"import os as __corral_os\nfor __corral_name in {json.dumps(names)}:\n"
            "    __corral_os.environ.pop(__corral_name, None)\ndel __corral_os, __corral_name"
        )

    def chdir(self, path: str) -> str:
        return f"import os as __corral_os; __corral_os.chdir({json.dumps(path)}); del __corral_os"


class BashSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items())

    def unset_env(self, names: list[str]) -> str:
        return "unset " + " ".join(names) if names else ":"

    def chdir(self, path: str) -> str:
        return f"cd {shlex.quote(path)}"


@dataclass(frozen=True, slots=True)
class Language:
    name: str
    kernel: str  # the name of its kernel spec (see contexts.py)
    snippets: Snippets


LANGUAGES = {
    "python": Language("python", "corral-python", PythonSnippets()),
    "bash": Language("bash", "corral-bash", BashSnippets()),
}
ALIASES = {"py": "python", "python3": "python", "sh": "bash"}


def language(name: str | None) -> Language | None:
    key = (name or "python").strip().lower()
    return LANGUAGES.get(ALIASES.get(key, key))
