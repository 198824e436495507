#!/usr/bin/env bash
# Install genloss with its test extras, run the test suite (the README's test command), then build the
# documentation with warnings as errors (mkdocs.yml; a few seconds, offline) into a throw-away folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
# no --quiet: it raises the log level above WARNING, so --strict would no longer see the warnings
python -m mkdocs build --strict --site-dir "$site_dir"
