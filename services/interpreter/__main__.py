"""The interpreter without the CLI (fewer imports, faster start in a sandbox): settings from CORRAL_*."""

from .server import run

run()
