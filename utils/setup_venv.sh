#!/usr/bin/env bash
# The first step of run.sh and test.sh: .venv (made with python3 -m venv where missing) with the
# pinned requirements (utils/install_requirements.py: which torch build). The toolkit needs Python
# 3.11 or newer (the pins, subprocess's process_group): an older python3 is refused in one line before
# .venv is made. A .venv that a failed `python3 -m venv` left without pip (Debian and Ubuntu without
# their python3-venv package), or one of an older Python that holds nothing but pip (what an older
# python3 left), is removed, so that the next run makes it again, rather than failing on it ever after.
set -euo pipefail
cd -- "$(dirname -- "$0")/.."

NEEDED=3.11

has_pip() { .venv/bin/python -m pip --version >/dev/null 2>&1; }

# Holds no installed package but pip's own (pip, setuptools, wheel: what venv puts there): nothing of
# the user's is lost by removing it.
is_bare() {
    [ -z "$(find .venv/lib*/python*/site-packages -maxdepth 1 -name '*.dist-info' \
        ! -name 'pip-*' ! -name 'setuptools-*' ! -name 'wheel-*' 2>/dev/null | head -n 1)" ]
}

# python_version <python>: its version (3.9.6), or nothing where it does not run.
python_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true
}

# new_enough <version>: whether it is NEEDED or newer.
new_enough() {
    local major=${1%%.*} minor=${1#*.}
    minor=${minor%%.*}
    [[ ${major} =~ ^[0-9]+$ && ${minor} =~ ^[0-9]+$ ]] || return 1
    [ "${major}" -gt "${NEEDED%%.*}" ] || { [ "${major}" -eq "${NEEDED%%.*}" ] && [ "${minor}" -ge "${NEEDED#*.}" ]; }
}

if [ -e .venv ] && ! has_pip; then
    if [ -x .venv/bin/python ] && ! is_bare; then
        echo "error: .venv has no pip (made by uv or with --without-pip?): add it with .venv/bin/python -m ensurepip," \
             "or remove .venv to have it made again" >&2
        exit 1
    fi
    rm -rf .venv
fi
if [ -e .venv ]; then
    version=$(python_version .venv/bin/python)
    if ! new_enough "${version}"; then
        if ! is_bare; then
            echo "error: .venv has Python ${version} and the toolkit needs ${NEEDED} or newer: remove .venv" \
                 "(rm -rf .venv) and run again with a python3 of ${NEEDED} or newer first on PATH" >&2
            exit 1
        fi
        rm -rf .venv
    fi
fi
if [ ! -e .venv ]; then
    if ! command -v python3 >/dev/null; then
        echo "error: no python3 on PATH: install Python ${NEEDED} or newer and run again" >&2
        exit 1
    fi
    version=$(python_version python3)
    if ! new_enough "${version}"; then
        echo "error: python3 is Python ${version:-that does not run} and the toolkit needs ${NEEDED} or newer:" \
             "make .venv with a newer one (e.g. python${NEEDED} -m venv .venv) or put one first on PATH as python3," \
             "then run again" >&2
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
