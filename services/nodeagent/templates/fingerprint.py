"""What a built template depends on (its recipe, the build steps, envd and the libraries it
imports, at their versions): a template built from anything else is stale and gets rebuilt."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .envd_payload import envd_requirements, interpreter_requirements
from .recipe import load_recipe_file

REPO_ROOT = Path(__file__).resolve().parents[3]
SOURCES = (
    "services/envd",
    "libs/config.py",
    "libs/contracts/envd.py",
    "libs/contracts/sandbox_net.py",
    "libs/logging.py",
    "libs/snapshot_listener.py",
    "libs/telemetry.py",
    "services/nodeagent/templates/build.py",
    "services/nodeagent/templates/envd_payload.py",
    "templates/shims",
)


SUFFIXES = (".py", ".c", ".java")
# Only templates with the code interpreter depend on it.
INTERPRETER_SOURCES = ("services/interpreter",)


def source_fingerprint(recipe_path: Path) -> str:
    recipe = load_recipe_file(recipe_path)
    digest = hashlib.sha256(recipe_path.read_bytes())
    digest.update(" ".join(envd_requirements()).encode())
    sources = SOURCES
    if recipe.interpreter:
        digest.update(" ".join(interpreter_requirements()).encode())
        sources += INTERPRETER_SOURCES
    for source in sources:
        path = REPO_ROOT / source
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
