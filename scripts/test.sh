#!/usr/bin/env bash
# Quick start 2: install everything (Debian's Chromium and PostgreSQL included) and run the whole test suite.
# The review log's tests also run against a throw-away PostgreSQL server that the tests start themselves
# (initdb + pg_ctl on a free 127.0.0.1 port; tests/postgres_cluster.py); they are skipped only when the
# server binaries are absent.
source "$(dirname "$0")/_venv.sh"
install_requirements requirements-dev.txt
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq; apt_updated=1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi
have_postgres_server() {
  { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1 && return 0
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && return 0
  done
  return 1
}
if ! have_postgres_server; then
  apt_install postgresql  # Debian's server binaries land in /usr/lib/postgresql/<version>/bin
fi
exec .venv/bin/python -m pytest "$@"
