#!/usr/bin/env bash
# Runs the test suite on real local Spark + Delta (one Spark session for the whole run).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
