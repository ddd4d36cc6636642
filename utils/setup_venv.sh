#!/usr/bin/env bash
# The first step of run.sh and test.sh: .venv (made with python3 -m venv where missing) with the
# pinned requirements (utils/install_requirements.py: which torch build). A .venv that a failed
# `python3 -m venv` left without pip (Debian and Ubuntu without their python3-venv package) is
# removed, so that the next run makes it again, rather than failing on it ever after.
set -euo pipefail
cd -- "$(dirname -- "$0")/.."

has_pip() { .venv/bin/python -m pip --version >/dev/null 2>&1; }

# Holds no installed package: nothing of the user's is lost by removing it.
is_bare() {
    [ -z "$(find .venv/lib*/python*/site-packages -maxdepth 1 -name '*.dist-info' 2>/dev/null | head -n 1)" ]
}

if [ -e .venv ] && ! has_pip; then
    if [ -x .venv/bin/python ] && ! is_bare; then
        echo "error: .venv has no pip (made by uv or with --without-pip?): add it with .venv/bin/python -m ensurepip," \
             "or remove .venv to have it made again" >&2
        exit 1
    fi
    rm -rf .venv
fi
if [ ! -e .venv ]; then
    if ! command -v python3 >/dev/null; then
        echo "error: no python3 on PATH: install Python 3 (3.11 is what the project is developed on) and run again" >&2
        exit 1
    fi
    if ! made=$(python3 -m venv .venv 2>&1); then
        rm -rf .venv
        case "$made" in
            *ensurepip*) echo "error: python3 -m venv could not make .venv: its venv module has no pip to install" \
                              "(ensurepip is not available): install Python's venv package (Debian/Ubuntu:" \
                              "apt-get install python3-venv) and run again" >&2 ;;
            *) echo "error: python3 -m venv could not make .venv: $(printf '%s\n' "$made" | grep -v '^\s*$' |
                    tail -n 1)" >&2 ;;
        esac
        exit 1
    fi
fi
.venv/bin/python -m utils.install_requirements
