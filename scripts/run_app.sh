#!/usr/bin/env bash
# Quick start 1: install everything and start the app on the bundled models and demo cases.
source "$(dirname "$0")/_venv.sh"
install_requirements requirements.txt
exec .venv/bin/python -m streamlit run app.py --server.port "${PORT:-8501}" "$@"
