#!/usr/bin/env bash
# Install everything the tests need (system packages when run as root, then a venv), lint, and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in espeak-ng sox graphviz chromium libasound2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/lint-imports
# Types (strict, with the pydantic plugin: [tool.mypy] in pyproject.toml) and formatting, then the suite.
.venv/bin/mypy voicefsm
.venv/bin/ruff format --check .
# The browser tests skip where Chromium is missing; as root it was just installed, so they must run.
if [ "$(id -u)" = "0" ]; then export VOICEFSM_REQUIRE_BROWSER=1; fi
.venv/bin/python -m pytest -q "$@"
