#!/usr/bin/env bash
# Install everything, then run the whole test suite against a real embedded PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check pgkb tests bench
python -m pytest "$@"
