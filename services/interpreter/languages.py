"""The languages the interpreter runs, each a Jupyter kernel: how its kernel starts, over
which transport, and the snippets that set and unset env vars in it.

Python, bash and Java run under ipykernel (`kernel_launcher`) and talk over ipc. Deno (for
JavaScript and TypeScript, as in E2B's template) and IRkernel (R) take TCP only: their
connection files name ports on 127.0.0.1.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol


class Snippets(Protocol):
    def set_env(self, values: dict[str, str]) -> str: ...
    def unset_env(self, names: list[str]) -> str: ...


class PythonSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        return f"import os as __corral_os; __corral_os.environ.update({json.dumps(values)}); del __corral_os"

    def unset_env(self, names: list[str]) -> str:
        return (
            f"import os as __corral_os\nfor __corral_name in {json.dumps(names)}:\n"
            "    __corral_os.environ.pop(__corral_name, None)\ndel __corral_os, __corral_name"
        )


class BashSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items())

    def unset_env(self, names: list[str]) -> str:
        return "unset " + " ".join(names) if names else ":"


class DenoSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        return f"for (const [k, v] of Object.entries({json.dumps(values)})) Deno.env.set(k, v);"

    def unset_env(self, names: list[str]) -> str:
        return f"for (const k of {json.dumps(names)}) Deno.env.delete(k);"


class RSnippets:
    def set_env(self, values: dict[str, str]) -> str:
        # R's double-quoted strings take JSON's escapes.
        pairs = ", ".join(f"{_r(name)} = {_r(value)}" for name, value in values.items())
        return f"invisible(do.call(Sys.setenv, list({pairs})))"

    def unset_env(self, names: list[str]) -> str:
        return f"invisible(Sys.unsetenv(c({', '.join(_r(name) for name in names)})))"


def _r(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class JavaSnippets:
    """The Java kernel takes env changes as a directive (java_kernel.py): a JVM's environment
    cannot be changed from Java code."""

    def set_env(self, values: dict[str, str]) -> str:
        return "%corral-env " + json.dumps({"set": values})

    def unset_env(self, names: list[str]) -> str:
        return "%corral-env " + json.dumps({"unset": names})


def _launcher(name: str) -> list[str]:
    # -P: the kernel starts in the user's working directory, which must not stand in for
    # what the launcher imports (it puts the directory on the path afterwards).
    return [sys.executable, "-P", "-m", "corral_services.interpreter.kernel_launcher", name]


def _deno() -> list[str]:
    # The `deno` distribution from PyPI puts its binary beside the interpreter's Python.
    beside = Path(sys.executable).parent / "deno"
    deno = str(beside) if beside.exists() else shutil.which("deno") or "deno"
    return [deno, "jupyter", "--kernel", "--conn"]


@dataclass(frozen=True, slots=True)
class Language:
    name: str
    kernel: str  # the name of its kernel spec (see contexts.py)
    snippets: Snippets
    argv: Callable[[], list[str]]  # the kernel's command, before the connection file
    transport: Literal["ipc", "tcp"] = "ipc"
    interrupt_mode: Literal["signal", "message"] = "signal"
    env: dict[str, str] = field(default_factory=dict)
    late_results: bool = False  # publishes results after its idle status (see execution.py)

    def kernel_spec(self) -> dict[str, object]:
        return {
            "argv": [*self.argv(), "{connection_file}"],
            "display_name": self.name,
            "language": self.name,
            "interrupt_mode": self.interrupt_mode,
            "env": self.env,
        }


# Deno's kernel ends a busy loop on an interrupt request (not on SIGINT) and keeps its state.
_DENO_ENV = {"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "DENO_NO_PROMPT": "1"}

LANGUAGES = {
    "python": Language("python", "corral-python", PythonSnippets(), lambda: [*_launcher("python"), "-f"]),
    "javascript": Language(
        "javascript", "corral-deno-js", DenoSnippets(), _deno, "tcp", "message", _DENO_ENV, True
    ),
    "typescript": Language(
        "typescript", "corral-deno-ts", DenoSnippets(), _deno, "tcp", "message", _DENO_ENV, True
    ),
    "r": Language(
        "r", "corral-r", RSnippets(), lambda: ["R", "--slave", "-e", "IRkernel::main()", "--args"], "tcp"
    ),
    "java": Language("java", "corral-java", JavaSnippets(), lambda: [*_launcher("java"), "-f"]),
    "bash": Language("bash", "corral-bash", BashSnippets(), lambda: [*_launcher("bash"), "-f"]),
}
ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "deno": "javascript",
    "ts": "typescript",
    "sh": "bash",
}
# The contexts every interpreter starts with, as E2B's does.
DEFAULT_LANGUAGES = ("python", "javascript")


def language(name: str | None) -> Language | None:
    key = (name or "python").strip().lower()
    return LANGUAGES.get(ALIASES.get(key, key))
