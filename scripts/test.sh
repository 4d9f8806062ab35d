#!/usr/bin/env bash
# Install everything, lint and type-check, then run the whole test suite against a real embedded PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check pgkb tests bench
mypy pgkb  # settings in pyproject.toml [tool.mypy]
python -m pytest "$@"
