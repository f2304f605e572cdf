#!/usr/bin/env bash
# Creates .venv in the repo root with em-spark (editable) and its dev extras.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.em-spark-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # PyPI's torch wheel brings the CUDA libraries: the install needs about 12 GB while it
  # unpacks (7 GB once done). Say so up front rather than fail half-way with ENOSPC.
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  tmp_kb=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $4}')
  if [ "${free_kb:-0}" -lt 12000000 ] || [ "${tmp_kb:-0}" -lt 4000000 ]; then
    echo "setup: not enough free disk for the install: $((free_kb / 1000000)) GB free here ($PWD)," \
      "$((tmp_kb / 1000000)) GB in ${TMPDIR:-/tmp}; it needs about 12 GB here and 4 GB there" >&2
    exit 1
  fi
  echo "setup: installing em-spark and its dependencies into .venv (first time: several minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
# The review report's browser test opens the page in Debian's chromium (root only; the
# test skips, saying why, where it is missing).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing chromium for the HTML report test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium could not be installed; its test will be skipped"
fi
echo "setup: ready ($(.venv/bin/em-spark --help >/dev/null && echo em-spark OK))"
