# Sourced by the other scripts: create .venv (Python 3.11) once and install a requirements file into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
install_requirements() {
  .venv/bin/python -m pip install --quiet -c constraints.txt -r "$1"
}
