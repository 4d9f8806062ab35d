#!/usr/bin/env bash
# pgkb's main job on the embedded PostgreSQL: a knowledge base over pgkb's own docs, synced, then
# queried twice: Retrieve (ranked chunks) and RetrieveAndGenerate (an answer with citations, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export PGKB_DATA_DIR=${PGKB_DATA_DIR:-$PWD/.pgkb-demo}
QUESTION=${1:-"how do I rotate credentials?"}
pgkb kb show handbook >/dev/null 2>&1 || pgkb kb create handbook   # the default model
pgkb ds list handbook --json | grep -q '"name": "docs"' || pgkb ds create handbook docs --path ./docs
pgkb sync handbook docs
pgkb retrieve handbook "$QUESTION" -k 3
pgkb ask handbook "$QUESTION"
