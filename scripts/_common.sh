# Shared helpers for .ci/run and scripts/*.sh. Source it; it defines functions only.
# shellcheck shell=bash

# Repository root (the directory holding pyproject.toml).
GODEFER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

godefer_section() {
    printf '\n==============================================================================\n'
    printf '== %s\n' "$*"
    printf '==============================================================================\n'
}

godefer_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

godefer_die() {
    printf '\nFATAL: %s\n' "$*" >&2
    exit 1
}

# godefer_find_python 3.12 -> prints the path of the newest installed CPython 3.12.x.
# Looks at pyenv (`pyenv versions --bare` and $PYENV_ROOT/versions), then python3.12 on PATH.
# Returns non-zero (printing nothing) when there is none.
godefer_find_python() {
    local minor=$1 root=${PYENV_ROOT:-${HOME:-/root}/.pyenv} listed best py
    listed=$(
        {
            if command -v pyenv >/dev/null 2>&1; then pyenv versions --bare 2>/dev/null || true; fi
            ls -1 "$root/versions" 2>/dev/null || true
        } | sed 's/^[* ]*//; s/ .*//'
    )
    best=$(printf '%s\n' "$listed" | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V -u | tail -n 1 || true)
    if [[ -n $best ]]; then
        for py in "$root/versions/$best/bin/python$minor" "$root/versions/$best/bin/python3"; do
            if [[ -x $py ]]; then
                printf '%s\n' "$py"
                return 0
            fi
        done
    fi
    py=$(command -v "python$minor" 2>/dev/null || true)
    if [[ -n $py ]] && "$py" -c "import sys; assert sys.implementation.name == 'cpython'" 2>/dev/null; then
        printf '%s\n' "$py"
        return 0
    fi
    return 1
}

# godefer_make_venv PYTHON DIR -> fresh venv at DIR (removed first).
godefer_make_venv() {
    local py=$1 dir=$2
    rm -rf "$dir"
    "$py" -m venv "$dir" || return 1
}

# godefer_pip VENV ARGS... -> pip in VENV, output kept in VENV/pip.log, shown on failure.
godefer_pip() {
    local venv=$1
    shift
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" \
        >"$venv/pip.log" 2>&1; then
        tail -n 80 "$venv/pip.log"
        printf 'pip install %s failed (full log: %s)\n' "$*" "$venv/pip.log" >&2
        return 1
    fi
    grep -E '^Successfully installed' "$venv/pip.log" || true
}
