#!/usr/bin/env bash
# Quick start 2: install everything (Debian's Chromium included) and run the whole test suite.
source "$(dirname "$0")/_venv.sh"
install_requirements requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
