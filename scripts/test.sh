#!/usr/bin/env bash
# Runs the whole test suite: lint, then every test (unit, integration, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check libs services tests bench
exec .venv/bin/pytest -q "$@"
