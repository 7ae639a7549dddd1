#!/usr/bin/env bash
# A separate virtualenv with Mage (mage-ai on PyPI) for the tests that run exported projects
# through Mage itself (tests/mage_driver.py). Mage pins many packages (ipython 8.10,
# jupyter_client 7.4, tornado 6.4.2, ...) that clash with mage_nb's own environment, so it
# never goes into .venv.
#
#   bash scripts/mage-venv.sh          # creates $MAGE_VENV, default <repo>/.mage-venv
#   "$MAGE_VENV/bin/python" tests/mage_driver.py PROJECT PIPELINE OUT.json
#
# Idempotent: a marker file records what was installed; when it matches, nothing is done.
# Needs only PyPI. MAGE_PYTHON picks the interpreter (default python3.11; mage-ai 0.9.80
# requires Python >= 3.10).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MAGE_VENV:-$ROOT/.mage-venv}"
PYTHON="${MAGE_PYTHON:-python3.11}"
# mage-ai itself, plus duckdb: Mage's SQL blocks on DuckDB import it, and mage-ai does not
# depend on it.
REQUIREMENTS=("mage-ai==0.9.80" "duckdb>=1.1")
MARKER="$VENV/.mage-venv-installed"
WANT="${REQUIREMENTS[*]}"

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

start=$(date +%s)
echo "mage-venv: installing ${WANT} into ${VENV}" >&2
rm -f "$MARKER"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
# Importing the scheduler proves the install works on this Python. The import creates a
# sqlite database in Mage's data directory, so that is a throwaway one, not ~/.mage_data.
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
check_import() {
  (cd "$check" && MAGE_REPO_PATH="$check" MAGE_DATA_DIR="$check" \
    "$VENV/bin/python" -c "import duckdb, mage_ai.orchestration.pipeline_scheduler")
}
check_import >/dev/null 2>&1 || {
  echo "mage-venv: mage_ai does not import in ${VENV}:" >&2
  check_import >&2
  exit 1
}
printf '%s' "$WANT" > "$MARKER"
echo "mage-venv: ready in $(( $(date +%s) - start )) s" >&2
